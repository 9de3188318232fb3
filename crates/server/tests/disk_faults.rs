//! The data directory's disk fails and recovers under a running broker, through a real
//! client (lapin). While the message store cannot write (ENOSPC injected through its backend
//! seam), persistent publishes to a durable queue are nacked; while the metadata store cannot
//! write, a durable `queue.declare` closes the connection with 541. Once the fault clears,
//! publishes are confirmed and declares work again without a restart, and a restart finds
//! every message exactly once.

#[path = "common/clients.rs"]
mod clients;
mod common;

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clients::*;
use common::*;
use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lepus_broker::durability::CommitWaker;
use lepus_server::{Config, Server, StorageBackends};
use lepus_store::backend::FsBackend;
use lepus_store::fault::{Fault, FaultBackend, Site};
use lepus_store::meta::BackendFactory;
use redb::StorageBackend;
use redb::backends::FileBackend;

/// The metadata file, failing every change with ENOSPC while `full` is set.
#[derive(Debug)]
struct FlakyMetaFile {
    file: FileBackend,
    full: Arc<AtomicBool>,
}

impl FlakyMetaFile {
    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::Acquire) { Err(Fault::NoSpace.error()) } else { Ok(()) }
    }
}

impl StorageBackend for FlakyMetaFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
}

struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Woken(tokio::sync::mpsc::UnboundedSender<()>);

impl CommitWaker for Woken {
    fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// Has the store retry now (no timer involved) and waits, commit by commit, until it is
/// healthy again.
async fn until_the_store_recovers(broker: &Broker) {
    let durability = broker.service.durability();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let waker = Arc::new(Woken(tx));
    loop {
        durability.wake_after_commit(waker.clone());
        if !durability.failed() {
            return;
        }
        durability.retry_now();
        guard("a store retry", rx.recv()).await;
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_and_refuses_durable_declares_until_it_has_room_again_without_a_restart() {
    let dir = DataDir(std::env::temp_dir().join(uniq("lepus-disk-faults")));
    // Retries only when the test asks for one.
    let config = Config { data_dir: Some(dir.0.clone()), store_retry_interval_ms: 3_600_000, ..test_config() };
    let messages = FaultBackend::new(Arc::new(FsBackend));
    let meta_full = Arc::new(AtomicBool::new(false));
    let (meta_path, full) = (dir.0.join("meta.redb"), meta_full.clone());
    let meta: BackendFactory = Arc::new(move || {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&meta_path)?;
        let file = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Box::new(FlakyMetaFile { file, full: full.clone() }) as Box<dyn StorageBackend>)
    });
    let backends = StorageBackends { messages: Arc::new(messages.clone()), meta: Some(meta) };
    let broker = run_bound(Server::bind_with_storage(config.clone(), backends).await.expect("binds"));

    let conn = lconn(&broker).await;
    let ch = lconfirm_chan(&conn).await;
    ldeclare(&ch, "q", durable(), FieldTable::default()).await;
    assert!(lpub_props(&ch, "", "q", b"before", persistent()).await.is_ack());

    messages.inject(Site::Write, Fault::NoSpace);
    meta_full.store(true, Ordering::Release);
    assert!(lpub_props(&ch, "", "q", b"during", persistent()).await.is_nack(), "not stored: nacked");
    assert!(lpub_props(&ch, "", "q", b"during 2", persistent()).await.is_nack(), "still failing: nacked");
    assert!(lpub_props(&ch, "", "q", b"transient", BasicProperties::default()).await.is_ack(), "not stored anyway");
    let other = lconn(&broker).await;
    let other_ch = lchan(&other).await;
    let refused = guard("queue.declare", other_ch.queue_declare("q2".into(), durable(), FieldTable::default())).await;
    assert_eq!(amqp_err(&refused.expect_err("cannot be stored")).0, 541);

    messages.clear();
    meta_full.store(false, Ordering::Release);
    until_the_store_recovers(&broker).await;
    assert!(lpub_props(&ch, "", "q", b"after", persistent()).await.is_ack(), "confirmed again, no restart");
    let other = lconn(&broker).await;
    let other_ch = lchan(&other).await;
    ldeclare(&other_ch, "q2", durable(), FieldTable::default()).await;
    lclose(&conn).await;
    lclose(&other).await;
    broker.stop().await;

    // The nacked messages stayed queued and were written by the retry; nothing twice.
    let broker = start_with(config).await;
    let conn = lconn(&broker).await;
    let ch = lchan(&conn).await;
    assert_eq!(
        ldrain(&ch, "q").await,
        [b"before".to_vec(), b"during".to_vec(), b"during 2".to_vec(), b"after".to_vec()]
    );
    assert_eq!(lcount(&ch, "q2").await.0, 0, "the durable declare made after the fault survived");
    lclose(&conn).await;
    broker.stop().await;
}
