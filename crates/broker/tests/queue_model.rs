//! State-machine property test: a [`Queue`] driven by random operations, checked after every
//! queue call against a simple reference model.
//!
//! The harness plays the server (as `crates/amqp/src/connection/deliver.rs` does): several
//! simulated connections, each with an [`Outlet`] and two channels with their own
//! [`ChannelGate`]; consumers on them; a connection "drain" writes what its outlet holds (ack
//! deliveries become unacked, no-ack deliveries are settled afterwards, deliveries for
//! consumers that are gone are requeued); acks, requeues, `basic.get`, purge, `basic.qos
//! global`, `channel.flow`, a connection closing (its outlet closes while its consumers are
//! still attached; its next drain cancels them, requeues their deliveries and opens a new
//! connection in the slot) and `queue.delete`.
//!
//! After every call into the queue all outlets are emptied into the harness (the connection's
//! not-yet-written list) and what the queue assigned during that call is replayed against the
//! model:
//!
//! - the assigned messages are the front of the model's ready list, in order (so requeued
//!   messages come back at their original position), with the model's `redelivered` flag and
//!   the very message that was published with that sequence number;
//! - each went to the consumer the model's policy picks: among consumers still attached that
//!   can take a message now (own credit: `prefetch` for ack consumers, [`NO_ACK_WINDOW`] for
//!   no-ack ones; outlet not closed; channel not paused by flow; channel-wide prefetch for ack
//!   consumers), the highest priority, and within it the first in attach order starting
//!   after the consumer served last (round-robin);
//! - afterwards nothing more is deliverable (no ready message while a consumer could take it);
//! - every outlet was woken exactly once if something was pushed onto it, never otherwise;
//! - `message_count`, `consumer_count` and every gate's `unacked` equal the model's; no
//!   consumer exceeds its prefetch and no channel its channel-wide prefetch;
//! - fresh (not redelivered) messages are delivered in increasing sequence order, overall and
//!   per consumer; cancelled consumers get nothing new.
//!
//! Every published message is, in the harness, in exactly one place (ready, in an outlet,
//! unacked by a consumer, unacked from `basic.get`, or finished: acked, no-ack delivered,
//! purged, dropped by delete); at the end the queue is emptied with `get` and must hold exactly
//! the model's ready list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use lepus_broker::queue::{ChannelGate, ConsumerSpec, Enqueued, NO_ACK_WINDOW, Queue, QueueLimits};
use lepus_broker::{ConsumerId, Message, MessageRef, Outbound, Outlet, Wake};
use lepus_protocol::{BasicProperties, ContentHeader, FieldTable, ShortStr};
use proptest::prelude::*;
use proptest::sample::Index;

const CONNS: usize = 3;
const CHANS: usize = 2;

struct CountingWake(Arc<AtomicUsize>);

impl Wake for CountingWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Consume {
        conn: usize,
        chan: usize,
        ack: bool,
        prefetch: u32,
        priority: i64,
    },
    Cancel(usize),
    Drain(usize),
    Ack {
        consumer: usize,
        k: usize,
    },
    Requeue {
        consumer: usize,
        mask: u8,
    },
    Get {
        ack: bool,
    },
    SettleGet {
        which: usize,
        requeue: bool,
    },
    Purge,
    Qos {
        conn: usize,
        chan: usize,
        limit: u32,
    },
    Flow {
        conn: usize,
        chan: usize,
        active: bool,
    },
    /// The connection's socket goes: its outlet closes (consumers stay attached until the
    /// connection's next drain cleans up, which then opens a new connection in the slot).
    Close(usize),
    Delete,
}

/// Where a published message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Ready,
    /// Pushed onto connection `n`'s outlet, not yet written.
    Pending(usize),
    /// Written to consumer `n`, awaiting ack.
    Unacked(usize),
    /// Taken by `basic.get` with ack, awaiting ack.
    GetUnacked,
    /// Acked, no-ack delivered, purged or dropped by delete.
    Done,
}

struct Conn {
    id: u64,
    closed: bool,
    outlet: Arc<Outlet>,
    wakes: Arc<AtomicUsize>,
    /// Taken from the outlet, not yet written by the simulated connection.
    pending: Vec<Outbound>,
}

