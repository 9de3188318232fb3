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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::Args;
use crate::client::Result;
use crate::stats::Summary;

/// Read buffer of the relay and the reader: as large as the largest read a busy socket
/// returns, so neither is slowed by short reads.
const READ_BUFFER_BYTES: usize = 256 * 1024;

const WARM_UP: Duration = Duration::from_secs(1);

/// Measures both rates and returns them in a summary (`loopback_*_bytes_per_s`).
pub fn measure(args: &Args) -> Result<Summary> {
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

/// Bytes per second arriving at the reader over `window`, through a relay or not.
fn rate(write_bytes: usize, window: Duration, relay: bool) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));

    let writer = {
        let (addr, stop) = (listener.local_addr()?, stop.clone());
        thread::spawn(move || -> std::io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            let chunk = vec![0x5au8; write_bytes];
            while !stop.load(Ordering::Relaxed) {
                s.write_all(&chunk)?;
            }
            Ok(())
        })
    };
    let (inbound, _) = listener.accept()?;
    let (source, relay_thread) = if relay {
        let out_listener = TcpListener::bind("127.0.0.1:0")?;
        let mut out = TcpStream::connect(out_listener.local_addr()?)?;
        out.set_nodelay(true)?;
        let (source, _) = out_listener.accept()?;
        let mut inbound = inbound;
        let t = thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; READ_BUFFER_BYTES];
            loop {
                match inbound.read(&mut buf)? {
                    0 => return Ok(()),
                    n => out.write_all(&buf[..n])?,
                }
            }
        });
        (source, Some(t))
    } else {
        (inbound, None)
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
