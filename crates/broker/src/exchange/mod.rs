//! Exchanges: what every exchange has (name, flags, arguments, its bindings) and the seam to
//! what its type decides ([`ExchangeType`]: binding checks, the routing index, routing).
//!
//! A binding is identified, as in RabbitMQ, by (destination, routing key, arguments). The
//! exchange keeps every binding; its type's index holds what routing needs. Most types ignore
//! arguments, so their index holds each (destination, key) once however many argument variants
//! are bound; a type whose arguments are the match (headers) indexes every variant.
//!
//! # Adding an exchange type
//! One module in this folder with a struct implementing [`ExchangeType`] (see `direct.rs` for
//! the smallest), and one line in [`new_index`] naming it. Nothing else matches on types: the
//! vhost asks the trait whether routes through it may be cached or memoized.
//!
//! The delayed message exchange (`delayed.rs`) wraps another type's index, chosen by its
//! `x-delayed-type` argument ([`index_for`]); the exchange holds the hidden queue its delayed
//! messages wait in ([`Exchange::held`]).
//!
//! The deduplication exchange (`dedup.rs`) routes as a fanout; the exchange holds its cache
//! ([`Exchange::dedup`]), which drops a message seen before ([`Exchange::is_duplicate`]).

pub mod dedup;
pub mod delayed;
mod direct;
mod fanout;
mod headers;
mod topic;

use std::collections::HashMap;
use std::fmt;

use lepus_protocol::{FieldTable, ShortStr};
use parking_lot::Mutex;

use crate::error::BrokerError;
use crate::policy::Applied;
use crate::queue::QueueRef;

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(ShortStr),
    Exchange(ShortStr),
}

/// What an exchange type decides: which bindings it accepts, what it indexes of them, and where
/// a message goes. One value per exchange, holding that exchange's routing index.
pub trait ExchangeType: fmt::Debug + Send + Sync {
    /// The type's name, as `exchange.declare` gives it and the metadata store keeps it.
    fn name(&self) -> &'static str;

    /// Refuses binding arguments the type cannot use, with the reply text of a
    /// 406 PRECONDITION_FAILED (without its `PRECONDITION_FAILED - ` prefix).
    fn check_binding(&self, _arguments: &FieldTable) -> Result<(), String> {
        Ok(())
    }

    /// Whether the index takes every argument variant of a (destination, key) (the arguments are
    /// the match), rather than each (destination, key) once whatever its arguments.
    fn indexes_arguments(&self) -> bool {
        false
    }

    /// Adds a binding to the index: the first argument variant of a (destination, key), or
    /// every variant if [`indexes_arguments`](Self::indexes_arguments). The arguments passed
    /// [`check_binding`](Self::check_binding).
    fn bind(&mut self, dest: &Destination, key: &ShortStr, arguments: &FieldTable);

    /// Removes a binding from the index: the last argument variant of a (destination, key), or
    /// any variant if [`indexes_arguments`](Self::indexes_arguments).
    fn unbind(&mut self, dest: &Destination, key: &ShortStr, arguments: &FieldTable);

    /// Pushes the destinations for a message with `routing_keys` (the routing key, then any
    /// `CC`/`BCC` keys) and `headers` (given only if [`routes_by_headers`](Self::routes_by_headers)).
    /// May push duplicates; the caller de-duplicates. Allocates nothing beyond `out`.
    fn route(&self, routing_keys: &[&[u8]], headers: Option<&FieldTable>, out: &mut Vec<Destination>);

    /// Whether a route depends on the message's headers: then it is never cached, and the
    /// headers are decoded for it.
    fn routes_by_headers(&self) -> bool {
        false
    }

    /// Whether a route through this type is worth keeping in the vhost's shared memo (it costs
    /// more than the memo's lock and lookup).
    fn memoizable(&self) -> bool {
        false
    }
}

/// The exchange types by name: a new, empty routing index for an exchange of `type_name`, or
/// `None` for a type this broker does not have.
pub fn new_index(type_name: &str) -> Option<Box<dyn ExchangeType>> {
    Some(match type_name {
        direct::NAME => Box::new(direct::Direct::default()),
        fanout::NAME => Box::new(fanout::Fanout::default()),
        topic::NAME => Box::new(topic::Topic::default()),
        headers::NAME => Box::new(headers::Headers::default()),
        _ => return None,
    })
}

/// The 503 for `exchange.declare` of a type this broker does not have.
pub fn unknown_type(type_name: &str) -> BrokerError {
    BrokerError::CommandInvalid(format!("unknown exchange type '{type_name}'"))
}

