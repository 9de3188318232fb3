//! The series themselves: RabbitMQ's names, types and labels, each read from the broker at
//! scrape time.

use std::fmt::{self, Debug};

use lepus_broker::Queue;
use lepus_broker::queue::QueueCounts;
use lepus_broker::stats::{SIZE_BUCKETS, SizeSnapshot, Snapshot, Stat};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::process;
use crate::{ApiRef, RABBITMQ_VERSION};

/// Which endpoint is scraped.
#[derive(Debug, Clone)]
pub enum Scope {
    /// `/metrics`: per-queue series summed.
    Aggregated,
    /// `/metrics/per-object`: one series per queue.
    PerObject,
    /// `/metrics/detailed`: only these per-queue families, in these vhosts (none: all).
    Detailed { families: Vec<String>, vhosts: Vec<String> },
}

impl Scope {
    fn endpoint(&self) -> &'static str {
        match self {
            Scope::Aggregated => "metrics",
            Scope::PerObject => "per-object",
            Scope::Detailed { .. } => "detailed",
        }
    }
}

/// One scrape's collector.
pub struct Scrape {
    pub api: ApiRef,
    pub scope: Scope,
}

impl Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// The protocol label of what AMQP 0-9-1 connections count.
const AMQP: [(&str, &str); 1] = [("protocol", "amqp091")];
/// The queue types RabbitMQ labels delivery counters with, in its order (Lepus has no
/// streams: theirs stay 0).
const QUEUE_TYPES: [&str; 3] = ["rabbit_classic_queue", "rabbit_quorum_queue", "rabbit_stream_queue"];

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        match &self.scope {
            Scope::Detailed { families, vhosts } => self.detailed(&mut e, families, vhosts),
            Scope::Aggregated | Scope::PerObject => {
                let queues = self.read_queues(&[]);
                self.identity(&mut e)?;
                self.process(&mut e)?;
                self.objects(&mut e, &queues)?;
                self.global_counters(&mut e)?;
                self.queues(&mut e, matches!(self.scope, Scope::PerObject), &queues)
            }
        }
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstGauge::new(value as i64).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter; `name` without `_total`, which the encoding adds.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter or a gauge with one labelled sample.
fn labelled(
    e: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    kind: MetricType,
    labels: &impl EncodeLabelSet,
    value: u64,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    encode_value(family.encode_family(labels)?, &kind, value)
}

/// One sample's value, as a counter or a gauge.
fn encode_value(sample: MetricEncoder, kind: &MetricType, value: u64) -> fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(sample),
        _ => ConstGauge::new(value as i64).encode(sample),
    }
}

