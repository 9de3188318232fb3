// Queue features with amqplib: message TTL and per-message expiration, dead-lettering (x-death,
// x-first-death-*), length limits and overflow, repeated deaths and cycles, x-expires, a
// missing dead-letter exchange. Test names start with "queue-features:". RabbitMQ 3.10.8 is
// the specification (see the pika suite, test_pika_queue_features.py, for the wire types).
// amqplib decodes long-long (l) and int (I) alike as numbers, a timestamp as
// {"!": "timestamp", value: seconds}. Waiting is on broker events (a dead-lettered message at a
// consumer, confirms, basic.return); timeouts are hang guards only.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import amqp from "amqplib";
import { AMQP_URL, Inbox, T, deferred, guard, uniq } from "../lib/helpers.mjs";

const conns = [];
async function connect() {
  const conn = await amqp.connect(AMQP_URL);
  conn.on("error", () => {});
  conns.push(conn);
  return conn;
}
async function confirmChannel(conn) {
  const ch = await conn.createConfirmChannel();
  ch.on("error", () => {});
  return ch;
}

/** Publishes on a confirm channel; resolves to "ack" or "nack". */
function publish(ch, ex, key, body, opts = {}) {
  const d = deferred();
  ch.publish(ex, key, Buffer.from(body), opts, (err) => d.resolve(err ? "nack" : "ack"));
  return guard(d.promise, `confirm of ${body}`);
}

/** Waits for n messages on q through a consumer, acks them, cancels; returns them. */
async function consume(ch, q, n = 1) {
  const inbox = new Inbox(q);
  const { consumerTag } = await ch.consume(q, inbox.push, { noAck: false });
  const got = await inbox.waitFor(n);
  await ch.cancel(consumerTag);
  for (const m of got) ch.ack(m);
  assert.equal(inbox.items.length, n, `exactly ${n} message(s) on ${q}`);
  return got;
}

async function drain(ch, q) {
  const out = [];
  for (;;) {
    const msg = await ch.get(q, { noAck: true });
    if (!msg) return out;
    out.push(msg.content.toString());
  }
}

/** One x-death table: every field, `time` a timestamp close to now, count a number. */
function checkDeath(entry, { count = 1, reason, queue, exchange, routingKeys, originalExpiration }) {
  const { time, ...rest } = entry;
  const expected = { count, reason, queue, exchange, "routing-keys": routingKeys };
  if (originalExpiration !== undefined) expected["original-expiration"] = originalExpiration;
  assert.deepEqual(rest, expected);
  assert.equal(time["!"], "timestamp");
  assert.ok(Math.abs(time.value - Date.now() / 1000) < 120, `time ${time.value} is now`);
}

function checkFirstDeath(headers, reason, queue, exchange) {
  assert.equal(headers["x-first-death-reason"], reason);
  assert.equal(headers["x-first-death-queue"], queue);
  assert.equal(headers["x-first-death-exchange"], exchange);
}

let conn;
let ch;
const queues = [];
const exchanges = [];
async function queue(prefix, args = {}) {
  const q = uniq(prefix);
  await ch.assertQueue(q, { arguments: args });
  queues.push(q);
  return q;
}
async function exchange(prefix, type) {
  const ex = uniq(prefix);
  await ch.assertExchange(ex, type, { durable: false });
  exchanges.push(ex);
  return ex;
}
async function dlxSetup(type = "fanout", key = "") {
  const dlx = await exchange("dlx", type);
  const dlq = await queue("dlq");
  await ch.bindQueue(dlq, dlx, key);
  return { dlx, dlq };
}

before(async () => {
  conn = await connect();
  ch = await confirmChannel(conn);
});
after(async () => {
  const c = await connect();
  const cch = await c.createChannel();
  for (const q of queues) await cch.deleteQueue(q);
  for (const ex of exchanges) await cch.deleteExchange(ex);
  for (const cn of conns) await guard(cn.close(), "connection close").catch(() => {});
});

