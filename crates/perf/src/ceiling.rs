//! The loopback ceiling (`--loopback-ceiling`): how many bytes per second this machine moves
//! over loopback TCP with no broker at all, so a large-message scenario (S4) is judged against
//! what the hardware allows rather than against a guess.
//!
//! Two measurements, one after the other, each `-z` seconds after a one-second warm-up:
//! - **direct**: a writer thread sends to a reader thread (one hop);
//! - **relay**: the writer sends to a relay thread that reads into a buffer and writes the
//!   bytes on to the reader (two hops, the shape of a broker: every byte is copied into and
//!   out of the kernel twice). This is the ceiling for any broker on this machine.
//!
//! Writes are `--batch` × `-s` bytes, as a batching producer writes. Plain blocking sockets
//! and OS threads: nothing in the way of the kernel.
//!
//! With `-r RATE` it measures the latency floor instead (S9's bound): `-s`-byte messages, each
//! stamped with its send time, written at `RATE` per second in the tool's rhythm (every
//! millisecond, the messages then due, in one write), through the relay to the reader, which
//! records each message's time in flight. A broker adds its own work to the same two hops and
//! the same three thread wake-ups (relay, reader, and the writer's timer), so its latency can
//! approach this floor but not pass it; on a shared VM the floor's tail is mostly scheduling.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::Args;
use crate::client::Result;
use crate::stats::{Summary, latency_histogram, latency_percentiles_us};

/// Read buffer of the relay and the reader: as large as the largest read a busy socket
/// returns, so neither is slowed by short reads.
const READ_BUFFER_BYTES: usize = 256 * 1024;

const WARM_UP: Duration = Duration::from_secs(1);

/// Latency mode: the send time (nanoseconds, big-endian) at the start of each message.
const STAMP_BYTES: usize = 8;

/// Latency mode: how often the writer looks for messages that are due (the load generator's
/// timer also ticks once per millisecond).
const TICK: Duration = Duration::from_millis(1);

/// Measures both rates and returns them in a summary (`loopback_*_bytes_per_s`); with `-r`,
/// the latency through the relay instead (`latency_us_*`).
pub fn measure(args: &Args) -> Result<Summary> {
    if args.rate > 0 {
        return measure_latency(args);
    }
    let write_bytes = (args.batch.max(1) * args.size.max(1)).min(64 << 20);
    let window = Duration::from_secs(args.duration_s.max(1));
    let direct = rate(write_bytes, window, false)?;
    let relay = rate(write_bytes, window, true)?;
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: "loopback-ceiling",
        duration_s: window.as_secs_f64(),
        message_size: args.size,
        loopback_direct_bytes_per_s: Some(direct),
        loopback_relay_bytes_per_s: Some(relay),
        ..Default::default()
    })
}

