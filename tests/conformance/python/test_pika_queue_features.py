"""Queue features with pika: message TTL (x-message-ttl and the per-message `expiration`),
dead-lettering (x-death and x-first-death-* headers, reasons rejected/expired/maxlen, cycle
detection), length limits (x-max-length, x-max-length-bytes, x-overflow), queue expiry
(x-expires), single active consumer, priorities and the consumer (delivery ack) timeout's
absence of surprises on the channel. Every test is named `test_queue_features_*` (the
"queue-features" row of scripts/conformance).

RabbitMQ 3.10.8 is the specification: the exact header tables, field types and reply texts
asserted below were observed on it. The field types of the dead-letter headers are checked on
the wire: `typed_headers()` makes pika's table decoder keep each value's AMQP type tag
(S longstr, l long-long, T timestamp, A array, F table, I long).

Waiting is on broker events (a dead-lettered message arriving at a consumer, a publisher
confirm, a basic.return); timeouts are hang guards, never sleeps.
"""
import contextlib
import datetime
import time
import uuid

import pika
import pika.data
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves


def uniq(prefix):
    return f"conf.qf.{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cleanup(connect):
    """Register queues/exchanges to delete at teardown (on a fresh connection)."""
    queues, exchanges = [], []
    yield queues, exchanges
    c = connect()
    cch = c.channel()
    for q in queues:
        cch.queue_delete(q)
    for ex in exchanges:
        cch.exchange_delete(ex)
    c.close()


class Typed:
    """A field-table value with its AMQP 0-9-1 type tag, as read from the wire."""

    def __init__(self, kind, value):
        self.kind, self.value = kind, value

    def __repr__(self):
        return f"{self.kind}:{self.value!r}"


_decode_value = pika.data.decode_value


def _typed_decode_value(encoded, offset):
    kind = encoded[offset:offset + 1].decode()
    value, offset = _decode_value(encoded, offset)
    return Typed(kind, value), offset


@contextlib.contextmanager
def typed_headers():
    """Frames decoded inside this block keep every table value's type tag (see Typed)."""
    pika.data.decode_value = _typed_decode_value
    try:
        yield
    finally:
        pika.data.decode_value = _decode_value


def untag(v):
    """Typed values -> (tag, plain value), recursively through arrays and tables."""
    if isinstance(v, Typed):
        if v.kind == "A":
            return ("A", [untag(x) for x in v.value])
        if v.kind == "F":
            return ("F", {k: untag(x) for k, x in v.value.items()})
        return (v.kind, v.value)
    if isinstance(v, dict):
        return {k: untag(x) for k, x in v.items()}
    return v


def consume(conn, ch, queue, n=1):
    """Waits (hang guard only) for n messages on `queue` through a consumer, acks them and
    returns [(method, properties, body)], headers decoded as (tag, value) pairs."""
    got = []
    deadline = time.monotonic() + HANG_GUARD
    with typed_headers():  # deliveries may come with the consume-ok already
        tag = ch.basic_consume(queue, lambda _c, m, p, b: got.append((m, p, b)))
        while len(got) < n:
            assert time.monotonic() < deadline, f"timed out waiting for {n} message(s) on {queue}"
            conn.process_data_events(time_limit=0.05)
    ch.basic_cancel(tag)
    assert len(got) == n, f"expected {n} message(s) on {queue}, got {len(got)}"
    for method, props, _body in got:
        ch.basic_ack(method.delivery_tag)
        if props.headers is not None:
            props.headers = untag(props.headers)
    return got


def consume_one(conn, ch, queue):
    return consume(conn, ch, queue)[0]


def get_typed(ch, queue, auto_ack=True):
    with typed_headers():
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
    if props is not None and props.headers is not None:
        props.headers = untag(props.headers)
    return method, props, body


def message_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue):
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def check_time(tagged):
    """x-death `time`: an AMQP timestamp (T), whole seconds, close to now."""
    kind, value = tagged
    assert kind == "T"
    assert isinstance(value, datetime.datetime)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - value).total_seconds()) < 120


