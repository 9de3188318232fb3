"""AMQP 0-9-1 / RabbitMQ feature conformance with pika: confirms, returns, acks/nacks, QoS,
transactions, exchange types and arguments, message properties and protocol errors.

RabbitMQ 3.10 is the specification: the exact reply codes and texts asserted below were observed
on it. Synchronisation uses the blocking API only; timeouts are hang guards, never sleeps.

On RabbitMQ a passive queue.declare (message_count) may be answered before publishes still in
flight are enqueued, so tests that count messages publish on a channel in confirm mode.
"""
import datetime
import decimal
import time
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, UnroutableError

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves
RESOURCE_LOCKED_TAIL = (
    "It could be originally declared on another connection or the exclusive property value "
    "does not match that of the original declaration."
)


def uniq(prefix):
    return f"conf.feat.{prefix}.{uuid.uuid4().hex[:12]}"


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


def pump(conns, done, what="expected event"):
    deadline = time.monotonic() + HANG_GUARD
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for c in conns:
            c.process_data_events(time_limit=0.05)
            if done():
                return


def drain(ch, queue):
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def message_count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def expect_channel_closed(conn, ch, fn, code, text):
    """fn() must make the broker close the CHANNEL (not the connection) with code/text."""
    with pytest.raises(ChannelClosedByBroker) as info:
        fn()
    assert info.value.reply_code == code
    assert info.value.reply_text == text
    assert ch.is_closed
    assert conn.is_open, "the broker closed the connection, expected a channel-level error"
    # The connection stays usable.
    conn.channel().close()
    return info.value


def sync(ch):
    """A synchronous round trip on `ch`: anything the broker sent before it is processed."""
    ch.queue_declare("", exclusive=True, auto_delete=True)


# ---------------------------------------------------------------------------------------------
# Publisher confirms, mandatory and basic.return
# ---------------------------------------------------------------------------------------------


def test_publisher_confirms_ack_routable_and_unroutable_non_mandatory(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(20):
        assert ch.basic_publish("", q, f"m{i}".encode()) is None
    # Non-mandatory, unroutable: confirmed (acked) and silently dropped.
    assert ch.basic_publish("amq.direct", uniq("nobody"), b"dropped") is None
    assert message_count(ch, q) == 20
    assert drain(ch, q) == [f"m{i}".encode() for i in range(20)]


def test_publisher_confirms_mandatory_unroutable_raises(ch):
    ch.confirm_delivery()
    key = uniq("nobody")
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish("amq.direct", key, b"lost", mandatory=True)
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == "amq.direct"
    assert returned.method.routing_key == key
    assert returned.body == b"lost"
    assert ch.is_open
    # Mandatory and routable: fine.
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"ok", mandatory=True)
    assert drain(ch, q) == [b"ok"]


def test_mandatory_basic_return_blocking_callback(ch):
    returns = []
    ch.add_on_return_callback(lambda c, method, props, body: returns.append((method, props, body)))
    ex = uniq("ret")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, "routed")

    props = pika.BasicProperties(content_type="application/json", headers={"h": "v"},
                                 correlation_id="abc")
    ch.basic_publish(ex, "unrouted", b'{"x":1}', props, mandatory=True)
    ch.basic_publish(ex, "routed", b"fine", mandatory=True)
    ch.basic_publish(ex, "unrouted-not-mandatory", b"dropped", mandatory=False)
    pump([ch.connection], lambda: returns, "basic.return")
    sync(ch)
    ch.connection.process_data_events(time_limit=0)
    (method, rprops, body), = returns
    assert method.reply_code == 312
    assert method.reply_text == "NO_ROUTE"
    assert method.exchange == ex
    assert method.routing_key == "unrouted"
    assert body == b'{"x":1}'
    assert rprops.content_type == "application/json"
    assert rprops.headers == {"h": "v"}
    assert rprops.correlation_id == "abc"
    assert drain(ch, q) == [b"fine"]
    ch.queue_delete(q)
    ch.exchange_delete(ex)