struct Gate {
    gate: Arc<ChannelGate>,
    limit: u32,
    paused: bool,
    /// Ack deliveries to this channel's consumers, in an outlet or unacked.
    count: u32,
}

struct Cons {
    conn: usize,
    chan: usize,
    tag: ShortStr,
    ack: bool,
    prefetch: u32,
    priority: i64,
    /// Attached to the queue (the queue's consumer list).
    in_queue: bool,
    /// Known to its (simulated) channel: deliveries to it are written, not requeued.
    server_live: bool,
    in_flight: u32,
    unacked: Vec<(u64, MessageRef)>,
    last_fresh: Option<u64>,
}

struct Harness {
    queue: Arc<Queue>,
    header: ContentHeader,
    conns: Vec<Conn>,
    gates: Vec<Vec<Gate>>,
    cons: Vec<Cons>,
    /// Attached consumers (indices into `cons`) in attach order.
    order: Vec<usize>,
    /// Position in `order` where the round-robin scan starts (after the consumer served last).
    cursor: usize,
    /// seq → redelivered.
    ready: BTreeMap<u64, bool>,
    msgs: Vec<MessageRef>,
    loc: Vec<Loc>,
    get_unacked: Vec<(u64, MessageRef)>,
    last_fresh: Option<u64>,
    deleted: bool,
}

fn body_seq(m: &Message) -> u64 {
    u64::from_le_bytes(m.body().try_into().expect("8-byte body"))
}

fn new_conn(id: u64) -> Conn {
    let wakes = Arc::new(AtomicUsize::new(0));
    let outlet = Arc::new(Outlet::new(Box::new(CountingWake(wakes.clone()))));
    Conn { id, closed: false, outlet, wakes, pending: Vec::new() }
}

fn new_gates() -> Vec<Gate> {
    (0..CHANS).map(|_| Gate { gate: Arc::new(ChannelGate::default()), limit: 0, paused: false, count: 0 }).collect()
}

impl Harness {
    fn new() -> Harness {
        let queue = Arc::new(Queue::new(
            ShortStr::truncating("q"),
            Arc::from("/"),
            false,
            None,
            false,
            FieldTable::default(),
            QueueLimits::default(),
        ));
        let mut payload = BytesMut::new();
        ContentHeader::encode_payload(&mut payload, 8, &BasicProperties::default().to_raw());
        let header = ContentHeader::decode(payload.freeze()).expect("header");
        let conns = (0..CONNS).map(|k| new_conn(k as u64 + 1)).collect();
        let gates = (0..CONNS).map(|_| new_gates()).collect();
        Harness {
            queue,
            header,
            conns,
            gates,
            cons: Vec::new(),
            order: Vec::new(),
            cursor: 0,
            ready: BTreeMap::new(),
            msgs: Vec::new(),
            loc: Vec::new(),
            get_unacked: Vec::new(),
            last_fresh: None,
            deleted: false,
        }
    }

    // ---- the model's assignment policy ----

    fn eligible(&self, c: usize) -> bool {
        let cs = &self.cons[c];
        let g = &self.gates[cs.conn][cs.chan];
        let own = if cs.ack { cs.prefetch == 0 || cs.in_flight < cs.prefetch } else { cs.in_flight < NO_ACK_WINDOW };
        let channel = !g.paused && (!cs.ack || g.limit == 0 || g.count < g.limit);
        cs.in_queue && own && channel && !self.conns[cs.conn].closed
    }

    /// The position in `order` of the consumer the next ready message goes to.
    fn pick(&self) -> Option<usize> {
        let best = self.order.iter().filter(|&&c| self.eligible(c)).map(|&c| self.cons[c].priority).max()?;
        let n = self.order.len();
        (0..n).map(|o| (self.cursor + o) % n).find(|&i| {
            let c = self.order[i];
            self.eligible(c) && self.cons[c].priority == best
        })
    }

    /// The model's consumer behind a broker consumer id (the index into `cons`), which must
    /// belong to connection `conn`.
    fn find_consumer(&self, conn: usize, id: ConsumerId) -> usize {
        let c = id.0 as usize;
        assert!(self.cons.get(c).is_some_and(|cs| cs.conn == conn), "unknown consumer {id:?} on connection {conn}");
        c
    }

