//! Consumers that read slowly or not at all (reliability issue, F4 and the no-ack part of
//! F2), end to end: a raw client that stops reading stands for the slow consumer, lapin for
//! everyone else.
//! - The no-ack window is bounded in bytes: 1 MiB messages are not all handed to a no-ack
//!   consumer that reads nothing (2,048 deliveries of any size were, before).
//! - No-ack deliveries not yet written to the socket when the connection dies, or when the
//!   client closes the channel, go back to the queue: nothing is lost, the rest of the queue
//!   keeps its order.
//! - Liveness on the broker's clock: frames from the client keep a connection alive however
//!   far the clock moves; two silent heartbeat intervals end it.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use clients::*;
use common::{Broker, Raw, start_with, start_with_clock, test_config};
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lepus_broker::clock::ManualClock;
use lepus_protocol::method::*;
use lepus_protocol::{FrameType, Method, ShortStr};
use lepus_server::Config;

/// Messages in each test's queue, of [`MESSAGE_BYTES`] each: far more than socket buffers
/// and the no-ack window hold.
const MESSAGES: u32 = 100;
const MESSAGE_BYTES: usize = 1024 * 1024;

/// A queue with [`MESSAGES`] messages whose bodies start with their index (4 bytes, big
/// endian), published with confirms.
async fn filled_queue(broker: &Broker) -> (lapin::Connection, lapin::Channel, String) {
    let conn = lconn(broker).await;
    let ch = lconfirm_chan(&conn).await;
    let q = uniq("slow");
    ldeclare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await;
    let mut body = vec![0u8; MESSAGE_BYTES];
    for i in 0..MESSAGES {
        body[..4].copy_from_slice(&i.to_be_bytes());
        assert!(lpub(&ch, "", &q, &body).await.is_ack());
    }
    (conn, ch, q)
}

/// A raw connection (channel 1 open) consuming `queue` with no-ack that reads nothing past
/// `consume-ok`.
async fn stalled_no_ack_consumer(broker: &Broker, queue: &str) -> Raw {
    let mut raw = Raw::open_with_channel(broker.addr).await;
    let consume = BasicConsume { queue: ShortStr::truncating(queue), no_ack: true, ..Default::default() };
    raw.send_method(1, consume).await;
    let Some((1, Method::BasicConsumeOk(_))) = raw.next_method().await else { panic!("expected consume-ok") };
    raw
}