def test_mandatory_basic_return_select_connection(amqp_url):
    key = uniq("nobody")
    events = {}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(chan):
        chan.add_on_return_callback(on_return)
        chan.basic_publish("amq.topic", key, b"bounce", pika.BasicProperties(message_id="m-1"),
                           mandatory=True)

    def on_return(chan, method, props, body):
        events["return"] = (method, props, body)
        chan.connection.close()

    def on_closed(conn, reason):
        conn.ioloop.stop()

    conn = pika.SelectConnection(pika.URLParameters(amqp_url), on_open_callback=on_open,
                                 on_close_callback=on_closed)
    conn.ioloop.call_later(HANG_GUARD, conn.ioloop.stop)  # hang guard only
    conn.ioloop.start()
    method, props, body = events["return"]
    assert method.reply_code == 312
    assert method.reply_text == "NO_ROUTE"
    assert method.exchange == "amq.topic"
    assert method.routing_key == key
    assert props.message_id == "m-1"
    assert body == b"bounce"


# ---------------------------------------------------------------------------------------------
# Acknowledgements: nack / reject / recover
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["nack", "reject", "nack-multiple", "reverse-order"])
def test_requeue_keeps_original_order_and_sets_redelivered(ch, how):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    tags = []
    for i in range(3):
        method, _p, body = ch.basic_get(q, auto_ack=False)
        assert body == f"m{i}".encode()
        assert method.redelivered is False
        tags.append(method.delivery_tag)
    assert tags == [1, 2, 3]
    if how == "nack":
        for t in tags:
            ch.basic_nack(t, multiple=False, requeue=True)
    elif how == "reject":
        for t in tags:
            ch.basic_reject(t, requeue=True)
    elif how == "nack-multiple":
        ch.basic_nack(tags[-1], multiple=True, requeue=True)
    else:
        for t in reversed(tags):
            ch.basic_reject(t, requeue=True)

    got = []
    while True:
        method, _p, body = ch.basic_get(q, auto_ack=False)
        if method is None:
            break
        got.append((body, method.redelivered))
        ch.basic_ack(method.delivery_tag)
    # Requeued messages go back to their original position in the queue.
    assert got == [(b"m0", True), (b"m1", True), (b"m2", True), (b"m3", False)]


@pytest.mark.parametrize("how", ["nack", "reject"])
def test_requeue_false_discards(ch, how):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"doomed")
    ch.basic_publish("", q, b"survivor")
    method, _p, body = ch.basic_get(q, auto_ack=False)
    assert body == b"doomed"
    if how == "nack":
        ch.basic_nack(method.delivery_tag, requeue=False)
    else:
        ch.basic_reject(method.delivery_tag, requeue=False)
    assert message_count(ch, q) == 1
    method, _p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"survivor"
    assert method.redelivered is False
    assert ch.basic_get(q) == (None, None, None)


def test_basic_get_on_empty_queue(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    assert ch.basic_get(q, auto_ack=False) == (None, None, None)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_basic_get_message_count_and_delivery_tags(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    counts = []
    for i in range(3):
        method, _p, _b = ch.basic_get(q, auto_ack=True)
        counts.append((method.delivery_tag, method.message_count))
    # message_count is the number of messages remaining after this one.
    assert counts == [(1, 2), (2, 1), (3, 0)]


def test_basic_recover_requeue_redelivers_unacked(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m, b)), auto_ack=False)
    for i in range(3):
        ch.basic_publish("", q, f"r{i}".encode())
    pump([ch.connection], lambda: len(got) == 3, "3 deliveries")
    assert [m.redelivered for m, _ in got] == [False] * 3
    ch.basic_ack(got[0][0].delivery_tag)

    ch.basic_recover(requeue=True)
    pump([ch.connection], lambda: len(got) == 5, "2 redeliveries")
    again = got[3:]
    assert sorted(b for _, b in again) == [b"r1", b"r2"]
    assert all(m.redelivered for m, _ in again)
    # Redeliveries get fresh delivery tags.
    assert [m.delivery_tag for m, _ in again] == [4, 5]
    for m, _ in again:
        ch.basic_ack(m.delivery_tag)
    assert message_count(ch, q) == 0


def test_ack_unknown_delivery_tag_closes_channel(conn, ch):
    def go():
        ch.basic_ack(42)
        sync(ch)

    expect_channel_closed(conn, ch, go, 406, "PRECONDITION_FAILED - unknown delivery tag 42")


