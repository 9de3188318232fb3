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

/// One entry of a `message_stats` object: its name, count and rate.
type StatEntry = (&'static str, u64, f64);

/// The entries of `message_stats` from counters and their sampled rates. The counters of
/// deliveries and gets include those without acknowledgements; where `stats` also has the
/// no-ack counter, `deliver` and `get` are shown without them as RabbitMQ's are
/// (`deliver_no_ack` and `get_no_ack` apart), `deliver_get` is them all, and
/// `drop_unroutable` is the unroutable messages not returned.
fn stat_entries(s: &Snapshot, rates: &Rates, stats: &[Stat]) -> Vec<StatEntry> {
    let less = |stat: Stat, part: Stat| {
        if stats.contains(&part) {
            (s.get(stat).saturating_sub(s.get(part)), (rates.get(stat) - rates.get(part)).max(0.0))
        } else {
            (s.get(stat), rates.get(stat))
        }
    };
    let mut entries: Vec<StatEntry> = stats
        .iter()
        .map(|stat| {
            let (count, rate) = match stat {
                Stat::Delivered => less(Stat::Delivered, Stat::DeliveredNoAck),
                Stat::Get => less(Stat::Get, Stat::GetNoAck),
                _ => (s.get(*stat), rates.get(*stat)),
            };
            (stat.name(), count, rate)
        })
        .collect();
    if stats.contains(&Stat::Unroutable) && stats.contains(&Stat::Returned) {
        let (count, rate) = less(Stat::Unroutable, Stat::Returned);
        entries.push(("drop_unroutable", count, rate));
    }
    let deliver_get = s.get(Stat::Delivered) + s.get(Stat::Get);
    entries.push(("deliver_get", deliver_get, rates.get(Stat::Delivered) + rates.get(Stat::Get)));
    entries
}

/// A `message_stats` object: each count with its `_details`.
fn stats_object(entries: &[StatEntry]) -> Value {
    let mut map = Map::new();
    for (name, count, rate) in entries {
        map.insert((*name).into(), json!(count));
        map.insert(format!("{name}_details"), details(*rate));
    }
    Value::Object(map)
}

/// What [`stats_object`] of `entries` has at `path` (below `message_stats`), without building
/// it; objects are all alike to a sort, so one stands for any.
fn stats_column(entries: &[StatEntry], path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(Value::Object(Map::new()));
    }
    let (key, rest) = path.split_once('.').unwrap_or((path, ""));
    let (name, is_details) = key.strip_suffix("_details").map_or((key, false), |n| (n, true));
    let (_, count, rate) = entries.iter().find(|(n, _, _)| *n == name)?;
    match (is_details, rest) {
        (false, "") => Some(json!(count)),
        (true, "") => Some(Value::Object(Map::new())),
        (true, "rate") => Some(json!(rate)),
        _ => None,
    }
}

/// `column` below `message_stats` (`""` for the object itself), if it is `message_stats` or
/// under it.
fn under_message_stats(column: &str) -> Option<&str> {
    match column.strip_prefix("message_stats")? {
        "" => Some(""),
        rest => rest.strip_prefix('.'),
    }
}

