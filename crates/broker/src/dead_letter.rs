//! Dead-lettering, as RabbitMQ 3.x does it: a message rejected without requeue, expired, or
//! dropped by a length limit is republished to the queue's dead-letter exchange with its
//! death recorded in the `x-death` header.
//!
//! The rewrite ([`dead_message`]): `x-death` gets an entry for (queue, reason) with `count`
//! (long), `reason`, `queue`, `time` (timestamp, seconds), `exchange`, `routing-keys` (the
//! routing key and the `CC` keys) and, if the message had a per-message TTL,
//! `original-expiration`. An entry for the same queue and reason has its count raised and moves
//! to the front; the first death also sets `x-first-death-reason`, `-queue` and `-exchange`.
//! The `expiration` property goes. With `x-dead-letter-routing-key` the message is routed with
//! that key alone and loses its `CC` header; without it, with its own keys (the routing key, `CC`
//! and the `BCC` keys the message kept from its publish, although `x-death` lists only the first
//! two, as RabbitMQ).
//!
//! Cycles ([`is_cycle`]): a message that would come back to a queue it already died in, with no
//! rejection on the way, is dropped for that queue (RabbitMQ's rule), so expiry or length
//! limits cannot move a message around a loop forever. A missing dead-letter exchange drops
//! the message silently.
//!
//! A dead letter moves at least once across a crash (`kill -9` or a power cut): it is in the
//! target queues, or still in the source, or both (a duplicate, never a loss). Dead letters
//! are published after the source queue's lock is released (their appends to logged targets
//! are buffered first), and the source then releases its stored copies with
//! `Stored::forget_moved`, which the store writes only in the second phase of the commit
//! that holds them, after every append of that commit is written and synced (STORAGE.md §5).
//! A release buffered in a later commit than the appends is ordered by the commits
//! themselves. This covers every move: reject and nack without requeue, expiry (queue or
//! message TTL), `x-max-length` drop-head, `x-delivery-limit`, and the delayed exchange's
//! release. Only a commit holding such a release pays the second round of syncs; if no dead
//! letter reached a log (transient messages, non-durable targets, nothing routed), the copies
//! are released as by an ack. Duplicates: a crash after the appends' commit and before the
//! release's brings the source's copy back, and it dies again (an expired one at once).
//! Enqueueing into a target may dead-letter in turn (its own length limit); [`run`] keeps such
//! chains on a work list instead of the stack.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use lepus_protocol::{BasicProperties, FieldTable, FieldValue, ShortStr};

use crate::durability::Durable;
use crate::headers::MessageHeaders;
use crate::message::{Message, MessageRef};
use crate::queue::QueueRef;
use crate::vhost::VHost;

/// Where a queue's dead letters go: `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTarget {
    pub exchange: ShortStr,
    pub routing_key: Option<ShortStr>,
}

/// Why a message died, as `x-death`'s `reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message rewritten for its dead-letter exchange, with the keys to route it by.
#[derive(Debug)]
pub struct DeadMessage {
    pub message: Message,
    /// The routing key first, then the `CC` keys (or the dead-letter routing key alone).
    pub routing_keys: Vec<Bytes>,
    pub headers: FieldTable,
}

fn long_str(text: &[u8]) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(text))
}