def test_double_ack_closes_channel(conn, ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x")
    method, _p, _b = ch.basic_get(q)

    def go():
        ch.basic_ack(method.delivery_tag)
        ch.basic_ack(method.delivery_tag)
        sync(ch)

    expect_channel_closed(conn, ch, go, 406, "PRECONDITION_FAILED - unknown delivery tag 1")


# ---------------------------------------------------------------------------------------------
# QoS
# ---------------------------------------------------------------------------------------------


class Counter:
    def __init__(self):
        self.deliveries = []

    def __call__(self, _ch, method, _props, body):
        self.deliveries.append((method, body))


def test_qos_per_consumer_prefetch(ch):
    ch.confirm_delivery()
    qa = ch.queue_declare("", exclusive=True).method.queue
    qb = ch.queue_declare("", exclusive=True).method.queue
    for q in (qa, qb):
        for i in range(5):
            ch.basic_publish("", q, f"{i}".encode())
    ch.basic_qos(prefetch_count=2, global_qos=False)  # applies to each new consumer
    ca, cb = Counter(), Counter()
    ch.basic_consume(qa, ca)
    ch.basic_consume(qb, cb)
    pump([ch.connection], lambda: len(ca.deliveries) == 2 and len(cb.deliveries) == 2,
         "2 deliveries per consumer")
    # The queues have handed out exactly 2 each and hold the rest back.
    assert message_count(ch, qa) == 3
    assert message_count(ch, qb) == 3
    ch.connection.process_data_events(time_limit=0)
    assert (len(ca.deliveries), len(cb.deliveries)) == (2, 2)

    # Acking one frees one slot for that consumer only.
    ch.basic_ack(ca.deliveries[0][0].delivery_tag)
    pump([ch.connection], lambda: len(ca.deliveries) == 3, "one more delivery for A")
    assert message_count(ch, qa) == 2
    assert message_count(ch, qb) == 3
    assert len(cb.deliveries) == 2


def test_qos_global_prefetch_shared_by_consumers(ch):
    ch.confirm_delivery()
    qa = ch.queue_declare("", exclusive=True).method.queue
    qb = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_qos(prefetch_count=3, global_qos=True)  # shared across the channel
    ca, cb = Counter(), Counter()
    ch.basic_consume(qa, ca)
    ch.basic_consume(qb, cb)
    for q in (qa, qb):
        for i in range(5):
            ch.basic_publish("", q, f"{i}".encode())
    pump([ch.connection], lambda: len(ca.deliveries) + len(cb.deliveries) == 3,
         "3 deliveries in total")
    assert message_count(ch, qa) + message_count(ch, qb) == 10 - 3
    ch.connection.process_data_events(time_limit=0)
    assert len(ca.deliveries) + len(cb.deliveries) == 3

    # Ack everything received with multiple=True; exactly 3 more arrive.
    last = max(m.delivery_tag for m, _ in ca.deliveries + cb.deliveries)
    ch.basic_ack(last, multiple=True)
    pump([ch.connection], lambda: len(ca.deliveries) + len(cb.deliveries) == 6,
         "3 more deliveries")
    assert message_count(ch, qa) + message_count(ch, qb) == 10 - 6


def test_qos_global_and_per_consumer_combined(ch):
    ch.confirm_delivery()
    qa = ch.queue_declare("", exclusive=True).method.queue
    qb = ch.queue_declare("", exclusive=True).method.queue
    for q in (qa, qb):
        for i in range(5):
            ch.basic_publish("", q, f"{i}".encode())
    # RabbitMQ: per-consumer limit 2 and channel-wide limit 3 at the same time.
    ch.basic_qos(prefetch_count=2, global_qos=False)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ca, cb = Counter(), Counter()
    ch.basic_consume(qa, ca)
    pump([ch.connection], lambda: len(ca.deliveries) == 2, "2 deliveries for A")
    assert message_count(ch, qa) == 3
    ch.basic_consume(qb, cb)
    pump([ch.connection], lambda: len(cb.deliveries) == 1, "1 delivery for B")
    assert message_count(ch, qb) == 4
    ch.connection.process_data_events(time_limit=0)
    assert (len(ca.deliveries), len(cb.deliveries)) == (2, 1)


def test_auto_ack_consumer_ignores_prefetch(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(10):
        ch.basic_publish("", q, f"{i}".encode())
    ch.basic_qos(prefetch_count=1)
    c = Counter()
    ch.basic_consume(q, c, auto_ack=True)
    pump([ch.connection], lambda: len(c.deliveries) == 10, "all 10 deliveries")
    assert [b for _, b in c.deliveries] == [f"{i}".encode() for i in range(10)]


# ---------------------------------------------------------------------------------------------
# Consumers
# ---------------------------------------------------------------------------------------------


def test_server_cancels_consumer_when_queue_deleted(connect):
    conn = connect()
    ch = conn.channel()
    q = uniq("cancelme")
    ch.queue_declare(q, auto_delete=False)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    tag = ch.basic_consume(q, lambda *a: None)
    assert ch.consumer_tags == [tag]

    other = connect().channel()
    ok = other.queue_delete(q)
    assert ok.method.message_count == 0
    pump([conn], lambda: cancelled, "basic.cancel from the broker")
    (method,) = cancelled
    assert method.NAME == "Basic.Cancel"
    assert method.consumer_tag == tag
    assert ch.is_open
    assert ch.consumer_tags == []


def test_consumer_tags_and_cancel(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    tag = ch.basic_consume(q, lambda *a: None, consumer_tag="my-tag")
    assert tag == "my-tag"
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel("my-tag")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 0
    ch.basic_publish("", q, b"still here")
    assert drain(ch, q) == [b"still here"]


def test_duplicate_consumer_tag_closes_connection(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    # pika refuses a duplicate tag client-side ...
    with pytest.raises(pika.exceptions.DuplicateConsumerTag):
        ch.basic_consume(q, lambda *a: None, consumer_tag="dup")
    # ... so send the raw basic.consume; RabbitMQ closes the whole CONNECTION (530).
    ch._impl._send_method(pika.spec.Basic.Consume(queue=q, consumer_tag="dup"))
    with pytest.raises(ConnectionClosedByBroker) as info:
        sync(ch)
    assert info.value.reply_code == 530
    assert info.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    assert conn.is_closed


def test_exclusive_consumer(connect):
    c1 = connect()
    ch1 = c1.channel()
    q = uniq("exclcons")
    ch1.queue_declare(q, auto_delete=True)
    ch1.basic_consume(q, lambda *a: None, exclusive=True)
    c2 = connect()
    ch2 = c2.channel()
    expect_channel_closed(
        c2, ch2, lambda: ch2.basic_consume(q, lambda *a: None), 403,
        f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")


# ---------------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------------


def test_tx_commit_and_rollback(connect):
    conn = connect()
    tx = conn.channel()
    observer = connect().channel()
    q = observer.queue_declare("", exclusive=False, auto_delete=False).method.queue
    try:
        assert tx.tx_select().method.NAME == "Tx.SelectOk"
        tx.basic_publish("", q, b"t1")
        tx.basic_publish("", q, b"t2")
        # Uncommitted publishes are invisible to everybody.
        sync(tx)
        assert observer.basic_get(q) == (None, None, None)
        assert tx.tx_commit().method.NAME == "Tx.CommitOk"
        assert message_count(observer, q) == 2

        tx.basic_publish("", q, b"gone")
        assert tx.tx_rollback().method.NAME == "Tx.RollbackOk"
        assert tx.tx_commit().method.NAME == "Tx.CommitOk"  # empty transaction
        assert drain(observer, q) == [b"t1", b"t2"]

        # Acks are transactional too: a rolled-back ack leaves the message unacked, so it is
        # requeued when the channel goes away.
        tx.basic_publish("", q, b"t3")
        tx.tx_commit()
        method, _p, body = tx.basic_get(q, auto_ack=False)
        assert body == b"t3"
        tx.basic_ack(method.delivery_tag)
        tx.tx_rollback()
        tx.close()
        for method, _props, body in observer.consume(q, auto_ack=True,
                                                     inactivity_timeout=HANG_GUARD):
            assert method is not None, "rolled-back ack: message should have been requeued"
            assert body == b"t3"
            assert method.redelivered is True
            break
        observer.cancel()

        # A committed ack sticks: nothing comes back when the channel closes.
        tx2 = conn.channel()
        tx2.tx_select()
        tx2.basic_publish("", q, b"t4")
        tx2.tx_commit()
        method, _p, body = tx2.basic_get(q, auto_ack=False)
        assert body == b"t4"
        tx2.basic_ack(method.delivery_tag)
        tx2.tx_commit()
        conn.close()
        assert observer.basic_get(q) == (None, None, None)
    finally:
        observer.queue_delete(q)


def test_tx_commit_without_select_closes_channel(conn, ch):
    expect_channel_closed(conn, ch, ch.tx_commit, 406,
                          "PRECONDITION_FAILED - channel is not transactional")


def test_tx_rollback_without_select_closes_channel(conn, ch):
    expect_channel_closed(conn, ch, ch.tx_rollback, 406,
                          "PRECONDITION_FAILED - channel is not transactional")


# ---------------------------------------------------------------------------------------------
# Exchanges: e2e bindings, alternate exchange, headers, CC/BCC
# ---------------------------------------------------------------------------------------------


def test_exchange_to_exchange_binding(ch, cleanup):
    _queues, exchanges = cleanup
    ch.confirm_delivery()
    src, dst = uniq("src"), uniq("dst")
    exchanges += [src, dst]
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(dst, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, dst, "a.b")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"via src")  # src matches a.*, dst matches a.b
    ch.basic_publish(src, "a.c", b"dst drops")  # src matches, dst has no a.c binding
    ch.basic_publish(src, "b.b", b"src drops")
    ch.basic_publish(dst, "a.b", b"direct to dst")
    assert drain(ch, q) == [b"via src", b"direct to dst"]

    ch.exchange_unbind(destination=dst, source=src, routing_key="a.*")
    ch.basic_publish(src, "a.b", b"after unbind")
    assert drain(ch, q) == []


def test_exchange_bind_delivers_once_through_two_paths(ch, cleanup):
    _queues, exchanges = cleanup
    ch.confirm_delivery()
    src, mid = uniq("src"), uniq("mid")
    exchanges += [src, mid]
    ch.exchange_declare(src, "fanout")
    ch.exchange_declare(mid, "fanout")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_bind(mid, src)
    ch.queue_bind(q, mid)
    ch.queue_bind(q, src)
    ch.basic_publish(src, "", b"once")
    assert drain(ch, q) == [b"once"]


def test_alternate_exchange(ch, cleanup):
    _queues, exchanges = cleanup
    ch.confirm_delivery()
    main, ae = uniq("main"), uniq("ae")
    exchanges += [main, ae]
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    q_main = ch.queue_declare("", exclusive=True).method.queue
    q_ae = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_main, main, "known")
    ch.queue_bind(q_ae, ae)
    ch.basic_publish(main, "known", b"routed")
    ch.basic_publish(main, "unknown", b"caught")
    # Caught by the AE => routed, so mandatory does not bounce it.
    ch.basic_publish(main, "unknown2", b"caught mandatory", mandatory=True)
    assert drain(ch, q_main) == [b"routed"]
    assert drain(ch, q_ae) == [b"caught", b"caught mandatory"]
    ch.basic_publish(main, "unknown3", b"with key")
    method, _p, body = ch.basic_get(q_ae, auto_ack=True)
    assert method.exchange == main
    assert method.routing_key == "unknown3"


def test_headers_exchange_x_match_all_and_any(ch, cleanup):
    _queues, exchanges = cleanup
    ch.confirm_delivery()
    ex = uniq("headers")
    exchanges.append(ex)
    ch.exchange_declare(ex, "headers")
    q_all = ch.queue_declare("", exclusive=True).method.queue
    q_any = ch.queue_declare("", exclusive=True).method.queue
    q_exists = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q_all, ex, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(q_any, ex, arguments={"x-match": "any", "format": "pdf", "type": "log"})
    # No x-match argument means x-match=all; values must match in type as well as value.
    ch.queue_bind(q_exists, ex, arguments={"size": 10})

    cases = [
        ("both", {"format": "pdf", "type": "report"}, {"all", "any"}),
        ("extra", {"format": "pdf", "type": "report", "x": 1}, {"all", "any"}),
        ("pdf-only", {"format": "pdf"}, {"any"}),
        ("log", {"type": "log"}, {"any"}),
        ("wrong", {"format": "zip", "type": "mail"}, set()),
        ("none", None, set()),
        ("empty", {}, set()),
        ("size-int", {"size": 10}, {"exists"}),
        ("size-other", {"size": 11}, set()),
        ("size-str", {"size": "10"}, set()),
    ]
    for name, headers, _dest in cases:
        ch.basic_publish(ex, "ignored", name.encode(), pika.BasicProperties(headers=headers))
    got = {"all": drain(ch, q_all), "any": drain(ch, q_any), "exists": drain(ch, q_exists)}
    for label in got:
        assert got[label] == [n.encode() for n, _h, dest in cases if label in dest], label


# ---------------------------------------------------------------------------------------------
# Messages: properties, sizes, CC/BCC
# ---------------------------------------------------------------------------------------------


def test_message_properties_round_trip(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    headers = {
        "str": "value",
        "unicode": "h\u00e9llo \u2603",
        "int": 42,
        "neg": -7,
        "big": 2**40,
        "bool": True,
        "false": False,
        "void": None,
        "bytes": b"\x00\x01\xff",
        "decimal": decimal.Decimal("3.14"),
        "time": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "nested": {"a": {"b": [1, "two", {"c": None}]}, "empty": {}},
        "array": [1, "x", [2, 3], {"k": "v"}, True, []],
    }
    props = pika.BasicProperties(
        content_type="application/octet-stream",
        content_encoding="gzip",
        headers=headers,
        delivery_mode=2,
        priority=5,
        correlation_id="corr-123",
        reply_to="reply.queue",
        expiration="60000",
        message_id="msg-1",
        timestamp=1700000000,
        type="my.type",
        user_id="guest",
        app_id="conformance",
    )
    ch.basic_publish("", q, b"props", props)
    _m, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"props"
    assert got.content_type == "application/octet-stream"
    assert got.content_encoding == "gzip"
    assert got.headers == headers
    assert got.delivery_mode == 2
    assert got.priority == 5
    assert got.correlation_id == "corr-123"
    assert got.reply_to == "reply.queue"
    assert got.expiration == "60000"
    assert got.message_id == "msg-1"
    assert got.timestamp == 1700000000
    assert got.type == "my.type"
    assert got.user_id == "guest"
    assert got.app_id == "conformance"
    assert got.cluster_id is None


def test_message_without_properties(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"bare")
    _m, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"bare"
    for name in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                 "user_id", "app_id", "cluster_id"):
        assert getattr(got, name) is None, name


def test_user_id_mismatch_closes_channel(conn, ch):
    def go():
        ch.basic_publish("", "whatever", b"", pika.BasicProperties(user_id="bob"))
        sync(ch)

    expect_channel_closed(
        conn, ch, go, 406,
        "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'")


@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 131072, 1024 * 1024 + 3])
def test_body_sizes(ch, size):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = bytes((i * 7 + 3) % 256 for i in range(size))
    ch.basic_publish("", q, body)
    _m, _p, got = ch.basic_get(q, auto_ack=True)
    assert got == body
    # And through a consumer.
    ch.basic_publish("", q, body)
    for method, _props, got in ch.consume(q, auto_ack=True, inactivity_timeout=HANG_GUARD):
        assert method is not None
        assert got == body
        break
    ch.cancel()


def test_cc_and_bcc_headers(ch, cleanup):
    _queues, exchanges = cleanup
    ch.confirm_delivery()
    ex = uniq("cc")
    exchanges.append(ex)
    ch.exchange_declare(ex, "direct")
    queues = {}
    for key in ("main", "cc1", "cc2", "bcc1", "other"):
        queues[key] = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queues[key], ex, key)

    ch.basic_publish(ex, "main", b"hello",
                     pika.BasicProperties(headers={"CC": ["cc1", "cc2", "main"], "BCC": ["bcc1"],
                                                   "keep": "me"}))
    for key in ("main", "cc1", "cc2", "bcc1"):
        method, props, body = ch.basic_get(queues[key], auto_ack=True)
        assert body == b"hello", key
        assert method.exchange == ex
        # The delivery carries the routing key it was published with.
        assert method.routing_key == "main", key
        # CC stays, BCC is stripped from every copy.
        assert props.headers == {"CC": ["cc1", "cc2", "main"], "keep": "me"}, key
        assert ch.basic_get(queues[key]) == (None, None, None), f"{key}: delivered once only"
    assert drain(ch, queues["other"]) == []

    # CC through the default exchange addresses queues by name.
    ch.basic_publish("", queues["other"], b"dflt",
                     pika.BasicProperties(headers={"CC": [queues["cc1"]]}))
    assert drain(ch, queues["other"]) == [b"dflt"]
    assert drain(ch, queues["cc1"]) == [b"dflt"]


