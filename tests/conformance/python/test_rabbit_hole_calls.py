"""The management API calls of rabbit-hole (github.com/michaelklishin/rabbit-hole, the Go client
Terraform's RabbitMQ provider and the Kubernetes messaging-topology-operator use), replayed as
it sends them: the same methods, paths (names escaped with Go's `url.PathEscape`, the default
vhost as `%2F`; `url.QueryEscape` for the definitions of one vhost) and JSON bodies (Go's
`json.Marshal` of its structs: `omitempty` fields left out, `UserTags`/`VhostTags` as one
comma-separated string, `"type": ""` on a queue without a type).

Each answer is checked against the Go struct rabbit-hole decodes it into: Go's
`encoding/json` fails the whole decode when one field has a JSON type the struct's field
cannot take (a float for an int, a string for a bool, an object for a string, `null` for a
type whose own `UnmarshalJSON` refuses it). `STRUCTS` is that table, read from rabbit-hole
v3.5.0 (the version the operator uses; Terraform's provider uses v3.2.0, whose types are the
same; v2.16.0's differences are noted where they are). Status codes are those both RabbitMQ
3.10.8 and rabbit-hole's callers rely on: 201 for a create, 204 for an update or a delete, 404
for a delete of something missing (rabbit-hole takes it as success); the `Location` of a new
binding ends in its properties key, escaped once more (Terraform reads it back from there).

Where RabbitMQ 3.10.8 differs from what rabbit-hole expects, the test follows 3.10.8 and says
so. `MANAGEMENT_URL` and `AMQP_URL` come from `scripts/conformance`.
"""
import base64
import hashlib
import os
import urllib.parse
import uuid

import pika
import pytest

import management_api
from management_api import eventually

HANG_GUARD_S = 30  # seconds; RabbitMQ lists a new connection within its stats interval (5 s)


def path_escape(name):
    """Go's `url.PathEscape`: letters, digits, `-_.~` and `$&+:=@` stay, the rest is escaped."""
    return urllib.parse.quote(name, safe="$&+:=@")


def query_escape(name):
    """Go's `url.QueryEscape` (rabbit-hole's definitions of one vhost): a space is `+`."""
    return urllib.parse.quote_plus(name, safe="")


VHOST = path_escape("/")  # %2F


# ---------------------------------------------------------------------------------------------
# rabbit-hole's structs: JSON field -> Go type. "[]T" a slice, "*T" a pointer (null is fine for
# both), "map" map[string]interface{}, "any" interface{}; a capitalised name is another struct
# of this table or one of the types with their own UnmarshalJSON (CUSTOM below).
# ---------------------------------------------------------------------------------------------


def counters(gotype, *names):
    """Fields `name` of `gotype` with their `name_details` (RateDetails)."""
    out = {}
    for n in names:
        out[n] = gotype
        out[f"{n}_details"] = "RateDetails"
    return out


