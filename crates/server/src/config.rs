//! Broker configuration: defaults that need no file, a TOML file (`--config`), `LEPUS_*`
//! environment variables and command-line flags, in increasing precedence.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the broker can be told at start. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the AMQP listener binds.
    pub bind_address: IpAddr,
    /// AMQP port; 0 picks an ephemeral port (tests).
    pub port: u16,
    /// Port of the management HTTP API (RabbitMQ's 15672), on `bind_address`; 0 turns it off.
    pub management_port: u16,
    /// Where durable state lives: the metadata store, queue message logs, the lock file.
    /// `None` keeps everything in memory (tests; nothing survives a restart).
    pub data_dir: Option<PathBuf>,
    /// Largest frame we accept and offer in `connection.tune`, header included.
    pub frame_max: u32,
    /// Highest channel number offered in `connection.tune`.
    pub channel_max: u16,
    /// Heartbeat interval offered in `connection.tune`; 0 disables.
    pub heartbeat_s: u16,
    /// Time a client has from TCP accept to `connection.open`.
    pub handshake_timeout_ms: u64,
    /// Time we wait for `connection.close-ok` after sending `connection.close`.
    pub close_timeout_ms: u64,
    /// Open (authenticated) AMQP connections the node accepts; `connection.open` beyond them is
    /// refused with 530 NOT_ALLOWED (RabbitMQ's `connection_max`).
    pub connection_max: usize,
    /// Accepted sockets that have not reached `connection.open` yet (handshake, login); more
    /// wait in the listen backlog, so silent sockets cannot crowd out clients that log in.
    pub handshake_max: usize,
    /// How long a refused login waits before it is answered (403, or the socket closed), so
    /// that guessing passwords is slow; 0: at once (RabbitMQ's behaviour).
    pub login_failure_delay_ms: u64,
    /// Failed logins one source address may have per minute; past them its logins are refused
    /// without checking the password until the minute (from its first failure) ends. 0: no
    /// limit (RabbitMQ has none).
    pub login_failures_per_minute: u32,
    /// Largest message body accepted (RabbitMQ's default: 128 MiB).
    pub message_size_max: u64,
    /// Bytes of unsent output a connection may buffer before we stop reading from it.
    pub outbound_buffer_max: usize,
    /// Memory pressure: once queues together hold more message bytes than this, messages they
    /// do not store (transient ones) page out to scratch files beyond each queue's window
    /// (0: always).
    pub transient_paging_bytes: u64,
    /// Consumer timeout in milliseconds (RabbitMQ's `consumer_timeout`): a channel whose
    /// oldest unacknowledged delivery waited longer is closed with 406 and its deliveries are
    /// requeued. A queue's `x-consumer-timeout` overrides it; 0 disables.
    pub consumer_timeout: u64,
    /// The user created on first start.
    pub default_user: String,
    pub default_pass: String,
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Default `tracing` filter, e.g. `info` or `lepus_server=debug`; `RUST_LOG` overrides.
    pub log: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind_address: IpAddr::from([0, 0, 0, 0]),
            port: 5672,
            management_port: 15672,
            data_dir: Some(PathBuf::from("lepus-data")),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            handshake_timeout_ms: 10_000,
            close_timeout_ms: 3_000,
            connection_max: 65_536,
            handshake_max: 8192,
            login_failure_delay_ms: 1000,
            login_failures_per_minute: 60,
            message_size_max: 128 * 1024 * 1024,
            outbound_buffer_max: 4 * 1024 * 1024,
            transient_paging_bytes: 1024 * 1024 * 1024,
            consumer_timeout: 1_800_000,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            loopback_users: vec!["guest".into()],
            log: "info".into(),
        }
    }
}

/// The largest `message_size_max` accepted (RabbitMQ's ceiling; a stored record's length is a
/// `u32`).
pub const MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; keys it does not set keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the values a client will see are within what AMQP allows.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use lepus_protocol::constants::FRAME_MIN_SIZE;
        if self.frame_max < FRAME_MIN_SIZE {
            return Err(ConfigError::Invalid(format!("frame_max must be at least {FRAME_MIN_SIZE}")));
        }
        if self.channel_max == 0 {
            return Err(ConfigError::Invalid("channel_max must be at least 1".into()));
        }
        if self.message_size_max > MESSAGE_SIZE_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "message_size_max must be at most {MESSAGE_SIZE_LIMIT} (512 MiB, as in RabbitMQ)"
            )));
        }
        if self.connection_max == 0 {
            return Err(ConfigError::Invalid("connection_max must be at least 1".into()));
        }
        if self.handshake_max == 0 {
            return Err(ConfigError::Invalid("handshake_max must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn file_overrides_some_keys() {
        let c = Config::from_toml("port = 5800\nheartbeat_s = 5\n").unwrap();
        assert_eq!(c.port, 5800);
        assert_eq!(c.heartbeat_s, 5);
        assert_eq!(c.frame_max, Config::default().frame_max);
    }

    #[test]
    fn consumer_timeout_defaults_to_rabbitmq_s_and_can_be_turned_off() {
        assert_eq!(Config::default().consumer_timeout, 1_800_000);
        assert_eq!(Config::from_toml("consumer_timeout = 0").unwrap().consumer_timeout, 0);
        assert_eq!(Config::from_toml("consumer_timeout = 60000").unwrap().consumer_timeout, 60_000);
    }

    #[test]
    fn management_port_defaults_to_rabbitmq_s_and_0_turns_it_off() {
        assert_eq!(Config::default().management_port, 15672);
        assert_eq!(Config::from_toml("management_port = 0").unwrap().management_port, 0);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("prot = 1").is_err());
    }

    #[test]
    fn tiny_frame_max_is_invalid() {
        let c = Config { frame_max: 100, ..Config::default() };
        assert!(c.validate().is_err());
    }
}