def test_cc_header_not_an_array_closes_channel(conn, ch):
    def go():
        ch.basic_publish("amq.direct", "x", b"", pika.BasicProperties(headers={"CC": "nope"}))
        sync(ch)

    expect_channel_closed(
        conn, ch, go, 406,
        'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}')


# ---------------------------------------------------------------------------------------------
# Queue operations
# ---------------------------------------------------------------------------------------------


def test_queue_purge_returns_count(ch):
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(7):
        ch.basic_publish("", q, b"x")
    method, _p, _b = ch.basic_get(q, auto_ack=False)  # unacked messages are not purged
    ok = ch.queue_purge(q)
    assert ok.method.NAME == "Queue.PurgeOk"
    assert ok.method.message_count == 6
    assert ch.queue_purge(q).method.message_count == 0
    ch.basic_reject(method.delivery_tag, requeue=True)
    # (basic.get, not a passive declare: RabbitMQ answers queue.declare ahead of the reject.)
    method, _p, _b = ch.basic_get(q, auto_ack=True)
    assert method.redelivered is True
    assert method.message_count == 0


def test_queue_delete_returns_count(ch):
    ch.confirm_delivery()
    q = uniq("del")
    ch.queue_declare(q)
    for i in range(3):
        ch.basic_publish("", q, b"x")
    ok = ch.queue_delete(q)
    assert ok.method.NAME == "Queue.DeleteOk"
    assert ok.method.message_count == 3
    # Deleting a queue that does not exist is not an error on RabbitMQ.
    assert ch.queue_delete(q).method.message_count == 0


