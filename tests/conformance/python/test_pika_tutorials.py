"""RabbitMQ's six tutorials (https://www.rabbitmq.com/getstarted.html) as pika conformance tests.

Every test uses uniquely named queues/exchanges and cleans up after itself. Synchronisation is
done with pika's blocking API (basic_get, consume() generators and process_data_events loops
that exit as soon as the expected event has arrived); timeouts are hang guards only.

Note: on RabbitMQ a passive queue.declare (message_count) is answered with priority over
deliveries still sitting in the queue process's mailbox, so right after a plain (unconfirmed)
publish it can report 0. Tests that count messages therefore publish on a channel in confirm
mode: once basic_publish returns, the message is enqueued.
"""
import time
import uuid

import pika
import pytest

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves


def uniq(prefix):
    return f"conf.tut.{prefix}.{uuid.uuid4().hex[:12]}"


def pump(conns, done, what="expected event"):
    """Run the I/O loops of `conns` until `done()` is true (hang guard: HANG_GUARD seconds)."""
    deadline = time.monotonic() + HANG_GUARD
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for c in conns:
            c.process_data_events(time_limit=0.05)
            if done():
                return


def get_one(ch, queue):
    """basic_get with auto-ack, asserting a message is there."""
    method, props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None, f"queue {queue} is unexpectedly empty"
    return method, props, body