STRUCTS = {
    # common.go
    "RateDetailSample": {"sample": "int64", "timestamp": "int64"},
    "RateDetails": {"rate": "float32", "samples": "[]RateDetailSample"},
    "BrokerContext": {"node": "string", "description": "string", "path": "string", "port": "Port",
                      "ignore_in_use": "bool"},
    "MessageStats": counters("int64", "publish", "deliver", "deliver_noack", "deliver_get", "redeliver",
                             "get", "get_no_ack", "ack", "return_unroutable", "drop_unroutable"),
    # misc.go: GET /api/overview
    "QueueTotals": counters("int", "messages", "messages_ready", "messages_unacknowledged"),
    "ObjectTotals": {k: "int" for k in ["consumers", "queues", "exchanges", "connections", "channels"]},
    "Listener": {"node": "string", "protocol": "string", "ip_address": "string", "port": "Port"},
    "Overview": {"management_version": "string", "statistics_level": "string", "rabbitmq_version": "string",
                 "erlang_version": "string", "erlang_full_version": "string",
                 "exchange_types": "[]ExchangeType", "message_stats": "MessageStats",
                 "queue_totals": "QueueTotals", "object_totals": "ObjectTotals", "node": "string",
                 "statistics_db_node": "string", "listeners": "[]Listener", "contexts": "[]BrokerContext"},
    # nodes.go: GET /api/nodes, /api/nodes/{name}
    "ExchangeType": {"name": "string", "description": "string", "enabled": "bool"},
    "AuthMechanism": {"name": "string", "description": "string", "enabled": "bool"},
    "ErlangApp": {"name": "string", "description": "string", "version": "string"},
    "ClusterLinkStats": counters("uint64", "send_bytes", "recv_bytes"),
    "ClusterLink": {"stats": "ClusterLinkStats", "name": "string", "peer_addr": "string", "peer_port": "Port",
                    "sock_addr": "string", "sock_port": "Port", "send_bytes": "uint64", "recv_bytes": "uint64"},
    "MetricsGCQueueLength": {k: "int" for k in [
        "connection_closed", "channel_closed", "consumer_deleted", "exchange_deleted", "queue_deleted",
        "vhost_deleted", "node_node_deleted", "channel_consumer_deleted"]},
    "NodeInfo": {
        "name": "string", "type": "string", "running": "bool", "os_pid": "string",  # OsPid is a string
        **counters("int", "fd_used", "proc_used", "mem_used", "disk_free"),
        # v2.16.0 also has sockets_used (int, with details) and sockets_total (int).
        "sockets_used": "int", "sockets_used_details": "RateDetails", "sockets_total": "int",
        "fd_total": "int", "proc_total": "int", "mem_limit": "int", "mem_alarm": "bool",
        "disk_free_limit": "int", "disk_free_alarm": "bool",
        **counters("uint64", "gc_num", "gc_bytes_reclaimed", "context_switches", "connection_created",
                   "connection_closed", "channel_created", "channel_closed", "queue_declared", "queue_created",
                   "queue_deleted", "io_read_count", "io_read_bytes", "io_write_count", "io_write_bytes",
                   "io_sync_count", "io_seek_count", "io_reopen_count", "io_file_handle_open_attempt_count",
                   "mnesia_ram_tx_count", "mnesia_disk_tx_count", "msg_store_read_count",
                   "msg_store_write_count", "queue_index_journal_write_count", "queue_index_write_count",
                   "queue_index_read_count"),
        **counters("float64", "io_read_avg_time", "io_write_avg_time", "io_sync_avg_time", "io_seek_avg_time"),
        "run_queue": "uint32", "processors": "uint32", "uptime": "uint64",
        "exchange_types": "[]ExchangeType", "auth_mechanisms": "[]AuthMechanism", "applications": "[]ErlangApp",
        "contexts": "[]BrokerContext", "partitions": "[]string", "cluster_links": "[]ClusterLink",
        "metrics_gc_queue_length": "MetricsGCQueueLength"},
    # connections.go
    "ConnectionInfo": {
        "name": "string", "node": "string", "channels": "int", "state": "string", "type": "string",
        "port": "Port", "peer_port": "Port", "host": "string", "peer_host": "string",
        "last_blocked_by": "string", "last_blocked_age": "string", "ssl": "bool",
        "peer_cert_subject": "string", "peer_cert_validity": "string", "peer_cert_issuer": "string",
        "ssl_protocol": "string", "ssl_key_exchange": "string", "ssl_cipher": "string", "ssl_hash": "string",
        "protocol": "string", "user": "string", "vhost": "string", "timeout": "int", "frame_max": "int",
        "client_properties": "map",  # Properties: map[string]interface{}
        "recv_oct": "uint64", "send_oct": "uint64", "recv_cnt": "uint64", "send_cnt": "uint64",
        "send_pend": "uint64", "recv_oct_details": "RateDetails", "send_oct_details": "RateDetails",
        "connected_at": "uint64"},
    "PagedConnectionInfo": {"page": "int", "page_count": "int", "page_size": "int", "filtered_count": "int",
                            "item_count": "int", "total_count": "int", "items": "[]ConnectionInfo"},
    "UserConnectionInfo": {"name": "string", "node": "string", "user": "string", "vhost": "string"},
    # channels.go
    "BriefConnectionDetails": {"name": "string", "peer_port": "Port", "peer_host": "string"},
    "ChannelInfo": {
        "number": "int", "name": "string", "prefetch_count": "int", "consumer_count": "int",
        "messages_unacknowledged": "int", "messages_unconfirmed": "int", "messages_uncommitted": "int",
        "acks_uncommitted": "int", "idle_since": "string", "confirm": "bool", "transactional": "bool",
        "client_flow_blocked": "bool", "user": "string", "vhost": "string", "node": "string",
        "connection_details": "BriefConnectionDetails"},
    # consumers.go
    "BriefQueueInfo": {"name": "string", "vhost": "string"},
    "BriefChannelDetail": {"connection_name": "string", "name": "string", "node": "string", "number": "int",
                           "peer_host": "string", "peer_port": "Port", "user": "string"},
    "ConsumerInfo": {"arguments": "map", "ack_required": "bool", "channel_details": "BriefChannelDetail",
                     "consumer_tag": "string", "exclusive": "bool", "prefetch_count": "int",
                     "queue": "BriefQueueInfo"},
    # queues.go
    "BackingQueueStatus": {"q1": "int", "q2": "int", "q3": "int", "q4": "int", "len": "int64",
                           "pending_acks": "int64", "ram_msg_count": "int64", "ram_ack_count": "int64",
                           "persistent_count": "int64", "avg_ingress_rate": "float64",
                           "avg_egress_rate": "float64", "avg_ack_ingress_rate": "float32",
                           "avg_ack_egress_rate": "float32"},
    "OwnerPidDetails": {"name": "string", "peer_port": "Port", "peer_host": "string"},
    "ChannelDetails": {"connection_name": "string", "name": "string", "node": "string", "number": "uint",
                       "peer_host": "string", "peer_port": "Port", "user": "string"},
    "QueueDetail": {"name": "string", "vhost": "string"},
    "ConsumerDetail": {"arguments": "map", "channel_details": "ChannelDetails", "ack_required": "bool",
                       "active": "bool", "active_status": "string", "consumer_tag": "string",
                       "exclusive": "bool", "prefetch_count": "uint", "queue": "QueueDetail"},
    "GarbageCollectionDetails": {"fullsweep_after": "int", "max_heap_size": "int", "min_bin_vheap_size": "int",
                                 "min_heap_size": "int", "minor_gcs": "int"},
    "QueueInfo": {
        "name": "string", "type": "string", "vhost": "string", "durable": "bool", "auto_delete": "AutoDelete",
        "exclusive": "bool", "arguments": "map", "node": "string", "state": "string", "leader": "string",
        "members": "[]string", "online": "[]string", "memory": "int64", "consumers": "int",
        "consumer_details": "*[]ConsumerDetail", "consumer_utilisation": "float64",
        "exclusive_consumer_tag": "string", "garbage_collection": "*GarbageCollectionDetails",
        "policy": "string", "message_bytes": "int64", "message_bytes_persistent": "int64",
        "message_bytes_ram": "int64", "message_bytes_ready": "int64", "message_bytes_unacknowledged": "int64",
        "messages": "int", "messages_details": "*RateDetails", "messages_persistent": "int", "messages_ram": "int",
        "messages_ready": "int", "messages_ready_details": "*RateDetails", "messages_unacknowledged": "int",
        "messages_unacknowledged_details": "*RateDetails", "message_stats": "*MessageStats",
        "owner_pid_details": "*OwnerPidDetails", "backing_queue_status": "*BackingQueueStatus",
        "active_consumers": "int64"},
    "PagedQueueInfo": {"page": "int", "page_count": "int", "page_size": "int", "filtered_count": "int",
                       "item_count": "int", "total_count": "int", "items": "[]QueueInfo"},
    # exchanges.go
    "IngressEgressStats": {"publish_in": "int", "publish_in_details": "*RateDetails", "publish_out": "int",
                           "publish_out_details": "*RateDetails"},
    "ExchangeInfo": {"name": "string", "vhost": "string", "type": "string", "durable": "bool",
                     "auto_delete": "AutoDelete", "internal": "bool", "arguments": "map",
                     "message_stats": "*IngressEgressStats"},
    "PublishingChannel": {"number": "int", "name": "string", "connection_name": "string", "peer_port": "Port",
                          "peer_host": "string"},
    "ExchangeIngressDetails": {"stats": "MessageStats", "channel_details": "PublishingChannel"},
    "NameAndVhost": {"name": "string", "vhost": "string"},
    "ExchangeEgressDetails": {"stats": "MessageStats", "queue": "NameAndVhost"},
    # GET /api/exchanges/{vhost}/{name}: auto_delete a plain bool here, not AutoDelete.
    "DetailedExchangeInfo": {"name": "string", "vhost": "string", "type": "string", "durable": "bool",
                             "auto_delete": "bool", "internal": "bool", "arguments": "map",
                             "incoming": "[]ExchangeIngressDetails", "outgoing": "[]ExchangeEgressDetails",
                             "message_stats": "IngressEgressStats"},
    "PublishResult": {"routed": "bool"},
    # bindings.go
    "BindingInfo": {"source": "string", "vhost": "string", "destination": "string", "destination_type": "string",
                    "routing_key": "string", "arguments": "map", "properties_key": "string"},
    # users.go, user_limits.go
    "UserInfo": {"name": "string", "password_hash": "string", "hashing_algorithm": "string", "tags": "UserTags"},
    "WhoamiInfo": {"name": "string", "tags": "UserTags", "auth_backend": "string"},
    "UserLimitsInfo": {"user": "string", "value": "map[string]int"},
    # vhosts.go, vhost_limits.go
    "VhostInfo": {"name": "string", "description": "string", "tags": "VhostTags", "default_queue_type": "string",
                  "tracing": "bool",
                  **counters("int", "messages", "messages_ready", "messages_unacknowledged"),
                  "recv_oct": "uint64", "send_oct": "uint64", "recv_cnt": "uint64", "send_cnt": "uint64",
                  "send_pend": "uint64", "recv_oct_details": "RateDetails", "send_oct_details": "RateDetails",
                  "cluster_state": "map[string]string"},
    "VhostLimitsInfo": {"vhost": "string", "value": "map[string]int"},
    # permissions.go, topic_permissions.go
    "PermissionInfo": {"user": "string", "vhost": "string", "configure": "string", "write": "string",
                       "read": "string"},
    "Permissions": {"configure": "string", "write": "string", "read": "string"},
    "TopicPermissionInfo": {"user": "string", "vhost": "string", "exchange": "string", "write": "string",
                            "read": "string"},
    # policies.go, operator_policies.go (OperatorPolicy has the same fields)
    "Policy": {"vhost": "string", "pattern": "string", "apply-to": "string", "name": "string", "priority": "int",
               "definition": "map"},
    # runtime_parameters.go, global_parameters.go
    "RuntimeParameter": {"name": "string", "vhost": "string", "component": "string", "value": "any"},
    "GlobalRuntimeParameter": {"name": "string", "value": "any"},
    # definitions.go (v2.16.0 spells "parameters" "paramaters", so it reads none)
    "ExportedDefinitions": {"rabbit_version": "string", "rabbitmq_version": "string", "product_name": "string",
                            "product_version": "string", "users": "*[]UserInfo", "vhosts": "*[]VhostInfo",
                            "permissions": "*[]Permissions", "topic_permissions": "*[]TopicPermissionInfo",
                            "parameters": "*[]RuntimeParameter", "global_parameters": "*[]GlobalRuntimeParameter",
                            "policies": "*[]map", "queues": "*[]QueueInfo", "exchanges": "*[]ExchangeInfo",
                            "bindings": "*[]BindingInfo"},
    # health_checks.go
    "HealthCheckStatus": {"status": "string", "reason": "string"},
    "AlarmInEffect": {"node": "string", "resource": "string"},
    "ResourceAlarmCheckStatus": {"status": "string", "reason": "string", "alarms": "[]AlarmInEffect"},
    "PortListenerCheckStatus": {"status": "string", "reason": "string", "port": "uint", "missing": "uint",
                                "ports": "[]uint"},
    "ProtocolListenerCheckStatus": {"status": "string", "reason": "string", "missing": "string",
                                    "protocols": "[]string"},
    # feature_flags.go
    "FeatureFlag": {"name": "string", "desc": "string", "doc_url": "string", "state": "string",
                    "stability": "string", "provided_by": "string"},
    # cluster.go; error.go (the body of every 4xx/5xx)
    "ClusterName": {"name": "string"},
    "ErrorResponse": {"error": "string", "reason": "string"},
    # federation.go, shovels.go (plugins; parameters of their components)
    "FederationDefinition": {"uri": "URISet", "expires": "int", "message-ttl": "int32", "max-hops": "int",
                             "prefetch-count": "int", "reconnect-delay": "int", "ack-mode": "string",
                             "trust-user-id": "bool", "exchange": "string", "queue": "string",
                             "queue-type": "string", "resource-cleanup-mode": "string"},
    "FederationUpstream": {"name": "string", "vhost": "string", "component": "string",
                           "value": "FederationDefinition"},
    "ShovelInfo": {"name": "string", "vhost": "string", "component": "string", "value": "map"},
}