def test_server_named_queue_declare_ok(ch):
    ok = ch.queue_declare("", exclusive=True)
    assert ok.method.queue.startswith("amq.gen-")
    assert len(ok.method.queue) == len("amq.gen-") + 22
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0
    # Passive redeclare by name works on the owning connection.
    assert ch.queue_declare(ok.method.queue, passive=True).method.queue == ok.method.queue


def test_auto_delete_queue_goes_away_after_last_consumer(connect):
    conn = connect()
    ch = conn.channel()
    q = uniq("autodel")
    ch.queue_declare(q, auto_delete=True)
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    other_conn = connect()
    other = other_conn.channel()
    expect_channel_closed(other_conn, other, lambda: other.queue_declare(q, passive=True), 404,
                          f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_exclusive_queue_deleted_when_owner_closes(connect):
    a = connect()
    q = uniq("excl")
    a.channel().queue_declare(q, exclusive=True)
    a.close()
    b = connect()
    bch = b.channel()
    expect_channel_closed(b, bch, lambda: bch.queue_declare(q, passive=True), 404,
                          f"NOT_FOUND - no queue '{q}' in vhost '/'")


# ---------------------------------------------------------------------------------------------
# Errors: which of channel/connection is closed, with which code and text
# ---------------------------------------------------------------------------------------------


def test_passive_declare_missing_queue(conn, ch):
    q = uniq("missing")
    err = expect_channel_closed(conn, ch, lambda: ch.queue_declare(q, passive=True), 404,
                                f"NOT_FOUND - no queue '{q}' in vhost '/'")
    assert "no queue" in err.reply_text


def test_passive_declare_missing_exchange(conn, ch):
    ex = uniq("missing")
    expect_channel_closed(conn, ch, lambda: ch.exchange_declare(ex, passive=True), 404,
                          f"NOT_FOUND - no exchange '{ex}' in vhost '/'")


@pytest.mark.parametrize("op", ["declare", "declare-exclusive", "passive", "consume", "get",
                                "purge", "delete", "bind"])
def test_exclusive_queue_locked_for_other_connection(connect, op):
    a = connect()
    ach = a.channel()
    q = uniq("locked")
    ach.queue_declare(q, exclusive=True)
    b = connect()
    bch = b.channel()
    ops = {
        "declare": lambda: bch.queue_declare(q),
        "declare-exclusive": lambda: bch.queue_declare(q, exclusive=True),
        "passive": lambda: bch.queue_declare(q, passive=True),
        "consume": lambda: bch.basic_consume(q, lambda *x: None),
        "get": lambda: bch.basic_get(q),
        "purge": lambda: bch.queue_purge(q),
        "delete": lambda: bch.queue_delete(q),
        "bind": lambda: bch.queue_bind(q, "amq.direct", "k"),
    }
    expect_channel_closed(
        b, bch, ops[op], 405,
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
        + RESOURCE_LOCKED_TAIL)
    # The owner is unaffected.
    assert ach.queue_declare(q, passive=True).method.queue == q


def test_redeclare_queue_with_different_durable(conn, ch, cleanup):
    queues, _ = cleanup
    q = uniq("durable")
    queues.append(q)
    ch.queue_declare(q, durable=False)
    expect_channel_closed(
        conn, ch, lambda: ch.queue_declare(q, durable=True), 406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': "
        "received 'true' but current is 'false'")


def test_redeclare_queue_with_different_arguments(conn, ch, cleanup):
    queues, _ = cleanup
    q = uniq("args")
    queues.append(q)
    ch.queue_declare(q)
    expect_channel_closed(
        conn, ch, lambda: ch.queue_declare(q, arguments={"x-max-length": 5}), 406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': "
        "received the value '5' of type 'signedint' but current is none")


def test_redeclare_exchange_with_different_type(conn, ch):
    expect_channel_closed(
        conn, ch, lambda: ch.exchange_declare("amq.direct", "fanout"), 406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
        "received 'fanout' but current is 'direct'")


def test_declare_exchange_with_reserved_prefix(conn, ch):
    expect_channel_closed(conn, ch, lambda: ch.exchange_declare("amq.foo"), 403,
                          "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'")


def test_declare_queue_with_reserved_prefix(conn, ch):
    expect_channel_closed(conn, ch, lambda: ch.queue_declare("amq.gen-foo"), 403,
                          "ACCESS_REFUSED - queue name 'amq.gen-foo' contains reserved prefix 'amq.*'")


def test_delete_system_exchange(conn, ch):
    expect_channel_closed(
        conn, ch, lambda: ch.exchange_delete("amq.direct"), 403,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")


def test_declare_exchange_with_unknown_type_closes_connection(conn, ch):
    with pytest.raises(ConnectionClosedByBroker) as info:
        ch.exchange_declare(uniq("badtype"), exchange_type="no-such-type")
    assert info.value.reply_code == 503
    # RabbitMQ says "unknown exchange type" for a name that is not an Erlang atom in the VM, and
    # "invalid exchange type" for one that is (e.g. 'foo'); an implementation artefact.
    assert info.value.reply_text == "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    assert conn.is_closed


def test_publish_to_missing_exchange(conn, ch):
    ex = uniq("missing")

    def go():
        ch.basic_publish(ex, "k", b"lost")
        sync(ch)

    expect_channel_closed(conn, ch, go, 404, f"NOT_FOUND - no exchange '{ex}' in vhost '/'")


def test_publish_to_missing_exchange_in_confirm_mode(conn, ch):
    ch.confirm_delivery()
    ex = uniq("missing")
    expect_channel_closed(conn, ch, lambda: ch.basic_publish(ex, "k", b"lost"), 404,
                          f"NOT_FOUND - no exchange '{ex}' in vhost '/'")


def test_consume_and_get_missing_queue(connect):
    for op in ("consume", "get", "bind"):
        conn = connect()
        ch = conn.channel()
        q = uniq("missing")
        fn = {
            "consume": lambda: ch.basic_consume(q, lambda *a: None),
            "get": lambda: ch.basic_get(q),
            "bind": lambda: ch.queue_bind(q, "amq.direct", "k"),
        }[op]
        expect_channel_closed(conn, ch, fn, 404, f"NOT_FOUND - no queue '{q}' in vhost '/'")


def test_bind_to_missing_exchange(conn, ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ex = uniq("missing")
    expect_channel_closed(conn, ch, lambda: ch.queue_bind(q, ex, "k"), 404,
                          f"NOT_FOUND - no exchange '{ex}' in vhost '/'")


def test_queue_delete_if_empty_on_non_empty_queue(conn, ch, cleanup):
    queues, _ = cleanup
    ch.confirm_delivery()
    q = uniq("ifempty")
    queues.append(q)
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    expect_channel_closed(conn, ch, lambda: ch.queue_delete(q, if_empty=True), 406,
                          f"PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")


def test_queue_delete_if_unused_with_consumer(connect, cleanup):
    queues, _ = cleanup
    conn = connect()
    ch = conn.channel()
    q = uniq("ifunused")
    queues.append(q)
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None)
    c2 = connect()
    ch2 = c2.channel()
    expect_channel_closed(c2, ch2, lambda: ch2.queue_delete(q, if_unused=True), 406,
                          f"PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")


def test_exchange_delete_if_unused_on_bound_exchange(conn, ch, cleanup):
    _, exchanges = cleanup
    ex = uniq("ifunused")
    exchanges.append(ex)
    ch.exchange_declare(ex, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, ex, "k")
    expect_channel_closed(conn, ch, lambda: ch.exchange_delete(ex, if_unused=True), 406,
                          f"PRECONDITION_FAILED - exchange '{ex}' in vhost '/' in use")


def test_exchange_delete_if_unused_on_unbound_exchange(ch):
    ex = uniq("unused")
    ch.exchange_declare(ex, "direct")
    assert ch.exchange_delete(ex, if_unused=True).method.NAME == "Exchange.DeleteOk"
    # Deleting a missing exchange is not an error on RabbitMQ.
    assert ch.exchange_delete(ex).method.NAME == "Exchange.DeleteOk"