def drain(ch, queue):
    """All bodies currently ready in `queue` (basic_get until empty)."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


# ---------------------------------------------------------------------------------------------
# Tutorial 1: "Hello World!"
# ---------------------------------------------------------------------------------------------


def test_hello_world_basic_get(ch):
    q = uniq("hello")
    ok = ch.queue_declare(q, exclusive=True)
    assert ok.method.queue == q
    assert ok.method.message_count == 0
    assert ok.method.consumer_count == 0

    props = pika.BasicProperties(content_type="text/plain", headers={"lang": "en"})
    ch.basic_publish(exchange="", routing_key=q, body=b"Hello World!", properties=props)

    method, got_props, body = get_one(ch, q)
    assert body == b"Hello World!"
    assert method.exchange == ""
    assert method.routing_key == q
    assert method.redelivered is False
    assert method.message_count == 0
    assert method.delivery_tag == 1
    assert got_props.content_type == "text/plain"
    assert got_props.headers == {"lang": "en"}
    assert got_props.delivery_mode is None
    ch.queue_delete(q)


def test_hello_world_basic_consume(ch):
    q = uniq("hello")
    ch.queue_declare(q, exclusive=True)
    props = pika.BasicProperties(content_type="text/plain", correlation_id="c-1")
    ch.basic_publish(exchange="", routing_key=q, body=b"Hello World!", properties=props)

    received = []
    for method, got_props, body in ch.consume(q, auto_ack=True, inactivity_timeout=HANG_GUARD):
        assert method is not None, "no delivery"
        received.append((method, got_props, body))
        break
    ch.cancel()
    (method, got_props, body), = received
    assert body == b"Hello World!"
    assert method.exchange == ""
    assert method.routing_key == q
    assert method.redelivered is False
    assert method.consumer_tag.startswith("ctag")
    assert got_props.content_type == "text/plain"
    assert got_props.correlation_id == "c-1"
    ch.queue_delete(q)


def test_hello_world_basic_consume_callback(ch):
    q = uniq("hello")
    ch.queue_declare(q, exclusive=True)
    got = []

    def on_message(channel, method, props, body):
        got.append(body)
        channel.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(q, on_message, auto_ack=False)
    for i in range(3):
        ch.basic_publish("", q, f"msg-{i}".encode())
    pump([ch.connection], lambda: len(got) == 3, "3 deliveries")
    assert got == [b"msg-0", b"msg-1", b"msg-2"]
    ch.basic_cancel(tag)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


# ---------------------------------------------------------------------------------------------
# Tutorial 2: Work queues
# ---------------------------------------------------------------------------------------------


class Worker:
    """A consumer on its own connection, prefetch_count=1, manual acks; records deliveries."""

    def __init__(self, connect, queue, name):
        self.name = name
        self.conn = connect()
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=1)
        self.pending = []  # (method, props, body) not yet acked
        self.seen = []  # bodies in order of arrival
        self.tag = self.ch.basic_consume(queue, self._on_message, auto_ack=False)

    def _on_message(self, _ch, method, props, body):
        self.pending.append((method, props, body))
        self.seen.append(body)

    def ack_oldest(self):
        method, _props, _body = self.pending.pop(0)
        self.ch.basic_ack(method.delivery_tag)


def test_work_queues_round_robin_with_prefetch_one(connect, ch):
    ch.confirm_delivery()
    q = uniq("tasks")
    ch.queue_declare(q, auto_delete=True)
    a = Worker(connect, q, "A")
    b = Worker(connect, q, "B")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2

    n = 8
    for i in range(n):
        ch.basic_publish("", q, f"task-{i}".encode(),
                         pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))

    conns = [a.conn, b.conn]
    # Both workers get exactly one message each (prefetch 1), the rest wait in the queue.
    pump(conns, lambda: len(a.pending) == 1 and len(b.pending) == 1, "one task per worker")
    assert {a.seen[0], b.seen[0]} == {b"task-0", b"task-1"}
    assert a.seen[0] == b"task-0", "first registered consumer gets the first message"
    assert ch.queue_declare(q, passive=True).method.message_count == n - 2

    # Equal-cost work: the workers finish (ack) alternately, A then B; the queue hands the
    # next task to whichever worker freed up, so deliveries strictly alternate.
    while len(a.seen) + len(b.seen) < n or a.pending or b.pending:
        for w in (a, b):
            if w.pending:
                before = len(w.seen)
                w.ack_oldest()
                if len(a.seen) + len(b.seen) < n:
                    pump(conns, lambda: len(w.seen) == before + 1, f"next task for {w.name}")
        # hang guard is inside pump

    assert a.seen == [f"task-{i}".encode() for i in range(0, n, 2)]
    assert b.seen == [f"task-{i}".encode() for i in range(1, n, 2)]
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.queue_delete(q)


def test_work_queues_unacked_message_redelivered_to_other_worker(connect, ch):
    q = uniq("tasks")
    ch.queue_declare(q)
    try:
        a = Worker(connect, q, "A")
        ch.basic_publish("", q, b"important task")
        pump([a.conn], lambda: len(a.pending) == 1, "delivery to A")
        method_a = a.pending[0][0]
        assert method_a.redelivered is False

        b = Worker(connect, q, "B")
        assert ch.queue_declare(q, passive=True).method.consumer_count == 2
        # A dies without acking: its connection is closed, the message goes back to the queue
        # and on to B, flagged as redelivered.
        a.conn.close()
        pump([b.conn], lambda: len(b.pending) == 1, "redelivery to B")
        method_b, _props, body = b.pending[0]
        assert body == b"important task"
        assert method_b.redelivered is True
        b.ack_oldest()
        b.ch.basic_cancel(b.tag)
        ok = ch.queue_declare(q, passive=True).method
        assert ok.message_count == 0
        assert ok.consumer_count == 0
    finally:
        ch.queue_delete(q)


def test_work_queues_durable_queue_persistent_message(ch):
    ch.confirm_delivery()
    q = uniq("task_queue")
    ok = ch.queue_declare(q, durable=True)
    try:
        assert ok.method.queue == q
        # Redeclaring with identical arguments is fine.
        ch.queue_declare(q, durable=True)
        ch.basic_publish("", q, b"persistent task",
                         pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
        assert ch.queue_declare(q, durable=True, passive=True).method.message_count == 1
        method, props, body = ch.basic_get(q, auto_ack=False)
        assert body == b"persistent task"
        assert props.delivery_mode == 2
        ch.basic_ack(method.delivery_tag)
        assert ch.queue_declare(q, passive=True).method.message_count == 0
    finally:
        ch.queue_delete(q)


# ---------------------------------------------------------------------------------------------
# Tutorial 3: Publish/Subscribe
# ---------------------------------------------------------------------------------------------


def test_publish_subscribe_fanout(ch):
    ch.confirm_delivery()
    ex = uniq("logs")
    ch.exchange_declare(ex, exchange_type="fanout")
    try:
        queues = []
        for _ in range(2):
            ok = ch.queue_declare(queue="", exclusive=True)
            name = ok.method.queue
            assert name.startswith("amq.gen-"), name
            # A fanout binding ignores the routing key.
            ch.queue_bind(name, ex, routing_key="ignored-" + uuid.uuid4().hex[:4])
            queues.append(name)
        assert queues[0] != queues[1]

        msgs = [f"log line {i}".encode() for i in range(5)]
        for i, m in enumerate(msgs):
            ch.basic_publish(ex, f"any.key.{i}", m)
        for q in queues:
            assert ch.queue_declare(q, passive=True).method.message_count == len(msgs)
            assert drain(ch, q) == msgs

        # Consumers on both queues each see the next message.
        got = {q: [] for q in queues}
        for q in queues:
            ch.basic_consume(q, lambda c, m, p, b, q=q: got[q].append((m.routing_key, b)),
                             auto_ack=True)
        ch.basic_publish(ex, "k", b"to everyone")
        pump([ch.connection], lambda: all(got[q] for q in queues), "fanout deliveries")
        assert all(got[q] == [("k", b"to everyone")] for q in queues)
    finally:
        ch.exchange_delete(ex)


# ---------------------------------------------------------------------------------------------
# Tutorial 4: Routing
# ---------------------------------------------------------------------------------------------


def test_routing_direct_exchange(ch):
    ch.confirm_delivery()
    ex = uniq("direct_logs")
    ch.exchange_declare(ex, exchange_type="direct")
    try:
        q_err = ch.queue_declare("", exclusive=True).method.queue
        q_all = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q_err, ex, routing_key="error")
        for sev in ("info", "warning", "error"):
            ch.queue_bind(q_all, ex, routing_key=sev)
        # Binding twice with the same key is idempotent (no duplicate delivery).
        ch.queue_bind(q_all, ex, routing_key="info")

        for sev in ("info", "warning", "error", "debug", "ERROR", "error.x", ""):
            ch.basic_publish(ex, sev, f"{sev}-msg".encode())

        assert drain(ch, q_err) == [b"error-msg"]
        assert drain(ch, q_all) == [b"info-msg", b"warning-msg", b"error-msg"]

        # After unbinding, "info" no longer reaches q_all.
        ch.queue_unbind(q_all, ex, routing_key="info")
        ch.basic_publish(ex, "info", b"info-2")
        ch.basic_publish(ex, "warning", b"warning-2")
        assert drain(ch, q_all) == [b"warning-2"]
        assert drain(ch, q_err) == []
    finally:
        ch.exchange_delete(ex)


# ---------------------------------------------------------------------------------------------
# Tutorial 5: Topics
# ---------------------------------------------------------------------------------------------

TOPIC_CASES = [
    # routing key               -> queues that receive it
    ("quick.orange.rabbit", {"Q1", "Q2"}),
    ("lazy.orange.elephant", {"Q1", "Q2"}),
    ("quick.orange.fox", {"Q1"}),
    ("lazy.brown.fox", {"Q2"}),
    ("lazy.pink.rabbit", {"Q2"}),  # matches both Q2 bindings, delivered once
    ("quick.brown.fox", set()),
    ("orange", set()),
    ("quick.orange.male.rabbit", set()),
    ("lazy.orange.male.rabbit", {"Q2"}),
    ("lazy", {"Q2"}),  # '#' matches zero words
    ("lazy.", {"Q2"}),
    (".orange.", {"Q1"}),  # empty words are words
    ("orange.rabbit", set()),
    ("a.b.rabbit", {"Q2"}),
    ("a.b.c.rabbit", set()),
    ("alazy.x", set()),
    ("x.lazy", set()),
    ("", set()),
    ("audit.anything.at.all", {"Q3"}),
    ("audit", {"Q3"}),
    ("x.audit.y", set()),
    ("kern.critical", {"Q4"}),
    ("a.kern.b.critical", {"Q4"}),
    ("kern.critical.x", set()),
    ("critical", set()),
]


def test_topics_exchange_routing_table(ch):
    ch.confirm_delivery()  # confirmed => enqueued, so basic_get below sees everything
    ex = uniq("topic_logs")
    ch.exchange_declare(ex, exchange_type="topic")
    try:
        bindings = {
            "Q1": ["*.orange.*"],
            "Q2": ["*.*.rabbit", "lazy.#"],
            "Q3": ["audit.#"],
            "Q4": ["#.kern.#.critical"],
        }
        queues = {}
        for label, keys in bindings.items():
            queues[label] = ch.queue_declare("", exclusive=True).method.queue
            for key in keys:
                ch.queue_bind(queues[label], ex, routing_key=key)

        for key, _expected in TOPIC_CASES:
            ch.basic_publish(ex, key, key.encode())

        received = {label: drain(ch, q) for label, q in queues.items()}
        for label in queues:
            expected = [k.encode() for k, dest in TOPIC_CASES if label in dest]
            assert received[label] == expected, label
    finally:
        ch.exchange_delete(ex)


def test_topics_hash_alone_matches_everything_and_star_needs_one_word(ch):
    ch.confirm_delivery()
    ex = uniq("topic")
    ch.exchange_declare(ex, exchange_type="topic")
    try:
        q_hash = ch.queue_declare("", exclusive=True).method.queue
        q_star = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q_hash, ex, routing_key="#")
        ch.queue_bind(q_star, ex, routing_key="*")
        keys = ["", "a", "a.b", "a.b.c"]
        for k in keys:
            ch.basic_publish(ex, k, k.encode() or b"<empty>")
        assert drain(ch, q_hash) == [b"<empty>", b"a", b"a.b", b"a.b.c"]
        # '*' matches exactly one word. RabbitMQ treats the empty routing key as ZERO words
        # (so '*' does not match it, '#' does), while "a." is two words ("a" and "").
        assert drain(ch, q_star) == [b"a"]
    finally:
        ch.exchange_delete(ex)


# ---------------------------------------------------------------------------------------------
# Tutorial 6: RPC
# ---------------------------------------------------------------------------------------------


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer:
    def __init__(self, connect, queue):
        self.conn = connect()
        self.ch = self.conn.channel()
        self.ch.queue_declare(queue, exclusive=True)
        self.ch.basic_qos(prefetch_count=1)
        self.requests = []  # (reply_to, correlation_id, body)
        self.ch.basic_consume(queue, self._on_request)

    def _on_request(self, ch, method, props, body):
        self.requests.append((props.reply_to, props.correlation_id, body))
        response = str(fib(int(body))).encode()
        ch.basic_publish(exchange="", routing_key=props.reply_to, body=response,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id))
        ch.basic_ack(method.delivery_tag)


def test_rpc_with_exclusive_callback_queue(connect):
    rpc_queue = uniq("rpc_queue")
    server = RpcServer(connect, rpc_queue)

    client_conn = connect()
    cch = client_conn.channel()
    callback_queue = cch.queue_declare("", exclusive=True).method.queue
    assert callback_queue.startswith("amq.gen-")
    responses = {}

    def on_response(_ch, _method, props, body):
        responses[props.correlation_id] = body

    cch.basic_consume(callback_queue, on_response, auto_ack=True)

    expected = {}
    for n in (0, 1, 10, 30):
        corr_id = str(uuid.uuid4())
        expected[corr_id] = str(fib(n)).encode()
        cch.basic_publish("", rpc_queue, str(n).encode(),
                          pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id))
    pump([server.conn, client_conn], lambda: len(responses) == len(expected), "RPC responses")
    assert responses == expected
    assert [r[0] for r in server.requests] == [callback_queue] * 4
    assert [r[1] for r in server.requests] == list(expected)


def test_rpc_with_direct_reply_to(connect):
    rpc_queue = uniq("rpc_queue")
    server = RpcServer(connect, rpc_queue)

    client_conn = connect()
    cch = client_conn.channel()
    responses = []

    def on_response(_ch, method, props, body):
        responses.append((method, props, body))

    # Must consume from the pseudo-queue in no-ack mode before publishing.
    tag = cch.basic_consume("amq.rabbitmq.reply-to", on_response, auto_ack=True)
    assert tag

    corr_id = str(uuid.uuid4())
    cch.basic_publish("", rpc_queue, b"20",
                      pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=corr_id))
    pump([server.conn, client_conn], lambda: responses, "direct reply-to response")

    (reply_to, seen_corr, body), = server.requests
    assert body == b"20"
    assert seen_corr == corr_id
    # The broker rewrites reply_to into a routable per-channel name.
    assert reply_to.startswith("amq.rabbitmq.reply-to."), reply_to
    assert reply_to != "amq.rabbitmq.reply-to."

    (method, props, body), = responses
    assert body == str(fib(20)).encode()
    assert props.correlation_id == corr_id
    assert method.consumer_tag == tag
    assert method.exchange == ""
    assert method.routing_key == reply_to

    # A second round trip over the same channel works as well.
    corr_id2 = str(uuid.uuid4())
    cch.basic_publish("", rpc_queue, b"7",
                      pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=corr_id2))
    pump([server.conn, client_conn], lambda: len(responses) == 2, "second response")
    assert responses[1][2] == b"13"
    assert responses[1][1].correlation_id == corr_id2
    assert server.requests[1][0] == reply_to