/// `rabbitmq_message_size_bytes`, published body sizes in RabbitMQ's buckets, as text in
/// the form RabbitMQ's Prometheus library writes (integer bounds: `le="1000000"`, labels
/// before `le`, an integer sum), which `prometheus-client`'s float bounds (`1000000.0`) would
/// not give: PromQL and dashboards written against RabbitMQ match `le` literally.
pub fn message_size_histogram(sizes: &SizeSnapshot) -> String {
    use std::fmt::Write;
    let name = "rabbitmq_message_size_bytes";
    let labels = r#"protocol="amqp091""#;
    let mut text = format!("# HELP {name} Size of messages received from publishers\n# TYPE {name} histogram\n");
    let mut cumulative = 0;
    let bounds = SIZE_BUCKETS.iter().map(|le| le.to_string()).chain(["+Inf".to_owned()]);
    for (le, count) in bounds.zip(sizes.counts) {
        cumulative += count;
        let _ = writeln!(text, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(text, "{name}_count{{{labels}}} {cumulative}");
    let _ = writeln!(text, "{name}_sum{{{labels}}} {}", sizes.sum);
    text
}

/// `total` less `part`, stat by stat.
fn difference(total: &Snapshot, part: &Snapshot) -> Snapshot {
    Snapshot(std::array::from_fn(|i| total.0[i].saturating_sub(part.0[i])))
}

/// RabbitMQ's global counters labelled by queue type, read from `s`: name (without the
/// prefix), help, value.
fn delivery_series(s: &Snapshot) -> [(&'static str, &'static str, u64); 8] {
    let get = |stat| s.get(stat);
    let consume_auto = get(Stat::DeliveredNoAck);
    let get_auto = get(Stat::GetNoAck);
    [
        ("delivered", "Total number of messages delivered to consumers", get(Stat::Delivered) + get(Stat::Get)),
        (
            "delivered_consume_manual_ack",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            get(Stat::Delivered).saturating_sub(consume_auto),
        ),
        (
            "delivered_consume_auto_ack",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            consume_auto,
        ),
        (
            "delivered_get_manual_ack",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            get(Stat::Get).saturating_sub(get_auto),
        ),
        (
            "delivered_get_auto_ack",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            get_auto,
        ),
        ("get_empty", "Total number of times basic.get operations fetched no message", get(Stat::GetEmpty)),
        ("redelivered", "Total number of messages redelivered to consumers", get(Stat::Redelivered)),
        ("acknowledged", "Total number of message acknowledgements received from consumers", get(Stat::Acked)),
    ]
}

/// A stable id for the cluster, from its name (Lepus keeps no cluster id of its own yet).
pub(crate) fn permanent_id(cluster: &str) -> String {
    let hash = cluster.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("lepus-cluster-id-{hash:016x}")
}

impl Scrape {
    fn identity(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let node = &self.api.node;
        let id = permanent_id(&node.name);
        let labels = [
            ("rabbitmq_node", node.name.as_str()),
            ("rabbitmq_cluster", node.name.as_str()),
            ("rabbitmq_cluster_permanent_id", id.as_str()),
            ("rabbitmq_endpoint", self.scope.endpoint()),
        ];
        labelled(
            e,
            ("rabbitmq_identity_info", "RabbitMQ node & cluster identity info"),
            MetricType::Gauge,
            &labels,
            1,
        )?;
        let build = [
            ("rabbitmq_version", RABBITMQ_VERSION),
            ("product_name", "Lepus"),
            ("product_version", node.product_version.as_str()),
            ("prometheus_plugin_version", node.product_version.as_str()),
            ("prometheus_client_version", "prometheus-client 0.24"),
            ("erlang_version", "n/a"),
        ];
        labelled(e, ("rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info"), MetricType::Gauge, &build, 1)?;
        let uptime_s = self.api.broker.clock().now_ms().saturating_sub(node.started_at_ms) / 1_000;
        gauge(e, "rabbitmq_erlang_uptime_seconds", "Node uptime", uptime_s)
    }

    fn process(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        // The alarms' last reading (every second) and their thresholds.
        let alarms = self.api.broker.alarms();
        let (reading, limits) = (alarms.reading(), alarms.limits());
        let connections = self.api.broker.connections().len() as u64;
        gauge(e, "rabbitmq_process_resident_memory_bytes", "Memory used in bytes", reading.memory_used_bytes)?;
        gauge(e, "rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes", limits.memory_limit_bytes)?;
        let disk_free = reading.disk_free_bytes.unwrap_or(0);
        gauge(e, "rabbitmq_disk_space_available_bytes", "Disk space available in bytes", disk_free)?;
        gauge(
            e,
            "rabbitmq_disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            limits.disk_free_limit_bytes,
        )?;
        gauge(e, "rabbitmq_process_open_fds", "Open file descriptors", process::open_fds())?;
        gauge(e, "rabbitmq_process_max_fds", "Open file descriptors limit", process::max_fds())?;
        gauge(e, "rabbitmq_process_open_tcp_sockets", "Open TCP sockets", connections)?;
        gauge(e, "rabbitmq_process_max_tcp_sockets", "Open TCP sockets limit", process::max_fds())
    }

    /// Connections, channels, queues, consumers: counts now and churn since start.
    fn objects(&self, e: &mut DescriptorEncoder, queue_readings: &[QueueReading]) -> fmt::Result {
        let registry = self.api.broker.connections();
        let (opened, closed) = registry.churn();
        let (channels_opened, channels_closed) = registry.channel_churn();
        let (declared, created, deleted) = self.api.broker.queue_churn();
        let queues = queue_readings.len() as u64;
        let consumers = queue_readings.iter().map(|r| u64::from(r.counts.consumers)).sum();
        gauge(e, "rabbitmq_connections", "Connections currently open", registry.len() as u64)?;
        counter(e, "rabbitmq_connections_opened", "Total number of connections opened", opened)?;
        counter(e, "rabbitmq_connections_closed", "Total number of connections closed or terminated", closed)?;
        gauge(e, "rabbitmq_channels", "Channels currently open", registry.channels())?;
        counter(e, "rabbitmq_channels_opened", "Total number of channels opened", channels_opened)?;
        counter(e, "rabbitmq_channels_closed", "Total number of channels closed", channels_closed)?;
        gauge(e, "rabbitmq_queues", "Queues available", queues)?;
        counter(e, "rabbitmq_queues_declared", "Total number of queues declared", declared)?;
        counter(e, "rabbitmq_queues_created", "Total number of queues created", created)?;
        counter(e, "rabbitmq_queues_deleted", "Total number of queues deleted", deleted)?;
        gauge(e, "rabbitmq_consumers", "Consumers currently connected", consumers)?;
        gauge(e, "rabbitmq_channel_consumers", "Consumers on a channel", consumers)?;
        self.channel_gauges(e)?;
        labelled(e, ("rabbitmq_global_consumers", "Current number of consumers"), MetricType::Gauge, &AMQP, consumers)?;
        let publishers = registry.publishers();
        labelled(
            e,
            ("rabbitmq_global_publishers", "Current number of publishers"),
            MetricType::Gauge,
            &AMQP,
            publishers,
        )
    }

    /// The rest of RabbitMQ's `channel_metrics` gauges, summed over the open channels' records.
    fn channel_gauges(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut sums = [0u64; 6];
        for c in self.api.broker.connections().list() {
            for channel in c.channel_records() {
                let g = channel.gauges();
                let values =
                    [g.unacked, g.unconfirmed, g.uncommitted, g.acks_uncommitted, g.prefetch, g.global_prefetch];
                for (sum, value) in sums.iter_mut().zip(values) {
                    *sum += value;
                }
            }
        }
        let series = [
            ("rabbitmq_channel_messages_unacked", "Delivered but not yet acknowledged messages"),
            ("rabbitmq_channel_messages_unconfirmed", "Published but not yet confirmed messages"),
            ("rabbitmq_channel_messages_uncommitted", "Messages received in a transaction but not yet committed"),
            ("rabbitmq_channel_acks_uncommitted", "Message acknowledgements in a transaction not yet committed"),
            ("rabbitmq_consumer_prefetch", "Limit of unacknowledged messages for each consumer"),
            ("rabbitmq_channel_prefetch", "Total limit of unacknowledged messages for all consumers on a channel"),
        ];
        for ((name, help), value) in series.into_iter().zip(sums) {
            gauge(e, name, help, value)?;
        }
        Ok(())
    }

    /// Every queue (in `vhosts`; none: all) read once: its counts under its lock, held only
    /// for that copy, and its published counter without it.
    fn read_queues(&self, vhosts: &[String]) -> Vec<QueueReading> {
        let mut readings = Vec::new();
        for vhost in self.api.broker.vhosts() {
            if !vhosts.is_empty() && !vhosts.iter().any(|v| **v == *vhost.name) {
                continue;
            }
            for queue in vhost.queue_list() {
                let (counts, published) = (queue.inspect_counts(), queue.stats().get(Stat::Published));
                readings.push(QueueReading { queue, counts, published });
            }
        }
        readings
    }

    /// RabbitMQ's global counters (`rabbitmq_global_messages_*_total`) and the channel
    /// counters of 3.10's dashboard, from the registry's totals.
    fn global_counters(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let s = self.api.broker.connections().totals();
        let get = |stat| s.get(stat);
        let quorum = self.api.broker.connections().quorum_totals();
        let dropped = get(Stat::Unroutable).saturating_sub(get(Stat::Returned));
        let by_protocol: [(&str, &str, u64); 6] = [
            ("received", "Total number of messages received from publishers", get(Stat::Published)),
            (
                "received_confirm",
                "Total number of messages received from publishers expecting confirmations",
                get(Stat::PublishedConfirm),
            ),
            ("routed", "Total number of messages routed to queues or streams", get(Stat::Routed)),
            (
                "unroutable_dropped",
                "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
                dropped,
            ),
            (
                "unroutable_returned",
                "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
                get(Stat::Returned),
            ),
            ("confirmed", "Total number of messages confirmed to publishers", get(Stat::Confirmed)),
        ];
        for (what, help, value) in by_protocol {
            labelled(e, (&format!("rabbitmq_global_messages_{what}"), help), MetricType::Counter, &AMQP, value)?;
        }
        let classic = difference(&s, &quorum);
        let by_type = [delivery_series(&classic), delivery_series(&quorum), delivery_series(&Snapshot::default())];
        for (i, (what, help, _)) in delivery_series(&s).into_iter().enumerate() {
            let name = format!("rabbitmq_global_messages_{what}");
            let mut family = e.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (queue_type, series) in QUEUE_TYPES.iter().zip(&by_type) {
                let labels = [("protocol", "amqp091"), ("queue_type", *queue_type)];
                ConstCounter::new(series[i].2).encode(family.encode_family(&labels)?)?;
            }
        }
        self.channel_counters(e, &s)
    }

    /// The aggregated channel counters (`rabbitmq_channel_messages_*_total`).
    fn channel_counters(&self, e: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
        let series: [(&str, &str, u64); 9] = [
            (
                "messages_published",
                "Total number of messages published into an exchange on a channel",
                s.get(Stat::Published),
            ),
            (
                "messages_confirmed",
                "Total number of messages published into an exchange and confirmed on the channel",
                s.get(Stat::Confirmed),
            ),
            (
                "messages_unroutable_returned",
                "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
                s.get(Stat::Returned),
            ),
            (
                "messages_unroutable_dropped",
                "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
                s.get(Stat::Unroutable).saturating_sub(s.get(Stat::Returned)),
            ),
            (
                "messages_delivered_ack",
                "Total number of messages delivered to consumers in manual acknowledgement mode",
                s.get(Stat::Delivered).saturating_sub(s.get(Stat::DeliveredNoAck)),
            ),
            (
                "messages_delivered",
                "Total number of messages delivered to consumers in automatic acknowledgement mode",
                s.get(Stat::DeliveredNoAck),
            ),
            ("messages_redelivered", "Total number of messages redelivered to consumers", s.get(Stat::Redelivered)),
            ("messages_acked", "Total number of messages acknowledged by consumers", s.get(Stat::Acked)),
            ("get_empty", "Total number of times basic.get operations fetched no message", s.get(Stat::GetEmpty)),
        ];
        for (what, help, value) in series {
            counter(e, &format!("rabbitmq_channel_{what}"), help, value)?;
        }
        Ok(())
    }

    /// Queue series: summed (aggregated), or one per queue.
    fn queues(&self, e: &mut DescriptorEncoder, per_object: bool, queues: &[QueueReading]) -> fmt::Result {
        if per_object {
            let all: Vec<&QueueFamily> = QUEUE_FAMILIES.iter().collect();
            return encode_queue_families(e, "rabbitmq_", queues, &all);
        }
        let mut total = QueueCounts::default();
        let mut published = 0u64;
        for QueueReading { counts: c, published: p, .. } in queues {
            total.ready += c.ready;
            total.ready_bytes += c.ready_bytes;
            total.unacked += c.unacked;
            total.consumers += c.consumers;
            total.paged_out += c.paged_out;
            published += p;
        }
        for series in QUEUE_FAMILIES.iter().flat_map(|f| f.series) {
            let (name, value) = (format!("rabbitmq_{}", series.name), (series.read)(&total, published));
            if series.counter {
                counter(e, &name, series.help, value)?;
            } else {
                gauge(e, &name, series.help, value)?;
            }
        }
        Ok(())
    }

    /// `/metrics/detailed`: the per-queue families named, in the vhosts named.
    fn detailed(&self, e: &mut DescriptorEncoder, families: &[String], vhosts: &[String]) -> fmt::Result {
        let chosen: Vec<&QueueFamily> =
            QUEUE_FAMILIES.iter().filter(|f| families.iter().any(|n| n == f.name)).collect();
        if chosen.is_empty() {
            return Ok(());
        }
        encode_queue_families(e, "rabbitmq_detailed_", &self.read_queues(vhosts), &chosen)
    }
}

/// One queue as a scrape reads it, once.
struct QueueReading {
    queue: lepus_broker::QueueRef,
    counts: QueueCounts,
    /// Messages enqueued (its `Published` counter).
    published: u64,
}

/// One per-queue series.
struct QueueSeries {
    /// Without the `rabbitmq_` prefix and (for counters) without `_total`.
    name: &'static str,
    help: &'static str,
    counter: bool,
    /// From the queue's counts and its published counter.
    read: fn(&QueueCounts, u64) -> u64,
}

const fn series_gauge(name: &'static str, help: &'static str, read: fn(&QueueCounts, u64) -> u64) -> QueueSeries {
    QueueSeries { name, help, counter: false, read }
}

const fn series_counter(name: &'static str, help: &'static str, read: fn(&QueueCounts, u64) -> u64) -> QueueSeries {
    QueueSeries { name, help, counter: true, read }
}

/// A group of per-queue series as `/metrics/detailed?family=` names it.
struct QueueFamily {
    name: &'static str,
    series: &'static [QueueSeries],
}

const QUEUE_FAMILIES: [QueueFamily; 2] = [
    QueueFamily {
        name: "queue_coarse_metrics",
        series: &[
            series_gauge("queue_messages_ready", "Messages ready to be delivered to consumers", |c, _| {
                u64::from(c.ready)
            }),
            series_gauge(
                "queue_messages_unacked",
                "Messages delivered to consumers but not yet acknowledged",
                |c, _| c.unacked,
            ),
            series_gauge("queue_messages", "Sum of ready and unacknowledged messages - total queue depth", |c, _| {
                u64::from(c.ready) + c.unacked
            }),
        ],
    },
    QueueFamily {
        name: "queue_metrics",
        series: &[
            series_gauge("queue_consumers", "Consumers on a queue", |c, _| u64::from(c.consumers)),
            series_gauge("queue_messages_ready_bytes", "Size in bytes of ready messages", |c, _| c.ready_bytes),
            series_gauge("queue_messages_paged_out", "Messages paged out to disk", |c, _| u64::from(c.paged_out)),
            series_counter(
                "queue_messages_published",
                "Total number of messages published to queues",
                |_, published| published,
            ),
        ],
    },
];

/// Each series of `families`, one sample per queue labelled `vhost` and `queue`.
fn encode_queue_families(
    e: &mut DescriptorEncoder,
    prefix: &str,
    queues: &[QueueReading],
    families: &[&QueueFamily],
) -> fmt::Result {
    // Made once per queue, not once per series: with 100,000 queues the labels' strings were
    // a fifth of a per-object scrape's time.
    let labels: Vec<[(&str, String); 2]> = queues.iter().map(|r| queue_labels(&r.queue)).collect();
    for series in families.iter().flat_map(|f| f.series) {
        let name = format!("{prefix}{}", series.name);
        let kind = if series.counter { MetricType::Counter } else { MetricType::Gauge };
        let mut family = e.encode_descriptor(&name, series.help, None, kind)?;
        for (QueueReading { counts, published, .. }, labels) in queues.iter().zip(&labels) {
            let value = (series.read)(counts, *published);
            encode_value(family.encode_family(labels)?, &kind, value)?;
        }
    }
    Ok(())
}

fn queue_labels(queue: &Queue) -> [(&'static str, String); 2] {
    [("vhost", queue.vhost.to_string()), ("queue", String::from_utf8_lossy(queue.name.as_bytes()).into_owned())]
}
