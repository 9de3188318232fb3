//! Per-channel state kept by a connection: consumers, unacknowledged deliveries, the
//! message being assembled from frames, publisher confirms and transactions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use lepus_broker::channel_stats::{ChannelConsumer, ChannelGauges, ChannelRef, ChannelTally};
use lepus_broker::{ChannelGate, ConsumerId, Durable, Message, MessageBuilder, MessageRef, QueueRef};
use lepus_protocol::ShortStr;
use lepus_protocol::content::ContentHeader;
use lepus_protocol::method::BasicPublish;

use crate::connection::{ChannelTimer, Watch};

/// Whether a channel is usable or waiting for the client's `channel.close-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelPhase {
    Open,
    /// We sent `channel.close`; everything but close/close-ok is dropped.
    Closing,
}

/// A consumer as its channel sees it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    /// `None` for the direct reply-to pseudo-queue.
    pub queue: Option<QueueRef>,
    /// Its id in the broker (deliveries name it).
    pub id: ConsumerId,
}

/// A delivery awaiting `basic.ack`/`nack`/`reject`.
#[derive(Debug, Clone)]
pub(crate) struct Unacked {
    pub queue: QueueRef,
    pub seq: u64,
    pub message: MessageRef,
    /// `None` for `basic.get`.
    pub consumer: Option<ConsumerId>,
    /// When it was sent (the broker's clock), for the consumer timeout.
    pub delivered_at_ms: u64,
}

/// A `basic.publish` whose content is still arriving: the method, then (after the content
/// header) the message being built.
#[derive(Debug)]
pub(crate) struct Assembling {
    pub method: BasicPublish,
    pub content: Option<(ContentHeader, MessageBuilder)>,
}

/// A complete published message, as routed now or at `tx.commit`.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub method: BasicPublish,
    pub header: ContentHeader,
    pub message: Message,
}

impl Assembled {
    /// The same publish holding only its own bytes: the method's names and the header are
    /// slices of the connection's read buffer, which a slice keeps whole, so a transaction
    /// that buffered them would hold every read buffer its publishes arrived in.
    pub fn detached(self) -> Assembled {
        let Assembled { mut method, mut header, message } = self;
        method.exchange = owned(&method.exchange);
        method.routing_key = owned(&method.routing_key);
        header.raw_properties = bytes::Bytes::copy_from_slice(&header.raw_properties);
        header.expiration = header.expiration.as_ref().map(owned);
        Assembled { method, header, message }
    }
}

fn owned(s: &ShortStr) -> ShortStr {
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(s.as_bytes())).unwrap_or_else(|| s.clone())
}

/// How acknowledgements settle a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// Publisher confirm bookkeeping (`confirm.select`).
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Sequence number of the last publish seen (the first is 1).
    pub last_published: u64,
    /// Highest sequence number already acknowledged to the client.
    pub acked_through: u64,
    /// Publishes that cannot be acknowledged yet, in order, because they (or one before
    /// them) wait for the message store: (sequence number, store generation that makes them
    /// durable, nack instead of ack).
    pub waiting: VecDeque<(u64, Durable, bool)>,
}

/// Work buffered by a transaction (`tx.select`) until commit.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    pub publishes: Vec<Assembled>,
    pub settles: Vec<(Settle, Unacked, u64)>,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub phase: ChannelPhase,
    pub gate: Arc<ChannelGate>,
    /// `basic.qos global=false`: the prefetch given to consumers created from now on.
    pub consumer_prefetch: u32,
    pub assembling: Option<Assembling>,
    pub consumers: HashMap<ShortStr, ConsumerInfo>,
    /// Delivery tag → delivery, in tag order.
    pub unacked: BTreeMap<u64, Unacked>,
    pub next_delivery_tag: u64,
    pub confirms: Option<Confirms>,
    pub tx: Option<Transaction>,
    /// `tx.commit`s whose `commit-ok` waits for the message store: what each needs.
    pub commits_waiting: VecDeque<Durable>,
    /// The most recently declared queue, for methods that name the queue ''.
    pub last_queue: Option<ShortStr>,
    /// This channel's direct reply-to name and consumer tag, while it consumes from
    /// `amq.rabbitmq.reply-to`.
    pub reply_to: Option<(ShortStr, ShortStr)>,
    /// Consumer timeout: how the oldest unacked delivery is watched, and the channel's timer
    /// (see `connection/timeout.rs`).
    pub watch: Watch,
    pub timer: Option<ChannelTimer>,
    /// Tags of deliveries taken back by a consumer timeout that cancels rather than closes
    /// (`x-consumer-timeout-action`): a late ack, nack or reject of one is ignored. At most
    /// [`TIMED_OUT_TAGS_MAX`], the oldest forgotten first.
    pub timed_out: BTreeSet<u64>,
    /// Its record in the connection registry, and the counts not yet published to it (see
    /// `lepus_broker::channel_stats`).
    pub record: ChannelRef,
    pub tally: ChannelTally,
}

/// How many timed-out delivery tags a channel remembers; a late settle of one forgotten is
/// an unknown delivery tag again (406).
pub(crate) const TIMED_OUT_TAGS_MAX: usize = 65_536;

