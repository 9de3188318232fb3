//! Policies and operator policies, as RabbitMQ 3.10 has them (`rabbitmqctl set_policy` and
//! `set_operator_policy`): a named pattern over queue and exchange names, with a priority and a
//! definition of queue limits, dead-lettering and an alternate exchange.
//!
//! - **Matching.** A policy's pattern is a regular expression (the `regex` crate, with a size
//!   limit) searched in the whole name; `apply-to` restricts it to queues, exchanges or both. Of
//!   the policies that match an object the one of highest priority applies, and only that one;
//!   between equal priorities RabbitMQ's choice follows its internal table order (observed:
//!   `aa` over `bb`, `zz` over `mm`), so Lepus picks the name that sorts first. The same holds,
//!   separately, for operator policies.
//! - **Validation.** Definitions are checked with RabbitMQ's rules and texts: known keys in
//!   name order first, then any unknown ones, listed together.
//! - **Resolution** ([`Applied::queue_limits`]), checked key by key against RabbitMQ 3.10.8:
//!   for `max-length`, `max-length-bytes`, `message-ttl`, `expires` and `delivery-limit` the
//!   lowest of the queue's argument, the policy and the operator policy applies; for
//!   `overflow`, `dead-letter-exchange`, `dead-letter-routing-key`, `alternate-exchange`,
//!   `consumer-timeout` and `consumer-timeout-action` the argument wins over the policy. Operator policies may set only the
//!   numeric limits. [`Applied::effective_definition`] is the policy's definition merged with
//!   the operator policy's (the lower value where both set a key), as RabbitMQ reports it.
//!
//! A vhost keeps its policies with its topology and re-applies them to every queue and
//! exchange when one is set or cleared (see [`crate::vhost`]); a queue applies new limits at
//! once (see [`crate::queue::Queue::apply_policy`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use lepus_protocol::ShortStr;
use lepus_store::meta::PolicyRecord;
use regex::bytes::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::args::ConsumerTimeoutAction;
use crate::error::BrokerError;
use crate::queue::{DeadLetterTarget, Departure, Overflow, QueueLimits};

/// The longest pattern accepted (RabbitMQ has no limit; a name is at most 255 bytes).
pub const PATTERN_MAX_BYTES: usize = 4096;
/// The compiled size a pattern may reach (the `regex` crate's size limit).
pub const REGEX_SIZE_MAX: usize = 1 << 20;
/// Policies (and, separately, operator policies) one vhost may have.
pub const POLICIES_MAX: usize = 4096;
/// Policy names are AMQP short strings at most.
pub const NAME_MAX_BYTES: usize = 255;

/// User policies, or operator policies (RabbitMQ's `set_operator_policy`: only numeric limits,
/// merged with the user policy, the lower value winning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    Policy,
    Operator,
}

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl PolicyKind {
    /// What it is called in texts: `policy`, `operator policy`.
    pub fn noun(self) -> &'static str {
        match self {
            PolicyKind::Policy => "policy",
            PolicyKind::Operator => "operator policy",
        }
    }
}