def death(entry, reason, queue, exchange, routing_keys, original_expiration=None):
    """Checks one x-death table (tag F) field by field, with types; returns its time."""
    kind, fields = entry
    assert kind == "F"
    expected = {
        "count": ("l", 1),
        "reason": ("S", reason),
        "queue": ("S", queue),
        "exchange": ("S", exchange),
        "routing-keys": ("A", [("S", k) for k in routing_keys]),
    }
    if original_expiration is not None:
        expected["original-expiration"] = ("S", original_expiration)
    check_time(fields["time"])
    rest = {k: v for k, v in fields.items() if k != "time"}
    assert rest == expected
    return fields["time"]


def dlx_setup(ch, cleanup, kind="fanout", bind_key=""):
    """A dead-letter exchange and a queue bound to it; returns (exchange, queue)."""
    queues, exchanges = cleanup
    dlx, dlq = uniq("dlx"), uniq("dlq")
    ch.exchange_declare(dlx, kind)
    exchanges.append(dlx)
    ch.queue_declare(dlq)
    queues.append(dlq)
    ch.queue_bind(dlq, dlx, bind_key)
    return dlx, dlq


def declare(ch, cleanup, prefix, arguments):
    q = uniq(prefix)
    ch.queue_declare(q, arguments=arguments)
    cleanup[0].append(q)
    return q


# ---------------------------------------------------------------------------------------------
# 1, 2, 4: message TTL and dead-lettering on expiry
# ---------------------------------------------------------------------------------------------


def test_queue_features_message_ttl_expires_without_consumer(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "ttl", {"x-message-ttl": 30, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"short-lived", pika.BasicProperties(message_id="m1"))
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"short-lived"
    assert method.exchange == dlx
    assert method.routing_key == q  # the original routing key
    assert method.redelivered is False
    assert props.message_id == "m1"
    assert props.expiration is None
    (entry,) = props.headers["x-death"][1]
    assert props.headers["x-death"][0] == "A"
    death(entry, "expired", q, "", [q])
    assert props.headers["x-first-death-reason"] == ("S", "expired")
    assert props.headers["x-first-death-queue"] == ("S", q)
    assert props.headers["x-first-death-exchange"] == ("S", "")
    assert set(props.headers) == {"x-death", "x-first-death-reason", "x-first-death-queue",
                                  "x-first-death-exchange"}
    # The queue is empty now.
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    assert message_count(ch, q) == 0


def test_queue_features_message_ttl_zero_expires_at_once(ch, cleanup):
    ch.confirm_delivery()
    q = declare(ch, cleanup, "ttl0", {"x-message-ttl": 0})
    ch.basic_publish("", q, b"gone")  # confirmed (acked), then expired: nobody was consuming
    assert message_count(ch, q) == 0
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_queue_features_per_message_expiration_lower_applies(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    # Queue TTL 10 s, message expiration 30 ms: the message's wins.
    q = declare(ch, cleanup, "pmttl", {"x-message-ttl": 10_000, "x-dead-letter-exchange": dlx})
    start = time.monotonic()
    ch.basic_publish("", q, b"per-message", pika.BasicProperties(expiration="30"))
    method, props, body = consume_one(conn, ch, dlq)
    assert time.monotonic() - start < 5  # well before the queue's 10 s
    assert body == b"per-message"
    assert props.expiration is None  # removed from the dead-lettered message
    (entry,) = props.headers["x-death"][1]
    death(entry, "expired", q, "", [q], original_expiration="30")
    # Queue TTL 30 ms, message expiration 10 s: the queue's wins; original-expiration is
    # still recorded (the message had one).
    q2 = declare(ch, cleanup, "pmttl2", {"x-message-ttl": 30, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q2, b"queue-ttl", pika.BasicProperties(expiration="10000"))
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"queue-ttl"
    assert props.expiration is None
    (entry,) = props.headers["x-death"][1]
    death(entry, "expired", q2, "", [q2], original_expiration="10000")


@pytest.mark.parametrize("expiration,detail", [
    ("abc", "no_integer"),
    ("-1", "{value_negative,-1}"),
    ("1.5", '{leftover_string,".5"}'),
    ("315360000001", "{value_too_large,315360000001}"),
])
def test_queue_features_invalid_expiration_closes_channel(conn, expiration, detail):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_publish("", uniq("nowhere"), b"x", pika.BasicProperties(expiration=expiration))
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}")
    assert conn.is_open
    conn.channel().close()


def test_queue_features_largest_expiration_accepted(ch, cleanup):
    ch.confirm_delivery()
    q = declare(ch, cleanup, "maxexp", {})
    # 315360000000 ms (ten years) is the largest accepted expiration.
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration="315360000000"))
    assert message_count(ch, q) == 1


