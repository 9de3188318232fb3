//! Resource alarms through a real client (lapin): a publisher is told `connection.blocked`
//! with RabbitMQ's reason and its message waits, unprocessed, until the alarm clears; then it
//! is told `connection.unblocked` and the message is routed and confirmed. Consumers keep
//! draining meanwhile, on their own connection or on the publisher's.
//!
//! The memory limit is set in bytes (0: the alarm is set at the first sample) and raised
//! through the broker, as `rabbitmqctl set_vm_memory_high_watermark` does; the disk limit is
//! set above any disk's free space.

#[path = "common/clients.rs"]
mod clients;
mod common;

use clients::*;
use lapin::options::{BasicAckOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use lepus_broker::alarms::{AlarmLimits, Resource};
use lepus_server::Config;

const NO_LIMITS: AlarmLimits = AlarmLimits { memory_limit_bytes: u64::MAX, disk_free_limit_bytes: 0 };

fn alarmed_memory() -> Config {
    Config { memory_high_watermark_bytes: Some(0), ..common::test_config() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_waits_blocked_while_the_memory_alarm_is_set_and_goes_on_when_it_clears() {
    let broker = common::start_with(alarmed_memory()).await;
    assert_eq!(broker.service.alarms().active(), vec![Resource::Memory]);
    let observer = lconn(&broker).await;
    let watch = lchan(&observer).await;
    let queue = uniq("alarm");
    ldeclare(&watch, &queue, QueueDeclareOptions::default(), FieldTable::default()).await;

    let publisher = lconn(&broker).await;
    let mut events = Box::pin(publisher.events_listener());
    let ch = lconfirm_chan(&publisher).await;
    let pending = guard(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"held",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("the client sends it");
    assert_eq!(next_blocking(&mut events).await.as_deref(), Some("low on memory"));
    assert_eq!(lcount(&watch, &queue).await.0, 0, "the message waits unprocessed while blocked");

    broker.service.alarms().set_limits(NO_LIMITS);
    assert_eq!(next_blocking(&mut events).await, None, "connection.unblocked");
    assert_eq!(guard("confirm", pending).await.expect("confirmed"), Confirmation::Ack(None));
    assert_eq!(ldrain(&watch, &queue).await, vec![b"held".to_vec()]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_keep_draining_and_acking_during_an_alarm() {
    let broker = common::start().await;
    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    let queue = uniq("drain");
    ldeclare(&ch, &queue, QueueDeclareOptions::default(), FieldTable::default()).await;
    for body in [b"1", b"2", b"3"] {
        assert_eq!(lpub(&ch, "", &queue, body).await, Confirmation::Ack(None));
    }
    broker.service.alarms().set_limits(AlarmLimits { memory_limit_bytes: 0, disk_free_limit_bytes: 0 });
    assert!(broker.service.alarms().any());

    let mut consumer = lconsume(&ch, &queue, false).await;
    let deliveries = consumer.take(3).await;
    assert_eq!(
        deliveries.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    for d in &deliveries {
        guard("ack", d.acker.ack(BasicAckOptions::default())).await.expect("ack");
    }
    guard("channel.close", ch.close(200, "bye".into())).await.expect("channel closes");
    let other = lchan(&conn).await;
    assert_eq!(lcount(&other, &queue).await.0, 0, "the acks were processed: nothing was requeued at close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_alarm_blocks_with_rabbitmqs_reason_and_both_alarms_are_joined() {
    let dir = std::env::temp_dir().join(uniq("lepus-alarm-data"));
    let config = Config { data_dir: Some(dir.clone()), disk_free_limit_bytes: u64::MAX, ..common::test_config() };
    let broker = common::start_with(config).await;
    assert_eq!(broker.service.alarms().active(), vec![Resource::Disk]);
    let publisher = lconn(&broker).await;
    let mut events = Box::pin(publisher.events_listener());
    let ch = lchan(&publisher).await;
    guard(
        "basic.publish",
        ch.basic_publish("".into(), "nowhere".into(), BasicPublishOptions::default(), b"x", BasicProperties::default()),
    )
    .await
    .expect("sent");
    assert_eq!(next_blocking(&mut events).await.as_deref(), Some("low on disk"));
    broker.service.alarms().set_limits(AlarmLimits { memory_limit_bytes: 0, disk_free_limit_bytes: u64::MAX });
    assert_eq!(broker.service.alarms().active(), vec![Resource::Disk, Resource::Memory]);
    assert_eq!(broker.service.alarms().blocked_reason(), "low on disk & memory", "RabbitMQ 3.10.8's text");
    broker.service.alarms().set_limits(NO_LIMITS);
    assert_eq!(next_blocking(&mut events).await, None, "unblocked once both cleared");
    broker.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
