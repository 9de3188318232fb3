"""aio-pika (asyncio, on top of aiormq) conformance tests.

Covers, with aio-pika's own API: hello world (get and iterator), work queue (prefetch 1,
manual acks, round robin, redelivery after a worker's connection closes), fanout, direct
(bind/unbind), topic, RPC (hand-written callback queue and `aio_pika.patterns.RPC`, which
uses a headers-exchange dead-letter binding), direct reply-to, the Master/Worker pattern,
publisher confirms (aio-pika's default channel mode), mandatory + basic.return (callback and
`on_return_raises`), 404/406 errors closing the channel but not the connection, and the
connection handshake and close.

Test names are `test_<pattern>_<detail>`; scripts/conformance groups them by that prefix.
Every test runs its own event loop under a hang guard (`aio`); all waiting is on client
events (futures set by callbacks, `queue.get` after confirmed publishes), never on sleeps.
"""
import asyncio
import contextlib
import functools
import uuid

import aio_pika
import aiormq
import pytest
from aio_pika.patterns import RPC, Master

HANG_GUARD = 10.0  # seconds per awaited event; never reached when the broker behaves
TEST_GUARD = 60.0  # seconds per test


def uniq(prefix):
    return f"conf.aiopika.{prefix}.{uuid.uuid4().hex[:12]}"