impl ApplyTo {
    /// Parses `queues`, `exchanges` or `all`, with RabbitMQ's text for anything else.
    pub fn parse(text: &str) -> Result<ApplyTo, BrokerError> {
        match text {
            "queues" => Ok(ApplyTo::Queues),
            "exchanges" => Ok(ApplyTo::Exchanges),
            "all" => Ok(ApplyTo::All),
            other => Err(invalid(format!("apply-to '{other}' unrecognised; should be 'queues', 'exchanges' or 'all'"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }

    fn covers(self, target: Target) -> bool {
        matches!(
            (self, target),
            (ApplyTo::All, _) | (ApplyTo::Queues, Target::Queue) | (ApplyTo::Exchanges, Target::Exchange)
        )
    }
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Queue,
    Exchange,
}

/// A policy as set: what `set_policy` and the HTTP API take.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    pub name: String,
    pub pattern: String,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// A JSON object of definition keys (`max-length`, `dead-letter-exchange`, …).
    pub definition: Value,
}

/// The settings a definition makes, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definition {
    pub message_ttl_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    pub dead_letter_exchange: Option<ShortStr>,
    pub dead_letter_routing_key: Option<ShortStr>,
    pub delivery_limit: Option<u64>,
    pub alternate_exchange: Option<ShortStr>,
    /// `consumer-timeout` (RabbitMQ 3.12's key; 3.10 has none).
    pub consumer_timeout_ms: Option<u64>,
    /// `consumer-timeout-action` (Lepus's own; see [`ConsumerTimeoutAction`]).
    pub consumer_timeout_action: Option<ConsumerTimeoutAction>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub kind: PolicyKind,
    pub name: String,
    pub pattern: String,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// The definition as given, keys sorted (keys accepted and ignored included).
    pub definition: Map<String, Value>,
    pub settings: Definition,
    regex: Regex,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        (self.kind, &self.name, &self.pattern, self.apply_to, self.priority, &self.definition)
            == (other.kind, &other.name, &other.pattern, other.apply_to, other.priority, &other.definition)
    }
}

/// A validation failure, worded as RabbitMQ's (`Validation failed` and the reason, as its CLI
/// and HTTP API show them).
fn invalid(reason: impl fmt::Display) -> BrokerError {
    BrokerError::PreconditionFailed(format!("Validation failed\n\n{reason}\n"))
}

/// A JSON value as Erlang prints the term RabbitMQ decodes it to (`<<"5">>`, `5.0`, `true`).
fn term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{}\">>", s.escape_default()),
        Value::Array(items) => format!("[{}]", items.iter().map(term).collect::<Vec<_>>().join(",")),
        Value::Object(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", term(v))).collect();
            format!("[{}]", pairs.join(","))
        }
        other => other.to_string(),
    }
}

impl Policy {
    /// Validates `spec` (RabbitMQ's rules and texts).
    pub fn new(spec: PolicySpec) -> Result<Policy, BrokerError> {
        let PolicySpec { kind, name, pattern, apply_to, priority, definition } = spec;
        if name.is_empty() || name.len() > NAME_MAX_BYTES {
            return Err(invalid(format!("policy name must be 1 to {NAME_MAX_BYTES} bytes long")));
        }
        let regex = compile(&pattern)?;
        let Value::Object(definition) = definition else {
            return Err(invalid(format!("{} is not a valid policy definition", term(&definition))));
        };
        if definition.is_empty() {
            return Err(invalid("no policy provided"));
        }
        let definition: Map<String, Value> = definition.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
        let settings = validate(kind, &definition)?;
        Ok(Policy { kind, name, pattern, apply_to, priority, definition, settings, regex })
    }

    /// Whether the policy applies to an object of `target` kind named `name`.
    pub fn matches(&self, target: Target, name: &[u8]) -> bool {
        self.apply_to.covers(target) && self.regex.is_match(name)
    }

    /// The spec it was made from (to store it, or show it).
    pub fn spec(&self) -> PolicySpec {
        PolicySpec {
            kind: self.kind,
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            apply_to: self.apply_to,
            priority: self.priority,
            definition: Value::Object(self.definition.clone()),
        }
    }

    /// The stored form: pattern, apply-to, priority and definition as JSON.
    pub fn record_body(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "priority": self.priority,
            "definition": self.definition,
        });
        body.to_string().into_bytes()
    }

    /// The metadata record of this policy in `vhost`.
    pub fn record(&self, vhost: &str) -> PolicyRecord {
        PolicyRecord {
            vhost: vhost.to_owned(),
            operator: self.kind == PolicyKind::Operator,
            name: self.name.clone(),
            body: self.record_body(),
        }
    }

    /// A policy from its stored form (validated again).
    pub fn from_record(kind: PolicyKind, name: &str, body: &[u8]) -> Result<Policy, BrokerError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("stored policy unreadable: {e}")))?;
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(pattern), Some(apply_to), Some(priority), Some(definition)) =
            (text("pattern"), text("apply-to"), v.get("priority").and_then(Value::as_i64), v.get("definition"))
        else {
            return Err(invalid("stored policy incomplete"));
        };
        let apply_to = ApplyTo::parse(&apply_to)?;
        Policy::new(PolicySpec {
            kind,
            name: name.to_owned(),
            pattern,
            apply_to,
            priority,
            definition: definition.clone(),
        })
    }
}