/// The latency floor: `-s`-byte stamped messages at `-r` per second through a plain relay.
fn measure_latency(args: &Args) -> Result<Summary> {
    let size = args.size.max(STAMP_BYTES);
    let window = Duration::from_secs(args.duration_s.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let (source, sink, relay) = relay_pair()?;

    let writer = {
        let (stop, rate, mut sink) = (stop.clone(), args.rate, sink);
        thread::spawn(move || -> std::io::Result<u64> {
            let mut out = Vec::new();
            let (mut sent, start) = (0u64, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                if due <= sent {
                    thread::sleep(TICK);
                    continue;
                }
                out.clear();
                for _ in sent..due {
                    let at = epoch.elapsed().as_nanos() as u64;
                    out.extend_from_slice(&at.to_be_bytes());
                    out.resize(out.len() + size - STAMP_BYTES, 0);
                }
                sink.write_all(&out)?;
                sent = due;
            }
            Ok(sent)
        })
    };
    let reader = {
        let (stop, mut source) = (stop.clone(), source);
        thread::spawn(move || -> std::io::Result<Histogram<u64>> {
            let mut latency_ns = latency_histogram();
            // Room for at least one whole message, however large `-s` is.
            let mut buf = vec![0u8; READ_BUFFER_BYTES.max(2 * size)];
            let (mut filled, warm_until) = (0usize, epoch + WARM_UP);
            loop {
                let n = source.read(&mut buf[filled..])?;
                if n == 0 {
                    return Ok(latency_ns);
                }
                filled += n;
                let now_ns = epoch.elapsed().as_nanos() as u64;
                let whole = filled / size * size;
                if Instant::now() >= warm_until && !stop.load(Ordering::Relaxed) {
                    for message in buf[..whole].chunks_exact(size) {
                        let mut stamp = [0u8; STAMP_BYTES];
                        stamp.copy_from_slice(&message[..STAMP_BYTES]);
                        let _ = latency_ns.record(now_ns.saturating_sub(u64::from_be_bytes(stamp)).max(1));
                    }
                }
                buf.copy_within(whole..filled, 0);
                filled -= whole;
            }
        })
    };

    thread::sleep(WARM_UP + window);
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().map_err(|_| "loopback-ceiling thread panicked")??;
    relay.join().map_err(|_| "loopback-ceiling thread panicked")??;
    let latency_ns = reader.join().map_err(|_| "loopback-ceiling thread panicked")??;
    let [p50, p99, p999, max] = latency_percentiles_us(&latency_ns).map(Some);
    Ok(Summary {
        scenario: args.scenario.clone(),
        mode: "loopback-latency",
        duration_s: window.as_secs_f64(),
        message_size: size,
        published: sent,
        received: latency_ns.len(),
        latency_us_p50: p50,
        latency_us_p99: p99,
        latency_us_p999: p999,
        latency_us_max: max,
        ..Default::default()
    })
}

/// A writer's socket, the reader's socket, and the relay thread copying from one to the other
/// (it ends when the writer's socket closes).
fn relay_pair() -> std::io::Result<(TcpStream, TcpStream, thread::JoinHandle<std::io::Result<()>>)> {
    let (sink, mut inbound) = socket_pair()?;
    let (mut out, source) = socket_pair()?;
    let relay = thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        loop {
            match inbound.read(&mut buf)? {
                0 => return Ok(()),
                n => out.write_all(&buf[..n])?,
            }
        }
    });
    Ok((source, sink, relay))
}

/// A connected loopback pair: (the connecting end, with `TCP_NODELAY`, the accepted end).
fn socket_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let connected = TcpStream::connect(listener.local_addr()?)?;
    connected.set_nodelay(true)?;
    let (accepted, _) = listener.accept()?;
    Ok((connected, accepted))
}

/// Bytes per second arriving at the reader over `window`, through a relay or not.
fn rate(write_bytes: usize, window: Duration, relay: bool) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (source, mut sink, relay_thread) = if relay {
        let (source, sink, relay) = relay_pair()?;
        (source, sink, Some(relay))
    } else {
        let (sink, source) = socket_pair()?;
        (source, sink, None)
    };
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || -> std::io::Result<()> {
            let chunk = vec![0x5au8; write_bytes];
            while !stop.load(Ordering::Relaxed) {
                sink.write_all(&chunk)?;
            }
            Ok(())
        })
    };
    let reader = {
        let (received, mut source) = (received.clone(), source);
        thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; READ_BUFFER_BYTES];
            loop {
                match source.read(&mut buf)? {
                    0 => return Ok(()),
                    n => received.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
        })
    };

    thread::sleep(WARM_UP);
    let (from, begin) = (received.load(Ordering::Relaxed), Instant::now());
    thread::sleep(window);
    let bytes = received.load(Ordering::Relaxed) - from;
    let elapsed = begin.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // The writer ends after its current write, closing its socket; EOF then ends the relay and
    // the reader in turn.
    let joined = [Some(writer), relay_thread, Some(reader)];
    for t in joined.into_iter().flatten() {
        t.join().map_err(|_| "loopback-ceiling thread panicked")??;
    }
    Ok(bytes as f64 / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn latency_mode_times_every_message_through_the_relay() {
        let args = Args::parse_from(["lepus-perf", "--loopback-ceiling", "-r", "2000", "-s", "64", "-z", "1"]);
        let s = measure(&args).expect("latency floor measured");
        assert_eq!(s.mode, "loopback-latency");
        assert_eq!(s.message_size, 64);
        // Messages sent during the warm-up are not timed; every timed one was sent.
        assert!(s.received > 0 && s.received <= s.published, "received {} of {}", s.received, s.published);
        let p = [s.latency_us_p50, s.latency_us_p99, s.latency_us_p999, s.latency_us_max].map(|v| v.expect("set"));
        assert!(p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]), "percentiles in order: {p:?}");
        assert!(s.loopback_relay_bytes_per_s.is_none());
    }
}
