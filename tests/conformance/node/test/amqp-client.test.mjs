// RabbitMQ tutorial patterns, publisher confirms, mandatory/basic.return and error cases with
// @cloudamqp/amqp-client (low-level AMQPClient API). Test names start with "<pattern>:".
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { AMQPClient } from "@cloudamqp/amqp-client";
import { AMQP_URL, Inbox, T, deferred, fib, guard, uniq } from "../lib/helpers.mjs";

const conns = [];
async function connect() {
  const conn = await new AMQPClient(AMQP_URL).connect();
  conns.push(conn);
  return conn;
}
async function channel(conn) {
  const ch = await conn.channel();
  ch.onerror = () => {}; // channel errors are asserted through the rejected promises
  return ch;
}
const text = (msg) => msg.bodyString();
async function drain(ch, q) {
  const out = [];
  for (;;) {
    const msg = await ch.basicGet(q, { noAck: true });
    if (!msg) return out;
    out.push(text(msg));
  }
}
async function confirmChannel(conn) {
  const ch = await channel(conn);
  await ch.confirmSelect();
  return ch;
}
/** On a confirm channel basicPublish resolves on basic.ack: the messages are enqueued. */
async function publishConfirmed(ch, items) {
  await guard(
    Promise.all(items.map(([ex, key, body, props]) => ch.basicPublish(ex, key, body, props || {}))),
    "publisher confirms",
  );
}

let conn;
let ch;
before(async () => {
  conn = await connect();
  ch = await channel(conn);
});
after(async () => {
  for (const c of conns) if (!c.closed) await guard(c.close(), "connection close").catch(() => {});
});