INT_RANGES = {"int": (-2**63, 2**63 - 1), "int64": (-2**63, 2**63 - 1), "int32": (-2**31, 2**31 - 1),
              "uint": (0, 2**64 - 1), "uint64": (0, 2**64 - 1), "uint32": (0, 2**32 - 1)}


def _port(value):
    """common.go's Port.UnmarshalJSON: an integer, a string of one, or "undefined"; not null."""
    if isinstance(value, str):
        return value == "undefined" or value.lstrip("-").isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


# Types with their own UnmarshalJSON in rabbit-hole: value -> accepted?
CUSTOM = {
    # users.go / vhosts.go: a comma-separated string or an array of strings (null: no tags).
    "UserTags": lambda v: v is None or isinstance(v, str) or (
        isinstance(v, list) and all(t is None or isinstance(t, str) for t in v)),
    "VhostTags": lambda v: v is None or isinstance(v, str) or (
        isinstance(v, list) and all(t is None or isinstance(t, str) for t in v)),
    # common.go: true, false or "undefined"; null is "Unknown value of auto_delete".
    "AutoDelete": lambda v: isinstance(v, bool) or v == "undefined",
    "Port": _port,
    # common.go: one URI or a list of them.
    "URISet": lambda v: v is None or isinstance(v, str) or (isinstance(v, list) and all(
        isinstance(u, str) for u in v)),
}


