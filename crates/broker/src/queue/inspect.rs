//! Read-only views of a queue for the management API and metrics: its counts and its
//! consumers, read under the queue lock from counters kept as the queue changes (nothing here
//! walks messages; the consumers are walked for the unacknowledged count and their list).

use super::Queue;
use crate::outlet::ConsumerId;

/// A queue's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages.
    pub ready: u32,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Ready messages held only on disk (paged out), and their body bytes.
    pub paged_out: u32,
    pub paged_out_bytes: u64,
    /// Ready persistent messages of a durable queue (0 in a transient one, as RabbitMQ), and
    /// their body bytes.
    pub persistent: u32,
    pub persistent_bytes: u64,
    /// Messages delivered to consumers that acknowledge and not yet acknowledged.
    pub unacked: u64,
    pub consumers: u32,
    /// An estimate of the memory the queue takes: its ready messages (see
    /// `ReadyList::memory_bytes`) and a fixed part per queue and per unacknowledged delivery.
    pub memory_bytes: u64,
}

/// The memory a queue takes with nothing in it (its record, lock, state and log handle),
/// rounded from BENCHMARKS.md's S11 (568 B per idle queue).
const QUEUE_BASE_BYTES: u64 = 600;
/// What an unacknowledged delivery keeps in the queue (its entry in the consumer's window).
const UNACKED_ENTRY_BYTES: u64 = 48;

/// A consumer as the broker knows it (its tag and channel are the front end's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerView {
    pub id: ConsumerId,
    pub ack_required: bool,
    pub prefetch: u32,
    pub priority: i64,
    pub exclusive: bool,
    /// Served now: always, unless the queue has a single active consumer and it is another.
    pub active: bool,
}

impl Queue {
    /// The queue's counts (see [`QueueCounts`]).
    pub fn inspect_counts(&self) -> QueueCounts {
        let st = self.state.lock();
        let unacked = st.consumers.acked_in_flight();
        let (persistent, persistent_bytes) = if self.durable { st.ready.persistent() } else { (0, 0) };
        QueueCounts {
            ready: st.ready.len() as u32,
            ready_bytes: st.ready.bytes(),
            paged_out: st.ready.paged_count() as u32,
            paged_out_bytes: st.ready.paged_bytes(),
            persistent: persistent as u32,
            persistent_bytes,
            unacked,
            consumers: st.consumers.len() as u32,
            memory_bytes: QUEUE_BASE_BYTES + st.ready.memory_bytes() + UNACKED_ENTRY_BYTES * unacked,
        }
    }

    /// The queue's consumers, in priority and registration order.
    pub fn consumer_views(&self) -> Vec<ConsumerView> {
        let st = self.state.lock();
        let active = st.consumers.active();
        st.consumers
            .specs()
            .map(|spec| ConsumerView {
                id: spec.id,
                ack_required: spec.ack_required,
                prefetch: spec.prefetch,
                priority: spec.priority,
                exclusive: spec.exclusive,
                active: active.is_none_or(|a| a == spec.id),
            })
            .collect()
    }
}
