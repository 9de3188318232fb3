//! Validation of the `x-` arguments of `queue.declare`, and the equivalence check on
//! redeclaration, with RabbitMQ 3.x's rules and reply texts.

use lepus_protocol::{FieldTable, FieldValue, ShortStr};

use crate::error::BrokerError;
use crate::queue::{DeadLetterTarget, Departure, Overflow, QueueLimits};

/// The queue types clients declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    /// Accepted with RabbitMQ's single-node declaration rules; behaves as a durable classic
    /// queue until replication exists.
    Quorum,
}

/// RabbitMQ's name for a field type, as it appears in its error texts.
pub fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::Bytes(_) => "binary",
    }
}

/// The value as RabbitMQ prints it in an inequivalence error.
fn describe_value(v: Option<&FieldValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!("the value '{}' of type '{}'", shown_value(v), type_name(v)),
    }
}

fn shown_value(v: &FieldValue) -> String {
    match v {
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        other => other.as_i64().map(|i| i.to_string()).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// Integer types RabbitMQ accepts for numeric arguments (not timestamps, floats or strings).
fn int_arg(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::Timestamp(_) => None,
        other => other.as_i64(),
    }
}

/// What `queue.declare`'s arguments mean for the queue.
#[derive(Debug, Clone)]
pub struct QueueArgs {
    pub queue_type: QueueType,
    /// Length limits, TTLs, expiry and dead-lettering, which the queue applies itself.
    pub limits: QueueLimits,
}

/// RabbitMQ's longest expiry (`x-message-ttl`, `x-expires`, `expiration`): ten years, in
/// milliseconds.
pub const EXPIRY_MAX_MS: u64 = 315_360_000_000;

/// Why a message's `expiration` property is refused (RabbitMQ's 406 text after the value).
pub fn parse_expiration(text: &[u8]) -> Result<u64, String> {
    let s = String::from_utf8_lossy(text);
    // As Erlang's string:to_integer: an optional sign, digits, and nothing after them.
    let digits_at = usize::from(s.starts_with(['+', '-']));
    let digits_end = s[digits_at..].find(|c: char| !c.is_ascii_digit()).map_or(s.len(), |i| i + digits_at);
    if digits_end == digits_at {
        return Err("no_integer".into());
    }
    if digits_end < s.len() {
        return Err(format!("{{leftover_string,\"{}\"}}", &s[digits_end..]));
    }
    let Ok(n) = s[..digits_end].parse::<i128>() else {
        return Err(format!("{{value_too_large,{}}}", &s[..digits_end]));
    };
    if n < 0 {
        return Err(format!("{{value_negative,{n}}}"));
    }
    if n > EXPIRY_MAX_MS as i128 {
        return Err(format!("{{value_too_large,{n}}}"));
    }
    Ok(n as u64)
}

/// Validates the arguments of a new queue. `what` is `queue 'q' in vhost '/'`.
pub fn parse_queue_args(args: &FieldTable, what: &str) -> Result<QueueArgs, BrokerError> {
    let invalid = |key: &str, reason: String| {
        BrokerError::PreconditionFailed(format!("invalid arg '{key}' for {what}: {reason}"))
    };
    let unacceptable = |key: &str, v: &FieldValue| invalid(key, format!("{{unacceptable_type,{}}}", type_name(v)));
    let mut out = QueueArgs { queue_type: QueueType::Classic, limits: QueueLimits::default() };
    let mut dead_letter_key = None;
    for (key, value) in args.iter() {
        let key = key.as_str().unwrap_or("");
        let non_neg = |v: &FieldValue| -> Result<u64, BrokerError> {
            let n = int_arg(v).ok_or_else(|| unacceptable(key, v))?;
            u64::try_from(n).map_err(|_| invalid(key, format!("{{value_negative,{n}}}")))
        };
        // RabbitMQ 3.10 words a wrong type differently for these.
        let integer = |v: &FieldValue| -> Result<u64, BrokerError> {
            if int_arg(v).is_none() {
                return Err(invalid(key, format!("\"expected integer, got {}\"", type_name(v))));
            }
            non_neg(v)
        };
        let timer = |v: &FieldValue| -> Result<u64, BrokerError> {
            let n = integer(v)?;
            if n > EXPIRY_MAX_MS {
                return Err(invalid(key, format!("{{value_too_large,{n}}}")));
            }
            Ok(n)
        };
        let string = |v: &FieldValue| -> Result<String, BrokerError> {
            match v {
                FieldValue::LongStr(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                other => Err(unacceptable(key, other)),
            }
        };
        match key {
            "x-expires" => {
                let n = timer(value)?;
                if n == 0 {
                    return Err(invalid(key, "{value_zero,0}".into()));
                }
                out.limits.expires_ms = Some(n);
            }
            "x-message-ttl" => out.limits.message_ttl_ms = Some(timer(value)?),
            "x-max-length" => out.limits.max_length = Some(non_neg(value)?),
            "x-delivery-limit" => out.limits.delivery_limit = Some(non_neg(value)?),
            "x-max-length-bytes" => out.limits.max_length_bytes = Some(non_neg(value)?),
            // Read where it applies (`consumer_timeout_ms`); not part of the equivalence
            // check (RabbitMQ reads it as a queue argument or policy, 3.12 on, and never
            // compares it on redeclaration).
            "x-consumer-timeout" => {
                non_neg(value)?;
            }
            // Read where it applies (`consumer_timeout_action`); compared on redeclaration.
            "x-consumer-timeout-action" => {
                let text = string(value)?;
                if ConsumerTimeoutAction::parse(&text).is_none() {
                    return Err(invalid(key, format!("{{unknown_consumer_timeout_action,<<\"{text}\">>}}")));
                }
            }
            "x-max-in-memory-length" | "x-max-in-memory-bytes" | "x-stream-max-segment-size-bytes" => {
                non_neg(value)?;
            }
            "x-max-priority" => {
                let n = integer(value)?;
                if n > 255 {
                    return Err(invalid(key, format!("{{max_value_exceeded,{n}}}")));
                }
                out.limits.max_priority = Some(n as u8);
            }
            "x-dead-letter-exchange" => {
                let exchange = short(key, value).ok_or_else(|| unacceptable(key, value))??;
                out.limits.departure = Some(Departure::DeadLetter(DeadLetterTarget { exchange, routing_key: None }));
            }
            "x-dead-letter-routing-key" => {
                dead_letter_key = Some(short(key, value).ok_or_else(|| unacceptable(key, value))??);
            }
            "x-overflow" => {
                out.limits.overflow = Some(match string(value)?.as_str() {
                    "drop-head" => Overflow::DropHead,
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    _ => return Err(invalid(key, "invalid_overflow".into())),
                });
            }
            "x-queue-mode" => match string(value)?.as_str() {
                // Accepted and ignored: queues page to disk by themselves (RabbitMQ 3.x accepts it).
                "default" | "lazy" => {}
                other => return Err(invalid(key, format!("{{unsupported_mode,<<\"{other}\">>}}"))),
            },
            // The deduplication plugin's queue argument: a boolean (Lepus refuses other types,
            // which the plugin reads as true or false by Elixir's truthiness).
            "x-single-active-consumer" | "x-message-deduplication" if !matches!(value, FieldValue::Bool(_)) => {
                return Err(unacceptable(key, value));
            }
            "x-queue-type" => {
                out.queue_type = match string(value)?.as_str() {
                    "classic" => QueueType::Classic,
                    "quorum" => QueueType::Quorum,
                    "stream" => {
                        return Err(invalid(key, "stream queues are not supported by Lepus yet".into()));
                    }
                    other => return Err(invalid(key, format!("{{unsupported_queue_type,<<\"{other}\">>}}"))),
                }
            }
            "x-quorum-initial-group-size" | "x-initial-cluster-size" => {
                let n = non_neg(value)?;
                if n == 0 {
                    return Err(invalid(key, "{value_zero,0}".into()));
                }
            }
            _ => {}
        }
    }
    // Deliveries are counted by quorum queues only (classic ones ignore `x-delivery-limit`).
    out.limits.count_deliveries = out.queue_type == QueueType::Quorum;
    if !out.limits.count_deliveries {
        out.limits.delivery_limit = None;
    }
    if let Some(routing_key) = dead_letter_key {
        // RabbitMQ refuses a dead-letter routing key without a dead-letter exchange.
        let Some(Departure::DeadLetter(target)) = out.limits.departure.as_mut() else {
            return Err(invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined".into()));
        };
        target.routing_key = Some(routing_key);
    }
    Ok(out)
}

/// An exchange name or routing key from a string argument, byte for byte (at most 255);
/// `None` if the argument is not a string.
fn short(key: &str, value: &FieldValue) -> Option<Result<ShortStr, BrokerError>> {
    let FieldValue::LongStr(bytes) = value else { return None };
    Some(
        ShortStr::from_bytes(bytes.clone())
            .ok_or_else(|| BrokerError::PreconditionFailed(format!("invalid arg '{key}': too long"))),
    )
}

/// `x-single-active-consumer: true`: the queue serves one consumer at a time.
pub fn single_active_consumer(args: &FieldTable) -> bool {
    matches!(args.get("x-single-active-consumer"), Some(FieldValue::Bool(true)))
}

/// The type of a (validated) queue: `x-queue-type`, classic without it.
pub fn queue_type(args: &FieldTable) -> QueueType {
    match args.get("x-queue-type") {
        Some(v) if v.as_str() == Some("quorum") => QueueType::Quorum,
        _ => QueueType::Classic,
    }
}

/// RabbitMQ's name for a queue type in metrics labels (`queue_type`).
pub fn queue_type_label(t: QueueType) -> &'static str {
    match t {
        QueueType::Classic => "rabbit_classic_queue",
        QueueType::Quorum => "rabbit_quorum_queue",
    }
}

/// `x-message-deduplication: true`: the queue refuses a message whose `x-deduplication-header`
/// a message in it carries (see [`crate::dedup`]).
pub fn message_deduplication(args: &FieldTable) -> bool {
    matches!(args.get("x-message-deduplication"), Some(FieldValue::Bool(true)))
}

/// `x-consumer-timeout` of a (validated) queue: `Some(0)` turns the timeout off for the
/// queue, `None` leaves the broker's `consumer_timeout`.
pub fn consumer_timeout_ms(args: &FieldTable) -> Option<u64> {
    args.get("x-consumer-timeout").and_then(int_arg).map(|n| u64::try_from(n).unwrap_or(0))
}

/// What happens when a delivery from a queue stays unacknowledged past its consumer timeout
/// (`x-consumer-timeout-action`, policy key `consumer-timeout-action`; Lepus's own, RabbitMQ
/// knows only the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerTimeoutAction {
    /// RabbitMQ's: the channel is closed with 406 and its deliveries are requeued.
    #[default]
    CloseChannel,
    /// Only the consumer is cancelled; its unacknowledged deliveries from the queue are
    /// requeued and the channel stays open.
    CancelAndRequeue,
    /// As `CancelAndRequeue`, but its deliveries are dead-lettered (reason `rejected`) or,
    /// without a dead-letter exchange, dropped.
    CancelAndDeadLetter,
}

impl ConsumerTimeoutAction {
    /// The action a value names (`close-channel`, `cancel-and-requeue`,
    /// `cancel-and-dead-letter`).
    pub fn parse(text: &str) -> Option<ConsumerTimeoutAction> {
        match text {
            "close-channel" => Some(ConsumerTimeoutAction::CloseChannel),
            "cancel-and-requeue" => Some(ConsumerTimeoutAction::CancelAndRequeue),
            "cancel-and-dead-letter" => Some(ConsumerTimeoutAction::CancelAndDeadLetter),
            _ => None,
        }
    }
}

/// `x-consumer-timeout-action` of a (validated) queue; `None` when it has none.
pub fn consumer_timeout_action(args: &FieldTable) -> Option<ConsumerTimeoutAction> {
    match args.get("x-consumer-timeout-action") {
        Some(FieldValue::LongStr(b)) => std::str::from_utf8(b).ok().and_then(ConsumerTimeoutAction::parse),
        _ => None,
    }
}

/// Arguments whose value must match on redeclaration (RabbitMQ 3.x; `x-queue-mode` is left
/// out so that clients that add or drop `lazy` keep working).
const EQUIVALENT_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
    "x-consumer-timeout-action",
];

