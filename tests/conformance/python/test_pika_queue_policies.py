"""Policies and operator policies set through the management HTTP API (`MANAGEMENT_URL`), with
pika checking what they do to queues: a policy's message-ttl, max-length and
dead-letter-exchange applied to a queue that already exists, the lower of argument and policy
for max-length, the higher priority policy alone applying, clearing a policy reverting to the
arguments, and an operator policy capping both. Every test is named `test_queue_features_*`
(the "queue-features" row of scripts/conformance) and passes against RabbitMQ 3.10.8.

A policy is applied to its queues before the HTTP call that sets it returns (RabbitMQ: the
queue process is told before the reply, so it sees the change before a later publish), so
nothing here waits for it; waits are on broker events (a confirm, a dead letter arriving),
bounded by a hang guard. What the API's queue object says of its policies (`policy`,
`operator_policy`) is not checked here: RabbitMQ fills it from statistics emitted every few
seconds, so it lags.
"""
import os
import uuid

import pika
import pytest

import management_api

pytestmark = pytest.mark.skipif(not os.environ.get("MANAGEMENT_URL"), reason="needs MANAGEMENT_URL (a management API)")

HANG_GUARD = 10.0  # seconds; never reached when the broker behaves


def uniq(prefix):
    return f"conf.qp.{prefix}.{uuid.uuid4().hex[:12]}"


api = management_api.call
quote = management_api.quote


@pytest.fixture
def policies():
    """Sets policies (kind "policies" or "operator-policies") on vhost "/"; clears them at teardown."""
    made = []

    def set_policy(name, pattern, definition, priority=0, kind="policies"):
        body = {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": "queues"}
        status, _ = api("PUT", f"/{kind}/%2F/{quote(name)}", body)
        assert status in (201, 204), f"PUT {kind} {name}: {status}"
        made.append((kind, name))

    def clear(name, kind="policies"):
        status, _ = api("DELETE", f"/{kind}/%2F/{quote(name)}")
        assert status == 204, f"DELETE {kind} {name}: {status}"
        made.remove((kind, name))

    set_policy.clear = clear
    yield set_policy
    for kind, name in made:
        api("DELETE", f"/{kind}/%2F/{quote(name)}")


@pytest.fixture
def channel(connect):
    """A confirm-mode channel; the queues it declares with `declare` are deleted at teardown."""
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    queues = []

    def declare(name, arguments=None):
        ch.queue_declare(name, arguments=arguments)
        queues.append(name)
        return name

    ch.declare = declare
    yield ch
    cleanup = connect().channel()
    for q in queues:
        cleanup.queue_delete(q)


def publish(ch, queue, *bodies):
    for body in bodies:
        ch.basic_publish("", queue, body)  # confirmed before it returns


def count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def drain(ch, queue):
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, props))


def death_reason(props):
    return props.headers["x-death"][0]["reason"]


def test_queue_features_policy_max_length_and_dlx_apply_to_an_existing_queue(channel, policies):
    dlq = channel.declare(uniq("dead"))
    q = channel.declare(uniq("work"))
    publish(channel, q, b"m0", b"m1", b"m2")
    # The excess is dropped from the head at once, dead-lettered through the policy's DLX.
    policies(q, f"^{q}$", {"max-length": 1, "dead-letter-exchange": "", "dead-letter-routing-key": dlq})
    assert count(channel, q) == 1
    dead = drain(channel, dlq)
    assert [body for body, _ in dead] == [b"m0", b"m1"]
    assert {death_reason(props) for _, props in dead} == {"maxlen"}
    assert [body for body, _ in drain(channel, q)] == [b"m2"]


def test_queue_features_policy_message_ttl_applies_to_an_existing_queue(channel, policies):
    dlq = channel.declare(uniq("dead"))
    q = channel.declare(uniq("work"))
    policies(q, f"^{q}$", {"message-ttl": 0, "dead-letter-exchange": "", "dead-letter-routing-key": dlq})
    # Published after the policy: expires at once (no consumer), dead-lettered as expired.
    publish(channel, q, b"short-lived")
    for method, props, body in channel.consume(dlq, auto_ack=True, inactivity_timeout=HANG_GUARD):
        assert method is not None, "the expired message was not dead-lettered"
        assert (body, death_reason(props)) == (b"short-lived", "expired")
        break
    channel.cancel()
    assert count(channel, q) == 0


def test_queue_features_policy_the_lower_of_argument_and_policy_max_length_applies(channel, policies):
    q = channel.declare(uniq("work"), arguments={"x-max-length": 3})
    policies(q, f"^{q}$", {"max-length": 1})
    publish(channel, q, *[f"a{i}".encode() for i in range(5)])
    assert count(channel, q) == 1, "the policy's, lower"
    policies(q, f"^{q}$", {"max-length": 10})
    publish(channel, q, *[f"b{i}".encode() for i in range(5)])
    assert count(channel, q) == 3, "the argument's, lower"
    assert [body for body, _ in drain(channel, q)] == [b"b2", b"b3", b"b4"]


def test_queue_features_policy_of_two_matching_the_higher_priority_applies(channel, policies):
    q = channel.declare(uniq("work"))
    policies(q + ".low", f"^{q}$", {"max-length": 1}, priority=1)
    policies(q + ".high", f"^{q}", {"max-length": 3}, priority=2)
    publish(channel, q, *[f"m{i}".encode() for i in range(5)])
    assert count(channel, q) == 3, "the higher priority's limit alone, not the lower of the two"


def test_queue_features_policy_clearing_it_reverts_to_the_arguments(channel, policies):
    q = channel.declare(uniq("work"), arguments={"x-max-length": 4})
    policies(q, f"^{q}$", {"max-length": 1})
    publish(channel, q, b"a", b"b", b"c")
    assert count(channel, q) == 1
    policies.clear(q)
    publish(channel, q, b"d", b"e", b"f", b"g", b"h")
    assert count(channel, q) == 4, "the argument's limit again"
    assert [body for body, _ in drain(channel, q)] == [b"e", b"f", b"g", b"h"]


def test_queue_features_policy_an_operator_policy_caps_arguments_and_policies(channel, policies):
    q = channel.declare(uniq("work"), arguments={"x-max-length": 10})
    policies(q, f"^{q}$", {"max-length": 5})
    policies(q + ".cap", f"^{q}$", {"max-length": 2}, kind="operator-policies")
    publish(channel, q, *[f"m{i}".encode() for i in range(6)])
    assert count(channel, q) == 2, "the operator policy's, lowest"
    # The operator policy is a cap, not a floor: a lower user policy still applies.
    policies(q, f"^{q}$", {"max-length": 1})
    assert count(channel, q) == 1
    policies.clear(q + ".cap", kind="operator-policies")
    policies.clear(q)
    publish(channel, q, *[f"n{i}".encode() for i in range(12)])
    assert count(channel, q) == 10, "the argument's alone"
