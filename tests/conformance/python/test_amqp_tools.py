"""rabbitmq-c (C) conformance through its command-line tools (Debian `amqp-tools` 0.11).

Drives `amqp-publish`, `amqp-get`, `amqp-consume`, `amqp-declare-queue` and
`amqp-delete-queue` as subprocesses (each with a timeout, always killed). Covers: hello world
(publish/get, server-named queue, line-buffered bulk publish, properties written by
rabbitmq-c read back byte-exact), work queue (prefetch 1 holding back the next message while
the consumer's command runs, two consumers sharing a queue with acks, a failed command's
message not acked and requeued), fanout, direct and topic routing through `amqp-consume
--exchange --routing-key`, request/reply over named queues, errors (404 get/consume/publish,
406 redeclare and conditional deletes, 403 reserved names; reply texts as printed by
rabbitmq-c) and connection errors (403 login, 530 vhost).

The tools cannot declare exchanges, use confirms or mandatory, or show properties, so
exchanges are declared, properties read and consumer counts polled with pika; everything
else goes through rabbitmq-c. `amqp-consume` runs a command per message (body on stdin) and
acks only if it exits 0: tests use a command that reports to a unix socket and waits for
the test's verdict (`Gate`), so the test knows exactly which delivery is in progress.

Test names are `test_<pattern>_<detail>`; scripts/conformance groups them by that prefix.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pika
import pytest

HANG_GUARD = 10.0  # seconds for each tool run or awaited event; never reached normally
TOOLS = ["amqp-publish", "amqp-get", "amqp-consume", "amqp-declare-queue", "amqp-delete-queue"]

# The per-message command for amqp-consume: sends the body to the test over a unix socket and
# exits 0 (amqp-consume then acks) if the test answers "a", 1 otherwise.
GATE_CODE = r"""
import socket, sys
body = sys.stdin.buffer.read()
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(body)
s.shutdown(socket.SHUT_WR)
sys.exit(0 if s.recv(1) == b"a" else 1)
"""


@pytest.fixture(scope="module", autouse=True)
def tools_present():
    missing = [t for t in TOOLS if not shutil.which(t)]
    assert not missing, f"missing {missing}: apt-get install amqp-tools"


def uniq(prefix):
    return f"conf.c.{prefix}.{uuid.uuid4().hex[:12]}"


def tool(url, name, *args, stdin=None, check=True):
    """Runs amqp-<name> against `url`; returns the CompletedProcess (text)."""
    proc = subprocess.run([f"amqp-{name}", "--url", url, *args], input=stdin,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    if check:
        assert proc.returncode == 0, f"amqp-{name} {args}: exit {proc.returncode}: {proc.stderr}"
    return proc


def publish(url, routing_key, body, *args, exchange=None):
    extra = ["--exchange", exchange] if exchange else []
    tool(url, "publish", "--routing-key", routing_key, "--body", body, *extra, *args)


def get(url, queue):
    """Body of the next message (auto-acked by amqp-get), or None if the queue is empty."""
    proc = tool(url, "get", "--queue", queue, check=False)
    if proc.returncode == 2 and proc.stdout == "":
        return None
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Consumer:
    """An `amqp-consume` subprocess; `finish()` waits for it, `kill()` always ends it."""

    def __init__(self, url, *args, command):
        # "--" ends amqp-consume's options (popt would parse the command's own, e.g. `sh -c`).
        # Its own process group, so that kill() also ends the command it is running.
        self.proc = subprocess.Popen(["amqp-consume", "--url", url, *args, "--", *command],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)

    def finish(self):
        try:
            out, err = self.proc.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("amqp-consume did not finish in time") from None
        assert self.proc.returncode == 0, f"amqp-consume exit {self.proc.returncode}: {err}"
        return out

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()


class Gate:
    """The test's end of GATE_CODE: each `next()` is one delivery in progress."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "gate.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(HANG_GUARD)
        self.command = [sys.executable, "-c", GATE_CODE, self.path]

    def next(self):
        """(body, connection) of the next message handed to the command."""
        try:
            conn, _ = self.sock.accept()
        except socket.timeout:
            raise AssertionError("timed out waiting for a delivery to the command") from None
        conn.settimeout(HANG_GUARD)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(), conn

    @staticmethod
    def release(conn, ack=True):
        conn.sendall(b"a" if ack else b"n")
        conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def gate(tmp_path):
    g = Gate(tmp_path)
    yield g
    g.close()


@pytest.fixture
def consumers():
    """Collects Consumer processes and kills any still running at teardown."""
    started = []
    yield started
    for c in started:
        c.kill()


