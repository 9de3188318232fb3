//! The deduplication exchange type (`x-message-deduplication`, the
//! rabbitmq-message-deduplication plugin's): it routes as a fanout exchange, to every bound
//! destination whatever the routing key, except a message whose `x-deduplication-header` its
//! cache holds, which it routes nowhere (so a `mandatory` one is returned with 312 NO_ROUTE,
//! confirmed with an ack, and its alternate exchange takes it, as with the plugin).
//!
//! This module is the type and its declaration rules; the cache is [`crate::dedup::Cache`],
//! held by the exchange ([`super::Exchange::dedup`]) behind its own mutex, taken while routing
//! under the topology read lock (only a `disk` cache's journal is locked under it).
//!
//! The plugin's rules, kept here: `x-cache-size` is required, an integer above 0 (any integer
//! type, or a string of one); `x-cache-ttl` is optional, the same; `x-cache-persistence` is
//! `memory` (the default) or `disk`. Anything else is a 406 with the plugin's text. A larger
//! size than [`crate::dedup::CACHE_SIZE_MAX`] is lowered to it, with a log line.

use lepus_protocol::{FieldTable, FieldValue, ShortStr};
use parking_lot::Mutex;

use super::fanout::Fanout;
use super::{Destination, ExchangeType};
use crate::dedup::{CACHE_SIZE_MAX, Cache};
use crate::error::BrokerError;

pub const NAME: &str = "x-message-deduplication";

/// What a deduplication exchange's arguments set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheArgs {
    /// `x-cache-size`, as declared.
    pub size: u64,
    /// `x-cache-ttl`: how long an entry keeps unless its message says otherwise.
    pub ttl_ms: Option<u64>,
    /// `x-cache-persistence: disk`.
    pub disk: bool,
}

/// An integer above 0: any integer type, or a string of decimal digits.
fn positive(value: &FieldValue) -> Option<u64> {
    let n = match value {
        FieldValue::LongStr(text) => std::str::from_utf8(text).ok()?.parse::<i64>().ok()?,
        other => other.as_i64()?,
    };
    u64::try_from(n).ok().filter(|&n| n > 0)
}

/// Checks a deduplication exchange's arguments, with the plugin's reply texts.
pub fn parse_args(arguments: &FieldTable) -> Result<CacheArgs, BrokerError> {
    let refused = |text: &str| BrokerError::PreconditionFailed(text.into());
    let size = arguments
        .get("x-cache-size")
        .and_then(positive)
        .ok_or_else(|| refused("Missing or invalid argument, 'x-cache-size' must be an integer greater than 0"))?;
    let ttl_ms = match arguments.get("x-cache-ttl") {
        None => None,
        Some(value) => Some(
            positive(value)
                .ok_or_else(|| refused("Invalid argument, 'x-cache-ttl' must be an integer greater than 0"))?,
        ),
    };
    let disk = match arguments.get("x-cache-persistence").map(|v| v.as_bytes()) {
        None | Some(Some(b"memory")) => false,
        Some(Some(b"disk")) => true,
        Some(_) => {
            return Err(refused("Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'"));
        }
    };
    Ok(CacheArgs { size, ttl_ms, disk })
}

/// The cache of exchange `what` declared with `args` (its size lowered to the broker's
/// maximum, logged).
pub fn cache_for(args: CacheArgs, what: &str) -> Mutex<Cache> {
    if args.size > CACHE_SIZE_MAX {
        tracing::warn!(
            exchange = what,
            x_cache_size = args.size,
            limit = CACHE_SIZE_MAX,
            "x-cache-size above the broker's maximum: the cache holds the maximum"
        );
    }
    Mutex::new(Cache::new(args.size, args.ttl_ms))
}

/// A deduplication exchange's routing: a fanout's.
#[derive(Debug, Default)]
pub struct Dedup {
    inner: Fanout,
}

impl ExchangeType for Dedup {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self, dest: &Destination, key: &ShortStr, arguments: &FieldTable) {
        self.inner.bind(dest, key, arguments);
    }

    fn unbind(&mut self, dest: &Destination, key: &ShortStr, arguments: &FieldTable) {
        self.inner.unbind(dest, key, arguments);
    }

    fn route(&self, routing_keys: &[&[u8]], headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        self.inner.route(routing_keys, headers, out);
    }

    /// Whether a message is routed depends on its header and the cache: never cached or
    /// memoized, and the headers are decoded for it.
    fn routes_by_headers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn with(key: &'static str, value: FieldValue) -> FieldTable {
        FieldTable::new().with(key, value)
    }

    #[test]
    fn declaration_arguments_follow_the_plugin_s_rules() {
        let size = |v: FieldValue| parse_args(&with("x-cache-size", v));
        assert_eq!(size(FieldValue::I8(5)).map(|a| a.size), Ok(5));
        assert_eq!(size(FieldValue::LongStr(Bytes::from_static(b"10"))).map(|a| a.size), Ok(10));
        let missing = "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0";
        for bad in [FieldValue::I32(0), FieldValue::I32(-1), FieldValue::LongStr(Bytes::from_static(b"ten"))] {
            assert_eq!(size(bad), Err(BrokerError::PreconditionFailed(missing.into())));
        }
        assert_eq!(parse_args(&FieldTable::new()), Err(BrokerError::PreconditionFailed(missing.into())));
        let sized = || with("x-cache-size", FieldValue::I32(1));
        let ttl = parse_args(&sized().with("x-cache-ttl", FieldValue::I64(500))).map(|a| a.ttl_ms);
        assert_eq!(ttl, Ok(Some(500)));
        let bad_ttl = parse_args(&sized().with("x-cache-ttl", FieldValue::Bool(true)));
        let text = "Invalid argument, 'x-cache-ttl' must be an integer greater than 0";
        assert_eq!(bad_ttl, Err(BrokerError::PreconditionFailed(text.into())));
        assert_eq!(parse_args(&sized().with("x-cache-persistence", "disk")).map(|a| a.disk), Ok(true));
        assert_eq!(parse_args(&sized().with("x-cache-persistence", "memory")).map(|a| a.disk), Ok(false));
        let text = "Invalid argument, 'x-cache-persistence' must be either 'disk' or 'memory'";
        let bad = parse_args(&sized().with("x-cache-persistence", "tape"));
        assert_eq!(bad, Err(BrokerError::PreconditionFailed(text.into())));
    }
}
