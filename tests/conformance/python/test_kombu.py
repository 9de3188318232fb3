"""kombu (over py-amqp, the `pyamqp` transport Celery uses) conformance tests.

Covers, with kombu's entities (Exchange, Queue, Producer, Consumer, SimpleQueue): hello world
(SimpleQueue and Producer/Consumer with JSON serialisation and headers), work queue (prefetch
1, manual acks, round robin, reject-requeue, redelivery after a worker's connection closes),
fanout, direct (bind/unbind), topic, RPC with a callback queue, direct reply-to, publisher
confirms (`confirm_publish`), mandatory + basic.return (before the confirm), 404/406 errors
closing the channel but not the connection, and the connection handshake (capabilities,
heartbeat negotiation, refused login).

Test names are `test_<pattern>_<detail>`; scripts/conformance groups them by that prefix.
All waiting is on client events (`drain_events` until the expected callback ran, confirmed
publishes before counting); timeouts are hang guards only.
"""
import socket
import time
import uuid

import amqp
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves


def uniq(prefix):
    return f"conf.kombu.{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def connect(amqp_url):
    """Opens kombu connections to the broker under test; releases them afterwards."""
    conns = []

    def _connect(**kwargs):
        conn = Connection(amqp_url, **kwargs)
        conn.connect()
        conns.append(conn)
        return conn

    yield _connect
    for conn in conns:
        conn.release()


@pytest.fixture
def conn(connect):
    return connect(transport_options={"confirm_publish": True})


def pump(conns, done, what="expected event"):
    """Drain events on `conns` until `done()` is true (hang guard: HANG_GUARD seconds)."""
    deadline = time.monotonic() + HANG_GUARD
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for c in conns:
            try:
                c.drain_events(timeout=0.05)
            except socket.timeout:
                pass
            if done():
                return


def drain(channel, queue):
    """Bodies currently ready in `queue` (basic.get with auto-ack until empty)."""
    out = []
    bound = queue.bind(channel)
    while True:
        msg = bound.get(no_ack=True)
        if msg is None:
            return out
        out.append(msg.body)


def counts(channel, name):
    """(message_count, consumer_count) of an existing queue, by passive declare."""
    _name, messages, consumers = Queue(name).bind(channel).queue_declare(passive=True)
    return messages, consumers


# ---------------------------------------------------------------------------------------------
# Hello world
# ---------------------------------------------------------------------------------------------


def test_hello_world_simple_queue(conn):
    name = uniq("simple")
    sq = conn.SimpleQueue(name, queue_opts={"auto_delete": False, "durable": False},
                          exchange_opts={"auto_delete": True, "durable": False})
    try:
        sq.put({"hello": "world", "n": [1, 2, 3]}, serializer="json", headers={"k": "v"})
        msg = sq.get(block=True, timeout=HANG_GUARD)
        assert msg.payload == {"hello": "world", "n": [1, 2, 3]}
        assert msg.content_type == "application/json"
        assert msg.headers == {"k": "v"}
        assert msg.delivery_info["routing_key"] == name
        assert msg.delivery_info["redelivered"] is False
        msg.ack()
        assert sq.qsize() == 0
    finally:
        # Close (cancel the consumer) first: deleting a queue under a consumer makes the
        # broker send basic.cancel, which py-amqp raises as ConsumerCancelled.
        sq.close()
        Queue(name).bind(conn.channel()).delete()


def test_hello_world_producer_consumer(conn):
    ch = conn.channel()
    q = Queue(uniq("hello"), exclusive=True)
    Producer(ch).publish({"greeting": "Hello World!"}, routing_key=q.name, declare=[q],
                         serializer="json", headers={"lang": "en"}, correlation_id="c-1",
                         message_id="m-1")
    got = []
    with Consumer(ch, queues=[q], callbacks=[lambda body, msg: (got.append((body, msg)),
                                                                msg.ack())]):
        pump([conn], lambda: got, "delivery")
        assert counts(ch, q.name) == (0, 1)
    # Exclusive kombu queues are auto-delete: cancelling the consumer deleted it.
    (body, msg), = got
    assert body == {"greeting": "Hello World!"}
    assert msg.headers == {"lang": "en"}
    assert msg.properties["correlation_id"] == "c-1"
    assert msg.properties["message_id"] == "m-1"
    assert msg.delivery_info["exchange"] == ""
    assert msg.delivery_info["routing_key"] == q.name


