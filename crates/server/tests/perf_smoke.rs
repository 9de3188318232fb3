//! A short `lepus-perf` run of each load shape against the broker: throughput is not
//! asserted (benchmarks measure it), correctness is: nothing lost, duplicated, reordered or
//! misrouted.

mod common;

use lepus_perf::{Args, Parser};

async fn run(broker: &common::Broker, extra: &[&str]) -> lepus_perf::Summary {
    let uri = format!("amqp://guest:guest@{}/%2F", broker.addr);
    let prefix = format!("smoke-{}", extra.join("").replace(['-', ' '], ""));
    let mut argv = vec!["lepus-perf", "--uri", &uri, "--quiet", "-z", "1", "--queue-prefix", &prefix];
    argv.extend_from_slice(extra);
    let summary = lepus_perf::run(Args::parse_from(argv)).await.expect("perf run completes");
    assert!(summary.published > 0, "{extra:?}: nothing published");
    assert!(summary.received > 0, "{extra:?}: nothing received");
    assert_eq!(summary.duplicated, 0, "{extra:?}");
    assert_eq!(summary.reordered, 0, "{extra:?}");
    assert_eq!(summary.misrouted, 0, "{extra:?}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_smoke_runs_lose_nothing() {
    let broker = common::start().await;
    let s = run(&broker, &["-a"]).await;
    assert_eq!(s.lost, Some(0));
    let s = run(&broker, &["-q", "200", "--multi-ack-every", "50", "-c", "500"]).await;
    assert_eq!((s.lost, s.nacked), (Some(0), 0));
    assert_eq!(s.confirmed, s.published);
    let s = run(&broker, &["-t", "fanout", "--queues", "3", "-y", "3", "-a", "-s", "1024"]).await;
    assert_eq!(s.lost, Some(0));
    let s = run(&broker, &["-t", "topic", "--topic-bindings", "200", "--queues", "2", "-y", "2", "-a"]).await;
    assert_eq!(s.lost, Some(0), "every delivery a key's bindings call for arrived");
    assert!(s.deliveries_per_publish > 0.0, "some keys reach a queue: {}", s.deliveries_per_publish);
    let s = run(&broker, &["-s", "300000", "-a", "-r", "200"]).await;
    assert_eq!(s.lost, Some(0), "multi-frame bodies");
    broker.stop().await;
}
