//! The delayed message exchange type (`x-delayed-message`, RabbitMQ's
//! rabbitmq_delayed_message_exchange plugin): an exchange that routes as the type its
//! `x-delayed-type` argument names (direct, fanout, topic, headers), except that a message with
//! a positive `x-delay` header is held that many milliseconds first and then routed through the
//! exchange with the bindings current then.
//!
//! This module is the routing side: the inner type (its bindings and routes) and the reading of
//! `x-delay`. Holding is the vhost's and the queue's: each delayed exchange has a hidden queue
//! whose messages expire at their delay and are then released into the exchange (see
//! [`crate::queue::Departure::Release`] and [`release`]).
//!
//! The plugin's rules, kept here: `x-delayed-type` must be a string naming an exchange type other
//! than `x-delayed-message` (406 otherwise, an unknown name 503); `x-delay` counts if it is an
//! integer, a string of one, or a floating-point number (truncated), and delays only if it is
//! above 0 and at most 2^32 - 1 ms (Erlang's longest timer); anything else routes at once. A
//! released message's `x-delay` becomes the negated delay, so it is not held again on its way.

use std::sync::Arc;

use bytes::Bytes;
use lepus_protocol::{FieldTable, FieldValue, ShortStr};

use super::{Destination, ExchangeType};
use crate::error::BrokerError;
use crate::headers::MessageHeaders;
use crate::message::{Message, MessageRef};
use crate::queue::QueueRef;
use crate::vhost::VHost;

pub const NAME: &str = "x-delayed-message";

/// The longest delay (2^32 - 1 ms, about 49.7 days); a longer one routes at once, as in the plugin.
pub const DELAY_MAX_MS: u64 = 4_294_967_295;

/// A delayed exchange's routing: its inner type's, whole.
#[derive(Debug)]
pub struct Delayed {
    inner: Box<dyn ExchangeType>,
}

impl Delayed {
    /// The index for a delayed exchange declared with `arguments`: the plugin's checks of
    /// `x-delayed-type`, with its reply texts.
    pub fn new(arguments: &FieldTable) -> Result<Delayed, BrokerError> {
        let Some(inner) = arguments.get("x-delayed-type").and_then(FieldValue::as_bytes) else {
            return Err(BrokerError::PreconditionFailed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
            ));
        };
        if inner == NAME.as_bytes() {
            return Err(BrokerError::PreconditionFailed(
                "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".into(),
            ));
        }
        let name = String::from_utf8_lossy(inner);
        let inner = super::new_index(&name).ok_or_else(|| super::unknown_type(&name))?;
        Ok(Delayed { inner })
    }

    /// The type it routes as.
    pub fn inner_name(&self) -> &'static str {
        self.inner.name()
    }
}

impl ExchangeType for Delayed {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_binding(&self, arguments: &FieldTable) -> Result<(), String> {
        self.inner.check_binding(arguments)
    }