describe("amqp-client", () => {
  test("hello-world: basicPublish and basicGet", T, async () => {
    const q = uniq("hello");
    const ok = await ch.queueDeclare(q, { exclusive: true });
    assert.deepEqual(ok, { name: q, messageCount: 0, consumerCount: 0 });
    await ch.basicPublish("", q, "Hello World!", {
      contentType: "text/plain",
      headers: { lang: "en" },
    });
    await ch.queueDeclare(q, { passive: true }); // round trip: the publish went first
    const msg = await ch.basicGet(q, { noAck: true });
    assert.ok(msg, "queue unexpectedly empty");
    assert.equal(text(msg), "Hello World!");
    assert.equal(msg.exchange, "");
    assert.equal(msg.routingKey, q);
    assert.equal(msg.redelivered, false);
    assert.equal(msg.messageCount, 0);
    assert.equal(msg.deliveryTag, 1);
    assert.equal(msg.properties.contentType, "text/plain");
    assert.deepEqual(msg.properties.headers, { lang: "en" });
    assert.equal(msg.properties.deliveryMode, undefined);
    assert.equal(await ch.basicGet(q, { noAck: true }), null);
    await ch.queueDelete(q);
  });

  test("hello-world: basicConsume", T, async () => {
    const q = uniq("hello");
    await ch.queueDeclare(q, { exclusive: true });
    const inbox = new Inbox("consumer");
    const consumer = await ch.basicConsume(q, { noAck: true }, inbox.push);
    assert.match(consumer.tag, /^amq\.ctag-/);
    for (let i = 0; i < 3; i++) await ch.basicPublish("", q, `msg-${i}`, { correlationId: `c-${i}` });
    const got = await inbox.waitFor(3);
    assert.deepEqual(got.map(text), ["msg-0", "msg-1", "msg-2"]);
    assert.deepEqual(got.map((m) => m.properties.correlationId), ["c-0", "c-1", "c-2"]);
    for (const m of got) {
      assert.equal(m.consumerTag, consumer.tag);
      assert.equal(m.routingKey, q);
      assert.equal(m.redelivered, false);
    }
    await consumer.cancel();
    await ch.queueDelete(q);
  });

  async function worker(q, name) {
    const wconn = await connect();
    const wch = await channel(wconn);
    await wch.prefetch(1);
    const inbox = new Inbox(`worker ${name}`);
    const consumer = await wch.basicConsume(q, { noAck: false }, inbox.push);
    return { conn: wconn, ch: wch, inbox, consumer };
  }

  test("work-queue: prefetch 1 round robin with manual acks", T, async () => {
    const q = uniq("tasks");
    await ch.queueDeclare(q, { durable: true });
    try {
      const a = await worker(q, "A");
      const b = await worker(q, "B");
      assert.equal((await ch.queueDeclare(q, { passive: true })).consumerCount, 2);
      const pub = await confirmChannel(conn);
      await publishConfirmed(pub, [0, 1, 2, 3].map((i) => ["", q, `task-${i}`, { deliveryMode: 2 }]));
      const [a0] = await a.inbox.waitFor(1);
      const [b0] = await b.inbox.waitFor(1);
      assert.equal(text(a0), "task-0", "first consumer gets the first message");
      assert.equal(text(b0), "task-1");
      assert.equal(a0.properties.deliveryMode, 2);
      assert.equal((await ch.queueDeclare(q, { passive: true })).messageCount, 2);
      await a0.ack();
      const [, a1] = await a.inbox.waitFor(2);
      assert.equal(text(a1), "task-2");
      await b0.ack();
      const [, b1] = await b.inbox.waitFor(2);
      assert.equal(text(b1), "task-3");
      await a1.ack();
      await b1.ack();
      await a.ch.queueDeclare(q, { passive: true });
      await b.ch.queueDeclare(q, { passive: true });
      assert.equal(a.inbox.items.length + b.inbox.items.length, 4);
      assert.equal((await ch.queueDeclare(q, { passive: true })).messageCount, 0);
    } finally {
      await ch.queueDelete(q);
    }
  });

  test("work-queue: unacked task redelivered when a worker's connection closes", T, async () => {
    const q = uniq("tasks");
    await ch.queueDeclare(q);
    try {
      const a = await worker(q, "A");
      await ch.basicPublish("", q, "important task");
      const [first] = await a.inbox.waitFor(1);
      assert.equal(first.redelivered, false);
      const b = await worker(q, "B");
      assert.equal((await ch.queueDeclare(q, { passive: true })).consumerCount, 2);
      await a.conn.close(); // A goes away without acking
      const [again] = await b.inbox.waitFor(1, "redelivery to worker B");
      assert.equal(text(again), "important task");
      assert.equal(again.redelivered, true);
      await again.ack();
      await b.consumer.cancel();
      const ok = await ch.queueDeclare(q, { passive: true });
      assert.equal(ok.messageCount, 0);
      assert.equal(ok.consumerCount, 0);
    } finally {
      await ch.queueDelete(q);
    }
  });

  test("fanout: server-named exclusive queues all get every message", T, async () => {
    const ex = uniq("logs");
    await ch.exchangeDeclare(ex, "fanout");
    try {
      const queues = [];
      for (let i = 0; i < 2; i++) {
        const { name } = await ch.queueDeclare("", { exclusive: true });
        assert.match(name, /^amq\.gen-/);
        await ch.queueBind(name, ex, `ignored-${i}`);
        queues.push(name);
      }
      assert.notEqual(queues[0], queues[1]);
      const pub = await confirmChannel(conn);
      const msgs = [0, 1, 2, 3, 4].map((i) => `log line ${i}`);
      await publishConfirmed(pub, msgs.map((m, i) => [ex, `any.key.${i}`, m]));
      for (const q of queues) {
        assert.equal((await ch.queueDeclare(q, { passive: true })).messageCount, msgs.length);
        assert.deepEqual(await drain(ch, q), msgs);
      }
      const inboxes = [];
      for (const q of queues) {
        const inbox = new Inbox(q);
        await ch.basicConsume(q, { noAck: true }, inbox.push);
        inboxes.push(inbox);
      }
      await ch.basicPublish(ex, "k", "to everyone");
      for (const inbox of inboxes) {
        const [m] = await inbox.waitFor(1);
        assert.equal(text(m), "to everyone");
        assert.equal(m.exchange, ex);
        assert.equal(m.routingKey, "k");
      }
    } finally {
      await ch.exchangeDelete(ex);
    }
  });

  test("direct: routing by severity, bind/unbind", T, async () => {
    const ex = uniq("direct_logs");
    await ch.exchangeDeclare(ex, "direct");
    const pub = await confirmChannel(conn);
    try {
      const qErr = (await ch.queueDeclare("", { exclusive: true })).name;
      const qAll = (await ch.queueDeclare("", { exclusive: true })).name;
      await ch.queueBind(qErr, ex, "error");
      for (const sev of ["info", "warning", "error", "info"]) await ch.queueBind(qAll, ex, sev);
      await publishConfirmed(
        pub,
        ["info", "warning", "error", "debug", "ERROR", "error.x", ""].map((s) => [ex, s, `${s}-msg`]),
      );
      assert.deepEqual(await drain(ch, qErr), ["error-msg"]);
      assert.deepEqual(await drain(ch, qAll), ["info-msg", "warning-msg", "error-msg"]);
      await ch.queueUnbind(qAll, ex, "info");
      await publishConfirmed(pub, [[ex, "info", "info-2"], [ex, "warning", "warning-2"]]);
      assert.deepEqual(await drain(ch, qAll), ["warning-2"]);
      assert.deepEqual(await drain(ch, qErr), []);
    } finally {
      await ch.exchangeDelete(ex);
    }
  });

  test("topic: * matches one word, # zero or more", T, async () => {
    const ex = uniq("topic_logs");
    await ch.exchangeDeclare(ex, "topic");
    const pub = await confirmChannel(conn);
    try {
      const bindings = { Q1: ["*.orange.*"], Q2: ["*.*.rabbit", "lazy.#"], Q3: ["#.kern.#.critical"] };
      const cases = [
        ["quick.orange.rabbit", ["Q1", "Q2"]],
        ["quick.orange.fox", ["Q1"]],
        ["lazy.brown.fox", ["Q2"]],
        ["lazy.pink.rabbit", ["Q2"]],
        ["quick.brown.fox", []],
        ["lazy.orange.male.rabbit", ["Q2"]],
        ["lazy", ["Q2"]],
        ["lazy.", ["Q2"]],
        ["orange.rabbit", []],
        ["kern.critical", ["Q3"]],
        ["a.kern.b.critical", ["Q3"]],
        ["kern.critical.x", []],
      ];
      const queues = {};
      for (const [label, keys] of Object.entries(bindings)) {
        queues[label] = (await ch.queueDeclare("", { exclusive: true })).name;
        for (const key of keys) await ch.queueBind(queues[label], ex, key);
      }
      await publishConfirmed(pub, cases.map(([key]) => [ex, key, key]));
      for (const [label, q] of Object.entries(queues)) {
        const expected = cases.filter(([, dest]) => dest.includes(label)).map(([key]) => key);
        assert.deepEqual(await drain(ch, q), expected, label);
      }
    } finally {
      await ch.exchangeDelete(ex);
    }
  });

  async function rpcServer(queue) {
    const sch = await channel(await connect());
    await sch.queueDeclare(queue, { exclusive: true });
    await sch.prefetch(1);
    const requests = [];
    await sch.basicConsume(queue, { noAck: false }, async (msg) => {
      const { replyTo, correlationId } = msg.properties;
      requests.push({ replyTo, correlationId, body: text(msg) });
      await sch.basicPublish("", replyTo, String(fib(Number(text(msg)))), { correlationId });
      await msg.ack();
    });
    return requests;
  }

  test("rpc: reply_to exclusive callback queue and correlation_id", T, async () => {
    const rpcQueue = uniq("rpc_queue");
    const requests = await rpcServer(rpcQueue);
    const cch = await channel(await connect());
    const { name: callback } = await cch.queueDeclare("", { exclusive: true });
    const inbox = new Inbox("responses");
    await cch.basicConsume(callback, { noAck: true }, inbox.push);
    const expected = {};
    for (const n of [0, 1, 10, 30]) {
      const id = uniq("corr");
      expected[id] = String(fib(n));
      await cch.basicPublish("", rpcQueue, String(n), { replyTo: callback, correlationId: id });
    }
    const responses = await inbox.waitFor(4);
    assert.deepEqual(
      Object.fromEntries(responses.map((m) => [m.properties.correlationId, text(m)])),
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
    const consumer = await cch.basicConsume("amq.rabbitmq.reply-to", { noAck: true }, inbox.push);
    const id = uniq("corr");
    await cch.basicPublish("", rpcQueue, "20", { replyTo: "amq.rabbitmq.reply-to", correlationId: id });
    const [reply] = await inbox.waitFor(1);
    const replyTo = requests[0].replyTo;
    assert.ok(replyTo.startsWith("amq.rabbitmq.reply-to."), replyTo);
    assert.equal(requests[0].correlationId, id);
    assert.equal(text(reply), String(fib(20)));
    assert.equal(reply.properties.correlationId, id);
    assert.equal(reply.consumerTag, consumer.tag);
    assert.equal(reply.exchange, "");
    assert.equal(reply.routingKey, replyTo);
  });

  test("confirms: basicPublish resolves with the delivery tag on basic.ack", T, async () => {
    const cch = await confirmChannel(conn);
    const { name: q } = await cch.queueDeclare("", { exclusive: true });
    const tags = await guard(
      Promise.all([...Array(20).keys()].map((i) => cch.basicPublish("", q, `m${i}`))),
      "20 confirms",
    );
    assert.deepEqual(tags, [...Array(20).keys()].map((i) => i + 1));
    // Non-mandatory and unroutable: confirmed all the same.
    assert.equal(await guard(cch.basicPublish("amq.direct", uniq("nobody"), "dropped"), "confirm"), 21);
    assert.equal((await cch.queueDeclare(q, { passive: true })).messageCount, 20);
    assert.deepEqual(await drain(cch, q), [...Array(20).keys()].map((i) => `m${i}`));
  });

  test("mandatory-return: unroutable mandatory message comes back as basic.return", T, async () => {
    const rch = await channel(conn);
    const returns = new Inbox("basic.return");
    rch.onReturn = returns.push;
    const ex = uniq("ret");
    await rch.exchangeDeclare(ex, "direct", { autoDelete: true });
    const { name: q } = await rch.queueDeclare("", { exclusive: true });
    await rch.queueBind(q, ex, "routed");
    await rch.basicPublish(ex, "unrouted", '{"x":1}', { contentType: "application/json", correlationId: "abc" }, true);
    await rch.basicPublish(ex, "routed", "fine", {}, true);
    await rch.basicPublish(ex, "unrouted-not-mandatory", "dropped", {}, false);
    const [ret] = await returns.waitFor(1);
    assert.equal(ret.replyCode, 312);
    assert.equal(ret.replyText, "NO_ROUTE");
    assert.equal(ret.exchange, ex);
    assert.equal(ret.routingKey, "unrouted");
    assert.equal(text(ret), '{"x":1}');
    assert.equal(ret.properties.contentType, "application/json");
    assert.equal(ret.properties.correlationId, "abc");
    await rch.queueDeclare(q, { passive: true });
    assert.equal(returns.items.length, 1);
    assert.deepEqual(await drain(rch, q), ["fine"]);
    await rch.exchangeDelete(ex);
  });

  async function expectChannelError(fn, textWithCode) {
    const econn = await connect();
    const ech = await channel(econn);
    await assert.rejects(fn(ech), (err) => {
      assert.ok(err.message.includes(textWithCode), `${err.message} should contain ${textWithCode}`);
      return true;
    });
    assert.equal(ech.closed, true);
    // Only the channel is closed: the connection stays usable.
    assert.equal(econn.closed, false);
    const again = await channel(econn);
    await again.exchangeDeclare("amq.direct", "direct", { passive: true });
    await again.close();
  }

  test("errors: 404 on passive declare of a missing queue", T, async () => {
    const q = uniq("missing");
    await expectChannelError(
      (c) => c.queueDeclare(q, { passive: true }),
      `NOT_FOUND - no queue '${q}' in vhost '/' (404)`,
    );
  });

  test("errors: 404 on passive declare of a missing exchange", T, async () => {
    const ex = uniq("missing");
    await expectChannelError(
      (c) => c.exchangeDeclare(ex, "direct", { passive: true }),
      `NOT_FOUND - no exchange '${ex}' in vhost '/' (404)`,
    );
  });

  test("errors: 406 on redeclaring a queue with different arguments", T, async () => {
    const q = uniq("args");
    await ch.queueDeclare(q);
    try {
      await expectChannelError(
        (c) => c.queueDeclare(q, {}, { "x-max-length": 5 }),
        `PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '${q}' in vhost '/': ` +
          "received the value '5' of type ",
      );
    } finally {
      await ch.queueDelete(q);
    }
  });

  test("errors: 406 on redeclaring a queue with a different durable flag", T, async () => {
    const q = uniq("durable");
    await ch.queueDeclare(q, { durable: true });
    try {
      await expectChannelError(
        (c) => c.queueDeclare(q, { durable: false }),
        `PRECONDITION_FAILED - inequivalent arg 'durable' for queue '${q}' in vhost '/': ` +
          "received 'false' but current is 'true' (406)",
      );
    } finally {
      await ch.queueDelete(q);
    }
  });
});
