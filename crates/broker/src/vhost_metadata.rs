//! A vhost's metadata: its description, tags and default queue type, as RabbitMQ's
//! `add_vhost --description --tags --default-queue-type` and the HTTP API's `PUT /api/vhosts/{v}`
//! set them. As RabbitMQ 3.10 does, every put replaces the whole metadata (what a request leaves
//! out is reset), and the default queue type is shown and exported but applies to no declare
//! (3.11 began applying it). The meta store keeps it as this JSON body, opaque to it.

use serde::{Deserialize, Serialize};

use crate::error::{BrokerError, Result};

/// The longest description accepted, in bytes.
pub const DESCRIPTION_MAX_BYTES: usize = 4096;
/// The most tags a vhost may carry.
pub const TAGS_MAX: usize = 64;
/// The longest tag accepted, in bytes.
pub const TAG_MAX_BYTES: usize = 255;
/// The queue types RabbitMQ knows.
const QUEUE_TYPES: [&str; 3] = ["classic", "quorum", "stream"];
/// The description RabbitMQ gives the default vhost it creates.
const DEFAULT_VHOST_DESCRIPTION: &str = "Default virtual host";

/// A vhost's description, tags and default queue type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostMetadata {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `None`: never set (RabbitMQ 3.10 shows `undefined`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue_type: Option<String>,
}

impl VhostMetadata {
    /// What a vhost has before anything was set: RabbitMQ's default vhost has a description.
    pub fn initial(vhost: &str) -> VhostMetadata {
        let description = if vhost == "/" { DEFAULT_VHOST_DESCRIPTION } else { "" };
        VhostMetadata { description: description.to_owned(), ..VhostMetadata::default() }
    }

    /// Refuses what is over a limit or a queue type RabbitMQ does not know.
    pub fn validate(&self) -> Result<()> {
        let refuse = |why: String| Err(BrokerError::PreconditionFailed(why));
        if self.description.len() > DESCRIPTION_MAX_BYTES {
            return refuse(format!("a vhost description is at most {DESCRIPTION_MAX_BYTES} bytes"));
        }
        if self.tags.len() > TAGS_MAX {
            return refuse(format!("a vhost has at most {TAGS_MAX} tags"));
        }
        if self.tags.iter().any(|t| t.len() > TAG_MAX_BYTES) {
            return refuse(format!("a vhost tag is at most {TAG_MAX_BYTES} bytes"));
        }
        if let Some(kind) = &self.default_queue_type
            && !QUEUE_TYPES.contains(&kind.as_str())
        {
            return refuse(format!("unknown default queue type '{}'", kind.escape_debug()));
        }
        Ok(())
    }

    /// The body the meta store keeps.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored body; `None` if it is not one.
    pub fn decode(body: &[u8]) -> Option<VhostMetadata> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_vhost_starts_with_rabbitmqs_description() {
        assert_eq!(VhostMetadata::initial("/").description, "Default virtual host");
        assert_eq!(VhostMetadata::initial("other"), VhostMetadata::default());
    }

    #[test]
    fn a_body_round_trips_and_limits_are_enforced() {
        let m = VhostMetadata {
            description: "d".into(),
            tags: vec!["x".into()],
            default_queue_type: Some("quorum".into()),
        };
        assert_eq!(VhostMetadata::decode(&m.encode()), Some(m.clone()));
        assert!(m.validate().is_ok());
        let bad_type = VhostMetadata { default_queue_type: Some("fancy".into()), ..m.clone() };
        assert!(bad_type.validate().is_err());
        let long = VhostMetadata { description: "d".repeat(DESCRIPTION_MAX_BYTES + 1), ..m.clone() };
        assert!(long.validate().is_err());
        let many = VhostMetadata { tags: vec![String::new(); TAGS_MAX + 1], ..m };
        assert!(many.validate().is_err());
        assert_eq!(VhostMetadata::decode(b"not json"), None);
    }
}
