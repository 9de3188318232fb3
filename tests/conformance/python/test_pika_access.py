"""Permissions, vhosts and limits through pika, set up through the management HTTP API
(`MANAGEMENT_URL`, e.g. http://127.0.0.1:15672) on whichever broker is under test: every case passes
against RabbitMQ 3.10.8 and Lepus with the same reply codes and texts."""
import os
import urllib.parse
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAccessDeniedError

import management_api

pytestmark = pytest.mark.skipif(not os.environ.get("MANAGEMENT_URL"), reason="needs MANAGEMENT_URL (a management API)")

def api(method, path, body=None):
    """One management API call as guest; returns the HTTP status."""
    return management_api.call(method, path, body)[0]


q = management_api.quote


@pytest.fixture
def world(amqp_url):
    """A fresh vhost, guest with every permission in it, and a user with RabbitMQ-probed
    patterns; all deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    vhost, user = f"perm-{tag}", f"bob-{tag}"
    assert api("PUT", f"/vhosts/{q(vhost)}") in (201, 204)
    assert api("PUT", f"/permissions/{q(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"}) in (201, 204)
    assert api("PUT", f"/users/{q(user)}", {"password": "pw", "tags": ""}) in (201, 204)
    perms = {"configure": "^bob-", "write": "^bob-|amq.default", "read": "^bob-"}
    assert api("PUT", f"/permissions/{q(vhost)}/{q(user)}", perms) in (201, 204)
    parsed = urllib.parse.urlparse(amqp_url)
    host, port = parsed.hostname, parsed.port
    conns = []

    def connect(who=user, password="pw", vh=vhost):
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host, port, vh, pika.PlainCredentials(who, password), connection_attempts=1))
        conns.append(conn)
        return conn

    yield {"vhost": vhost, "user": user, "connect": connect,
           "guest": lambda: connect("guest", "guest")}
    for conn in conns:
        if conn.is_open:
            try:
                conn.close()
            except Exception:
                pass
    api("DELETE", f"/users/{q(user)}")
    api("DELETE", f"/vhosts/{q(vhost)}")


def refused(world, kind, name):
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{world['vhost']}' refused for user '{world['user']}'"


def expect_channel_403(world, op, kind, name):
    ch = world["connect"]().channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        op(ch)
    assert (e.value.reply_code, e.value.reply_text) == (403, refused(world, kind, name))


def test_declare_delete_purge_consume_get_need_their_permissions(world):
    admin = world["guest"]().channel()
    admin.queue_declare("q1", auto_delete=True)
    ch = world["connect"]().channel()
    assert ch.queue_declare("bob-q", auto_delete=True).method.queue == "bob-q"
    assert ch.queue_declare("q1", passive=True).method.queue == "q1"  # passive: no check
    expect_channel_403(world, lambda c: c.queue_declare("q1"), "queue", "q1")
    expect_channel_403(world, lambda c: c.exchange_declare("x1", "direct"), "exchange", "x1")
    expect_channel_403(world, lambda c: c.basic_consume("q1", lambda *a: None), "queue", "q1")
    expect_channel_403(world, lambda c: c.basic_get("q1"), "queue", "q1")
    expect_channel_403(world, lambda c: c.queue_purge("q1"), "queue", "q1")
    expect_channel_403(world, lambda c: c.queue_delete("q1"), "queue", "q1")
    expect_channel_403(world, lambda c: c.exchange_delete("zzz"), "exchange", "zzz")


def test_server_named_queues_need_configure_on_their_generated_name(world):
    ch = world["connect"]().channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("")
    assert e.value.reply_code == 403
    assert e.value.reply_text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-")


def test_publish_needs_write_and_the_default_exchange_is_amq_default(world):
    ch = world["connect"]().channel()
    ch.confirm_delivery()
    ch.basic_publish("", "bob-anything", b"x")
    expect_channel_403(world, lambda c: (c.confirm_delivery(), c.basic_publish("amq.direct", "k", b"x")),
                       "exchange", "amq.direct")


def test_bindings_need_write_on_the_destination_then_read_on_the_source(world):
    world["guest"]().channel().queue_declare("q1", auto_delete=True)
    expect_channel_403(world, lambda c: c.queue_bind("q1", "amq.direct", "k"), "queue", "q1")
    expect_channel_403(world, lambda c: (c.queue_declare("bob-b", auto_delete=True),
                                         c.queue_bind("bob-b", "amq.direct", "k")), "exchange", "amq.direct")


def test_dead_letter_and_alternate_exchanges_need_write(world):
    expect_channel_403(world, lambda c: c.queue_declare("bob-dl", arguments={"x-dead-letter-exchange": "amq.fanout"}),
                       "exchange", "amq.fanout")
    expect_channel_403(world, lambda c: c.exchange_declare("bob-x", "direct",
                                                           arguments={"alternate-exchange": "amq.fanout"}),
                       "exchange", "amq.fanout")


def test_topic_permissions_check_routing_keys(world):
    vhost, user = world["vhost"], world["user"]
    assert api("PUT", f"/permissions/{q(vhost)}/{q(user)}", {"configure": "^bob-", "write": ".*", "read": ".*"}) in (201, 204)
    topic = {"exchange": "amq.topic", "write": "^{username}\\.", "read": "^r\\."}
    assert api("PUT", f"/topic-permissions/{q(vhost)}/{q(user)}", topic) in (201, 204)
    ch = world["connect"]().channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.topic", f"{user}.x", b"x")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_publish("amq.topic", "alice.x", b"x")
    assert (e.value.reply_code, e.value.reply_text) == (
        403, f"ACCESS_REFUSED - access to topic 'alice.x' in exchange 'amq.topic' in vhost '{vhost}' refused for user '{user}'")
    ch = world["connect"]().channel()
    ch.queue_declare("bob-t", auto_delete=True)
    ch.queue_bind("bob-t", "amq.topic", "r.x")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_bind("bob-t", "amq.topic", "s.x")
    assert e.value.reply_code == 403


def test_a_vhost_without_permissions_or_missing_is_refused_with_530(world):
    with pytest.raises(ProbableAccessDeniedError) as e:
        world["connect"](vh="/")
    assert "530" in str(e.value)
    assert f"access to vhost '/' refused for user '{world['user']}'" in str(e.value)
    with pytest.raises(ProbableAccessDeniedError) as e:
        world["connect"](vh="no-such-vhost-" + uuid.uuid4().hex[:6])
    assert "not found" in str(e.value)


def test_clearing_permissions_applies_to_the_next_operation(world):
    ch = world["connect"]().channel()
    ch.queue_declare("bob-p1", auto_delete=True)
    assert api("DELETE", f"/permissions/{q(world['vhost'])}/{q(world['user'])}") == 204
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("bob-p2", auto_delete=True)
    assert (e.value.reply_code, e.value.reply_text) == (403, refused(world, "queue", "bob-p2"))


def test_vhost_limits(world):
    vhost = world["vhost"]
    assert api("PUT", f"/vhost-limits/{q(vhost)}/max-queues", {"value": 1}) == 204
    ch = world["guest"]().channel()
    ch.queue_declare("only", auto_delete=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("two", auto_delete=True)
    assert (e.value.reply_code, e.value.reply_text) == (
        406, f"PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost '{vhost}' (1) is reached")
    assert api("PUT", f"/vhost-limits/{q(vhost)}/max-connections", {"value": 1}) == 204
    with pytest.raises(ProbableAccessDeniedError) as e:
        world["guest"]()
    assert f"access to vhost '{vhost}' refused for user 'guest': connection limit (1) is reached" in str(e.value)


def test_deleting_the_vhost_closes_its_connections_with_320(world):
    conn = world["guest"]()
    assert api("DELETE", f"/vhosts/{q(world['vhost'])}") == 204
    with pytest.raises(ConnectionClosedByBroker) as e:
        for _ in range(200):  # bounded: the close arrives within a few polls
            conn.process_data_events(time_limit=0.1)
    # RabbitMQ races two closers: the vhost's deletion ("is deleted", what Lepus sends) and
    # its supervisor stopping ("is down"); either arrives first.
    assert e.value.reply_code == 320
    assert e.value.reply_text in (f"CONNECTION_FORCED - vhost '{world['vhost']}' is deleted",
                                  f"CONNECTION_FORCED - vhost '{world['vhost']}' is down")


def test_deleting_the_user_closes_its_connections_with_320(world):
    conn = world["connect"]()
    assert api("DELETE", f"/users/{q(world['user'])}") == 204
    with pytest.raises(ConnectionClosedByBroker) as e:
        for _ in range(200):
            conn.process_data_events(time_limit=0.1)
    assert (e.value.reply_code, e.value.reply_text) == (320, f"CONNECTION_FORCED - user '{world['user']}' is deleted")