# ---------------------------------------------------------------------------------------------
# Work queue
# ---------------------------------------------------------------------------------------------


class Worker:
    """A consumer on its own connection with prefetch 1 and manual acks."""

    def __init__(self, connect, queue):
        self.conn = connect()
        self.pending = []
        self.seen = []
        self.consumer = Consumer(self.conn.channel(), queues=[queue], prefetch_count=1,
                                 callbacks=[self._on_message], accept=["json", "text/plain"])
        self.consumer.consume()

    def _on_message(self, body, message):
        self.pending.append(message)
        self.seen.append(body)  # text/plain, utf-8: decoded to str

    def ack_oldest(self):
        self.pending.pop(0).ack()


def test_work_queue_prefetch_one_round_robin(connect, conn):
    ch = conn.channel()
    q = Queue(uniq("tasks"), durable=True)
    q.bind(ch).declare()
    try:
        a, b = Worker(connect, q), Worker(connect, q)
        assert counts(ch, q.name) == (0, 2)
        n = 6
        producer = Producer(ch)
        for i in range(n):
            producer.publish(f"task-{i}".encode(), routing_key=q.name, delivery_mode=2,
                             content_type="text/plain", content_encoding="utf-8")
        pump([a.conn, b.conn], lambda: a.pending and b.pending, "one task per worker")
        assert (a.seen, b.seen) == (["task-0"], ["task-1"])
        # Prefetch 1: the rest stays in the queue until a worker acks.
        assert counts(ch, q.name) == (n - 2, 2)
        for i in range(2, n):
            w = a if i % 2 == 0 else b
            w.ack_oldest()
            pump([w.conn], lambda: len(w.pending) == 1, f"task-{i}")
            assert w.seen[-1] == f"task-{i}"
            assert w.pending[0].properties["delivery_mode"] == 2
        a.ack_oldest()
        b.ack_oldest()
        assert a.seen == ["task-0", "task-2", "task-4"]
        assert b.seen == ["task-1", "task-3", "task-5"]
        assert counts(ch, q.name)[0] == 0
    finally:
        q.bind(conn.channel()).delete()


def test_work_queue_reject_requeue_and_redelivery_on_close(connect, conn):
    ch = conn.channel()
    q = Queue(uniq("tasks"))
    q.bind(ch).declare()
    try:
        a = Worker(connect, q)
        Producer(ch).publish(b"job", routing_key=q.name, content_type="text/plain",
                             content_encoding="utf-8")
        pump([a.conn], lambda: a.pending, "delivery to A")
        first = a.pending.pop()
        assert first.delivery_info["redelivered"] is False
        first.reject(requeue=True)
        pump([a.conn], lambda: a.pending, "requeued delivery to A")
        assert a.pending[0].decode() == "job"
        assert a.pending[0].delivery_info["redelivered"] is True

        b = Worker(connect, q)
        a.conn.release()  # A dies without acking: the message goes to B
        pump([b.conn], lambda: b.pending, "redelivery to B")
        assert b.pending[0].decode() == "job"
        assert b.pending[0].delivery_info["redelivered"] is True
        b.ack_oldest()
        assert counts(ch, q.name) == (0, 1)
    finally:
        q.bind(conn.channel()).delete()


# ---------------------------------------------------------------------------------------------
# Exchanges
# ---------------------------------------------------------------------------------------------


