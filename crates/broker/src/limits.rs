//! Per-vhost and per-user limits, as RabbitMQ's `set_vhost_limits` and `set_user_limits`
//! name them: a vhost's `max-connections` and `max-queues`, a user's `max-connections` and
//! `max-channels`. A negative value means no limit, as in RabbitMQ; a limit not set is none.
//! The node-wide limits (`connection_max`, `channel_max`) are configuration, not these.

use crate::error::{BrokerError, Result};

/// A vhost's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    pub max_connections: Option<u32>,
    pub max_queues: Option<u32>,
}

/// A user's limits (RabbitMQ 3.11's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    pub max_connections: Option<u32>,
    pub max_channels: Option<u32>,
}

/// One limit's value as given: negative is none; beyond `u32` is refused.
fn limit_value(key: &str, value: i64) -> Result<Option<u32>> {
    if value < 0 {
        return Ok(None);
    }
    u32::try_from(value)
        .map(Some)
        .map_err(|_| BrokerError::PreconditionFailed(format!("limit '{key}' is too large: {value}")))
}

fn unknown(key: &str, scope: &str) -> BrokerError {
    BrokerError::PreconditionFailed(format!("unrecognised {scope} limit '{}'", key.escape_debug()))
}

impl VhostLimits {
    /// From `(name, value)` pairs as RabbitMQ's definitions hold them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, i64)>) -> Result<VhostLimits> {
        let mut limits = VhostLimits::default();
        for (key, value) in pairs {
            match key {
                "max-connections" => limits.max_connections = limit_value(key, value)?,
                "max-queues" => limits.max_queues = limit_value(key, value)?,
                _ => return Err(unknown(key, "vhost")),
            }
        }
        Ok(limits)
    }

    /// The limits that are set, by name.
    pub fn pairs(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        if let Some(n) = self.max_connections {
            out.push(("max-connections", n.into()));
        }
        if let Some(n) = self.max_queues {
            out.push(("max-queues", n.into()));
        }
        out
    }
}

impl UserLimits {
    /// From `(name, value)` pairs as RabbitMQ's definitions hold them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, i64)>) -> Result<UserLimits> {
        let mut limits = UserLimits::default();
        for (key, value) in pairs {
            match key {
                "max-connections" => limits.max_connections = limit_value(key, value)?,
                "max-channels" => limits.max_channels = limit_value(key, value)?,
                _ => return Err(unknown(key, "user")),
            }
        }
        Ok(limits)
    }

    /// The limits that are set, by name.
    pub fn pairs(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        if let Some(n) = self.max_connections {
            out.push(("max-connections", n.into()));
        }
        if let Some(n) = self.max_channels {
            out.push(("max-channels", n.into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_is_no_limit_and_unknown_names_are_refused() {
        let v = VhostLimits::from_pairs([("max-connections", 2), ("max-queues", -1)]).expect("valid");
        assert_eq!(v, VhostLimits { max_connections: Some(2), max_queues: None });
        assert_eq!(v.pairs(), [("max-connections", 2)]);
        assert!(VhostLimits::from_pairs([("max-channels", 1)]).is_err());
        let u = UserLimits::from_pairs([("max-channels", 0)]).expect("valid");
        assert_eq!(u.max_channels, Some(0));
        assert!(UserLimits::from_pairs([("max-connections", i64::MAX)]).is_err());
    }
}