/// The equivalence check of `queue.declare` against an existing queue's arguments.
pub fn assert_args_equivalent(current: &FieldTable, received: &FieldTable, what: &str) -> Result<(), BrokerError> {
    for key in EQUIVALENT_ARGS {
        let (c, r) = (current.get(key), received.get(key));
        let same = match (c, r) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b || (int_arg(a).is_some() && int_arg(a) == int_arg(b)),
            _ => false,
        };
        if !same {
            // RabbitMQ names the types only when they differ (or a side is missing).
            let (received, current) = match (r, c) {
                (Some(rv), Some(cv)) if type_name(rv) == type_name(cv) => {
                    (format!("'{}'", shown_value(rv)), format!("'{}'", shown_value(cv)))
                }
                _ => (describe_value(r), describe_value(c)),
            };
            return Err(BrokerError::PreconditionFailed(format!(
                "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHAT: &str = "queue 'q' in vhost '/'";

    fn t(key: &'static str, v: FieldValue) -> FieldTable {
        FieldTable::new().with(key, v)
    }

    #[test]
    fn valid_arguments_parse() {
        let args = FieldTable::new()
            .with("x-max-length", FieldValue::I32(10))
            .with("x-message-ttl", FieldValue::I64(1000))
            .with("x-overflow", "reject-publish")
            .with("x-queue-mode", "lazy")
            .with("x-queue-type", "quorum")
            .with("x-max-priority", FieldValue::U8(9));
        let parsed = parse_queue_args(&args, WHAT).unwrap();
        assert_eq!(parsed.limits.max_length, Some(10));
        assert_eq!(parsed.limits.overflow, Some(Overflow::RejectPublish));
        assert_eq!(parsed.queue_type, QueueType::Quorum);
        assert_eq!((parsed.limits.message_ttl_ms, parsed.limits.max_priority), (Some(1000), Some(9)));
    }

    #[test]
    fn invalid_arguments_get_rabbitmq_texts() {
        let cases = [
            (
                t("x-max-length", "10".into()),
                "invalid arg 'x-max-length' for queue 'q' in vhost '/': {unacceptable_type,longstr}",
            ),
            (
                t("x-max-length", FieldValue::I32(-1)),
                "invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}",
            ),
            (t("x-expires", FieldValue::I32(0)), "invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"),
            (
                t("x-max-priority", FieldValue::I32(256)),
                "invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}",
            ),
            (
                t("x-queue-type", "fancy".into()),
                "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unsupported_queue_type,<<\"fancy\">>}",
            ),
            (
                t("x-overflow", "explode".into()),
                "invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow",
            ),
            (
                t("x-consumer-timeout", FieldValue::I32(-5)),
                "invalid arg 'x-consumer-timeout' for queue 'q' in vhost '/': {value_negative,-5}",
            ),
            (
                t("x-consumer-timeout", "60000".into()),
                "invalid arg 'x-consumer-timeout' for queue 'q' in vhost '/': {unacceptable_type,longstr}",
            ),
            (
                t("x-consumer-timeout-action", "explode".into()),
                "invalid arg 'x-consumer-timeout-action' for queue 'q' in vhost '/': \
                 {unknown_consumer_timeout_action,<<\"explode\">>}",
            ),
            (
                t("x-consumer-timeout-action", FieldValue::I32(1)),
                "invalid arg 'x-consumer-timeout-action' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
            ),
            (
                t("x-single-active-consumer", FieldValue::I32(1)),
                "invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {unacceptable_type,signedint}",
            ),
            (
                t("x-message-deduplication", "true".into()),
                "invalid arg 'x-message-deduplication' for queue 'q' in vhost '/': {unacceptable_type,longstr}",
            ),
        ];
        let more = [
            (
                t("x-message-ttl", "10".into()),
                "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
            ),
            (
                t("x-dead-letter-routing-key", "rk".into()),
                "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined",
            ),
        ];
        for (args, text) in cases.into_iter().chain(more) {
            assert_eq!(parse_queue_args(&args, WHAT).unwrap_err(), BrokerError::PreconditionFailed(text.into()));
        }
        assert!(parse_queue_args(&t("x-queue-type", "stream".into()), WHAT).is_err());
    }

    #[test]
    fn expirations_parse_as_rabbitmq_reads_them() {
        assert_eq!(parse_expiration(b"0"), Ok(0));
        assert_eq!(parse_expiration(b"+5"), Ok(5));
        assert_eq!(parse_expiration(b"05"), Ok(5));
        assert_eq!(parse_expiration(b"315360000000"), Ok(EXPIRY_MAX_MS));
        assert_eq!(parse_expiration(b"abc"), Err("no_integer".into()));
        assert_eq!(parse_expiration(b""), Err("no_integer".into()));
        assert_eq!(parse_expiration(b" 5"), Err("no_integer".into()));
        assert_eq!(parse_expiration(b"-1"), Err("{value_negative,-1}".into()));
        assert_eq!(parse_expiration(b"1.5"), Err("{leftover_string,\".5\"}".into()));
        assert_eq!(parse_expiration(b"315360000001"), Err("{value_too_large,315360000001}".into()));
    }

    #[test]
    fn equivalence_compares_values_across_integer_types() {
        let a = t("x-max-length", FieldValue::I32(10));
        assert!(assert_args_equivalent(&a, &t("x-max-length", FieldValue::I64(10)), WHAT).is_ok());
        let err = assert_args_equivalent(&a, &FieldTable::new(), WHAT).unwrap_err();
        assert_eq!(
            err,
            BrokerError::PreconditionFailed(
                "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '10' of type 'signedint'".into()
            )
        );
        // x-queue-mode may differ.
        assert!(assert_args_equivalent(&t("x-queue-mode", "lazy".into()), &FieldTable::new(), WHAT).is_ok());
        // So may x-consumer-timeout (RabbitMQ does not compare it); x-single-active-consumer not.
        let timeout = t("x-consumer-timeout", FieldValue::I32(60_000));
        assert!(assert_args_equivalent(&timeout, &FieldTable::new(), WHAT).is_ok());
        let sac = t("x-single-active-consumer", FieldValue::Bool(true));
        assert!(assert_args_equivalent(&sac, &FieldTable::new(), WHAT).is_err());
    }

    #[test]
    fn single_active_consumer_and_consumer_timeout_are_read() {
        assert!(single_active_consumer(&t("x-single-active-consumer", FieldValue::Bool(true))));
        assert!(!single_active_consumer(&t("x-single-active-consumer", FieldValue::Bool(false))));
        assert!(!single_active_consumer(&FieldTable::new()));
        let timeout = t("x-consumer-timeout", FieldValue::I64(60_000));
        assert!(parse_queue_args(&timeout, WHAT).is_ok());
        assert_eq!(consumer_timeout_ms(&timeout), Some(60_000));
        assert_eq!(consumer_timeout_ms(&t("x-consumer-timeout", FieldValue::U16(0))), Some(0));
        assert_eq!(consumer_timeout_ms(&FieldTable::new()), None);
    }

    #[test]
    fn consumer_timeout_actions_are_read_and_compared() {
        let requeue = t("x-consumer-timeout-action", "cancel-and-requeue".into());
        assert!(parse_queue_args(&requeue, WHAT).is_ok());
        assert_eq!(consumer_timeout_action(&requeue), Some(ConsumerTimeoutAction::CancelAndRequeue));
        let dead_letter = t("x-consumer-timeout-action", "cancel-and-dead-letter".into());
        assert_eq!(consumer_timeout_action(&dead_letter), Some(ConsumerTimeoutAction::CancelAndDeadLetter));
        assert_eq!(consumer_timeout_action(&FieldTable::new()), None);
        assert!(assert_args_equivalent(&requeue, &requeue, WHAT).is_ok());
        let err = assert_args_equivalent(&requeue, &dead_letter, WHAT).unwrap_err();
        assert_eq!(
            err,
            BrokerError::PreconditionFailed(
                "inequivalent arg 'x-consumer-timeout-action' for queue 'q' in vhost '/': received \
                 'cancel-and-dead-letter' but current is 'cancel-and-requeue'"
                    .into()
            )
        );
        assert!(assert_args_equivalent(&requeue, &FieldTable::new(), WHAT).is_err());
    }
}