    /// Takes what the last queue call pushed onto the outlets and checks it against the model.
    /// Returns the `ConsumerCancelled` items seen, as (conn, consumer).
    fn observe(&mut self) -> Vec<(usize, ConsumerId)> {
        let mut assigned: Vec<(u64, usize, usize)> = Vec::new(); // (seq, conn, consumer)
        let mut cancels = Vec::new();
        for k in 0..CONNS {
            let mut items = Vec::new();
            self.conns[k].outlet.drain_into(&mut items);
            let wakes = self.conns[k].wakes.swap(0, Ordering::SeqCst);
            assert_eq!(wakes, usize::from(!items.is_empty()), "wakes of outlet {k} for {} items", items.len());
            let mut prev: Option<u64> = None;
            for item in &items {
                match item {
                    Outbound::Deliver(d) => {
                        assert!(prev.is_none_or(|p| p < d.seq), "outlet {k}: seq {} after {prev:?}", d.seq);
                        prev = Some(d.seq);
                        let c = self.find_consumer(k, d.consumer);
                        let cs = &self.cons[c];
                        assert!(cs.in_queue, "delivery of {} to consumer {} which is not attached", d.seq, cs.tag);
                        assert_eq!(d.ack_required, cs.ack, "ack_required of delivery {}", d.seq);
                        assert!(d.queue.as_ref().is_some_and(|q| Arc::ptr_eq(q, &self.queue)), "delivery's queue");
                        let m = self.msgs.get(d.seq as usize).unwrap_or_else(|| panic!("unknown seq {}", d.seq));
                        assert!(Arc::ptr_eq(m, &d.message), "seq {} carries another message", d.seq);
                        assert_eq!(body_seq(&d.message), d.seq);
                        assigned.push((d.seq, k, c));
                    }
                    Outbound::ConsumerCancelled(id) => cancels.push((k, *id)),
                }
            }
            self.conns[k].pending.append(&mut items);
        }
        // One assignment pass pops the ready list from the front: replay it in seq order.
        assigned.sort_unstable();
        let mut gates_fed = Vec::new();
        for (seq, k, c) in assigned {
            let (&first, &redelivered) =
                self.ready.iter().next().unwrap_or_else(|| panic!("seq {seq} assigned but nothing is ready"));
            assert_eq!(seq, first, "assigned seq {seq} but the front of the ready list is {first}");
            let at = self.pick().unwrap_or_else(|| panic!("seq {seq} assigned while no consumer can take it"));
            let expected = self.order[at];
            assert_eq!(
                self.cons[c].tag, self.cons[expected].tag,
                "seq {seq} went to {} but the model picks {} (priority/round-robin/credit)",
                self.cons[c].tag, self.cons[expected].tag
            );
            let d_redelivered = self.find_redelivered(k, seq);
            assert_eq!(d_redelivered, redelivered, "redelivered flag of seq {seq}");
            if !redelivered {
                assert!(self.last_fresh.is_none_or(|l| l < seq), "fresh seq {seq} after {:?}", self.last_fresh);
                self.last_fresh = Some(seq);
                let cs = &mut self.cons[c];
                assert!(cs.last_fresh.is_none_or(|l| l < seq), "{}: fresh seq {seq} after {:?}", cs.tag, cs.last_fresh);
                cs.last_fresh = Some(seq);
            }
            self.ready.remove(&seq);
            self.loc[seq as usize] = Loc::Pending(k);
            self.cursor = at + 1;
            let cs = &mut self.cons[c];
            cs.in_flight += 1;
            if cs.ack {
                self.gates[cs.conn][cs.chan].count += 1;
                gates_fed.push((cs.conn, cs.chan));
            }
        }
        if !self.ready.is_empty()
            && let Some(at) = self.pick()
        {
            panic!("{} ready messages left while {} could take one", self.ready.len(), self.cons[self.order[at]].tag);
        }
        self.check_counts(&gates_fed);
        cancels
    }

    fn find_redelivered(&self, conn: usize, seq: u64) -> bool {
        self.conns[conn]
            .pending
            .iter()
            .rev()
            .find_map(|i| match i {
                Outbound::Deliver(d) if d.seq == seq => Some(d.redelivered),
                _ => None,
            })
            .expect("delivery just taken")
    }