@pytest.fixture
def admin(amqp_url):
    """A pika channel for what amqp-tools cannot do (declare exchanges, read properties)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield conn.channel()
    if conn.is_open:
        conn.close()


def wait_consumers(amqp_url, queue, n):
    """Polls (passive declare) until `queue` exists with `n` consumers: amqp-consume offers no
    event for 'bound and consuming'. Hang guard: HANG_GUARD seconds."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        deadline = time.monotonic() + HANG_GUARD
        ch = conn.channel()
        while True:
            try:
                if ch.queue_declare(queue, passive=True).method.consumer_count == n:
                    return
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 404, e
                ch = conn.channel()
            assert time.monotonic() < deadline, f"{queue} never had {n} consumer(s)"
            time.sleep(0.01)
    finally:
        conn.close()


def records_command(path):
    """amqp-consume command appending each body, then a NUL, to `path`."""
    return ["sh", "-c", 'cat >> "$0" && printf "\\0" >> "$0"', str(path)]


def records(path):
    """The bodies that records_command wrote to `path`."""
    return path.read_text().split("\0")[:-1]


# ---------------------------------------------------------------------------------------------
# Hello world
# ---------------------------------------------------------------------------------------------


def test_hello_world_publish_get(amqp_url):
    q = uniq("hello")
    assert tool(amqp_url, "declare-queue", "--queue", q).stdout.strip() == q
    publish(amqp_url, q, "Hello World!")
    assert get(amqp_url, q) == "Hello World!"
    assert get(amqp_url, q) is None  # amqp-get exits 2 on an empty queue
    assert tool(amqp_url, "delete-queue", "--queue", q).stdout.strip() == "0"


def test_hello_world_server_named_queue(amqp_url):
    name = tool(amqp_url, "declare-queue", "--queue", "").stdout.strip()
    assert name.startswith("amq.gen-"), name
    publish(amqp_url, name, "to a server-named queue")
    assert get(amqp_url, name) == "to a server-named queue"
    tool(amqp_url, "delete-queue", "--queue", name)


def test_hello_world_line_buffered_bulk_publish_and_consume(amqp_url, tmp_path):
    q = uniq("bulk")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        lines = [f"line {i}" for i in range(200)]
        tool(amqp_url, "publish", "--routing-key", q, "--line-buffered",
             stdin="\n".join(lines) + "\n")
        out = tmp_path / "out"
        Consumer(amqp_url, "--queue", q, "--count", "200", "--prefetch-count", "50",
                 command=records_command(out)).finish()
        # One message per line, the newline included.
        assert records(out) == [line + "\n" for line in lines]
        assert get(amqp_url, q) is None  # all 200 were acked
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


def test_hello_world_properties_written_by_rabbitmq_c(amqp_url, admin):
    q = uniq("props")
    tool(amqp_url, "declare-queue", "--queue", q, "--durable")
    try:
        tool(amqp_url, "publish", "--routing-key", q, "--body", "{}", "--persistent",
             "--content-type", "application/json", "--content-encoding", "identity",
             "--reply-to", "replies", "--header", "x-a: 1", "--header", "lang: en")
        method, props, body = admin.basic_get(q, auto_ack=True)
        assert method is not None
        assert body == b"{}"
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        assert props.content_encoding == "identity"
        assert props.reply_to == "replies"
        assert props.headers == {"x-a": "1", "lang": "en"}  # long strings
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


# ---------------------------------------------------------------------------------------------
# Work queue
# ---------------------------------------------------------------------------------------------


def test_work_queue_prefetch_one_holds_back_the_next_message(amqp_url, gate, consumers):
    q = uniq("tasks")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        tool(amqp_url, "publish", "--routing-key", q, "--line-buffered", stdin="t0\nt1\nt2\n")
        worker = Consumer(amqp_url, "--queue", q, "--prefetch-count", "1", "--count", "1",
                          command=gate.command)
        consumers.append(worker)
        body, held = gate.next()
        assert body == "t0\n"
        # While t0 is unacked, prefetch 1 keeps t1 in the queue: another client gets it.
        assert get(amqp_url, q) == "t1\n"
        gate.release(held, ack=True)
        worker.finish()
        assert get(amqp_url, q) == "t2\n"
        assert get(amqp_url, q) is None  # t0 was acked, not requeued
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


