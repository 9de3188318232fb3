//! Real client libraries against the broker: lapin and amqprs (two independent codecs)
//! connect, negotiate, open and close channels, and close cleanly; bad credentials and
//! unknown vhosts are refused.

mod common;

use amqprs::connection::{Connection as AmqprsConnection, OpenConnectionArguments};
use common::start;
use lapin::{Connection as LapinConnection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_connects_opens_channels_and_closes() {
    let broker = start().await;
    let conn = LapinConnection::connect(&broker.url(), ConnectionProperties::default()).await.expect("lapin connects");
    assert!(conn.status().connected());
    assert_eq!(conn.status().vhost().as_str(), "/");
    assert_eq!(conn.configuration().frame_max(), 131_072);
    assert_eq!(conn.configuration().channel_max(), 2047);
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(conn.create_channel().await.expect("channel opens"));
    }
    let mut ids: Vec<_> = channels.iter().map(|c| c.id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    for ch in &channels {
        assert!(ch.status().connected());
        ch.close(200, "bye".into()).await.expect("channel closes");
        assert!(!ch.status().connected());
    }
    conn.close(200, "bye".into()).await.expect("connection closes");
    assert!(!conn.status().connected());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_is_refused_with_a_wrong_password_or_vhost() {
    let broker = start().await;
    let bad_password = format!("amqp://guest:nope@{}/%2f", broker.addr);
    assert!(LapinConnection::connect(&bad_password, ConnectionProperties::default()).await.is_err());
    let bad_vhost = format!("amqp://guest:guest@{}/nowhere", broker.addr);
    assert!(LapinConnection::connect(&bad_vhost, ConnectionProperties::default()).await.is_err());
    // The broker still accepts good connections.
    let conn = LapinConnection::connect(&broker.url(), ConnectionProperties::default()).await.expect("connects");
    conn.close(200, "bye".into()).await.expect("closes");
    broker.stop().await;
}

fn amqprs_args(broker: &common::Broker, user: &str, password: &str) -> OpenConnectionArguments {
    OpenConnectionArguments::new(&broker.addr.ip().to_string(), broker.addr.port(), user, password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_connects_opens_channels_and_closes() {
    let broker = start().await;
    let conn = AmqprsConnection::open(&amqprs_args(&broker, "guest", "guest")).await.expect("amqprs connects");
    assert!(conn.is_open());
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(conn.open_channel(None).await.expect("channel opens"));
    }
    for ch in channels {
        assert!(ch.is_open());
        ch.close().await.expect("channel closes");
    }
    conn.close().await.expect("connection closes");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_is_refused_with_a_wrong_password() {
    let broker = start().await;
    assert!(AmqprsConnection::open(&amqprs_args(&broker, "guest", "wrong")).await.is_err());
    assert!(AmqprsConnection::open(&amqprs_args(&broker, "nobody", "guest")).await.is_err());
    let conn = AmqprsConnection::open(&amqprs_args(&broker, "guest", "guest")).await.expect("connects");
    conn.close().await.expect("closes");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_from_both_clients() {
    let broker = start().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = broker.url();
        let args = amqprs_args(&broker, "guest", "guest");
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let c = LapinConnection::connect(&url, ConnectionProperties::default()).await.expect("lapin");
                let ch = c.create_channel().await.expect("channel");
                ch.close(200, "bye".into()).await.expect("channel close");
                c.close(200, "bye".into()).await.expect("close");
            } else {
                let c = AmqprsConnection::open(&args).await.expect("amqprs");
                let ch = c.open_channel(None).await.expect("channel");
                ch.close().await.expect("channel close");
                c.close().await.expect("close");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task succeeded");
    }
    broker.stop().await;
}