    fn check_counts(&self, gates_fed: &[(usize, usize)]) {
        assert_eq!(self.queue.message_count() as usize, self.ready.len(), "message_count");
        assert_eq!(self.queue.consumer_count() as usize, self.order.len(), "consumer_count");
        assert_eq!(self.queue.counts(), (self.ready.len() as u32, self.order.len() as u32), "counts");
        for (k, row) in self.gates.iter().enumerate() {
            for (ch, g) in row.iter().enumerate() {
                assert_eq!(g.gate.unacked.load(Ordering::SeqCst), g.count, "gate unacked of conn {k} channel {ch}");
            }
        }
        for &(k, ch) in gates_fed {
            let g = &self.gates[k][ch];
            assert!(!g.paused, "deliveries to paused channel {ch} of conn {k}");
            assert!(g.limit == 0 || g.count <= g.limit, "channel prefetch {} exceeded: {}", g.limit, g.count);
        }
        for cs in &self.cons {
            if cs.in_queue {
                let limit = if cs.ack { cs.prefetch } else { NO_ACK_WINDOW };
                assert!(
                    limit == 0 || cs.in_flight <= limit,
                    "{} has {} in flight, limit {limit}",
                    cs.tag,
                    cs.in_flight
                );
            }
        }
    }

    /// Every message is in exactly one place, and the harness's lists agree with `loc`.
    fn check_conservation(&self) {
        let mut pending = [0usize; CONNS];
        let mut unacked = vec![0usize; self.cons.len()];
        let (mut ready, mut get) = (0, 0);
        for (seq, loc) in self.loc.iter().enumerate() {
            match *loc {
                Loc::Ready => {
                    ready += 1;
                    assert!(self.ready.contains_key(&(seq as u64)), "seq {seq} ready but not in the model");
                }
                Loc::Pending(k) => pending[k] += 1,
                Loc::Unacked(c) => unacked[c] += 1,
                Loc::GetUnacked => get += 1,
                Loc::Done => {}
            }
        }
        assert_eq!(ready, self.ready.len());
        for (k, conn) in self.conns.iter().enumerate() {
            let n = conn.pending.iter().filter(|i| matches!(i, Outbound::Deliver(_))).count();
            assert_eq!(pending[k], n, "deliveries pending on connection {k}");
            for i in &conn.pending {
                if let Outbound::Deliver(d) = i {
                    assert_eq!(self.loc[d.seq as usize], Loc::Pending(k));
                }
            }
        }
        for (c, cs) in self.cons.iter().enumerate() {
            assert_eq!(unacked[c], cs.unacked.len(), "unacked of {}", cs.tag);
            for (seq, _) in &cs.unacked {
                assert_eq!(self.loc[*seq as usize], Loc::Unacked(c));
            }
        }
        assert_eq!(get, self.get_unacked.len());
        for (seq, _) in &self.get_unacked {
            assert_eq!(self.loc[*seq as usize], Loc::GetUnacked);
        }
    }

    // ---- the simulated server ----

    /// Puts a message back as the queue would: at its position, redelivered (dropped if the
    /// queue is gone).
    fn model_requeue(&mut self, seq: u64) {
        if self.deleted {
            self.loc[seq as usize] = Loc::Done;
        } else {
            self.ready.insert(seq, true);
            self.loc[seq as usize] = Loc::Ready;
        }
    }