def test_fanout_server_named_exclusive_queues(conn):
    ch = conn.channel()
    ex = Exchange(uniq("logs"), type="fanout", auto_delete=True)
    # A bound copy of a server-named Queue takes the name the broker gave it.
    queues = [Queue("", ex, routing_key="ignored", exclusive=True).bind(ch) for _ in range(2)]
    for q in queues:
        q.declare()
        assert q.name.startswith("amq.gen-"), q.name
    assert queues[0].name != queues[1].name
    producer = Producer(ch, exchange=ex)
    for i in range(3):
        producer.publish(f"log {i}".encode(), routing_key=f"k{i}")
    for q in queues:
        assert drain(ch, q) == [b"log 0", b"log 1", b"log 2"]


def test_direct_routing_bind_unbind(conn):
    ch = conn.channel()
    ex = Exchange(uniq("direct"), type="direct", auto_delete=True)
    ex.bind(ch).declare()
    q_err = Queue("", ex, routing_key="error", exclusive=True).bind(ch)
    q_err.declare()
    q_all = Queue("", exclusive=True).bind(ch)
    q_all.declare()
    for sev in ("info", "warning", "error"):
        q_all.bind_to(ex, routing_key=sev)
    producer = Producer(ch, exchange=ex)
    for sev in ("info", "warning", "error", "debug"):
        producer.publish(sev.encode(), routing_key=sev)
    assert drain(ch, q_err) == [b"error"]
    assert drain(ch, q_all) == [b"info", b"warning", b"error"]
    q_all.unbind_from(ex, routing_key="info")
    producer.publish(b"info-2", routing_key="info")
    producer.publish(b"warning-2", routing_key="warning")
    assert drain(ch, q_all) == [b"warning-2"]


def test_topic_star_and_hash(conn):
    cases = [
        ("quick.orange.rabbit", {"Q1", "Q2"}), ("lazy.orange.elephant", {"Q1", "Q2"}),
        ("quick.orange.fox", {"Q1"}), ("lazy.brown.fox", {"Q2"}), ("lazy.pink.rabbit", {"Q2"}),
        ("quick.brown.fox", set()), ("quick.orange.male.rabbit", set()),
        ("lazy.orange.male.rabbit", {"Q2"}), ("lazy", {"Q2"}), ("orange", set()),
    ]
    ch = conn.channel()
    ex = Exchange(uniq("topic"), type="topic", auto_delete=True)
    ex.bind(ch).declare()
    q1 = Queue("", ex, routing_key="*.orange.*", exclusive=True).bind(ch)
    q1.declare()
    q2 = Queue("", exclusive=True).bind(ch)
    q2.declare()
    q2.bind_to(ex, routing_key="*.*.rabbit")
    q2.bind_to(ex, routing_key="lazy.#")
    producer = Producer(ch, exchange=ex)
    for key, _ in cases:
        producer.publish(key.encode(), routing_key=key)
    assert drain(ch, q1) == [k.encode() for k, dest in cases if "Q1" in dest]
    assert drain(ch, q2) == [k.encode() for k, dest in cases if "Q2" in dest]


# ---------------------------------------------------------------------------------------------
# RPC and direct reply-to
# ---------------------------------------------------------------------------------------------


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class FibServer:
    """Answers fib(n) to reply_to, on its own connection."""

    def __init__(self, connect, queue_name):
        self.conn = connect()
        self.ch = self.conn.channel()
        self.requests = []
        q = Queue(queue_name, exclusive=True)
        self.consumer = Consumer(self.ch, queues=[q], callbacks=[self._on_request],
                                 accept=["json"])
        self.consumer.consume()

    def _on_request(self, body, message):
        props = message.properties
        self.requests.append((props["reply_to"], props["correlation_id"], body))
        Producer(self.ch).publish({"result": fib(body["n"])}, routing_key=props["reply_to"],
                                  correlation_id=props["correlation_id"], serializer="json")
        message.ack()


