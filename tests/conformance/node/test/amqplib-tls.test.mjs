// AMQP over TLS (amqps) with amqplib: PLAIN over TLS, SASL EXTERNAL with a client certificate
// whose CN names the user (guest), refused with 403 for a certificate naming no user. Test
// names start with "tls:". Needs the runner's TLS setup: scripts/conformance makes the
// certificates (AMQP_TLS_DIR) and starts the broker (Lepus or RabbitMQ) with a TLS listener on
// AMQPS_PORT that verifies client certificates and offers EXTERNAL.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import amqp from "amqplib";
import { T, guard, uniq } from "../lib/helpers.mjs";

const PORT = Number(process.env.AMQPS_PORT);
const DIR = process.env.AMQP_TLS_DIR;

function connect(client, credentials) {
  const options = { ca: [readFileSync(`${DIR}/ca.pem`)], servername: "localhost" };
  if (client) {
    options.cert = readFileSync(`${DIR}/${client}.pem`);
    options.key = readFileSync(`${DIR}/${client}.key`);
  }
  if (credentials) options.credentials = credentials;
  const url = { protocol: "amqps", hostname: "127.0.0.1", port: PORT, username: "guest", password: "guest" };
  return guard(amqp.connect(url, options), "TLS connection");
}

async function roundTrip(conn) {
  const ch = await conn.createConfirmChannel();
  const q = uniq("tls");
  await ch.assertQueue(q, { exclusive: true });
  ch.sendToQueue(q, Buffer.from("over tls"));
  await guard(ch.waitForConfirms(), "publisher confirms");
  const msg = await ch.get(q, { noAck: true });
  assert.ok(msg, "queue unexpectedly empty");
  assert.equal(msg.content.toString(), "over tls");
  await conn.close();
}

// Run on its own without the runner's TLS setup, it has nothing to connect to.
describe("amqplib", { skip: !PORT && "no TLS listener (scripts/conformance sets AMQPS_PORT)" }, () => {
  test("tls: PLAIN login without a client certificate", T, async () => {
    await roundTrip(await connect());
  });

  test("tls: EXTERNAL login with a client certificate", T, async () => {
    await roundTrip(await connect("guest", amqp.credentials.external()));
  });

  test("tls: EXTERNAL refused for a certificate naming no user", T, async () => {
    await assert.rejects(connect("stranger", amqp.credentials.external()), (err) => {
      assert.match(String(err.message), /403|ACCESS_REFUSED/);
      return true;
    });
  });
});
