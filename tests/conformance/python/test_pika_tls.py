"""AMQP over TLS (amqps) with pika: PLAIN over TLS, SASL EXTERNAL with a client certificate
whose CN names the user (`guest`), refused with 403 for a certificate naming no user, and
EXTERNAL offered in connection.start over TLS.

Needs the runner's TLS setup: scripts/conformance makes the certificates (AMQP_TLS_DIR) and
starts the broker, Lepus or RabbitMQ, with a TLS listener on AMQPS_PORT that verifies client
certificates (not required) and offers EXTERNAL.
"""
import os
import socket
import ssl
import struct

import pika
import pytest

PORT = os.environ.get("AMQPS_PORT")
DIR = os.environ.get("AMQP_TLS_DIR")
pytestmark = pytest.mark.skipif(not PORT, reason="no TLS listener (scripts/conformance sets AMQPS_PORT)")


def context(client=None):
    ctx = ssl.create_default_context(cafile=f"{DIR}/ca.pem")
    if client:
        ctx.load_cert_chain(f"{DIR}/{client}.pem", f"{DIR}/{client}.key")
    return ctx


def connect(client=None, credentials=None):
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=int(PORT), ssl_options=pika.SSLOptions(context(client), "localhost"),
        credentials=credentials or pika.PlainCredentials("guest", "guest"))
    return pika.BlockingConnection(params)


def round_trip(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", queue, b"over tls")
    _method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"over tls"


def test_tls_plain_login_without_a_client_certificate():
    conn = connect()
    try:
        round_trip(conn)
    finally:
        conn.close()


def test_tls_external_login_with_a_client_certificate():
    conn = connect("guest", pika.credentials.ExternalCredentials())
    try:
        round_trip(conn)
    finally:
        conn.close()


def test_tls_external_refused_for_a_certificate_naming_no_user():
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        connect("stranger", pika.credentials.ExternalCredentials())
    assert "403" in str(refused.value) or "ACCESS_REFUSED" in str(refused.value), refused.value


def test_tls_connection_start_offers_external():
    raw = socket.create_connection(("127.0.0.1", int(PORT)), timeout=10)
    with context("guest").wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        data = b""
        while len(data) < 7 or len(data) < 8 + struct.unpack(">I", data[3:7])[0]:
            chunk = s.recv(4096)
            assert chunk, "connection closed before connection.start"
            data += chunk
    payload = data[7:]
    class_id, method_id = struct.unpack(">HH", payload[:4])
    assert (class_id, method_id) == (10, 10)
    table_len = struct.unpack(">I", payload[6:10])[0]
    at = 10 + table_len
    mechanisms_len = struct.unpack(">I", payload[at:at + 4])[0]
    mechanisms = payload[at + 4:at + 4 + mechanisms_len].decode().split()
    assert {"PLAIN", "AMQPLAIN", "EXTERNAL"} <= set(mechanisms), mechanisms
