// RabbitMQ tutorial patterns, publisher confirms, mandatory/basic.return and error cases with
// amqplib (promise API). Test names start with "<pattern>:" (used by scripts/conformance).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import amqp from "amqplib";
import { AMQP_URL, Inbox, T, deferred, fib, guard, uniq } from "../lib/helpers.mjs";

const conns = [];
async function connect() {
  const conn = await amqp.connect(AMQP_URL);
  conn.on("error", () => {}); // surfaced through the failing operation instead
  conns.push(conn);
  return conn;
}
async function channel(conn, { confirm = false } = {}) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.on("error", () => {}); // channel errors are asserted through the rejected promises
  return ch;
}
async function drain(ch, q) {
  const out = [];
  for (;;) {
    const msg = await ch.get(q, { noAck: true });
    if (!msg) return out;
    out.push(msg.content.toString());
  }
}
/** Publishes on a confirm channel and waits for all confirms: the messages are enqueued. */
async function publishConfirmed(ch, items) {
  for (const [ex, key, body, opts] of items) ch.publish(ex, key, Buffer.from(body), opts || {});
  await guard(ch.waitForConfirms(), "publisher confirms");
}

let conn;
let ch;
before(async () => {
  conn = await connect();
  ch = await channel(conn);
});
after(async () => {
  for (const c of conns) await guard(c.close(), "connection close").catch(() => {});
});