# ---------------------------------------------------------------------------------------------
# 3: dead-lettering on reject/nack
# ---------------------------------------------------------------------------------------------


def test_queue_features_dead_letter_on_reject_with_cc(conn, ch, cleanup):
    ch.confirm_delivery()
    queues, exchanges = cleanup
    dlx, dlq = dlx_setup(ch, cleanup, kind="direct", bind_key="rk")
    # A queue bound to the DLX with only the BCC key: dead-lettering routes with the original
    # routing keys, which still include the BCC ones although the header itself is gone.
    bccq = uniq("bccq")
    ch.queue_declare(bccq)
    queues.append(bccq)
    ch.queue_bind(bccq, dlx, "bcc1")
    src = uniq("src")
    ch.exchange_declare(src, "direct")
    exchanges.append(src)
    q = declare(ch, cleanup, "rej", {"x-dead-letter-exchange": dlx})
    ch.queue_bind(q, src, "rk")
    ch.basic_publish(src, "rk", b"rejected", pika.BasicProperties(
        headers={"CC": ["cc1"], "BCC": ["bcc1"], "app": 7}, expiration="60000", priority=3))
    method, props, _ = get_typed(ch, q, auto_ack=False)
    assert props.headers == {"CC": ("A", [("S", "cc1")]), "app": ("I", 7)}  # BCC removed
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"rejected"
    assert (method.exchange, method.routing_key) == (dlx, "rk")
    assert props.priority == 3
    assert props.expiration is None
    assert set(props.headers) == {"CC", "app", "x-death", "x-first-death-exchange",
                                  "x-first-death-queue", "x-first-death-reason"}
    assert props.headers["CC"] == ("A", [("S", "cc1")])  # kept (no dead-letter routing key)
    assert props.headers["app"] == ("I", 7)
    (entry,) = props.headers["x-death"][1]
    death(entry, "rejected", q, src, ["rk", "cc1"], original_expiration="60000")
    assert props.headers["x-first-death-reason"] == ("S", "rejected")
    assert props.headers["x-first-death-queue"] == ("S", q)
    assert props.headers["x-first-death-exchange"] == ("S", src)
    # RabbitMQ 3.10 sets no x-last-death-* headers.
    method, props, body = consume_one(conn, ch, bccq)
    assert body == b"rejected"
    assert method.routing_key == "rk"
    assert "BCC" not in props.headers