fn compile(pattern: &str) -> Result<Regex, BrokerError> {
    if pattern.len() > PATTERN_MAX_BYTES {
        return Err(invalid(format!("pattern is longer than {PATTERN_MAX_BYTES} bytes")));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_MAX)
        .build()
        .map_err(|e| invalid(format!("pattern should be regular expression but is invalid: {e}")))
}

/// Keys a user policy may set; the operator policy's are [`OPERATOR_KEYS`].
const KEYS: &[&str] = &[
    "alternate-exchange",
    "consumer-timeout",
    "consumer-timeout-action",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "delivery-limit",
    "expires",
    "ha-mode",
    "ha-params",
    "ha-promote-on-failure",
    "ha-promote-on-shutdown",
    "ha-sync-batch-size",
    "ha-sync-mode",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "queue-mode",
];

/// Keys an operator policy may set (RabbitMQ 3.10's operator policy validators).
const OPERATOR_KEYS: &[&str] = &[
    "delivery-limit",
    "expires",
    "max-in-memory-bytes",
    "max-in-memory-length",
    "max-length",
    "max-length-bytes",
    "message-ttl",
];

/// Checks every key of `definition` (sorted) and reads the settings Lepus applies; mirroring
/// (`ha-*`), `queue-mode` and the in-memory limits are accepted and ignored (one node; queues
/// page by themselves).
fn validate(kind: PolicyKind, definition: &Map<String, Value>) -> Result<Definition, BrokerError> {
    let known = if kind == PolicyKind::Operator { OPERATOR_KEYS } else { KEYS };
    let mut out = Definition::default();
    for (key, value) in definition.iter().filter(|(k, _)| known.contains(&k.as_str())) {
        let bad = |what: &str| invalid(format!("{} is not a valid {what}", term(value)));
        let count = |what: &str| value.as_u64().ok_or_else(|| bad(what));
        let text = |what: &str| value.as_str().ok_or_else(|| bad(what));
        let short = |what: &str| {
            let s = value.as_str().ok_or_else(|| bad(what))?;
            ShortStr::try_from(s.to_owned()).map_err(|_| bad(what))
        };
        match key.as_str() {
            "message-ttl" => out.message_ttl_ms = Some(count("message TTL")?),
            "expires" => {
                let n = count("queue expiry")?;
                if n == 0 {
                    return Err(bad("queue expiry"));
                }
                out.expires_ms = Some(n);
            }
            "max-length" => out.max_length = Some(count("maximum length")?),
            "max-length-bytes" => out.max_length_bytes = Some(count("maximum length in bytes")?),
            "delivery-limit" => out.delivery_limit = Some(count("delivery limit")?),
            "consumer-timeout" => out.consumer_timeout_ms = Some(count("consumer timeout")?),
            "consumer-timeout-action" => {
                let action = ConsumerTimeoutAction::parse(text("consumer timeout action")?);
                out.consumer_timeout_action = Some(action.ok_or_else(|| bad("consumer timeout action"))?);
            }
            "max-in-memory-bytes" | "max-in-memory-length" => {
                count("maximum memory in bytes")?;
            }
            "overflow" => {
                out.overflow = Some(match text("overflow value")? {
                    "drop-head" => Overflow::DropHead,
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    _ => return Err(bad("overflow value")),
                })
            }
            "dead-letter-exchange" => out.dead_letter_exchange = Some(short("dead letter exchange name")?),
            "dead-letter-routing-key" => out.dead_letter_routing_key = Some(short("dead letter routing key")?),
            "alternate-exchange" => out.alternate_exchange = Some(short("alternate exchange name")?),
            "queue-mode" => {
                if !matches!(value.as_str(), Some("default" | "lazy")) {
                    return Err(bad("queue-mode value"));
                }
            }
            "ha-mode" => {
                if !matches!(value.as_str(), Some("all" | "exactly" | "nodes")) {
                    return Err(bad("ha-mode value"));
                }
            }
            _ => {
                // The rest of the mirroring keys, meaningless without `ha-mode`.
                if key.starts_with("ha-") && !definition.contains_key("ha-mode") {
                    return Err(invalid(
                        "ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown",
                    ));
                }
            }
        }
    }
    let unknown: Vec<(&String, &Value)> = definition.iter().filter(|(k, _)| !known.contains(&k.as_str())).collect();
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|(k, v)| format!("{{<<\"{k}\">>,{}}}", term(v))).collect();
        return Err(invalid(format!("[{}] are not recognised policy settings", list.join(","))));
    }
    Ok(out)
}