describe("amqplib", () => {
  test("hello-world: sendToQueue and get", T, async () => {
    const q = uniq("hello");
    const ok = await ch.assertQueue(q, { exclusive: true });
    assert.deepEqual(ok, { queue: q, messageCount: 0, consumerCount: 0 });
    ch.sendToQueue(q, Buffer.from("Hello World!"), {
      contentType: "text/plain",
      headers: { lang: "en" },
    });
    let msg = false;
    // Unconfirmed publish: a synchronous round trip on the same channel orders it first.
    await ch.checkQueue(q);
    msg = await ch.get(q, { noAck: true });
    assert.ok(msg, "queue unexpectedly empty");
    assert.equal(msg.content.toString(), "Hello World!");
    assert.equal(msg.fields.exchange, "");
    assert.equal(msg.fields.routingKey, q);
    assert.equal(msg.fields.redelivered, false);
    assert.equal(msg.fields.messageCount, 0);
    assert.equal(msg.fields.deliveryTag, 1);
    assert.equal(msg.properties.contentType, "text/plain");
    assert.deepEqual({ ...msg.properties.headers }, { lang: "en" });
    assert.equal(msg.properties.deliveryMode, undefined);
    assert.equal(await ch.get(q, { noAck: true }), false);
    await ch.deleteQueue(q);
  });

  test("hello-world: consume", T, async () => {
    const q = uniq("hello");
    await ch.assertQueue(q, { exclusive: true });
    const inbox = new Inbox("consumer");
    const { consumerTag } = await ch.consume(q, inbox.push, { noAck: true });
    assert.match(consumerTag, /^amq\.ctag-/);
    for (let i = 0; i < 3; i++) ch.sendToQueue(q, Buffer.from(`msg-${i}`), { correlationId: `c-${i}` });
    const got = await inbox.waitFor(3);
    assert.deepEqual(got.map((m) => m.content.toString()), ["msg-0", "msg-1", "msg-2"]);
    assert.deepEqual(got.map((m) => m.properties.correlationId), ["c-0", "c-1", "c-2"]);
    for (const m of got) {
      assert.equal(m.fields.consumerTag, consumerTag);
      assert.equal(m.fields.routingKey, q);
      assert.equal(m.fields.redelivered, false);
    }
    await ch.cancel(consumerTag);
    await ch.deleteQueue(q);
  });

  test("work-queue: prefetch 1 round robin with manual acks", T, async () => {
    const q = uniq("tasks");
    await ch.assertQueue(q, { durable: true });
    try {
      const workers = [];
      for (const name of ["A", "B"]) {
        const wch = await channel(await connect());
        await wch.prefetch(1);
        const inbox = new Inbox(`worker ${name}`);
        await wch.consume(q, inbox.push, { noAck: false });
        workers.push({ ch: wch, inbox });
      }
      const [a, b] = workers;
      assert.equal((await ch.checkQueue(q)).consumerCount, 2);
      const pub = await channel(conn, { confirm: true });
      await publishConfirmed(
        pub,
        [0, 1, 2, 3].map((i) => ["", q, `task-${i}`, { persistent: true }]),
      );
      // prefetch 1: each worker holds exactly one task, the rest stay ready in the queue.
      const [a0] = await a.inbox.waitFor(1);
      const [b0] = await b.inbox.waitFor(1);
      assert.equal(a0.content.toString(), "task-0", "first consumer gets the first message");
      assert.equal(b0.content.toString(), "task-1");
      assert.equal(a0.properties.deliveryMode, 2);
      assert.equal((await ch.checkQueue(q)).messageCount, 2);
      // Acking frees the worker for exactly one more task.
      a.ch.ack(a0);
      const [, a1] = await a.inbox.waitFor(2);
      assert.equal(a1.content.toString(), "task-2");
      b.ch.ack(b0);
      const [, b1] = await b.inbox.waitFor(2);
      assert.equal(b1.content.toString(), "task-3");
      a.ch.ack(a1);
      b.ch.ack(b1);
      // A synchronous round trip on each worker channel: the acks have been processed.
      await a.ch.checkQueue(q);
      await b.ch.checkQueue(q);
      assert.equal(a.inbox.items.length, 2);
      assert.equal(b.inbox.items.length, 2);
      assert.equal((await ch.checkQueue(q)).messageCount, 0);
    } finally {
      await ch.deleteQueue(q);
    }
  });

  test("work-queue: unacked task redelivered when a worker's connection drops", T, async () => {
    const q = uniq("tasks");
    await ch.assertQueue(q);
    try {
      const aConn = await connect();
      const aCh = await channel(aConn);
      await aCh.prefetch(1);
      const aInbox = new Inbox("worker A");
      await aCh.consume(q, aInbox.push, { noAck: false });
      ch.sendToQueue(q, Buffer.from("important task"));
      const [first] = await aInbox.waitFor(1);
      assert.equal(first.fields.redelivered, false);

      const bCh = await channel(await connect());
      await bCh.prefetch(1);
      const bInbox = new Inbox("worker B");
      const { consumerTag } = await bCh.consume(q, bInbox.push, { noAck: false });
      assert.equal((await ch.checkQueue(q)).consumerCount, 2);
      // Worker A crashes: its TCP connection goes away without connection.close.
      conns.splice(conns.indexOf(aConn), 1);
      const aClosed = deferred();
      aConn.on("close", aClosed.resolve);
      aConn.connection.stream.destroy(new Error("simulated worker crash"));
      await guard(aClosed.promise, "worker A's connection to report the crash");
      const [again] = await bInbox.waitFor(1, "redelivery to worker B");
      assert.equal(again.content.toString(), "important task");
      assert.equal(again.fields.redelivered, true);
      bCh.ack(again);
      await bCh.cancel(consumerTag);
      const ok = await ch.checkQueue(q);
      assert.equal(ok.messageCount, 0);
      assert.equal(ok.consumerCount, 0);
    } finally {
      await ch.deleteQueue(q);
    }
  });

  test("fanout: server-named exclusive queues all get every message", T, async () => {
    const ex = uniq("logs");
    await ch.assertExchange(ex, "fanout", { durable: false });
    try {
      const queues = [];
      for (let i = 0; i < 2; i++) {
        const { queue } = await ch.assertQueue("", { exclusive: true });
        assert.match(queue, /^amq\.gen-/);
        await ch.bindQueue(queue, ex, `ignored-${i}`);
        queues.push(queue);
      }
      assert.notEqual(queues[0], queues[1]);
      const pub = await channel(conn, { confirm: true });
      const msgs = [0, 1, 2, 3, 4].map((i) => `log line ${i}`);
      await publishConfirmed(pub, msgs.map((m, i) => [ex, `any.key.${i}`, m]));
      for (const q of queues) {
        assert.equal((await ch.checkQueue(q)).messageCount, msgs.length);
        assert.deepEqual(await drain(ch, q), msgs);
      }
      const inboxes = [];
      for (const q of queues) {
        const inbox = new Inbox(q);
        await ch.consume(q, inbox.push, { noAck: true });
        inboxes.push(inbox);
      }
      ch.publish(ex, "k", Buffer.from("to everyone"));
      for (const inbox of inboxes) {
        const [m] = await inbox.waitFor(1);
        assert.equal(m.content.toString(), "to everyone");
        assert.equal(m.fields.exchange, ex);
        assert.equal(m.fields.routingKey, "k");
      }
    } finally {
      await ch.deleteExchange(ex);
    }
  });

  test("direct: routing by severity, bind/unbind", T, async () => {
    const ex = uniq("direct_logs");
    await ch.assertExchange(ex, "direct", { durable: false });
    const pub = await channel(conn, { confirm: true });
    try {
      const qErr = (await ch.assertQueue("", { exclusive: true })).queue;
      const qAll = (await ch.assertQueue("", { exclusive: true })).queue;
      await ch.bindQueue(qErr, ex, "error");
      for (const sev of ["info", "warning", "error", "info"]) await ch.bindQueue(qAll, ex, sev);
      await publishConfirmed(
        pub,
        ["info", "warning", "error", "debug", "ERROR", "error.x", ""].map((s) => [ex, s, `${s}-msg`]),
      );
      assert.deepEqual(await drain(ch, qErr), ["error-msg"]);
      assert.deepEqual(await drain(ch, qAll), ["info-msg", "warning-msg", "error-msg"]);
      await ch.unbindQueue(qAll, ex, "info");
      await publishConfirmed(pub, [[ex, "info", "info-2"], [ex, "warning", "warning-2"]]);
      assert.deepEqual(await drain(ch, qAll), ["warning-2"]);
      assert.deepEqual(await drain(ch, qErr), []);
    } finally {
      await ch.deleteExchange(ex);
    }
  });

  test("topic: * matches one word, # zero or more", T, async () => {
    const ex = uniq("topic_logs");
    await ch.assertExchange(ex, "topic", { durable: false });
    const pub = await channel(conn, { confirm: true });
    try {
      const bindings = {
        Q1: ["*.orange.*"],
        Q2: ["*.*.rabbit", "lazy.#"],
        Q3: ["#"],
        Q4: ["*"],
      };
      const cases = [
        ["quick.orange.rabbit", ["Q1", "Q2"]],
        ["lazy.orange.elephant", ["Q1", "Q2"]],
        ["quick.orange.fox", ["Q1"]],
        ["lazy.brown.fox", ["Q2"]],
        ["lazy.pink.rabbit", ["Q2"]], // both Q2 bindings match; delivered once
        ["quick.brown.fox", []],
        ["orange", ["Q4"]],
        ["quick.orange.male.rabbit", []],
        ["lazy.orange.male.rabbit", ["Q2"]],
        ["lazy", ["Q2", "Q4"]], // '#' matches zero words
        [".orange.", ["Q1"]], // empty words are words
        ["a.b.c.rabbit", []],
        ["", []], // the empty key is zero words: '#' matches it, '*' does not
      ];
      const queues = {};
      for (const [label, keys] of Object.entries(bindings)) {
        queues[label] = (await ch.assertQueue("", { exclusive: true })).queue;
        for (const key of keys) await ch.bindQueue(queues[label], ex, key);
      }
      await publishConfirmed(pub, cases.map(([key]) => [ex, key, key || "<empty>"]));
      for (const [label, q] of Object.entries(queues)) {
        const expected = cases
          .filter(([key, dest]) => dest.includes(label) || label === "Q3")
          .map(([key]) => key || "<empty>");
        assert.deepEqual(await drain(ch, q), expected, label);
      }
    } finally {
      await ch.deleteExchange(ex);
    }
  });

  async function rpcServer(queue) {
    const sch = await channel(await connect());
    await sch.assertQueue(queue, { exclusive: true });
    await sch.prefetch(1);
    const requests = [];
    await sch.consume(queue, (msg) => {
      const { replyTo, correlationId } = msg.properties;
      requests.push({ replyTo, correlationId, body: msg.content.toString() });
      sch.sendToQueue(replyTo, Buffer.from(String(fib(Number(msg.content.toString())))), {
        correlationId,
      });
      sch.ack(msg);
    });
    return requests;
  }

  test("rpc: reply_to exclusive callback queue and correlation_id", T, async () => {
    const rpcQueue = uniq("rpc_queue");
    const requests = await rpcServer(rpcQueue);
    const cch = await channel(await connect());
    const { queue: callback } = await cch.assertQueue("", { exclusive: true });
    const inbox = new Inbox("responses");
    await cch.consume(callback, inbox.push, { noAck: true });
    const expected = {};
    for (const n of [0, 1, 10, 30]) {
      const id = uniq("corr");
      expected[id] = String(fib(n));
      cch.sendToQueue(rpcQueue, Buffer.from(String(n)), { replyTo: callback, correlationId: id });
    }
    const responses = await inbox.waitFor(4);
    assert.deepEqual(
      Object.fromEntries(responses.map((m) => [m.properties.correlationId, m.content.toString()])),
      expected,
    );
    assert.deepEqual(requests.map((r) => r.replyTo), Array(4).fill(callback));
    assert.deepEqual(requests.map((r) => r.correlationId), Object.keys(expected));
  });

  test("direct-reply-to: amq.rabbitmq.reply-to pseudo-queue", T, async () => {
    const rpcQueue = uniq("rpc_queue");
    const requests = await rpcServer(rpcQueue);
    const cch = await channel(await connect());
    const inbox = new Inbox("direct replies");
    const { consumerTag } = await cch.consume("amq.rabbitmq.reply-to", inbox.push, { noAck: true });
    const id1 = uniq("corr");
    cch.sendToQueue(rpcQueue, Buffer.from("20"), {
      replyTo: "amq.rabbitmq.reply-to",
      correlationId: id1,
    });
    const [reply] = await inbox.waitFor(1);
    assert.equal(requests.length, 1);
    const replyTo = requests[0].replyTo;
    assert.ok(replyTo.startsWith("amq.rabbitmq.reply-to."), replyTo);
    assert.notEqual(replyTo, "amq.rabbitmq.reply-to.");
    assert.equal(requests[0].correlationId, id1);
    assert.equal(reply.content.toString(), String(fib(20)));
    assert.equal(reply.properties.correlationId, id1);
    assert.equal(reply.fields.consumerTag, consumerTag);
    assert.equal(reply.fields.exchange, "");
    assert.equal(reply.fields.routingKey, replyTo);
    const id2 = uniq("corr");
    cch.sendToQueue(rpcQueue, Buffer.from("7"), {
      replyTo: "amq.rabbitmq.reply-to",
      correlationId: id2,
    });
    const [, reply2] = await inbox.waitFor(2);
    assert.equal(reply2.content.toString(), "13");
    assert.equal(reply2.properties.correlationId, id2);
    assert.equal(requests[1].replyTo, replyTo);
  });

  test("confirms: ConfirmChannel acks routable and unroutable publishes", T, async () => {
    const cch = await channel(conn, { confirm: true });
    const { queue: q } = await cch.assertQueue("", { exclusive: true });
    const acks = [];
    const all = [];
    for (let i = 0; i < 20; i++) {
      const d = deferred();
      cch.sendToQueue(q, Buffer.from(`m${i}`), {}, (err) => (err ? d.reject(err) : d.resolve(i)));
      all.push(d.promise.then((i) => acks.push(i)));
    }
    // Non-mandatory and unroutable: still confirmed (acked), then dropped.
    const lost = deferred();
    cch.publish("amq.direct", uniq("nobody"), Buffer.from("dropped"), {}, (err) =>
      err ? lost.reject(err) : lost.resolve(),
    );
    await guard(Promise.all([...all, lost.promise]), "20 + 1 confirms");
    assert.deepEqual(acks, [...Array(20).keys()], "confirm callbacks in publish order");
    await guard(cch.waitForConfirms(), "waitForConfirms");
    assert.equal((await cch.checkQueue(q)).messageCount, 20);
    assert.deepEqual(await drain(cch, q), [...Array(20).keys()].map((i) => `m${i}`));
  });

  test("mandatory-return: unroutable mandatory message comes back as basic.return", T, async () => {
    const rch = await channel(conn);
    const returns = new Inbox("basic.return");
    rch.on("return", returns.push);
    const ex = uniq("ret");
    await rch.assertExchange(ex, "direct", { autoDelete: true, durable: false });
    const { queue: q } = await rch.assertQueue("", { exclusive: true });
    await rch.bindQueue(q, ex, "routed");
    rch.publish(ex, "unrouted", Buffer.from('{"x":1}'), {
      mandatory: true,
      contentType: "application/json",
      headers: { h: "v" },
      correlationId: "abc",
    });
    rch.publish(ex, "routed", Buffer.from("fine"), { mandatory: true });
    rch.publish(ex, "unrouted-not-mandatory", Buffer.from("dropped"));
    const [ret] = await returns.waitFor(1);
    assert.equal(ret.fields.replyCode, 312);
    assert.equal(ret.fields.replyText, "NO_ROUTE");
    assert.equal(ret.fields.exchange, ex);
    assert.equal(ret.fields.routingKey, "unrouted");
    assert.equal(ret.content.toString(), '{"x":1}');
    assert.equal(ret.properties.contentType, "application/json");
    assert.deepEqual({ ...ret.properties.headers }, { h: "v" });
    assert.equal(ret.properties.correlationId, "abc");
    await rch.checkQueue(q); // round trip: anything else the broker sent has arrived
    assert.equal(returns.items.length, 1);
    assert.deepEqual(await drain(rch, q), ["fine"]);
    await rch.deleteExchange(ex);
  });

  test("mandatory-return: in confirm mode basic.return precedes basic.ack", T, async () => {
    const cch = await channel(conn, { confirm: true });
    const events = [];
    cch.on("return", (m) => events.push(`return:${m.content.toString()}`));
    const acked = deferred();
    const key = uniq("nobody");
    cch.publish("amq.direct", key, Buffer.from("lost"), { mandatory: true }, (err) => {
      events.push(err ? "nack" : "ack");
      acked.resolve();
    });
    await guard(acked.promise, "confirm of the returned message");
    assert.deepEqual(events, ["return:lost", "ack"]);
  });

  async function expectChannelError(fn, code, text) {
    const econn = await connect();
    const ech = await channel(econn);
    const closed = deferred();
    ech.on("close", closed.resolve);
    await assert.rejects(fn(ech), (err) => {
      assert.equal(err.code, code);
      assert.ok(err.message.includes(text), `${err.message} should contain ${text}`);
      return true;
    });
    await guard(closed.promise, "channel close");
    // Only the channel is closed: the connection stays usable.
    const again = await channel(econn);
    await again.checkExchange("amq.direct");
    await again.close();
  }

  test("errors: 404 on passive declare of a missing queue", T, async () => {
    const q = uniq("missing");
    await expectChannelError((c) => c.checkQueue(q), 404, `NOT_FOUND - no queue '${q}' in vhost '/'`);
  });

  test("errors: 404 on passive declare of a missing exchange", T, async () => {
    const ex = uniq("missing");
    await expectChannelError(
      (c) => c.checkExchange(ex),
      404,
      `NOT_FOUND - no exchange '${ex}' in vhost '/'`,
    );
  });

  test("errors: 406 on redeclaring a queue with a different durable flag", T, async () => {
    const q = uniq("durable");
    await ch.assertQueue(q, { durable: false });
    try {
      await expectChannelError(
        (c) => c.assertQueue(q, { durable: true }),
        406,
        `PRECONDITION_FAILED - inequivalent arg 'durable' for queue '${q}' in vhost '/': ` +
          "received 'true' but current is 'false'",
      );
    } finally {
      await ch.deleteQueue(q);
    }
  });

  test("errors: 406 on redeclaring an exchange with a different type", T, async () => {
    await expectChannelError(
      (c) => c.assertExchange("amq.direct", "fanout"),
      406,
      "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': " +
        "received 'fanout' but current is 'direct'",
    );
  });
});