def go_errors(value, gotype, where):
    """Why Go's encoding/json would fail to decode `value` into `gotype` (empty if it would not)."""
    if gotype == "any":
        return []
    if gotype in CUSTOM:
        return [] if CUSTOM[gotype](value) else [f"{where}: {value!r} is not a {gotype}"]
    if value is None:  # null leaves any other field (value, slice, map, pointer) at its zero value
        return []
    if gotype.startswith("*"):
        return go_errors(value, gotype[1:], where)
    if gotype.startswith("[]"):
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array ({gotype})"]
        return [e for i, item in enumerate(value) for e in go_errors(item, gotype[2:], f"{where}[{i}]")]
    if gotype.startswith("map"):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object ({gotype})"]
        element = {"map": "any", "map[string]string": "string", "map[string]int": "int"}[gotype]
        return [e for k, item in value.items() for e in go_errors(item, element, f"{where}.{k}")]
    if gotype == "string":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
    if gotype == "bool":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a bool"]
    if gotype in INT_RANGES:
        low, high = INT_RANGES[gotype]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return [] if ok else [f"{where}: {value!r} is not a JSON integer for {gotype}"]
    if gotype in ("float32", "float64"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number ({gotype})"]
    fields = STRUCTS[gotype]
    if gotype == "ChannelDetails" and value == []:  # queues.go: its UnmarshalJSON takes [] (RabbitMQ's empty proplist)
        return []
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object ({gotype})"]
    return [e for k, t in fields.items() if k in value for e in go_errors(value[k], t, f"{where}.{k}")]


def decodes(value, gotype):
    """`value`, asserted to decode into rabbit-hole's `gotype`."""
    errors = go_errors(value, gotype, gotype)
    assert not errors, "Go would not decode this: " + "; ".join(errors[:10])
    return value


def api(method, path, body=None, user="guest", password="guest"):
    """`method` on `/api/{path}` as rabbit-hole sends it: (status, headers, body)."""
    return management_api.exchange(method, "/" + path, body, user, password)


def get(path, gotype, user="guest", password="guest"):
    """A GET rabbit-hole decodes into `gotype`: 200 and a body Go decodes."""
    status, _, body = api("GET", path, user=user, password=password)
    assert status == 200, f"GET {path}: {status} {body}"
    return decodes(body, gotype)


def send(method, path, body, expected):
    status, headers, answer = api(method, path, body)
    assert status == expected, f"{method} {path}: {status} {answer}, not {expected}"
    if status >= 400:
        decodes(answer, "ErrorResponse")
    return headers


@pytest.fixture(scope="module")
def management():
    if not os.environ.get("MANAGEMENT_URL"):
        pytest.skip("MANAGEMENT_URL is not set")


def uniq(kind):
    """A name with characters a path must escape: a space, `/`, `+`, `~`, `:` and `@` (a user's
    without `:`, which would end its name in basic auth)."""
    tail = "+x~y@w" if kind == "user" else "+x~y:z@w"
    return f"rh {kind}/{uuid.uuid4().hex[:6]}{tail}"


def test_management_rabbit_hole_types_as_go_decodes_them():
    """The checker itself: what Go's encoding/json refuses, and what it or rabbit-hole takes."""
    refused = [({"messages": 1.0}, "QueueTotals"), ({"messages": "1"}, "QueueTotals"),
               ({"durable": "true"}, "QueueInfo"), ({"auto_delete": None}, "QueueInfo"),
               ({"port": None}, "Listener"), ({"port": 1.5}, "Listener"), ({"arguments": []}, "QueueInfo"),
               ({"uptime": -1}, "NodeInfo"), ({"idle_since": 1700000000}, "ChannelInfo"),
               ({"value": {"max-queues": 1.5}}, "VhostLimitsInfo"), ({"message_stats": []}, "QueueInfo"),
               ({"tags": [1]}, "UserInfo"), ({"cluster_state": {"n": 1}}, "VhostInfo")]
    for value, gotype in refused:
        assert go_errors(value, gotype, gotype), (value, gotype)
    taken = [({"messages": 1, "messages_details": {"rate": 0}}, "QueueTotals"),
             ({"rate": 1, "samples": None}, "RateDetails"), ({"auto_delete": "undefined"}, "QueueInfo"),
             ({"port": "5672"}, "Listener"), ({"port": "undefined"}, "Listener"), ({"tags": "a,b"}, "UserInfo"),
             ({"tags": ["a"]}, "UserInfo"), ({"tags": None}, "VhostInfo"), ({"name": None}, "ExchangeInfo"),
             ({"channel_details": []}, "ConsumerDetail"), ({"uri": "amqp://"}, "FederationDefinition"),
             ({"value": {"anything": [1, {"x": None}]}}, "RuntimeParameter"), ({"unknown": 1.5}, "QueueInfo")]
    for value, gotype in taken:
        assert not go_errors(value, gotype, gotype), (value, gotype)


# ---------------------------------------------------------------------------------------------
# Overview, nodes, health checks, feature flags, cluster name
# ---------------------------------------------------------------------------------------------


def test_management_rabbit_hole_overview_and_nodes(management):
    overview = get("overview", "Overview")  # Overview(), EnabledProtocols(), ProtocolPorts()
    assert "amqp" in [listener["protocol"] for listener in overview["listeners"]]
    nodes = get("nodes", "[]NodeInfo")  # ListNodes()
    assert [n["name"] for n in nodes] == [overview["node"]]
    node = get(f"nodes/{path_escape(overview['node'])}", "NodeInfo")  # GetNode()
    assert node["name"] == overview["node"] and node["running"] is True


def test_management_rabbit_hole_health_checks(management):
    amqp_port = next(int(listener["port"]) for listener in get("overview", "Overview")["listeners"]
                     if listener["protocol"] == "amqp")
    checks = [("health/checks/alarms", "ResourceAlarmCheckStatus"),
              ("health/checks/local-alarms", "ResourceAlarmCheckStatus"),
              ("health/checks/virtual-hosts", "HealthCheckStatus"),
              ("health/checks/node-is-mirror-sync-critical", "HealthCheckStatus"),
              ("health/checks/node-is-quorum-critical", "HealthCheckStatus"),
              (f"health/checks/port-listener/{amqp_port}", "PortListenerCheckStatus"),
              ("health/checks/protocol-listener/amqp", "ProtocolListenerCheckStatus")]
    for path, gotype in checks:
        assert get(path, gotype)["status"] == "ok", path
    # A port nothing listens on: 503 with a body rabbit-hole decodes (executeCheck decodes 503).
    status, _, body = api("GET", "health/checks/port-listener/1")
    assert status == 503 and decodes(body, "PortListenerCheckStatus")["status"] == "failed"
    status, _, body = api("GET", "health/checks/protocol-listener/stomp")
    assert status == 503 and decodes(body, "ProtocolListenerCheckStatus")["missing"] == "stomp"
    # HealthCheckCertificateExpiration(): the TLS listener scripts/conformance configures (when
    # AMQPS_PORT is set) has certificates valid for 2 days.
    tls = bool(os.environ.get("AMQPS_PORT"))
    assert get("health/checks/certificate-expiration/1/days", "HealthCheckStatus")["status"] == "ok"
    status, _, body = api("GET", "health/checks/certificate-expiration/1/weeks")
    assert (status, decodes(body, "HealthCheckStatus")["status"]) == ((503, "failed") if tls else (200, "ok"))
    for bad in ["1/fortnights", "x/days"]:
        status, _, body = api("GET", f"health/checks/certificate-expiration/{bad}")
        assert status == 400 and decodes(body, "ErrorResponse")["error"] == "bad_request"
    if tls:
        # EnabledProtocols(), HealthCheckProtocolListener(): rabbit-hole sends AMQPS ("amqp/ssl")
        # unescaped, a path neither broker has (404); escaped, the listener is there.
        assert "amqp/ssl" in [listener["protocol"] for listener in get("overview", "Overview")["listeners"]]
        assert api("GET", "health/checks/protocol-listener/amqp/ssl")[0] == 404
        assert get("health/checks/protocol-listener/amqp%2Fssl", "ProtocolListenerCheckStatus")["status"] == "ok"


def test_management_rabbit_hole_feature_flags_and_cluster_name(management):
    flags = get("feature-flags", "[]FeatureFlag")  # ListFeatureFlags()
    assert flags and all(f["state"] in ("enabled", "disabled", "unsupported") for f in flags)
    enabled = next(f["name"] for f in flags if f["state"] == "enabled")
    # EnableFeatureFlag(): PUT with {"name": ...}; enabling an enabled flag is a no-op.
    send("PUT", f"feature-flags/{path_escape(enabled)}/enable", {"name": enabled}, 204)
    name = get("cluster-name/", "ClusterName")["name"]  # GetClusterName(): note the slash
    send("PUT", "cluster-name", {"name": name}, 204)  # SetClusterName()
    assert get("cluster-name", "ClusterName")["name"] == name


# ---------------------------------------------------------------------------------------------
# Vhosts and their limits
# ---------------------------------------------------------------------------------------------


def test_management_rabbit_hole_vhosts(management):
    name = uniq("vhost")
    path = f"vhosts/{path_escape(name)}"
    # PutVhost(): VhostSettings, tags as one comma-separated string.
    settings = {"description": "made by rabbit-hole", "tags": "production,eu-west-1",
                "default_queue_type": "classic", "tracing": False}
    send("PUT", path, settings, 201)
    try:
        send("PUT", path, settings, 204)
        vhost = get(path, "VhostInfo")  # GetVhost()
        assert (vhost["name"], vhost["description"], vhost["tracing"]) == (name, "made by rabbit-hole", False)
        # 3.10.8 reads the default queue type from `defaultqueuetype` (3.11 and later, and Lepus
        # too, from rabbit-hole's `default_queue_type`): it shows "undefined" here.
        assert vhost["default_queue_type"] in ("classic", "undefined")
        tags = vhost["tags"]  # VhostTags: an array (3.10.8) or a comma-separated string
        assert (tags.split(",") if isinstance(tags, str) else tags) == ["production", "eu-west-1"]
        assert name in [v["name"] for v in get("vhosts", "[]VhostInfo")]  # ListVhosts()
        # Terraform's rabbitmq_vhost without description or tags: empty strings, tracing false.
        send("PUT", path, {"description": "", "tags": "", "tracing": False}, 204)
        vhost = get(path, "VhostInfo")
        assert vhost["description"] == "" and vhost["tags"] in ([], "")
    finally:
        send("DELETE", path, None, 204)  # DeleteVhost()
    send("DELETE", path, None, 404)  # rabbit-hole takes a 404 on DELETE as success
    status, _, body = api("GET", path)
    assert status == 404 and decodes(body, "ErrorResponse")


def test_management_rabbit_hole_vhost_limits(management):
    name = uniq("vhost")
    escaped = path_escape(name)
    send("PUT", f"vhosts/{escaped}", {"description": "", "tags": "", "tracing": False}, 201)
    try:
        # PutVhostLimits(): one PUT {"value": n} per limit.
        send("PUT", f"vhost-limits/{escaped}/max-connections", {"value": 10}, 204)
        send("PUT", f"vhost-limits/{escaped}/max-queues", {"value": 20}, 204)
        limits = get(f"vhost-limits/{escaped}", "[]VhostLimitsInfo")  # GetVhostLimits()
        assert limits == [{"vhost": name, "value": {"max-connections": 10, "max-queues": 20}}]
        assert name in [v["vhost"] for v in get("vhost-limits", "[]VhostLimitsInfo")]  # GetAllVhostLimits()
        # DeleteVhostLimits(): one DELETE per limit.
        send("DELETE", f"vhost-limits/{escaped}/max-connections", None, 204)
        assert get(f"vhost-limits/{escaped}", "[]VhostLimitsInfo")[0]["value"] == {"max-queues": 20}
        send("DELETE", f"vhost-limits/{escaped}/max-queues", None, 204)
        # No limits left: 3.10.8 lists the vhost with `"value": []` (an empty Erlang proplist),
        # which rabbit-hole cannot decode into its map; no entry at all decodes.
        status, _, left = api("GET", f"vhost-limits/{escaped}")
        assert status == 200 and left in ([], [{"vhost": name, "value": []}])
    finally:
        send("DELETE", f"vhosts/{escaped}", None, 204)


# ---------------------------------------------------------------------------------------------
# Users, their limits, permissions, topic permissions
# ---------------------------------------------------------------------------------------------


def salted_hash(password, algorithm=hashlib.sha256):
    """rabbit-hole's Base64EncodedSaltedPasswordHashSHA256 (what the operator sends) or SHA512."""
    salt = uuid.uuid4().bytes[:4]
    return base64.b64encode(salt + algorithm(salt + password.encode()).digest()).decode()


def test_management_rabbit_hole_users(management):
    name = uniq("user")
    path = f"users/{path_escape(name)}"
    # PutUser(): UserSettings, tags as one comma-separated string.
    send("PUT", path, {"name": name, "tags": "management,policymaker", "password": "s3cret"}, 201)
    try:
        user = get(path, "UserInfo")  # GetUser()
        tags = user["tags"]  # UserTags: an array (3.9.0 and later) or a comma-separated string
        assert sorted(tags.split(",") if isinstance(tags, str) else tags) == ["management", "policymaker"]
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert get("whoami", "WhoamiInfo", user=name, password="s3cret")["name"] == name  # Whoami()
        assert name in [u["name"] for u in get("users/", "[]UserInfo")]  # ListUsers(): note the slash
        assert name in [u["name"] for u in get("users/without-permissions", "[]UserInfo")]
        # The operator's form: a password hash and its algorithm.
        password_hash = salted_hash("0ther")
        send("PUT", path, {"name": name, "tags": "management", "password_hash": password_hash,
                           "hashing_algorithm": "rabbit_password_hashing_sha256"}, 204)
        user = get(path, "UserInfo")
        assert user["password_hash"] == password_hash and user["tags"] in (["management"], "management")
        assert get("whoami", "WhoamiInfo", user=name, password="0ther")["name"] == name
        sha512 = salted_hash("0ther", hashlib.sha512)
        send("PUT", path, {"name": name, "tags": "management", "password_hash": sha512,
                           "hashing_algorithm": "rabbit_password_hashing_sha512"}, 204)
        assert get(path, "UserInfo")["hashing_algorithm"] == "rabbit_password_hashing_sha512"
        assert get("whoami", "WhoamiInfo", user=name, password="0ther")["name"] == name
        # Tags as an array (what 3.9 and later list; rabbit-hole itself always sends a string).
        send("PUT", path, {"name": name, "tags": ["management", "monitoring"], "password": "0ther"}, 204)
        assert sorted(get(path, "UserInfo")["tags"]) == ["management", "monitoring"]
        assert get("whoami", "WhoamiInfo", user=name, password="0ther")["name"] == name
        # PutUserWithoutPassword(): UserInfo with empty name and hash; nobody logs in with a password.
        send("PUT", path, {"name": "", "password_hash": "", "tags": "monitoring"}, 204)
        assert get(path, "UserInfo")["password_hash"] == ""
        assert api("GET", "whoami", user=name, password="0ther")[0] == 401
    finally:
        send("DELETE", path, None, 204)  # DeleteUser()
    send("DELETE", path, None, 404)
    # BulkDeleteUsers()
    others = [uniq("user"), uniq("user")]
    for other in others:
        send("PUT", f"users/{path_escape(other)}", {"name": other, "tags": "", "password": "p"}, 201)
    send("POST", "users/bulk-delete", {"users": others}, 204)
    assert not set(others) & {u["name"] for u in get("users", "[]UserInfo")}


def test_management_rabbit_hole_user_limits(management):
    name = uniq("user")
    escaped = path_escape(name)
    send("PUT", f"users/{escaped}", {"name": name, "tags": "", "password": "p"}, 201)
    try:
        send("PUT", f"user-limits/{escaped}/max-connections", {"value": 5}, 204)  # PutUserLimits()
        send("PUT", f"user-limits/{escaped}/max-channels", {"value": 7}, 204)
        limits = get(f"user-limits/{escaped}", "[]UserLimitsInfo")  # GetUserLimits()
        assert limits == [{"user": name, "value": {"max-connections": 5, "max-channels": 7}}]
        assert name in [u["user"] for u in get("user-limits", "[]UserLimitsInfo")]  # GetAllUserLimits()
        send("DELETE", f"user-limits/{escaped}/max-connections", None, 204)  # DeleteUserLimits()
        send("DELETE", f"user-limits/{escaped}/max-channels", None, 204)
        status, _, left = api("GET", f"user-limits/{escaped}")  # as vhost limits: 3.10.8 says []
        assert status == 200 and left in ([], [{"user": name, "value": []}])
    finally:
        send("DELETE", f"users/{escaped}", None, 204)


def test_management_rabbit_hole_permissions(management):
    name = uniq("user")
    escaped = path_escape(name)
    send("PUT", f"users/{escaped}", {"name": name, "tags": "", "password": "p"}, 201)
    try:
        # UpdatePermissionsIn(): Permissions.
        body = {"configure": "^rh", "write": ".*", "read": ".*"}
        send("PUT", f"permissions/{VHOST}/{escaped}", body, 201)
        send("PUT", f"permissions/{VHOST}/{escaped}", body, 204)
        shown = get(f"permissions/{VHOST}/{escaped}", "PermissionInfo")  # GetPermissionsIn()
        assert shown == {"user": name, "vhost": "/", **body}
        assert name in [p["user"] for p in get("permissions/", "[]PermissionInfo")]  # ListPermissions()
        assert get(f"users/{escaped}/permissions", "[]PermissionInfo") == [shown]  # ListPermissionsOf()
        # UpdateTopicPermissionsIn(): TopicPermissions.
        topic = {"exchange": "amq.topic", "write": "^a", "read": "^b"}
        send("PUT", f"topic-permissions/{VHOST}/{escaped}", topic, 201)
        expected = [{"user": name, "vhost": "/", **topic}]
        assert get(f"topic-permissions/{VHOST}/{escaped}", "[]TopicPermissionInfo") == expected
        assert get(f"users/{escaped}/topic-permissions", "[]TopicPermissionInfo") == expected
        assert name in [p["user"] for p in get("topic-permissions/", "[]TopicPermissionInfo")]
        # DeleteTopicPermissionsIn(): one exchange's; ClearTopicPermissionsIn(): all of them.
        send("DELETE", f"topic-permissions/{VHOST}/{escaped}/amq.topic", None, 204)
        # None left: 404 from 3.10.8 (rabbit-hole returns that as an error), [] from the user's list.
        assert api("GET", f"topic-permissions/{VHOST}/{escaped}")[0] == 404
        assert get(f"users/{escaped}/topic-permissions", "[]TopicPermissionInfo") == []
        send("PUT", f"topic-permissions/{VHOST}/{escaped}", topic, 201)
        send("DELETE", f"topic-permissions/{VHOST}/{escaped}", None, 204)
        send("DELETE", f"permissions/{VHOST}/{escaped}", None, 204)  # ClearPermissionsIn()
        send("DELETE", f"permissions/{VHOST}/{escaped}", None, 404)
    finally:
        send("DELETE", f"users/{escaped}", None, 204)


# ---------------------------------------------------------------------------------------------
# Exchanges, queues, bindings
# ---------------------------------------------------------------------------------------------


def test_management_rabbit_hole_exchanges(management):
    name = uniq("x")
    path = f"exchanges/{VHOST}/{path_escape(name)}"
    # DeclareExchange(): ExchangeSettings; auto_delete false is left out (omitempty), arguments {}.
    send("PUT", path, {"type": "topic", "durable": True, "arguments": {}}, 201)
    try:
        send("PUT", path, {"type": "topic", "durable": True, "arguments": {}}, 204)
        shown = get(path, "DetailedExchangeInfo")  # GetExchange()
        assert (shown["name"], shown["type"], shown["durable"], shown["auto_delete"]) == (name, "topic", True, False)
        assert name in [x["name"] for x in get("exchanges", "[]ExchangeInfo")]  # ListExchanges()
        assert name in [x["name"] for x in get(f"exchanges/{VHOST}", "[]ExchangeInfo")]  # ListExchangesIn()
        # PublishToExchange(): PublishOptions; PublishResult. Without properties (omitempty
        # leaves out an empty map) 3.10.8 refuses it: 400 `[{key_missing,properties}]`.
        publish = {"routing_key": "k", "payload": "hello", "payload_encoding": "string"}
        send("POST", f"{path}/publish", publish, 400)
        status, _, result = api("POST", f"{path}/publish", {**publish, "properties": {"delivery_mode": 2}})
        assert status == 200 and decodes(result, "PublishResult") == {"routed": False}
        shown = get(path, "DetailedExchangeInfo")  # now with message_stats
        get(f"{path}/bindings/source", "[]BindingInfo")  # ListExchangeBindingsWithSource()
        get(f"{path}/bindings/destination", "[]BindingInfo")  # ...WithDestination()
    finally:
        send("DELETE", path, None, 204)  # DeleteExchange()
    send("DELETE", path, None, 404)


def test_management_rabbit_hole_queues(management, connect):
    name = uniq("q")
    path = f"queues/{VHOST}/{path_escape(name)}"
    # DeclareQueue(): QueueSettings with no type: "type" is "" (no omitempty), arguments {} left out.
    send("PUT", path, {"type": "", "durable": True}, 201)
    try:
        send("PUT", path, {"type": "", "durable": True}, 204)
        ch = connect().channel()
        ch.basic_publish("", name, b"m1")
        ch.basic_publish("", name, b"m2", pika.BasicProperties(delivery_mode=2))
        ch.basic_consume(name, lambda *a: None, auto_ack=False)
        queue = eventually(lambda: (lambda q: q if q.get("consumers") == 1 else None)(
            get(path, "QueueInfo")))  # GetQueue()
        assert (queue["name"], queue["vhost"], queue["durable"]) == (name, "/", True)
        get(f"{path}?lengths_age=60&lengths_incr=5", "QueueInfo")  # GetQueueWithParameters()
        assert name in [q["name"] for q in get("queues", "[]QueueInfo")]  # ListQueues()
        assert name in [q["name"] for q in get(f"queues/{VHOST}", "[]QueueInfo")]  # ListQueuesIn()
        # ListQueuesWithParameters(), PagedListQueuesWithParameters(): url.Values encoded.
        get("queues?columns=name%2Cmessages%2Cconsumers", "[]QueueInfo")
        paged = get(f"queues/{VHOST}?page=1&page_size=100&name={query_escape(name)}", "PagedQueueInfo")
        assert [q["name"] for q in paged["items"]] == [name]
        get(f"{path}/bindings", "[]BindingInfo")  # ListQueueBindings()
        send("DELETE", f"{path}/contents", None, 204)  # PurgeQueue()
        # v2's SyncQueue() / CancelSyncQueue(): a queue without mirrors has nothing to sync.
        send("POST", f"{path}/actions", {"action": "sync"}, 204)
        send("POST", f"{path}/actions", {"action": "cancel_sync"}, 204)
        send("POST", "rebalance/queues", None, 204)  # RebalanceQueues()
        # DeleteQueue() with QueueDeleteOptions{IfUnused: true}: the queue has a consumer.
        send("DELETE", f"{path}?if-unused=true", None, 400)
    finally:
        send("DELETE", f"{path}?", None, 204)  # DeleteQueue() without options: an empty query
    send("DELETE", f"{path}?", None, 404)
    # A quorum queue: "type" and the x-queue-type argument DeclareQueue() adds.
    quorum = f"queues/{VHOST}/{path_escape(uniq('qq'))}"
    send("PUT", quorum, {"type": "quorum", "durable": True, "arguments": {"x-queue-type": "quorum"}}, 201)
    try:
        assert get(quorum, "QueueInfo")["type"] == "quorum"
    finally:
        send("DELETE", f"{quorum}?", None, 204)  # (if-empty: 400 for a quorum queue in 3.10.8)


def binding_body(source, destination, destination_type, routing_key, arguments):
    """rabbit-hole's BindingInfo as DeclareBinding() marshals it (properties_key left out)."""
    return {"source": source, "vhost": "/", "destination": destination, "destination_type": destination_type,
            "routing_key": routing_key, "arguments": arguments}


def relativise(request_path, path):
    """`path` relative to `request_path`, as RabbitMQ makes a new binding's `Location`
    (rabbit_web_dispatch_util:relativise): the common leading segments dropped (the request's
    last kept if `path` goes on from it), then `..` for each request segment left but one."""
    frm, to = [p for p in request_path.split("/") if p], [p for p in path.split("/") if p]
    while frm and to and frm[0] == to[0]:
        if len(frm) == 1:
            return "/".join(to)
        frm, to = frm[1:], to[1:]
    return "/".join([".."] * (len(frm) - 1) + to)


def test_management_rabbit_hole_bindings(management):
    x, x2, q = uniq("x"), uniq("x2"), uniq("q")
    ex, ex2, eq = path_escape(x), path_escape(x2), path_escape(q)
    send("PUT", f"exchanges/{VHOST}/{ex}", {"type": "topic", "durable": True, "arguments": {}}, 201)
    send("PUT", f"exchanges/{VHOST}/{ex2}", {"type": "fanout", "durable": True, "arguments": {}}, 201)
    send("PUT", f"queues/{VHOST}/{eq}", {"type": "", "durable": True}, 201)
    try:
        cases = [("queue", q, f"e/{ex}/q/{eq}", "a b/c~d+e", {}),
                 ("queue", q, f"e/{ex}/q/{eq}", "", {}),
                 ("queue", q, f"e/{ex}/q/{eq}", "k.with.args", {"x-a": 1, "x-b": "two"}),
                 ("exchange", x2, f"e/{ex}/e/{ex2}", "to.x2", {})]
        for destination_type, destination, between, routing_key, arguments in cases:
            body = binding_body(x, destination, destination_type, routing_key, arguments)
            headers = send("POST", f"bindings/{VHOST}/{between}", body, 201)  # DeclareBinding()
            # Terraform: the properties key is the Location's last segment, path-unescaped.
            props = urllib.parse.unquote(headers["Location"].split("/")[-1])
            kind = between.split("/")[2]
            plus = urllib.parse.quote_plus
            binding_path = f"/api/bindings/{plus('/')}/e/{plus(x)}/{kind}/{plus(destination)}/{plus(props)}"
            assert headers["Location"] == relativise(f"/api/bindings/{VHOST}/{between}", binding_path)
            # ListQueueBindingsBetween() / ListExchangeBindingsBetween()
            listed = get(f"bindings/{VHOST}/{between}", "[]BindingInfo")
            ours = [b for b in listed if b["routing_key"] == routing_key and b["arguments"] == arguments]
            assert [b["properties_key"] for b in ours] == [props], (routing_key, props, listed)
            assert ours[0]["destination_type"] == destination_type and ours[0]["vhost"] == "/"
        assert len(get(f"bindings/{VHOST}", "[]BindingInfo")) >= 4  # ListBindingsIn()
        assert x in {b["source"] for b in get("bindings/", "[]BindingInfo")}  # ListBindings()
        source = get(f"exchanges/{VHOST}/{ex}/bindings/source", "[]BindingInfo")
        assert len(source) == 4
        assert [b["source"] for b in get(f"exchanges/{VHOST}/{ex2}/bindings/destination", "[]BindingInfo")] == [x]
        assert len(get(f"queues/{VHOST}/{eq}/bindings", "[]BindingInfo")) == 4  # with the default exchange's
        # DeleteBinding(): the listed properties key, path-escaped once more.
        for b in source:
            kind = "q" if b["destination_type"] == "queue" else "e"
            path = f"bindings/{VHOST}/e/{ex}/{kind}/{path_escape(b['destination'])}/{path_escape(b['properties_key'])}"
            send("DELETE", path, None, 204)
            send("DELETE", path, None, 404)
        assert get(f"exchanges/{VHOST}/{ex}/bindings/source", "[]BindingInfo") == []
        # The operator deletes a binding without arguments by a key it makes: the routing key
        # with `~` as `%7E` ("~" when empty), path-escaped.
        for routing_key, key in [("op~key.1", "op%7Ekey.1"), ("", "~")]:
            send("POST", f"bindings/{VHOST}/e/{ex}/q/{eq}", binding_body(x, q, "queue", routing_key, {}), 201)
            send("DELETE", f"bindings/{VHOST}/e/{ex}/q/{eq}/{path_escape(key)}", None, 204)
        assert get(f"bindings/{VHOST}/e/{ex}/q/{eq}", "[]BindingInfo") == []
    finally:
        send("DELETE", f"queues/{VHOST}/{eq}?", None, 204)
        send("DELETE", f"exchanges/{VHOST}/{ex2}", None, 204)
        send("DELETE", f"exchanges/{VHOST}/{ex}", None, 204)


# ---------------------------------------------------------------------------------------------
# Policies, operator policies, runtime and global parameters, definitions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["policies", "operator-policies"])
def test_management_rabbit_hole_policies(management, kind):
    name = uniq("policy")
    path = f"{kind}/{VHOST}/{path_escape(name)}"
    # PutPolicy() / PutOperatorPolicy(): the whole Policy struct, priority always there.
    body = {"vhost": "/", "pattern": "^rh-policy\\.", "apply-to": "queues", "name": name, "priority": 0,
            "definition": {"max-length": 10}}
    send("PUT", path, body, 201)
    try:
        send("PUT", path, {**body, "priority": 3}, 204)
        shown = get(path, "Policy")  # GetPolicy()
        assert (shown["name"], shown["priority"], shown["definition"]) == (name, 3, {"max-length": 10})
        assert name in [p["name"] for p in get(kind, "[]Policy")]  # ListPolicies()
        assert name in [p["name"] for p in get(f"{kind}/{VHOST}", "[]Policy")]  # ListPoliciesIn()
    finally:
        send("DELETE", path, None, 204)  # DeletePolicy()
    send("DELETE", path, None, 404)


def test_management_rabbit_hole_runtime_and_global_parameters(management):
    # PutRuntimeParameter(): RuntimeParameter; vhost-limits is a component both brokers have.
    vhost = uniq("vhost")
    escaped = path_escape(vhost)
    send("PUT", f"vhosts/{escaped}", {"description": "", "tags": "", "tracing": False}, 201)
    path = f"parameters/vhost-limits/{escaped}/limits"
    body = {"name": "limits", "vhost": vhost, "component": "vhost-limits", "value": {"max-connections": 1000}}
    try:
        send("PUT", path, body, 201)
        send("PUT", path, body, 204)
        assert get(path, "RuntimeParameter") == body  # GetRuntimeParameter()
        assert body in get("parameters", "[]RuntimeParameter")  # ListRuntimeParameters()
        assert body in get("parameters/vhost-limits", "[]RuntimeParameter")  # ListRuntimeParametersFor()
        assert get(f"parameters/vhost-limits/{escaped}", "[]RuntimeParameter") == [body]  # ...In()
        send("DELETE", path, None, 204)  # DeleteRuntimeParameter()
        send("DELETE", path, None, 404)
    finally:
        send("DELETE", f"vhosts/{escaped}", None, 204)
    # ListGlobalParameters(), GetGlobalParameter(). PutGlobalParameter() (the operator's
    # schema replication endpoints) is not replayed: Lepus's global parameters are read-only.
    listed = get("global-parameters", "[]GlobalRuntimeParameter")
    first = listed[0]
    assert get(f"global-parameters/{path_escape(first['name'])}", "GlobalRuntimeParameter") == first
    send("DELETE", f"global-parameters/{path_escape(uniq('global'))}", None, 404)


def test_management_rabbit_hole_definitions(management):
    q, x = uniq("defs-q"), uniq("defs-x")
    # UploadVhostDefinitions(): ExportedDefinitions as Go marshals it, the vhost query-escaped.
    # Go writes `"policies": null` (and queues, exchanges, bindings) when the struct has none:
    # 3.10.8 answers that with a 500, so the replay sets all four.
    upload = {"policies": [],
              "queues": [{"name": q, "durable": True, "auto_delete": False, "arguments": {}}],
              "exchanges": [{"name": x, "type": "direct", "durable": True, "auto_delete": False,
                             "internal": False, "arguments": {}}],
              "bindings": [{"source": x, "destination": q, "destination_type": "queue", "routing_key": "k",
                            "arguments": {}}]}
    send("POST", f"definitions/{query_escape('/')}", upload, 204)
    try:
        everything = get("definitions", "ExportedDefinitions")  # ListDefinitions()
        assert q in [i["name"] for i in everything["queues"]]
        one = get(f"definitions/{query_escape('/')}", "ExportedDefinitions")  # ListVhostDefinitions()
        assert x in [i["name"] for i in one["exchanges"]]
        assert [b["routing_key"] for b in one["bindings"] if b["source"] == x] == ["k"]
        # ListVhostDefinitions() query-escapes the vhost: one with a space is asked for as
        # `a+b`, which names another vhost (3.10.8: 400 vhost_not_found).
        spaced = uniq("vhost").replace("/", " ")
        send("PUT", f"vhosts/{path_escape(spaced)}", {"description": "", "tags": "", "tracing": False}, 201)
        try:
            assert api("GET", f"definitions/{query_escape(spaced)}")[0] == 400
        finally:
            send("DELETE", f"vhosts/{path_escape(spaced)}", None, 204)
        # UploadDefinitions() of what ListDefinitions() gave back (Go marshals the fields it read).
        send("POST", "definitions", {k: everything[k] for k in ["queues", "exchanges", "bindings"]}, 204)
    finally:
        send("DELETE", f"queues/{VHOST}/{path_escape(q)}?", None, 204)
        send("DELETE", f"exchanges/{VHOST}/{path_escape(x)}", None, 204)


# ---------------------------------------------------------------------------------------------
# Connections, channels, consumers
# ---------------------------------------------------------------------------------------------


def test_management_rabbit_hole_connections(management, amqp_url):
    user = uniq("user")
    send("PUT", f"users/{path_escape(user)}", {"name": user, "tags": "", "password": "p"}, 201)
    try:
        send("PUT", f"permissions/{VHOST}/{path_escape(user)}", {"configure": "", "write": "", "read": ""}, 201)
        params = pika.URLParameters(amqp_url)
        params.credentials = pika.PlainCredentials(user, "p")
        conn = pika.BlockingConnection(params)
        # ListConnections()
        name = eventually(lambda: [c["name"] for c in get("connections", "[]ConnectionInfo") if c["user"] == user])[0]
        connection = get(f"connections/{path_escape(name)}", "ConnectionInfo")  # GetConnection()
        assert (connection["vhost"], connection["user"]) == ("/", user)
        assert name in [c["name"] for c in get(f"vhosts/{VHOST}/connections", "[]ConnectionInfo")]
        # ListConnectionsOfUser()
        assert [c["name"] for c in get(f"connections/username/{path_escape(user)}", "[]UserConnectionInfo")] == [name]
        paged = get("connections?page=1&page_size=100", "PagedConnectionInfo")  # PagedListConnections...()
        assert name in [c["name"] for c in paged["items"]]
        send("DELETE", f"connections/{path_escape(name)}", None, 204)  # CloseConnection()
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            conn.process_data_events(time_limit=HANG_GUARD_S)
        # CloseAllConnectionsOfUser()
        conns = [pika.BlockingConnection(params) for _ in range(2)]
        eventually(lambda: len(get(f"connections/username/{path_escape(user)}", "[]UserConnectionInfo")) == 2)
        send("DELETE", f"connections/username/{path_escape(user)}", None, 204)
        for c in conns:
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
                c.process_data_events(time_limit=HANG_GUARD_S)
    finally:
        send("DELETE", f"users/{path_escape(user)}", None, 204)


def test_management_rabbit_hole_channels_and_consumers(management, connect):
    ch = connect().channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q, lambda *a: None, consumer_tag="rh-consumer")
    # ListChannels(), ListVhostChannels(): GetChannel() is not replayed here (Lepus's channels
    # have no path of their own yet).
    eventually(lambda: get("channels", "[]ChannelInfo"))
    get(f"vhosts/{VHOST}/channels", "[]ChannelInfo")
    consumers = eventually(lambda: [c for c in get("consumers", "[]ConsumerInfo")  # ListConsumers()
                                    if c["queue"]["name"] == q])
    assert consumers[0]["queue"] == {"name": q, "vhost": "/"}
    get(f"consumers/{VHOST}", "[]ConsumerInfo")  # ListConsumersIn()
    get(f"queues/{VHOST}/{path_escape(q)}", "QueueInfo")  # with its consumer_details (RabbitMQ)


