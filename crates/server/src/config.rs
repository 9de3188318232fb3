//! Broker configuration: defaults that need no file, a TOML file (`--config`), `LEPUS_*`
//! environment variables and command-line flags, in increasing precedence.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use lepus_broker::BrokerError;
use lepus_broker::policy::{ApplyTo, Policy, PolicyKind, PolicySpec};
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
    /// The node's name in the management API and metrics (RabbitMQ's `RABBITMQ_NODENAME`):
    /// `name@host`; unset, `lepus@` and the host name. Monitoring tools that look nodes up as
    /// `rabbit@host` (the Nagios RabbitMQ checks) need `rabbit@…` here.
    pub node_name: Option<String>,
    /// Port of the Prometheus metrics (RabbitMQ's 15692), on `bind_address`; 0 turns it off.
    pub prometheus_port: u16,
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
    /// Time a client has from TCP accept (or the end of the TLS handshake) to its 8-byte
    /// protocol header; shorter than the handshake's, so sockets that never speak AMQP leave
    /// the handshake pool soon.
    pub protocol_header_timeout_ms: u64,
    /// Time we wait for `connection.close-ok` after sending `connection.close`.
    pub close_timeout_ms: u64,
    /// Open (authenticated) AMQP connections the node accepts; `connection.open` beyond them is
    /// refused with 530 NOT_ALLOWED (RabbitMQ's `connection_max`).
    pub connection_max: usize,
    /// Accepted sockets that have not reached `connection.open` yet (handshake, login); more
    /// wait in the listen backlog, so silent sockets cannot crowd out clients that log in.
    pub handshake_max: usize,
    /// Places in the handshake pool one source address may hold; its sockets beyond them are
    /// closed at once, so that one address cannot take the whole pool.
    pub handshake_max_per_source: usize,
    /// Sockets accepted per second across the AMQP listeners (a burst of one second's worth,
    /// then evenly); more wait in the listen backlog. 0: no limit (RabbitMQ has none).
    pub connection_rate_max: u32,
    /// How long a refused login waits before it is answered (403, or the socket closed), so
    /// that guessing passwords is slow; 0: at once (RabbitMQ's behaviour).
    pub login_failure_delay_ms: u64,
    /// Failed logins one source address may have per minute; past them its logins are refused
    /// without checking the password until the minute (from its first failure) ends. 0: no
    /// limit (RabbitMQ has none).
    pub login_failures_per_minute: u32,
    /// The HTTP listeners (management, Prometheus): how long a connection may take to send a
    /// whole request head, from its opening or its last answer, before it is closed
    /// (slow or idle clients); 0: no limit.
    pub http_header_timeout_ms: u64,
    /// The HTTP listeners: connections each holds open at once; more wait in the listen
    /// backlog.
    pub http_connection_max: usize,
    /// Largest message body accepted (RabbitMQ's default: 128 MiB).
    pub message_size_max: u64,
    /// Bytes of unsent output a connection may buffer before we stop reading from it.
    pub outbound_buffer_max: usize,
    /// Memory pressure: once queues together hold more message bytes than this, messages they
    /// do not store (transient ones) page out to scratch files beyond each queue's window
    /// (0: always).
    pub transient_paging_bytes: u64,
    /// The memory alarm's limit as a fraction of the RAM, or of the cgroup's memory limit when
    /// lower (RabbitMQ's `vm_memory_high_watermark.relative`, 0.4 by default): above it,
    /// publishing connections are blocked (`connection.blocked`) until it clears.
    pub memory_high_watermark: f64,
    /// The memory alarm's limit in bytes; wins over `memory_high_watermark` when set.
    pub memory_high_watermark_bytes: Option<u64>,
    /// Above this fraction of the memory alarm's limit, queues keep only the heads of their
    /// ready lists in memory and page the rest out, transient messages too (RabbitMQ's
    /// `vm_memory_high_watermark_paging_ratio`, 0.5 by default; above 1.0, never).
    pub memory_high_watermark_paging_ratio: f64,
    /// The disk alarm: publishing connections are blocked while the data directory's
    /// filesystem has less free space than this (RabbitMQ's `disk_free_limit.absolute`).
    pub disk_free_limit_bytes: u64,
    /// Segment and ack files the message store keeps open at most (an LRU of handles: the
    /// least recently used closes when another opens). The AMQP listeners leave these
    /// descriptors, and a reserve, out of the sockets they accept.
    pub store_open_files_max: usize,
    /// After a failed write or sync, how long the message store waits before it retries (on
    /// the broker's clock).
    pub store_retry_interval_ms: u64,
    /// Consumer timeout in milliseconds (RabbitMQ's `consumer_timeout`): a channel whose
    /// oldest unacknowledged delivery waited longer is closed with 406 and its deliveries are
    /// requeued. A queue's `x-consumer-timeout` overrides it; 0 disables.
    pub consumer_timeout: u64,
    /// Consumers one channel may have (RabbitMQ's `consumer_max_per_channel`); `basic.consume`
    /// beyond it closes the connection with 530. 0: no limit (RabbitMQ's default).
    pub consumer_max_per_channel: usize,
    /// The user created on first start.
    pub default_user: String,
    pub default_pass: String,
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Default `tracing` filter, e.g. `info` or `lepus_server=debug`; `RUST_LOG` overrides.
    pub log: String,
    /// Policies and operator policies set at every start (`[[policies]]` tables), as if set
    /// through the broker's command path: validated, stored with the data, applied.
    pub policies: Vec<PolicyConfig>,
    /// AMQP over TLS (amqps) port, on `bind_address`; the TLS listener runs only when
    /// `tls_cert_file` and `tls_key_file` are set; 0 picks an ephemeral port (tests).
    pub tls_port: u16,
    /// The server's certificate chain (PEM), leaf first.
    pub tls_cert_file: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) client certificates are verified against.
    pub tls_ca_file: Option<PathBuf>,
    /// Ask clients for a certificate and verify it (RabbitMQ's `verify_peer`); enables SASL
    /// EXTERNAL on the TLS listener.
    pub tls_verify_peer: bool,
    /// Refuse the TLS handshake of a client without a certificate.
    pub tls_fail_if_no_peer_cert: bool,
    /// Where SASL EXTERNAL takes the user name from (RabbitMQ's `ssl_cert_login_from`).
    pub tls_cert_login_from: CertLoginFrom,
}