    /// `kick_consumers`: the server asks the queues of a channel's consumers to assign again.
    /// Observes either way.
    fn kick_channel(&mut self, conn: usize, chan: usize) {
        if self.cons.iter().any(|c| c.server_live && c.conn == conn && c.chan == chan) {
            self.queue.kick();
        }
        self.observe();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Publish(n) => {
                for _ in 0..n {
                    let seq = self.msgs.len() as u64;
                    let body = Bytes::copy_from_slice(&seq.to_le_bytes());
                    let message: MessageRef = Arc::new(Message::new(b"", b"q", &self.header, body));
                    let outcome = self.queue.publish(message.clone());
                    if self.deleted {
                        assert_eq!(outcome, Enqueued::Gone);
                    } else {
                        assert_eq!(outcome, Enqueued::Yes);
                        self.msgs.push(message);
                        self.loc.push(Loc::Ready);
                        self.ready.insert(seq, false);
                    }
                    self.observe();
                }
            }
            Op::Consume { conn, chan, ack, prefetch, priority } => {
                if self.conns[conn].closed {
                    return;
                }
                let tag = ShortStr::truncating(&format!("c{}", self.cons.len()));
                let spec = ConsumerSpec {
                    id: ConsumerId(self.cons.len() as u64),
                    outlet: self.conns[conn].outlet.clone(),
                    ack_required: ack,
                    prefetch,
                    gate: self.gates[conn][chan].gate.clone(),
                    priority,
                    exclusive: false,
                };
                let result = self.queue.consume(spec);
                if self.deleted {
                    assert!(result.is_err(), "consume on a deleted queue");
                } else {
                    result.expect("consume");
                    self.order.push(self.cons.len());
                    self.cons.push(Cons {
                        conn,
                        chan,
                        tag,
                        ack,
                        prefetch,
                        priority,
                        in_queue: true,
                        server_live: true,
                        in_flight: 0,
                        unacked: Vec::new(),
                        last_fresh: None,
                    });
                }
                self.observe();
            }
            Op::Cancel(which) => {
                let live: Vec<usize> = (0..self.cons.len()).filter(|&c| self.cons[c].server_live).collect();
                if live.is_empty() {
                    return;
                }
                let c = live[which % live.len()];
                let auto_delete = self.queue.cancel(ConsumerId(c as u64));
                assert!(!auto_delete, "not an auto-delete queue");
                self.cons[c].server_live = false;
                if let Some(j) = self.order.iter().position(|&x| x == c) {
                    self.order.remove(j);
                    if j < self.cursor {
                        self.cursor -= 1;
                    }
                    self.cons[c].in_queue = false;
                }
                self.observe();
            }
            Op::Drain(k) if self.conns[k].closed => self.close_connection(k),
            Op::Drain(k) => self.drain(k),
            Op::Ack { consumer, k } => {
                let with: Vec<usize> = (0..self.cons.len())
                    .filter(|&c| !self.cons[c].unacked.is_empty() && !self.conns[self.cons[c].conn].closed)
                    .collect();
                if with.is_empty() {
                    return;
                }
                let c = with[consumer % with.len()];
                let k = k.min(self.cons[c].unacked.len());
                let acked: Vec<_> = self.cons[c].unacked.drain(..k).collect();
                for (seq, _) in &acked {
                    self.loc[*seq as usize] = Loc::Done;
                }
                let (conn, chan) = (self.cons[c].conn, self.cons[c].chan);
                let g = &mut self.gates[conn][chan];
                g.gate.release(k as u32);
                g.count -= k as u32;
                self.cons[c].in_flight = self.cons[c].in_flight.saturating_sub(k as u32);
                self.queue.ack(Some(ConsumerId(c as u64)), acked.iter().map(|(seq, _)| *seq));
                self.observe();
                if self.gates[conn][chan].limit > 0 {
                    self.kick_channel(conn, chan);
                }
            }
            Op::Requeue { consumer, mask } => {
                let with: Vec<usize> = (0..self.cons.len())
                    .filter(|&c| !self.cons[c].unacked.is_empty() && !self.conns[self.cons[c].conn].closed)
                    .collect();
                if with.is_empty() {
                    return;
                }
                let c = with[consumer % with.len()];
                let all = std::mem::take(&mut self.cons[c].unacked);
                let (mut back, mut keep) = (Vec::new(), Vec::new());
                for (i, item) in all.into_iter().enumerate() {
                    if i < 8 && mask & (1 << i) != 0 { back.push(item) } else { keep.push(item) }
                }
                if back.is_empty() {
                    back.push(keep.remove(0));
                }
                self.cons[c].unacked = keep;
                let n = back.len() as u32;
                for (seq, _) in &back {
                    self.model_requeue(*seq);
                }
                let (conn, chan) = (self.cons[c].conn, self.cons[c].chan);
                let g = &mut self.gates[conn][chan];
                g.gate.release(n);
                g.count -= n;
                self.cons[c].in_flight = self.cons[c].in_flight.saturating_sub(n);
                self.queue.requeue(back, Some(ConsumerId(c as u64)));
                self.observe();
                if self.gates[conn][chan].limit > 0 {
                    self.kick_channel(conn, chan);
                }
            }
            Op::Get { ack } => {
                let got = self.queue.get(None).message();
                match self.ready.pop_first() {
                    None => assert!(got.is_none(), "get returned a message from an empty queue"),
                    Some((seq, redelivered)) => {
                        let (entry, remaining) = got.unwrap_or_else(|| panic!("get: none but {seq} is ready"));
                        assert_eq!(entry.seq, seq, "get returned the wrong message");
                        assert_eq!(entry.redelivered, redelivered, "get: redelivered of {seq}");
                        assert!(Arc::ptr_eq(&entry.message, &self.msgs[seq as usize]));
                        assert_eq!(remaining as usize, self.ready.len(), "get: message count");
                        if !redelivered {
                            assert!(self.last_fresh.is_none_or(|l| l < seq));
                            self.last_fresh = Some(seq);
                        }
                        if ack {
                            self.loc[seq as usize] = Loc::GetUnacked;
                            self.get_unacked.push((seq, entry.message));
                        } else {
                            self.loc[seq as usize] = Loc::Done;
                        }
                    }
                }
                self.observe();
            }
            Op::SettleGet { which, requeue } => {
                if self.get_unacked.is_empty() {
                    return;
                }
                let (seq, message) = self.get_unacked.remove(which % self.get_unacked.len());
                if requeue {
                    self.model_requeue(seq);
                    self.queue.requeue(vec![(seq, message)], None);
                } else {
                    self.loc[seq as usize] = Loc::Done;
                }
                self.observe();
            }
            Op::Purge => {
                let n = self.queue.purge();
                assert_eq!(n as usize, self.ready.len(), "purge count");
                for (seq, _) in std::mem::take(&mut self.ready) {
                    self.loc[seq as usize] = Loc::Done;
                }
                self.observe();
            }
            Op::Qos { conn, chan, limit } if !self.conns[conn].closed => {
                let g = &mut self.gates[conn][chan];
                g.gate.prefetch.store(limit, Ordering::SeqCst);
                g.limit = limit;
                self.kick_channel(conn, chan);
            }
            Op::Flow { conn, chan, active } if !self.conns[conn].closed => {
                let g = &mut self.gates[conn][chan];
                g.gate.paused.store(!active, Ordering::SeqCst);
                g.paused = !active;
                if active {
                    self.kick_channel(conn, chan);
                } else {
                    self.observe();
                }
            }
            Op::Qos { .. } | Op::Flow { .. } => return,
            Op::Close(k) => {
                if !self.conns[k].closed {
                    self.conns[k].outlet.close();
                    self.conns[k].closed = true;
                    self.observe();
                }
            }
            Op::Delete => {
                let mut expected: Vec<(usize, ConsumerId)> =
                    self.order.iter().map(|&c| (self.cons[c].conn, ConsumerId(c as u64))).collect();
                let n = self.queue.delete();
                if self.deleted {
                    assert_eq!(n, 0);
                    expected.clear();
                } else {
                    assert_eq!(n as usize, self.ready.len(), "delete count");
                }
                self.deleted = true;
                assert!(self.queue.is_deleted());
                for (seq, _) in std::mem::take(&mut self.ready) {
                    self.loc[seq as usize] = Loc::Done;
                }
                for &c in &self.order {
                    self.cons[c].in_queue = false;
                }
                self.order.clear();
                let mut seen = self.observe();
                seen.sort();
                expected.sort();
                assert_eq!(seen, expected, "consumer-cancelled notifications on delete");
                return self.check_conservation();
            }
        }
        self.check_conservation();
    }

    /// The connection writes what its outlet held, as `drain_outlet` does.
    fn drain(&mut self, k: usize) {
        let items = std::mem::take(&mut self.conns[k].pending);
        let mut no_ack: Vec<(usize, Vec<u64>)> = Vec::new();
        for item in items {
            match item {
                Outbound::Deliver(d) => {
                    let c = self.find_consumer(k, d.consumer);
                    let seq = d.seq;
                    assert_eq!(self.loc[seq as usize], Loc::Pending(k));
                    let cs = &mut self.cons[c];
                    if cs.server_live {
                        if cs.ack {
                            cs.unacked.push((seq, d.message));
                            self.loc[seq as usize] = Loc::Unacked(c);
                        } else {
                            self.loc[seq as usize] = Loc::Done;
                            match no_ack.last_mut() {
                                Some((last, seqs)) if *last == c => seqs.push(seq),
                                _ => no_ack.push((c, vec![seq])),
                            }
                        }
                    } else {
                        // The consumer is gone: back to the queue.
                        let chan = cs.chan;
                        cs.in_flight = cs.in_flight.saturating_sub(1);
                        if d.ack_required {
                            let g = &mut self.gates[k][chan];
                            g.gate.release(1);
                            g.count -= 1;
                        }
                        self.model_requeue(seq);
                        self.queue.requeue(vec![(seq, d.message)], Some(ConsumerId(c as u64)));
                        self.observe();
                    }
                }
                Outbound::ConsumerCancelled(id) => {
                    let c = self.find_consumer(k, id);
                    self.cons[c].server_live = false;
                }
            }
        }
        for (c, seqs) in no_ack {
            let cs = &mut self.cons[c];
            cs.in_flight = cs.in_flight.saturating_sub(seqs.len() as u32);
            self.queue.ack(Some(ConsumerId(c as u64)), seqs.into_iter());
            self.observe();
        }
    }

    /// A closed connection cleans up as `release_channel_resources` does for each channel:
    /// cancel its consumers, drain its outlet (requeueing what was assigned to them), requeue
    /// its unacked deliveries. Then a new connection takes the slot.
    fn close_connection(&mut self, k: usize) {
        for chan in 0..CHANS {
            let mine: Vec<usize> =
                (0..self.cons.len()).filter(|&c| self.cons[c].conn == k && self.cons[c].chan == chan).collect();
            for &c in &mine {
                if self.cons[c].server_live {
                    assert!(!self.queue.cancel(ConsumerId(c as u64)));
                    self.cons[c].server_live = false;
                    if let Some(j) = self.order.iter().position(|&x| x == c) {
                        self.order.remove(j);
                        if j < self.cursor {
                            self.cursor -= 1;
                        }
                        self.cons[c].in_queue = false;
                    }
                    self.observe();
                }
            }
            self.drain(k);
            for &c in &mine {
                let back = std::mem::take(&mut self.cons[c].unacked);
                if back.is_empty() {
                    continue;
                }
                let n = back.len() as u32;
                for (seq, _) in &back {
                    self.model_requeue(*seq);
                }
                let g = &mut self.gates[k][chan];
                g.gate.release(n);
                g.count -= n;
                self.queue.requeue(back, Some(ConsumerId(c as u64)));
                self.observe();
            }
            assert_eq!(self.gates[k][chan].count, 0, "channel credit left after close");
        }
        assert!(self.conns[k].pending.is_empty(), "nothing is assigned to a closed connection");
        let id = self.conns[k].id + CONNS as u64;
        self.conns[k] = new_conn(id);
        self.gates[k] = new_gates();
    }

    /// Empties the queue with `get`; it must hold exactly the model's ready list.
    fn finish(&mut self) {
        let mut actual = Vec::new();
        while let Some((entry, remaining)) = self.queue.get(None).message() {
            actual.push((entry.seq, entry.redelivered));
            assert_eq!(remaining as usize, self.ready.len() - actual.len());
        }
        let expected: Vec<(u64, bool)> = self.ready.iter().map(|(&s, &r)| (s, r)).collect();
        assert_eq!(actual, expected, "the queue's ready list");
    }
}