def test_queue_features_dead_letter_on_nack_with_routing_key_override(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup, kind="direct", bind_key="override")
    q = declare(ch, cleanup, "nack", {"x-dead-letter-exchange": dlx,
                                      "x-dead-letter-routing-key": "override"})
    ch.basic_publish("", q, b"nacked", pika.BasicProperties(headers={"CC": ["cc1"]}))
    for i in range(3):
        ch.basic_publish("", q, f"multi-{i}".encode())
    tags = []
    for _ in range(4):
        method, _p, _b = ch.basic_get(q, auto_ack=False)
        tags.append(method.delivery_tag)
    ch.basic_nack(tags[0], requeue=False)
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"nacked"
    assert (method.exchange, method.routing_key) == (dlx, "override")
    # With a dead-letter routing key the CC header is removed; routing-keys still lists the
    # original routing key and the CC keys.
    assert set(props.headers) == {"x-death", "x-first-death-reason", "x-first-death-queue",
                                  "x-first-death-exchange"}
    (entry,) = props.headers["x-death"][1]
    death(entry, "rejected", q, "", [q, "cc1"])
    # basic.nack multiple=true requeue=false dead-letters every message up to the tag, in order.
    ch.basic_nack(tags[-1], multiple=True, requeue=False)
    got = consume(conn, ch, dlq, 3)
    assert [body for _m, _p, body in got] == [b"multi-0", b"multi-1", b"multi-2"]
    for _m, props, _b in got:
        (entry,) = props.headers["x-death"][1]
        death(entry, "rejected", q, "", [q])
    assert message_count(ch, q) == 0


# ---------------------------------------------------------------------------------------------
# 5: length limits and overflow
# ---------------------------------------------------------------------------------------------


def test_queue_features_max_length_drop_head_dead_letters_oldest(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "maxlen", {"x-max-length": 2, "x-dead-letter-exchange": dlx})
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())  # every publish is acked
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"m0"
    assert method.routing_key == q
    (entry,) = props.headers["x-death"][1]
    death(entry, "maxlen", q, "", [q])
    assert props.headers["x-first-death-reason"] == ("S", "maxlen")
    assert drain(ch, q) == [b"m1", b"m2"]


