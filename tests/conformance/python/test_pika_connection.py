"""pika (blocking and select connections) connects, opens channels and closes cleanly."""
import pika


def params(url, **kw):
    p = pika.URLParameters(url)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_blocking_connection_open_channel_close(amqp_url):
    conn = pika.BlockingConnection(params(amqp_url))
    assert conn.is_open
    props = conn._impl.server_properties
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "authentication_failure_close"):
        assert caps[cap] is True, cap
    channels = [conn.channel() for _ in range(5)]
    assert all(ch.is_open for ch in channels)
    for ch in channels:
        ch.close()
        assert ch.is_closed
    conn.close()
    assert conn.is_closed


def test_blocking_connection_negotiates_heartbeat_and_frame_max(amqp_url):
    conn = pika.BlockingConnection(params(amqp_url, heartbeat=30, frame_max=65536))
    assert conn._impl.params.heartbeat == 30
    assert conn._impl.params.frame_max == 65536
    conn.close()


def test_wrong_password_is_refused(amqp_url):
    bad = amqp_url.replace("guest:guest", "guest:wrong")
    try:
        pika.BlockingConnection(params(bad, connection_attempts=1))
    except pika.exceptions.ProbableAuthenticationError:
        pass
    else:
        raise AssertionError("login with a wrong password succeeded")


def test_select_connection_open_and_close(amqp_url):
    events = []

    def on_open(conn):
        events.append("open")
        conn.channel(on_open_callback=lambda ch: on_channel(conn, ch))

    def on_channel(conn, ch):
        events.append("channel")
        ch.close()
        conn.close()

    def on_closed(conn, reason):
        events.append("closed")
        conn.ioloop.stop()

    conn = pika.SelectConnection(params(amqp_url), on_open_callback=on_open, on_close_callback=on_closed)
    conn.ioloop.call_later(20, conn.ioloop.stop)  # hang guard only
    conn.ioloop.start()
    assert events == ["open", "channel", "closed"]
