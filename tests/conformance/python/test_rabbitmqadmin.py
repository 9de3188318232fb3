"""Debian's `rabbitmqadmin` (the management plugin's CLI, from the rabbitmq-server 3.10.8
package) against the broker's management HTTP API: listing, declaring, binding, publishing,
getting and deleting, as an operator would.

The API is `MANAGEMENT_URL` (http://host:port); `scripts/conformance` sets it for the broker it
starts. Each test names its objects uniquely and deletes them.
"""
import json
import os
import subprocess
import time
import uuid
from urllib.parse import urlparse

import pytest

import management_api
from management_api import eventually

RABBITMQADMIN = os.environ.get("RABBITMQADMIN", "/usr/bin/rabbitmqadmin")


@pytest.fixture(scope="module")
def admin():
    url = os.environ.get("MANAGEMENT_URL")
    if not url:
        pytest.skip("MANAGEMENT_URL is not set")
    parsed = urlparse(url)

    def run(*args, check=True):
        cmd = [RABBITMQADMIN, "-H", parsed.hostname, "-P", str(parsed.port),
               "-u", "guest", "-p", "guest", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    return run


def listed(admin, *args):
    return json.loads(admin("-f", "raw_json", *args).stdout)


def name(kind):
    return f"conformance.admin.{kind}.{uuid.uuid4().hex[:8]}"


def test_management_list_vhosts_and_users(admin):
    assert "/" in [v["name"] for v in listed(admin, "list", "vhosts")]
    users = listed(admin, "list", "users")
    guest = next(u for u in users if u["name"] == "guest")
    assert guest["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert "administrator" in guest["tags"]
    # The table format with chosen columns.
    table = admin("list", "vhosts", "name").stdout
    assert "| /    |" in table or "| / " in table


def test_management_declare_bind_publish_get_delete(admin):
    q, x = name("q"), name("x")
    assert "queue declared" in admin("declare", "queue", f"name={q}", "durable=false").stdout
    assert "exchange declared" in admin("declare", "exchange", f"name={x}", "type=topic").stdout
    assert "binding declared" in admin("declare", "binding", f"source={x}", f"destination={q}",
                                       "routing_key=orders.*").stdout
    assert q in [x["name"] for x in listed(admin, "list", "queues")]
    bindings = [b for b in listed(admin, "list", "bindings") if b["destination"] == q]
    assert {(b["source"], b["routing_key"]) for b in bindings} == {("", q), (x, "orders.*")}
    assert "Message published" in admin("publish", f"exchange={x}", "routing_key=orders.new",
                                        "payload=first").stdout
    assert "Message published" in admin("publish", f"routing_key={q}", "payload=second").stdout
    assert "NOT routed" in admin("publish", f"exchange={x}", "routing_key=other",
                                 "payload=lost").stdout
    # RabbitMQ's statistics lag behind (its collection interval); Lepus's counts do not.
    assert eventually(lambda: [i.get("messages") for i in listed(admin, "list", "queues", "name",
                                                                 "messages") if i["name"] == q] == [2])
    # A get that requeues leaves both messages; one that acks takes them.
    peeked = listed(admin, "get", f"queue={q}", "count=2")
    assert [m["payload"] for m in peeked] == ["first", "second"]
    assert peeked[0]["routing_key"] == "orders.new" and peeked[0]["exchange"] == x
    taken = listed(admin, "get", f"queue={q}", "count=5", "ackmode=ack_requeue_false")
    assert [(m["payload"], m["redelivered"]) for m in taken] == [("first", True), ("second", True)]
    assert listed(admin, "get", f"queue={q}") == []
    assert "queue deleted" in admin("delete", "queue", f"name={q}").stdout
    assert "exchange deleted" in admin("delete", "exchange", f"name={x}").stdout
    assert q not in [i["name"] for i in listed(admin, "list", "queues")]
    refused = admin("delete", "queue", f"name={q}", check=False)
    assert refused.returncode != 0 and "Not found" in refused.stderr + refused.stdout


def test_management_sorted_listing_and_overview(admin):
    names = [name("q") for _ in range(3)]
    for n in names:
        admin("declare", "queue", f"name={n}", "durable=false")
    try:
        ours = [i["name"] for i in listed(admin, "--sort", "name", "--sort-reverse", "list", "queues", "name")
                if i["name"] in names]
        assert ours == sorted(names, reverse=True)
        overview = listed(admin, "show", "overview")[0]
        assert overview["rabbitmq_version"].startswith("3.")
        assert overview["object_totals"]["queues"] >= 3
    finally:
        for n in names:
            admin("delete", "queue", f"name={n}")


def test_management_operator_policy_and_vhost_limits_as_parameters(admin):
    """`declare parameter` / `list parameters` / `delete parameter` for the components both
    brokers have: a vhost's limits and an operator policy."""
    vhost = name("vhost")
    admin("declare", "vhost", f"name={vhost}")
    try:
        admin("-V", vhost, "declare", "parameter", "component=vhost-limits", "name=limits",
              'value={"max-queues": 7}')
        policy = {"pattern": "^capped", "definition": {"max-length": 5}, "priority": 1, "apply-to": "queues"}
        admin("-V", vhost, "declare", "parameter", "component=operator_policy", "name=cap",
              f"value={json.dumps(policy)}")
        params = [p for p in listed(admin, "list", "parameters") if p["vhost"] == vhost]
        assert sorted((p["component"], p["name"]) for p in params) == [("operator_policy", "cap"),
                                                                        ("vhost-limits", "limits")]
        limits = next(p for p in params if p["component"] == "vhost-limits")
        assert limits["value"] == {"max-queues": 7}
        vhost_limits = [v for v in listed(admin, "list", "vhost_limits") if v["vhost"] == vhost]
        assert [v["value"] for v in vhost_limits] == [{"max-queues": 7}]
        shown = [p for p in listed(admin, "list", "operator_policies") if p["vhost"] == vhost]
        assert [(p["name"], p["definition"], p["priority"]) for p in shown] == [("cap", {"max-length": 5}, 1)]
        admin("-V", vhost, "delete", "parameter", "component=operator_policy", "name=cap")
        admin("-V", vhost, "delete", "parameter", "component=vhost-limits", "name=limits")
        assert [p for p in listed(admin, "list", "parameters") if p["vhost"] == vhost] == []
    finally:
        admin("delete", "vhost", f"name={vhost}", check=False)


# Debian's nagios-plugins-rabbitmq: the checks operators run against the management API.
NAGIOS_CHECKS = "/usr/bin/check_rabbitmq_overview"


def nagios(check, *args):
    url = urlparse(os.environ["MANAGEMENT_URL"])
    cmd = [f"/usr/bin/check_rabbitmq_{check}", "-H", url.hostname, "--port", str(url.port),
           "-u", "guest", "-p", "guest", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout.strip()


@pytest.fixture
def nagios_checks(admin):
    if not os.path.exists(NAGIOS_CHECKS):
        pytest.skip("nagios-plugins-rabbitmq is not installed")


def test_nagios_checks_pass(admin, nagios_checks, connect):
    """The API checks, and the node checks (server, watermark, partition) where the node is
    named `rabbit@…`: they look it up as `rabbit@<--node>`. scripts/conformance starts Lepus
    with `--node-name rabbit@localhost`; its RabbitMQ node has another name."""
    connect()  # an open connection: the connections and server checks count it (0 fails)
    queue = name("queue")
    admin("declare", "queue", f"name={queue}", "durable=false")
    checks = [("aliveness", ["--vhost", "/"]), ("overview", []), ("objects", []), ("connections", []),
              ("queue", ["--queue", queue])]
    node = listed(admin, "list", "nodes")[0]["name"]
    if node.startswith("rabbit@"):
        checks += [(check, ["--node", node.removeprefix("rabbit@")]) for check in ["server", "watermark", "partition"]]
    try:
        for check, args in checks:
            code, out = nagios(check, *args)
            assert (code, out.split(" - ")[0].split()[-1]) == (0, "OK"), f"{check}: {out}"
    finally:
        admin("delete", "queue", f"name={queue}")


def test_management_channels_and_consumers_show_numbers_tags_and_counts(admin, connect):
    """Two channels of one pika connection, one publishing with confirms, one consuming with a
    prefetch: `/api/channels/{name}` shows each one's gauges and counts, `/api/consumers` and the
    queue's `consumer_details` the consumer's tag and channel, `rabbitmqadmin list channels` and
    `list consumers` list them. RabbitMQ emits statistics every 5 s: polled, bounded."""
    conn = connect()
    publisher, consumer = conn.channel(), conn.channel()
    queue, tag = name("queue"), name("tag")
    publisher.queue_declare(queue)
    try:
        publisher.confirm_delivery()
        for _ in range(3):
            publisher.basic_publish("", queue, b"m")
        consumer.basic_qos(prefetch_count=4)
        tags = []
        consumer.basic_consume(queue, lambda _ch, method, _p, _b: tags.append(method.delivery_tag), consumer_tag=tag)
        deadline = time.monotonic() + 30
        while len(tags) < 3:
            assert time.monotonic() < deadline, "three deliveries"
            conn.process_data_events(time_limit=0.2)
        consumer.basic_ack(tags[0])
        conn.process_data_events(time_limit=0)

        def ours():
            return [c for c in management_api.call("GET", "/consumers")[1] if c["consumer_tag"] == tag]
        eventually(lambda: len(ours()) == 1)
        details = ours()[0]["channel_details"]
        conn_name = details["connection_name"]
        assert (details["number"], details["name"], details["user"]) == (2, f"{conn_name} (2)", "guest")
        assert ours()[0]["queue"] == {"name": queue, "vhost": "/"}
        assert ours()[0]["prefetch_count"] == 4

        def channel(number):
            return management_api.call("GET", "/channels/" + management_api.quote(f"{conn_name} ({number})"))[1]

        def consumed():
            c = channel(2)
            stats = c.get("message_stats", {})
            return (stats.get("deliver"), stats.get("ack"), stats.get("deliver_get"), c.get("messages_unacknowledged"),
                    c.get("consumer_count"), c.get("prefetch_count"))
        eventually(lambda: consumed() == (3, 1, 3, 2, 1, 4))
        assert [c["consumer_tag"] for c in channel(2)["consumer_details"]] == [tag]

        def published():
            c = channel(1)
            stats = c.get("message_stats", {})
            return (stats.get("publish"), stats.get("confirm"), stats.get("drop_unroutable"), c.get("confirm"))
        eventually(lambda: published() == (3, 3, 0, True))
        assert "deliver" not in channel(1)["message_stats"]
        assert "publish_details" in channel(1)["message_stats"]
        status, body = management_api.call("GET", "/channels/" + management_api.quote(f"{conn_name} (9)"))
        assert (status, body) == (404, {"error": "Object Not Found", "reason": "Not Found"})

        queue_details = management_api.call("GET", f"/queues/%2F/{management_api.quote(queue)}")[1]
        assert [c["consumer_tag"] for c in queue_details["consumer_details"]] == [tag]
        assert queue_details["consumer_details"][0]["channel_details"] == details
        names = {c["name"] for c in listed(admin, "list", "channels")}
        assert {f"{conn_name} (1)", f"{conn_name} (2)"} <= names
        assert tag in {c["consumer_tag"] for c in listed(admin, "list", "consumers")}
    finally:
        admin("delete", "queue", f"name={queue}")


def test_management_queue_shows_consumer_tags_and_counts_acks_apart_from_no_ack(admin, connect):
    """A single-active-consumer queue shows its active consumer's tag and a queue consumed
    exclusively its consumer's; a queue's `message_stats` count acks, deliveries without acks
    and empty gets apart (`deliver_get` is them all), and its `memory` is a number of bytes.
    RabbitMQ emits statistics every 5 s: polled, bounded."""
    conn = connect()
    ch = conn.channel()
    sac, solo, counted = name("sac"), name("solo"), name("counted")
    ch.queue_declare(sac, arguments={"x-single-active-consumer": True})
    ch.queue_declare(solo)
    ch.queue_declare(counted)
    try:
        ch.basic_consume(sac, lambda *_: None, consumer_tag="sac-first")
        ch.basic_consume(sac, lambda *_: None, consumer_tag="sac-second")
        ch.basic_consume(solo, lambda *_: None, consumer_tag="solo-only", exclusive=True)

        def shown(queue):
            return management_api.call("GET", f"/queues/%2F/{management_api.quote(queue)}")[1]
        eventually(lambda: shown(sac).get("single_active_consumer_tag") == "sac-first")
        eventually(lambda: shown(solo).get("exclusive_consumer_tag") == "solo-only")
        assert shown(solo).get("single_active_consumer_tag") is None
        assert isinstance(shown(sac)["memory"], int) and shown(sac)["memory"] > 0

        for _ in range(3):
            ch.basic_publish("", counted, b"m")
        method, _, _ = ch.basic_get(counted, auto_ack=False)
        ch.basic_ack(method.delivery_tag)
        ch.basic_get(counted, auto_ack=True)
        ch.basic_consume(counted, lambda *_: None, auto_ack=True, consumer_tag="counted-no-ack")
        eventually(lambda: shown(counted).get("messages") == 0)
        ch.basic_cancel("counted-no-ack")
        assert ch.basic_get(counted, auto_ack=True) == (None, None, None)

        def stats():
            s = shown(counted).get("message_stats", {})
            return {k: s.get(k, 0) for k in ("publish", "ack", "deliver", "deliver_no_ack", "get_empty", "deliver_get")}
        expected = {"publish": 3, "ack": 1, "deliver": 0, "deliver_no_ack": 1, "get_empty": 1, "deliver_get": 3}
        eventually(lambda: stats() == expected)
    finally:
        for queue in (sac, solo, counted):
            ch.queue_delete(queue)
        conn.close()