def test_rpc_callback_queue_and_correlation_id(connect, conn):
    rpc_queue = uniq("rpc")
    server = FibServer(connect, rpc_queue)
    ch = conn.channel()
    responses = {}
    # The Consumer declares the server-named callback queue (declaring it again by its
    # amq.gen- name would be refused with 403, see test_errors_403_redeclare_server_named_queue).
    consumer = Consumer(ch, queues=[Queue("", exclusive=True)], no_ack=True, accept=["json"],
                        callbacks=[lambda body, msg: responses.__setitem__(
                            msg.properties["correlation_id"], body["result"])])
    consumer.consume()
    callback = consumer.queues[0]
    assert callback.name.startswith("amq.gen-"), callback.name
    expected = {}
    for n in (0, 1, 10, 30):
        corr = str(uuid.uuid4())
        expected[corr] = fib(n)
        Producer(ch).publish({"n": n}, routing_key=rpc_queue, reply_to=callback.name,
                             correlation_id=corr, serializer="json")
    pump([server.conn, conn], lambda: len(responses) == len(expected), "RPC responses")
    assert responses == expected
    assert [r[0] for r in server.requests] == [callback.name] * 4


def test_direct_reply_to_pseudo_queue(connect, conn):
    rpc_queue = uniq("rpc")
    server = FibServer(connect, rpc_queue)
    ch = conn.channel()
    replies = []
    reply_q = Queue("amq.rabbitmq.reply-to", no_declare=True)
    consumer = Consumer(ch, queues=[reply_q], no_ack=True, accept=["json"],
                        callbacks=[lambda body, msg: replies.append((body, msg))])
    consumer.consume()
    corr = str(uuid.uuid4())
    Producer(ch).publish({"n": 20}, routing_key=rpc_queue, reply_to="amq.rabbitmq.reply-to",
                         correlation_id=corr, serializer="json")
    pump([server.conn, conn], lambda: replies, "direct reply-to response")
    (body, msg), = replies
    assert body == {"result": 6765}
    assert msg.properties["correlation_id"] == corr
    reply_to = server.requests[0][0]
    assert reply_to.startswith("amq.rabbitmq.reply-to."), reply_to
    assert msg.delivery_info["routing_key"] == reply_to


# ---------------------------------------------------------------------------------------------
# Confirms and mandatory/return
# ---------------------------------------------------------------------------------------------


def test_confirms_publish_waits_for_ack(conn):
    assert conn.transport_options["confirm_publish"] is True
    ch = conn.channel()
    q = Queue(uniq("confirm"), exclusive=True)
    q.bind(ch).declare()
    producer = Producer(ch)
    for i in range(20):
        producer.publish(f"c{i}".encode(), routing_key=q.name)
    # An unroutable message without mandatory is confirmed (and dropped) too.
    producer.publish(b"x", routing_key=uniq("nowhere"))
    # Every publish returned after its basic.ack: the count is exact.
    assert counts(ch, q.name) == (20, 0)
    assert drain(ch, q) == [f"c{i}".encode() for i in range(20)]


def test_mandatory_return_before_confirm(conn):
    ch = conn.channel()
    returned = []

    def on_return(exc, exchange, routing_key, message):
        returned.append((exc, exchange, routing_key, message))

    key = uniq("nowhere")
    Producer(ch, on_return=on_return).publish(b"lost", routing_key=key, mandatory=True,
                                               headers={"h": "v"})
    # The return arrived while the publish waited for its ack.
    (exc, exchange, routing_key, message), = returned
    assert (exc.reply_code, exc.reply_text) == (312, "NO_ROUTE")
    assert (exchange, routing_key) == ("", key)
    assert message.body == b"lost"
    assert message.properties["application_headers"] == {"h": "v"}


def test_mandatory_return_without_confirms(connect):
    conn = connect()
    ch = conn.channel()
    returned = []
    key = uniq("nowhere")
    Producer(ch, on_return=lambda *a: returned.append(a)).publish(
        b"lost", routing_key=key, mandatory=True)
    pump([conn], lambda: returned, "basic.return")
    exc, exchange, routing_key, message = returned[0]
    assert exc.reply_code == 312
    assert routing_key == key
    assert message.body == b"lost"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors_404_passive_queue_closes_channel(conn):
    ch = conn.channel()
    name = uniq("missing")
    with pytest.raises(amqp.exceptions.NotFound) as err:
        Queue(name).bind(ch).queue_declare(passive=True)
    assert err.value.reply_code == 404
    assert err.value.reply_text == f"NOT_FOUND - no queue '{name}' in vhost '/'"
    # py-amqp answered channel.close with close-ok and reopened the same channel number; the
    # connection survived the channel error and the revived channel works.
    assert conn.connected
    assert ch.is_open
    Queue("", exclusive=True).bind(ch).declare()