fn consume() -> impl Strategy<Value = Op> {
    (0..CONNS, 0..CHANS, any::<bool>(), 0u32..3, 0i64..3)
        .prop_map(|(conn, chan, ack, prefetch, priority)| Op::Consume { conn, chan, ack, prefetch, priority })
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0..CONNS;
    let chan = 0..CHANS;
    prop_oneof![
        6 => (1u8..=4).prop_map(Op::Publish),
        3 => consume(),
        1 => any::<usize>().prop_map(Op::Cancel),
        6 => conn.clone().prop_map(Op::Drain),
        4 => (any::<usize>(), 1usize..=3).prop_map(|(consumer, k)| Op::Ack { consumer, k }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(consumer, mask)| Op::Requeue { consumer, mask }),
        2 => any::<bool>().prop_map(|ack| Op::Get { ack }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(which, requeue)| Op::SettleGet { which, requeue }),
        1 => Just(Op::Purge),
        2 => (conn.clone(), chan.clone(), 0u32..4).prop_map(|(conn, chan, limit)| Op::Qos { conn, chan, limit }),
        2 => (conn.clone(), chan, prop::bool::weighted(0.6)).prop_map(|(conn, chan, active)| Op::Flow { conn, chan, active }),
        1 => conn.prop_map(Op::Close),
    ]
}

