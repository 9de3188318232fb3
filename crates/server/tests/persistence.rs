//! What survives a restart, through a real client (lapin): durable exchanges, queues (with
//! their arguments) and bindings; persistent messages in durable queues, in order, with the
//! redelivered flag on those delivered before; and what does not: transient entities and
//! messages, acked messages, deleted entities. Also: one data directory, one broker.
//!
//! Restarts here are graceful (the broker is stopped and started in-process on the same data
//! directory); `scripts/kill-test` covers `kill -9` against the release binary.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::path::PathBuf;

use clients::*;
use common::*;
use lapin::options::{
    BasicAckOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use lepus_server::Config;

struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        DataDir(std::env::temp_dir().join(uniq("lepus-data")))
    }

    fn config(&self) -> Config {
        Config { data_dir: Some(self.0.clone()), ..test_config() }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare_exchange(ch: &Channel, name: &str, kind: ExchangeKind, durable: bool, args: FieldTable) {
    let options = ExchangeDeclareOptions { durable, ..Default::default() };
    guard("exchange.declare", ch.exchange_declare(name.into(), kind, options, args)).await.expect("exchange.declare");
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    guard(
        "queue.bind",
        ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("queue.bind");
}

async fn exchange_exists(ch: &Channel, name: &str) -> bool {
    let options = ExchangeDeclareOptions { passive: true, ..Default::default() };
    guard(
        "exchange.declare passive",
        ch.exchange_declare(name.into(), ExchangeKind::Direct, options, FieldTable::default()),
    )
    .await
    .is_ok()
}

async fn queue_exists(ch: &Channel, name: &str) -> bool {
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    guard("queue.declare passive", ch.queue_declare(name.into(), options, FieldTable::default())).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_entities_and_persistent_messages_survive_a_restart() {
    let dir = DataDir::new();
    let (q, tq, x, tx_name, ae) = ("pq", "tq", "px", "tx", "pae");
    let limit = ltable(vec![("x-max-length", AMQPValue::LongInt(100))]);
    {
        let broker = start_with(dir.config()).await;
        let conn = lconn(&broker).await;
        let ch = lconfirm_chan(&conn).await;
        declare_exchange(&ch, ae, ExchangeKind::Fanout, true, FieldTable::default()).await;
        let x_args = ltable(vec![("alternate-exchange", lstr(ae))]);
        declare_exchange(&ch, x, ExchangeKind::Topic, true, x_args).await;
        declare_exchange(&ch, tx_name, ExchangeKind::Direct, false, FieldTable::default()).await;
        ldeclare(&ch, q, durable(), limit.clone()).await;
        ldeclare(&ch, tq, QueueDeclareOptions::default(), FieldTable::default()).await;
        bind(&ch, q, x, "a.#").await;
        bind(&ch, tq, x, "a.#").await;
        for i in 0..10u8 {
            assert!(lpub_props(&ch, x, "a.b", &[i], persistent()).await.is_ack());
        }
        assert!(lpub(&ch, x, "a.b", b"transient").await.is_ack());
        // The first message is delivered and left unacked; the second is acked.
        let first = lget(&ch, q, false).await.expect("message 0");
        assert_eq!(first.delivery.data, vec![0]);
        let second = lget(&ch, q, false).await.expect("message 1");
        guard("ack", second.delivery.acker.ack(BasicAckOptions::default())).await.expect("ack");
        // A round trip after the ack: the broker has processed it.
        assert!(queue_exists(&ch, q).await);
        drop(conn);
        broker.stop().await;
    }
    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    assert!(exchange_exists(&ch, x).await, "durable exchange restored");
    let ch = lchan(&conn).await;
    assert!(!exchange_exists(&ch, tx_name).await, "transient exchange gone");
    let ch = lchan(&conn).await;
    assert!(!queue_exists(&ch, tq).await, "transient queue gone");
    let ch = lchan(&conn).await;
    // Message 0 was delivered before the restart: redelivered. 1 was acked. The transient
    // message did not survive.
    let m = lget(&ch, q, true).await.expect("message 0 back");
    assert_eq!((m.delivery.data.clone(), m.delivery.redelivered), (vec![0], true));
    // After a clean stop, a message never delivered is not marked redelivered.
    let m = lget(&ch, q, true).await.expect("message 2 back");
    assert_eq!((m.delivery.data.clone(), m.delivery.redelivered), (vec![2], false));
    let rest = ldrain(&ch, q).await;
    assert_eq!(rest, (3..10u8).map(|i| vec![i]).collect::<Vec<_>>());
    // The binding and the alternate exchange still route.
    assert!(lpub(&ch, x, "a.c", b"bound").await == lapin::Confirmation::NotRequested);
    assert_eq!(ldrain(&ch, q).await, vec![b"bound".to_vec()]);
    // The arguments are what they were: a different x-max-length is inequivalent.
    let other = ltable(vec![("x-max-length", AMQPValue::LongInt(5))]);
    let err = guard("redeclare", ch.queue_declare(q.into(), durable(), other)).await.expect_err("inequivalent");
    assert_eq!(amqp_err(&err).0, 406);
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_entities_stay_deleted_and_transactions_are_durable() {
    let dir = DataDir::new();
    {
        let broker = start_with(dir.config()).await;
        let conn = lconn(&broker).await;
        let ch = lchan(&conn).await;
        declare_exchange(&ch, "gone-x", ExchangeKind::Direct, true, FieldTable::default()).await;
        ldeclare(&ch, "gone-q", durable(), FieldTable::default()).await;
        bind(&ch, "gone-q", "gone-x", "k").await;
        guard("exchange.delete", ch.exchange_delete("gone-x".into(), ExchangeDeleteOptions::default()))
            .await
            .expect("exchange.delete");
        guard("queue.delete", ch.queue_delete("gone-q".into(), QueueDeleteOptions::default()))
            .await
            .expect("queue.delete");
        ldeclare(&ch, "txq", durable(), FieldTable::default()).await;
        guard("tx.select", ch.tx_select()).await.expect("tx.select");
        for i in 0..3u8 {
            guard("publish", ch.basic_publish("".into(), "txq".into(), Default::default(), &[i], persistent()))
                .await
                .expect("publish");
        }
        guard("tx.commit", ch.tx_commit()).await.expect("tx.commit");
        drop(conn);
        broker.stop().await;
    }
    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    assert!(!exchange_exists(&ch, "gone-x").await);
    let ch = lchan(&conn).await;
    assert!(!queue_exists(&ch, "gone-q").await);
    let ch = lchan(&conn).await;
    assert_eq!(ldrain(&ch, "txq").await, vec![vec![0], vec![1], vec![2]]);
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_broker() {
    let dir = DataDir::new();
    let broker = start_with(dir.config()).await;
    let second = lepus_server::start(dir.config()).await;
    let err = second.err().expect("a second broker on the same data directory is refused");
    assert!(err.to_string().contains("in use"), "{err}");
    broker.stop().await;
}

/// Every file of every queue log under `dir` (the tests use one queue), sorted.
fn segment_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for queue in std::fs::read_dir(dir.join("queues")).expect("queues dir").flatten() {
        for f in std::fs::read_dir(queue.path()).expect("queue dir").flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

async fn fill(dir: &DataDir, queue: &str, n: usize) {
    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    ldeclare(&ch, queue, durable(), FieldTable::default()).await;
    for i in 0..n {
        let body = format!("msg-{i:03}-{}", "x".repeat(40));
        assert!(lpub_props(&ch, "", queue, body.as_bytes(), persistent()).await.is_ack());
    }
    // Two acked: they come back once their ack file is gone.
    for _ in 0..2 {
        let m = lget(&ch, queue, false).await.expect("message");
        guard("ack", m.delivery.acker.ack(BasicAckOptions::default())).await.expect("ack");
    }
    assert!(queue_exists(&ch, queue).await);
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_reported_and_the_rest_is_served() {
    let dir = DataDir::new();
    fill(&dir, "damaged", 30).await;
    let files = segment_files(&dir.0);
    let seg = files.iter().find(|p| p.extension().is_some_and(|e| e == "seg")).expect("a segment").clone();
    let ack = files.iter().find(|p| p.extension().is_some_and(|e| e == "ack")).expect("an ack file").clone();
    let mut bytes = std::fs::read(&seg).expect("read segment");
    // A flipped bit inside message 10's body, the last message torn, the ack file deleted.
    let at = bytes.windows(7).position(|w| w == b"msg-010").expect("message 10 on disk");
    bytes[at + 3] ^= 0x20;
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&seg, &bytes).expect("write segment");
    std::fs::remove_file(&ack).expect("delete ack file");

    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let bodies: Vec<String> =
        ldrain(&ch, "damaged").await.into_iter().map(|b| String::from_utf8_lossy(&b)[..7].to_owned()).collect();
    let expected: Vec<String> = (0..29).filter(|&i| i != 10).map(|i| format!("msg-{i:03}")).collect();
    assert_eq!(bodies, expected, "intact messages served in order; the damaged and the torn one skipped");
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_segment_is_quarantined() {
    let dir = DataDir::new();
    fill(&dir, "quarantined", 5).await;
    let seg = segment_files(&dir.0).into_iter().find(|p| p.extension().is_some_and(|e| e == "seg")).expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    bytes[0..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(&seg, &bytes).expect("write segment");

    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    assert!(ldrain(&ch, "quarantined").await.is_empty(), "nothing readable is served");
    assert!(segment_files(&dir.0).iter().any(|p| p.to_string_lossy().ends_with(".seg.corrupt")), "kept aside");
    // The queue works on.
    assert!(lpub_props(&ch, "", "quarantined", b"after", persistent()).await.is_ack());
    assert_eq!(ldrain(&ch, "quarantined").await, vec![b"after".to_vec()]);
    drop(conn);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_deleted_queues_are_removed_at_start() {
    let dir = DataDir::new();
    fill(&dir, "kept", 3).await;
    // As a crash between a queue's deletion and the removal of its log would leave it.
    let orphan = dir.0.join("queues").join(format!("{:016x}", 0xffu64));
    std::fs::create_dir_all(&orphan).expect("orphan dir");
    std::fs::write(orphan.join("0000000000.seg"), b"LEPUSSEG").expect("orphan segment");
    let broker = start_with(dir.config()).await;
    assert!(!orphan.exists(), "the orphan log is removed");
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    assert_eq!(ldrain(&ch, "kept").await.len(), 1, "known queues keep their messages (3 published, 2 acked)");
    drop(conn);
    broker.stop().await;
}

async fn can_log_in(broker: &Broker, user: &str, password: &str, vhost: &str) -> bool {
    let url = format!("amqp://{user}:{password}@{}/{vhost}", broker.addr);
    match lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await {
        Ok(conn) => {
            conn.close(200, "bye".into()).await.expect("close");
            true
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_vhosts_made_by_node_commands_survive_a_restart() {
    use lepus_broker::command::{Credential, NodeCommand};
    use lepus_broker::vhost_metadata::VhostMetadata;
    let dir = DataDir::new();
    let broker = start_with(dir.config()).await;
    let node = &broker.service;
    let put = |name: &str, password: &str| NodeCommand::PutUser {
        name: name.into(),
        credential: Credential::Password(password.into()),
        tags: vec!["management".into()],
    };
    node.execute_node(put("alice", "s3cret")).expect("add alice");
    node.execute_node(put("bob", "b0b")).expect("add bob");
    node.execute_node(NodeCommand::DeleteUser { name: "bob".into() }).expect("delete bob");
    let metadata = VhostMetadata {
        description: "the apps".into(),
        tags: vec!["prod".into(), "eu".into()],
        default_queue_type: Some("quorum".into()),
    };
    node.execute_node(NodeCommand::AddVhost { name: "apps".into(), metadata: Some(metadata.clone()) }).expect("add");
    node.execute_node(NodeCommand::AddVhost { name: "apps".into(), metadata: None }).expect("add again");
    assert_eq!(node.vhost("apps").map(|v| v.metadata()), Some(metadata.clone()), "kept by an add without any");
    assert!(!can_log_in(&broker, "alice", "s3cret", "apps").await, "no permissions in the vhost yet");
    let all = || ".*".to_owned();
    let grant = NodeCommand::SetPermissions {
        user: "alice".into(),
        vhost: "apps".into(),
        configure: all(),
        write: all(),
        read: all(),
    };
    node.execute_node(grant).expect("permissions");
    assert!(can_log_in(&broker, "alice", "s3cret", "apps").await);
    broker.stop().await;

    // The default user is stored at first start: a different configured password does not
    // replace it (as RabbitMQ's default user).
    let config = Config { default_pass: "changed".into(), ..dir.config() };
    let broker = start_with(config).await;
    assert!(can_log_in(&broker, "alice", "s3cret", "apps").await, "user and vhost restored");
    assert!(!can_log_in(&broker, "alice", "wrong", "apps").await);
    assert!(!can_log_in(&broker, "bob", "b0b", "%2f").await, "deleted user stays deleted");
    assert!(can_log_in(&broker, "guest", "guest", "%2f").await, "the stored default user");
    assert!(!can_log_in(&broker, "guest", "changed", "%2f").await);
    let tags = broker.service.users().get("alice").map(|u| u.tags.clone());
    assert_eq!(tags, Some(vec!["management".to_string()]));
    assert_eq!(broker.service.vhost("apps").map(|v| v.metadata()), Some(metadata), "vhost metadata restored");
    let default = broker.service.vhost("/").map(|v| v.metadata().description);
    assert_eq!(default.as_deref(), Some("Default virtual host"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart_and_the_configured_ones_are_set_at_start() {
    use lepus_broker::command::{Command, Issuer};
    use lepus_broker::policy::{ApplyTo, PolicyKind, PolicySpec};
    let spec = |kind, name: &str, definition| PolicySpec {
        kind,
        name: name.into(),
        pattern: "^pq".into(),
        apply_to: ApplyTo::All,
        priority: 0,
        definition,
    };
    let dir = DataDir::new();
    let broker = start_with(dir.config()).await;
    let vhost = broker.service.vhost("/").expect("vhost /");
    let set = |s| vhost.execute(Issuer::node(), Command::SetPolicy(s)).expect("set");
    set(spec(PolicyKind::Policy, "user", serde_json::json!({"max-length": 5})));
    set(spec(PolicyKind::Operator, "cap", serde_json::json!({"max-length": 3})));
    set(spec(PolicyKind::Policy, "gone", serde_json::json!({"expires": 1000})));
    vhost
        .execute(Issuer::node(), Command::ClearPolicy { kind: PolicyKind::Policy, name: "gone".into() })
        .expect("clear");
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    ldeclare(&ch, "pq", durable(), FieldTable::default()).await;
    drop(vhost);
    broker.stop().await;

    // A configured policy of higher priority, set at start on top of the stored ones.
    let configured = Config::from_toml(
        "[[policies]]\nname = \"file\"\npattern = \"^pq$\"\npriority = 1\ndefinition = { max-length = 2 }\n",
    )
    .expect("config");
    let broker = start_with(Config { policies: configured.policies, ..dir.config() }).await;
    let vhost = broker.service.vhost("/").expect("vhost /");
    let names = |kind| vhost.policies(kind).iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(PolicyKind::Policy), ["file", "user"], "the cleared one stays cleared");
    assert_eq!(names(PolicyKind::Operator), ["cap"]);
    let queue = vhost.queue(&"pq".try_into().expect("name"), 0).expect("queue restored");
    let applied = queue.policy();
    assert_eq!((applied.policy_name(), applied.operator_policy_name()), (Some("file"), Some("cap")));
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    for body in [b"a", b"b", b"c", b"d"] {
        lpub(&ch, "", "pq", body).await;
    }
    assert_eq!(lcount(&ch, "pq").await.0, 2, "the restored queue applies the lowest limit");
    broker.stop().await;
}

fn delivery_count(m: &lapin::message::BasicGetMessage) -> Option<i64> {
    let headers = m.delivery.properties.headers().clone()?;
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => Some(*n),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
        other => panic!("x-delivery-count {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_s_delivery_counts_survive_a_restart() {
    let dir = DataDir::new();
    let (q, dlq) = ("counted", "counted-dead");
    let args = ltable(vec![
        ("x-queue-type", lstr("quorum")),
        ("x-delivery-limit", AMQPValue::LongInt(2)),
        ("x-dead-letter-exchange", lstr("")),
        ("x-dead-letter-routing-key", lstr(dlq)),
    ]);
    let requeue = lapin::options::BasicNackOptions { multiple: false, requeue: true };
    {
        let broker = start_with(dir.config()).await;
        let conn = lconn(&broker).await;
        let ch = lconfirm_chan(&conn).await;
        ldeclare(&ch, dlq, durable(), FieldTable::default()).await;
        ldeclare(&ch, q, durable(), args.clone()).await;
        for body in [&b"returned"[..], b"untouched"] {
            assert!(lpub_props(&ch, "", q, body, persistent()).await.is_ack());
        }
        // The first message comes back twice (the limit); the second is never delivered.
        for expected in [0, 1] {
            let m = lget(&ch, q, false).await.expect("the first message");
            assert_eq!((m.delivery.data.as_slice(), delivery_count(&m)), (&b"returned"[..], Some(expected)));
            guard("nack", m.delivery.acker.nack(requeue)).await.expect("nack");
        }
        assert_eq!(lcount(&ch, q).await, (2, 0), "a round trip after the nacks: both are back");
        drop(conn);
        broker.stop().await;
    }
    let broker = start_with(dir.config()).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    let m = lget(&ch, q, false).await.expect("the first message, restored");
    assert_eq!((m.delivery.data.as_slice(), delivery_count(&m)), (&b"returned"[..], Some(2)), "its count kept");
    assert!(m.delivery.redelivered);
    let untouched = lget(&ch, q, true).await.expect("the second message, restored");
    assert_eq!(delivery_count(&untouched), Some(0));
    // A third return is past the limit: dead-lettered, as it would have been without a restart.
    guard("nack", m.delivery.acker.nack(requeue)).await.expect("nack");
    let dead = lget(&ch, dlq, true).await.expect("dead-lettered at the limit");
    assert_eq!(dead.delivery.data, b"returned");
    assert_eq!(lcount(&ch, q).await, (0, 0));
    drop(conn);
    broker.stop().await;
}