/// Waits until the broker has forgotten every connection but `keep`.
async fn until_connections(broker: &Broker, keep: usize) {
    guard("the connection's end", async {
        while broker.service.connections().len() > keep {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Consumes (with acks) every message in `queue`; their indexes in delivery order.
async fn drain_indexes(ch: &lapin::Channel, queue: &str) -> Vec<u32> {
    let (ready, _) = lcount(ch, queue).await;
    let mut consumer = lconsume(ch, queue, false).await;
    let mut indexes = Vec::new();
    for d in consumer.take(ready as usize).await {
        indexes.push(u32::from_be_bytes(d.data[..4].try_into().expect("index")));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    indexes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_no_ack_consumer_holds_a_bounded_number_of_bytes() {
    let broker = start_with(test_config()).await;
    let (_conn, ch, q) = filled_queue(&broker).await;
    let _raw = stalled_no_ack_consumer(&broker, &q).await;
    // The window is 2,048 units of 32 KiB: about 62 of these messages (plus what the socket
    // buffers took). Counted in deliveries, all 100 were handed over at basic.consume.
    let (ready, consumers) = lcount(&ch, &q).await;
    assert_eq!(consumers, 1);
    assert!(ready > 0, "every message was handed to a consumer that reads nothing");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_deliveries_never_written_come_back_when_the_connection_dies() {
    let broker = start_with(test_config()).await;
    let (_conn, ch, q) = filled_queue(&broker).await;
    let raw = stalled_no_ack_consumer(&broker, &q).await;
    // Closed with unread data: the broker's next write fails.
    drop(raw);
    until_connections(&broker, 1).await;
    // What the socket took is gone (no-ack); the rest is back, in order, none lost: a
    // non-empty tail of the queue.
    let indexes = drain_indexes(&ch, &q).await;
    let first = MESSAGES - indexes.len() as u32;
    assert!(!indexes.is_empty(), "no-ack deliveries still in the broker's output were lost");
    assert_eq!(indexes, (first..MESSAGES).collect::<Vec<_>>());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_deliveries_not_written_come_back_when_the_client_closes_the_channel() {
    let broker = start_with(test_config()).await;
    let (_conn, ch, q) = filled_queue(&broker).await;
    let mut raw = stalled_no_ack_consumer(&broker, &q).await;
    raw.send_method(1, ChannelClose { reply_code: 200, ..Default::default() }).await;
    // Everything before close-ok is read (a client would discard it after its close; it is
    // counted here to show that nothing falls between the two).
    let mut seen = BTreeSet::new();
    loop {
        let frame = raw.next_frame().await.expect("channel.close-ok");
        // Body frames after a message's first are skipped.
        if frame.frame_type == FrameType::Method {
            match Method::decode(frame.payload).expect("method") {
                Method::ChannelCloseOk(_) => break,
                Method::BasicDeliver(_) => {
                    let header = raw.next_frame().await.expect("header");
                    assert_eq!(header.frame_type, FrameType::Header);
                    let first_body = raw.next_frame().await.expect("body");
                    seen.insert(u32::from_be_bytes(first_body.payload[..4].try_into().expect("index")));
                }
                _ => {}
            }
        }
    }
    let requeued = drain_indexes(&ch, &q).await;
    assert!(!requeued.is_empty(), "no-ack deliveries not written at channel.close were lost");
    let first = MESSAGES - requeued.len() as u32;
    assert_eq!(requeued, (first..MESSAGES).collect::<Vec<_>>());
    // Read by the client or back in the queue: every message is one or the other.
    let all: BTreeSet<u32> = seen.iter().copied().chain(requeued.iter().copied()).collect();
    assert_eq!(all, (0..MESSAGES).collect::<BTreeSet<_>>());
    broker.stop().await;
}

/// Heartbeat 1 s on a manual clock: the broker's tick reads the clock, so moving it is all
/// it takes for the broker to think time has passed.
async fn heartbeating_connection() -> (Broker, Arc<ManualClock>, Raw) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let broker = start_with_clock(Config { heartbeat_s: 1, ..test_config() }, clock.clone()).await;
    let mut raw = Raw::start_and_tune(broker.addr, 2047, 131_072, 1).await;
    raw.send_method(0, ConnectionOpen { virtual_host: ShortStr::from_static("/"), ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((0, Method::ConnectionOpenOk(_)))));
    (broker, clock, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_the_client_keep_it_alive_however_far_the_clock_moves() {
    let (broker, clock, mut raw) = heartbeating_connection().await;
    let heartbeat = [8u8, 0, 0, 0, 0, 0, 0, 0xCE];
    for channel in 1..=20u16 {
        raw.send(&heartbeat).await;
        // The open-ok proves the heartbeat before it was read.
        raw.send_method(channel, ChannelOpen::default()).await;
        let Some((ch, Method::ChannelOpenOk(_))) = raw.next_method().await else { panic!("connection ended") };
        assert_eq!(ch, channel);
        // 1.5 s: never two silent intervals between frames, 30 s in all.
        clock.advance(1_500);
    }
    raw.send_method(1, ChannelClose { reply_code: 200, ..Default::default() }).await;
    assert!(matches!(raw.next_method().await, Some((1, Method::ChannelCloseOk(_)))));
    // At shutdown the broker's close waits for close-ok on its (manual) clock: hang up first.
    drop(raw);
    until_connections(&broker, 0).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_silent_heartbeat_intervals_on_the_broker_clock_end_the_connection() {
    let (broker, clock, mut raw) = heartbeating_connection().await;
    clock.advance(2_001);
    // The broker's next tick sees the silence and closes the socket.
    raw.expect_eof().await;
    until_connections(&broker, 0).await;
    broker.stop().await;
}