/// One `[[policies]]` table: RabbitMQ's `set_policy` (or, with `operator = true`,
/// `set_operator_policy`) arguments.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_vhost")]
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    /// `queues`, `exchanges` or `all` (the default).
    #[serde(default = "default_apply_to")]
    pub apply_to: String,
    #[serde(default)]
    pub priority: i64,
    /// An operator policy (only numeric limits; the lower value wins against the policy's).
    #[serde(default)]
    pub operator: bool,
    /// The definition, RabbitMQ's keys: `{ message-ttl = 60000, dead-letter-exchange = "dlx" }`.
    pub definition: serde_json::Value,
}

fn default_vhost() -> String {
    "/".into()
}

fn default_apply_to() -> String {
    "all".into()
}

impl PolicyConfig {
    /// The policy as the broker's command takes it (the `apply-to` text checked).
    pub fn spec(&self) -> Result<PolicySpec, BrokerError> {
        Ok(PolicySpec {
            kind: if self.operator { PolicyKind::Operator } else { PolicyKind::Policy },
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            apply_to: ApplyTo::parse(&self.apply_to)?,
            priority: self.priority,
            definition: self.definition.clone(),
        })
    }
}

/// Where SASL EXTERNAL takes the user name from in a client certificate.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's CN.
    #[default]
    CommonName,
    /// The whole subject in RabbitMQ's RFC 4514 form, e.g. `CN=app,O=Example,C=GB`.
    DistinguishedName,
}

