//! The JSON RabbitMQ's management API gives for each kind of object, built from the broker's
//! read-only views and counters. Message rates are the broker's samples (`lepus_broker::rates`,
//! every 5 s); rates of queue lengths are not sampled (0.0).

use lepus_broker::Queue;
use lepus_broker::connections::ConnectionInfo;
use lepus_broker::exchange::Destination;
use lepus_broker::io_stats::IoStat;
use lepus_broker::queue::QueueCounts;
use lepus_broker::rates::Rates;
use lepus_broker::stats::{Snapshot, Stat};
use lepus_broker::users::User;
use lepus_broker::vhost::{BindingView, ExchangeView};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::Api;
use crate::convert::table_to_json;

/// The name the API gives the default exchange in paths.
pub const DEFAULT_EXCHANGE_ALIAS: &str = "amq.default";
/// RabbitMQ's name for its (and our) password hashing.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

fn rate() -> Value {
    json!({"rate": 0.0})
}

fn details(rate: f64) -> Value {
    json!({"rate": rate})
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `message_stats` from counters and their sampled rates: each count with its `_details`.
/// The counters of deliveries and gets include those without acknowledgements; where `stats`
/// also has the no-ack counter, `deliver` and `get` are shown without them as RabbitMQ's are
/// (`deliver_no_ack` and `get_no_ack` apart), `deliver_get` is them all, and `drop_unroutable`
/// is the unroutable messages not returned.
pub fn message_stats(s: &Snapshot, rates: &Rates, stats: &[Stat]) -> Value {
    let mut map = Map::new();
    let mut put = |name: &str, count: u64, rate: f64| {
        map.insert(name.into(), json!(count));
        map.insert(format!("{name}_details"), details(rate));
    };
    let less = |stat: Stat, part: Stat| {
        if stats.contains(&part) {
            (s.get(stat).saturating_sub(s.get(part)), (rates.get(stat) - rates.get(part)).max(0.0))
        } else {
            (s.get(stat), rates.get(stat))
        }
    };
    for stat in stats {
        let (count, rate) = match stat {
            Stat::Delivered => less(Stat::Delivered, Stat::DeliveredNoAck),
            Stat::Get => less(Stat::Get, Stat::GetNoAck),
            _ => (s.get(*stat), rates.get(*stat)),
        };
        put(stat.name(), count, rate);
    }
    if stats.contains(&Stat::Unroutable) && stats.contains(&Stat::Returned) {
        let (count, rate) = less(Stat::Unroutable, Stat::Returned);
        put("drop_unroutable", count, rate);
    }
    let deliver_get = s.get(Stat::Delivered) + s.get(Stat::Get);
    put("deliver_get", deliver_get, rates.get(Stat::Delivered) + rates.get(Stat::Get));
    Value::Object(map)
}

/// What a queue's `message_stats` show: its own counters (a queue cannot tell a get without
/// acknowledgement from one with, so its `get` counts both).
const QUEUE_STATS: &[Stat] = &[
    Stat::Published,
    Stat::Delivered,
    Stat::DeliveredNoAck,
    Stat::Get,
    Stat::GetEmpty,
    Stat::Redelivered,
    Stat::Acked,
];

/// The counts every queue-ish total has (`queue_totals`, a vhost's, a queue's).
pub fn message_counts(map: &mut Map<String, Value>, ready: u64, unacked: u64) {
    for (k, v) in [("messages", ready + unacked), ("messages_ready", ready), ("messages_unacknowledged", unacked)] {
        map.insert(k.into(), json!(v));
        map.insert(format!("{k}_details"), rate());
    }
}

pub fn queue_type(q: &Queue) -> String {
    q.arguments.get("x-queue-type").and_then(|v| v.as_str()).unwrap_or("classic").to_owned()
}

pub fn queue(api: &Api, q: &Queue, counts: &QueueCounts) -> Value {
    let mut map = Map::new();
    let applied = q.policy();
    map.insert("arguments".into(), table_to_json(&q.arguments));
    map.insert("auto_delete".into(), json!(q.auto_delete));
    map.insert("consumers".into(), json!(counts.consumers));
    map.insert("durable".into(), json!(q.durable));
    map.insert("effective_policy_definition".into(), Value::Object(applied.effective_definition()));
    map.insert("exclusive".into(), json!(q.exclusive_owner.is_some()));
    map.insert("exclusive_consumer_tag".into(), Value::Null);
    map.insert("head_message_timestamp".into(), Value::Null);
    map.insert("message_bytes".into(), json!(counts.ready_bytes));
    map.insert("message_bytes_ready".into(), json!(counts.ready_bytes));
    map.insert("message_bytes_unacknowledged".into(), json!(0));
    map.insert("memory".into(), json!(counts.memory_bytes));
    map.insert("messages_paged_out".into(), json!(counts.paged_out));
    map.insert("messages_ram".into(), json!(u64::from(counts.ready - counts.paged_out) + counts.unacked));
    map.insert("messages_ready_ram".into(), json!(counts.ready - counts.paged_out));
    map.insert("messages_unacknowledged_ram".into(), json!(counts.unacked));
    message_counts(&mut map, u64::from(counts.ready), counts.unacked);
    map.insert("message_stats".into(), message_stats(&q.stats(), &q.rates(), QUEUE_STATS));
    map.insert("name".into(), json!(lossy(q.name.as_bytes())));
    map.insert("node".into(), json!(api.node.name));
    map.insert("operator_policy".into(), json!(applied.operator_policy_name()));
    map.insert("policy".into(), json!(applied.policy_name()));
    map.insert("recoverable_slaves".into(), Value::Null);
    map.insert("single_active_consumer_tag".into(), Value::Null);
    map.insert("state".into(), json!("running"));
    map.insert("type".into(), json!(queue_type(q)));
    map.insert("vhost".into(), json!(&*q.vhost));
    Value::Object(map)
}

/// An exchange's name in the API: the default exchange is `""` in JSON. `message_stats` as
/// RabbitMQ shows them: absent until something was published to it, `publish_out` absent
/// until a message it took reached a queue.
pub fn exchange(vhost: &str, x: &ExchangeView) -> Value {
    let mut body = json!({
        "arguments": table_to_json(&x.arguments),
        "auto_delete": x.auto_delete,
        "durable": x.durable,
        "internal": x.internal,
        "name": lossy(x.name.as_bytes()),
        "type": x.type_name,
        "user_who_performed_action": "",
        "vhost": vhost,
    });
    let mut stats = Map::new();
    for (i, name) in ["publish_in", "publish_out"].into_iter().enumerate() {
        if x.publish[i] > 0 {
            stats.insert(name.into(), json!(x.publish[i]));
            stats.insert(format!("{name}_details"), details(x.publish_rates[i]));
        }
    }
    if let (Value::Object(map), false) = (&mut body, stats.is_empty()) {
        map.insert("message_stats".into(), Value::Object(stats));
    }
    body
}

/// A binding, with its properties key (what identifies it in a path).
pub fn binding(vhost: &str, b: &BindingView) -> Value {
    let (destination, destination_type) = match &b.destination {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(x) => (x, "exchange"),
    };
    json!({
        "source": lossy(b.source.as_bytes()),
        "vhost": vhost,
        "destination": lossy(destination.as_bytes()),
        "destination_type": destination_type,
        "routing_key": lossy(b.routing_key.as_bytes()),
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

/// What `quote_plus` leaves alone: letters, digits and `-_.~` (then `~` is escaped too).
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b' ');

/// What `quote_plus` keeps unescaped in a `Location`: letters, digits and `-_.~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` escaped for one path segment of a `Location` header as RabbitMQ escapes it
/// (`quote_plus`: a space is `+`, `~` stays).
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string().replace("%20", "+")
}

pub fn quote(s: &str) -> String {
    utf8_percent_encode(s, QUOTE).to_string().replace(' ', "+").replace('~', "%7E")
}

/// RabbitMQ's binding properties key: `~` for an empty key without arguments, the quoted
/// routing key, or the quoted key, `~` and a hash of the arguments (our own hash: the key is
/// opaque to clients, which take it from a listing or a `Location` header).
pub fn properties_key(b: &BindingView) -> String {
    let key = lossy(b.routing_key.as_bytes());
    if b.arguments.is_empty() {
        return if key.is_empty() { "~".into() } else { quote(&key) };
    }
    let canonical = table_to_json(&b.arguments).to_string();
    let hash = canonical.bytes().fold(0x811c_9dc5u32, |h, byte| (h ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    use base64::Engine;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{}~{}", quote(&key), encoded)
}

pub fn connection_name(api: &Api, c: &ConnectionInfo) -> String {
    format!("{} -> {}", c.peer, amqp_address(api))
}

fn amqp_address(api: &Api) -> String {
    api.node
        .listeners
        .iter()
        .find(|l| l.protocol == "amqp")
        .map_or_else(|| "0.0.0.0:5672".into(), |l| l.address.to_string())
}

pub fn connection(api: &Api, c: &ConnectionInfo) -> Value {
    let server = api.node.listeners.iter().find(|l| l.protocol == "amqp").map(|l| l.address);
    let mut body = json!({
        "name": connection_name(api, c),
        "node": api.node.name,
        "type": "network",
        "state": c.state(api.broker.alarms().any()).name(),
        "protocol": c.protocol,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "host": server.map(|a| a.ip().to_string()),
        "port": server.map(|a| a.port()),
        "ssl": false,
        "ssl_protocol": null,
        "ssl_cipher": null,
        "ssl_hash": null,
        "ssl_key_exchange": null,
        "peer_cert_issuer": null,
        "peer_cert_subject": null,
        "peer_cert_validity": null,
        "channels": c.channels.load(std::sync::atomic::Ordering::Relaxed),
        "connected_at": c.connected_at_ms,
        "client_properties": table_to_json(&c.client_properties),
        "message_stats": message_stats(&c.stats.snapshot(), &Rates::default(), Stat::management()),
    });
    if let Value::Object(map) = &mut body {
        socket_stats(map, c);
    }
    body
}

/// `recv_oct`, `recv_cnt`, `send_oct`, `send_cnt`, each with its `_details` rate.
fn socket_stats(map: &mut Map<String, Value>, c: &ConnectionInfo) {
    let (totals, rates) = (c.io.totals(), c.io.rates());
    for stat in IoStat::ALL {
        map.insert(stat.name().into(), json!(totals.get(stat)));
        map.insert(format!("{}_details", stat.name()), details(rates[stat as usize]));
    }
}

/// A connection's reference in channel and consumer details.
pub fn connection_details(api: &Api, c: &ConnectionInfo) -> Value {
    json!({"name": connection_name(api, c), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()})
}

pub fn user(u: &User) -> Value {
    use base64::Engine;
    json!({
        "name": u.name,
        "password_hash": base64::engine::general_purpose::STANDARD.encode(u.password_hash()),
        "hashing_algorithm": u.hashing_algorithm().map_or(HASHING_ALGORITHM, |a| a.name()),
        "tags": u.tags,
        "limits": {},
    })
}

#[cfg(test)]
mod tests {
    use lepus_protocol::{FieldTable, ShortStr};

    use super::*;

    fn b(key: &'static str, args: FieldTable) -> BindingView {
        BindingView {
            source: ShortStr::from_static("x"),
            destination: Destination::Queue(ShortStr::from_static("q")),
            routing_key: ShortStr::from_static(key),
            arguments: args,
        }
    }

    #[test]
    fn properties_keys_as_rabbitmq_forms_them() {
        assert_eq!(properties_key(&b("", FieldTable::new())), "~");
        assert_eq!(properties_key(&b("k.a_b-c", FieldTable::new())), "k.a_b-c");
        assert_eq!(properties_key(&b("a b/c~", FieldTable::new())), "a+b%2Fc%7E");
        // In a `Location` as 3.10.8 sends it: the destination and the key escaped once more.
        assert_eq!(segment("q a+b/c~"), "q+a%2Bb%2Fc~");
        assert_eq!(segment(&properties_key(&b("a b/c~d+e", FieldTable::new()))), "a%2Bb%252Fc%257Ed%252Be");
        let with_args = properties_key(&b("k", FieldTable::new().with("a", 1i64)));
        assert!(with_args.starts_with("k~") && with_args.len() == 8, "{with_args}");
        assert_ne!(with_args, properties_key(&b("k", FieldTable::new().with("a", 2i64))));
    }
}