impl Channel {
    pub fn new(record: ChannelRef) -> Channel {
        Channel {
            record,
            tally: ChannelTally::default(),
            phase: ChannelPhase::Open,
            gate: Arc::new(ChannelGate::default()),
            consumer_prefetch: 0,
            assembling: None,
            consumers: HashMap::new(),
            unacked: BTreeMap::new(),
            next_delivery_tag: 1,
            confirms: None,
            tx: None,
            commits_waiting: VecDeque::new(),
            last_queue: None,
            reply_to: None,
            watch: Watch::Idle,
            timer: None,
            timed_out: BTreeSet::new(),
        }
    }

    /// Its gauges now, for its record: consumers, prefetch, modes, unsettled messages.
    pub fn gauges(&self) -> ChannelGauges {
        let confirms = self.confirms.as_ref();
        ChannelGauges {
            consumers: self.consumers.len() as u64,
            prefetch: u64::from(self.consumer_prefetch),
            global_prefetch: u64::from(self.gate.prefetch.load(std::sync::atomic::Ordering::Relaxed)),
            confirm: confirms.is_some(),
            transactional: self.tx.is_some(),
            unacked: self.unacked.len() as u64,
            unconfirmed: confirms.map_or(0, |c| c.last_published.saturating_sub(c.acked_through)),
            uncommitted: self.tx.as_ref().map_or(0, |t| t.publishes.len() as u64),
            acks_uncommitted: self.tx.as_ref().map_or(0, |t| t.settles.len() as u64),
        }
    }

    /// Publishes its counts and gauges to its record (once per turn of the connection's loop).
    pub fn publish_stats(&mut self) {
        let counts = self.tally.take_due();
        self.record.publish(&counts, self.gauges());
    }

    /// Writes its consumers' ids and tags into its record (on consume and cancel).
    pub fn publish_consumers(&self) {
        let list = self.consumers.iter().map(|(tag, c)| ChannelConsumer {
            id: c.id,
            tag: tag.to_string(),
            queue: c.queue.as_ref().map(|q| q.name.to_string()),
        });
        self.record.set_consumers(list);
    }

    /// Remembers tags of deliveries a consumer timeout took back; returns how many older
    /// ones were forgotten to stay within [`TIMED_OUT_TAGS_MAX`].
    pub fn remember_timed_out(&mut self, tags: impl IntoIterator<Item = u64>) -> usize {
        self.timed_out.extend(tags);
        let excess = self.timed_out.len().saturating_sub(TIMED_OUT_TAGS_MAX);
        for _ in 0..excess {
            self.timed_out.pop_first();
        }
        excess
    }

    /// A settle with `multiple` through `tag` (0: all): forgets the timed-out tags it covers
    /// and returns whether `tag` was one of them.
    pub fn forget_timed_out_through(&mut self, tag: u64) -> bool {
        if self.timed_out.is_empty() {
            return false;
        }
        if tag == 0 {
            self.timed_out.clear();
            return false;
        }
        let rest = self.timed_out.split_off(&(tag + 1));
        let covered = std::mem::replace(&mut self.timed_out, rest);
        covered.contains(&tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn within(slice: &[u8], buffer: &Bytes) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&slice.as_ptr())
    }

    #[test]
    fn timed_out_tags_are_bounded_and_forgotten_by_multiple_settles() {
        let mut ch = Channel::new(std::sync::Arc::new(lepus_broker::channel_stats::ChannelStats::new(1)));
        assert_eq!(ch.remember_timed_out([3, 5, 9]), 0);
        assert!(!ch.forget_timed_out_through(4), "4 was not taken back");
        assert_eq!(ch.timed_out.iter().copied().collect::<Vec<_>>(), vec![5, 9]);
        assert!(ch.forget_timed_out_through(5));
        assert!(!ch.forget_timed_out_through(0));
        assert!(ch.timed_out.is_empty());
        let forgotten = ch.remember_timed_out(1..=(TIMED_OUT_TAGS_MAX as u64 + 2));
        assert_eq!((forgotten, ch.timed_out.first().copied()), (2, Some(3)));
    }

    #[test]
    fn a_detached_publish_keeps_nothing_of_the_read_buffer() {
        let read_buffer = Bytes::copy_from_slice(b"exchange-key-\x00\x00props-60000");
        let name = |r: std::ops::Range<usize>| ShortStr::from_bytes(read_buffer.slice(r)).expect("short");
        let method = BasicPublish {
            ticket: 0,
            exchange: name(0..8),
            routing_key: name(9..12),
            mandatory: false,
            immediate: false,
        };
        let header = ContentHeader {
            class_id: 60,
            body_size: 0,
            raw_properties: read_buffer.slice(13..20),
            delivery_mode: None,
            priority: None,
            expiration: Some(name(21..26)),
            timestamp: None,
        };
        let message = MessageBuilder::new(b"exchange", b"key", &header.raw_properties, &header).finish();
        let publish = Assembled { method, header, message }.detached();
        assert_eq!(
            (publish.method.exchange.as_bytes(), publish.method.routing_key.as_bytes()),
            (&b"exchange"[..], &b"key"[..])
        );
        assert_eq!(publish.header.expiration.as_ref().map(|e| e.as_bytes()), Some(&b"60000"[..]));
        assert!(!within(publish.method.exchange.as_bytes(), &read_buffer));
        assert!(!within(publish.method.routing_key.as_bytes(), &read_buffer));
        assert!(!within(&publish.header.raw_properties, &read_buffer));
        assert!(!within(publish.header.expiration.as_ref().map_or(&[][..], |e| e.as_bytes()), &read_buffer));
    }
}