/// A vhost's policies and operator policies, by name.
#[derive(Debug, Default, Clone)]
pub struct Policies {
    by_kind: [BTreeMap<String, Arc<Policy>>; 2],
}

fn slot(kind: PolicyKind) -> usize {
    match kind {
        PolicyKind::Policy => 0,
        PolicyKind::Operator => 1,
    }
}

impl Policies {
    pub fn get(&self, kind: PolicyKind, name: &str) -> Option<&Arc<Policy>> {
        self.by_kind[slot(kind)].get(name)
    }

    /// Every policy of `kind`, by name.
    pub fn list(&self, kind: PolicyKind) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_kind[slot(kind)].values()
    }

    pub fn len(&self, kind: PolicyKind) -> usize {
        self.by_kind[slot(kind)].len()
    }

    /// Adds or replaces a policy; the one it replaced.
    pub fn put(&mut self, policy: Policy) -> Option<Arc<Policy>> {
        self.by_kind[slot(policy.kind)].insert(policy.name.clone(), Arc::new(policy))
    }

    pub fn remove(&mut self, kind: PolicyKind, name: &str) -> Option<Arc<Policy>> {
        self.by_kind[slot(kind)].remove(name)
    }

    /// The policy of `kind` that applies to the object: the highest priority among those that
    /// match, the first name between equals.
    fn winner(&self, kind: PolicyKind, target: Target, name: &[u8]) -> Option<&Arc<Policy>> {
        let mut best: Option<&Arc<Policy>> = None;
        for p in self.by_kind[slot(kind)].values().filter(|p| p.matches(target, name)) {
            if best.is_none_or(|b| p.priority > b.priority) {
                best = Some(p);
            }
        }
        best
    }

    /// What applies to a queue or exchange named `name`.
    pub fn applied(&self, target: Target, name: &[u8]) -> Applied {
        Applied {
            policy: self.winner(PolicyKind::Policy, target, name).cloned(),
            operator: self.winner(PolicyKind::Operator, target, name).cloned(),
        }
    }
}

/// The policy and operator policy applied to one queue or exchange.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub policy: Option<Arc<Policy>>,
    pub operator: Option<Arc<Policy>>,
}

impl PartialEq for Applied {
    fn eq(&self, other: &Applied) -> bool {
        let same = |a: &Option<Arc<Policy>>, b: &Option<Arc<Policy>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same(&self.policy, &other.policy) && same(&self.operator, &other.operator)
    }
}