describe("amqplib", () => {
  test("queue-features: x-message-ttl expires and dead-letters without a consumer", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("ttl", { "x-message-ttl": 30, "x-dead-letter-exchange": dlx });
    assert.equal(await publish(ch, "", q, "short-lived", { messageId: "m1" }), "ack");
    const [m] = await consume(ch, dlq);
    assert.equal(m.content.toString(), "short-lived");
    assert.equal(m.fields.exchange, dlx);
    assert.equal(m.fields.routingKey, q);
    assert.equal(m.properties.messageId, "m1");
    assert.equal(m.properties.expiration, undefined);
    const h = m.properties.headers;
    assert.deepEqual(Object.keys(h).sort(), [
      "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"]);
    assert.equal(h["x-death"].length, 1);
    checkDeath(h["x-death"][0], { reason: "expired", queue: q, exchange: "", routingKeys: [q] });
    checkFirstDeath(h, "expired", q, "");
    assert.equal(await ch.get(q, { noAck: true }), false);
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
  });

  test("queue-features: per-message expiration, the lower TTL applies", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("pmttl", { "x-message-ttl": 10000, "x-dead-letter-exchange": dlx });
    const start = Date.now();
    assert.equal(await publish(ch, "", q, "per-message", { expiration: "30" }), "ack");
    let [m] = await consume(ch, dlq);
    assert.ok(Date.now() - start < 5000);
    assert.equal(m.properties.expiration, undefined);
    checkDeath(m.properties.headers["x-death"][0], {
      reason: "expired", queue: q, exchange: "", routingKeys: [q], originalExpiration: "30" });
    const q2 = await queue("pmttl2", { "x-message-ttl": 30, "x-dead-letter-exchange": dlx });
    assert.equal(await publish(ch, "", q2, "queue-ttl", { expiration: "10000" }), "ack");
    [m] = await consume(ch, dlq);
    assert.equal(m.content.toString(), "queue-ttl");
    assert.equal(m.properties.expiration, undefined);
    checkDeath(m.properties.headers["x-death"][0], {
      reason: "expired", queue: q2, exchange: "", routingKeys: [q2], originalExpiration: "10000" });
  });

  test("queue-features: invalid expiration closes the channel with 406", T, async () => {
    for (const [exp, detail] of [["abc", "no_integer"], ["-1", "{value_negative,-1}"]]) {
      const c = await connect();
      const ech = await confirmChannel(c);
      const closed = deferred();
      ech.on("close", closed.resolve);
      const errors = [];
      ech.on("error", (e) => errors.push(e));
      ech.publish("", uniq("nowhere"), Buffer.from("x"), { expiration: exp }, () => {});
      await guard(closed.promise, "channel close");
      assert.equal(errors.length, 1);
      assert.equal(errors[0].code, 406);
      const text = `PRECONDITION_FAILED - invalid expiration '${exp}': ${detail}`;
      assert.ok(errors[0].message.includes(`"${text}"`), errors[0].message);
      // The connection stays usable.
      const again = await c.createChannel();
      await again.checkExchange("amq.direct");
      await again.close();
    }
  });

  test("queue-features: dead-letter on reject keeps CC and routes by CC and BCC keys", T, async () => {
    const { dlx, dlq } = await dlxSetup("direct", "rk");
    const bccq = await queue("bccq");
    await ch.bindQueue(bccq, dlx, "bcc1");
    const src = await exchange("src", "direct");
    const q = await queue("rej", { "x-dead-letter-exchange": dlx });
    await ch.bindQueue(q, src, "rk");
    await publish(ch, src, "rk", "rejected", {
      headers: { CC: ["cc1"], BCC: ["bcc1"], app: 7 }, expiration: "60000", priority: 3 });
    const got = await ch.get(q, { noAck: false });
    assert.deepEqual({ ...got.properties.headers }, { CC: ["cc1"], app: 7 });
    ch.reject(got, false);
    let [m] = await consume(ch, dlq);
    assert.equal(m.fields.exchange, dlx);
    assert.equal(m.fields.routingKey, "rk");
    assert.equal(m.properties.priority, 3);
    assert.equal(m.properties.expiration, undefined);
    const h = m.properties.headers;
    assert.deepEqual(h.CC, ["cc1"]);
    assert.equal(h.app, 7);
    assert.equal(h.BCC, undefined);
    assert.equal(h["x-death"].length, 1);
    checkDeath(h["x-death"][0], {
      reason: "rejected", queue: q, exchange: src, routingKeys: ["rk", "cc1"],
      originalExpiration: "60000" });
    checkFirstDeath(h, "rejected", q, src);
    assert.equal(h["x-last-death-reason"], undefined);
    [m] = await consume(ch, bccq);
    assert.equal(m.content.toString(), "rejected");
  });

  test("queue-features: dead-letter on nack with x-dead-letter-routing-key drops CC", T, async () => {
    const { dlx, dlq } = await dlxSetup("direct", "override");
    const q = await queue("nack", {
      "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "override" });
    await publish(ch, "", q, "nacked", { headers: { CC: ["cc1"] } });
    const got = await ch.get(q, { noAck: false });
    ch.nack(got, false, false);
    const [m] = await consume(ch, dlq);
    assert.equal(m.fields.routingKey, "override");
    const h = m.properties.headers;
    assert.deepEqual(Object.keys(h).sort(), [
      "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"]);
    checkDeath(h["x-death"][0], { reason: "rejected", queue: q, exchange: "", routingKeys: [q, "cc1"] });
  });

  test("queue-features: x-max-length drop-head dead-letters the oldest", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("maxlen", { "x-max-length": 2, "x-dead-letter-exchange": dlx });
    for (let i = 0; i < 3; i++) assert.equal(await publish(ch, "", q, `m${i}`), "ack");
    const [m] = await consume(ch, dlq);
    assert.equal(m.content.toString(), "m0");
    checkDeath(m.properties.headers["x-death"][0], { reason: "maxlen", queue: q, exchange: "", routingKeys: [q] });
    checkFirstDeath(m.properties.headers, "maxlen", q, "");
    assert.deepEqual(await drain(ch, q), ["m1", "m2"]);
  });

  test("queue-features: x-max-length 0 acks the publish and stays empty", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("maxlen0", { "x-max-length": 0, "x-dead-letter-exchange": dlx });
    assert.equal(await publish(ch, "", q, "dropped"), "ack");
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
    const [m] = await consume(ch, dlq);
    checkDeath(m.properties.headers["x-death"][0], { reason: "maxlen", queue: q, exchange: "", routingKeys: [q] });
  });

  test("queue-features: x-max-length-bytes counts bodies only", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("maxbytes", { "x-max-length-bytes": 10, "x-dead-letter-exchange": dlx });
    for (const body of ["aaaa1", "bbbb2", "cccc3"]) {
      assert.equal(await publish(ch, "", q, body, { headers: { pad: "x".repeat(200) } }), "ack");
    }
    const [m] = await consume(ch, dlq);
    assert.equal(m.content.toString(), "aaaa1");
    assert.equal(m.properties.headers["x-death"][0].reason, "maxlen");
    assert.deepEqual(await drain(ch, q), ["bbbb2", "cccc3"]);
  });

  test("queue-features: reject-publish nacks, reject-publish-dlx nacks and dead-letters", T, async () => {
    const { dlx, dlq } = await dlxSetup();
    const q = await queue("rejpub", {
      "x-max-length": 1, "x-overflow": "reject-publish", "x-dead-letter-exchange": dlx });
    assert.equal(await publish(ch, "", q, "kept"), "ack");
    assert.equal(await publish(ch, "", q, "refused"), "nack");
    assert.deepEqual(await drain(ch, q), ["kept"]);
    assert.equal((await ch.checkQueue(dlq)).messageCount, 0);
    const q2 = await queue("rejpubdlx", {
      "x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": dlx });
    assert.equal(await publish(ch, "", q2, "kept"), "ack");
    assert.equal(await publish(ch, "", q2, "refused"), "nack");
    const [m] = await consume(ch, dlq);
    assert.equal(m.content.toString(), "refused");
    checkDeath(m.properties.headers["x-death"][0], { reason: "maxlen", queue: q2, exchange: "", routingKeys: [q2] });
    assert.deepEqual(await drain(ch, q2), ["kept"]);
  });

  test("queue-features: retry loop counts deaths per queue and reason", T, async () => {
    const exA = await exchange("exa", "fanout");
    const exB = await exchange("exb", "fanout");
    const a = await queue("a", { "x-dead-letter-exchange": exB });
    const b = await queue("b", { "x-dead-letter-exchange": exA, "x-message-ttl": 20 });
    await ch.bindQueue(a, exA, "");
    await ch.bindQueue(b, exB, "");
    await publish(ch, exA, "orig", "retry");
    const seen = [];
    const done = deferred();
    const { consumerTag } = await ch.consume(a, (m) => {
      seen.push(m);
      if (seen.length < 4) ch.reject(m, false);
      else {
        ch.ack(m);
        done.resolve();
      }
    });
    await guard(done.promise, "four rounds");
    await ch.cancel(consumerTag);
    assert.equal(seen[0].properties.headers["x-death"], undefined);
    for (let n = 1; n < 4; n++) {
      const h = seen[n].properties.headers;
      assert.equal(seen[n].fields.routingKey, "orig");
      const deaths = h["x-death"];
      assert.equal(deaths.length, 2);
      checkDeath(deaths[0], { count: n, reason: "expired", queue: b, exchange: exB, routingKeys: ["orig"] });
      checkDeath(deaths[1], { count: n, reason: "rejected", queue: a, exchange: exA, routingKeys: ["orig"] });
      checkFirstDeath(h, "rejected", a, exA);
    }
  });

  test("queue-features: an expiry cycle without a rejection is dropped", T, async () => {
    const exC = await exchange("exc", "fanout");
    const exD = await exchange("exd", "fanout");
    const c = await queue("c", { "x-dead-letter-exchange": exD });
    const d = await queue("d", { "x-dead-letter-exchange": exC, "x-message-ttl": 20 });
    const watch = await queue("watch");
    await ch.bindQueue(c, exC, "");
    await ch.bindQueue(d, exD, "");
    await ch.bindQueue(watch, exC, "");
    await publish(ch, "", c, "cycle", { expiration: "20" });
    const [m] = await consume(ch, watch);
    const deaths = m.properties.headers["x-death"];
    assert.deepEqual(deaths.map((e) => [e.queue, e.reason]), [[d, "expired"], [c, "expired"]]);
    assert.equal(deaths[1]["original-expiration"], "20");
    assert.equal((await ch.checkQueue(c)).messageCount, 0);
    assert.equal((await ch.checkQueue(d)).messageCount, 0);
  });

  /** Confirmed mandatory probes (expiration 0) until one is returned: the queue is gone.
   * Publishing does not renew an x-expires lease; a passive declare would. */
  async function waitUntilUnroutable(q) {
    let returned = false;
    const onReturn = (msg) => {
      if (msg.fields.routingKey === q) returned = true;
    };
    ch.on("return", onReturn);
    try {
      const deadline = Date.now() + 10_000;
      while (!returned) {
        assert.ok(Date.now() < deadline, `${q} was not deleted`);
        await publish(ch, "", q, "probe", { expiration: "0", mandatory: true });
        if (!returned) await new Promise((r) => setTimeout(r, 5)); // poll interval
      }
    } finally {
      ch.removeListener("return", onReturn);
    }
  }

  test("queue-features: x-expires deletes an unused queue, not one with a consumer", T, async () => {
    const q = await queue("expires", { "x-expires": 50 });
    await publish(ch, "", q, "still-deleted");
    const kept = await queue("expcons", { "x-expires": 50 });
    const { consumerTag } = await ch.consume(kept, () => {});
    await waitUntilUnroutable(q);
    const c = await connect();
    const ech = await c.createChannel();
    ech.on("error", () => {});
    await assert.rejects(ech.checkQueue(q), (err) => {
      assert.equal(err.code, 404);
      assert.ok(err.message.includes(`NOT_FOUND - no queue '${q}' in vhost '/'`), err.message);
      return true;
    });
    const ok = await ch.checkQueue(kept);
    assert.equal(ok.consumerCount, 1);
    await ch.cancel(consumerTag);
    await waitUntilUnroutable(kept);
  });

  test("queue-features: a missing dead-letter exchange drops silently", T, async () => {
    const q = await queue("nodlx", { "x-dead-letter-exchange": uniq("nosuchx") });
    await publish(ch, "", q, "lost");
    const got = await ch.get(q, { noAck: false });
    ch.reject(got, false);
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
    await publish(ch, "", q, "lost-too", { expiration: "0" });
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
  });
});
