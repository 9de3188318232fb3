"""Fixtures for the Python conformance tests.

The broker under test is `AMQP_URL` when set (e.g. RabbitMQ on another port); otherwise a
fresh `lepus` binary (`LEPUS_BIN`, default target/debug/lepus) on an ephemeral loopback port.
"""
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pika
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def amqp_url():
    url = os.environ.get("AMQP_URL")
    if url:
        yield url
        return
    binary = os.environ.get("LEPUS_BIN", str(ROOT / "target" / "debug" / "lepus"))
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen(
            [binary, "--bind-address", "127.0.0.1", "--port", "0", "--management-port", "0", "--prometheus-port", "0",
             "--data-dir", data_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "LEPUS_LOG": "info", "RUST_LOG": "info"},
        )
        port = None
        for line in proc.stdout:
            match = re.search(r"accepting AMQP 0-9-1 connections address=\S+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "lepus did not report its listening address"
        yield f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.fixture
def connect(amqp_url):
    """Opens blocking pika connections to the broker under test; closes them afterwards."""
    conns = []

    def _connect():
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        conns.append(conn)
        return conn

    yield _connect
    for conn in conns:
        if conn.is_open:
            conn.close()


@pytest.fixture
def conn(connect):
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()
