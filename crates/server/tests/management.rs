//! The management HTTP API end to end: a real broker with its API on an ephemeral port, driven
//! by an HTTP client (hyper) and, for connections and queue counts, by real AMQP clients.
//! Shapes, status codes and error bodies are RabbitMQ 3.10.8's.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::net::SocketAddr;

use base64::Engine;
use clients::{guard, lchan, lconfirm_chan, lconn, ldeclare, lget, lpub, next_blocking, uniq};
use common::{Raw, start_managed, test_config};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lepus_broker::alarms::AlarmLimits;
use lepus_protocol::constants::CONNECTION_FORCED;
use serde_json::{Value, json};

/// An answer: status, `Location` header, and the body as JSON (`Null` when empty).
struct Reply {
    status: u16,
    location: Option<String>,
    www_authenticate: bool,
    body: Value,
}

struct Http {
    base: String,
    user: String,
    password: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http::as_user(addr, "guest", "guest")
    }

    fn as_user(addr: SocketAddr, user: &str, password: &str) -> Http {
        Http::from_source(addr, user, password, [127, 0, 0, 1].into())
    }

    /// A client whose connections come from `source` (any 127/8 address is loopback).
    fn from_source(addr: SocketAddr, user: &str, password: &str, source: std::net::IpAddr) -> Http {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_local_address(Some(source));
        Http {
            base: format!("http://{addr}"),
            user: user.into(),
            password: password.into(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>, auth: bool) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.user, self.password));
            req = req.header("authorization", format!("Basic {token}"));
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let resp = guard(path, self.client.request(req.body(Full::new(bytes)).expect("request"))).await.expect("http");
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|v| v.to_str().expect("ascii").to_owned());
        let www_authenticate = resp.headers().contains_key("www-authenticate");
        let body = guard("body", resp.into_body().collect()).await.expect("body").to_bytes();
        let body = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("JSON body") };
        Reply { status, location, www_authenticate, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, true).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body), true).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body), true).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None, true).await
    }
}

async fn broker() -> (common::Broker, Http) {
    let b = start_managed(test_config()).await;
    let http = Http::new(b.management.expect("management address"));
    (b, http)
}