def test_errors_404_passive_exchange(conn):
    ch = conn.channel()
    name = uniq("missing")
    with pytest.raises(amqp.exceptions.NotFound) as err:
        Exchange(name, type="direct").bind(ch).declare(passive=True)
    assert err.value.reply_text == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
    Exchange("amq.fanout", type="fanout", durable=True).bind(ch).declare(passive=True)


def test_errors_403_redeclare_server_named_queue(conn):
    ch = conn.channel()
    q = Queue("", exclusive=True).bind(ch)
    q.declare()
    # Only a passive declare may name an existing amq.* queue; a full declare is refused even
    # for the connection's own exclusive queue.
    assert counts(ch, q.name) == (0, 0)
    with pytest.raises(amqp.exceptions.AccessRefused) as err:
        Queue(q.name, exclusive=True).bind(ch).declare()
    assert err.value.reply_code == 403
    assert err.value.reply_text == (
        f"ACCESS_REFUSED - queue name '{q.name}' contains reserved prefix 'amq.*'")


def test_errors_406_redeclare_queue_durable(conn):
    ch = conn.channel()
    name = uniq("q")
    Queue(name, durable=False).bind(ch).declare()
    try:
        with pytest.raises(amqp.exceptions.PreconditionFailed) as err:
            Queue(name, durable=True).bind(ch).declare()
        assert err.value.reply_code == 406
        assert err.value.reply_text == (
            f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': "
            f"received 'true' but current is 'false'")
        # The revived channel sees the queue unchanged.
        assert counts(ch, name) == (0, 0)
    finally:
        Queue(name).bind(conn.channel()).delete()


def test_errors_406_redeclare_queue_arguments(conn):
    ch = conn.channel()
    name = uniq("q")
    Queue(name, max_length=10, exclusive=True).bind(ch).declare()
    with pytest.raises(amqp.exceptions.PreconditionFailed) as err:
        Queue(name, max_length=20, exclusive=True).bind(ch).declare()
    assert err.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in vhost "
        f"'/': received '20' but current is '10'")


def test_errors_406_redeclare_exchange_type(conn):
    ch = conn.channel()
    name = uniq("ex")
    Exchange(name, type="direct", auto_delete=True).bind(ch).declare()
    with pytest.raises(amqp.exceptions.PreconditionFailed) as err:
        Exchange(name, type="fanout", auto_delete=True).bind(ch).declare()
    assert err.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': "
        f"received 'fanout' but current is 'direct'")
    Exchange(name).bind(conn.channel()).delete()


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


def test_connection_capabilities_heartbeat_and_close(amqp_url):
    conn = Connection(amqp_url, heartbeat=5)
    conn.connect()
    try:
        assert conn.connected
        client = conn.connection  # the py-amqp connection
        caps = client.server_properties["capabilities"]
        for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                    "exchange_exchange_bindings",
                    "authentication_failure_close", "per_consumer_qos", "direct_reply_to"):
            assert caps.get(cap) is True, cap
        # The broker offers 60 s; the lower of the two is used.
        assert client.heartbeat == 5
        conn.heartbeat_check()  # sends a heartbeat frame if due; must not fail
        assert conn.default_channel.is_open
    finally:
        conn.release()
    assert not conn.connected


def test_connection_wrong_password_refused(amqp_url):
    conn = Connection(amqp_url.replace("guest:guest@", "guest:wrong@", 1), connect_timeout=5)
    try:
        with pytest.raises(amqp.exceptions.AccessRefused) as err:
            conn.connect()
        assert err.value.reply_code == 403
    finally:
        conn.release()
