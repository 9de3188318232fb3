//! The JSON of channels and consumers, as RabbitMQ 3.10's management API gives them: a
//! channel's counts, gauges and rates from its registry record
//! (`lepus_broker::channel_stats`), and each consumer with its tag and its channel's
//! details, joined from the queue's consumer list and the channel records by consumer id.

use std::collections::HashMap;

use lepus_broker::ConsumerId;
use lepus_broker::Queue;
use lepus_broker::channel_stats::{ChannelRef, ChannelStat, ChannelStats};
use lepus_broker::connections::{ConnectionInfo, ConnectionRef};
use lepus_broker::queue::ConsumerView;
use serde_json::{Map, Value, json};

use crate::Api;
use crate::views;

/// RabbitMQ's channel name: its connection's name and its number.
pub fn channel_name(api: &Api, c: &ConnectionInfo, number: u16) -> String {
    format!("{} ({number})", views::connection_name(api, c))
}

/// A channel as `/api/channels` lists it.
pub fn channel(api: &Api, c: &ConnectionInfo, ch: &ChannelStats) -> Value {
    let g = ch.gauges();
    let mut body = json!({
        "name": channel_name(api, c, ch.number),
        "number": ch.number,
        "node": api.node.name,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "state": "running",
        "connection_details": views::connection_details(api, c),
        "consumer_count": g.consumers,
        "prefetch_count": g.prefetch,
        "global_prefetch_count": g.global_prefetch,
        "confirm": g.confirm,
        "transactional": g.transactional,
        "messages_unacknowledged": g.unacked,
        "messages_unconfirmed": g.unconfirmed,
        "messages_uncommitted": g.uncommitted,
        "acks_uncommitted": g.acks_uncommitted,
        "pending_raft_commands": 0,
    });
    if let (Value::Object(map), Some(stats)) = (&mut body, message_stats(ch)) {
        map.insert("message_stats".into(), stats);
    }
    body
}

/// A channel's `message_stats`, as RabbitMQ shows them: the publishing counts once it
/// published, the consuming counts (and `deliver_get`) once it consumed or got; none before.
fn message_stats(ch: &ChannelStats) -> Option<Value> {
    let (counts, rates) = (ch.counts(), ch.per_second());
    let mut map = Map::new();
    let mut add = |stats: &[ChannelStat]| {
        for &stat in stats {
            map.insert(stat.name().into(), json!(counts.get(stat)));
            map.insert(format!("{}_details", stat.name()), json!({"rate": rates[stat as usize]}));
        }
    };
    if counts.get(ChannelStat::Publish) > 0 {
        add(ChannelStat::publishing());
    }
    if ChannelStat::consuming().iter().any(|&s| counts.get(s) > 0) {
        add(ChannelStat::consuming());
        let rate: f64 = [ChannelStat::Deliver, ChannelStat::DeliverNoAck, ChannelStat::Get, ChannelStat::GetNoAck]
            .iter()
            .map(|&s| rates[s as usize])
            .sum();
        map.insert("deliver_get".into(), json!(counts.deliver_get()));
        map.insert("deliver_get_details".into(), json!({"rate": rate}));
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

/// A consumer's channel, as consumers list it.
fn channel_details(api: &Api, c: &ConnectionInfo, number: u16) -> Value {
    json!({
        "connection_name": views::connection_name(api, c),
        "name": channel_name(api, c, number),
        "node": api.node.name,
        "number": number,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "user": c.user,
    })
}

/// Where a consumer came from: its connection, channel and tag.
pub struct Owner {
    pub connection: ConnectionRef,
    pub number: u16,
    pub tag: String,
}

/// Every registered consumer's owner, by consumer id (built per request from the channel
/// records: a lock per connection and per channel, no queue touched).
pub fn owners(api: &Api) -> HashMap<ConsumerId, Owner> {
    let mut index = HashMap::new();
    for c in api.broker.connections().list() {
        for ch in c.channel_records() {
            for consumer in ch.consumers() {
                let owner = Owner { connection: c.clone(), number: ch.number, tag: consumer.tag };
                index.insert(consumer.id, owner);
            }
        }
    }
    index
}

/// A consumer as `/api/consumers` and a queue's or channel's `consumer_details` list it.
pub fn consumer(api: &Api, queue: &Queue, vhost: &str, view: &ConsumerView, owner: Option<&Owner>) -> Value {
    let arguments = if view.priority == 0 { json!({}) } else { json!({"x-priority": view.priority}) };
    json!({
        "queue": {"name": String::from_utf8_lossy(queue.name.as_bytes()), "vhost": vhost},
        "consumer_tag": owner.map_or("", |o| o.tag.as_str()),
        "ack_required": view.ack_required,
        "prefetch_count": view.prefetch,
        "exclusive": view.exclusive,
        "active": view.active,
        "activity_status": if view.active { "up" } else { "waiting" },
        "arguments": arguments,
        "channel_details": owner.map_or_else(|| json!({}), |o| channel_details(api, &o.connection, o.number)),
    })
}

/// A queue's consumers with their owners (the queue page's `consumer_details`).
pub fn queue_consumers(api: &Api, queue: &Queue, vhost: &str, owners: &HashMap<ConsumerId, Owner>) -> Vec<Value> {
    queue.consumer_views().iter().map(|view| consumer(api, queue, vhost, view, owners.get(&view.id))).collect()
}

/// One channel with its `consumer_details` (its consumers, each looked up in its queue),
/// as `/api/channels/{name}` gives it.
pub fn channel_with_consumers(api: &Api, c: &ConnectionRef, ch: &ChannelRef) -> Value {
    let mut body = channel(api, c, ch);
    let vhost = api.broker.vhost(&c.vhost);
    let mut details = Vec::new();
    for entry in ch.consumers() {
        let (Some(v), Some(name)) = (&vhost, &entry.queue) else { continue };
        let Some(queue) = v.queue_named(name.as_bytes()) else { continue };
        let Some(view) = queue.consumer_views().into_iter().find(|view| view.id == entry.id) else { continue };
        let owner = Owner { connection: c.clone(), number: ch.number, tag: entry.tag };
        details.push(consumer(api, &queue, &c.vhost, &view, Some(&owner)));
    }
    if let Value::Object(map) = &mut body {
        map.insert("consumer_details".into(), Value::Array(details));
        map.insert("deliveries".into(), json!([]));
        map.insert("publishes".into(), json!([]));
    }
    body
}