/// The lowest of the values present.
fn lowest(values: [Option<u64>; 3]) -> Option<u64> {
    values.into_iter().flatten().min()
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.operator.is_none()
    }

    fn user(&self) -> Definition {
        self.policy.as_ref().map(|p| p.settings.clone()).unwrap_or_default()
    }

    fn op(&self) -> Definition {
        self.operator.as_ref().map(|p| p.settings.clone()).unwrap_or_default()
    }

    /// The queue's limits from its arguments' (`args`) and these policies (see the module doc).
    pub fn queue_limits(&self, args: &QueueLimits) -> QueueLimits {
        let (user, op) = (self.user(), self.op());
        let mut out = args.clone();
        out.max_length = lowest([args.max_length, user.max_length, op.max_length]);
        out.max_length_bytes = lowest([args.max_length_bytes, user.max_length_bytes, op.max_length_bytes]);
        out.message_ttl_ms = lowest([args.message_ttl_ms, user.message_ttl_ms, op.message_ttl_ms]);
        out.expires_ms = lowest([args.expires_ms, user.expires_ms, op.expires_ms]);
        if args.count_deliveries {
            out.delivery_limit = lowest([args.delivery_limit, user.delivery_limit, op.delivery_limit]);
        }
        out.overflow = args.overflow.or(user.overflow);
        if args.departure.is_none()
            && let Some(exchange) = user.dead_letter_exchange
        {
            let routing_key = user.dead_letter_routing_key;
            out.departure = Some(Departure::DeadLetter(DeadLetterTarget { exchange, routing_key }));
        } else if let Some(Departure::DeadLetter(target)) = &mut out.departure
            && target.routing_key.is_none()
        {
            target.routing_key = user.dead_letter_routing_key;
        }
        out
    }

    /// The policy's `consumer-timeout`, for a queue without the argument.
    pub fn consumer_timeout_ms(&self) -> Option<u64> {
        self.policy.as_ref().and_then(|p| p.settings.consumer_timeout_ms)
    }

    /// The policy's `consumer-timeout-action`, for a queue without the argument.
    pub fn consumer_timeout_action(&self) -> Option<ConsumerTimeoutAction> {
        self.policy.as_ref().and_then(|p| p.settings.consumer_timeout_action)
    }

    /// The policy's `alternate-exchange`, for an exchange without the argument.
    pub fn alternate_exchange(&self) -> Option<ShortStr> {
        self.policy.as_ref().and_then(|p| p.settings.alternate_exchange.clone())
    }

    /// The policy's definition merged with the operator policy's, the lower value where both
    /// set a key (RabbitMQ's `effective_policy_definition`), keys sorted.
    pub fn effective_definition(&self) -> Map<String, Value> {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(p) = &self.policy {
            out.extend(p.definition.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(op) = &self.operator {
            for (key, value) in &op.definition {
                let merged = match (out.get(key).and_then(Value::as_u64), value.as_u64()) {
                    (Some(a), Some(b)) => Value::from(a.min(b)),
                    _ => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
        }
        out.into_iter().collect()
    }

    /// The policy's name, if one applies.
    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_ref().map(|p| p.name.as_str())
    }

    /// The operator policy's name, if one applies.
    pub fn operator_policy_name(&self) -> Option<&str> {
        self.operator.as_ref().map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(kind: PolicyKind, name: &str, pattern: &str, priority: i64, definition: Value) -> PolicySpec {
        PolicySpec { kind, name: name.into(), pattern: pattern.into(), apply_to: ApplyTo::All, priority, definition }
    }

    fn policy(name: &str, pattern: &str, priority: i64, definition: Value) -> Policy {
        Policy::new(spec(PolicyKind::Policy, name, pattern, priority, definition)).unwrap()
    }

    fn refusal(kind: PolicyKind, definition: Value) -> String {
        match Policy::new(spec(kind, "p", "^q", 0, definition)) {
            Err(BrokerError::PreconditionFailed(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn bad_definitions_get_rabbitmq_texts() {
        // Each text as RabbitMQ 3.10.8's `rabbitmqctl set_policy` printed it.
        let user = [
            (json!({"max-length": "5"}), "<<\"5\">> is not a valid maximum length"),
            (json!({"max-length": -1}), "-1 is not a valid maximum length"),
            (json!({"max-length": 5.0}), "5.0 is not a valid maximum length"),
            (json!({"max-length-bytes": true}), "true is not a valid maximum length in bytes"),
            (json!({"message-ttl": 1.5}), "1.5 is not a valid message TTL"),
            (json!({"expires": 0}), "0 is not a valid queue expiry"),
            (json!({"expires": "5"}), "<<\"5\">> is not a valid queue expiry"),
            (json!({"overflow": "x"}), "<<\"x\">> is not a valid overflow value"),
            (json!({"consumer-timeout-action": "x"}), "<<\"x\">> is not a valid consumer timeout action"),
            (json!({"dead-letter-exchange": 5}), "5 is not a valid dead letter exchange name"),
            (json!({"dead-letter-routing-key": 5}), "5 is not a valid dead letter routing key"),
            (json!({"delivery-limit": "x"}), "<<\"x\">> is not a valid delivery limit"),
            (json!({"alternate-exchange": 5}), "5 is not a valid alternate exchange name"),
            (json!({"queue-mode": "x"}), "<<\"x\">> is not a valid queue-mode value"),
            (json!({"max-priority": 5}), "[{<<\"max-priority\">>,5}] are not recognised policy settings"),
            (
                json!({"max-length": 5, "foo": 1, "bar": 2}),
                "[{<<\"bar\">>,2},{<<\"foo\">>,1}] are not recognised policy settings",
            ),
            // Known keys are checked first, in name order.
            (json!({"zzz": 1, "max-length": "x"}), "<<\"x\">> is not a valid maximum length"),
            (json!({"max-length": "x", "expires": "y"}), "<<\"y\">> is not a valid queue expiry"),
            (json!({}), "no policy provided"),
        ];
        for (definition, text) in user {
            assert_eq!(refusal(PolicyKind::Policy, definition), format!("Validation failed\n\n{text}\n"));
        }
        let operator = [
            (
                json!({"dead-letter-exchange": "x"}),
                "[{<<\"dead-letter-exchange\">>,<<\"x\">>}] are not recognised policy settings",
            ),
            (
                json!({"overflow": "reject-publish"}),
                "[{<<\"overflow\">>,<<\"reject-publish\">>}] are not recognised policy settings",
            ),
            (json!({"max-length": "x"}), "<<\"x\">> is not a valid maximum length"),
        ];
        for (definition, text) in operator {
            assert_eq!(refusal(PolicyKind::Operator, definition), format!("Validation failed\n\n{text}\n"));
        }
        assert_eq!(
            ApplyTo::parse("foo"),
            Err(invalid("apply-to 'foo' unrecognised; should be 'queues', 'exchanges' or 'all'"))
        );
        assert!(Policy::new(spec(PolicyKind::Policy, "p", "[", 0, json!({"max-length": 1}))).is_err());
        assert!(Policy::new(spec(PolicyKind::Policy, "p", "a{1000}{1000}", 0, json!({"max-length": 1}))).is_err());
    }

    #[test]
    fn every_key_parses() {
        let p = policy(
            "p",
            "^q",
            0,
            json!({"overflow": "reject-publish-dlx", "alternate-exchange": "ae", "dead-letter-exchange": "d",
                   "dead-letter-routing-key": "k", "expires": 1, "delivery-limit": 0, "max-length": 0,
                   "max-length-bytes": 0, "message-ttl": 0, "consumer-timeout": 5, "ha-mode": "all",
                   "consumer-timeout-action": "cancel-and-requeue"}),
        );
        let s = &p.settings;
        assert_eq!(
            (s.max_length, s.max_length_bytes, s.message_ttl_ms, s.expires_ms),
            (Some(0), Some(0), Some(0), Some(1))
        );
        assert_eq!(
            (s.overflow, s.delivery_limit, s.consumer_timeout_ms),
            (Some(Overflow::RejectPublishDlx), Some(0), Some(5))
        );
        assert_eq!(s.consumer_timeout_action, Some(ConsumerTimeoutAction::CancelAndRequeue));
        assert_eq!(s.dead_letter_exchange.as_ref().map(|x| x.to_string()), Some("d".into()));
        let keys: Vec<&String> = p.definition.keys().collect();
        assert_eq!(keys.first().map(|k| k.as_str()), Some("alternate-exchange"), "sorted");
    }

    #[test]
    fn the_highest_priority_applies_and_ties_go_to_the_first_name() {
        let mut set = Policies::default();
        set.put(policy("low", "^q", 1, json!({"max-length": 1})));
        set.put(policy("high", "^q", 5, json!({"max-length": 2})));
        set.put(policy("other", "^x", 9, json!({"max-length": 3})));
        assert_eq!(set.applied(Target::Queue, b"q1").policy_name(), Some("high"));
        assert_eq!(set.applied(Target::Queue, b"x1").policy_name(), Some("other"));
        assert!(set.applied(Target::Queue, b"z").is_empty());
        // A regex is searched anywhere in the name unless anchored.
        set.put(policy("mid", "mid", 0, json!({"max-length": 1})));
        assert_eq!(set.applied(Target::Queue, b"a.mid.b").policy_name(), Some("mid"));
        set.put(policy("bb", "^tie$", 3, json!({"max-length": 4})));
        set.put(policy("aa", "^tie$", 3, json!({"max-length": 3})));
        assert_eq!(set.applied(Target::Queue, b"tie").policy_name(), Some("aa"));
        let mut only_exchanges = spec(PolicyKind::Policy, "ex", "^e", 0, json!({"alternate-exchange": "ae"}));
        only_exchanges.apply_to = ApplyTo::Exchanges;
        set.put(Policy::new(only_exchanges).unwrap());
        assert!(set.applied(Target::Queue, b"e1").is_empty());
        assert_eq!(set.applied(Target::Exchange, b"e1").policy_name(), Some("ex"));
    }

    #[test]
    fn numeric_limits_take_the_lowest_and_the_argument_wins_otherwise() {
        let mut set = Policies::default();
        set.put(policy(
            "up",
            "^q",
            0,
            json!({"max-length": 5, "message-ttl": 100000, "dead-letter-exchange": "dlx-pol",
                   "dead-letter-routing-key": "rk-pol", "overflow": "drop-head"}),
        ));
        set.put(
            Policy::new(spec(
                PolicyKind::Operator,
                "op",
                "^q",
                0,
                json!({"max-length": 3, "expires": 600000, "message-ttl": 200000}),
            ))
            .unwrap(),
        );
        let applied = set.applied(Target::Queue, b"q");
        let args = QueueLimits {
            max_length: Some(2),
            overflow: Some(Overflow::RejectPublish),
            departure: Some(Departure::DeadLetter(DeadLetterTarget {
                exchange: "dlx-arg".try_into().unwrap(),
                routing_key: None,
            })),
            ..QueueLimits::default()
        };
        let limits = applied.queue_limits(&args);
        assert_eq!(
            (limits.max_length, limits.message_ttl_ms, limits.expires_ms),
            (Some(2), Some(100000), Some(600000))
        );
        assert_eq!(limits.overflow, Some(Overflow::RejectPublish));
        let Some(Departure::DeadLetter(target)) = limits.departure else { panic!("dead-lettered") };
        assert_eq!(
            (target.exchange.to_string(), target.routing_key.map(|k| k.to_string())),
            ("dlx-arg".into(), Some("rk-pol".into()))
        );
        let plain = applied.queue_limits(&QueueLimits::default());
        assert_eq!((plain.max_length, plain.overflow), (Some(3), Some(Overflow::DropHead)));
        // As RabbitMQ 3.10.8 reports it: the policy's keys, the lower value where both set one.
        assert_eq!(
            Value::Object(applied.effective_definition()),
            json!({"dead-letter-exchange": "dlx-pol", "dead-letter-routing-key": "rk-pol", "expires": 600000,
                   "max-length": 3, "message-ttl": 100000, "overflow": "drop-head"})
        );
        // Delivery limits are a quorum queue's.
        set.put(policy("up", "^q", 0, json!({"delivery-limit": 1})));
        let applied = set.applied(Target::Queue, b"q");
        assert_eq!(applied.queue_limits(&QueueLimits::default()).delivery_limit, None);
        let quorum = QueueLimits { count_deliveries: true, delivery_limit: Some(5), ..QueueLimits::default() };
        assert_eq!(applied.queue_limits(&quorum).delivery_limit, Some(1));
    }

    #[test]
    fn a_policy_round_trips_through_its_record() {
        let p = policy("p", "^q\\.", 7, json!({"max-length": 5, "queue-mode": "lazy"}));
        let back = Policy::from_record(PolicyKind::Policy, "p", &p.record_body()).unwrap();
        assert_eq!(back, p);
        assert!(Policy::from_record(PolicyKind::Policy, "p", b"{").is_err());
    }
}
