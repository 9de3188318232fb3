//! lepusctl end to end: a real broker with its management API on an ephemeral port, driven by
//! `lepus_ctl::run` in-process (on a blocking thread, as the CLI blocks) and by a real AMQP client.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::{guard, lchan, lconn, lpub, uniq};
use common::{Broker, start_managed, test_config};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lepus_ctl::CtlError;
use serde_json::Value;

/// Runs lepusctl against `url` with `args` after the connection options.
async fn ctl_at(url: String, user: &str, password: &str, args: &[&str]) -> Result<String, CtlError> {
    let mut argv: Vec<String> =
        ["lepusctl", "--url", &url, "--user", user, "--password", password].map(String::from).into();
    argv.extend(args.iter().map(|a| a.to_string()));
    guard("lepusctl", tokio::task::spawn_blocking(move || lepus_ctl::run(argv))).await.expect("lepusctl thread")
}

async fn ctl(broker: &Broker, args: &[&str]) -> String {
    let url = format!("http://{}", broker.management.expect("management API"));
    ctl_at(url, "guest", "guest", args).await.unwrap_or_else(|e| panic!("lepusctl {args:?}: {e}"))
}

async fn ctl_json(broker: &Broker, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--format", "json"]);
    serde_json::from_str(&ctl(broker, &args).await).expect("JSON output")
}

