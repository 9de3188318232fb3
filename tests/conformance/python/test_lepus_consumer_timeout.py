"""Consumer-timeout actions with pika: Lepus's queue argument `x-consumer-timeout-action`
(`cancel-and-requeue`, `cancel-and-dead-letter`; `close-channel` is RabbitMQ's behaviour and the
default). With an action that cancels, a delivery left unacknowledged past the queue's
`x-consumer-timeout` cancels only its consumer (a server `basic.cancel`, which pika announces it
accepts through `consumer_cancel_notify`) and takes back its unacknowledged deliveries, requeued
or dead-lettered with reason `rejected`; the channel stays open and a late ack of a taken-back
delivery is ignored. Every test is named `test_queue_features_*` (the "queue-features" row of
scripts/conformance).

Lepus only: RabbitMQ has no such argument (3.10.8 has no per-queue `x-consumer-timeout` either),
so this file is run by the `lepus-features` suite, which `--against rabbitmq` skips.

The timeout is tiny (200 ms); waiting is on broker events (the delivery, the `basic.cancel`,
the channel's close), with HANG_GUARD only as a guard against a broker that never sends them.
"""
import time
import uuid

import pika
import pytest

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves
TIMEOUT_MS = 200


def uniq(prefix):
    return f"conf.ctimeout.{prefix}.{uuid.uuid4().hex[:12]}"


def wait_until(conn, done, what):
    """Processes the connection's events until `done()` (the hang guard aside)."""
    deadline = time.monotonic() + HANG_GUARD
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {HANG_GUARD}s"
        conn.process_data_events(time_limit=0.05)


def timed_queue(ch, action, **arguments):
    queue = uniq(action)
    args = {"x-consumer-timeout": TIMEOUT_MS, "x-consumer-timeout-action": action, **arguments}
    ch.queue_declare(queue, auto_delete=False, arguments=args)
    return queue


def consume_without_ack(conn, ch, queue, body):
    """Publishes `body` to `queue`, consumes it without acking; returns (delivery tag, the list
    the server's basic.cancel frames land in)."""
    got, cancelled = [], []
    ch.add_on_cancel_callback(cancelled.append)
    ch.basic_consume(queue, lambda _c, method, _p, b: got.append((method, b)), auto_ack=False)
    ch.basic_publish("", queue, body)
    wait_until(conn, lambda: got, "delivery")
    (method, received), = got
    assert received == body
    return method.delivery_tag, cancelled


def test_queue_features_cancel_and_requeue_cancels_the_consumer_and_requeues(conn, ch):
    queue = timed_queue(ch, "cancel-and-requeue")
    tag, cancelled = consume_without_ack(conn, ch, queue, b"late")
    wait_until(conn, lambda: cancelled, "basic.cancel from the server")
    assert cancelled[0].method.NAME == "Basic.Cancel"
    # Back in the queue, redelivered; the channel is still open and ignores a late ack.
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"late", True)
    ch.basic_ack(tag)
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    assert ch.is_open
    ch.queue_delete(queue)


def test_queue_features_cancel_and_dead_letter_dead_letters_as_rejected(conn, ch):
    dead = uniq("dlq")
    ch.queue_declare(dead)
    queue = timed_queue(ch, "cancel-and-dead-letter", **{"x-dead-letter-exchange": "",
                                                          "x-dead-letter-routing-key": dead})
    tag, cancelled = consume_without_ack(conn, ch, queue, b"too slow")
    wait_until(conn, lambda: cancelled, "basic.cancel from the server")
    method, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"too slow" and method is not None
    (death,) = props.headers["x-death"]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", queue, 1)
    assert props.headers["x-first-death-reason"] == "rejected"
    ch.basic_ack(tag)  # a late ack of what was dead-lettered: ignored
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    assert ch.is_open
    ch.queue_delete(queue)
    ch.queue_delete(dead)


def test_queue_features_close_channel_is_rabbitmq_s_consumer_timeout(conn, ch):
    queue = timed_queue(ch, "close-channel")
    _tag, cancelled = consume_without_ack(conn, ch, queue, b"held")
    # start_consuming returns on the channel's close, raising its reason (the hang guard
    # stops it otherwise, and the test fails).
    conn.call_later(HANG_GUARD, ch.stop_consuming)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.start_consuming()
    assert (closed.value.reply_code, closed.value.reply_text) == (
        406, f"PRECONDITION_FAILED - delivery acknowledgement on channel {ch.channel_number} timed out. Timeout value "
             f"used: {TIMEOUT_MS} ms. This timeout value can be configured, see consumers doc guide to learn more")
    assert not cancelled
    # As on RabbitMQ: the delivery went back to the queue, the connection stays open.
    other = conn.channel()
    method, _props, body = other.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"held", True)
    other.queue_delete(queue)


@pytest.mark.parametrize("action", ["explode", 1])
def test_queue_features_consumer_timeout_action_is_validated(connect, action):
    ch = connect().channel()
    queue = uniq("invalid")
    kind = "unknown_consumer_timeout_action,<<\"explode\">>" if action == "explode" else "unacceptable_type,signedint"  # pika sends a small int as I
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare(queue, arguments={"x-consumer-timeout-action": action})
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-consumer-timeout-action' for queue "
                                       f"'{queue}' in vhost '/': {{{kind}}}")