    fn indexes_arguments(&self) -> bool {
        self.inner.indexes_arguments()
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

    /// Whether a message is held depends on its `x-delay` header: never cached or memoized.
    fn routes_by_headers(&self) -> bool {
        true
    }
}

/// The `x-delay` of a message with `headers`, as the plugin reads it (3.10's version): any
/// integer type, a string of a decimal integer, a float or decimal truncated; `None` for
/// anything else or no header.
pub fn x_delay(headers: Option<&FieldTable>) -> Option<i64> {
    let value = headers?.get("x-delay")?;
    match value {
        FieldValue::I8(_)
        | FieldValue::U8(_)
        | FieldValue::I16(_)
        | FieldValue::U16(_)
        | FieldValue::I32(_)
        | FieldValue::U32(_)
        | FieldValue::I64(_) => value.as_i64(),
        FieldValue::LongStr(text) => std::str::from_utf8(text).ok()?.parse().ok(),
        FieldValue::F32(f) => truncate(f64::from(*f)),
        FieldValue::F64(f) => truncate(*f),
        FieldValue::Decimal { scale, value } => Some(i64::from(*value) / 10i64.checked_pow(u32::from(*scale))?),
        _ => None,
    }
}

fn truncate(f: f64) -> Option<i64> {
    f.is_finite().then(|| f.trunc() as i64)
}

/// How long a message with `headers` is held: its `x-delay` if above 0 and at most
/// [`DELAY_MAX_MS`]; `None` routes it at once.
pub fn delay_ms(headers: Option<&FieldTable>) -> Option<u64> {
    x_delay(headers).filter(|&d| d > 0 && d as u64 <= DELAY_MAX_MS).map(|d| d as u64)
}

/// How long the message itself says it is to be held (read from its properties), 0 if not.
pub fn message_delay_ms(message: &Message) -> u64 {
    let headers = message.properties().ok().and_then(|p| p.headers);
    delay_ms(headers.as_ref()).unwrap_or(0)
}

/// Releases messages held by `held` (a delayed exchange's hidden queue) whose delay has passed:
/// each goes through its exchange, as the exchange's inner type with its current bindings,
/// with `x-delay` negated, into the queues reached (`now_ms` stamps persistent ones). Run after
/// the hidden queue's lock is released, as dead letters are.
pub fn release(vhost: &VHost, held: &QueueRef, messages: Vec<MessageRef>, now_ms: u64) {
    let mut queues: Vec<QueueRef> = Vec::new();
    for message in messages {
        let Ok(mut props) = message.properties() else {
            tracing::warn!(exchange = %held.name.to_string().escape_debug(), "delayed message with unreadable properties dropped");
            continue;
        };
        let mut headers = props.headers.take().unwrap_or_default();
        if let Some(delay) = x_delay(Some(&headers)) {
            let negated = i64::saturating_neg(delay);
            let value = i32::try_from(negated).map_or(FieldValue::I64(negated), FieldValue::I32);
            headers.insert(ShortStr::from_static("x-delay"), value);
        }
        let keys: Vec<Bytes> = std::iter::once(Bytes::copy_from_slice(message.routing_key()))
            .chain(crate::dead_letter::cc_keys(&headers))
            .chain(message.bcc_keys().iter().cloned())
            .collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        props.headers = Some(headers);
        let released = Message::with_properties(message.exchange(), message.routing_key(), &props, message.body())
            .with_bcc_keys(message.bcc_keys().to_vec());
        queues.clear();
        let Some(headers) = props.headers.as_ref() else { continue };
        if vhost.route_released(held, &key_refs, MessageHeaders::Decoded(headers), &mut queues).is_err() {
            continue;
        }
        let released = Arc::new(released);
        let stamp_ms = if released.is_persistent() { now_ms } else { 0 };
        for q in &queues {
            q.publish_stamped(released.clone(), stamp_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: FieldValue) -> FieldTable {
        FieldTable::new().with("x-delay", value)
    }

    #[test]
    fn x_delay_is_read_as_the_plugin_reads_it() {
        assert_eq!(delay_ms(None), None);
        assert_eq!(delay_ms(Some(&FieldTable::new())), None);
        assert_eq!(delay_ms(Some(&with(FieldValue::I32(500)))), Some(500));
        assert_eq!(delay_ms(Some(&with(FieldValue::I8(5)))), Some(5));
        assert_eq!(delay_ms(Some(&with(FieldValue::U32(u32::MAX)))), Some(DELAY_MAX_MS));
        assert_eq!(delay_ms(Some(&with(FieldValue::I64(DELAY_MAX_MS as i64 + 1)))), None, "beyond the longest timer");
        assert_eq!(delay_ms(Some(&with(FieldValue::I32(0)))), None);
        assert_eq!(delay_ms(Some(&with(FieldValue::I32(-10)))), None);
        assert_eq!(delay_ms(Some(&with(FieldValue::LongStr(Bytes::from_static(b"250"))))), Some(250));
        assert_eq!(delay_ms(Some(&with(FieldValue::LongStr(Bytes::from_static(b"soon"))))), None);
        assert_eq!(delay_ms(Some(&with(FieldValue::F64(99.9)))), Some(99));
        assert_eq!(delay_ms(Some(&with(FieldValue::Decimal { scale: 1, value: 1234 }))), Some(123));
        assert_eq!(delay_ms(Some(&with(FieldValue::Bool(true)))), None);
        assert_eq!(delay_ms(Some(&with(FieldValue::Timestamp(5)))), None);
    }
}