/// Whether `type_name` is an exchange type of this broker.
pub fn is_type(type_name: &str) -> bool {
    type_name == delayed::NAME || type_name == dedup::NAME || new_index(type_name).is_some()
}

/// A new, empty routing index for an exchange of `type_name` declared with `arguments`: the
/// registry's, or a delayed exchange's around the type its `x-delayed-type` names (406 or 503 as
/// the plugin answers a missing or wrong one), or a deduplication exchange's (406 for arguments
/// its plugin refuses).
pub fn index_for(type_name: &str, arguments: &FieldTable) -> Result<Box<dyn ExchangeType>, BrokerError> {
    if type_name == delayed::NAME {
        return Ok(Box::new(delayed::Delayed::new(arguments)?));
    }
    if type_name == dedup::NAME {
        dedup::parse_args(arguments)?;
        return Ok(Box::new(dedup::Dedup::default()));
    }
    new_index(type_name).ok_or_else(|| unknown_type(type_name))
}

/// The `alternate-exchange` argument.
fn argument_alternate(arguments: &FieldTable) -> Option<ShortStr> {
    let bytes = arguments.get("alternate-exchange")?.as_bytes()?;
    ShortStr::from_bytes(bytes::Bytes::copy_from_slice(bytes))
}

#[derive(Debug)]
pub struct Exchange {
    pub name: ShortStr,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The alternate exchange: the `alternate-exchange` argument, else its policy's.
    pub alternate: Option<ShortStr>,
    /// The policy and operator policy applied (see [`crate::policy`]).
    pub policy: Applied,
    /// (destination, key) → the argument tables bound with it.
    bindings: HashMap<(Destination, ShortStr), Vec<FieldTable>>,
    index: Box<dyn ExchangeType>,
    /// A delayed exchange's hidden queue, where its delayed messages wait (set by the vhost; not
    /// in the vhost's queues, so not routable, consumable or visible by name).
    pub held: Option<QueueRef>,
    /// A deduplication exchange's cache (its own lock, taken under the topology read lock;
    /// only its journal is locked under it).
    pub dedup: Option<Mutex<crate::dedup::Cache>>,
    /// `publish_in`/`publish_out`, flushed into by publishers ([`crate::exchange_stats`]).
    pub stats: crate::exchange_stats::ExchangeStats,
}

impl Exchange {
    /// An exchange of the type whose empty `index` is given (see [`new_index`]).
    pub fn new(
        name: ShortStr,
        index: Box<dyn ExchangeType>,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let alternate = argument_alternate(&arguments);
        // Checked by `index_for` before the exchange is made.
        let dedup = (index.name() == dedup::NAME)
            .then(|| dedup::parse_args(&arguments).ok())
            .flatten()
            .map(|args| dedup::cache_for(args, &String::from_utf8_lossy(name.as_bytes())));
        Exchange {
            name,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            policy: Applied::default(),
            bindings: HashMap::new(),
            index,
            held: None,
            dedup,
            stats: Default::default(),
        }
    }

    /// Applies the exchange's policies: an `alternate-exchange` argument wins over the policy's.
    pub fn apply_policy(&mut self, applied: Applied) {
        self.alternate = argument_alternate(&self.arguments).or_else(|| applied.alternate_exchange());
        self.policy = applied;
    }

