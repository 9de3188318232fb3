"""Message deduplication with pika, as the rabbitmq-message-deduplication plugin defines it
(its README, and its code for RabbitMQ 4.1 and later where the README is silent): the
exchange type `x-message-deduplication` and the queue argument `x-message-deduplication`.
Every test is named `test_deduplication_*` (the "deduplication" row of scripts/conformance).

Lepus only: Debian's RabbitMQ 3.10.8 has no such plugin, so this file is run by the
`lepus-features` suite, which `--against rabbitmq` skips.

Waiting is on broker events (a publisher confirm, a basic.return, basic.get answers);
nothing here sleeps.
"""
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError


def uniq(prefix):
    return f"conf.dedup.{prefix}.{uuid.uuid4().hex[:12]}"


def keyed(key, **headers):
    return pika.BasicProperties(headers={"x-deduplication-header": key, **headers})


def drain(ch, queue):
    bodies = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def dedup_exchange(ch, arguments):
    exchange, queue = uniq("x"), uniq("q")
    ch.exchange_declare(exchange, "x-message-deduplication", auto_delete=True, arguments=arguments)
    ch.queue_declare(queue, exclusive=True)
    ch.queue_bind(queue, exchange, "any-key")
    return exchange, queue


def test_deduplication_exchange_routes_as_fanout_and_drops_duplicates(ch):
    ch.confirm_delivery()
    exchange, queue = dedup_exchange(ch, {"x-cache-size": 10})
    ch.basic_publish(exchange, "other-key", b"first", keyed("a"))
    ch.basic_publish(exchange, "k", b"duplicate", keyed("a"))  # acked: no exception
    with pytest.raises(UnroutableError) as returned:
        ch.basic_publish(exchange, "k", b"returned", keyed("a"), mandatory=True)
    (message,) = returned.value.messages
    assert (message.method.reply_code, message.method.reply_text) == (312, "NO_ROUTE")
    ch.basic_publish(exchange, "k", b"plain", pika.BasicProperties(headers={"other": 1}))
    ch.basic_publish(exchange, "k", b"plain again")
    ch.basic_publish(exchange, "k", b"integer key", keyed(7))
    ch.basic_publish(exchange, "k", b"integer duplicate", keyed(7))
    assert drain(ch, queue) == [b"first", b"plain", b"plain again", b"integer key"]


def test_deduplication_exchange_cache_size_evicts_the_oldest(ch):
    exchange, queue = dedup_exchange(ch, {"x-cache-size": "2"})  # a string of digits counts
    for key in ["a", "b", "c", "b", "a"]:
        ch.basic_publish(exchange, "", key.encode(), keyed(key))
    assert drain(ch, queue) == [b"a", b"b", b"c", b"a"]


def test_deduplication_exchange_message_ttl_zero_keeps_nothing(ch):
    exchange, queue = dedup_exchange(ch, {"x-cache-size": 5, "x-cache-ttl": 600000})
    ch.basic_publish(exchange, "", b"1", keyed("a", **{"x-cache-ttl": 0}))
    ch.basic_publish(exchange, "", b"2", keyed("a"))
    ch.basic_publish(exchange, "", b"3", keyed("a"))
    assert drain(ch, queue) == [b"1", b"2"]


@pytest.mark.parametrize("arguments,text", [
    ({}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 0}, "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"),
    ({"x-cache-size": 1, "x-cache-ttl": "soon"}, "Invalid argument, 'x-cache-ttl' must be an integer greater than 0"),
    ({"x-cache-size": 1, "x-cache-persistence": "tape"},
     "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'"),
])
def test_deduplication_exchange_declare_errors(conn, arguments, text):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as closed:
        ch.exchange_declare(uniq("bad"), "x-message-deduplication", arguments=arguments)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == f"PRECONDITION_FAILED - {text}"
    assert conn.is_open


def test_deduplication_queue_nacks_a_duplicate_while_the_first_is_in_it(ch):
    ch.confirm_delivery()
    queue = uniq("q")
    ch.queue_declare(queue, exclusive=True, arguments={"x-message-deduplication": True})
    ch.basic_publish("", queue, b"first", keyed("a"))
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"duplicate", keyed("a"), mandatory=True)
    method, _props, body = ch.basic_get(queue)
    assert body == b"first"
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"while unacked", keyed("a"))
    ch.basic_ack(method.delivery_tag)
    ch.basic_publish("", queue, b"after the ack", keyed("a"))
    assert drain(ch, queue) == [b"after the ack"]


def test_deduplication_queue_dead_letters_a_duplicate_as_maxlen(ch):
    ch.confirm_delivery()
    dlx, dead, queue = uniq("dlx"), uniq("dead"), uniq("q")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, dlx)
    ch.queue_declare(queue, exclusive=True,
                     arguments={"x-message-deduplication": True, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", queue, b"first", keyed("a"))
    with pytest.raises(NackError):
        ch.basic_publish("", queue, b"duplicate", keyed("a"))
    method, props, body = ch.basic_get(dead, auto_ack=True)
    assert body == b"duplicate"
    assert props.headers["x-death"][0]["reason"] == "maxlen"
