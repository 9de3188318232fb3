// The broker-restart check for the Node clients: `node restart.mjs <amqplib|amqp-client>
// <before|after>`. scripts/conformance runs every client's "before" step, restarts the broker
// gracefully (same port, same data), then every "after" step.
//
// before: declare the durable queue conformance.restart.<client>, publish one persistent
//         message with known properties on a confirm channel and wait for its basic.ack.
// after:  basic.get it, check body, delivery mode 2 and properties, ack, delete the queue.
//
// Output: "PASS restart: <name>" or "FAIL restart: <name>: <error>", then "N passed, N failed".
import assert from "node:assert/strict";
import amqp from "amqplib";
import { AMQPClient } from "@cloudamqp/amqp-client";
import { AMQP_URL, guard } from "./lib/helpers.mjs";

const [client, step] = process.argv.slice(2);
const queue = `conformance.restart.${client}`;
const body = `persistent message from ${client}`;
const props = { contentType: "text/plain", correlationId: "restart-1", headers: { client } };

const steps = {
  amqplib: {
    async before() {
      const conn = await amqp.connect(AMQP_URL);
      try {
        const ch = await conn.createConfirmChannel();
        ch.on("error", () => {}); // a channel error also rejects the pending call
        await ch.deleteQueue(queue); // a leftover from an aborted run
        await ch.assertQueue(queue, { durable: true });
        await guard(
          new Promise((resolve, reject) =>
            ch.sendToQueue(queue, Buffer.from(body), { ...props, persistent: true }, (err) =>
              err ? reject(new Error("nacked")) : resolve(),
            ),
          ),
          "publisher confirm",
        );
        assert.equal((await ch.checkQueue(queue)).messageCount, 1);
      } finally {
        await conn.close();
      }
    },
    async after() {
      const conn = await amqp.connect(AMQP_URL);
      try {
        const ch = await conn.createChannel();
        ch.on("error", () => {}); // a channel error also rejects the pending call below
        const msg = await ch.get(queue, { noAck: false });
        assert.ok(msg, `the message is no longer in ${queue}`);
        assert.equal(msg.content.toString(), body);
        assert.equal(msg.properties.deliveryMode, 2);
        assert.equal(msg.properties.contentType, props.contentType);
        assert.equal(msg.properties.correlationId, props.correlationId);
        assert.deepEqual(msg.properties.headers, props.headers);
        ch.ack(msg);
        assert.equal((await ch.deleteQueue(queue)).messageCount, 0);
      } finally {
        await conn.close();
      }
    },
  },
  "amqp-client": {
    async before() {
      const conn = await new AMQPClient(AMQP_URL).connect();
      try {
        const ch = await conn.channel();
        await ch.queueDelete(queue); // a leftover from an aborted run
        await ch.queueDeclare(queue, { durable: true });
        await ch.confirmSelect();
        // On a confirm channel basicPublish resolves on the broker's basic.ack.
        await guard(ch.basicPublish("", queue, body, { ...props, deliveryMode: 2 }), "publisher confirm");
        assert.equal((await ch.queueDeclare(queue, { passive: true })).messageCount, 1);
      } finally {
        await conn.close();
      }
    },
    async after() {
      const conn = await new AMQPClient(AMQP_URL).connect();
      try {
        const ch = await conn.channel();
        const msg = await ch.basicGet(queue, { noAck: false });
        assert.ok(msg, `the message is no longer in ${queue}`);
        assert.equal(msg.bodyString(), body);
        assert.equal(msg.properties.deliveryMode, 2);
        assert.equal(msg.properties.contentType, props.contentType);
        assert.equal(msg.properties.correlationId, props.correlationId);
        assert.deepEqual(msg.properties.headers, props.headers);
        await msg.ack();
        assert.equal((await ch.queueDelete(queue)).messageCount, 0);
      } finally {
        await conn.close();
      }
    },
  },
};

const names = { before: "before_publish_persistent_confirmed", after: "after_persistent_message_survived" };
if (!steps[client] || !names[step]) {
  console.error("usage: node restart.mjs <amqplib|amqp-client> <before|after>");
  process.exit(2);
}
let failed = 0;
try {
  await guard(steps[client][step](), `${client} ${step}`, 30_000);
  console.log(`PASS restart: ${names[step]}`);
} catch (err) {
  failed = 1;
  console.error(err);
  console.log(`FAIL restart: ${names[step]}: ${String(err?.message ?? err).replaceAll("\n", " ")}`);
}
console.log(`${1 - failed} passed, ${failed} failed`);
process.exit(failed);
