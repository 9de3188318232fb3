//! What a vhost keeps on disk: durable exchanges, queues and bindings as metadata records,
//! and each durable queue's message log.
//!
//! The rules are RabbitMQ's: durable exchanges and durable, non-exclusive queues are stored;
//! a binding is stored when its source and destination both are. The predeclared `amq.*`
//! exchanges are recreated at start, never stored. Every change is committed (durably) before
//! the method's `*-ok` is sent; a failed commit is a 541 connection error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use lepus_protocol::{Decoder, Encoder, FieldTable, ShortStr};
use lepus_store::meta::{self, BindingRecord, Change, ExchangeRecord, MetaStore, QueueRecord};
use lepus_store::store::Store;

use crate::error::{BrokerError, Result};
use crate::exchange::{Destination, Exchange};

/// The storage a vhost writes through.
pub struct Persistence {
    pub store: Store,
    pub meta: MetaStore,
    /// The next durable queue's id (see [`Persistence::next_queue_id`]).
    next_queue_id: AtomicU64,
}

pub type PersistenceRef = Arc<Persistence>;

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence").field("root", &self.store.root()).finish()
    }
}

impl Persistence {
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.meta.apply(changes).map_err(|e| {
            tracing::error!(error = %e, "metadata commit failed");
            BrokerError::Storage(e.to_string())
        })
    }

    /// Storage over an opened message store and metadata store.
    pub fn open(store: Store, meta: MetaStore) -> Result<Persistence> {
        let next = meta.stored_next_queue_id().map_err(|e| BrokerError::Storage(e.to_string()))?;
        Ok(Persistence { store, meta, next_queue_id: AtomicU64::new(next) })
    }

    /// An id for a new durable queue's log, taken in memory: the `PutQueue` that stores the
    /// queue raises the stored counter past it in the same commit, so declaring a durable queue
    /// is one metadata commit, and an id is never reused for anything stored. (One taken for a
    /// declaration whose commit failed may be taken again after a restart; nothing used it.)
    pub fn next_queue_id(&self) -> Result<u64> {
        // Never wraps: once exhausted, every later call fails too.
        self.next_queue_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
            .map_err(|_| BrokerError::Storage("queue ids are exhausted".into()))
    }
}

/// Arguments as stored: an AMQP field table, encoded.
pub fn encode_arguments(table: &FieldTable) -> Vec<u8> {
    let mut out = BytesMut::new();
    lepus_protocol::table::encode_table(table, &mut Encoder::new(&mut out));
    out.to_vec()
}

pub fn decode_arguments(raw: &[u8]) -> std::result::Result<FieldTable, lepus_protocol::ProtocolError> {
    let mut d = Decoder::new(bytes::Bytes::copy_from_slice(raw), "stored arguments");
    lepus_protocol::table::decode_table(&mut d)
}

pub fn exchange_record(vhost: &str, x: &Exchange) -> ExchangeRecord {
    ExchangeRecord {
        vhost: vhost.to_owned(),
        name: x.name.as_bytes().to_vec(),
        kind: x.type_name().to_owned(),
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: encode_arguments(&x.arguments),
    }
}

pub fn queue_record(vhost: &str, name: &ShortStr, id: u64, auto_delete: bool, args: &FieldTable) -> QueueRecord {
    QueueRecord {
        vhost: vhost.to_owned(),
        name: name.as_bytes().to_vec(),
        id,
        auto_delete,
        arguments: encode_arguments(args),
    }
}

/// The metadata name of a durable delayed exchange's hidden queue: under the reserved `amq.`
/// prefix, which no client may declare a queue with, so it never meets a client's queue (and
/// may be longer than a queue name, which the store allows).
pub fn held_record_name(exchange: &ShortStr) -> Vec<u8> {
    [HELD_PREFIX, exchange.as_bytes()].concat()
}

/// The delayed exchange a queue record holds messages for, if it is a hidden queue's.
pub fn held_exchange_name(record_name: &[u8]) -> Option<ShortStr> {
    let name = record_name.strip_prefix(HELD_PREFIX)?;
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(name))
}

const HELD_PREFIX: &[u8] = b"amq.delayed-message/";

/// The metadata name of a durable deduplication exchange's cache journal (`x-cache-persistence:
/// disk`), under the reserved prefix as a hidden queue's.
pub fn dedup_record_name(exchange: &ShortStr) -> Vec<u8> {
    [DEDUP_PREFIX, exchange.as_bytes()].concat()
}

/// The deduplication exchange a queue record is the cache journal of, if it is one.
pub fn dedup_exchange_name(record_name: &[u8]) -> Option<ShortStr> {
    let name = record_name.strip_prefix(DEDUP_PREFIX)?;
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(name))
}

const DEDUP_PREFIX: &[u8] = b"amq.dedup-cache/";

/// The record of a queue that is not a client's (a delayed exchange's hidden queue, a
/// deduplication exchange's cache journal).
pub fn queue_record_named(vhost: &str, name: Vec<u8>, id: u64) -> QueueRecord {
    QueueRecord {
        vhost: vhost.to_owned(),
        name,
        id,
        auto_delete: false,
        arguments: encode_arguments(&FieldTable::new()),
    }
}

pub fn binding_record(
    vhost: &str,
    source: &ShortStr,
    dest: &Destination,
    key: &ShortStr,
    args: &FieldTable,
) -> BindingRecord {
    let destination = match dest {
        Destination::Queue(q) => meta::Destination::Queue(q.as_bytes().to_vec()),
        Destination::Exchange(x) => meta::Destination::Exchange(x.as_bytes().to_vec()),
    };
    BindingRecord {
        vhost: vhost.to_owned(),
        source: source.as_bytes().to_vec(),
        destination,
        routing_key: key.as_bytes().to_vec(),
        arguments: encode_arguments(args),
    }
}