/// Operations, and optionally a `queue.delete` inserted among them.
fn script() -> impl Strategy<Value = Vec<Op>> {
    (prop::collection::vec(op(), 1..120), prop::option::weighted(0.15, any::<Index>())).prop_map(|(mut ops, del)| {
        if let Some(at) = del {
            let at = at.index(ops.len() + 1);
            ops.insert(at, Op::Delete);
        }
        ops
    })
}

/// Operations that attach and cancel many consumers (beyond what the queue's debug builds
/// check consumer by consumer), with the ordinary ones between.
fn crowded_script() -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![3 => consume(), 1 => any::<usize>().prop_map(Op::Cancel), 4 => op()];
    prop::collection::vec(step, 200..500)
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
    }
    h.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_model(ops in script()) {
        run(&ops);
    }

    /// The weaker fairness statement on its own: equal priority, unlimited credit, no gates:
    /// deliveries cycle through the consumers in attach order.
    #[test]
    fn unlimited_equal_consumers_cycle(consumers in 1usize..6, acks in prop::collection::vec(any::<bool>(), 6),
                                       batches in prop::collection::vec(1u8..10, 1..6)) {
        let mut h = Harness::new();
        for (i, &ack) in acks.iter().enumerate().take(consumers) {
            h.apply(&Op::Consume { conn: i % CONNS, chan: i % CHANS, ack, prefetch: 0, priority: 1 });
        }
        let mut next = 0usize;
        for n in batches {
            let before = h.msgs.len() as u64;
            h.apply(&Op::Publish(n));
            let mut got: Vec<(u64, ShortStr)> = h
                .conns
                .iter()
                .flat_map(|c| c.pending.iter())
                .filter_map(|i| match i {
                    Outbound::Deliver(d) if d.seq >= before => Some((d.seq, h.cons[d.consumer.0 as usize].tag.clone())),
                    _ => None,
                })
                .collect();
            got.sort();
            prop_assert_eq!(got.len(), n as usize);
            for (_, tag) in got {
                prop_assert_eq!(tag.to_string(), format!("c{}", next % consumers));
                next += 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Round-robin order, priorities and credit with around a hundred consumers attached.
    #[test]
    fn crowded_queue_matches_model(ops in crowded_script()) {
        run(&ops);
    }
}

// ---- regressions found by the model ----

/// A higher-priority consumer blocked by its channel's prefetch must not let the lowest
/// priority jump ahead of a middle one.
#[test]
fn falls_back_to_the_next_priority_not_any_lower_one() {
    run(&[
        Op::Qos { conn: 0, chan: 0, limit: 1 },
        Op::Consume { conn: 0, chan: 0, ack: true, prefetch: 0, priority: 2 },
        Op::Consume { conn: 1, chan: 0, ack: true, prefetch: 0, priority: 0 },
        Op::Consume { conn: 2, chan: 0, ack: true, prefetch: 0, priority: 1 },
        Op::Publish(3),
    ]);
}

/// `channel.flow(false)` stops deliveries to no-ack consumers too.
#[test]
fn flow_pauses_no_ack_consumers() {
    run(&[
        Op::Consume { conn: 0, chan: 0, ack: false, prefetch: 0, priority: 0 },
        Op::Flow { conn: 0, chan: 0, active: false },
        Op::Publish(2),
        Op::Flow { conn: 0, chan: 0, active: true },
        Op::Drain(0),
    ]);
}

/// Cancelling a consumer before the round-robin position must not skip the next consumer.
#[test]
fn cancel_keeps_the_round_robin_position() {
    run(&[
        Op::Consume { conn: 0, chan: 0, ack: false, prefetch: 0, priority: 0 },
        Op::Consume { conn: 1, chan: 0, ack: false, prefetch: 0, priority: 0 },
        Op::Consume { conn: 2, chan: 0, ack: false, prefetch: 0, priority: 0 },
        Op::Publish(2),
        Op::Cancel(0),
        Op::Publish(2),
    ]);
}