    /// The exchange's type name (`direct`, `topic`, …).
    pub fn type_name(&self) -> &'static str {
        self.index.name()
    }

    /// See [`ExchangeType::routes_by_headers`].
    pub fn routes_by_headers(&self) -> bool {
        self.index.routes_by_headers()
    }

    /// See [`ExchangeType::memoizable`].
    pub fn memoizable(&self) -> bool {
        self.index.memoizable()
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Whether this binding exists.
    pub fn is_bound(&self, dest: &Destination, key: &ShortStr, args: &FieldTable) -> bool {
        self.bindings.get(&(dest.clone(), key.clone())).is_some_and(|variants| variants.contains(args))
    }

    /// What [`bind`](Self::bind) would do, changing nothing: 406 for arguments the type
    /// refuses, `Ok(false)` if the binding exists already.
    pub fn check_bind(&self, dest: &Destination, key: &ShortStr, args: &FieldTable) -> Result<bool, BrokerError> {
        self.index.check_binding(args).map_err(BrokerError::PreconditionFailed)?;
        Ok(!self.is_bound(dest, key, args))
    }

    /// Adds a binding; `Ok(false)` if it already existed.
    pub fn bind(&mut self, dest: &Destination, key: &ShortStr, args: &FieldTable) -> Result<bool, BrokerError> {
        if !self.check_bind(dest, key, args)? {
            return Ok(false);
        }
        let variants = self.bindings.entry((dest.clone(), key.clone())).or_default();
        if variants.is_empty() || self.index.indexes_arguments() {
            self.index.bind(dest, key, args);
        }
        variants.push(args.clone());
        Ok(true)
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&mut self, dest: &Destination, key: &ShortStr, args: &FieldTable) -> bool {
        let map_key = (dest.clone(), key.clone());
        let Some(variants) = self.bindings.get_mut(&map_key) else { return false };
        let Some(pos) = variants.iter().position(|a| a == args) else { return false };
        variants.remove(pos);
        let last = variants.is_empty();
        if last {
            self.bindings.remove(&map_key);
        }
        if last || self.index.indexes_arguments() {
            self.index.unbind(dest, key, args);
        }
        true
    }

    /// Every binding: (destination, key, arguments).
    pub fn bindings(&self) -> impl Iterator<Item = (&Destination, &ShortStr, &FieldTable)> {
        self.bindings.iter().flat_map(|((d, k), args)| args.iter().map(move |a| (d, k, a)))
    }

    /// The hidden queue to hold a message with `headers` in, if this is a delayed exchange and
    /// the message's `x-delay` delays it.
    pub fn holds(&self, headers: Option<&FieldTable>) -> Option<&QueueRef> {
        self.held.as_ref().filter(|_| delayed::delay_ms(headers).is_some())
    }

    /// Whether a deduplication exchange drops a message with `headers` at `now_ms` as a
    /// duplicate (else it caches its key); false for other types.
    pub fn is_duplicate(&self, headers: Option<&FieldTable>, now_ms: u64) -> bool {
        let Some(cache) = &self.dedup else { return false };
        cache.lock().is_duplicate(headers, now_ms, &String::from_utf8_lossy(self.name.as_bytes()))
    }

    /// See [`ExchangeType::route`].
    pub fn route(&self, routing_keys: &[&[u8]], headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        self.index.route(routing_keys, headers, out);
    }
}

#[cfg(test)]
mod tests {
    use lepus_protocol::FieldValue;

    use super::*;

    const TYPES: [&str; 4] = ["direct", "fanout", "topic", "headers"];

    fn s(text: &str) -> ShortStr {
        ShortStr::try_from(text).expect("short string")
    }

    fn exchange(type_name: &str) -> Exchange {
        let index = new_index(type_name).expect("a registered type");
        Exchange::new(s("x"), index, false, false, false, FieldTable::new())
    }

    fn routes_to_q(x: &Exchange, key: &str) -> bool {
        let mut out = Vec::new();
        x.route(&[key.as_bytes()], Some(&FieldTable::new()), &mut out);
        out.contains(&Destination::Queue(s("q")))
    }

    #[test]
    fn the_registry_knows_each_type_by_its_name() {
        for type_name in TYPES {
            assert_eq!(new_index(type_name).map(|index| index.name()), Some(type_name));
        }
        for unknown in ["x-unknown", "Direct", ""] {
            assert!(new_index(unknown).is_none(), "{unknown:?}");
        }
    }

    /// A destination bound with two keys, or with two argument variants of one key, is still
    /// routed to after one of them is unbound, and no longer after both are.
    #[test]
    fn a_destination_stays_bound_until_its_last_binding_goes() {
        let q = Destination::Queue(s("q"));
        let mut other = FieldTable::new();
        other.insert(s("x-other"), FieldValue::I32(1));
        let none = FieldTable::new();
        for type_name in TYPES {
            let mut x = exchange(type_name);
            for (key, args) in [("a", &none), ("b", &none), ("b", &other)] {
                assert_eq!(x.bind(&q, &s(key), args), Ok(true), "{type_name}");
                assert_eq!(x.bind(&q, &s(key), args), Ok(false), "{type_name}");
            }
            assert!(x.unbind(&q, &s("a"), &none));
            assert!(!x.unbind(&q, &s("a"), &none));
            assert!(routes_to_q(&x, "b"), "{type_name}: bound by key b");
            assert!(x.unbind(&q, &s("b"), &none));
            assert!(routes_to_q(&x, "b"), "{type_name}: bound by key b with other arguments");
            assert!(x.unbind(&q, &s("b"), &other));
            assert!(!routes_to_q(&x, "b"), "{type_name}: unbound");
            assert_eq!(x.binding_count(), 0);
        }
    }
}
