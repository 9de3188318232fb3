//! Permissions, vhosts and limits through a real client (lapin): every check RabbitMQ makes,
//! allowed and refused, with RabbitMQ 3.10.8's reply codes and texts (each text was taken from
//! a 3.10.8 node); vhost and user deletion; per-vhost and per-user limits; what survives a
//! restart.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use lepus_broker::BrokerRef;
use lepus_broker::command::{Credential, NodeCommand};
use lepus_broker::limits::{UserLimits, VhostLimits};

/// A data directory removed when the test ends.
struct DataDir(std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(broker: &BrokerRef, command: NodeCommand) {
    broker.execute_node(command).expect("node command");
}

fn add_user(broker: &BrokerRef, name: &str) {
    let credential = Credential::Password("pw".into());
    run(broker, NodeCommand::PutUser { name: name.into(), credential, tags: Vec::new() });
}

fn permit(broker: &BrokerRef, user: &str, vhost: &str, configure: &str, write: &str, read: &str) {
    run(
        broker,
        NodeCommand::SetPermissions {
            user: user.into(),
            vhost: vhost.into(),
            configure: configure.into(),
            write: write.into(),
            read: read.into(),
        },
    );
}

/// A vhost `v1`, guest with every permission in it, and `bob` with RabbitMQ-probed patterns.
fn setup(broker: &BrokerRef) {
    run(broker, NodeCommand::AddVhost { name: "v1".into(), metadata: None });
    permit(broker, "guest", "v1", ".*", ".*", ".*");
    add_user(broker, "bob");
    permit(broker, "bob", "v1", "^bob-", "^bob-|amq.default", "^bob-");
}

fn url(broker: &common::Broker, user: &str, vhost: &str) -> String {
    format!("amqp://{user}:{}@{}/{vhost}", if user == "guest" { "guest" } else { "pw" }, broker.addr)
}

async fn connect(broker: &common::Broker, user: &str, vhost: &str) -> Connection {
    guard("connect", Connection::connect(&url(broker, user, vhost), ConnectionProperties::default()))
        .await
        .expect("connects")
}

async fn refused_open(broker: &common::Broker, user: &str, vhost: &str) -> (u16, String) {
    let err = guard("connect", Connection::connect(&url(broker, user, vhost), ConnectionProperties::default()))
        .await
        .expect_err("refused");
    amqp_err(&err)
}

fn denied(kind: &str, name: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost 'v1' refused for user 'bob'")
}

/// The code and text of the `connection.close` the broker sends next.
async fn closed_by_broker(events: impl futures_lite::Stream<Item = lapin::Event> + Unpin) -> (u16, String) {
    use futures_lite::StreamExt;
    let mut events = events;
    loop {
        match guard("connection.close", events.next()).await.expect("an event") {
            lapin::Event::Error(e) => return amqp_err(&e),
            _ => continue,
        }
    }
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name.into(), QueueDeclareOptions { auto_delete: true, ..Default::default() }, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_needs_the_permission_rabbitmq_checks_for_it() {
    let broker = common::start().await;
    setup(&broker.service);
    let admin = connect(&broker, "guest", "v1").await;
    let ach = lchan(&admin).await;
    guard("declare", declare(&ach, "q1", FieldTable::default())).await.expect("guest declares q1");
    let bob = connect(&broker, "bob", "v1").await;
    let ch = lchan(&bob).await;
    guard("declare", declare(&ch, "bob-q", FieldTable::default())).await.expect("configure ^bob- allows bob-q");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    guard("passive", ch.queue_declare("q1".into(), passive, FieldTable::default()))
        .await
        .expect("a passive declare needs no permission");

    let ch = lchan(&bob).await;
    lexpect_channel_closed(&bob, &ch, declare(&ch, "q1", FieldTable::default()), 403, &denied("queue", "q1")).await;
    let ch = lchan(&bob).await;
    let x = ch.exchange_declare(
        "x1".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    lexpect_channel_closed(&bob, &ch, x, 403, &denied("exchange", "x1")).await;
    let ch = lconfirm_chan(&bob).await;
    let publish = ch.basic_publish("amq.direct".into(), "k".into(), BasicPublishOptions::default(), b"x", lprops());
    let publish = async { publish.await?.await };
    lexpect_channel_closed(&bob, &ch, publish, 403, &denied("exchange", "amq.direct")).await;
    let ch = lchan(&bob).await;
    let consume = ch.basic_consume("q1".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default());
    lexpect_channel_closed(&bob, &ch, consume, 403, &denied("queue", "q1")).await;
    let ch = lchan(&bob).await;
    let get = ch.basic_get("q1".into(), BasicGetOptions::default());
    lexpect_channel_closed(&bob, &ch, get, 403, &denied("queue", "q1")).await;
    let ch = lchan(&bob).await;
    let purge = ch.queue_purge("q1".into(), QueuePurgeOptions::default());
    lexpect_channel_closed(&bob, &ch, purge, 403, &denied("queue", "q1")).await;
    let ch = lchan(&bob).await;
    let delete = ch.queue_delete("q1".into(), QueueDeleteOptions::default());
    lexpect_channel_closed(&bob, &ch, delete, 403, &denied("queue", "q1")).await;

    // A binding: write on the destination, then read on the source.
    let ch = lchan(&bob).await;
    let bind =
        ch.queue_bind("q1".into(), "amq.direct".into(), "k".into(), QueueBindOptions::default(), FieldTable::default());
    lexpect_channel_closed(&bob, &ch, bind, 403, &denied("queue", "q1")).await;
    let ch = lchan(&bob).await;
    let bind = ch.queue_bind(
        "bob-q".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    lexpect_channel_closed(&bob, &ch, bind, 403, &denied("exchange", "amq.direct")).await;

    // Naming a dead-letter or alternate exchange needs write on it.
    let ch = lchan(&bob).await;
    let dl = declare(&ch, "bob-dl", ltable(vec![("x-dead-letter-exchange", lstr("amq.fanout"))]));
    lexpect_channel_closed(&bob, &ch, dl, 403, &denied("exchange", "amq.fanout")).await;
    let ch = lchan(&bob).await;
    let args = ltable(vec![("alternate-exchange", lstr("amq.fanout"))]);
    let ae = ch.exchange_declare("bob-x".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), args);
    lexpect_channel_closed(&bob, &ch, ae, 403, &denied("exchange", "amq.fanout")).await;

    // The default exchange is `amq.default`, which bob may write to.
    let ch = lconfirm_chan(&bob).await;
    let confirm = guard("publish", async {
        ch.basic_publish("".into(), "bob-q".into(), BasicPublishOptions::default(), b"m", lprops()).await?.await
    })
    .await
    .expect("publish to the default exchange");
    assert!(confirm.is_ack());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_check_routing_keys_on_publish_and_bind() {
    let broker = common::start().await;
    setup(&broker.service);
    permit(&broker.service, "bob", "v1", "^bob-", ".*", ".*");
    run(
        &broker.service,
        NodeCommand::SetTopicPermissions {
            user: "bob".into(),
            vhost: "v1".into(),
            exchange: "amq.topic".into(),
            write: "^{username}\\.".into(),
            read: "^r\\.".into(),
        },
    );
    let bob = connect(&broker, "bob", "v1").await;
    let ch = lconfirm_chan(&bob).await;
    let ok = guard("publish", async {
        ch.basic_publish("amq.topic".into(), "bob.x".into(), BasicPublishOptions::default(), b"m", lprops())
            .await?
            .await
    })
    .await
    .expect("{username} expands to bob");
    assert!(ok.is_ack());
    let publish =
        ch.basic_publish("amq.topic".into(), "alice.x".into(), BasicPublishOptions::default(), b"m", lprops());
    let publish = async { publish.await?.await };
    let text =
        "ACCESS_REFUSED - access to topic 'alice.x' in exchange 'amq.topic' in vhost 'v1' refused for user 'bob'";
    lexpect_channel_closed(&bob, &ch, publish, 403, text).await;

    let ch = lchan(&bob).await;
    guard("declare", declare(&ch, "bob-t", FieldTable::default())).await.expect("declare");
    let opts = QueueBindOptions::default();
    guard("bind", ch.queue_bind("bob-t".into(), "amq.topic".into(), "r.x".into(), opts, FieldTable::default()))
        .await
        .expect("read ^r\\. allows r.x");
    let unbind = ch.queue_unbind("bob-t".into(), "amq.topic".into(), "s.x".into(), FieldTable::default());
    let text = "ACCESS_REFUSED - access to topic 's.x' in exchange 'amq.topic' in vhost 'v1' refused for user 'bob'";
    lexpect_channel_closed(&bob, &ch, unbind, 403, text).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_change_applies_to_the_next_operation_without_reconnecting() {
    let broker = common::start().await;
    setup(&broker.service);
    let bob = connect(&broker, "bob", "v1").await;
    let ch = lconfirm_chan(&bob).await;
    guard("declare", declare(&ch, "bob-q", FieldTable::default())).await.expect("declare");
    async fn publish(ch: &Channel) -> lapin::Result<lapin::Confirmation> {
        ch.basic_publish("".into(), "bob-q".into(), BasicPublishOptions::default(), b"m", lprops()).await?.await
    }
    assert!(guard("publish", publish(&ch)).await.expect("allowed").is_ack());
    permit(&broker.service, "bob", "v1", "^bob-", "^nothing$", "^bob-");
    lexpect_channel_closed(&bob, &ch, publish(&ch), 403, &denied("exchange", "amq.default")).await;
    permit(&broker.service, "bob", "v1", "^bob-", ".*", "^bob-");
    let ch = lconfirm_chan(&bob).await;
    assert!(guard("publish", publish(&ch)).await.expect("allowed again").is_ack());
    run(&broker.service, NodeCommand::ClearPermissions { user: "bob".into(), vhost: "v1".into() });
    let ch = lchan(&bob).await;
    lexpect_channel_closed(&bob, &ch, declare(&ch, "bob-q2", FieldTable::default()), 403, &denied("queue", "bob-q2"))
        .await;
    assert_eq!(
        refused_open(&broker, "bob", "v1").await,
        (530, "NOT_ALLOWED - access to vhost 'v1' refused for user 'bob'".into())
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_access_needs_permissions_in_it() {
    let broker = common::start().await;
    setup(&broker.service);
    assert_eq!(
        refused_open(&broker, "bob", "%2f").await,
        (530, "NOT_ALLOWED - access to vhost '/' refused for user 'bob'".into())
    );
    assert_eq!(refused_open(&broker, "bob", "nope").await, (530, "NOT_ALLOWED - vhost nope not found".into()));
    let err = broker.service.execute_node(NodeCommand::SetPermissions {
        user: "bob".into(),
        vhost: "v1".into(),
        configure: "(".into(),
        write: ".*".into(),
        read: ".*".into(),
    });
    assert!(err.is_err(), "an invalid expression is refused");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_and_drops_its_queues() {
    let broker = common::start().await;
    setup(&broker.service);
    let conn = connect(&broker, "guest", "v1").await;
    let ch = lchan(&conn).await;
    guard("declare", declare(&ch, "doomed", FieldTable::default())).await.expect("declare");
    let other = connect(&broker, "guest", "%2f").await;
    let events = conn.events_listener();
    run(&broker.service, NodeCommand::DeleteVhost { name: "v1".into() });
    let closed = closed_by_broker(events).await;
    assert_eq!(closed, (320, "CONNECTION_FORCED - vhost 'v1' is deleted".into()));
    assert!(broker.service.vhost("v1").is_none());
    assert!(other.status().connected(), "other vhosts' connections stay");
    assert_eq!(refused_open(&broker, "guest", "v1").await, (530, "NOT_ALLOWED - vhost v1 not found".into()));
    // A vhost of the same name starts empty, and its permissions went with the old one.
    run(&broker.service, NodeCommand::AddVhost { name: "v1".into(), metadata: None });
    assert_eq!(
        refused_open(&broker, "guest", "v1").await,
        (530, "NOT_ALLOWED - access to vhost 'v1' refused for user 'guest'".into())
    );
    permit(&broker.service, "guest", "v1", ".*", ".*", ".*");
    let conn = connect(&broker, "guest", "v1").await;
    let ch = lchan(&conn).await;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let err = guard("passive", ch.queue_declare("doomed".into(), passive, FieldTable::default()))
        .await
        .expect_err("the queue went with its vhost");
    assert_eq!(amqp_err(&err).0, 404);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_closes_its_connections() {
    let broker = common::start().await;
    setup(&broker.service);
    let bob = connect(&broker, "bob", "v1").await;
    let events = bob.events_listener();
    run(&broker.service, NodeCommand::DeleteUser { name: "bob".into() });
    let closed = closed_by_broker(events).await;
    assert_eq!(closed, (320, "CONNECTION_FORCED - user 'bob' is deleted".into()));
    add_user(&broker.service, "bob");
    assert_eq!(
        refused_open(&broker, "bob", "v1").await,
        (530, "NOT_ALLOWED - access to vhost 'v1' refused for user 'bob'".into()),
        "a new user of the same name has none of the old one's permissions"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_and_user_limits_refuse_with_rabbitmq_texts() {
    let broker = common::start().await;
    setup(&broker.service);
    let limits = VhostLimits { max_connections: Some(2), max_queues: Some(1) };
    run(&broker.service, NodeCommand::SetVhostLimits { vhost: "v1".into(), limits });
    let first = connect(&broker, "guest", "v1").await;
    let ch = lchan(&first).await;
    guard("declare", declare(&ch, "only", FieldTable::default())).await.expect("first queue");
    guard("redeclare", declare(&ch, "only", FieldTable::default())).await.expect("redeclaring is no new queue");
    let text = "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost 'v1' (1) is reached";
    lexpect_channel_closed(&first, &ch, declare(&ch, "two", FieldTable::default()), 406, text).await;
    let _second = connect(&broker, "bob", "v1").await;
    assert_eq!(
        refused_open(&broker, "guest", "v1").await,
        (530, "NOT_ALLOWED - access to vhost 'v1' refused for user 'guest': connection limit (2) is reached".into())
    );
    let other_vhost = connect(&broker, "guest", "%2f").await;

    let limits = UserLimits { max_connections: Some(2), max_channels: Some(2) };
    run(&broker.service, NodeCommand::SetUserLimits { user: "guest".into(), limits });
    assert_eq!(
        refused_open(&broker, "guest", "%2f").await,
        (530, "NOT_ALLOWED - Connection refused for user 'guest': user connection limit (2) is reached".into())
    );
    // Counted over all of guest's connections: one here, one there, then no more.
    let _ch1 = lchan(&first).await;
    let _ch2 = lchan(&other_vhost).await;
    let err = guard("channel.open", other_vhost.create_channel()).await.expect_err("over max-channels");
    assert_eq!(
        amqp_err(&err),
        (
            530,
            "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (2)"
                .into()
        )
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_limits_and_vhost_deletion_survive_a_restart() {
    let dir = DataDir(std::env::temp_dir().join(uniq("lepus-access")));
    let config = || lepus_server::Config { data_dir: Some(dir.0.clone()), ..common::test_config() };
    let broker = common::start_with(config()).await;
    setup(&broker.service);
    let queue_dirs = || std::fs::read_dir(dir.0.join("queues")).map_or(0, |d| d.count());
    let dirs_before = queue_dirs();
    run(&broker.service, NodeCommand::AddVhost { name: "gone".into(), metadata: None });
    permit(&broker.service, "guest", "gone", ".*", ".*", ".*");
    {
        // A durable queue holding a persistent message, stored before the deletion.
        let conn = connect(&broker, "guest", "gone").await;
        let ch = lchan(&conn).await;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        guard("declare", ch.queue_declare("kept".into(), durable, FieldTable::default())).await.expect("declare");
        guard("confirm", ch.confirm_select(Default::default())).await.expect("confirm mode");
        let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
        let publish = ch.basic_publish("".into(), "kept".into(), BasicPublishOptions::default(), b"m", persistent);
        guard("publish", async { publish.await?.await }).await.expect("confirmed");
        assert_eq!(queue_dirs(), dirs_before + 1, "the queue's log is on disk");
    }
    run(&broker.service, NodeCommand::DeleteVhost { name: "gone".into() });
    let limits = VhostLimits { max_connections: None, max_queues: Some(0) };
    run(&broker.service, NodeCommand::SetVhostLimits { vhost: "v1".into(), limits });
    broker.stop().await;
    // The log is destroyed by the store's next commit; the stop commits what is pending.
    assert_eq!(queue_dirs(), dirs_before, "a deleted vhost leaves no queue files behind");

    let broker = common::start_with(config()).await;
    assert!(broker.service.vhost("gone").is_none());
    assert_eq!(broker.service.vhost("v1").expect("v1 restored").limits().max_queues, Some(0));
    let bob = connect(&broker, "bob", "v1").await;
    let ch = lchan(&bob).await;
    let text = "ACCESS_REFUSED - access to queue 'q1' in vhost 'v1' refused for user 'bob'";
    lexpect_channel_closed(&bob, &ch, declare(&ch, "q1", FieldTable::default()), 403, text).await;
    assert_eq!(
        refused_open(&broker, "bob", "%2f").await,
        (530, "NOT_ALLOWED - access to vhost '/' refused for user 'bob'".into())
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_before_permissions_keeps_every_users_access() {
    let dir = DataDir(std::env::temp_dir().join(uniq("lepus-access")));
    std::fs::create_dir_all(&dir.0).expect("data dir");
    {
        use lepus_store::meta::{Change, MetaStore, UserRecord};
        let meta = MetaStore::open(&dir.0.join("meta.redb")).expect("meta store");
        let user = lepus_broker::users::User::new("old", "pw", &[]);
        let record = UserRecord { name: "old".into(), password_hash: user.password_hash().to_vec(), tags: Vec::new() };
        meta.apply(&[Change::PutVhost("/".into()), Change::PutVhost("legacy".into()), Change::PutUser(record)])
            .expect("old layout");
    }
    let config = lepus_server::Config { data_dir: Some(dir.0.clone()), ..common::test_config() };
    let broker = common::start_with(config).await;
    let conn = connect(&broker, "old", "legacy").await;
    let ch = lchan(&conn).await;
    guard("declare", declare(&ch, "anything", FieldTable::default())).await.expect("full access kept");
    let _ = connect(&broker, "old", "%2f").await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_impersonator_may_publish_with_another_users_user_id() {
    let broker = common::start().await;
    setup(&broker.service);
    let tags = vec!["impersonator".to_owned()];
    run(
        &broker.service,
        NodeCommand::PutUser { name: "imp".into(), credential: Credential::Password("pw".into()), tags },
    );
    permit(&broker.service, "imp", "v1", ".*", ".*", ".*");
    let props = || lprops().with_user_id("someone-else".into());
    let imp = connect(&broker, "imp", "v1").await;
    let ch = lconfirm_chan(&imp).await;
    let confirm = guard("publish", async {
        ch.basic_publish("".into(), "nowhere".into(), BasicPublishOptions::default(), b"m", props()).await?.await
    })
    .await
    .expect("an impersonator may");
    assert!(confirm.is_ack());
    let bob = connect(&broker, "bob", "v1").await;
    let ch = lconfirm_chan(&bob).await;
    let publish = ch.basic_publish("".into(), "bob-q".into(), BasicPublishOptions::default(), b"m", props());
    let publish = async { publish.await?.await };
    let text = "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was 'bob'";
    lexpect_channel_closed(&bob, &ch, publish, 406, text).await;
    broker.stop().await;
}