/// `message_stats` from counters and their sampled rates (see [`stat_entries`]): each count
/// with its `_details`.
pub fn message_stats(s: &Snapshot, rates: &Rates, stats: &[Stat]) -> Value {
    stats_object(&stat_entries(s, rates, stats))
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

/// Columns of a queue's JSON that [`queue_column`] reads without building it (besides
/// `message_stats` and what is under it).
const QUEUE_COLUMNS: [&str; 26] = [
    "vhost",
    "name",
    "type",
    "node",
    "durable",
    "auto_delete",
    "exclusive",
    "state",
    "policy",
    "operator_policy",
    "consumers",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "message_bytes",
    "message_bytes_ready",
    "message_bytes_unacknowledged",
    "messages_paged_out",
    "messages_ready_ram",
    "messages_ram",
    "messages_unacknowledged_ram",
    "message_bytes_paged_out",
    "message_bytes_ram",
    "message_bytes_persistent",
    "messages_persistent",
    "memory",
];

/// Whether [`queue_column`] reads `column` (a sort column of `/api/queues`).
pub fn queue_column_is_cheap(column: &str) -> bool {
    QUEUE_COLUMNS.contains(&column) || under_message_stats(column).is_some()
}

/// What [`queue`] would give at `column` (one [`queue_column_is_cheap`] accepts), without
/// building it: the queue's counts, counters or fields alone.
pub fn queue_column(api: &Api, q: &Queue, column: &str) -> Option<Value> {
    if let Some(path) = under_message_stats(column) {
        return stats_column(&stat_entries(&q.stats(), &q.rates(), QUEUE_STATS), path);
    }
    let counts = || q.inspect_counts();
    let value = match column {
        "vhost" => json!(&*q.vhost),
        "name" => json!(lossy(q.name.as_bytes())),
        "type" => json!(queue_type(q)),
        "node" => json!(api.node.name),
        "durable" => json!(q.durable),
        "auto_delete" => json!(q.auto_delete),
        "exclusive" => json!(q.exclusive_owner.is_some()),
        "state" => json!("running"),
        "policy" => json!(q.policy().policy_name()),
        "operator_policy" => json!(q.policy().operator_policy_name()),
        "consumers" => json!(counts().consumers),
        "messages" => {
            let c = counts();
            json!(u64::from(c.ready) + c.unacked)
        }
        "messages_ready" => json!(counts().ready),
        "messages_unacknowledged" => json!(counts().unacked),
        "message_bytes" | "message_bytes_ready" => json!(counts().ready_bytes),
        "message_bytes_unacknowledged" => json!(0),
        "messages_paged_out" => json!(counts().paged_out),
        "messages_ready_ram" => {
            let c = counts();
            json!(c.ready - c.paged_out)
        }
        "messages_ram" => {
            let c = counts();
            json!(u64::from(c.ready - c.paged_out) + c.unacked)
        }
        "messages_unacknowledged_ram" => json!(counts().unacked),
        "memory" => json!(counts().memory_bytes),
        "message_bytes_paged_out" => json!(counts().paged_out_bytes),
        "message_bytes_persistent" => json!(counts().persistent_bytes),
        "messages_persistent" => json!(counts().persistent),
        "message_bytes_ram" => {
            let c = counts();
            json!(c.ready_bytes - c.paged_out_bytes)
        }
        _ => return None,
    };
    Some(value)
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
    map.insert("message_bytes_paged_out".into(), json!(counts.paged_out_bytes));
    map.insert("message_bytes_persistent".into(), json!(counts.persistent_bytes));
    map.insert("messages_persistent".into(), json!(counts.persistent));
    map.insert("message_bytes_ram".into(), json!(counts.ready_bytes - counts.paged_out_bytes));
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
    let stats = exchange_stat_entries(x);
    if let (Value::Object(map), false) = (&mut body, stats.is_empty()) {
        map.insert("message_stats".into(), stats_object(&stats));
    }
    body
}

/// An exchange's `message_stats` entries: `publish_in` and `publish_out`, each once non-zero.
fn exchange_stat_entries(x: &ExchangeView) -> Vec<StatEntry> {
    let names = ["publish_in", "publish_out"];
    (0..2).filter(|i| x.publish[*i] > 0).map(|i| (names[i], x.publish[i], x.publish_rates[i])).collect()
}

/// Columns of an exchange's JSON that [`exchange_column`] reads without building it
/// (besides `message_stats` and what is under it).
const EXCHANGE_COLUMNS: [&str; 7] =
    ["vhost", "name", "type", "durable", "auto_delete", "internal", "user_who_performed_action"];

/// Whether [`exchange_column`] reads `column` (a sort column of `/api/exchanges`).
pub fn exchange_column_is_cheap(column: &str) -> bool {
    EXCHANGE_COLUMNS.contains(&column) || under_message_stats(column).is_some()
}

/// What [`exchange`] would give at `column` (one [`exchange_column_is_cheap`] accepts),
/// without building it.
pub fn exchange_column(vhost: &str, x: &ExchangeView, column: &str) -> Option<Value> {
    if let Some(path) = under_message_stats(column) {
        let entries = exchange_stat_entries(x);
        return if entries.is_empty() { None } else { stats_column(&entries, path) };
    }
    let value = match column {
        "vhost" => json!(vhost),
        "name" => json!(lossy(x.name.as_bytes())),
        "type" => json!(x.type_name),
        "durable" => json!(x.durable),
        "auto_delete" => json!(x.auto_delete),
        "internal" => json!(x.internal),
        "user_who_performed_action" => json!(""),
        _ => return None,
    };
    Some(value)
}

/// A binding, with its properties key (what identifies it in a path).
pub fn binding(vhost: &str, b: &BindingView) -> Value {
    let (destination, destination_type) = destination_of(b);
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

/// Columns of a binding's JSON that [`binding_column`] reads without building it.
const BINDING_COLUMNS: [&str; 6] =
    ["source", "vhost", "destination", "destination_type", "routing_key", "properties_key"];

/// Whether [`binding_column`] reads `column` (a sort column of a bindings list).
pub fn binding_column_is_cheap(column: &str) -> bool {
    BINDING_COLUMNS.contains(&column)
}

/// What [`binding`] would give at `column` (one [`binding_column_is_cheap`] accepts, or
/// `name`, which bindings have not), without building it.
pub fn binding_column(vhost: &str, b: &BindingView, column: &str) -> Option<Value> {
    let value = match column {
        "source" => json!(lossy(b.source.as_bytes())),
        "vhost" => json!(vhost),
        "destination" => json!(lossy(destination_of(b).0.as_bytes())),
        "destination_type" => json!(destination_of(b).1),
        "routing_key" => json!(lossy(b.routing_key.as_bytes())),
        "properties_key" => json!(properties_key(b)),
        _ => return None,
    };
    Some(value)
}

/// A binding's destination and its kind's name.
fn destination_of(b: &BindingView) -> (&lepus_protocol::ShortStr, &'static str) {
    match &b.destination {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(x) => (x, "exchange"),
    }
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
    let tls = c.negotiated.tls.as_ref();
    let listener = if tls.is_some() { "amqp/ssl" } else { "amqp" };
    let server = api.node.listeners.iter().find(|l| l.protocol == listener).map(|l| l.address);
    let suite = tls.map(|t| erlang_suite(&t.cipher_suite));
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
        "ssl": tls.is_some(),
        "ssl_protocol": tls.map(|t| t.protocol),
        "ssl_cipher": suite.as_ref().map(|s| &s.1),
        "ssl_hash": suite.as_ref().map(|s| &s.2),
        "ssl_key_exchange": suite.as_ref().map(|s| &s.0),
        "auth_mechanism": c.negotiated.auth_mechanism,
        "channel_max": c.negotiated.channel_max,
        "frame_max": c.negotiated.frame_max,
        "timeout": c.negotiated.heartbeat_s,
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

/// A cipher suite's IANA name (`TLS13_AES_256_GCM_SHA384`,
/// `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`) as RabbitMQ (Erlang's `ssl`) shows its parts:
/// key exchange (`any` in TLS 1.3), cipher, and hash (`aead` for an AEAD cipher).
fn erlang_suite(name: &str) -> (String, String, String) {
    let (kx, rest) = match name.strip_prefix("TLS13_") {
        Some(rest) => ("any".to_owned(), rest),
        None => {
            let body = name.strip_prefix("TLS_").unwrap_or(name);
            let (kx, rest) = body.split_once("_WITH_").unwrap_or(("", body));
            (kx.to_lowercase(), rest)
        }
    };
    let (cipher, mac) = rest.rsplit_once('_').unwrap_or((rest, ""));
    let aead = ["GCM", "CCM", "POLY1305"].iter().any(|a| cipher.ends_with(a));
    let hash = if aead { "aead".to_owned() } else { mac.to_lowercase() };
    (kx, cipher.to_lowercase(), hash)
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
    fn the_web_uis_sort_columns_are_read_without_building_objects() {
        for column in ["messages", "consumers", "memory", "message_stats.publish_details.rate", "message_stats"] {
            assert!(queue_column_is_cheap(column), "{column}");
        }
        for column in ["message_stats.publish_in_details.rate", "message_stats.publish_out", "type", "name"] {
            assert!(exchange_column_is_cheap(column), "{column}");
        }
        assert!(binding_column_is_cheap("routing_key") && binding_column_is_cheap("properties_key"));
        for costly in ["arguments", "arguments.x-max-length", "messages_details.rate", "message_statsx"] {
            assert!(!queue_column_is_cheap(costly) && !exchange_column_is_cheap(costly), "{costly}");
        }
        assert!(!binding_column_is_cheap("arguments"));
    }

    #[test]
    fn cipher_suites_are_named_as_erlang_names_their_parts() {
        let parts = |n| {
            let (k, c, h) = erlang_suite(n);
            [k, c, h]
        };
        assert_eq!(parts("TLS13_AES_256_GCM_SHA384"), ["any", "aes_256_gcm", "aead"]);
        assert_eq!(parts("TLS13_CHACHA20_POLY1305_SHA256"), ["any", "chacha20_poly1305", "aead"]);
        assert_eq!(parts("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"), ["ecdhe_ecdsa", "aes_256_gcm", "aead"]);
        assert_eq!(parts("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"), ["ecdhe_rsa", "aes_128_cbc", "sha256"]);
    }

    #[test]
    fn message_stats_columns_as_the_object_has_them() {
        let entries: Vec<StatEntry> = vec![("publish", 4, 0.8), ("deliver_get", 0, 0.0)];
        let object = stats_object(&entries);
        for path in [
            "publish",
            "publish_details.rate",
            "deliver_get",
            "ack",
            "ack_details.rate",
            "publish.x",
            "publish_details.x",
        ] {
            let looked_up = path.split('.').try_fold(&object, |v, key| v.get(key));
            assert_eq!(stats_column(&entries, path).as_ref(), looked_up.filter(|v| !v.is_object()), "{path}");
        }
        assert!(stats_column(&entries, "publish_details").is_some_and(|v| v.is_object()));
        assert_eq!(under_message_stats("message_stats.publish"), Some("publish"));
        assert_eq!(under_message_stats("message_stats"), Some(""));
        assert_eq!(under_message_stats("message_statsx"), None);
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