def test_work_queue_two_consumers_share_and_ack(amqp_url, admin, gate, consumers):
    q = uniq("tasks")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        a = Consumer(amqp_url, "--queue", q, "--prefetch-count", "1", "--count", "2",
                     command=gate.command)
        consumers.append(a)
        b = Consumer(amqp_url, "--queue", q, "--prefetch-count", "1", "--count", "2",
                     command=gate.command)
        consumers.append(b)
        wait_consumers(amqp_url, q, 2)
        tool(amqp_url, "publish", "--routing-key", q, "--line-buffered",
             stdin="t0\nt1\nt2\nt3\n")
        # Both consumers hold one task each (prefetch 1): the first two tasks, one apiece.
        first, held1 = gate.next()
        second, held2 = gate.next()
        assert {first, second} == {"t0\n", "t1\n"}
        assert admin.queue_declare(q, passive=True).method.message_count == 2
        seen = [first, second]
        for held in (held1, held2):
            gate.release(held)
        for _ in range(2):
            body, held = gate.next()
            seen.append(body)
            gate.release(held)
        a.finish()
        b.finish()
        assert sorted(seen) == ["t0\n", "t1\n", "t2\n", "t3\n"]
        assert get(amqp_url, q) is None  # every task acked exactly once
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


def test_work_queue_failed_command_is_not_acked_and_requeued(amqp_url, admin, gate, consumers):
    q = uniq("tasks")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        publish(amqp_url, q, "fragile")
        worker = Consumer(amqp_url, "--queue", q, "--count", "1", command=gate.command)
        consumers.append(worker)
        body, held = gate.next()
        assert body == "fragile"
        gate.release(held, ack=False)  # the command fails: no ack, then the connection closes
        worker.finish()
        method, _props, body = admin.basic_get(q, auto_ack=True)
        assert body == b"fragile"
        assert method.redelivered is True
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


# ---------------------------------------------------------------------------------------------
# Exchanges (declared with pika; bound, published to and consumed from with rabbitmq-c)
# ---------------------------------------------------------------------------------------------


def routed(amqp_url, admin, tmp_path, consumers, ex_type, bindings, published, expected):
    """Binds one amqp-consume queue per entry of `bindings` (comma-separated keys) to a new
    exchange, publishes `published` routing keys (body = key) with amqp-publish, and
    returns each queue's received bodies, sorted, once it has got its `expected` count."""
    ex = uniq(ex_type)
    admin.exchange_declare(ex, ex_type)
    try:
        procs = []
        for i, (keys, count) in enumerate(zip(bindings, expected)):
            q, out = uniq(f"{ex_type}{i}"), tmp_path / f"out{i}"
            c = Consumer(amqp_url, "--queue", q, "--exchange", ex, "--routing-key", keys,
                         "--count", str(count), command=records_command(out))
            consumers.append(c)
            wait_consumers(amqp_url, q, 1)
            procs.append((c, out))
        for key in published:
            publish(amqp_url, key, key or "<empty>", exchange=ex)
        results = []
        for c, out in procs:
            c.finish()
            results.append(sorted(records(out)))
        return results
    finally:
        admin.exchange_delete(ex)


def test_fanout_every_bound_queue_gets_every_message(amqp_url, admin, tmp_path, consumers):
    keys = ["a", "b.c", "ignored", "last"]
    got = routed(amqp_url, admin, tmp_path, consumers, "fanout", ["x", "y"], keys, [4, 4])
    assert got == [sorted(keys), sorted(keys)]


def test_direct_routing_by_key(amqp_url, admin, tmp_path, consumers):
    # Non-matching keys are published before the last matching one: a misrouted message
    # would take the place of an expected one in the consumer's fixed count.
    keys = ["info", "debug", "ERROR", "warning", "error"]
    got = routed(amqp_url, admin, tmp_path, consumers, "direct",
                 ["error", "info,warning,error"], keys, [1, 3])
    assert got == [["error"], ["error", "info", "warning"]]


def test_topic_star_and_hash(amqp_url, admin, tmp_path, consumers):
    keys = ["quick.brown.fox", "quick.orange.male.rabbit", "orange", "quick.orange.fox",
            "lazy.brown.fox", "lazy", "quick.orange.rabbit"]
    got = routed(amqp_url, admin, tmp_path, consumers, "topic",
                 ["*.orange.*", "*.*.rabbit,lazy.#"], keys, [2, 3])
    assert got == [["quick.orange.fox", "quick.orange.rabbit"],
                   ["lazy", "lazy.brown.fox", "quick.orange.rabbit"]]


# ---------------------------------------------------------------------------------------------
# Request/reply
# ---------------------------------------------------------------------------------------------


def test_rpc_request_reply_over_named_queues(amqp_url, consumers):
    requests, replies = uniq("rpc"), uniq("replies")
    for q in (requests, replies):
        tool(amqp_url, "declare-queue", "--queue", q)
    try:
        # The server: for one request, publish the square of the number to the reply queue.
        server = Consumer(
            amqp_url, "--queue", requests, "--count", "1",
            command=["sh", "-c", 'n=$(cat) && amqp-publish --url "$0" --routing-key "$1" '
                                 '--body "$((n * n))"', amqp_url, replies])
        consumers.append(server)
        publish(amqp_url, requests, "12", "--reply-to", replies)
        client = Consumer(amqp_url, "--queue", replies, "--count", "1", command=["cat"])
        consumers.append(client)
        assert client.finish() == "144"
        server.finish()
    finally:
        for q in (requests, replies):
            tool(amqp_url, "delete-queue", "--queue", q)