def aio(fn):
    """Runs the coroutine test `fn` in a fresh event loop with a hang guard."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_GUARD))

    return wrapper


async def wait(aw, what="expected event"):
    try:
        return await asyncio.wait_for(aw, HANG_GUARD)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@contextlib.asynccontextmanager
async def connection(url):
    conn = await aio_pika.connect(url)
    try:
        yield conn
    finally:
        if not conn.is_closed:
            await conn.close()


async def get_all(queue):
    """Bodies currently ready in `queue` (basic.get with auto-ack until empty)."""
    out = []
    while True:
        msg = await queue.get(no_ack=True, fail=False)
        if msg is None:
            return out
        out.append(msg.body)


async def message_count(channel, name):
    return (await channel.declare_queue(name, passive=True)).declaration_result.message_count


def reply_text(exc):
    """The Channel.Close reply text; aiormq maps the reply code to the exception class
    (404 ChannelNotFoundEntity, 406 ChannelPreconditionFailed)."""
    return exc.args[0]


# ---------------------------------------------------------------------------------------------
# Hello world
# ---------------------------------------------------------------------------------------------


@aio
async def test_hello_world_publish_get(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("hello")
        q = await ch.declare_queue(name, exclusive=True)
        assert q.declaration_result.message_count == 0
        msg = aio_pika.Message(b"Hello World!", content_type="text/plain",
                               headers={"lang": "en", "n": 7}, message_id="m-1")
        ack = await ch.default_exchange.publish(msg, routing_key=name)
        assert isinstance(ack, aiormq.spec.Basic.Ack)

        got = await q.get(no_ack=False)
        assert got.body == b"Hello World!"
        assert got.routing_key == name
        assert got.exchange == ""
        assert got.redelivered is False
        assert got.content_type == "text/plain"
        assert got.headers == {"lang": "en", "n": 7}
        assert got.message_id == "m-1"
        await got.ack()
        assert await q.get(no_ack=True, fail=False) is None


@aio
async def test_hello_world_consume_iterator(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("hello")
        q = await ch.declare_queue(name, exclusive=True)
        for i in range(3):
            await ch.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=name)
        got = []

        async def consume():
            async with q.iterator() as it:
                async for message in it:
                    async with message.process():
                        got.append(message.body)
                    if len(got) == 3:
                        return

        await wait(consume(), "three deliveries")
        assert got == [b"m0", b"m1", b"m2"]
        assert await message_count(ch, name) == 0


# ---------------------------------------------------------------------------------------------
# Work queue
# ---------------------------------------------------------------------------------------------


class Worker:
    """A consumer on its own connection with prefetch 1 and manual acks."""

    def __init__(self, name):
        self.name = name
        self.deliveries = asyncio.Queue()
        self.seen = []

    async def start(self, url, queue_name):
        self.conn = await aio_pika.connect(url)
        self.ch = await self.conn.channel()
        await self.ch.set_qos(prefetch_count=1)
        q = await self.ch.get_queue(queue_name, ensure=False)
        self.tag = await q.consume(self._on_message)
        return self

    async def _on_message(self, message):
        self.seen.append(message.body)
        await self.deliveries.put(message)

    async def next(self):
        return await wait(self.deliveries.get(), f"delivery to worker {self.name}")

    async def close(self):
        if not self.conn.is_closed:
            await self.conn.close()


@aio
async def test_work_queue_prefetch_one_round_robin(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("tasks")
        await ch.declare_queue(name, durable=True)
        a = await Worker("A").start(amqp_url, name)
        b = await Worker("B").start(amqp_url, name)
        try:
            q = await ch.declare_queue(name, passive=True)
            assert q.declaration_result.consumer_count == 2
            n = 6
            for i in range(n):
                await ch.default_exchange.publish(
                    aio_pika.Message(f"task-{i}".encode(),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name)
            held = {a: await a.next(), b: await b.next()}
            assert held[a].body == b"task-0", "the first registered consumer gets the first task"
            assert held[b].body == b"task-1"
            # Prefetch 1: nothing more is delivered until a worker acks.
            assert await message_count(ch, name) == n - 2
            assert a.deliveries.empty() and b.deliveries.empty()
            for i in range(2, n):
                w = a if i % 2 == 0 else b
                await held[w].ack()
                held[w] = await w.next()
                assert held[w].body == f"task-{i}".encode()
                assert held[w].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            await held[a].ack()
            await held[b].ack()
            assert a.seen == [b"task-0", b"task-2", b"task-4"]
            assert b.seen == [b"task-1", b"task-3", b"task-5"]
        finally:
            await a.close()
            await b.close()
            await ch.queue_delete(name)


@aio
async def test_work_queue_redelivered_when_worker_connection_closes(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("tasks")
        await ch.declare_queue(name)
        a = await Worker("A").start(amqp_url, name)
        b = None
        try:
            await ch.default_exchange.publish(aio_pika.Message(b"important"), routing_key=name)
            first = await a.next()
            assert first.redelivered is False
            b = await Worker("B").start(amqp_url, name)
            await a.close()  # without acking
            again = await b.next()
            assert again.body == b"important"
            assert again.redelivered is True
            await again.ack()
            q = await ch.declare_queue(name, passive=True)
            assert q.declaration_result.message_count == 0
            assert q.declaration_result.consumer_count == 1
        finally:
            await a.close()
            if b:
                await b.close()
            await ch.queue_delete(name)


@aio
async def test_work_queue_master_worker_pattern(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=1)
        master = Master(ch)
        done = asyncio.get_running_loop().create_future()
        got = []

        async def worker(*, n):
            got.append(n)
            if len(got) == 5 and not done.done():
                done.set_result(True)

        name = uniq("master")
        worker_handle = await master.create_worker(name, worker, auto_delete=True)
        for n in range(5):
            await master.create_task(name, kwargs=dict(n=n))
        await wait(done, "five jobs")
        assert got == [0, 1, 2, 3, 4]
        await worker_handle.close()


# ---------------------------------------------------------------------------------------------
# Exchanges: fanout, direct, topic
# ---------------------------------------------------------------------------------------------


@aio
async def test_fanout_server_named_exclusive_queues(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(uniq("logs"), aio_pika.ExchangeType.FANOUT, auto_delete=True)
        queues = []
        for _ in range(2):
            q = await ch.declare_queue(exclusive=True)
            assert q.name.startswith("amq.gen-"), q.name
            await q.bind(ex, routing_key="ignored")
            queues.append(q)
        assert queues[0].name != queues[1].name
        for i in range(3):
            await ex.publish(aio_pika.Message(f"log {i}".encode()), routing_key=f"k{i}")
        for q in queues:
            assert await get_all(q) == [b"log 0", b"log 1", b"log 2"]

        futures = [asyncio.get_running_loop().create_future() for _ in queues]
        for q, fut in zip(queues, futures):
            async def on_message(m, fut=fut):
                if not fut.done():
                    fut.set_result(m)
            await q.consume(on_message, no_ack=True)
        await ex.publish(aio_pika.Message(b"to everyone"), routing_key="x")
        for fut in futures:
            m = await wait(fut, "fanout delivery")
            assert (m.body, m.routing_key, m.exchange) == (b"to everyone", "x", ex.name)


@aio
async def test_direct_routing_bind_unbind(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(uniq("direct"), aio_pika.ExchangeType.DIRECT,
                                       auto_delete=True)
        q_err = await ch.declare_queue(exclusive=True)
        q_all = await ch.declare_queue(exclusive=True)
        await q_err.bind(ex, "error")
        for sev in ("info", "warning", "error"):
            await q_all.bind(ex, sev)
        for sev in ("info", "warning", "error", "debug", "ERROR"):
            await ex.publish(aio_pika.Message(sev.encode()), routing_key=sev, mandatory=False)
        assert await get_all(q_err) == [b"error"]
        assert await get_all(q_all) == [b"info", b"warning", b"error"]
        await q_all.unbind(ex, "info")
        await ex.publish(aio_pika.Message(b"info-2"), routing_key="info", mandatory=False)
        await ex.publish(aio_pika.Message(b"warning-2"), routing_key="warning")
        assert await get_all(q_all) == [b"warning-2"]


@aio
async def test_topic_star_and_hash(amqp_url):
    cases = [
        ("quick.orange.rabbit", {"Q1", "Q2"}), ("lazy.orange.elephant", {"Q1", "Q2"}),
        ("quick.orange.fox", {"Q1"}), ("lazy.brown.fox", {"Q2"}), ("lazy.pink.rabbit", {"Q2"}),
        ("quick.brown.fox", set()), ("quick.orange.male.rabbit", set()),
        ("lazy.orange.male.rabbit", {"Q2"}), ("lazy", {"Q2"}), ("orange", set()),
    ]
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        ex = await ch.declare_exchange(uniq("topic"), aio_pika.ExchangeType.TOPIC, auto_delete=True)
        q1 = await ch.declare_queue(exclusive=True)
        q2 = await ch.declare_queue(exclusive=True)
        await q1.bind(ex, "*.orange.*")
        await q2.bind(ex, "*.*.rabbit")
        await q2.bind(ex, "lazy.#")
        for key, _ in cases:
            await ex.publish(aio_pika.Message(key.encode()), routing_key=key, mandatory=False)
        assert await get_all(q1) == [k.encode() for k, dest in cases if "Q1" in dest]
        assert await get_all(q2) == [k.encode() for k, dest in cases if "Q2" in dest]


# ---------------------------------------------------------------------------------------------
# RPC and direct reply-to
# ---------------------------------------------------------------------------------------------


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def start_fib_server(url, queue_name):
    """An RPC server on its own connection: answers `fib(body)` to reply_to."""
    conn = await aio_pika.connect(url)
    ch = await conn.channel()
    q = await ch.declare_queue(queue_name, exclusive=True)

    async def on_request(message):
        async with message.process():
            await ch.default_exchange.publish(
                aio_pika.Message(str(fib(int(message.body))).encode(),
                                 correlation_id=message.correlation_id),
                routing_key=message.reply_to)

    await q.consume(on_request)
    return conn


@aio
async def test_rpc_callback_queue_and_correlation_id(amqp_url):
    rpc_queue = uniq("rpc")
    server = await start_fib_server(amqp_url, rpc_queue)
    try:
        async with connection(amqp_url) as conn:
            ch = await conn.channel()
            callback = await ch.declare_queue(exclusive=True)
            pending = {}

            async def on_response(message):
                fut = pending.pop(message.correlation_id, None)
                if fut:
                    fut.set_result(message.body)

            await callback.consume(on_response, no_ack=True)
            expected = {}
            for n in (0, 1, 10, 30):
                corr = str(uuid.uuid4())
                pending[corr] = asyncio.get_running_loop().create_future()
                expected[corr] = (pending[corr], str(fib(n)).encode())
                await ch.default_exchange.publish(
                    aio_pika.Message(str(n).encode(), correlation_id=corr, reply_to=callback.name),
                    routing_key=rpc_queue)
            for corr, (fut, want) in expected.items():
                assert await wait(fut, f"RPC response {corr}") == want
    finally:
        await server.close()


@aio
async def test_rpc_patterns_rpc(amqp_url):
    async with connection(amqp_url) as server_conn, connection(amqp_url) as client_conn:
        server = await RPC.create(await server_conn.channel())
        name = uniq("rpc.multiply")

        async def multiply(*, x, y):
            return x * y

        await server.register(name, multiply, auto_delete=True)
        client = await RPC.create(await client_conn.channel())
        assert await wait(client.call(name, kwargs=dict(x=6, y=7)), "RPC result") == 42
        assert await wait(client.call(name, kwargs=dict(x=3, y=5)), "RPC result") == 15
        # RPC.close() cancels the result consumer (which auto-deletes the result queue), then
        # unbinds that queue: RabbitMQ answers unbind-ok for a missing queue.
        await client.close()
        await server.close()


@aio
async def test_direct_reply_to_pseudo_queue(amqp_url):
    rpc_queue = uniq("rpc")
    server = await start_fib_server(amqp_url, rpc_queue)
    try:
        async with connection(amqp_url) as conn:
            ch = await conn.channel()
            reply_q = await ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
            replies = asyncio.Queue()
            tag = await reply_q.consume(replies.put, no_ack=True)
            for n, want in ((20, b"6765"), (7, b"13")):
                corr = str(uuid.uuid4())
                await ch.default_exchange.publish(
                    aio_pika.Message(str(n).encode(), correlation_id=corr,
                                     reply_to="amq.rabbitmq.reply-to"),
                    routing_key=rpc_queue)
                m = await wait(replies.get(), "direct reply-to response")
                assert m.body == want
                assert m.correlation_id == corr
                assert m.consumer_tag == tag
                assert m.routing_key.startswith("amq.rabbitmq.reply-to."), m.routing_key
    finally:
        await server.close()


# ---------------------------------------------------------------------------------------------
# Confirms and mandatory/return
# ---------------------------------------------------------------------------------------------


@aio
async def test_confirms_ack_routable_and_unroutable(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel(publisher_confirms=True)
        name = uniq("confirm")
        q = await ch.declare_queue(name, exclusive=True)
        acks = await asyncio.gather(*[
            ch.default_exchange.publish(aio_pika.Message(f"c{i}".encode()), routing_key=name)
            for i in range(20)])
        assert all(isinstance(a, aiormq.spec.Basic.Ack) for a in acks)
        # An unroutable message without mandatory is confirmed too (and dropped).
        ack = await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=uniq("nowhere"),
                                                mandatory=False)
        assert isinstance(ack, aiormq.spec.Basic.Ack)
        # Confirmed => enqueued: the count is exact.
        assert (await ch.declare_queue(name, passive=True)).declaration_result.message_count == 20
        assert await get_all(q) == [f"c{i}".encode() for i in range(20)]


@aio
async def test_mandatory_return_callback(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        returned = asyncio.get_running_loop().create_future()
        ch.return_callbacks.add(lambda _ch, m: returned.done() or returned.set_result(m))
        key = uniq("nowhere")
        result = await ch.default_exchange.publish(
            aio_pika.Message(b"lost", headers={"h": "v"}), routing_key=key, mandatory=True)
        m = await wait(returned, "basic.return")
        assert m.body == b"lost"
        assert m.headers == {"h": "v"}
        assert m.routing_key == key
        # aiormq resolves the publish with the returned message: the return came before the ack.
        assert getattr(result, "body", None) == b"lost"
        assert isinstance(result.delivery, aiormq.spec.Basic.Return)
        assert result.delivery.reply_code == 312
        assert result.delivery.reply_text == "NO_ROUTE"


@aio
async def test_mandatory_return_raises(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel(on_return_raises=True)
        with pytest.raises(aio_pika.exceptions.PublishError):
            await ch.default_exchange.publish(aio_pika.Message(b"lost"),
                                              routing_key=uniq("nowhere"), mandatory=True)
        # The channel is still usable.
        q = await ch.declare_queue(exclusive=True)
        await ch.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=q.name)
        assert await get_all(q) == [b"ok"]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@aio
async def test_errors_404_passive_queue_closes_channel(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("missing")
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as err:
            await ch.declare_queue(name, passive=True)
        assert reply_text(err.value) == f"NOT_FOUND - no queue '{name}' in vhost '/'"
        assert ch.is_closed
        # The connection survives a channel error.
        ch2 = await conn.channel()
        await ch2.declare_queue(exclusive=True)
        assert not conn.is_closed


@aio
async def test_errors_404_passive_exchange(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("missing")
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as err:
            await ch.declare_exchange(name, passive=True)
        assert reply_text(err.value) == f"NOT_FOUND - no exchange '{name}' in vhost '/'"
        assert ch.is_closed


@aio
async def test_errors_unbind_missing_queue_or_exchange_is_ok(amqp_url):
    # RabbitMQ's queue.unbind is idempotent: a missing queue, exchange or binding gets
    # unbind-ok, not 404 (aio_pika.patterns.RPC.close relies on it).
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        missing_q = await ch.get_queue(uniq("gone"), ensure=False)
        await missing_q.unbind("amq.direct", "k")
        await missing_q.unbind(uniq("no-exchange"), "k")
        q = await ch.declare_queue(exclusive=True)
        await q.unbind(uniq("no-exchange"), "k")
        await q.unbind("amq.direct", "never-bound")
        assert not ch.is_closed


@aio
async def test_errors_406_redeclare_queue_durable(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("q")
        await ch.declare_queue(name, durable=False)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as err:
            await ch.declare_queue(name, durable=True)
        assert reply_text(err.value) == (
            f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost "
            f"'/': received 'true' but current is 'false'")
        assert ch.is_closed
        ch2 = await conn.channel()
        await ch2.queue_delete(name)


@aio
async def test_errors_406_redeclare_exchange_type(amqp_url):
    async with connection(amqp_url) as conn:
        ch = await conn.channel()
        name = uniq("ex")
        await ch.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as err:
            await ch.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
        assert reply_text(err.value) == (
            f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' "
            f"in vhost '/': received 'topic' but current is 'direct'")
        ch2 = await conn.channel()
        await ch2.exchange_delete(name)


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


@aio
async def test_connection_open_capabilities_close(amqp_url):
    conn = await aio_pika.connect(amqp_url)
    underlay = conn.transport.connection
    caps = underlay.server_capabilities
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings",
                "authentication_failure_close", "per_consumer_qos", "direct_reply_to"):
        assert caps.get(cap) is True, cap
    ch = await conn.channel()
    assert not ch.is_closed
    await conn.close()
    assert conn.is_closed


@aio
async def test_connection_wrong_password_refused(amqp_url):
    bad = amqp_url.replace("guest:guest@", "guest:wrong@", 1)
    # The broker answers the bad start-ok with connection.close 403 (capability
    # authentication_failure_close); aiormq reports its text.
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as err:
        await wait(aio_pika.connect(bad), "refused login")
    assert err.value.args[0] == ("ACCESS_REFUSED - Login was refused using authentication "
                                 "mechanism PLAIN. For details see the broker logfile.")