/// The `CC` header's keys (RabbitMQ takes the longstr elements of an array).
pub(crate) fn cc_keys(headers: &FieldTable) -> Vec<Bytes> {
    match headers.get("CC") {
        Some(FieldValue::Array(values)) => values
            .iter()
            .filter_map(|v| match v {
                FieldValue::LongStr(b) => Some(b.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Rewrites `message`, which died in `queue` for `reason` at `now_ms`, for `target`. `None` if
/// its properties cannot be read (it is dropped).
pub fn dead_message(
    message: &Message,
    queue: &[u8],
    reason: DeathReason,
    target: &DeadLetterTarget,
    now_ms: u64,
) -> Option<DeadMessage> {
    let mut props: BasicProperties = message.properties().ok()?;
    let mut headers = props.headers.take().unwrap_or_default();
    let own_keys: Vec<Bytes> =
        std::iter::once(Bytes::copy_from_slice(message.routing_key())).chain(cc_keys(&headers)).collect();
    let mut info = FieldTable::new()
        .with("exchange", long_str(message.exchange()))
        .with("queue", long_str(queue))
        .with("reason", long_str(reason.as_str().as_bytes()))
        .with("routing-keys", FieldValue::Array(own_keys.iter().map(|k| FieldValue::LongStr(k.clone())).collect()))
        .with("time", FieldValue::Timestamp(now_ms / 1000));
    if let Some(expiration) = props.expiration.take() {
        info.insert(ShortStr::from_static("original-expiration"), long_str(expiration.as_bytes()));
    }
    record_death(&mut headers, info, queue, reason, message.exchange());
    let routing_keys = match &target.routing_key {
        Some(key) => {
            headers.remove("CC");
            vec![Bytes::copy_from_slice(key.as_bytes())]
        }
        // Its own keys: the routing key, `CC` and the `BCC` keys kept from its publish.
        None => own_keys.into_iter().chain(message.bcc_keys().iter().cloned()).collect(),
    };
    props.headers = Some(headers.clone());
    let dead = Message::with_properties(target.exchange.as_bytes(), &routing_keys[0], &props, message.body());
    // Routed by the dead-letter routing key, it has no other keys from then on.
    let bcc = if target.routing_key.is_some() { Vec::new() } else { message.bcc_keys().to_vec() };
    let message = dead.with_bcc_keys(bcc);
    Some(DeadMessage { message, routing_keys, headers })
}

/// Adds a death to `x-death` (raising the count of an entry for the same queue and reason and
/// moving it to the front), and sets the first-death headers on the first one.
fn record_death(headers: &mut FieldTable, info: FieldTable, queue: &[u8], reason: DeathReason, exchange: &[u8]) {
    let mut deaths = match headers.remove("x-death") {
        Some(FieldValue::Array(deaths)) => deaths,
        // Not an array: replaced by this death alone, the first-death headers left as they are.
        Some(_) => Vec::new(),
        None => {
            headers.insert(ShortStr::from_static("x-first-death-reason"), long_str(reason.as_str().as_bytes()));
            headers.insert(ShortStr::from_static("x-first-death-queue"), long_str(queue));
            headers.insert(ShortStr::from_static("x-first-death-exchange"), long_str(exchange));
            Vec::new()
        }
    };
    let same = |d: &FieldValue| {
        d.as_table().is_some_and(|t| {
            t.get("queue").and_then(FieldValue::as_bytes) == Some(queue)
                && t.get("reason").and_then(FieldValue::as_bytes) == Some(reason.as_str().as_bytes())
        })
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let FieldValue::Table(mut old) = deaths.remove(i) else { unreachable!("matched a table") };
            let count = old.get("count").and_then(FieldValue::as_i64).unwrap_or(0);
            old.insert(ShortStr::from_static("count"), FieldValue::I64(count.saturating_add(1)));
            old
        }
        None => {
            let mut entry = FieldTable::new().with("count", FieldValue::I64(1));
            entry.0.extend(info.0);
            entry
        }
    };
    deaths.insert(0, FieldValue::Table(sorted(entry)));
    headers.insert(ShortStr::from_static("x-death"), FieldValue::Array(deaths));
}

/// A table with its keys in order (RabbitMQ sorts an `x-death` entry).
fn sorted(mut table: FieldTable) -> FieldTable {
    table.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    table
}

/// Whether a message whose deaths are `headers`' `x-death` (most recent first) would cycle
/// back into `queue` with no rejection on the way (RabbitMQ's rule; a rejection means a
/// client is in the loop).
pub fn is_cycle(headers: &FieldTable, queue: &[u8]) -> bool {
    let Some(FieldValue::Array(deaths)) = headers.get("x-death") else { return false };
    let mut upto = Vec::new();
    for death in deaths {
        let Some(t) = death.as_table() else { return false };
        upto.push(t);
        if t.get("queue").and_then(FieldValue::as_bytes) == Some(queue) {
            return upto.iter().all(|t| t.get("reason").and_then(FieldValue::as_bytes) != Some(&b"rejected"[..]));
        }
    }
    false
}

/// Publishes dead letters from `source` (a queue of `vhost`) to `target`. Returns whether one
/// was stored in a target's log: the source then releases its stored copies as moved
/// (`Stored::forget_moved`), after the appends in the store's commit.
pub fn publish(
    vhost: &VHost,
    source: &ShortStr,
    target: &DeadLetterTarget,
    letters: Vec<(MessageRef, DeathReason)>,
    now_ms: u64,
) -> bool {
    let mut stored = false;
    let mut queues: Vec<QueueRef> = Vec::new();
    for (message, reason) in letters {
        let Some(dead) = dead_message(&message, source.as_bytes(), reason, target, now_ms) else {
            tracing::warn!(queue = %source.to_string().escape_debug(), "dead letter with unreadable properties dropped");
            continue;
        };
        let keys: Vec<&[u8]> = dead.routing_keys.iter().map(|k| k.as_ref()).collect();
        queues.clear();
        let headers = MessageHeaders::Decoded(&dead.headers);
        if vhost.route_dead_letter(target.exchange.as_bytes(), &keys, headers, &mut queues).is_err() {
            // A missing dead-letter exchange drops the message, as RabbitMQ.
            continue;
        }
        let message = Arc::new(dead.message);
        let stamp_ms = if message.is_persistent() { now_ms } else { 0 };
        for q in &queues {
            // A delayed exchange's hidden queue takes the exchange's name but is no queue a
            // message died in: it is never a cycle.
            if reason != DeathReason::Rejected && !q.is_held() && is_cycle(&dead.headers, q.name.as_bytes()) {
                tracing::debug!(queue = %q.name.to_string().escape_debug(), "dead-letter cycle: message dropped");
                continue;
            }
            let (_, durable) = q.publish_stamped(message.clone(), stamp_ms);
            stored |= durable != Durable::NOW;
        }
    }
    stored
}

type Job = Box<dyn FnOnce()>;

thread_local! {
    /// Dead-lettering jobs started while one runs on this thread.
    static PENDING: RefCell<Option<VecDeque<Job>>> = const { RefCell::new(None) };
}

/// Runs `job` now, or, if a dead-lettering job is running on this thread (a dead letter
/// overflowed a queue that dead-letters in turn), after it: chains run off a work list, not
/// the stack.
pub fn run(job: impl FnOnce() + 'static) {
    let nested = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        match p.as_mut() {
            Some(jobs) => {
                jobs.push_back(Box::new(job) as Job);
                None
            }
            None => {
                *p = Some(VecDeque::new());
                Some(job)
            }
        }
    });
    let Some(first) = nested else { return };
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PENDING.with(|p| *p.borrow_mut() = None);
        }
    }
    let _reset = Reset;
    first();
    let mut ran = 1usize;
    while let Some(next) = PENDING.with(|p| p.borrow_mut().as_mut().and_then(VecDeque::pop_front)) {
        if ran >= RUN_JOBS_MAX {
            // Cycles are dropped (see `is_cycle`), so only a pathological topology gets here.
            let left = PENDING.with(|p| p.borrow().as_ref().map_or(0, VecDeque::len)) + 1;
            tracing::error!(jobs = RUN_JOBS_MAX, left, "dead-letter chain too long: the rest of it is dropped");
            return;
        }
        next();
        ran += 1;
    }
}