# ---------------------------------------------------------------------------------------------
# Errors, as rabbitmq-c reports them
# ---------------------------------------------------------------------------------------------


def test_errors_404_get_missing_queue(amqp_url):
    q = uniq("missing")
    proc = tool(amqp_url, "get", "--queue", q, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"basic.get: server channel error 404, message: NOT_FOUND - no queue '{q}' in vhost '/'")


def test_errors_404_consume_missing_queue(amqp_url):
    q = uniq("missing")
    proc = subprocess.run(["amqp-consume", "--url", amqp_url, "--queue", q, "cat"],
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"basic.consume: server channel error 404, message: NOT_FOUND - no queue '{q}' in "
        f"vhost '/'")


def test_errors_404_publish_to_missing_exchange(amqp_url):
    ex = uniq("missing")
    # basic.publish has no reply: the channel.close arrives as the answer to the client's own
    # channel.close.
    proc = tool(amqp_url, "publish", "--exchange", ex, "--routing-key", "k", "--body", "x",
                check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"closing channel: server channel error 404, message: NOT_FOUND - no exchange '{ex}' "
        f"in vhost '/'")


def test_errors_406_redeclare_durable(amqp_url):
    q = uniq("q")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        proc = tool(amqp_url, "declare-queue", "--queue", q, "--durable", check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"queue.declare: server channel error 406, message: PRECONDITION_FAILED - "
            f"inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but "
            f"current is 'false'")
    finally:
        tool(amqp_url, "delete-queue", "--queue", q)


def test_errors_406_delete_if_empty_and_if_unused(amqp_url, gate, consumers):
    q = uniq("q")
    tool(amqp_url, "declare-queue", "--queue", q)
    try:
        publish(amqp_url, q, "m1")
        publish(amqp_url, q, "m2")
        proc = tool(amqp_url, "delete-queue", "--queue", q, "--if-empty", check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"queue.delete: server channel error 406, message: PRECONDITION_FAILED - queue "
            f"'{q}' in vhost '/' not empty")
        worker = Consumer(amqp_url, "--queue", q, "--prefetch-count", "1", "--count", "1",
                          command=gate.command)
        consumers.append(worker)
        body, held = gate.next()  # a consumer is attached now
        assert body == "m1"
        proc = tool(amqp_url, "delete-queue", "--queue", q, "--if-unused", check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (
            f"queue.delete: server channel error 406, message: PRECONDITION_FAILED - queue "
            f"'{q}' in vhost '/' in use")
        gate.release(held)
        worker.finish()
        # Unused and holding m2 only: a plain delete reports the one message it dropped.
        assert tool(amqp_url, "delete-queue", "--queue", q, "--if-unused").stdout.strip() == "1"
    finally:
        tool(amqp_url, "delete-queue", "--queue", q, check=False)


def test_errors_403_reserved_queue_name(amqp_url):
    proc = tool(amqp_url, "declare-queue", "--queue", "amq.conf-c", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "queue.declare: server channel error 403, message: ACCESS_REFUSED - queue name "
        "'amq.conf-c' contains reserved prefix 'amq.*'")


# ---------------------------------------------------------------------------------------------
# Connection
# ---------------------------------------------------------------------------------------------


def test_connection_refused_login(amqp_url):
    bad = amqp_url.replace("guest:guest@", "guest:wrong@", 1)
    proc = tool(bad, "get", "--queue", "any", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "logging in to AMQP server: server connection error 403, message: ACCESS_REFUSED - "
        "Login was refused using authentication mechanism PLAIN. For details see the broker "
        "logfile.")


def test_connection_unknown_vhost(amqp_url):
    url = amqp_url.rsplit("/", 1)[0] + "/conf-no-such-vhost"
    proc = tool(url, "get", "--queue", "any", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "logging in to AMQP server: server connection error 530, message: NOT_ALLOWED - vhost "
        "conf-no-such-vhost not found")


def test_connection_heartbeat_option_and_clean_close(amqp_url):
    q = uniq("hb")
    tool(amqp_url, "declare-queue", "--queue", q, "--heartbeat", "5")
    publish(amqp_url, q, "hb", "--heartbeat", "1")
    assert tool(amqp_url, "get", "--queue", q, "--heartbeat", "2").stdout == "hb"
    # Every tool closed its connection cleanly (exit 0 includes connection.close-ok).
    assert tool(amqp_url, "delete-queue", "--queue", q).stdout.strip() == "0"