/// The table's rows after the header, split on runs of spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table.lines().skip(1).map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_vhost_then_list_vhosts_shows_it() {
    let broker = start_managed(test_config()).await;
    assert!(ctl(&broker, &["await_startup", "--timeout", "5"]).await.contains("is up"));
    assert_eq!(ctl(&broker, &["add_vhost", "ctl/v1"]).await, "Added vhost \"ctl/v1\"");
    let table = ctl(&broker, &["list_vhosts"]).await;
    assert_eq!(table.lines().next(), Some("name"));
    assert!(rows(&table).contains(&vec!["ctl/v1".to_string()]), "{table}");
    ctl(&broker, &["delete_vhost", "ctl/v1"]).await;
    assert!(!ctl(&broker, &["list_vhosts"]).await.contains("ctl/v1"));
    ctl(&broker, &["add_vhost", "described", "--description", "apps", "--default-queue-type", "quorum"]).await;
    let table = ctl(&broker, &["list_vhosts", "name", "description", "default_queue_type"]).await;
    assert!(rows(&table).contains(&vec!["described".into(), "apps".into(), "quorum".into()]), "{table}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_user_and_set_permissions_then_list_permissions_shows_them() {
    let broker = start_managed(test_config()).await;
    ctl(&broker, &["add_vhost", "apps"]).await;
    ctl(&broker, &["add_user", "alice", "s3cret", "--tags", "monitoring"]).await;
    ctl(&broker, &["--vhost", "apps", "set_permissions", "alice", "^alice-.*", ".*", "^amq\\.default$"]).await;
    let table = ctl(&broker, &["-p", "apps", "list_permissions"]).await;
    // The vhost's creator (guest) was granted full permissions on it, as RabbitMQ does.
    let expected = vec![vec!["alice", "^alice-.*", ".*", "^amq\\.default$"], vec!["guest", ".*", ".*", ".*"]];
    assert_eq!(rows(&table), expected, "{table}");
    let users = ctl_json(&broker, &["list_users", "name", "tags"]).await;
    assert!(
        users
            .as_array()
            .expect("array")
            .iter()
            .any(|u| u["name"] == "alice" && u["tags"] == serde_json::json!(["monitoring"])),
        "{users}"
    );

    ctl(&broker, &["change_password", "alice", "n3w"]).await;
    let url = format!("http://{}", broker.management.expect("management API"));
    ctl_at(url, "alice", "n3w", &["list_vhosts"]).await.expect("alice logs in with her new password");
    ctl(&broker, &["-p", "apps", "clear_permissions", "alice"]).await;
    assert_eq!(rows(&ctl(&broker, &["-p", "apps", "list_permissions"]).await), vec![vec!["guest", ".*", ".*", ".*"]]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_with_columns_shows_a_queue_declared_over_amqp() {
    let broker = start_managed(test_config()).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let q = uniq("ctl-q");
    guard("declare", ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    for _ in 0..3 {
        lpub(&ch, "", &q, b"m").await;
    }
    let table = ctl(&broker, &["list_queues", "name", "messages", "durable"]).await;
    assert_eq!(
        table.lines().next().map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["name", "messages", "durable"])
    );
    assert!(rows(&table).contains(&vec![q.clone(), "3".into(), "false".into()]), "{table}");

    let json = ctl_json(&broker, &["list_queues", "name,messages"]).await;
    let entry = json.as_array().expect("array").iter().find(|e| e["name"] == q.as_str()).expect("queue listed").clone();
    assert_eq!(entry, serde_json::json!({"name": q, "messages": 3}));

    assert_eq!(ctl(&broker, &["purge_queue", &q]).await, format!("Purged queue \"{q}\""));
    let json = ctl_json(&broker, &["list_queues"]).await;
    assert!(json.as_array().expect("array").iter().any(|e| e["name"] == q.as_str() && e["messages"] == 0), "{json}");
    ctl(&broker, &["delete_queue", &q]).await;
    assert!(!ctl(&broker, &["list_queues"]).await.contains(&q));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_other_lists_answer() {
    let broker = start_managed(test_config()).await;
    let conn = lconn(&broker).await;
    let _ch = lchan(&conn).await;
    assert!(ctl(&broker, &["status"]).await.contains("product_name: Lepus"));
    assert_eq!(ctl_json(&broker, &["status"]).await["product_name"], "Lepus");
    let connections = ctl_json(&broker, &["list_connections", "name", "user"]).await;
    let name = connections[0]["name"].as_str().expect("a connection").to_owned();
    assert_eq!(connections[0]["user"], "guest");
    assert_eq!(ctl_json(&broker, &["list_channels", "user"]).await, serde_json::json!([{"user": "guest"}]));
    assert!(ctl(&broker, &["list_exchanges"]).await.contains("amq.direct"));
    ctl(&broker, &["list_bindings"]).await;
    ctl(&broker, &["list_consumers"]).await;

    ctl(
        &broker,
        &["set_policy", "ttl", "^ttl\\.", "{\"message-ttl\": 1000}", "--apply-to", "queues", "--priority", "2"],
    )
    .await;
    let policies = ctl_json(&broker, &["list_policies", "name", "apply-to", "priority", "definition"]).await;
    assert_eq!(
        policies,
        serde_json::json!([{"name": "ttl", "apply-to": "queues", "priority": 2, "definition": {"message-ttl": 1000}}])
    );
    ctl(&broker, &["clear_policy", "ttl"]).await;
    assert_eq!(ctl_json(&broker, &["list_policies"]).await, serde_json::json!([]));

    ctl(&broker, &["close_connection", &name, "bye"]).await;
    guard("closed", async {
        while conn.status().connected() {
            tokio::task::yield_now().await
        }
    })
    .await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_print_the_api_s_reason() {
    let broker = start_managed(test_config()).await;
    let url = format!("http://{}", broker.management.expect("management API"));
    let err = ctl_at(url.clone(), "guest", "guest", &["delete_queue", "no-such-queue"]).await.expect_err("404");
    assert!(matches!(err, CtlError::Api { status: 404, .. }), "{err}");
    assert_eq!(err.to_string(), "Not Found (HTTP 404)");
    let err = ctl_at(url, "guest", "guest", &["set_policy", "p", ".*", "not json"]).await.expect_err("bad JSON");
    assert!(err.to_string().starts_with("invalid JSON in the policy definition"), "{err}");
    assert_eq!(err.exit_code(), 65);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_as_a_refused_login() {
    let broker = start_managed(test_config()).await;
    let url = format!("http://{}", broker.management.expect("management API"));
    let err = ctl_at(url.clone(), "guest", "wrong", &["list_queues"]).await.expect_err("401");
    assert!(matches!(err, CtlError::LoginRefused { .. }), "{err}");
    assert_eq!(err.to_string(), format!("login refused (401) for user 'guest' at {url}: check --user and --password"));
    assert_eq!(err.exit_code(), 77);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_reported_as_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let err = ctl_at(url.clone(), "guest", "guest", &["status"]).await.expect_err("nothing listens");
    assert!(err.to_string().starts_with(&format!("cannot reach the management API at {url}: ")), "{err}");
    assert_eq!(err.exit_code(), 69);
    let err = ctl_at(url, "guest", "guest", &["await_startup", "--timeout", "0"]).await.expect_err("never up");
    assert!(matches!(err, CtlError::NotStarted { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_definitions_round_trips() {
    let broker = start_managed(test_config()).await;
    ctl(&broker, &["add_vhost", "kept"]).await;
    ctl(&broker, &["add_user", "bob", "pw"]).await;
    ctl(&broker, &["-p", "kept", "set_permissions", "bob", ".*", ".*", ".*"]).await;
    let file = std::env::temp_dir().join(format!("{}.json", uniq("lepusctl-defs")));
    let path = file.to_str().expect("UTF-8 path");
    ctl(&broker, &["export_definitions", path]).await;
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("file")).expect("JSON file");

    ctl(&broker, &["delete_vhost", "kept"]).await;
    ctl(&broker, &["delete_user", "bob"]).await;
    assert_eq!(ctl(&broker, &["import_definitions", path]).await, format!("Imported definitions from \"{path}\""));
    let again: Value = serde_json::from_str(&ctl(&broker, &["export_definitions", "-"]).await).expect("JSON");
    for key in ["vhosts", "users", "permissions"] {
        assert_eq!(again[key], exported[key], "{key}");
    }
    let permissions = ctl(&broker, &["-p", "kept", "list_permissions", "user"]).await;
    assert!(rows(&permissions).contains(&vec!["bob".to_string()]), "{permissions}");
    std::fs::remove_file(&file).expect("remove");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_tags_are_set_and_cleared() {
    let broker = start_managed(test_config()).await;
    ctl(&broker, &["add_vhost", "limited"]).await;
    ctl(&broker, &["-p", "limited", "set_vhost_limits", r#"{"max-connections": 4, "max-queues": 10}"#]).await;
    let limits = broker.service.vhost("limited").expect("vhost").limits();
    assert_eq!((limits.max_connections, limits.max_queues), (Some(4), Some(10)));
    ctl(&broker, &["-p", "limited", "clear_vhost_limits"]).await;
    let limits = broker.service.vhost("limited").expect("vhost").limits();
    assert_eq!((limits.max_connections, limits.max_queues), (None, None));

    ctl(&broker, &["add_user", "bob", "pw"]).await;
    ctl(&broker, &["set_user_limits", "bob", r#"{"max-channels": 2, "max-connections": 1}"#]).await;
    ctl(&broker, &["clear_user_limits", "bob", "max-channels"]).await;
    let limits = broker.service.user_limits("bob");
    assert_eq!((limits.max_connections, limits.max_channels), (Some(1), None));
    ctl(&broker, &["clear_user_limits", "bob", "all"]).await;
    assert_eq!(broker.service.user_limits("bob").max_connections, None);

    ctl(&broker, &["set_user_tags", "bob", "monitoring", "policymaker"]).await;
    let users = ctl_json(&broker, &["list_users", "name", "tags"]).await;
    let bob = users.as_array().expect("array").iter().find(|u| u["name"] == "bob").cloned().expect("bob");
    assert_eq!(bob["tags"], serde_json::json!(["monitoring", "policymaker"]));
    let url = format!("http://{}", broker.management.expect("management API"));
    ctl_at(url, "bob", "pw", &["list_vhosts"]).await.expect("bob keeps his password");
    let err =
        ctl_at(format!("http://{}", broker.management.expect("api")), "guest", "guest", &["set_vhost_limits", "[1]"])
            .await
            .expect_err("not an object");
    assert!(matches!(err, CtlError::BadJson { .. }), "{err}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_parameters_and_user_permissions_are_listed_as_rabbitmqctl() {
    let broker = start_managed(test_config()).await;
    ctl(&broker, &["add_vhost", "lim"]).await;
    ctl(&broker, &["-p", "lim", "set_vhost_limits", r#"{"max-queues": 5}"#]).await;
    assert_eq!(rows(&ctl(&broker, &["-p", "lim", "list_vhost_limits"]).await), [[r#"{"max-queues":5}"#]]);
    assert_eq!(rows(&ctl(&broker, &["list_vhost_limits", "--global"]).await), [["lim", r#"{"max-queues":5}"#]]);
    ctl(&broker, &["add_user", "carol", "pw", "--tags", "management"]).await;
    ctl(&broker, &["set_user_tags", "carol", "management", "monitoring"]).await;
    ctl(&broker, &["set_user_limits", "carol", r#"{"max-channels": 3}"#]).await;
    assert_eq!(rows(&ctl(&broker, &["list_user_limits", "carol"]).await), [[r#"{"max-channels":3}"#]]);
    assert_eq!(rows(&ctl(&broker, &["list_user_limits", "--global"]).await), [["carol", r#"{"max-channels":3}"#]]);
    // Tags print as rabbitmqctl prints a list.
    let users = ctl(&broker, &["list_users"]).await;
    assert!(users.lines().any(|l| l == "carol  [management, monitoring]"), "{users}");

    ctl(&broker, &["-p", "lim", "set_permissions", "carol", ".*", "", "x"]).await;
    let perms = rows(&ctl(&broker, &["list_user_permissions", "carol"]).await);
    assert_eq!(perms, [["lim", ".*", "x"]], "an empty expression prints empty");
    ctl(&broker, &["-p", "lim", "set_topic_permissions", "carol", "amq.topic", "^a", "^b"]).await;
    let expected = [["carol", "amq.topic", "^a", "^b"]];
    assert_eq!(rows(&ctl(&broker, &["-p", "lim", "list_topic_permissions"]).await), expected);
    assert_eq!(
        rows(&ctl(&broker, &["list_user_topic_permissions", "carol"]).await),
        [["lim", "amq.topic", "^a", "^b"]]
    );

    // Parameters of the vhost asked for only; operator policies listed on their own too.
    ctl(&broker, &["set_vhost_limits", r#"{"max-connections": 9}"#]).await;
    let params = ctl_json(&broker, &["-p", "lim", "list_parameters"]).await;
    let expected = serde_json::json!([{"component": "vhost-limits", "name": "limits", "value": {"max-queues": 5}}]);
    assert_eq!(params, expected);
    assert_eq!(rows(&ctl(&broker, &["list_operator_policies"]).await), Vec::<Vec<String>>::new());
    let set = ["-p", "lim", "set_operator_policy", "cap", "^big", r#"{"max-length": 10}"#, "--priority", "2"];
    assert_eq!(ctl(&broker, &set).await, "Set operator policy \"cap\"");
    let ops =
        ctl_json(&broker, &["-p", "lim", "list_operator_policies", "name", "apply-to", "definition", "priority"]).await;
    let expected =
        serde_json::json!([{"name": "cap", "apply-to": "queues", "definition": {"max-length": 10}, "priority": 2}]);
    assert_eq!(ops, expected);
    ctl(&broker, &["-p", "lim", "clear_operator_policy", "cap"]).await;
    assert_eq!(rows(&ctl(&broker, &["-p", "lim", "list_operator_policies"]).await), Vec::<Vec<String>>::new());
    ctl(&broker, &["-p", "lim", "clear_topic_permissions", "carol"]).await;
    assert_eq!(rows(&ctl(&broker, &["-p", "lim", "list_topic_permissions"]).await), Vec::<Vec<String>>::new());
    let globals = ctl_json(&broker, &["list_global_parameters", "name"]).await;
    assert_eq!(globals, serde_json::json!([{"name": "cluster_name"}, {"name": "internal_cluster_id"}]));
    broker.stop().await;
}