/// The most dead-lettering jobs one [`run`] performs (a chain of overflowing queues).
const RUN_JOBS_MAX: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn message(props: &BasicProperties) -> Message {
        Message::with_properties(b"orders", b"new", props, b"body")
    }

    fn target(key: Option<&'static str>) -> DeadLetterTarget {
        DeadLetterTarget { exchange: ShortStr::from_static("dlx"), routing_key: key.map(ShortStr::from_static) }
    }

    fn deaths(headers: &FieldTable) -> Vec<FieldTable> {
        match headers.get("x-death") {
            Some(FieldValue::Array(d)) => d.iter().map(|t| t.as_table().unwrap().clone()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn first_death_records_everything() {
        let headers = FieldTable::new().with("CC", FieldValue::Array(vec![long_str(b"cc1")]));
        let props = BasicProperties {
            headers: Some(headers),
            expiration: Some(ShortStr::from_static("500")),
            ..Default::default()
        };
        let dead =
            dead_message(&message(&props), b"work", DeathReason::Expired, &target(None), 1_700_000_000_123).unwrap();
        assert_eq!(dead.message.exchange(), b"dlx");
        assert_eq!(dead.message.routing_key(), b"new");
        assert_eq!(dead.routing_keys, vec![Bytes::from_static(b"new"), Bytes::from_static(b"cc1")]);
        let props = dead.message.properties().unwrap();
        assert_eq!(props.expiration, None);
        let h = props.headers.unwrap();
        assert_eq!(h.get("x-first-death-reason"), Some(&long_str(b"expired")));
        assert_eq!(h.get("x-first-death-queue"), Some(&long_str(b"work")));
        assert_eq!(h.get("x-first-death-exchange"), Some(&long_str(b"orders")));
        let d = deaths(&h);
        assert_eq!(d.len(), 1);
        let keys: Vec<&str> = d[0].iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["count", "exchange", "original-expiration", "queue", "reason", "routing-keys", "time"]);
        assert_eq!(d[0].get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(d[0].get("time"), Some(&FieldValue::Timestamp(1_700_000_000)));
        assert_eq!(d[0].get("original-expiration"), Some(&long_str(b"500")));
        assert_eq!(d[0].get("routing-keys"), Some(&FieldValue::Array(vec![long_str(b"new"), long_str(b"cc1")])));
    }

    #[test]
    fn a_second_death_in_the_same_place_counts_up_and_moves_first() {
        let m = message(&BasicProperties::default());
        let t = target(None);
        let once = dead_message(&m, b"a", DeathReason::Rejected, &t, 1000).unwrap().message;
        let twice = dead_message(&once, b"b", DeathReason::Expired, &t, 2000).unwrap().message;
        let thrice = dead_message(&twice, b"a", DeathReason::Rejected, &t, 3000).unwrap();
        let d = deaths(&thrice.headers);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].get("queue"), Some(&long_str(b"a")));
        assert_eq!(d[0].get("count"), Some(&FieldValue::I64(2)));
        assert_eq!(d[0].get("time"), Some(&FieldValue::Timestamp(1)), "the first time is kept");
        assert_eq!(d[1].get("queue"), Some(&long_str(b"b")));
        assert_eq!(thrice.headers.get("x-first-death-queue"), Some(&long_str(b"a")));
    }

    #[test]
    fn a_dead_letter_routing_key_replaces_the_keys_and_drops_cc() {
        let headers = FieldTable::new().with("CC", FieldValue::Array(vec![long_str(b"cc1")]));
        let props = BasicProperties { headers: Some(headers), ..Default::default() };
        let dead = dead_message(&message(&props), b"q", DeathReason::Rejected, &target(Some("retry")), 0).unwrap();
        assert_eq!(dead.routing_keys, vec![Bytes::from_static(b"retry")]);
        assert_eq!(dead.message.routing_key(), b"retry");
        assert_eq!(dead.headers.get("CC"), None);
    }

    #[test]
    fn cycles_without_a_rejection_are_detected() {
        let t = target(None);
        let m = message(&BasicProperties::default());
        let a = dead_message(&m, b"a", DeathReason::Expired, &t, 0).unwrap().message;
        let b = dead_message(&a, b"b", DeathReason::Expired, &t, 0).unwrap();
        assert!(is_cycle(&b.headers, b"a"));
        assert!(is_cycle(&b.headers, b"b"));
        assert!(!is_cycle(&b.headers, b"c"));
        let r = dead_message(&m, b"a", DeathReason::Rejected, &t, 0).unwrap().message;
        let rb = dead_message(&r, b"b", DeathReason::Expired, &t, 0).unwrap();
        assert!(!is_cycle(&rb.headers, b"a"), "a rejection breaks the cycle");
    }

    #[test]
    fn nested_jobs_run_after_the_outer_one() {
        let order = std::rc::Rc::new(RefCell::new(Vec::new()));
        let o = order.clone();
        run(move || {
            let inner = o.clone();
            run(move || inner.borrow_mut().push(2));
            o.borrow_mut().push(1);
        });
        assert_eq!(*order.borrow(), vec![1, 2]);
    }
}