impl std::str::FromStr for CertLoginFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<CertLoginFrom, String> {
        match s {
            "common_name" => Ok(CertLoginFrom::CommonName),
            "distinguished_name" => Ok(CertLoginFrom::DistinguishedName),
            _ => Err(format!("'{s}' is neither common_name nor distinguished_name")),
        }
    }
}

impl From<CertLoginFrom> for lepus_amqp::cert_name::CertLoginFrom {
    fn from(from: CertLoginFrom) -> Self {
        match from {
            CertLoginFrom::CommonName => Self::CommonName,
            CertLoginFrom::DistinguishedName => Self::DistinguishedName,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind_address: IpAddr::from([0, 0, 0, 0]),
            port: 5672,
            management_port: 15672,
            node_name: None,
            prometheus_port: 15692,
            data_dir: Some(PathBuf::from("lepus-data")),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            handshake_timeout_ms: 10_000,
            protocol_header_timeout_ms: 3_000,
            close_timeout_ms: 3_000,
            connection_max: 65_536,
            handshake_max: 8192,
            handshake_max_per_source: 2048,
            connection_rate_max: 0,
            login_failure_delay_ms: 1000,
            login_failures_per_minute: 60,
            http_header_timeout_ms: 10_000,
            http_connection_max: 1024,
            message_size_max: 128 * 1024 * 1024,
            outbound_buffer_max: 4 * 1024 * 1024,
            transient_paging_bytes: 1024 * 1024 * 1024,
            memory_high_watermark: lepus_broker::alarms::MEMORY_HIGH_WATERMARK_DEFAULT,
            memory_high_watermark_bytes: None,
            memory_high_watermark_paging_ratio: lepus_broker::alarms::MEMORY_PAGING_RATIO_DEFAULT,
            disk_free_limit_bytes: lepus_broker::alarms::DISK_FREE_LIMIT_DEFAULT_BYTES,
            store_open_files_max: 256,
            store_retry_interval_ms: 1000,
            consumer_timeout: 1_800_000,
            consumer_max_per_channel: 0,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            loopback_users: vec!["guest".into()],
            log: "info".into(),
            policies: Vec::new(),
            tls_port: 5671,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_verify_peer: false,
            tls_fail_if_no_peer_cert: false,
            tls_cert_login_from: CertLoginFrom::CommonName,
        }
    }
}

/// The largest `message_size_max` accepted (RabbitMQ's ceiling; a stored record's length is a
/// `u32`).
pub const MESSAGE_SIZE_LIMIT: u64 = 512 * 1024 * 1024;

/// Longest node name accepted (RabbitMQ's are atoms: 255 characters).
const NODE_NAME_MAX: usize = 255;

