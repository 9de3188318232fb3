//! Publishing as a broker operation: a [`Publisher`] routes a message through its vhost
//! (remembering its last route in its own [`RouteCache`]), enqueues it into every queue the
//! route reaches, and combines what the queues answered into one [`Outcome`]: routed or not,
//! refused by a full queue, what its confirm must wait for, and whether a queue it entered is
//! congested.
//!
//! Every way a message enters the broker goes through here: AMQP's `basic.publish` (and
//! `tx.commit`) now; dead-lettering, the delayed exchange, the HTTP publish endpoint and other
//! protocols next. A publisher belongs to one publishing context (a connection, a timer) and
//! is used by one thread at a time; the vhost and queues it reaches are shared.

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::ClockRef;
use crate::durability::Durable;
use crate::error::Result;
use crate::exchange_stats::PublishTally;
use crate::headers::MessageHeaders;
use crate::message::MessageRef;
use crate::queue::{Enqueued, QueueRef};
use crate::route_cache::RouteCache;
use crate::vhost::VHost;

/// A message to publish, with what routing needs beyond the message itself.
#[derive(Debug)]
pub struct Publish<'a> {
    pub message: MessageRef,
    /// Routing keys from the `CC` and `BCC` headers, routed after the message's own.
    pub extra_keys: &'a [Bytes],
    /// The message's headers, for headers exchanges.
    pub headers: MessageHeaders<'a>,
}

/// What became of a published message.
#[derive(Debug, Default)]
pub struct Outcome {
    /// At least one queue took it.
    pub routed: bool,
    /// A queue refused it (`x-overflow: reject-publish`): a confirm is a nack.
    pub rejected: bool,
    /// What its confirm waits for: every queue that logged it has it on disk.
    pub durable: Durable,
    /// A queue it entered is over its flow-control watermark.
    pub congested: Option<QueueRef>,
}

impl Outcome {
    /// A `mandatory` message that went nowhere (and was not refused) is returned.
    pub fn is_unroutable(&self) -> bool {
        !self.routed && !self.rejected
    }
}

/// Publishes into one vhost, remembering the last route.
#[derive(Debug)]
pub struct Publisher {
    vhost: Arc<VHost>,
    clock: ClockRef,
    cache: RouteCache,
    /// Scratch list for routes with several keys (kept to avoid an allocation each).
    several: Vec<QueueRef>,
    /// Publishes per exchange not yet added to the exchanges' counters.
    tally: PublishTally,
}

impl Publisher {
    pub fn new(vhost: Arc<VHost>, clock: ClockRef) -> Publisher {
        Publisher { vhost, clock, cache: RouteCache::new(), several: Vec::new(), tally: PublishTally::default() }
    }

    pub fn vhost(&self) -> &Arc<VHost> {
        &self.vhost
    }

    /// Routes `p` from its exchange and enqueues it into every queue reached. An error (no
    /// such exchange, an internal one) means nothing was enqueued.
    pub fn publish(&mut self, p: Publish<'_>) -> Result<Outcome> {
        let message = &p.message;
        let (exchange, routing_key) = (message.exchange(), message.routing_key());
        // Stored records carry the time they were published; transient messages need none.
        let now_ms = if message.is_persistent() { self.clock.now_ms() } else { 0 };
        let queues = if p.extra_keys.is_empty() {
            self.vhost.route_cached(exchange, routing_key, p.headers, &mut self.cache)?
        } else {
            let keys: Vec<&[u8]> =
                std::iter::once(routing_key).chain(p.extra_keys.iter().map(|k| k.as_ref())).collect();
            self.several.clear();
            self.vhost.route(exchange, &keys, p.headers, &mut self.several)?;
            &self.several[..]
        };
        let mut outcome = Outcome::default();
        let mut entered = 0;
        for q in queues {
            let (enqueued, durable) = q.publish_stamped(message.clone(), now_ms);
            outcome.durable = outcome.durable.and(durable);
            match enqueued {
                Enqueued::Yes => {
                    outcome.routed = true;
                    entered += 1;
                }
                Enqueued::Congested => {
                    outcome.routed = true;
                    entered += 1;
                    outcome.congested = Some(q.clone());
                }
                Enqueued::Rejected => outcome.rejected = true,
                // Held by a delayed exchange: routed later (RabbitMQ's plugin routes it nowhere now).
                Enqueued::Held | Enqueued::Gone => {}
            }
        }
        self.several.clear();
        if self.tally.count(exchange, entered) {
            self.flush_stats();
        }
        Ok(outcome)
    }

    /// Adds what was published since the last flush to the exchanges' counters (see
    /// [`crate::exchange_stats`]): the owner calls it after each batch; dropping flushes too.
    pub fn flush_stats(&mut self) {
        self.vhost.add_exchange_publishes(&mut self.tally);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.flush_stats();
    }
}
