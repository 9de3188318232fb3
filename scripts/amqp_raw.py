"""A minimal AMQP 0-9-1 client over a raw socket, and a broker starter, for the reliability scripts
(scripts/memory-test, scripts/reliability-probes): it can stop reading, leave a message half
sent, or open consumers by the thousand, which real client libraries will not do."""

import os
import socket
import subprocess
import struct
import threading
import time

FRAME_END = b"\xce"


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def table(entries):
    body = b""
    for key, (kind, value) in entries.items():
        body += shortstr(key) + kind.encode()
        if kind == "t":
            body += struct.pack(">B", 1 if value else 0)
        elif kind == "F":
            body += table(value)
        elif kind == "S":
            body += longstr(value.encode())
    return longstr(body)


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Client:
    """One connection with channel 1 open. `read_in_background` starts a reader thread that
    notes connection.blocked/unblocked; without it nothing is read after the handshake."""

    def __init__(self, port, name, user="guest", password="guest"):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.name = name
        self.publishing = False
        self.blocked_at = None
        self.unblocked_at = None
        self.sent_bytes = 0
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # connection.start
        caps = {"connection.blocked": ("t", True), "publisher_confirms": ("t", True)}
        props = {"product": ("S", "lepus memory-test"), "capabilities": ("F", caps)}
        self.send(method(0, 10, 11, table(props) + shortstr("PLAIN") + longstr(f"\0{user}\0{password}".encode()) + shortstr("en_US")))
        tune = self.expect(10, 30)
        channel_max, self.frame_max, _ = struct.unpack(">HIH", tune[:8])
        self.send(method(0, 10, 31, struct.pack(">HIH", channel_max, self.frame_max, 0)))
        self.send(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        self.expect(10, 41)
        self.send(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)

    def send(self, data):
        self.sock.sendall(data)
        self.sent_bytes += len(data)

    def read_frame(self):
        while True:
            if len(self.buf) >= 7:
                kind, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7 : 7 + size]
                    self.buf = self.buf[8 + size :]
                    return kind, channel, payload
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{self.name}: connection closed")
            self.buf += chunk

    def expect(self, class_id, method_id):
        while True:
            kind, _, payload = self.read_frame()
            if kind != 1:
                continue
            got = struct.unpack(">HH", payload[:4])
            if got == (class_id, method_id):
                return payload[4:]
            if got in ((10, 50), (20, 40)):
                raise ConnectionError(f"{self.name}: closed by the broker: {payload[4:80]!r}")

    def read_in_background(self):
        self.publishing = True
        def run():
            try:
                while True:
                    kind, _, payload = self.read_frame()
                    if kind == 1 and payload[:4] == struct.pack(">HH", 10, 60) and self.blocked_at is None:
                        self.blocked_at = time.monotonic()
                    if kind == 1 and payload[:4] == struct.pack(">HH", 10, 61):
                        self.unblocked_at = time.monotonic()
            except (OSError, ConnectionError):
                pass

        threading.Thread(target=run, daemon=True).start()

    def declare(self, queue, durable=False, args=None):
        flags = 0b10 if durable else 0
        self.send(method(1, 50, 10, struct.pack(">H", 0) + shortstr(queue) + bytes([flags]) + table(args or {})))
        self.expect(50, 11)

    def consume(self, queue, no_ack, nowait=False):
        flags = (0b10 if no_ack else 0) | (0b1000 if nowait else 0)
        self.send(method(1, 60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr("") + bytes([flags]) + table({})))
        if not nowait:
            self.expect(60, 21)

    def qos(self, prefetch_count=0):
        """basic.qos and its -ok: a round trip through everything sent on channel 1 before."""
        self.send(method(1, 60, 10, struct.pack(">IHB", 0, prefetch_count, 0)))
        self.expect(60, 11)

    def close_channel(self):
        self.send(method(1, 20, 40, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0)))
        self.expect(20, 41)

    def tx_select(self):
        self.send(method(1, 90, 10))
        self.expect(90, 11)

    def message(self, queue, body, persistent=False, body_size=None):
        """The frames of one publish to `queue` through the default exchange; `body_size` may
        announce more than `body` (an unfinished message)."""
        size = len(body) if body_size is None else body_size
        out = method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr(queue) + b"\x00")
        flags, props = (0x1000, b"\x02") if persistent else (0, b"")
        out += frame(2, 1, struct.pack(">HHQH", 60, 0, size, flags) + props)
        step = self.frame_max - 8
        for at in range(0, len(body), step):
            out += frame(3, 1, body[at : at + step])
        return out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def start_broker(binary, work, config, preexec=None):
    """Starts `binary` on an ephemeral loopback port with its data directory in `work`; returns
    the process, its port and its log's path."""
    log_path = os.path.join(work, "broker.log")
    log = open(log_path, "w")
    args = [binary, "--config", config, "--bind-address", "127.0.0.1", "--port", "0"]
    args += ["--management-port", "0", "--prometheus-port", "0", "--data-dir", os.path.join(work, "data")]
    env = dict(os.environ, LEPUS_LOG="info")
    broker = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
    marker = "accepting AMQP 0-9-1 connections address="
    for _ in range(400):
        text = open(log_path).read()
        if marker in text:
            address = text.split(marker, 1)[1].split()[0]
            return broker, int(address.rsplit(":", 1)[1]), log_path
        if broker.poll() is not None:
            raise RuntimeError(f"the broker exited at start; see {log_path}")
        time.sleep(0.05)
    broker.kill()
    raise RuntimeError("the broker did not report its port")


def release_binary():
    """LEPUS_BIN, or target/release/lepus built now (under nice)."""
    binary = os.environ.get("LEPUS_BIN")
    if binary:
        return binary
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "--quiet", "--bin", "lepus"], cwd=root, check=True)
    return os.path.join(root, "target", "release", "lepus")