/// A node name is `name@host`, both parts non-empty, of letters, digits, `-`, `_` and `.`.
fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let part_ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match name.split_once('@') {
        Some((node, host)) if name.len() <= NODE_NAME_MAX && part_ok(node) && part_ok(host) => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "node_name must be name@host (letters, digits, '-', '_', '.'; at most {NODE_NAME_MAX} bytes), not {name:?}"
        ))),
    }
}

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
        if let Some(name) = &self.node_name {
            validate_node_name(name)?;
        }
        if self.channel_max == 0 {
            return Err(ConfigError::Invalid("channel_max must be at least 1".into()));
        }
        if self.message_size_max > MESSAGE_SIZE_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "message_size_max must be at most {MESSAGE_SIZE_LIMIT} (512 MiB, as in RabbitMQ)"
            )));
        }
        if !(self.memory_high_watermark.is_finite() && self.memory_high_watermark >= 0.0) {
            return Err(ConfigError::Invalid("memory_high_watermark must be a fraction, 0 or more".into()));
        }
        let ratio = self.memory_high_watermark_paging_ratio;
        if !(ratio.is_finite() && ratio >= 0.0) {
            return Err(ConfigError::Invalid(
                "memory_high_watermark_paging_ratio must be a fraction, 0 or more".into(),
            ));
        }
        if self.connection_max == 0 {
            return Err(ConfigError::Invalid("connection_max must be at least 1".into()));
        }
        if self.handshake_max == 0 {
            return Err(ConfigError::Invalid("handshake_max must be at least 1".into()));
        }
        if self.handshake_max_per_source == 0 {
            return Err(ConfigError::Invalid("handshake_max_per_source must be at least 1".into()));
        }
        if self.store_open_files_max < 2 {
            return Err(ConfigError::Invalid("store_open_files_max must be at least 2".into()));
        }
        for p in &self.policies {
            p.spec().and_then(Policy::new).map_err(|e| {
                ConfigError::Invalid(format!("policy '{}': {}", p.name, e.to_string().trim().replace("\n\n", ": ")))
            })?;
        }
        crate::tls::TlsFiles::from_config(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
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
    fn tls_keys() {
        let c = Config::from_toml(
            "tls_port = 5999\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\ntls_cert_login_from = \"distinguished_name\"\n",
        )
        .unwrap();
        assert_eq!((c.tls_port, c.tls_cert_login_from), (5999, CertLoginFrom::DistinguishedName));
        assert!(c.validate().is_ok());
        assert!(Config::from_toml("tls_cert_login_from = \"cn\"").is_err());
        let half = Config { tls_key_file: None, ..c };
        assert!(half.validate().unwrap_err().to_string().contains("tls_cert_file and tls_key_file"));
    }

    #[test]
    fn node_name_is_name_at_host() {
        assert_eq!(Config::default().node_name, None);
        let named = Config::from_toml("node_name = \"rabbit@mq-1.example\"").unwrap();
        assert_eq!(named.node_name.as_deref(), Some("rabbit@mq-1.example"));
        assert!(named.validate().is_ok());
        for bad in ["rabbit", "@host", "rabbit@", "a@b@c", "r b@host"] {
            let config = Config { node_name: Some(bad.into()), ..Config::default() };
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn management_port_defaults_to_rabbitmq_s_and_0_turns_it_off() {
        assert_eq!(Config::default().management_port, 15672);
        assert_eq!(Config::from_toml("management_port = 0").unwrap().management_port, 0);
        assert_eq!(Config::default().prometheus_port, 15692);
        assert_eq!(Config::from_toml("prometheus_port = 0").unwrap().prometheus_port, 0);
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let example = Config::from_toml(include_str!("../../../lepus.example.toml")).expect("example parses");
        assert_eq!(example, Config::default(), "lepus.example.toml states every default");
        assert!(example.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("prot = 1").is_err());
    }

    #[test]
    fn policies_are_read_and_checked() {
        let text = r#"
            [[policies]]
            name = "ttl"
            pattern = "^work\\."
            apply_to = "queues"
            priority = 2
            definition = { message-ttl = 60000, dead-letter-exchange = "dlx" }

            [[policies]]
            vhost = "apps"
            name = "cap"
            pattern = ".*"
            operator = true
            definition = { max-length = 100000 }
        "#;
        let c = Config::from_toml(text).unwrap();
        assert!(c.validate().is_ok());
        let spec = c.policies[0].spec().unwrap();
        assert_eq!((spec.kind, spec.apply_to, spec.priority), (PolicyKind::Policy, ApplyTo::Queues, 2));
        assert_eq!(spec.pattern, "^work\\.");
        assert_eq!(spec.definition, serde_json::json!({"message-ttl": 60000, "dead-letter-exchange": "dlx"}));
        assert_eq!((c.policies[1].vhost.as_str(), c.policies[1].apply_to.as_str()), ("apps", "all"));
        let bad = Config::from_toml("[[policies]]\nname = \"p\"\npattern = \".\"\ndefinition = { max-priority = 5 }")
            .unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid setting: policy 'p': Validation failed: [{<<\"max-priority\">>,5}] are not recognised policy settings"
        );
    }

    #[test]
    fn tiny_frame_max_is_invalid() {
        let c = Config { frame_max: 100, ..Config::default() };
        assert!(c.validate().is_err());
    }
}