fn not_authorised(reason: &str) -> Value {
    json!({"error": "not_authorised", "reason": reason})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_follow_the_tags() {
    let (b, http) = broker().await;
    let addr = b.management.expect("address");
    let none = http.call("GET", "/api/overview", None, false).await;
    assert_eq!((none.status, none.www_authenticate, none.body), (401, true, Value::Null));
    let wrong = Http::as_user(addr, "guest", "nope").get("/api/overview").await;
    assert_eq!((wrong.status, wrong.body), (401, json!({"error": "not_authorized", "reason": "Login failed"})));
    for (name, tags) in [("plain", json!("")), ("mgr", json!("management")), ("mon", json!(["monitoring"]))] {
        assert_eq!(http.put(&format!("/api/users/{name}"), json!({"password": "pw", "tags": tags})).await.status, 201);
    }
    let plain = Http::as_user(addr, "plain", "pw").get("/api/overview").await;
    assert_eq!((plain.status, plain.body), (401, not_authorised("Not management user")));
    let mgr = Http::as_user(addr, "mgr", "pw");
    assert_eq!(mgr.get("/api/overview").await.status, 200);
    assert_eq!(mgr.get("/api/whoami").await.body, json!({"name": "mgr", "tags": ["management"]}));
    assert_eq!(mgr.get("/api/users").await.body, not_authorised("Not administrator user"));
    assert_eq!(mgr.get("/api/nodes").await.body, not_authorised("Not monitor user"));
    assert_eq!(mgr.get("/api/definitions").await.status, 401);
    assert_eq!(mgr.put("/api/vhosts/v", json!({})).await.status, 401);
    let mon = Http::as_user(addr, "mon", "pw");
    assert_eq!(mon.get("/api/nodes").await.status, 200);
    assert_eq!(mon.get("/api/users").await.status, 401);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_trickling_its_request_head_is_closed_at_the_header_timeout_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = lepus_server::Config { http_header_timeout_ms: 300, http_connection_max: 1, ..test_config() };
    let b = start_managed(config).await;
    let addr = b.management.expect("address");
    // Half a request: the only connection slot is taken, and the head never completes.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /api/overview HTTP/1.1\r\nHost: lepus\r\nX-Slow: ").await.expect("write");
    // The next client waits in the backlog until the slow socket is closed, then is served.
    let waiting = tokio::spawn(async move { Http::new(addr).get("/api/overview").await.status });
    let mut rest = Vec::new();
    let read = guard("the slow socket's close", slow.read_to_end(&mut rest)).await;
    assert!(
        read.is_err() || rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "closed without an answer: {rest:?}"
    );
    assert_eq!(guard("the waiting client", waiting).await.expect("task"), 200);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_past_its_failed_logins_is_refused_until_its_minute_ends_while_others_log_in() {
    let clock = std::sync::Arc::new(lepus_broker::ManualClock::new(1_000_000));
    let config = lepus_server::Config { login_failures_per_minute: 2, login_failure_delay_ms: 0, ..test_config() };
    let b = common::start_managed_with_clock(config, clock.clone()).await;
    let addr = b.management.expect("address");
    let right = Http::new(addr);
    assert_eq!(right.get("/api/whoami").await.status, 200);
    for _ in 0..2 {
        let wrong = Http::as_user(addr, "guest", "nope").get("/api/whoami").await;
        assert_eq!((wrong.status, wrong.body), (401, json!({"error": "not_authorized", "reason": "Login failed"})));
    }
    let refused = right.get("/api/whoami").await;
    assert_eq!((refused.status, refused.body), (401, json!({"error": "not_authorized", "reason": "Login failed"})));
    let elsewhere = Http::from_source(addr, "guest", "guest", [127, 0, 0, 2].into());
    assert_eq!(elsewhere.get("/api/whoami").await.status, 200, "another source address is not affected");
    clock.advance(60_000);
    assert_eq!(right.get("/api/whoami").await.status, 200, "a new minute");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_waits_for_its_answer_while_right_ones_are_served() {
    let config = lepus_server::Config { login_failure_delay_ms: 600_000, ..test_config() };
    let b = start_managed(config).await;
    let addr = b.management.expect("address");
    let wrong = tokio::spawn(async move { Http::as_user(addr, "guest", "nope").get("/api/whoami").await.status });
    let right = Http::new(addr);
    for _ in 0..3 {
        assert_eq!(right.get("/api/whoami").await.status, 200);
    }
    assert!(!wrong.is_finished(), "the refusal is still held back");
    wrong.abort();
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_nodes_and_health_checks() {
    let (b, http) = broker().await;
    let o = http.get("/api/overview").await;
    assert_eq!(o.status, 200);
    assert_eq!(o.body["rabbitmq_version"], "3.10.8");
    assert_eq!(o.body["product_name"], "Lepus");
    assert_eq!(o.body["object_totals"]["exchanges"], 7);
    assert_eq!(o.body["object_totals"]["queues"], 0);
    assert_eq!(o.body["queue_totals"]["messages"], 0);
    assert!(o.body["message_stats"]["publish"].is_u64());
    let node = o.body["node"].as_str().expect("node").to_owned();
    assert!(node.starts_with("lepus@"));
    let listeners = o.body["listeners"].as_array().expect("listeners");
    assert!(listeners.iter().any(|l| l["protocol"] == "amqp" && l["port"] == b.addr.port()));
    let nodes = http.get("/api/nodes").await.body;
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    assert_eq!(nodes[0]["name"], node);
    assert_eq!(nodes[0]["running"], true);
    // The fields monitoring checks divide (used / total), as RabbitMQ's node has them.
    for (used, total) in [("fd_used", "fd_total"), ("sockets_used", "sockets_total"), ("proc_used", "proc_total")] {
        let (used, total) = (nodes[0][used].as_u64().expect(used), nodes[0][total].as_u64().expect(total));
        assert!(used <= total && total > 0, "{used} of {total}");
    }
    // Mechanisms as offered here (no TLS listener: no EXTERNAL), churn on the node too.
    let enabled: Vec<&str> = nodes[0]["auth_mechanisms"]
        .as_array()
        .expect("auth_mechanisms")
        .iter()
        .filter(|m| m["enabled"] == true)
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(enabled, ["PLAIN", "AMQPLAIN"]);
    assert!(nodes[0]["exchange_types"][0]["description"].is_string());
    assert!(nodes[0]["connection_created"].is_u64() && nodes[0]["queue_declared_details"]["rate"].is_f64());
    assert_eq!(http.get(&format!("/api/nodes/{node}")).await.status, 200);
    assert_eq!(http.get("/api/nodes/rabbit@elsewhere").await.status, 404);
    let auth = http.call("GET", "/api/auth", None, false).await;
    assert_eq!((auth.status, &auth.body["enable_uaa"]), (200, &json!(false)), "asked before login");
    for check in ["alarms", "local-alarms", "virtual-hosts", "node-is-mirror-sync-critical"] {
        let r = http.get(&format!("/api/health/checks/{check}")).await;
        assert_eq!((r.status, r.body), (200, json!({"status": "ok"})), "{check}");
    }
    assert_eq!(http.get("/api/health/checks/node-is-quorum-critical").await.body["status"], "ok");
    let port = b.addr.port();
    let r = http.get(&format!("/api/health/checks/port-listener/{port}")).await;
    assert_eq!((r.status, r.body), (200, json!({"status": "ok", "port": port})));
    let r = http.get("/api/health/checks/port-listener/1").await;
    assert_eq!((r.status, &r.body["status"], &r.body["missing"]), (503, &json!("failed"), &json!(1)));
    assert_eq!(http.get("/api/aliveness-test/%2F").await.body, json!({"status": "ok"}));
    assert_eq!(http.get("/api/aliveness-test/nope").await.status, 404);
    assert_eq!(http.get("/api/nothing-here").await.body, json!({"error": "Object Not Found", "reason": "Not Found"}));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_name_is_configurable_for_tools_that_expect_rabbit_at_host() {
    let config = lepus_server::Config { node_name: Some("rabbit@mq-1".into()), ..test_config() };
    let b = start_managed(config).await;
    let http = Http::new(b.management.expect("management address"));
    assert_eq!(http.get("/api/overview").await.body["node"], "rabbit@mq-1");
    assert_eq!(http.get("/api/nodes/rabbit@mq-1").await.body["name"], "rabbit@mq-1");
    assert_eq!(http.get("/api/global-parameters/cluster_name").await.body["value"], "rabbit@mq-1");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_show_in_nodes_and_fail_the_alarm_health_checks_as_rabbitmq() {
    let (b, http) = broker().await;
    let node = http.get("/api/nodes").await.body[0].clone();
    assert_eq!((node["mem_alarm"].clone(), node["disk_free_alarm"].clone()), (json!(false), json!(false)));
    assert!(node["mem_used"].as_u64().is_some_and(|m| m > 0) && node["mem_limit"].as_u64().is_some_and(|m| m > 0));
    assert_eq!(node["disk_free_limit"], 50_000_000);
    let limits = lepus_broker::alarms::AlarmLimits { memory_limit_bytes: 0, disk_free_limit_bytes: 0 };
    b.service.alarms().set_limits(limits);
    let name = node["name"].as_str().expect("node name");
    let r = http.get("/api/health/checks/alarms").await;
    let expected = json!({
        "status": "failed",
        "reason": "There are alarms in effect in the cluster",
        "alarms": [{"node": name, "resource": "memory"}],
    });
    assert_eq!((r.status, r.body), (503, expected));
    let r = http.get("/api/health/checks/local-alarms").await;
    assert_eq!((r.status, &r.body["reason"]), (503, &json!("There are alarms in effect on the node")));
    assert_eq!(http.get("/api/nodes").await.body[0]["mem_alarm"], true);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_are_listed_and_created() {
    let (b, http) = broker().await;
    assert_eq!(http.put("/api/vhosts/apps", json!({})).await.status, 201);
    assert_eq!(http.put("/api/vhosts/apps", json!({})).await.status, 204);
    let list = http.get("/api/vhosts?columns=name").await.body;
    assert_eq!(list, json!([{"name": "/"}, {"name": "apps"}]));
    let one = http.get("/api/vhosts/%2F").await.body;
    assert_eq!((&one["name"], &one["description"]), (&json!("/"), &json!("Default virtual host")));
    assert_eq!(http.get("/api/vhosts/nope").await.status, 404);
    assert_eq!(http.put("/api/queues/apps/q", json!({})).await.status, 201);
    assert_eq!(http.get("/api/queues/apps?columns=name,vhost").await.body, json!([{"name": "q", "vhost": "apps"}]));
    // The creator got every permission in the new vhost, as RabbitMQ's API gives it.
    let perms = http.get("/api/permissions/apps/guest").await.body;
    assert_eq!((&perms["configure"], &perms["write"], &perms["read"]), (&json!(".*"), &json!(".*"), &json!(".*")));
    assert_eq!(http.delete("/api/vhosts/apps").await.status, 204);
    assert_eq!(http.get("/api/vhosts/apps").await.status, 404);
    assert_eq!(http.get("/api/permissions/apps/guest").await.status, 404, "permissions went with it");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_metadata_is_put_replaced_whole_and_carried_by_definitions_as_rabbitmq() {
    let (b, http) = broker().await;
    let body = json!({"description": "first", "tags": "a, b", "default_queue_type": "quorum"});
    assert_eq!(http.put("/api/vhosts/meta", body).await.status, 201);
    let one = http.get("/api/vhosts/meta").await.body;
    assert_eq!((&one["description"], &one["tags"]), (&json!("first"), &json!(["a", "b"])));
    assert_eq!(one["metadata"], json!({"description": "first", "tags": ["a", "b"]}));
    assert_eq!(one["default_queue_type"], "quorum");
    // A second PUT replaces the whole metadata: what it leaves out is reset (RabbitMQ 3.10.8).
    assert_eq!(http.put("/api/vhosts/meta", json!({"description": "changed"})).await.status, 204);
    let one = http.get("/api/vhosts/meta").await.body;
    assert_eq!((&one["description"], &one["tags"]), (&json!("changed"), &json!([])));
    assert_eq!(one["default_queue_type"], "undefined");
    assert_eq!(http.put("/api/vhosts/meta", json!({"default_queue_type": "fancy"})).await.status, 400);
    assert_eq!(http.put("/api/vhosts/meta", json!({"description": 5})).await.status, 400);
    // Definitions: exported as RabbitMQ 3.11+ does; imported from the top level (3.10) or
    // from `metadata`.
    let d = http.get("/api/definitions").await.body;
    let exported = d["vhosts"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "meta")).cloned();
    assert_eq!(exported.map(|v| v["metadata"]["description"].clone()), Some(json!("changed")));
    let vhosts = json!({"vhosts": [
        {"name": "meta", "description": "imported", "tags": ["t"]},
        {"name": "nested", "metadata": {"description": "inner", "tags": ["n"], "default_queue_type": "classic"}},
    ]});
    assert_eq!(http.post("/api/definitions", vhosts).await.status, 204);
    let one = http.get("/api/vhosts/meta").await.body;
    assert_eq!((&one["description"], &one["tags"]), (&json!("imported"), &json!(["t"])));
    let nested = http.get("/api/vhosts/nested").await.body;
    assert_eq!((&nested["description"], &nested["tags"]), (&json!("inner"), &json!(["n"])));
    assert_eq!(nested["default_queue_type"], "classic");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_topic_permissions_and_limits_are_set_listed_and_cleared() {
    let (b, http) = broker().await;
    assert_eq!(http.put("/api/users/bob", json!({"password": "pw", "tags": ""})).await.status, 201);
    let perms = json!({"configure": "^bob-", "write": ".*", "read": ".*"});
    assert_eq!(http.put("/api/permissions/%2F/bob", perms.clone()).await.status, 201);
    assert_eq!(http.put("/api/permissions/%2F/bob", perms).await.status, 204);
    assert_eq!(
        http.put("/api/permissions/%2F/nobody", json!({"configure": "", "write": "", "read": ""})).await.status,
        404
    );
    assert_eq!(http.put("/api/permissions/%2F/bob", json!({"configure": ""})).await.status, 400);
    let listed = http.get("/api/vhosts/%2F/permissions?columns=user,configure").await.body;
    assert_eq!(listed, json!([{"user": "bob", "configure": "^bob-"}, {"user": "guest", "configure": ".*"}]));
    let topic = json!({"exchange": "amq.topic", "write": "^{username}", "read": ".*"});
    assert_eq!(http.put("/api/topic-permissions/%2F/bob", topic).await.status, 201);
    let topics = http.get("/api/topic-permissions/%2F/bob").await.body;
    assert_eq!(
        topics,
        json!([{"user": "bob", "vhost": "/", "exchange": "amq.topic", "write": "^{username}", "read": ".*"}])
    );
    assert!(b.service.access("bob", "/").has_topic_grants());
    assert_eq!(http.delete("/api/topic-permissions/%2F/bob").await.status, 204);
    assert_eq!(http.delete("/api/permissions/%2F/bob").await.status, 204);
    assert_eq!(http.delete("/api/permissions/%2F/bob").await.status, 404);
    assert!(!b.service.access("bob", "/").may_enter());

    assert_eq!(http.put("/api/vhost-limits/%2F/max-queues", json!({"value": 5})).await.status, 204);
    assert_eq!(http.get("/api/vhost-limits").await.body, json!([{"vhost": "/", "value": {"max-queues": 5}}]));
    assert_eq!(http.put("/api/vhost-limits/%2F/max-channels", json!({"value": 5})).await.status, 400);
    assert_eq!(http.delete("/api/vhost-limits/%2F/max-queues").await.status, 204);
    assert_eq!(http.get("/api/vhost-limits").await.body, json!([]));
    assert_eq!(http.put("/api/user-limits/bob/max-channels", json!({"value": 3})).await.status, 204);
    assert_eq!(http.get("/api/user-limits/bob").await.body, json!([{"user": "bob", "value": {"max-channels": 3}}]));
    assert_eq!(b.service.user_limits("bob").max_channels, Some(3));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_operator_policies_are_set_listed_and_cleared() {
    let (b, http) = broker().await;
    let policy =
        json!({"pattern": "^ttl\\.", "definition": {"message-ttl": 1000}, "priority": 1, "apply-to": "queues"});
    assert_eq!(http.put("/api/policies/%2F/ttl", policy.clone()).await.status, 201);
    assert_eq!(http.put("/api/policies/%2F/ttl", policy).await.status, 204);
    let shown = http.get("/api/policies/%2F/ttl").await.body;
    assert_eq!(
        (&shown["apply-to"], &shown["priority"], &shown["definition"]),
        (&json!("queues"), &json!(1), &json!({"message-ttl": 1000}))
    );
    let bad = json!({"pattern": ".*", "definition": {"max-priority": 3}});
    assert_eq!(http.put("/api/policies/%2F/bad", bad).await.status, 400);
    let op = json!({"pattern": ".*", "definition": {"max-length": 10}});
    assert_eq!(http.put("/api/operator-policies/%2F/cap", op).await.status, 201);
    assert_eq!(http.get("/api/operator-policies?columns=name").await.body, json!([{"name": "cap"}]));
    // A queue shows what applies to it, as RabbitMQ: both names and the merged definition.
    assert_eq!(http.put("/api/queues/%2F/ttl.q", json!({})).await.status, 201);
    let q = http.get("/api/queues/%2F/ttl.q").await.body;
    assert_eq!(
        (&q["policy"], &q["operator_policy"], &q["effective_policy_definition"]),
        (&json!("ttl"), &json!("cap"), &json!({"max-length": 10, "message-ttl": 1000}))
    );
    assert_eq!(http.delete("/api/queues/%2F/ttl.q").await.status, 204);
    assert_eq!(http.delete("/api/policies/%2F/ttl").await.status, 204);
    assert_eq!(http.delete("/api/policies/%2F/ttl").await.status, 404);
    assert_eq!(http.get("/api/policies").await.body, json!([]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_parameters_and_global_parameters_as_rabbitmq() {
    let (b, http) = broker().await;
    let addr = b.management.expect("address");
    assert_eq!(http.get("/api/parameters").await.body, json!([]));
    let limits = json!({"value": {"max-queues": 3, "max-connections": 10}});
    assert_eq!(http.put("/api/parameters/vhost-limits/%2F/limits", limits).await.status, 201);
    assert_eq!(
        http.get("/api/vhost-limits/%2F").await.body[0]["value"],
        json!({"max-connections": 10, "max-queues": 3})
    );
    let op = json!({"value": {"pattern": "^q", "definition": {"max-length": 5}, "priority": 0, "apply-to": "queues"}});
    assert_eq!(http.put("/api/parameters/operator_policy/%2F/op1", op).await.status, 201);
    http.put("/api/policies/%2F/p1", json!({"pattern": "^z", "definition": {"max-length": 7}})).await;
    // Every component but `policy`, which only its own component's list shows.
    let all = http.get("/api/parameters").await.body;
    let components: Vec<&Value> = all.as_array().expect("list").iter().map(|p| &p["component"]).collect();
    assert_eq!(components, [&json!("vhost-limits"), &json!("operator_policy")]);
    let policy = json!({"value": {"pattern": "^z", "definition": {"max-length": 7}, "priority": 0, "apply-to": "all"},
                        "vhost": "/", "component": "policy", "name": "p1"});
    assert_eq!(http.get("/api/parameters/policy").await.body, json!([policy]));
    let shown = http.get("/api/parameters/vhost-limits/%2F/limits").await.body;
    assert_eq!(
        shown,
        json!({"value": {"max-connections": 10, "max-queues": 3}, "vhost": "/", "component": "vhost-limits", "name": "limits"})
    );
    assert_eq!(http.get("/api/parameters/federation-upstream").await.body, json!([]));
    assert_eq!(http.get("/api/parameters/vhost-limits/nope").await.status, 404);
    // Refusals, with RabbitMQ 3.10.8's texts.
    let plugin = http.put("/api/parameters/federation-upstream/%2F/u1", json!({"value": {"uri": "amqp://"}})).await;
    let not_found = "Validation failed\n\ncomponent federation-upstream not found\n";
    assert_eq!((plugin.status, plugin.body), (400, json!({"error": "bad_request", "reason": not_found})));
    let no_priority = json!({"value": {"pattern": "^y", "definition": {"max-length": 3}}});
    let refused = http.put("/api/parameters/operator_policy/%2F/op2", no_priority.clone()).await;
    let missing = "Validation failed\n\nKey \"priority\" not found in op2\n";
    assert_eq!((refused.status, refused.body["reason"].clone()), (400, json!(missing)));
    let via_parameters = http.put("/api/parameters/policy/%2F/p2", no_priority).await;
    assert_eq!(via_parameters.body["reason"], "policies may not be set using this method");
    // Global parameters: the cluster's name and id, read-only.
    let globals = http.get("/api/global-parameters").await.body;
    assert_eq!(globals[0]["name"], "cluster_name");
    assert_eq!(globals[1]["name"], "internal_cluster_id");
    assert_eq!(http.get("/api/global-parameters/cluster_name").await.body, globals[0]);
    assert_eq!(http.get("/api/global-parameters/nope").await.status, 404);
    assert_eq!(http.put("/api/global-parameters/foo", json!({"value": "x"})).await.status, 400);
    // Policymakers read; a management user may not.
    assert_eq!(http.put("/api/users/mgr", json!({"password": "pw", "tags": "management"})).await.status, 201);
    let mgr = Http::as_user(addr, "mgr", "pw").get("/api/parameters").await;
    assert_eq!((mgr.status, mgr.body), (401, not_authorised("User not authorised to access object")));
    // Cleared through the same path.
    assert_eq!(http.delete("/api/parameters/vhost-limits/%2F/limits").await.status, 204);
    assert_eq!(http.delete("/api/parameters/operator_policy/%2F/op1").await.status, 204);
    assert_eq!(http.delete("/api/parameters/operator_policy/%2F/op1").await.status, 404);
    assert_eq!(http.get("/api/parameters").await.body, json!([]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_put_with_passwords_or_hashes_and_deleted() {
    let (b, http) = broker().await;
    let addr = b.management.expect("address");
    assert_eq!(http.put("/api/users/alice", json!({"password": "one", "tags": "management,custom"})).await.status, 201);
    assert_eq!(
        Http::as_user(addr, "alice", "one").get("/api/whoami").await.body["tags"],
        json!(["management", "custom"])
    );
    assert_eq!(http.put("/api/users/alice", json!({"password": "two", "tags": ["monitoring"]})).await.status, 204);
    assert_eq!(Http::as_user(addr, "alice", "one").get("/api/whoami").await.status, 401);
    // Tags changed, password kept when none is given.
    assert_eq!(http.put("/api/users/alice", json!({"tags": "management"})).await.status, 204);
    assert_eq!(Http::as_user(addr, "alice", "two").get("/api/whoami").await.status, 200);
    // RabbitMQ's documented hash of "test12".
    let hash = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";
    let body =
        json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator"});
    assert_eq!(http.put("/api/users/hashed", body).await.status, 201);
    assert_eq!(Http::as_user(addr, "hashed", "test12").get("/api/users/hashed").await.body["password_hash"], hash);
    // A SHA-256 hash given as MD5 is refused (wrong length); a real MD5 one (salt 908DC60A,
    // "test12", made with Python's hashlib) logs in and exports as MD5.
    let bad = json!({"password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ""});
    assert_eq!(http.put("/api/users/md5", bad).await.status, 400);
    let md5 = json!({"password_hash": "kI3GChNpte2FApYFXScl+0dIluk=", "hashing_algorithm": "rabbit_password_hashing_md5", "tags": "management"});
    assert_eq!(http.put("/api/users/md5", md5).await.status, 201);
    let me = Http::as_user(addr, "md5", "test12").get("/api/whoami").await;
    assert_eq!(me.status, 200);
    assert_eq!(http.get("/api/users/md5").await.body["hashing_algorithm"], "rabbit_password_hashing_md5");
    assert_eq!(http.delete("/api/users/md5").await.status, 204);
    let names: Vec<Value> =
        http.get("/api/users").await.body.as_array().expect("list").iter().map(|u| u["name"].clone()).collect();
    assert_eq!(names, [json!("alice"), json!("guest"), json!("hashed")]);
    assert_eq!(http.delete("/api/users/alice").await.status, 204);
    assert_eq!(http.delete("/api/users/alice").await.body, json!({"error": "Object Not Found", "reason": "Not Found"}));
    assert_eq!(http.get("/api/users/alice").await.status, 404);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declare_show_get_purge_and_delete() {
    let (b, http) = broker().await;
    let q = uniq("q");
    let path = format!("/api/queues/%2F/{q}");
    assert_eq!(http.put(&path, json!({"durable": "true", "arguments": {"x-max-length": 10}})).await.status, 201);
    assert_eq!(http.put(&path, json!({"durable": true, "arguments": {"x-max-length": 10}})).await.status, 204);
    let inequivalent = http.put(&path, json!({"durable": false})).await;
    assert_eq!(inequivalent.status, 400);
    assert_eq!(
        inequivalent.body["reason"],
        format!("inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'")
    );
    assert_eq!(http.put("/api/queues/%2F/amq.q", json!({})).await.body, not_authorised("Access refused."));
    assert_eq!(http.put("/api/queues/nope/q", json!({})).await.status, 404);
    assert_eq!(http.put(&path, Value::String("{bad".into())).await.status, 400);

    for body in ["one", "two", "three"] {
        let r = http.post("/api/exchanges/%2F/amq.default/publish", json!({"routing_key": q, "payload": body, "payload_encoding": "string", "properties": {"delivery_mode": 2}})).await;
        assert_eq!(r.body, json!({"routed": true}));
    }
    // A consumer that does not ack holds one message unacknowledged.
    let conn = lconn(&b).await;
    let ch = lchan(&conn).await;
    guard("qos", ch.basic_qos(1, Default::default())).await.expect("qos");
    let _consumer = guard(
        "consume",
        ch.basic_consume(q.as_str().into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await
    .expect("consume");
    let shown = loop {
        let s = http.get(&path).await.body;
        if s["messages_unacknowledged"] == 1 {
            break s;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(
        (shown["messages"].clone(), shown["messages_ready"].clone(), shown["consumers"].clone()),
        (json!(3), json!(2), json!(1))
    );
    for field in ["name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "node", "state", "type"] {
        assert!(shown.get(field).is_some(), "{field} in {shown}");
    }
    assert_eq!(
        (&shown["state"], &shown["type"], &shown["arguments"]),
        (&json!("running"), &json!("classic"), &json!({"x-max-length": 10}))
    );
    let consumers = http.get("/api/consumers/%2F").await.body;
    assert_eq!(consumers[0]["queue"]["name"], q.as_str());
    assert_eq!(consumers[0]["ack_required"], true);
    assert_eq!(consumers[0]["prefetch_count"], 1);

    // get with requeue leaves the messages; with ack takes them.
    let got = http
        .post(
            &format!("{path}/get"),
            json!({"count": "5", "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2}),
        )
        .await
        .body;
    assert_eq!(got.as_array().map(Vec::len), Some(2));
    assert_eq!(
        (&got[0]["payload"], &got[0]["payload_bytes"], &got[0]["message_count"]),
        (&json!("tw"), &json!(3), &json!(1))
    );
    assert_eq!(got[0]["properties"], json!({"delivery_mode": 2}));
    assert_eq!(http.get(&path).await.body["messages_ready"], 2);
    let got = http
        .post(&format!("{path}/get"), json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"}))
        .await
        .body;
    assert_eq!(
        (&got[0]["payload"], &got[0]["payload_encoding"], &got[0]["redelivered"]),
        (&json!("dHdv"), &json!("base64"), &json!(true))
    );
    assert_eq!(http.get(&path).await.body["messages_ready"], 1);
    assert_eq!(http.post(&format!("{path}/get"), json!({"count": 1})).await.status, 400);

    assert_eq!(http.delete(&format!("{path}/contents")).await.status, 204);
    assert_eq!(http.get(&path).await.body["messages_ready"], 0);
    drop(ch);
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    assert_eq!(http.delete(&path).await.status, 204);
    assert_eq!(http.delete(&path).await.status, 404);
    assert_eq!(http.get(&path).await.body, json!({"error": "Object Not Found", "reason": "Not Found"}));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_sort_and_cut_as_rabbitmq() {
    let (b, http) = broker().await;
    for i in 0..5 {
        assert_eq!(http.put(&format!("/api/queues/%2F/page.{i}"), json!({"durable": false})).await.status, 201);
    }
    let page = http.get("/api/queues?page=2&page_size=2&columns=name").await.body;
    assert_eq!(
        page,
        json!({"filtered_count": 5, "item_count": 2, "items": [{"name": "page.2"}, {"name": "page.3"}], "page": 2, "page_count": 3, "page_size": 2, "total_count": 5})
    );
    let filtered = http.get("/api/queues?page=1&name=PAGE.%5B14%5D&use_regex=true&columns=name").await.body;
    assert_eq!(filtered["items"], json!([{"name": "page.1"}, {"name": "page.4"}]));
    let sorted = http.get("/api/queues?sort=name&sort_reverse=true&columns=name").await.body;
    assert_eq!(sorted[0], json!({"name": "page.4"}));
    let out_of_range = http.get("/api/queues?page=9").await;
    assert_eq!((out_of_range.status, &out_of_range.body["error"]), (400, &json!("page_out_of_range")));
    let too_big = http.get("/api/queues?page=1&page_size=501").await;
    assert_eq!(too_big.body["error"], "invalid_pagination_parameters");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_and_bindings() {
    let (b, http) = broker().await;
    let x = uniq("x");
    let q = uniq("q");
    assert_eq!(
        http.put(&format!("/api/exchanges/%2F/{x}"), json!({"type": "topic", "durable": false})).await.status,
        201
    );
    assert_eq!(
        http.put(&format!("/api/exchanges/%2F/{x}"), json!({"type": "topic", "durable": false})).await.status,
        204
    );
    assert_eq!(
        http.put("/api/exchanges/%2F/bad", json!({"type": "nope"})).await.body,
        json!({"error": "bad_request", "reason": "unknown exchange type 'nope'"})
    );
    let shown = http.get(&format!("/api/exchanges/%2F/{x}")).await.body;
    assert_eq!((&shown["type"], &shown["durable"], &shown["vhost"]), (&json!("topic"), &json!(false), &json!("/")));
    assert_eq!(http.get("/api/exchanges/%2F/amq.default").await.body["name"], "");
    assert_eq!(http.get("/api/exchanges/%2F").await.body.as_array().map(Vec::len), Some(8));
    http.put(&format!("/api/queues/%2F/{q}"), json!({})).await;
    let publish = format!("/api/exchanges/%2F/{x}/publish");
    let refused = http.post(&publish, json!({"routing_key": "a.b", "payload": "p"})).await;
    assert_eq!((refused.status, &refused.body["reason"]), (400, &json!("[{key_missing,properties}]")));
    assert_eq!(
        http.post(&publish, json!({"routing_key": "a.b", "payload": "p", "properties": {}})).await.body,
        json!({"routed": false})
    );

    let made = http.post(&format!("/api/bindings/%2F/e/{x}/q/{q}"), json!({"routing_key": "a.*"})).await;
    // The properties key (`a.%2A`) escaped once more, as RabbitMQ sends it.
    assert_eq!((made.status, made.location.as_deref()), (201, Some(format!("{q}/a.%252A").as_str())));
    let with_args = http
        .post(&format!("/api/bindings/%2F/e/{x}/q/{q}"), json!({"routing_key": "a.*", "arguments": {"k": 1}}))
        .await;
    let args_key = with_args.location.expect("location").rsplit('/').next().expect("key").to_owned();
    assert!(args_key.starts_with("a.%252A~"), "{args_key}");
    let between = http.get(&format!("/api/bindings/%2F/e/{x}/q/{q}")).await.body;
    assert_eq!(between.as_array().map(Vec::len), Some(2));
    assert_eq!(between[0]["destination_type"], "queue");
    let one = http.get(&format!("/api/bindings/%2F/e/{x}/q/{q}/{args_key}")).await.body;
    assert_eq!((&one["arguments"], &one["properties_key"]), (&json!({"k": 1}), &json!(args_key.replace("%25", "%"))));
    assert_eq!(
        http.post(&publish, json!({"routing_key": "a.b", "payload": "p", "properties": {}})).await.body,
        json!({"routed": true})
    );
    let queue_bindings = http.get(&format!("/api/queues/%2F/{q}/bindings")).await.body;
    assert_eq!(queue_bindings.as_array().map(Vec::len), Some(3), "the default exchange's, and two");
    assert_eq!(
        http.get(&format!("/api/exchanges/%2F/{x}/bindings/source")).await.body.as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(http.delete(&format!("/api/bindings/%2F/e/{x}/q/{q}/{args_key}")).await.status, 204);
    assert_eq!(http.delete(&format!("/api/bindings/%2F/e/{x}/q/{q}/a.%252A")).await.status, 204);
    assert_eq!(http.delete(&format!("/api/bindings/%2F/e/{x}/q/{q}/a.%252A")).await.status, 404);
    assert_eq!(
        http.post(&publish, json!({"routing_key": "a.b", "payload": "p", "properties": {}})).await.body,
        json!({"routed": false})
    );
    // Exchange to exchange.
    let x2 = uniq("x2");
    http.put(&format!("/api/exchanges/%2F/{x2}"), json!({"type": "fanout"})).await;
    assert_eq!(
        http.post(&format!("/api/bindings/%2F/e/{x}/e/{x2}"), json!({})).await.location,
        Some(format!("{x2}/~"))
    );
    assert_eq!(http.get(&format!("/api/exchanges/%2F/{x2}/bindings/destination")).await.body[0]["source"], x.as_str());
    assert_eq!(http.post("/api/bindings/%2F/e/nope/q/nope", json!({})).await.status, 404);
    let all = http.get("/api/bindings/%2F").await.body;
    assert!(all.as_array().expect("list").iter().any(|b| b["destination_type"] == "exchange"));
    assert_eq!(http.delete(&format!("/api/exchanges/%2F/{x}")).await.status, 204);
    assert_eq!(http.delete(&format!("/api/exchanges/%2F/{x}")).await.status, 404);
    assert_eq!(http.post(&publish, json!({"routing_key": "k", "payload": "p"})).await.status, 404);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_and_closed_with_320() {
    let (b, http) = broker().await;
    let mut raw = Raw::open_with_channel(b.addr).await;
    let list = http.get("/api/connections").await.body;
    let conn = &list[0];
    assert_eq!(
        (&conn["user"], &conn["vhost"], &conn["protocol"]),
        (&json!("guest"), &json!("/"), &json!("AMQP 0-9-1"))
    );
    // What it negotiated, as 3.10.8 shows it.
    assert_eq!(
        (&conn["auth_mechanism"], &conn["ssl"], &conn["ssl_protocol"]),
        (&json!("PLAIN"), &json!(false), &Value::Null)
    );
    assert!(
        conn["frame_max"].as_u64().expect("frame_max") >= 4096
            && conn["channel_max"].as_u64().expect("channel_max") > 0
    );
    assert!(conn["timeout"].is_u64(), "{conn}");
    let name = conn["name"].as_str().expect("name").to_owned();
    assert!(name.ends_with(&format!(" -> {}", b.addr)), "{name}");
    assert_eq!(http.get("/api/channels").await.body[0]["connection_details"]["name"], name.as_str());
    assert_eq!(http.get("/api/overview").await.body["object_totals"]["connections"], 1);
    let encoded = encode_segment(&name);
    assert_eq!(http.get(&format!("/api/connections/{encoded}")).await.body["name"], name.as_str());
    assert_eq!(http.delete(&format!("/api/connections/{encoded}")).await.status, 204);
    let close = raw.expect_connection_close().await;
    assert_eq!(close.reply_code, CONNECTION_FORCED);
    assert!(String::from_utf8_lossy(close.reply_text.as_bytes()).contains("Closed via management plugin"));
    assert_eq!(http.delete("/api/connections/nope").await.status, 404);
    b.stop().await;
}

/// Each connection's `state` in `/api/connections`, by name.
async fn connection_states(http: &Http) -> std::collections::BTreeMap<String, String> {
    let list = http.get("/api/connections").await.body;
    let list = list.as_array().expect("list").iter();
    list.map(|c| (c["name"].as_str().expect("name").to_owned(), c["state"].as_str().expect("state").to_owned()))
        .collect()
}

/// RabbitMQ 3.10.8's states under an alarm: every connection `blocking`, a publisher held by
/// it `blocked`, all `running` once it clears; channels stay `running` throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_show_blocking_and_blocked_while_an_alarm_holds_publishers() {
    let (b, http) = broker().await;
    let idle = lconn(&b).await;
    let idle_name = connection_states(&http).await.into_keys().next().expect("one connection");
    let publisher = lconn(&b).await;
    let mut events = Box::pin(publisher.events_listener());
    let ch = lchan(&publisher).await;
    let states = connection_states(&http).await;
    let publisher_name = states.keys().find(|n| **n != idle_name).expect("two connections").clone();
    assert!(states.values().all(|s| s == "running"), "{states:?}");

    b.service.alarms().set_limits(AlarmLimits { memory_limit_bytes: 0, disk_free_limit_bytes: 0 });
    assert!(connection_states(&http).await.values().all(|s| s == "blocking"));
    let publish =
        ch.basic_publish("".into(), "nowhere".into(), BasicPublishOptions::default(), b"x", Default::default());
    guard("basic.publish", publish).await.expect("sent");
    assert_eq!(next_blocking(&mut events).await.as_deref(), Some("low on memory"));
    let states = connection_states(&http).await;
    assert_eq!((states[&publisher_name].as_str(), states[&idle_name].as_str()), ("blocked", "blocking"));
    let channels = http.get("/api/channels").await.body;
    assert!(channels.as_array().expect("list").iter().all(|c| c["state"] == "running"), "{channels}");

    b.service.alarms().set_limits(AlarmLimits { memory_limit_bytes: u64::MAX, disk_free_limit_bytes: 0 });
    assert_eq!(next_blocking(&mut events).await, None, "connection.unblocked");
    assert!(connection_states(&http).await.values().all(|s| s == "running"));
    drop(idle);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_user_sees_only_its_own_connections() {
    let (b, http) = broker().await;
    http.put("/api/users/mgr", json!({"password": "pw", "tags": "management"})).await;
    let _raw = Raw::open_with_channel(b.addr).await;
    let mgr = Http::as_user(b.management.expect("address"), "mgr", "pw");
    assert_eq!(mgr.get("/api/connections").await.body, json!([]));
    assert_eq!(http.get("/api/connections").await.body.as_array().map(Vec::len), Some(1));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_export_in_rabbitmq_s_format() {
    let (b, http) = broker().await;
    http.put("/api/exchanges/%2F/defs.x", json!({"type": "fanout"})).await;
    http.put("/api/queues/%2F/defs.q", json!({"arguments": {"x-queue-type": "quorum"}})).await;
    http.post("/api/bindings/%2F/e/defs.x/q/defs.q", json!({"routing_key": "r"})).await;
    let d = http.get("/api/definitions").await.body;
    assert_eq!(d["rabbitmq_version"], "3.10.8");
    assert_eq!(d["users"][0]["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let default_metadata = json!({"description": "Default virtual host", "tags": []});
    let default_vhost =
        json!({"name": "/", "description": "Default virtual host", "tags": [], "metadata": default_metadata});
    assert_eq!(d["vhosts"], json!([default_vhost]));
    assert_eq!(
        d["queues"],
        json!([{"name": "defs.q", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}}])
    );
    assert_eq!(
        d["exchanges"],
        json!([{"name": "defs.x", "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}])
    );
    assert_eq!(
        d["bindings"],
        json!([{"source": "defs.x", "vhost": "/", "destination": "defs.q", "destination_type": "queue", "routing_key": "r", "arguments": {}}])
    );
    assert_eq!(
        d["permissions"],
        json!([{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}])
    );
    for key in ["topic_permissions", "parameters", "policies"] {
        assert_eq!(d[key], json!([]), "{key}");
    }
    let globals: Vec<&Value> = d["global_parameters"].as_array().expect("list").iter().map(|p| &p["name"]).collect();
    assert_eq!(globals, [&json!("cluster_name"), &json!("internal_cluster_id")]);
    // Policies, topic permissions, vhost limits and operator policies go both ways; the
    // global parameters exported are taken back without a change.
    let operator_policy =
        json!({"pattern": "^c", "definition": {"max-length": 3}, "priority": 1, "apply-to": "queues"});
    let extra = json!({
        "policies": [{"vhost": "/", "name": "ttl", "pattern": "^t", "apply-to": "queues", "definition": {"message-ttl": 5}, "priority": 2}],
        "topic_permissions": [{"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "^a", "read": ".*"}],
        "parameters": [
            {"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 9}},
            {"vhost": "/", "component": "operator_policy", "name": "cap", "value": operator_policy},
        ],
        "global_parameters": d["global_parameters"],
    });
    assert_eq!(http.post("/api/definitions", extra.clone()).await.status, 204);
    let d = http.get("/api/definitions").await.body;
    for key in ["policies", "topic_permissions", "parameters", "global_parameters"] {
        assert_eq!(d[key], extra[key], "{key}");
    }
    assert_eq!(http.get("/api/operator-policies/%2F/cap").await.body["definition"], json!({"max-length": 3}));
    let per_vhost = http.get("/api/definitions/%2F").await.body;
    assert_eq!(per_vhost["queues"][0].get("vhost"), None);
    let missing = http.get("/api/definitions/nope").await;
    assert_eq!((missing.status, &missing.body["reason"]), (400, &json!("vhost_not_found")));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_message_published_over_http_is_stored_before_the_answer() {
    let dir = std::env::temp_dir().join(uniq("mgmt-durable"));
    let config = lepus_server::Config { data_dir: Some(dir.clone()), ..test_config() };
    let b = start_managed(config.clone()).await;
    let http = Http::new(b.management.expect("address"));
    http.put("/api/queues/%2F/kept", json!({"durable": true})).await;
    let body = json!({"routing_key": "kept", "payload": "stored", "properties": {"delivery_mode": 2}});
    assert_eq!(http.post("/api/exchanges/%2F/amq.default/publish", body).await.body, json!({"routed": true}));
    b.stop().await;
    let b = start_managed(config).await;
    let http = Http::new(b.management.expect("address"));
    let got = http.post("/api/queues/%2F/kept/get", json!({"count": 1, "ackmode": "ack_requeue_false"})).await.body;
    assert_eq!(got[0]["payload"], "stored");
    b.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A lapin connection and channel, and a queue declared on it.
async fn declared_queue(b: &common::Broker) -> (lapin::Connection, lapin::Channel, String) {
    let conn = lconn(b).await;
    let ch = lchan(&conn).await;
    let q = uniq("q");
    guard("declare", ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    (conn, ch, q)
}

/// Publishes `m` to queue `q` through the default exchange.
async fn publish(ch: &lapin::Channel, q: &str) {
    guard("publish", ch.basic_publish("".into(), q.into(), BasicPublishOptions::default(), b"m", Default::default()))
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_through_amqp_shows_in_the_overview() {
    let (b, http) = broker().await;
    let (conn, ch, q) = declared_queue(&b).await;
    publish(&ch, &q).await;
    let totals = loop {
        let o = http.get("/api/overview").await.body;
        if o["queue_totals"]["messages"] == 1 {
            break o;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(totals["object_totals"]["queues"], 1);
    assert_eq!(totals["message_stats"]["publish"], 1);
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    b.stop().await;
}

/// A definitions export of Debian's RabbitMQ 3.10.8 (`GET /api/definitions`): two users, two
/// vhosts, quorum, priority, TTL/DLX and length-limited queues, an alternate exchange, a
/// headers binding with arguments, an exchange-to-exchange binding.
const RABBITMQ_DEFINITIONS: &str = include_str!("data/rabbitmq-3.10.8-definitions.json");

/// The entries of `key`, each as canonical text, sorted: the same set whatever the order.
fn entries(doc: &Value, key: &str, fields: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = doc[key]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| fields.iter().map(|f| format!("{f}={}", e[f])).collect::<Vec<_>>().join(" "))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_definitions_import_and_export_back_equivalently() {
    let (b, http) = broker().await;
    let sample: Value = serde_json::from_str(RABBITMQ_DEFINITIONS).expect("sample JSON");
    assert_eq!(http.post("/api/definitions", sample.clone()).await.status, 204);
    assert_eq!(http.post("/api/definitions", sample.clone()).await.status, 204, "importing again changes nothing");
    let exported = http.get("/api/definitions").await.body;
    let user_fields = ["name", "password_hash", "hashing_algorithm", "tags"];
    assert_eq!(entries(&exported, "users", &user_fields), entries(&sample, "users", &user_fields));
    assert_eq!(entries(&exported, "vhosts", &["name"]), entries(&sample, "vhosts", &["name"]));
    let queue = ["name", "vhost", "durable", "auto_delete", "arguments"];
    assert_eq!(entries(&exported, "queues", &queue), entries(&sample, "queues", &queue));
    let exchange = ["name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"];
    assert_eq!(entries(&exported, "exchanges", &exchange), entries(&sample, "exchanges", &exchange));
    let binding = ["source", "vhost", "destination", "destination_type", "routing_key", "arguments"];
    assert_eq!(entries(&exported, "bindings", &binding), entries(&sample, "bindings", &binding));
    // The imported password hash logs in ("s3cret" was set on RabbitMQ).
    let app = Http::as_user(b.management.expect("address"), "app", "s3cret");
    assert_eq!(app.get("/api/whoami").await.body, json!({"name": "app", "tags": ["management", "custom"]}));
    // Into one vhost: entries without a vhost land in the path's.
    let one = json!({"queues": [{"name": "imported", "durable": true, "auto_delete": false, "arguments": {}}]});
    assert_eq!(http.post("/api/definitions/apps", one).await.status, 204);
    assert_eq!(http.get("/api/queues/apps/imported").await.status, 200);
    let bad = http.call("POST", "/api/definitions", Some(Value::String("nope".into())), true).await;
    assert_eq!((bad.status, bad.body), (400, json!({"error": "bad_request", "reason": "failed_to_parse_json"})));
    b.stop().await;
}

/// Every page of `path` sorted by `column` (each way) is the slice of the whole sorted list
/// (which is built whole, as before lists were built lazily): same items, same order, ties
/// included.
async fn assert_pages_are_the_whole_sorted_list(http: &Http, path: &str, column: &str) {
    for reverse in ["false", "true"] {
        let query = format!("{path}?sort={column}&sort_reverse={reverse}");
        let whole = http.get(&query).await.body;
        let whole = whole.as_array().unwrap_or_else(|| panic!("{query}: {whole}"));
        let mut paged = Vec::new();
        for page in 1..=whole.len().div_ceil(3).max(1) {
            let reply = http.get(&format!("{query}&page={page}&page_size=3")).await.body;
            assert_eq!(reply["total_count"], whole.len(), "{query}");
            paged.extend(reply["items"].as_array().cloned().unwrap_or_default());
        }
        assert_eq!(&paged, whole, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_sorted_by_counts_rates_and_fields_are_the_whole_sorted_lists() {
    let (b, http) = broker().await;
    // Samples far ahead of the broker's own sampler (which then changes nothing), 5 s apart.
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    // Messages per queue, with ties; some queues get them through exchanges.
    let counts = [2, 0, 3, 2, 0, 1, 2];
    for (i, n) in counts.iter().enumerate() {
        assert_eq!(http.put(&format!("/api/queues/%2F/sort.{i}"), json!({"durable": i % 2 == 0})).await.status, 201);
        for _ in 0..*n {
            let publish = json!({"routing_key": format!("sort.{i}"), "payload": "x", "payload_encoding": "string", "properties": {}});
            assert_eq!(
                http.post("/api/exchanges/%2F/amq.default/publish", publish).await.body,
                json!({"routed": true})
            );
        }
    }
    for (x, kind) in [("sort.x1", "fanout"), ("sort.x2", "direct"), ("sort.x3", "fanout")] {
        assert_eq!(http.put(&format!("/api/exchanges/%2F/{x}"), json!({"type": kind})).await.status, 201);
    }
    for (source, destination, key) in [
        ("sort.x1", "q/sort.0", "b"),
        ("sort.x1", "q/sort.0", "a"),
        ("sort.x2", "q/sort.1", "a"),
        ("sort.x3", "e/sort.x1", "c"),
    ] {
        let (kind, name) = destination.split_once('/').expect("kind/name");
        let path = format!("/api/bindings/%2F/e/{source}/{kind}/{name}");
        assert_eq!(http.post(&path, json!({"routing_key": key, "arguments": {}})).await.status, 201);
    }
    for (x, key) in [("sort.x1", ""), ("sort.x1", ""), ("sort.x2", "nowhere"), ("sort.x3", "")] {
        let publish = json!({"routing_key": key, "payload": "x", "payload_encoding": "string", "properties": {}});
        http.post(&format!("/api/exchanges/%2F/{x}/publish"), publish).await;
    }
    b.service.sample_rates(t0 + 5_000);
    let queue_columns: &[&str] = &[
        "messages",
        "messages_ready",
        "consumers",
        "message_stats.publish",
        "message_stats.publish_details.rate",
        "message_stats.deliver_get_details.rate",
        "message_stats.ack_details.rate",
        "message_stats.deliver",
        "message_stats.get_empty",
        "memory",
        "messages_ram",
        "durable",
        "name",
    ];
    let exchange_columns: &[&str] = &[
        "message_stats.publish_in_details.rate",
        "message_stats.publish_in",
        "message_stats.publish_out",
        "type",
        "name",
    ];
    let binding_columns: &[&str] =
        &["routing_key", "destination", "source", "properties_key", "destination_type", "vhost"];
    let lists: [(&[&str], &[&str]); 3] = [
        (&["/api/queues", "/api/queues/%2F"], queue_columns),
        (&["/api/exchanges", "/api/exchanges/%2F"], exchange_columns),
        (
            &[
                "/api/bindings",
                "/api/bindings/%2F",
                "/api/exchanges/%2F/sort.x1/bindings/source",
                "/api/queues/%2F/sort.0/bindings",
            ],
            binding_columns,
        ),
    ];
    for (paths, columns) in lists {
        for (path, column) in paths.iter().flat_map(|p| columns.iter().map(move |c| (p, c))) {
            assert_pages_are_the_whole_sorted_list(&http, path, column).await;
        }
    }
    // The sorted pages themselves, as RabbitMQ sorts: ties keep the list's order.
    let by_messages = http.get("/api/queues?sort=messages&sort_reverse=true&page=1&page_size=2&columns=messages").await;
    // sort.0: 2 of its own, 2 through sort.x1, 1 through sort.x3 and sort.x1.
    assert_eq!(by_messages.body["items"], json!([{"messages": 5}, {"messages": 3}]));
    let by_rate = http
        .get("/api/exchanges?sort=message_stats.publish_in&sort_reverse=true&page=1&page_size=2&columns=name")
        .await;
    assert_eq!(by_rate.body["items"], json!([{"name": ""}, {"name": "sort.x1"}]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rates_come_from_the_last_two_samples() {
    let (b, http) = broker().await;
    let (conn, ch, q) = declared_queue(&b).await;
    // Samples far ahead of the broker's own sampler (which then changes nothing), 5 s apart.
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    for _ in 0..10 {
        publish(&ch, &q).await;
    }
    let path = format!("/api/queues/%2F/{q}");
    while http.get(&path).await.body["messages"] != 10 {
        tokio::task::yield_now().await;
    }
    b.service.sample_rates(t0 + 5_000);
    let queue = http.get(&path).await.body;
    assert_eq!(queue["message_stats"]["publish"], 10);
    assert_eq!(queue["message_stats"]["publish_details"], json!({"rate": 2.0}));
    let listed = http.get("/api/queues").await.body;
    assert_eq!(listed[0]["message_stats"]["publish_details"]["rate"], 2.0);
    let overview = http.get("/api/overview").await.body;
    assert_eq!(overview["message_stats"]["publish_details"]["rate"], 2.0);
    assert_eq!(overview["message_stats"]["deliver_get_details"]["rate"], 0.0);
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    b.stop().await;
}

/// `s` as one path segment: every byte but letters, digits and `.` escaped.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|c| if c.is_ascii_alphanumeric() || c == b'.' { (c as char).to_string() } else { format!("%{c:02X}") })
        .collect()
}

/// The connection named `name` as `/api/connections/{name}` shows it.
async fn connection_named(http: &Http, name: &str) -> Value {
    let path = format!("/api/connections/{}", encode_segment(name));
    let reply = http.get(&path).await;
    assert_eq!(reply.status, 200, "{path}");
    reply.body
}

/// Publishes `n` messages of `bytes` bytes to `exchange` with `key`, each confirmed.
async fn publish_confirmed(ch: &lapin::Channel, exchange: &str, key: &str, n: usize, bytes: usize) {
    let body = vec![b'm'; bytes];
    for _ in 0..n {
        let confirm = guard(
            "publish",
            ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), &body, Default::default()),
        )
        .await
        .expect("publish");
        guard("confirm", confirm).await.expect("confirm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_show_socket_bytes_and_calls_with_rates_from_two_samples() {
    let (b, http) = broker().await;
    let conn = lconn(&b).await;
    let ch = clients::lconfirm_chan(&conn).await;
    let q = uniq("q");
    guard("declare", ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    let name = http.get("/api/connections").await.body[0]["name"].as_str().expect("name").to_owned();
    let before = connection_named(&http, &name).await;
    publish_confirmed(&ch, "", &q, 20, 1_000).await;
    b.service.sample_rates(t0 + 5_000);
    let after = connection_named(&http, &name).await;
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(count(&after, "recv_oct") >= count(&before, "recv_oct") + 20 * 1_000, "{after}");
    assert!(count(&after, "recv_cnt") > count(&before, "recv_cnt"));
    assert!(count(&after, "send_cnt") > count(&before, "send_cnt"), "20 confirms went out");
    assert!(count(&after, "send_oct") > count(&before, "send_oct"));
    let rate = after["recv_oct_details"]["rate"].as_f64().expect("rate");
    assert!(rate >= 20.0 * 1_000.0 / 5.0, "at least the bodies in 5 s: {rate}");
    assert!(after["send_cnt_details"]["rate"].as_f64().expect("rate") > 0.0);
    let listed = http.get("/api/connections?columns=name,recv_oct,send_cnt_details").await.body;
    assert!(listed[0]["recv_oct"].as_u64().expect("listed") >= count(&after, "recv_oct"));
    assert!(listed[0]["send_cnt_details"]["rate"].is_f64());
    let default = http.get("/api/exchanges/%2F/amq.default").await.body;
    assert_eq!(
        (&default["message_stats"]["publish_in"], &default["message_stats"]["publish_out"]),
        (&json!(20), &json!(20))
    );
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_count_messages_in_and_the_queue_copies_out_as_rabbitmq() {
    let (b, http) = broker().await;
    for (x, kind) in [("xf", "fanout"), ("x2", "fanout"), ("xd", "direct")] {
        assert_eq!(http.put(&format!("/api/exchanges/%2F/{x}"), json!({"type": kind})).await.status, 201);
    }
    for q in ["q1", "q2", "q3"] {
        assert_eq!(http.put(&format!("/api/queues/%2F/{q}"), json!({})).await.status, 201);
    }
    for path in ["e/xf/q/q1", "e/xf/q/q2", "e/xf/e/x2", "e/x2/q/q3"] {
        assert_eq!(http.post(&format!("/api/bindings/%2F/{path}"), json!({"routing_key": ""})).await.status, 201);
    }
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    let conn = lconn(&b).await;
    let ch = clients::lconfirm_chan(&conn).await;
    publish_confirmed(&ch, "xf", "", 5, 10).await;
    publish_confirmed(&ch, "xd", "nowhere", 3, 10).await;
    b.service.sample_rates(t0 + 5_000);
    let xf = http.get("/api/exchanges/%2F/xf").await.body;
    assert_eq!(
        xf["message_stats"],
        json!({"publish_in": 5, "publish_in_details": {"rate": 1.0}, "publish_out": 15, "publish_out_details": {"rate": 3.0}}),
        "three queues each, one through x2"
    );
    let listed = http.get("/api/exchanges/%2F").await.body;
    let named = |n: &str| listed.as_array().expect("list").iter().find(|x| x["name"] == n).expect("listed").clone();
    assert_eq!(named("xf")["message_stats"]["publish_out"], 15);
    assert_eq!(named("xd")["message_stats"], json!({"publish_in": 3, "publish_in_details": {"rate": 0.6}}));
    assert!(named("x2").get("message_stats").is_none(), "only the exchange published to counts");
    let published =
        http.post("/api/exchanges/%2F/xd/publish", json!({"routing_key": "k", "payload": "p", "properties": {}})).await;
    assert_eq!(published.body, json!({"routed": false}));
    assert_eq!(http.get("/api/exchanges/%2F/xd").await.body["message_stats"]["publish_in"], 4, "HTTP publishes count");
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_s_churn_rates_count_connections_channels_and_queues() {
    let (b, http) = broker().await;
    let churn = |o: &Value, k: &str| o["churn_rates"][k].as_u64().unwrap_or_else(|| panic!("{k} in {o}"));
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    let before = http.get("/api/overview").await.body;
    let conn = lconn(&b).await;
    let ch = lchan(&conn).await;
    let closed = lchan(&conn).await;
    guard("channel.close", closed.close(200, "bye".into())).await.expect("channel.close");
    for q in ["c1", "c1", "c2"] {
        guard("declare", ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default()))
            .await
            .expect("declare");
    }
    assert_eq!(http.delete("/api/queues/%2F/c2").await.status, 204);
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    while http.get("/api/overview").await.body["object_totals"]["connections"] != 0 {
        tokio::task::yield_now().await;
    }
    b.service.sample_rates(t0 + 5_000);
    let after = http.get("/api/overview").await.body;
    for (k, n) in [
        ("connection_created", 1),
        ("connection_closed", 1),
        ("channel_created", 2),
        ("channel_closed", 2),
        ("queue_declared", 3),
        ("queue_created", 2),
        ("queue_deleted", 1),
    ] {
        assert_eq!(churn(&after, k) - churn(&before, k), n, "{k}");
        assert_eq!(after["churn_rates"][format!("{k}_details")], json!({"rate": n as f64 / 5.0}), "{k}");
    }
    b.stop().await;
}

/// The API's get, like `basic.get`, waits while a requeue comes back to the queue in pieces
/// (the hold taken here through the broker service), then takes the first requeued message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_during_a_held_requeue_waits_and_takes_the_first_requeued_message() {
    let (b, http) = broker().await;
    let conn = lconn(&b).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("held-api-get");
    ldeclare(&ch, &q, Default::default(), Default::default()).await;
    for body in ["m0", "m1", "m2"] {
        lpub(&ch, "", &q, body.as_bytes()).await;
    }
    let taking = lchan(&conn).await;
    assert_eq!(lget(&taking, &q, false).await.expect("m0").delivery.data, b"m0");
    let name = lepus_protocol::ShortStr::try_from(q.as_str()).expect("name");
    let queue = b.service.vhost("/").expect("vhost").queue(&name, 0).expect("queue");
    let hold = lepus_broker::queue::RequeueHold::new(queue.clone());
    guard("channel.close", taking.close(200, "bye".into())).await.expect("close");
    let path = format!("/api/queues/%2F/{q}/get");
    let get = tokio::spawn(async move {
        http.post(&path, json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})).await
    });
    guard("the get waiting for the hold", async {
        while queue.held_gets() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(hold);
    let got = guard("the API's get", get).await.expect("get task");
    assert_eq!(got.status, 200);
    assert_eq!((&got.body[0]["payload"], &got.body[0]["redelivered"]), (&json!("m0"), &json!(true)));
    conn.close(200, "bye".into()).await.expect("close");
    b.stop().await;
}

/// What rabbit-hole (Terraform's provider, the Kubernetes topology operator) calls beyond the
/// basics, as RabbitMQ 3.10.8 answers it (tests/conformance/python/test_rabbit_hole_calls.py
/// replays its calls against both brokers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_hole_s_other_calls() {
    let (b, http) = broker().await;
    // A trailing slash, as rabbit-hole's ListUsers, ListBindings, GetClusterName send it.
    assert_eq!(http.get("/api/users/").await.body, http.get("/api/users").await.body);
    let name = http.get("/api/cluster-name/").await.body["name"].clone();
    assert_eq!(http.put("/api/cluster-name", json!({"name": name})).await.status, 204);
    assert_eq!(http.put("/api/cluster-name", json!({"name": "other"})).await.status, 400);
    let flags = http.get("/api/feature-flags").await.body;
    assert!(flags.as_array().is_some_and(|f| f.iter().all(|f| f["state"] == "enabled")), "{flags}");
    assert_eq!(http.put("/api/feature-flags/quorum_queue/enable", json!({"name": "quorum_queue"})).await.status, 204);
    let unknown = http.put("/api/feature-flags/nope/enable", json!({"name": "nope"})).await;
    assert_eq!((unknown.status, &unknown.body["reason"]), (400, &json!("unsupported")));
    assert_eq!(http.get("/api/health/checks/protocol-listener/amqp").await.body["status"], "ok");
    let missing = http.get("/api/health/checks/protocol-listener/stomp").await;
    assert_eq!((missing.status, &missing.body["missing"]), (503, &json!("stomp")));
    // Users without permissions, bulk deletion, one exchange's topic permissions, limits.
    for user in ["u1", "u2"] {
        assert_eq!(http.put(&format!("/api/users/{user}"), json!({"password": "p", "tags": ""})).await.status, 201);
    }
    let bare: Vec<Value> =
        http.get("/api/users/without-permissions").await.body.as_array().cloned().unwrap_or_default();
    assert_eq!(bare.iter().map(|u| u["name"].clone()).collect::<Vec<_>>(), [json!("u1"), json!("u2")]);
    let topic = json!({"exchange": "amq.topic", "write": ".*", "read": ".*"});
    assert_eq!(http.put("/api/topic-permissions/%2F/u1", topic).await.status, 201);
    assert_eq!(http.delete("/api/topic-permissions/%2F/u1/amq.topic").await.status, 204);
    assert_eq!(http.delete("/api/topic-permissions/%2F/u1/amq.topic").await.status, 404);
    assert_eq!(http.put("/api/user-limits/u1/max-channels", json!({"value": 3})).await.status, 204);
    assert_eq!(http.delete("/api/user-limits/u1/max-channels").await.status, 204);
    assert_eq!(http.get("/api/user-limits/u1").await.body, json!([]));
    assert_eq!(http.post("/api/users/bulk-delete", json!({"users": ["u1", "nobody"]})).await.status, 400);
    assert_eq!(http.post("/api/users/bulk-delete", json!({"users": ["u1", "u2"]})).await.status, 204);
    assert_eq!(http.get("/api/users/u1").await.status, 404);
    // 3.10.8's vhost field for the default queue type.
    assert_eq!(http.put("/api/vhosts/dq", json!({"defaultqueuetype": "quorum"})).await.status, 201);
    assert_eq!(http.get("/api/vhosts/dq").await.body["default_queue_type"], "quorum");
    // Mirror sync and rebalancing: nothing to do.
    http.put("/api/queues/%2F/q", json!({"durable": false})).await;
    assert_eq!(http.post("/api/queues/%2F/q/actions", json!({"action": "sync"})).await.status, 204);
    assert_eq!(http.post("/api/queues/%2F/q/actions", json!({"action": "bogus"})).await.status, 400);
    assert_eq!(http.post("/api/queues/%2F/none/actions", json!({"action": "sync"})).await.status, 404);
    assert_eq!(http.post("/api/rebalance/queues", json!({})).await.status, 204);
    assert_eq!(http.delete("/api/global-parameters/nope").await.status, 404);
    assert_eq!(http.delete("/api/global-parameters/cluster_name").await.status, 400);
    // A user's connections, listed and closed.
    let mut raw = Raw::open_with_channel(b.addr).await;
    let mine = http.get("/api/connections/username/guest").await.body;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    assert_eq!(http.get("/api/connections/username/nobody").await.body, json!([]));
    assert_eq!(http.delete("/api/connections/username/guest").await.status, 204);
    assert_eq!(raw.expect_connection_close().await.reply_code, CONNECTION_FORCED);
    b.stop().await;
}

/// The channels of `/api/channels`, by number.
async fn channels_by_number(http: &Http) -> std::collections::BTreeMap<u64, Value> {
    let list = http.get("/api/channels").await.body;
    let list = list.as_array().expect("list").iter();
    list.map(|c| (c["number"].as_u64().expect("number"), c.clone())).collect()
}

/// Two channels of one connection, one publishing with confirms, one consuming with a
/// prefetch: each is listed with its own number, gauges, counts and rates (from two samples
/// of the rate timer), and the consumer with its tag and channel, as RabbitMQ 3.10.8 shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_consumers_show_their_numbers_tags_counts_and_rates() {
    let (b, http) = broker().await;
    let conn = lconn(&b).await;
    let publisher = lconfirm_chan(&conn).await;
    let consumer = lchan(&conn).await;
    let q = uniq("q");
    ldeclare(&publisher, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    guard("qos", consumer.basic_qos(5, Default::default())).await.expect("qos");
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    publish_confirmed(&publisher, "", &q, 10, 10).await;
    publish_confirmed(&publisher, "", "nowhere", 2, 10).await;
    let options = BasicConsumeOptions::default();
    let mut deliveries =
        clients::lconsume_with(&consumer, &q, "the-tag", options, FieldTable::default()).await.expect("consume");
    let first = deliveries.take(5).await;
    guard("ack", consumer.basic_ack(first[1].delivery_tag, BasicAckOptions { multiple: true })).await.expect("ack");
    deliveries.take(2).await;
    // A round trip after the deliveries: what the channel counted is published by then.
    guard("qos", consumer.basic_qos(5, Default::default())).await.expect("qos");
    b.service.sample_rates(t0 + 5_000);

    let channels = channels_by_number(&http).await;
    assert_eq!(channels.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let conn_name = channels[&1]["connection_details"]["name"].as_str().expect("name").to_owned();
    let (one, two) = (&channels[&1], &channels[&2]);
    assert_eq!(one["name"], format!("{conn_name} (1)"));
    assert_eq!(
        (&one["confirm"], &one["consumer_count"], &one["messages_unconfirmed"], &one["state"]),
        (&json!(true), &json!(0), &json!(0), &json!("running"))
    );
    assert_eq!(
        one["message_stats"],
        json!({
            "publish": 12, "publish_details": {"rate": 2.4},
            "confirm": 12, "confirm_details": {"rate": 2.4},
            "drop_unroutable": 2, "drop_unroutable_details": {"rate": 0.4},
            "return_unroutable": 0, "return_unroutable_details": {"rate": 0.0},
        })
    );
    let gauges = ["consumer_count", "prefetch_count", "global_prefetch_count", "messages_unacknowledged"];
    assert_eq!(gauges.map(|g| two[g].clone()), [json!(1), json!(5), json!(0), json!(5)]);
    assert_eq!((&two["confirm"], &two["transactional"]), (&json!(false), &json!(false)));
    let stats = &two["message_stats"];
    assert_eq!(
        ["deliver", "deliver_no_ack", "ack", "deliver_get", "get", "get_empty", "redeliver"].map(|k| stats[k].clone()),
        [json!(7), json!(0), json!(2), json!(7), json!(0), json!(0), json!(0)],
        "{stats}"
    );
    assert_eq!((&stats["deliver_details"], &stats["ack_details"]), (&json!({"rate": 1.4}), &json!({"rate": 0.4})));
    assert!(stats.get("publish").is_none(), "no publishing counts on a channel that never published");

    let path = format!("/api/channels/{}", encode_segment(&format!("{conn_name} (2)")));
    let shown = http.get(&path).await.body;
    assert_eq!(shown["number"], 2);
    let details = &shown["consumer_details"][0];
    assert_eq!((&details["consumer_tag"], &details["queue"]["name"]), (&json!("the-tag"), &json!(q)));
    let unknown = http.get(&format!("/api/channels/{}", encode_segment(&format!("{conn_name} (9)")))).await;
    assert_eq!((unknown.status, unknown.body), (404, json!({"error": "Object Not Found", "reason": "Not Found"})));

    let expected_channel = json!({
        "connection_name": conn_name, "name": format!("{conn_name} (2)"), "node": shown["node"],
        "number": 2, "peer_host": shown["connection_details"]["peer_host"],
        "peer_port": shown["connection_details"]["peer_port"], "user": "guest",
    });
    for path in ["/api/consumers".to_owned(), "/api/consumers/%2F".to_owned(), format!("/api/queues/%2F/{q}")] {
        let body = http.get(&path).await.body;
        let consumer = if path.contains("queues") { &body["consumer_details"][0] } else { &body[0] };
        assert_eq!(consumer["consumer_tag"], "the-tag", "{path}: {body}");
        assert_eq!(consumer["channel_details"], expected_channel, "{path}");
    }
    let of_connection = http.get(&format!("/api/connections/{}/channels", encode_segment(&conn_name))).await.body;
    assert_eq!(of_connection.as_array().map(Vec::len), Some(2));
    assert_eq!(http.get("/api/vhosts/%2F/channels").await.body.as_array().map(Vec::len), Some(2));

    guard("close", publisher.close(200, "bye".into())).await.expect("close");
    assert_eq!(channels_by_number(&http).await.keys().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(connection_named(&http, &conn_name).await["channels"], 1);
    guard("close", conn.close(200, "bye".into())).await.expect("close");
    b.stop().await;
}

/// A vhost's message counts and socket bytes are its connections', a closed one's kept, with
/// rates from two samples of the rate timer (RabbitMQ's `/api/vhosts` `message_stats`,
/// `recv_oct`, `send_oct`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_counts_its_connections_traffic_closed_ones_included() {
    let (b, http) = broker().await;
    let t0 = b.service.clock().now_ms() + 1_000_000_000;
    b.service.sample_rates(t0);
    let (conn, ch, q) = declared_queue(&b).await;
    for _ in 0..5 {
        publish(&ch, &q).await;
    }
    guard("published", async {
        while http.get("/api/overview").await.body["queue_totals"]["messages"] != 5 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    b.service.sample_rates(t0 + 5_000);
    let v = http.get("/api/vhosts/%2F").await.body;
    assert_eq!(v["message_stats"]["publish"], 5);
    assert_eq!(v["message_stats"]["publish_details"]["rate"], 1.0);
    assert!(v["recv_oct"].as_u64().expect("recv_oct") > 0, "{v}");
    assert!(v["send_oct"].as_u64().expect("send_oct") > 0, "{v}");
    assert!(v["recv_oct_details"]["rate"].as_f64().expect("rate") > 0.0, "{v}");

    guard("close", conn.close(200, "bye".into())).await.expect("close");
    guard("deregistered", async {
        while http.get("/api/connections").await.body.as_array().is_some_and(|c| !c.is_empty()) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let list = http.get("/api/vhosts").await.body;
    let root = list.as_array().expect("list").iter().find(|v| v["name"] == "/").expect("/").clone();
    assert_eq!(root["message_stats"]["publish"], 5, "kept after its connection closed: {root}");
    assert!(root["recv_oct"].as_u64().expect("recv_oct") >= v["recv_oct"].as_u64().expect("recv_oct"));
    b.stop().await;
}

/// What axum's extractors refuse (a path segment that is not UTF-8) is answered as every API
/// error is: RabbitMQ's JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_path_is_answered_in_json() {
    let (b, http) = broker().await;
    let r = http.get("/api/connections/%FF").await;
    assert_eq!((r.status, &r.body["error"]), (400, &json!("bad_request")));
    assert!(r.body["reason"].as_str().is_some_and(|t| t.contains("UTF-8")), "{}", r.body);
    b.stop().await;
}