# ---------------------------------------------------------------------------------------------
# Plugins Debian's 3.10.8 does not enable: federation and shovel fail as there
# ---------------------------------------------------------------------------------------------


def test_management_rabbit_hole_federation_and_shovel_without_their_plugins(management):
    name = uniq("upstream")
    for component, value in [("federation-upstream", {"uri": "amqp://localhost", "reconnect-delay": 5,
                                                      "trust-user-id": False}),
                             ("shovel", {"dest-uri": ["amqp://"], "src-uri": ["amqp://"], "src-queue": "a",
                                         "dest-queue": "b"})]:
        # List: no such parameters; an empty list decodes.
        assert get(f"parameters/{component}", "[]FederationUpstream") == []
        assert get(f"parameters/{component}/{VHOST}", "[]ShovelInfo") == []
        path = f"parameters/{component}/{VHOST}/{path_escape(name)}"
        # PutFederationUpstream() / DeclareShovel(): 400, the component is not there.
        body = ({"name": name, "vhost": "/", "component": component, "value": value}
                if component == "federation-upstream" else {"value": value})
        status, _, error = api("PUT", path, body)
        assert status == 400 and decodes(error, "ErrorResponse")["error"] == "bad_request"
        assert f"component {component} not found" in error["reason"]
        assert api("GET", path)[0] == 404  # GetFederationUpstream() / GetShovel()
        send("DELETE", path, None, 404)  # DeleteFederationUpstream() / DeleteShovel(): success to it
    # ListFederationLinks(), ListShovelStatus(): the plugins' own paths; an error either way.
    assert api("GET", "federation-links")[0] == 404
    assert api("GET", f"federation-links/{VHOST}")[0] >= 400
    assert api("GET", f"shovels/{VHOST}")[0] >= 400
