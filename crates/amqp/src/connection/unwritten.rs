//! No-ack deliveries (and `basic.get` with no-ack) that are encoded but not yet written to
//! the socket.
//!
//! AMQP lets a no-ack message be forgotten once it is sent, but only once it is really
//! sent: one still in our output buffer when the connection dies was never the client's.
//! So a no-ack delivery leaves its queue (and gives its consumer's window back) only when
//! the last of its bytes has been written, and whatever is still unwritten when the
//! connection ends goes back to its queue. The window is counted in bytes, too
//! ([`lepus_broker::queue::no_ack_credit`]), so what a no-ack consumer that stops reading
//! can make the broker hold is bounded by its size, not by a count of messages of any size.
//!
//! Positions are offsets in the connection's output stream: a delivery's `end` is the
//! stream length after its last frame was encoded, and the socket has taken `written`
//! bytes of the stream.

use std::collections::VecDeque;
use std::sync::Arc;

use lepus_broker::queue::no_ack_credit;
use lepus_broker::{ConsumerId, MessageRef, QueueRef};

/// Deliveries of one queue and consumer that go back together.
type Requeue = (QueueRef, Option<ConsumerId>, Vec<(u64, MessageRef)>);

/// One no-ack delivery waiting for its bytes to be written.
#[derive(Debug)]
struct Sent {
    end: u64,
    channel: u16,
    queue: QueueRef,
    /// `None` for `basic.get`.
    consumer: Option<ConsumerId>,
    seq: u64,
    message: MessageRef,
}

#[derive(Debug, Default)]
pub(super) struct Unwritten {
    /// Bytes of the output stream the socket has taken.
    written: u64,
    /// Oldest first.
    sent: VecDeque<Sent>,
    /// Deliveries written by the last write, settled together: their seqs in order, and runs
    /// of one queue and consumer as (queue, consumer, end of the run in `seqs`, credit). Kept
    /// between writes, so settling allocates nothing.
    seqs: Vec<u64>,
    runs: Vec<(QueueRef, Option<ConsumerId>, usize, u32)>,
}

impl Unwritten {
    /// The stream offset the next encoded byte gets, given `pending` bytes not yet written.
    pub(super) fn stream_end(&self, pending: usize) -> u64 {
        self.written + pending as u64
    }

    /// A no-ack delivery on `channel` whose last byte is at stream offset `end`.
    pub(super) fn push(&mut self, end: u64, channel: u16, delivery: (QueueRef, Option<ConsumerId>, u64, MessageRef)) {
        debug_assert!(self.sent.back().is_none_or(|s| s.end <= end), "no-ack deliveries out of stream order");
        let (queue, consumer, seq, message) = delivery;
        self.sent.push_back(Sent { end, channel, queue, consumer, seq, message });
    }

    /// The socket took `n` more bytes: deliveries now wholly written leave their queues.
    pub(super) fn on_written(&mut self, n: usize) {
        self.written += n as u64;
        while let Some(s) = self.sent.front()
            && s.end <= self.written
        {
            let Some(s) = self.sent.pop_front() else { break };
            self.add_to_run(s);
        }
        self.settle_runs();
    }

    fn add_to_run(&mut self, s: Sent) {
        self.seqs.push(s.seq);
        let end = self.seqs.len();
        let credit = no_ack_credit(s.message.size());
        match self.runs.last_mut() {
            Some((q, c, run_end, run_credit)) if Arc::ptr_eq(q, &s.queue) && *c == s.consumer => {
                *run_end = end;
                *run_credit = run_credit.saturating_add(credit);
            }
            _ => self.runs.push((s.queue, s.consumer, end, credit)),
        }
    }

    /// Releases every run from its queue (returning the consumers' credit), then empties.
    fn settle_runs(&mut self) {
        let mut start = 0;
        for (queue, consumer, end, credit) in self.runs.drain(..) {
            queue.ack_sent(consumer, self.seqs[start..end].iter().copied(), credit);
            start = end;
        }
        self.seqs.clear();
    }

    /// What was never wholly written (on `channel`, or on any) goes back to its queue, in
    /// order, marked redelivered: the connection is gone, or the client closed the channel
    /// or connection and discards what follows. Returns how many deliveries that was.
    pub(super) fn requeue(&mut self, channel: Option<u16>) -> usize {
        let taken: Vec<Sent> = match channel {
            None => self.sent.drain(..).collect(),
            Some(channel) => {
                let (taken, kept): (Vec<Sent>, Vec<Sent>) =
                    std::mem::take(&mut self.sent).into_iter().partition(|s| s.channel == channel);
                self.sent = kept.into();
                taken
            }
        };
        let count = taken.len();
        let mut groups: Vec<Requeue> = Vec::new();
        for s in taken {
            match groups.last_mut() {
                Some((q, c, items)) if Arc::ptr_eq(q, &s.queue) && *c == s.consumer => items.push((s.seq, s.message)),
                _ => groups.push((s.queue, s.consumer, vec![(s.seq, s.message)])),
            }
        }
        for (queue, consumer, items) in groups {
            queue.requeue(items, consumer);
        }
        count
    }
}
