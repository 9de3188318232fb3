//! The `lepus` binary itself: configured through `LEPUS_*` variables and flags, it serves
//! clients, and on SIGTERM closes every connection with 320 CONNECTION_FORCED and exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::Raw;
use lepus_protocol::constants::CONNECTION_FORCED;

/// The `lepus` command's environment for a test: ephemeral AMQP port, no HTTP listeners,
/// `data_dir`, info logs on a piped stdout.
fn on_ephemeral_ports<'c>(command: &'c mut Command, data_dir: &std::path::Path) -> &'c mut Command {
    command
        .env("LEPUS_PORT", "0")
        .env("LEPUS_MANAGEMENT_PORT", "0")
        .env("LEPUS_PROMETHEUS_PORT", "0")
        .env("LEPUS_DATA_DIR", data_dir)
        .env("LEPUS_LOG", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_320_and_exits_cleanly() {
    let mut binary = Command::new(env!("CARGO_BIN_EXE_lepus"));
    binary.args(["--bind-address", "127.0.0.1"]);
    let mut child =
        on_ephemeral_ports(&mut binary, &std::env::temp_dir().join("lepus-binary-test")).spawn().expect("lepus starts");
    // The listener logs the address it bound (port 0 → an ephemeral port).
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("lepus logs before exiting").expect("utf-8 log");
        assert!(!line.contains("panicked"), "{line}");
        if line.contains("accepting AMQP 0-9-1 connections")
            && let Some(rest) = line.split("address=").nth(1)
        {
            break rest.split_whitespace().next().expect("address").parse().expect("socket address");
        }
    };
    let mut raw = Raw::open_with_channel(addr).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let close = raw.expect_connection_close().await;
    assert_eq!(close.reply_code, CONNECTION_FORCED);
    raw.expect_eof().await;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutdown complete")), "{rest:?}");
}

#[test]
fn a_low_soft_descriptor_limit_is_raised_to_the_hard_one_at_start() {
    let data_dir = std::env::temp_dir().join(format!("lepus-rlimit-test-{}", std::process::id()));
    let mut shell = Command::new("sh");
    shell.args(["-c", "ulimit -Sn 256 && exec \"$0\" --bind-address 127.0.0.1", env!("CARGO_BIN_EXE_lepus")]);
    let mut child = on_ephemeral_ports(&mut shell, &data_dir).spawn().expect("lepus starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Everything up to the listener's line.
    let mut started = Vec::new();
    while !started.last().is_some_and(|l: &String| l.contains("accepting AMQP 0-9-1 connections")) {
        started.push(lines.next().expect("lepus logs before exiting").expect("utf-8 log"));
    }
    let raised = started.iter().find(|l| l.contains("raised the file descriptor limit"));
    assert!(raised.is_some_and(|l| l.contains("from=256")), "{started:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    let expected = if hard == "unlimited" { (1u64 << 20).to_string() } else { hard.to_owned() };
    assert_eq!(soft, expected, "{open_files}");
    child.kill().expect("kill");
    child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(data_dir);
}
