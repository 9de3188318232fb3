//! `lepus`: starts the broker. Settings come from defaults, then `--config FILE`, then
//! `LEPUS_*` environment variables, then flags.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lepus_server::{Config, Server};

/// jemalloc rather than glibc's malloc: every message is an allocation or two made on one
/// worker thread and freed on another, and glibc spent 18% of the broker's CPU in S1 on it
/// (`malloc_consolidate` among the top entries). Measured A/B, medians of 3: S1 2.31M -> 2.72M
/// msg/s, S7 2.74M -> 3.63M deliveries/s, footprint per idle connection, queue and queued
/// message unchanged (mimalloc was as fast but took 88 KB per idle connection against 15 KB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "lepus", version, about = "Lepus: an AMQP 0-9-1 message broker")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "LEPUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "LEPUS_BIND_ADDRESS")]
    bind_address: Option<IpAddr>,
    /// AMQP port.
    #[arg(long, env = "LEPUS_PORT")]
    port: Option<u16>,
    /// Port of the management HTTP API (0 turns it off).
    #[arg(long, env = "LEPUS_MANAGEMENT_PORT")]
    management_port: Option<u16>,
    /// The node's name in the management API and metrics, `name@host` (default `lepus@` and
    /// the host name).
    #[arg(long, env = "LEPUS_NODE_NAME")]
    node_name: Option<String>,
    /// Port of the Prometheus metrics (0 turns it off).
    #[arg(long, env = "LEPUS_PROMETHEUS_PORT")]
    prometheus_port: Option<u16>,
    /// Directory for durable state.
    #[arg(long, env = "LEPUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Heartbeat interval offered to clients, in seconds (0 disables).
    #[arg(long, env = "LEPUS_HEARTBEAT_S")]
    heartbeat_s: Option<u16>,
    /// Largest frame accepted, in bytes.
    #[arg(long, env = "LEPUS_FRAME_MAX")]
    frame_max: Option<u32>,
    /// Highest channel number per connection.
    #[arg(long, env = "LEPUS_CHANNEL_MAX")]
    channel_max: Option<u16>,
    /// Consumer timeout in milliseconds: a channel holding a delivery unacknowledged longer
    /// is closed (0 disables).
    #[arg(long, env = "LEPUS_CONSUMER_TIMEOUT")]
    consumer_timeout: Option<u64>,
    /// Log filter (tracing syntax), e.g. `info` or `lepus_server=debug`.
    #[arg(long, env = "LEPUS_LOG")]
    log: Option<String>,
    /// AMQP over TLS port (the TLS listener runs when a certificate and key are set).
    #[arg(long, env = "LEPUS_TLS_PORT")]
    tls_port: Option<u16>,
    /// The server's certificate chain, PEM.
    #[arg(long, env = "LEPUS_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// The server's private key, PEM.
    #[arg(long, env = "LEPUS_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// CA certificates client certificates are verified against, PEM.
    #[arg(long, env = "LEPUS_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Request and verify client certificates (true/false).
    #[arg(long, env = "LEPUS_TLS_VERIFY_PEER")]
    tls_verify_peer: Option<bool>,
    /// Refuse TLS clients without a certificate (true/false).
    #[arg(long, env = "LEPUS_TLS_FAIL_IF_NO_PEER_CERT")]
    tls_fail_if_no_peer_cert: Option<bool>,
    /// Where SASL EXTERNAL takes the user name from: common_name or distinguished_name.
    #[arg(long, env = "LEPUS_TLS_CERT_LOGIN_FROM")]
    tls_cert_login_from: Option<lepus_server::config::CertLoginFrom>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "LEPUS_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

fn load(args: &Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(v) = args.bind_address {
        config.bind_address = v;
    }
    if let Some(v) = args.port {
        config.port = v;
    }
    if let Some(v) = args.management_port {
        config.management_port = v;
    }
    if let Some(v) = &args.node_name {
        config.node_name = Some(v.clone());
    }
    if let Some(v) = args.prometheus_port {
        config.prometheus_port = v;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = Some(v.clone());
    }
    if let Some(v) = args.heartbeat_s {
        config.heartbeat_s = v;
    }
    if let Some(v) = args.frame_max {
        config.frame_max = v;
    }
    if let Some(v) = args.channel_max {
        config.channel_max = v;
    }
    if let Some(v) = args.consumer_timeout {
        config.consumer_timeout = v;
    }
    if let Some(v) = &args.log {
        config.log = v.clone();
    }
    apply_tls_args(args, &mut config);
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn apply_tls_args(args: &Args, config: &mut Config) {
    if let Some(v) = args.tls_port {
        config.tls_port = v;
    }
    if let Some(v) = &args.tls_cert_file {
        config.tls_cert_file = Some(v.clone());
    }
    if let Some(v) = &args.tls_key_file {
        config.tls_key_file = Some(v.clone());
    }
    if let Some(v) = &args.tls_ca_file {
        config.tls_ca_file = Some(v.clone());
    }
    if let Some(v) = args.tls_verify_peer {
        config.tls_verify_peer = v;
    }
    if let Some(v) = args.tls_fail_if_no_peer_cert {
        config.tls_fail_if_no_peer_cert = v;
    }
    if let Some(v) = args.tls_cert_login_from {
        config.tls_cert_login_from = v;
    }
}

/// The most descriptors asked for when the hard limit is unlimited.
const DESCRIPTORS_WANTED_MAX: u64 = 1 << 20;

/// Raises the soft descriptor limit to the hard one, as Go's runtime and many daemons do: the
/// socket budget (`socket_max`) is taken from it, and a 1,024 default would admit only a few
/// hundred clients. A failure leaves the limit as it was, with a warning.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(DESCRIPTORS_WANTED_MAX).min(DESCRIPTORS_WANTED_MAX);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: limit.maximum }) {
        Ok(()) => tracing::info!(from = current, to = wanted, "raised the file descriptor limit"),
        Err(e) => tracing::warn!(limit = current, error = %e, "could not raise the file descriptor limit"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lepus: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    raise_descriptor_limit();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lepus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "(in memory)".into()), "Lepus starting");
        let handle = server.shutdown_handle();
        if let Some(tls) = server.tls() {
            tokio::spawn(reload_tls_on_hangup(tls));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            handle.shutdown();
        });
        server.run().await;
        ExitCode::SUCCESS
    })
}

/// SIGHUP reloads the TLS certificate, key and CA file (a failure keeps the ones in use;
/// both are logged by `reload`).
async fn reload_tls_on_hangup(tls: std::sync::Arc<lepus_server::Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: TLS reload by signal is off");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the TLS certificate");
        let _ = tls.reload();
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