def test_queue_features_max_length_zero_acks_and_stays_empty(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "maxlen0", {"x-max-length": 0, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"dropped")  # basic.ack, no exception
    assert message_count(ch, q) == 0
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"dropped"
    (entry,) = props.headers["x-death"][1]
    death(entry, "maxlen", q, "", [q])


def test_queue_features_max_length_bytes_counts_bodies_only(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "maxbytes", {"x-max-length-bytes": 10,
                                          "x-dead-letter-exchange": dlx})
    big_header = pika.BasicProperties(headers={"pad": "x" * 200})
    for body in (b"aaaa1", b"bbbb2", b"cccc3"):
        ch.basic_publish("", q, body, big_header)  # all acked
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"aaaa1"
    (entry,) = props.headers["x-death"][1]
    death(entry, "maxlen", q, "", [q])
    assert drain(ch, q) == [b"bbbb2", b"cccc3"]
    # A body larger than the limit on its own: acked, and dead-lettered at once.
    ch.basic_publish("", q, b"x" * 11)
    assert message_count(ch, q) == 0
    assert consume_one(conn, ch, dlq)[2] == b"x" * 11


def test_queue_features_reject_publish_nacks(ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "rejpub", {"x-max-length": 1, "x-overflow": "reject-publish",
                                        "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused")
    assert ch.is_open
    assert drain(ch, q) == [b"kept"]
    assert message_count(ch, dlq) == 0  # reject-publish does not dead-letter


def test_queue_features_reject_publish_dlx_nacks_and_dead_letters(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = declare(ch, cleanup, "rejpubdlx", {"x-max-length": 1,
                                           "x-overflow": "reject-publish-dlx",
                                           "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"kept")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"refused")
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"refused"
    (entry,) = props.headers["x-death"][1]
    death(entry, "maxlen", q, "", [q])
    assert drain(ch, q) == [b"kept"]


def test_queue_features_reject_publish_one_of_two_queues_nacks(ch, cleanup):
    """A fanout to a full reject-publish queue and to a normal queue: the publish is nacked,
    and the normal queue still gets its copy."""
    ch.confirm_delivery()
    queues, exchanges = cleanup
    fan = uniq("fan")
    ch.exchange_declare(fan, "fanout")
    exchanges.append(fan)
    full = declare(ch, cleanup, "full", {"x-max-length": 0, "x-overflow": "reject-publish"})
    normal = declare(ch, cleanup, "normal", {})
    ch.queue_bind(full, fan)
    ch.queue_bind(normal, fan)
    with pytest.raises(NackError):
        ch.basic_publish(fan, "", b"half")
    assert drain(ch, normal) == [b"half"]
    assert message_count(ch, full) == 0


# ---------------------------------------------------------------------------------------------
# 6: repeated dead-lettering and cycles
# ---------------------------------------------------------------------------------------------


def test_queue_features_retry_loop_counts_deaths(conn, ch, cleanup):
    """A rejects -> DLX b -> B (TTL) expires -> DLX a -> A ...: one x-death entry per
    (queue, reason), count incremented, most recent first."""
    ch.confirm_delivery()
    queues, exchanges = cleanup
    ex_a, ex_b = uniq("exa"), uniq("exb")
    for ex in (ex_a, ex_b):
        ch.exchange_declare(ex, "fanout")
        exchanges.append(ex)
    a = declare(ch, cleanup, "a", {"x-dead-letter-exchange": ex_b})
    b = declare(ch, cleanup, "b", {"x-dead-letter-exchange": ex_a, "x-message-ttl": 20})
    ch.queue_bind(a, ex_a)
    ch.queue_bind(b, ex_b)
    ch.basic_publish(ex_a, "orig", b"retry")
    seen = []
    got = []
    deadline = time.monotonic() + HANG_GUARD
    with typed_headers():
        tag = ch.basic_consume(a, lambda _c, m, p, body: got.append((m, p)))
        while len(seen) < 4:
            assert time.monotonic() < deadline, "timed out in the retry loop"
            conn.process_data_events(time_limit=0.05)
            while got:
                m, p = got.pop(0)
                seen.append((m, untag(p.headers) if p.headers else None))
                if len(seen) < 4:
                    ch.basic_reject(m.delivery_tag, requeue=False)
                else:
                    ch.basic_ack(m.delivery_tag)
    ch.basic_cancel(tag)
    assert seen[0][1] is None
    for n, (m, headers) in enumerate(seen[1:], start=1):
        assert (m.exchange, m.routing_key, m.redelivered) == (ex_a, "orig", False)
        kind, entries = headers["x-death"]
        assert kind == "A"
        assert len(entries) == 2
        first, second = entries
        # Most recent first: B's expiry, then A's rejection.
        assert first[1]["queue"] == ("S", b) and first[1]["reason"] == ("S", "expired")
        assert first[1]["exchange"] == ("S", ex_b)
        assert first[1]["count"] == ("l", n)
        assert second[1]["queue"] == ("S", a) and second[1]["reason"] == ("S", "rejected")
        assert second[1]["exchange"] == ("S", ex_a)
        assert second[1]["count"] == ("l", n)
        for entry in entries:
            assert entry[0] == "F"
            assert entry[1]["routing-keys"] == ("A", [("S", "orig")])
            check_time(entry[1]["time"])
            assert set(entry[1]) == {"count", "reason", "queue", "time", "exchange",
                                     "routing-keys"}
        assert headers["x-first-death-reason"] == ("S", "rejected")
        assert headers["x-first-death-queue"] == ("S", a)
        assert headers["x-first-death-exchange"] == ("S", ex_a)


def test_queue_features_expiry_cycle_without_reject_is_dropped(conn, ch, cleanup):
    """C (expiration) -> DLX d -> D (TTL) -> DLX c -> C: the message is not enqueued in C
    again (a dead-letter cycle with no rejection); other queues bound to c still get it."""
    ch.confirm_delivery()
    queues, exchanges = cleanup
    ex_c, ex_d = uniq("exc"), uniq("exd")
    for ex in (ex_c, ex_d):
        ch.exchange_declare(ex, "fanout")
        exchanges.append(ex)
    # C has no TTL of its own: the first expiry comes from the message's expiration, which
    # dead-lettering removes, so a copy that reached C again would stay there.
    c = declare(ch, cleanup, "c", {"x-dead-letter-exchange": ex_d})
    d = declare(ch, cleanup, "d", {"x-dead-letter-exchange": ex_c, "x-message-ttl": 20})
    watch = declare(ch, cleanup, "watch", {})
    ch.queue_bind(c, ex_c)
    ch.queue_bind(d, ex_d)
    ch.queue_bind(watch, ex_c)
    ch.basic_publish("", c, b"cycle", pika.BasicProperties(expiration="20"))
    method, props, body = consume_one(conn, ch, watch)
    assert body == b"cycle"
    assert (method.exchange, method.routing_key) == (ex_c, c)
    kind, entries = props.headers["x-death"]
    assert [(e[1]["queue"][1], e[1]["reason"][1]) for e in entries] == [
        (d, "expired"), (c, "expired")]
    assert entries[1][1]["original-expiration"] == ("S", "20")
    assert message_count(ch, c) == 0
    assert message_count(ch, d) == 0


def test_queue_features_reject_cycle_to_same_queue_allowed(conn, ch, cleanup):
    """A queue dead-lettering to itself through the default exchange: rejections are not a
    cycle to drop; count grows in the single x-death entry."""
    ch.confirm_delivery()
    q = declare(ch, cleanup, "self", {"x-dead-letter-exchange": ""})
    ch.basic_publish("", q, b"again")
    got = []
    seen = []
    deadline = time.monotonic() + HANG_GUARD
    with typed_headers():
        tag = ch.basic_consume(q, lambda _c, m, p, body: got.append((m, p)))
        while len(seen) < 3:
            assert time.monotonic() < deadline, "timed out"
            conn.process_data_events(time_limit=0.05)
            while got:
                m, p = got.pop(0)
                seen.append(untag(p.headers) if p.headers else None)
                if len(seen) < 3:
                    ch.basic_reject(m.delivery_tag, requeue=False)
                else:
                    ch.basic_ack(m.delivery_tag)
    ch.basic_cancel(tag)
    assert seen[0] is None
    for n, headers in enumerate(seen[1:], start=1):
        (entry,) = headers["x-death"][1]
        assert entry[1]["count"] == ("l", n)
        assert entry[1]["reason"] == ("S", "rejected")
        assert entry[1]["queue"] == ("S", q)
        assert entry[1]["exchange"] == ("S", "")
        assert entry[1]["routing-keys"] == ("A", [("S", q)])


# ---------------------------------------------------------------------------------------------
# 7: queue expiry
# ---------------------------------------------------------------------------------------------


def wait_until_unroutable(ch, queue):
    """Publishes mandatory probe messages (expiration 0, confirmed) to `queue` through the
    default exchange until one comes back unroutable: the queue is gone. Publishing does not
    renew a queue's x-expires lease (a passive queue.declare would)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        assert time.monotonic() < deadline, f"{queue} was not deleted"
        try:
            ch.basic_publish("", queue, b"probe", pika.BasicProperties(expiration="0"),
                             mandatory=True)
        except UnroutableError:
            return
        ch.connection.process_data_events(time_limit=0.005)


def test_queue_features_x_expires_deletes_unused_queue(conn, ch, cleanup):
    ch.confirm_delivery()
    q = uniq("expires")
    ch.queue_declare(q, arguments={"x-expires": 50})
    cleanup[0].append(q)  # deleting a missing queue is fine
    ch.basic_publish("", q, b"still-deleted")  # messages do not keep it alive
    wait_until_unroutable(ch, q)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text == f"NOT_FOUND - no queue '{q}' in vhost '/'"


def test_queue_features_x_expires_keeps_queue_with_consumer(conn, ch, cleanup):
    ch.confirm_delivery()
    q = declare(ch, cleanup, "expcons", {"x-expires": 50})
    tag = ch.basic_consume(q, lambda *_: None)
    # A second queue with the same lease and no consumer, declared after: once it is gone,
    # the first one's lease would have run out too.
    clock = declare(ch, cleanup, "expclock", {"x-expires": 50})
    wait_until_unroutable(ch, clock)
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.queue, ok.consumer_count) == (q, 1)
    ch.basic_cancel(tag)
    wait_until_unroutable(ch, q)  # unused now: deleted after its lease


@pytest.mark.parametrize("args,detail", [
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-message-ttl": -1}, "{value_negative,-1}"),
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-overflow": "bogus"}, "invalid_overflow"),
    ({"x-max-priority": 256}, "{max_value_exceeded,256}"),
    ({"x-dead-letter-routing-key": "rk"}, "routing_key_but_no_dlx_defined"),
    ({"x-message-ttl": "10"}, '"expected integer, got longstr"'),
])
def test_queue_features_invalid_arguments(conn, args, detail):
    ch = conn.channel()
    q = uniq("badarg")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(q, arguments=args)
    (name,) = args
    assert info.value.reply_code == 406
    assert info.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{name}' for queue '{q}' in vhost '/': {detail}")
    assert conn.is_open


# ---------------------------------------------------------------------------------------------
# 8: missing dead-letter exchange
# ---------------------------------------------------------------------------------------------


def test_queue_features_missing_dlx_drops_silently(conn, ch, cleanup):
    ch.confirm_delivery()
    missing = uniq("nosuchx")
    q = declare(ch, cleanup, "nodlx", {"x-dead-letter-exchange": missing})
    ch.basic_publish("", q, b"lost")
    method, _p, _b = ch.basic_get(q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    # No error on the channel: a synchronous round trip succeeds, and the queue is empty.
    assert message_count(ch, q) == 0
    assert ch.is_open and conn.is_open
    # The same for expiry.
    q2 = declare(ch, cleanup, "nodlx2", {"x-dead-letter-exchange": missing})
    ch.basic_publish("", q2, b"lost", pika.BasicProperties(expiration="0"))
    assert message_count(ch, q2) == 0
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_declare(missing, passive=True)
    assert info.value.reply_code == 404


# ---------------------------------------------------------------------------------------------
# Single active consumer, priorities
# ---------------------------------------------------------------------------------------------


def test_queue_features_single_active_consumer(connect, cleanup):
    c1, c2 = connect(), connect()
    ch1, ch2 = c1.channel(), c2.channel()
    ch1.confirm_delivery()
    q = declare(ch1, cleanup, "sac", {"x-single-active-consumer": True})
    ch1.basic_qos(prefetch_count=1)
    got1, got2 = [], []
    assert ch1.basic_consume(q, lambda _c, m, _p, b: got1.append((m, b)),
                             consumer_tag="first") == "first"
    assert ch2.basic_consume(q, lambda _c, m, _p, b: got2.append((m, b)),
                             consumer_tag="second") == "second"
    ok = ch1.queue_declare(q, passive=True).method
    assert ok.consumer_count == 2
    # Only what the first consumer takes: pika's channel close cancels its consumers first,
    # and RabbitMQ 3.10.8 does not hand a backlog over on basic.cancel (it waits for the next
    # requeue or publish), while Lepus does at once; without a backlog both agree.
    for i in range(2):
        ch1.basic_publish("", q, f"s{i}".encode())
    deadline = time.monotonic() + HANG_GUARD

    def wait(conn, inbox, n):
        while len(inbox) < n:
            assert time.monotonic() < deadline, f"timed out waiting for {n} deliveries"
            conn.process_data_events(time_limit=0.02)

    wait(c1, got1, 1)
    ch1.basic_ack(got1[0][0].delivery_tag)  # prefetch 1: then s1, to the same consumer
    wait(c1, got1, 2)
    ch2.queue_declare(q, passive=True)  # a round trip on the second consumer's connection
    c2.process_data_events(time_limit=0)
    assert [b for _m, b in got1] == [b"s0", b"s1"]
    assert got2 == []
    # The active consumer's channel closes with s1 unacked: the second consumer becomes
    # active and gets the rest in order, starting with the requeued s1.
    ch1.close()
    wait(c2, got2, 1)
    for i in range(2, 4):
        ch2.basic_publish("", q, f"s{i}".encode())
    wait(c2, got2, 3)
    assert [(b, m.redelivered) for m, b in got2] == [
        (b"s1", True), (b"s2", False), (b"s3", False)]
    for m, _b in got2:
        ch2.basic_ack(m.delivery_tag)


def test_queue_features_max_priority_order(ch, cleanup):
    ch.confirm_delivery()
    q = declare(ch, cleanup, "prio", {"x-max-priority": 5})
    sent = [("a-none", None), ("b3", 3), ("c9", 9), ("d5", 5), ("e3", 3), ("f0", 0), ("g1", 1),
            ("h255", 255), ("i6", 6)]
    for body, priority in sent:
        ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=priority))
    got = []
    while True:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            break
        got.append((body.decode(), props.priority))
    # Above the maximum counts as the maximum (the property is delivered unchanged); FIFO
    # within a priority; no priority counts as 0.
    assert got == [("c9", 9), ("d5", 5), ("h255", 255), ("i6", 6), ("b3", 3), ("e3", 3),
                   ("g1", 1), ("a-none", None), ("f0", 0)]


def test_queue_features_max_priority_drop_head_drops_highest(ch, cleanup):
    ch.confirm_delivery()
    q = declare(ch, cleanup, "priolen", {"x-max-priority": 5, "x-max-length": 2})
    for body, priority in [("lo", 0), ("hi", 5), ("mid", 2)]:
        ch.basic_publish("", q, body.encode(), pika.BasicProperties(priority=priority))
    # The head of a priority queue is its highest-priority message.
    assert drain(ch, q) == [b"mid", b"lo"]


# ---------------------------------------------------------------------------------------------
# Quorum queues: x-delivery-count and x-delivery-limit; an internal dead-letter exchange
# ---------------------------------------------------------------------------------------------


def test_queue_features_quorum_delivery_limit_dead_letters(conn, ch, cleanup):
    ch.confirm_delivery()
    dlx, dlq = dlx_setup(ch, cleanup)
    q = uniq("qq")
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": dlx})
    cleanup[0].append(q)
    ch.basic_publish("", q, b"poison")
    method, props, body = get_typed(ch, q, auto_ack=False)
    assert body == b"poison" and not method.redelivered
    # RabbitMQ 3.10's quorum queues add the count to every delivery, 0 on the first.
    assert props.headers == {"x-delivery-count": ("l", 0)}
    ch.basic_nack(method.delivery_tag, requeue=True)
    method, props, body = get_typed(ch, q, auto_ack=False)
    assert method.redelivered
    assert props.headers["x-delivery-count"] == ("l", 1)
    ch.basic_nack(method.delivery_tag, requeue=True)
    # Returned twice with a limit of 1: dead-lettered, not delivered a third time.
    method, props, body = consume_one(conn, ch, dlq)
    assert body == b"poison"
    (entry,) = props.headers["x-death"][1]
    death(entry, "delivery_limit", q, "", [q])
    assert message_count(ch, q) == 0


def test_queue_features_internal_exchange_as_dead_letter_exchange(conn, ch, cleanup):
    queues, exchanges = cleanup
    dlx, dlq = uniq("idlx"), uniq("idlq")
    ch.exchange_declare(dlx, "fanout", internal=True)
    exchanges.append(dlx)
    ch.queue_declare(dlq)
    queues.append(dlq)
    ch.queue_bind(dlq, dlx, "")
    q = declare(ch, cleanup, "toidlx", {"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"m")
    method, _props, _body = ch.basic_get(q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    _method, _props, body = consume_one(conn, ch, dlq)
    assert body == b"m"
