//! Read-only views of a vhost's topology for the management API, definitions export and
//! metrics: its exchanges, queues and bindings as they are now. Each view is taken under the
//! topology read lock and released before it is returned; nothing here walks messages.

use lepus_protocol::{FieldTable, ShortStr};

use super::VHost;
use crate::exchange::Destination;
use crate::queue::QueueRef;

/// An exchange as the management API shows it.
#[derive(Debug, Clone)]
pub struct ExchangeView {
    pub name: ShortStr,
    pub type_name: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// (`publish_in`, `publish_out`) and their per-second rates ([`crate::exchange_stats`]).
    pub publish: [u64; 2],
    pub publish_rates: [f64; 2],
}

/// A binding: from an exchange to a queue or exchange, with its key and arguments.
#[derive(Debug, Clone)]
pub struct BindingView {
    pub source: ShortStr,
    pub destination: Destination,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

impl VHost {
    /// Every exchange (the default one included), in no particular order.
    pub fn exchange_views(&self) -> Vec<ExchangeView> {
        self.topology.read().exchanges.values().map(view_of).collect()
    }

    /// One exchange, if it exists.
    pub fn exchange_view(&self, name: &[u8]) -> Option<ExchangeView> {
        self.topology.read().exchanges.get(name).map(view_of)
    }

    /// Adds a publisher's tally to its exchanges (gone ones are skipped).
    pub fn add_exchange_publishes(&self, tally: &mut crate::exchange_stats::PublishTally) {
        let t = self.topology.read();
        tally.flush(|name, publish_in, publish_out| {
            if let Some(x) = t.exchanges.get(name) {
                x.stats.add(publish_in, publish_out);
            }
        });
    }

    /// Samples every exchange's publish counters (the broker's rate sampler).
    pub(crate) fn sample_exchange_rates(&self, now_ms: u64) {
        for x in self.topology.read().exchanges.values() {
            x.stats.sample(now_ms);
        }
    }

    /// Every queue clients can reach (not a delayed exchange's hidden queue).
    pub fn queue_list(&self) -> Vec<QueueRef> {
        self.topology.read().queues.values().cloned().collect()
    }

    /// A queue by name, whoever owns it (the owner check is for use, not for looking).
    pub fn queue_named(&self, name: &[u8]) -> Option<QueueRef> {
        self.topology.read().queues.get(name).cloned()
    }

    /// (exchanges, queues) in the vhost.
    pub fn object_counts(&self) -> (usize, usize) {
        let t = self.topology.read();
        (t.exchanges.len(), t.queues.len())
    }

    /// Every binding, the default exchange's implicit one to each queue first (as RabbitMQ
    /// lists them), then each exchange's.
    pub fn binding_views(&self) -> Vec<BindingView> {
        let t = self.topology.read();
        let mut out: Vec<BindingView> = t
            .queues
            .keys()
            .map(|q| BindingView {
                source: ShortStr::from_static(""),
                destination: Destination::Queue(q.clone()),
                routing_key: q.clone(),
                arguments: FieldTable::new(),
            })
            .collect();
        // Bindings of a deleted queue still being removed (see `unbind`) are gone already.
        let live = |dest: &Destination| !matches!(dest, Destination::Queue(q) if t.unbinding.contains_key(q));
        for x in t.exchanges.values() {
            out.extend(x.bindings().filter(|(dest, _, _)| live(dest)).map(|(dest, key, args)| BindingView {
                source: x.name.clone(),
                destination: dest.clone(),
                routing_key: key.clone(),
                arguments: args.clone(),
            }));
        }
        out
    }
}

fn view_of(x: &crate::exchange::Exchange) -> ExchangeView {
    ExchangeView {
        name: x.name.clone(),
        type_name: x.type_name(),
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments.clone(),
        publish: x.stats.counts(),
        publish_rates: x.stats.rates(),
    }
}
