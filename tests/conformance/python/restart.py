"""The broker-restart check for the Python clients.

    python3 restart.py <pika|aio-pika|kombu> <before|after>

scripts/conformance runs every client's "before" step, restarts the broker gracefully (same
port, same data directory), then every "after" step.

before: declare the durable queue conformance.restart.<client>, publish one persistent message
        with known properties with publisher confirms, and wait for the broker's basic.ack.
after:  basic.get it, check the body, delivery mode 2 and the properties, ack, delete the queue.

Output: "PASS restart: <name>" or "FAIL restart: <name>: <error>", then "N passed, N failed".
"""
import asyncio
import os
import sys
import traceback

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
HANG_GUARD = 10  # seconds


def expected(client):
    return {"queue": f"conformance.restart.{client}", "body": f"persistent message from {client}",
            "content_type": "text/plain", "correlation_id": "restart-1",
            "headers": {"client": client}}


def check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: expected {want!r} but got {got!r}")


# ---- pika -----------------------------------------------------------------------------------

def pika_step(step, e):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        ch = conn.channel()
        if step == "before":
            ch.queue_delete(e["queue"])  # a leftover from an aborted run
            ch.queue_declare(e["queue"], durable=True)
            ch.confirm_delivery()
            # With confirms on, basic_publish returns once the broker acked (raises on a nack).
            ch.basic_publish("", e["queue"], e["body"].encode(), pika.BasicProperties(
                delivery_mode=2, content_type=e["content_type"],
                correlation_id=e["correlation_id"], headers=e["headers"]))
            check(ch.queue_declare(e["queue"], passive=True).method.message_count, 1, "queued")
        else:
            method, props, body = ch.basic_get(e["queue"], auto_ack=False)
            if method is None:
                raise AssertionError(f"the message is no longer in {e['queue']}")
            check(body.decode(), e["body"], "body")
            check(props.delivery_mode, 2, "delivery mode")
            check(props.content_type, e["content_type"], "content type")
            check(props.correlation_id, e["correlation_id"], "correlation id")
            check(props.headers, e["headers"], "headers")
            ch.basic_ack(method.delivery_tag)
            check(ch.queue_delete(e["queue"]).method.message_count, 0, "messages left when deleted")
    finally:
        conn.close()


# ---- aio-pika -------------------------------------------------------------------------------

async def aio_pika_step(step, e):
    import aio_pika
    conn = await aio_pika.connect(URL)
    try:
        ch = await conn.channel()  # publisher confirms are aio-pika's default
        if step == "before":
            await ch.queue_delete(e["queue"])  # a leftover from an aborted run
            q = await ch.declare_queue(e["queue"], durable=True)
            # publish() returns once the broker acked.
            await asyncio.wait_for(ch.default_exchange.publish(aio_pika.Message(
                e["body"].encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=e["content_type"], correlation_id=e["correlation_id"],
                headers=e["headers"]), routing_key=e["queue"]), HANG_GUARD)
            q = await ch.declare_queue(e["queue"], passive=True)
            check(q.declaration_result.message_count, 1, "queued")
        else:
            q = await ch.get_queue(e["queue"], ensure=False)
            msg = await q.get(no_ack=False, fail=False)
            if msg is None:
                raise AssertionError(f"the message is no longer in {e['queue']}")
            check(msg.body.decode(), e["body"], "body")
            check(msg.delivery_mode, aio_pika.DeliveryMode.PERSISTENT, "delivery mode")
            check(msg.content_type, e["content_type"], "content type")
            check(msg.correlation_id, e["correlation_id"], "correlation id")
            check(dict(msg.headers), e["headers"], "headers")
            await msg.ack()
            ok = await ch.queue_delete(e["queue"])
            check(ok.message_count, 0, "messages left when deleted")
    finally:
        await conn.close()


# ---- kombu ----------------------------------------------------------------------------------

def kombu_step(step, e):
    from kombu import Connection, Queue
    with Connection(URL, transport_options={"confirm_publish": True}) as conn:
        ch = conn.channel()
        queue = Queue(e["queue"], durable=True, channel=ch)
        if step == "before":
            ch.queue_delete(e["queue"])  # a leftover from an aborted run
            queue.declare()
            # With confirm_publish, publish returns once the broker acked.
            conn.Producer(channel=ch).publish(
                e["body"], routing_key=e["queue"], serializer=None, content_type=e["content_type"],
                content_encoding="utf-8", delivery_mode=2, correlation_id=e["correlation_id"],
                headers=e["headers"])
            check(queue.queue_declare(passive=True).message_count, 1, "queued")
        else:
            msg = queue.get(no_ack=False, accept=[e["content_type"]])
            if msg is None:
                raise AssertionError(f"the message is no longer in {e['queue']}")
            check(msg.body.decode() if isinstance(msg.body, bytes) else msg.body, e["body"], "body")
            check(msg.properties.get("delivery_mode"), 2, "delivery mode")
            check(msg.content_type, e["content_type"], "content type")
            check(msg.properties.get("correlation_id"), e["correlation_id"], "correlation id")
            check(msg.headers, e["headers"], "headers")
            msg.ack()
            check(ch.queue_delete(e["queue"]), 0, "messages left when deleted")


NAMES = {"before": "before_publish_persistent_confirmed", "after": "after_persistent_message_survived"}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("pika", "aio-pika", "kombu") or sys.argv[2] not in NAMES:
        print(__doc__, file=sys.stderr)
        return 2
    client, step = sys.argv[1], sys.argv[2]
    e = expected(client)
    try:
        if client == "pika":
            pika_step(step, e)
        elif client == "aio-pika":
            asyncio.run(asyncio.wait_for(aio_pika_step(step, e), 30))
        else:
            kombu_step(step, e)
        print(f"PASS restart: {NAMES[step]}")
        failed = 0
    except Exception as err:  # report everything
        traceback.print_exc()
        print(f"FAIL restart: {NAMES[step]}: {type(err).__name__}: {str(err).replace(chr(10), ' ')}")
        failed = 1
    print(f"{1 - failed} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
