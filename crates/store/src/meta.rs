//! The durable metadata store: virtual hosts, durable exchanges, durable queues, their bindings,
//! users, policies and the queue id counter, in one redb file.
//!
//! The broker calls [`MetaStore::apply`] while it handles a declare, delete, bind or unbind and
//! sends the `*-ok` reply only after it returns. Every write transaction therefore commits with
//! [`Durability::Immediate`]: when `apply` or [`MetaStore::next_queue_id`] returns `Ok`, the change
//! is on disk and survives a crash. Each call is one transaction, so a batch of changes is applied
//! entirely or not at all. On restart [`MetaStore::load`] returns everything.
//!
//! This module owns the metadata only. Messages live in the per-queue logs ([`crate::log`]); a
//! queue's [`QueueRecord::id`] names its log directory.
//!
//! # Layout
//!
//! The tables, the key and value encodings, the cascades and the format version are specified
//! once, in STORAGE.md ("Metadata store"); this module implements that text. In short: data
//! tables map length-prefixed keys (`s16 vhost, s16 name`, …) to values that start with a
//! version byte, decoding is bounds-checked ([`StoreError::CorruptMeta`], never a panic), and
//! [`MetaStore::open`] refuses a file with a newer [`FORMAT_VERSION`] without writing to it.
//!
//! # I/O errors
//!
//! After an I/O error redb refuses every later transaction (`PreviousIo`). The store then
//! marks itself broken and reopens the file before its next use: redb's repair brings it
//! back to its last committed transaction. While the cause lasts (a full disk), each call
//! fails and tries to reopen again; once it is gone, calls succeed without a restart. The
//! failed call's changes were never committed, so nothing half-applied survives.
//!
//! # Queue ids
//!
//! `counters["next_queue_id"]` is the next id [`MetaStore::next_queue_id`] hands out (1 when
//! absent). Each call commits the increment before returning, so an id is never handed out twice,
//! even across restarts. [`Change::PutQueue`] also raises the counter above the stored queue's id,
//! so no id at or below one ever stored is handed out, wherever the caller got it from.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend, Table, TableDefinition,
};

use crate::error::{Result, StoreError};

/// The version of the table layout and value encoding this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The leading byte of every value in a data table.
const VALUE_VERSION: u8 = 1;

const FORMAT: TableDefinition<&str, u32> = TableDefinition::new("format");
const FORMAT_KEY: &str = "version";
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_QUEUE_ID: &str = "next_queue_id";
/// Set (to 1) by the first stored user: users have been set up, so no default user is due.
const USERS_INITIALISED: &str = "users_initialised";
/// Set (to 1) by the first stored permission: a data directory from before permissions
/// existed has users but not this, and its users keep the access they had (everything).
const PERMISSIONS_INITIALISED: &str = "permissions_initialised";

const VHOSTS_NAME: &str = "vhosts";
const EXCHANGES_NAME: &str = "exchanges";
const QUEUES_NAME: &str = "queues";
const BINDINGS_NAME: &str = "bindings";
const BY_DESTINATION_NAME: &str = "bindings_by_destination";
const USERS_NAME: &str = "users";
const PERMISSIONS_NAME: &str = "permissions";
const TOPIC_PERMISSIONS_NAME: &str = "topic_permissions";
const LIMITS_NAME: &str = "limits";
const POLICIES_NAME: &str = "policies";
const VHOST_METADATA_NAME: &str = "vhost_metadata";

type DataTable = TableDefinition<'static, &'static [u8], &'static [u8]>;
const VHOSTS: DataTable = TableDefinition::new(VHOSTS_NAME);
const EXCHANGES: DataTable = TableDefinition::new(EXCHANGES_NAME);
const QUEUES: DataTable = TableDefinition::new(QUEUES_NAME);
const BINDINGS: DataTable = TableDefinition::new(BINDINGS_NAME);
const BY_DESTINATION: DataTable = TableDefinition::new(BY_DESTINATION_NAME);
const USERS: DataTable = TableDefinition::new(USERS_NAME);
const PERMISSIONS: DataTable = TableDefinition::new(PERMISSIONS_NAME);
const TOPIC_PERMISSIONS: DataTable = TableDefinition::new(TOPIC_PERMISSIONS_NAME);
const LIMITS: DataTable = TableDefinition::new(LIMITS_NAME);
const POLICIES: DataTable = TableDefinition::new(POLICIES_NAME);
const VHOST_METADATA: DataTable = TableDefinition::new(VHOST_METADATA_NAME);

/// Kind tag of a policy key: a user policy.
const TAG_POLICY: u8 = b'p';
/// Kind tag of a policy key: an operator policy.
const TAG_OPERATOR_POLICY: u8 = b'o';

/// Destination tag of a binding to an exchange.
const TAG_EXCHANGE: u8 = b'e';
/// Destination tag of a binding to a queue.
const TAG_QUEUE: u8 = b'q';

const EXCHANGE_AUTO_DELETE: u8 = 1 << 0;
const EXCHANGE_INTERNAL: u8 = 1 << 1;
const QUEUE_AUTO_DELETE: u8 = 1 << 0;

/// The value of a vhost, a binding and a binding index entry: the version byte alone.
const MARKER: &[u8] = &[VALUE_VERSION];

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExchangeRecord {
    pub vhost: String,
    pub name: Vec<u8>,
    /// `direct`, `fanout`, `topic`, `headers`, …
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    /// The AMQP field table, encoded by the caller; opaque here.
    pub arguments: Vec<u8>,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueRecord {
    pub vhost: String,
    pub name: Vec<u8>,
    /// Names the queue's message log directory; from [`MetaStore::next_queue_id`].
    pub id: u64,
    pub auto_delete: bool,
    /// The AMQP field table, encoded by the caller; opaque here.
    pub arguments: Vec<u8>,
}

/// A binding between two durable entities of one vhost. The whole record is its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingRecord {
    pub vhost: String,
    /// The source exchange.
    pub source: Vec<u8>,
    pub destination: Destination,
    pub routing_key: Vec<u8>,
    /// The AMQP field table, encoded by the caller; opaque here.
    pub arguments: Vec<u8>,
}

/// A user: name, password hash (as the broker stores it; opaque here) and tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: Vec<u8>,
    pub tags: Vec<String>,
}

/// A user's configure, write and read expressions in a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A user's write and read expressions on routing keys through one topic exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPermissionRecord {
    pub user: String,
    pub vhost: String,
    pub exchange: Vec<u8>,
    pub write: String,
    pub read: String,
}

/// Whose limits a [`LimitsRecord`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Vhost,
    User,
}

impl LimitScope {
    fn tag(self) -> u8 {
        match self {
            LimitScope::Vhost => b'v',
            LimitScope::User => b'u',
        }
    }
}

/// A vhost's or a user's limits, by name (`max-connections`, …); opaque here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitsRecord {
    pub scope: LimitScope,
    pub name: String,
    pub limits: Vec<(String, i64)>,
}

/// A policy or operator policy of a vhost. The broker encodes its pattern, apply-to, priority
/// and definition into `body`; opaque here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRecord {
    pub vhost: String,
    /// An operator policy (RabbitMQ's `set_operator_policy`), not a user policy.
    pub operator: bool,
    pub name: String,
    pub body: Vec<u8>,
}

/// What a binding routes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(Vec<u8>),
    Exchange(Vec<u8>),
}

impl Destination {
    fn tag_and_name(&self) -> (u8, &[u8]) {
        match self {
            Destination::Queue(name) => (TAG_QUEUE, name),
            Destination::Exchange(name) => (TAG_EXCHANGE, name),
        }
    }
}

/// One change to the metadata; [`MetaStore::apply`] applies a slice of them in order, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds a vhost (no-op if present).
    PutVhost(String),
    /// Removes the vhost and every exchange, queue and binding in it.
    DeleteVhost(String),
    /// Adds or overwrites the exchange with this vhost and name.
    PutExchange(ExchangeRecord),
    /// Removes the exchange and every binding from it or to it.
    DeleteExchange { vhost: String, name: Vec<u8> },
    /// Adds or overwrites the queue with this vhost and name.
    PutQueue(QueueRecord),
    /// Removes the queue and every binding to it.
    DeleteQueue { vhost: String, name: Vec<u8> },
    /// Adds the binding (no-op if present).
    PutBinding(BindingRecord),
    /// Removes the binding (no-op if absent).
    DeleteBinding(BindingRecord),
    /// Adds or overwrites the user with this name.
    PutUser(UserRecord),
    /// Removes the user (no-op if absent), with its permissions and limits.
    DeleteUser(String),
    /// Adds or overwrites a user's permissions in a vhost.
    PutPermission(PermissionRecord),
    /// Removes a user's permissions in a vhost (no-op if absent).
    DeletePermission { user: String, vhost: String },
    /// Adds or overwrites a user's topic permission on one exchange.
    PutTopicPermission(TopicPermissionRecord),
    /// Removes a user's topic permission on one exchange, or (`None`) on all in the vhost.
    DeleteTopicPermission { user: String, vhost: String, exchange: Option<Vec<u8>> },
    /// Sets a vhost's or a user's limits; an empty list removes them.
    PutLimits(LimitsRecord),
    /// Adds or overwrites the policy of this vhost, kind and name.
    PutPolicy(PolicyRecord),
    /// Removes the policy (no-op if absent).
    DeletePolicy { vhost: String, operator: bool, name: String },
    /// Sets a vhost's metadata (description, tags, default queue type), which the broker
    /// encodes into `body`; opaque here. Removed with the vhost.
    PutVhostMetadata { vhost: String, body: Vec<u8> },
}

/// Everything in the store, each list sorted by its key (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub vhosts: Vec<String>,
    pub exchanges: Vec<ExchangeRecord>,
    pub queues: Vec<QueueRecord>,
    pub bindings: Vec<BindingRecord>,
    pub users: Vec<UserRecord>,
    /// A user was ever stored (even if all were deleted since): a new node's default user is
    /// not due.
    pub users_initialised: bool,
    pub permissions: Vec<PermissionRecord>,
    pub topic_permissions: Vec<TopicPermissionRecord>,
    pub limits: Vec<LimitsRecord>,
    /// A permission was ever stored; false in a data directory from before permissions.
    pub permissions_initialised: bool,
    /// Policies and operator policies, by vhost, kind and name.
    pub policies: Vec<PolicyRecord>,
    /// Vhosts' metadata bodies (see [`Change::PutVhostMetadata`]), by vhost.
    pub vhost_metadata: Vec<(String, Vec<u8>)>,
}

/// The metadata store: one redb database file. See the module doc.
///
/// Calls may come from any thread; write transactions are serialised by redb.
pub struct MetaStore {
    /// `None` while a reopen after an I/O error has not succeeded yet.
    db: RwLock<Option<Database>>,
    /// An I/O error happened: reopen before the next use.
    broken: AtomicBool,
    path: PathBuf,
    backend: Option<BackendFactory>,
}

/// Makes the storage a [`MetaStore`] opens (tests inject faults through it); without one,
/// the file at the store's path.
pub type BackendFactory = Arc<dyn Fn() -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

impl fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl MetaStore {
    /// Opens the store at `path`, creating the file if it is missing.
    ///
    /// Writes [`FORMAT_VERSION`] into a new file; a file of a newer format is refused with
    /// [`StoreError::UnsupportedVersion`]. redb checks the whole file's integrity on open, so a
    /// damaged file is an error rather than a panic later. redb locks the file: a second open,
    /// from this process or another, fails.
    pub fn open(path: &Path) -> Result<MetaStore> {
        MetaStore::open_with(path, None)
    }

    /// [`MetaStore::open`] on the storage `backend` makes (each reopen makes it again).
    pub fn open_with(path: &Path, backend: Option<BackendFactory>) -> Result<MetaStore> {
        let db = open_database(path, backend.as_ref())?;
        let store =
            MetaStore { db: RwLock::new(Some(db)), broken: AtomicBool::new(false), path: path.to_path_buf(), backend };
        store.init()?;
        tracing::debug!(path = %path.display(), "metadata store open");
        Ok(store)
    }

    /// The database, reopened first if an I/O error broke it.
    fn db(&self) -> Result<MappedRwLockReadGuard<'_, Database>> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        RwLockReadGuard::try_map(self.db.read(), Option::as_ref)
            .map_err(|_| StoreError::MetaIo(format!("{} is not open", self.path.display())))
    }

    fn reopen(&self) -> Result<()> {
        let mut db = self.db.write();
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        // redb holds a lock on the file: the old handle goes first.
        drop(db.take());
        *db = Some(open_database(&self.path, self.backend.as_ref())?);
        self.broken.store(false, Ordering::Release);
        tracing::info!(path = %self.path.display(), "metadata store reopened after an I/O error");
        Ok(())
    }

    /// Runs `f`; an I/O error marks the store for a reopen.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = f();
        if let Err(StoreError::MetaIo(e)) = &result
            && !self.broken.swap(true, Ordering::AcqRel)
        {
            tracing::error!(path = %self.path.display(), error = %e, "metadata store I/O error; reopening it at its next use");
        }
        result
    }

    /// Checks or writes the format version and creates every table, in one transaction.
    fn init(&self) -> Result<()> {
        self.guarded(|| self.init_format())
    }

    fn init_format(&self) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut format = txn.open_table(FORMAT).map_err(db_err)?;
            let found = format.get(FORMAT_KEY).map_err(db_err)?.map(|v| v.value());
            match found {
                None => {
                    format.insert(FORMAT_KEY, FORMAT_VERSION).map_err(db_err)?;
                }
                Some(FORMAT_VERSION) => {}
                // Returning drops the transaction, which aborts it: nothing is written.
                Some(found) if found > FORMAT_VERSION => {
                    return Err(StoreError::UnsupportedVersion {
                        path: self.path.clone(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                Some(found) => {
                    return Err(StoreError::CorruptMeta {
                        table: "format",
                        detail: format!("version {found} was never written by any build"),
                    });
                }
            }
            // Create the tables now so that readers never meet a missing one.
            Tables::open(&txn)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Applies `changes` in order in one write transaction, durable when this returns `Ok`.
    ///
    /// On error nothing of the batch is applied. See [`Change`] for each change's meaning;
    /// deleting something absent is not an error. A name longer than 65535 bytes, or arguments
    /// longer than `u32::MAX` bytes, fail the batch with [`StoreError::Meta`].
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.guarded(|| {
            let txn = self.begin_write()?;
            {
                let mut tables = Tables::open(&txn)?;
                for change in changes {
                    tables.apply(change)?;
                }
            }
            txn.commit().map_err(db_err)
        })
    }

    /// Hands out a new queue id: 1 first, then strictly larger on every call, never one handed
    /// out before or held by a stored queue, even across restarts. Costs one durable commit.
    pub fn next_queue_id(&self) -> Result<u64> {
        self.guarded(|| {
            let txn = self.begin_write()?;
            let id = {
                let mut counters = txn.open_table(COUNTERS).map_err(db_err)?;
                let id = read_next_queue_id(&counters)?;
                if id == u64::MAX {
                    return Err(StoreError::Meta("queue ids are exhausted".to_string()));
                }
                counters.insert(NEXT_QUEUE_ID, id + 1).map_err(db_err)?;
                id
            };
            txn.commit().map_err(db_err)?;
            Ok(id)
        })
    }

    /// The next queue id as stored, without taking it: above every id a committed
    /// [`Change::PutQueue`] or [`MetaStore::next_queue_id`] used. A caller that hands out ids
    /// from here in memory needs no commit of its own per id: the `PutQueue` that stores a
    /// queue raises the counter in the same transaction.
    pub fn stored_next_queue_id(&self) -> Result<u64> {
        self.guarded(|| {
            let txn = self.db()?.begin_read().map_err(db_err)?;
            match txn.open_table(COUNTERS) {
                Ok(counters) => read_next_queue_id(&counters),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(1),
                Err(e) => Err(db_err(e)),
            }
        })
    }

    /// Reads everything, each list sorted by its key (see the module doc), from one consistent
    /// snapshot of the store.
    pub fn load(&self) -> Result<Snapshot> {
        self.guarded(|| self.load_snapshot())
    }

    fn load_snapshot(&self) -> Result<Snapshot> {
        let txn = self.db()?.begin_read().map_err(db_err)?;
        let mut snapshot = Snapshot::default();
        scan(&txn, VHOSTS, |key, value| {
            snapshot.vhosts.push(decode_vhost(key, value)?);
            Ok(())
        })?;
        scan(&txn, EXCHANGES, |key, value| {
            snapshot.exchanges.push(decode_exchange(key, value)?);
            Ok(())
        })?;
        scan(&txn, QUEUES, |key, value| {
            snapshot.queues.push(decode_queue(key, value)?);
            Ok(())
        })?;
        scan(&txn, BINDINGS, |key, value| {
            snapshot.bindings.push(decode_binding(key, value)?);
            Ok(())
        })?;
        scan(&txn, USERS, |key, value| {
            snapshot.users.push(decode_user(key, value)?);
            Ok(())
        })?;
        scan(&txn, PERMISSIONS, |key, value| {
            snapshot.permissions.push(decode_permission(key, value)?);
            Ok(())
        })?;
        scan(&txn, TOPIC_PERMISSIONS, |key, value| {
            snapshot.topic_permissions.push(decode_topic_permission(key, value)?);
            Ok(())
        })?;
        scan(&txn, LIMITS, |key, value| {
            snapshot.limits.push(decode_limits(key, value)?);
            Ok(())
        })?;
        scan(&txn, POLICIES, |key, value| {
            snapshot.policies.push(decode_policy(key, value)?);
            Ok(())
        })?;
        scan(&txn, VHOST_METADATA, |key, value| {
            snapshot.vhost_metadata.push(decode_vhost_metadata(key, value)?);
            Ok(())
        })?;
        let counters = txn.open_table(COUNTERS).map_err(db_err)?;
        snapshot.users_initialised = counters.get(USERS_INITIALISED).map_err(db_err)?.is_some();
        snapshot.permissions_initialised = counters.get(PERMISSIONS_INITIALISED).map_err(db_err)?.is_some();
        Ok(snapshot)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db()?.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        Ok(txn)
    }
}

/// Maps any redb error (they all convert into [`redb::Error`]) to [`StoreError::MetaIo`]
/// (the database must be reopened) or [`StoreError::Meta`].
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        e @ (redb::Error::Io(_) | redb::Error::PreviousIo) => StoreError::MetaIo(e.to_string()),
        e => StoreError::Meta(e.to_string()),
    }
}

/// A storage made by a [`BackendFactory`] (no locking: the data directory's lock already
/// keeps other brokers out).
#[derive(Debug)]
struct Boxed(Box<dyn StorageBackend>);

impl StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
}

fn open_database(path: &Path, backend: Option<&BackendFactory>) -> Result<Database> {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(true);
    let opened = match backend {
        Some(make) => {
            let storage = make().map_err(|e| StoreError::MetaIo(format!("opening {}: {e}", path.display())))?;
            builder.create_with_backend(Boxed(storage))
        }
        None => builder.create(path),
    };
    opened.map_err(|e| match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(e)) => {
            StoreError::MetaIo(format!("opening {}: {e}", path.display()))
        }
        e => StoreError::Meta(format!("opening {}: {e}", path.display())),
    })
}

fn read_next_queue_id(counters: &impl ReadableTable<&'static str, u64>) -> Result<u64> {
    match counters.get(NEXT_QUEUE_ID).map_err(db_err)?.map(|v| v.value()) {
        None => Ok(1),
        Some(0) => {
            Err(StoreError::CorruptMeta { table: "counters", detail: "next_queue_id is 0; ids start at 1".to_string() })
        }
        Some(next) => Ok(next),
    }
}

/// Calls `f` with every key and value of `table`, in key order.
fn scan(txn: &ReadTransaction, table: DataTable, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
    let table = txn.open_table(table).map_err(db_err)?;
    for entry in table.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        f(key.value(), value.value())?;
    }
    Ok(())
}

/// The data tables of one write transaction.
struct Tables<'txn> {
    vhosts: Table<'txn, &'static [u8], &'static [u8]>,
    exchanges: Table<'txn, &'static [u8], &'static [u8]>,
    queues: Table<'txn, &'static [u8], &'static [u8]>,
    bindings: Table<'txn, &'static [u8], &'static [u8]>,
    by_destination: Table<'txn, &'static [u8], &'static [u8]>,
    counters: Table<'txn, &'static str, u64>,
    users: Table<'txn, &'static [u8], &'static [u8]>,
    permissions: Table<'txn, &'static [u8], &'static [u8]>,
    topic_permissions: Table<'txn, &'static [u8], &'static [u8]>,
    limits: Table<'txn, &'static [u8], &'static [u8]>,
    policies: Table<'txn, &'static [u8], &'static [u8]>,
    vhost_metadata: Table<'txn, &'static [u8], &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Tables<'txn>> {
        Ok(Tables {
            vhosts: txn.open_table(VHOSTS).map_err(db_err)?,
            exchanges: txn.open_table(EXCHANGES).map_err(db_err)?,
            queues: txn.open_table(QUEUES).map_err(db_err)?,
            bindings: txn.open_table(BINDINGS).map_err(db_err)?,
            by_destination: txn.open_table(BY_DESTINATION).map_err(db_err)?,
            counters: txn.open_table(COUNTERS).map_err(db_err)?,
            users: txn.open_table(USERS).map_err(db_err)?,
            permissions: txn.open_table(PERMISSIONS).map_err(db_err)?,
            topic_permissions: txn.open_table(TOPIC_PERMISSIONS).map_err(db_err)?,
            limits: txn.open_table(LIMITS).map_err(db_err)?,
            policies: txn.open_table(POLICIES).map_err(db_err)?,
            vhost_metadata: txn.open_table(VHOST_METADATA).map_err(db_err)?,
        })
    }

    fn apply(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::PutVhost(vhost) => {
                self.vhosts.insert(vhost_key(vhost)?.as_slice(), MARKER).map_err(db_err)?;
            }
            Change::DeleteVhost(vhost) => {
                let prefix = vhost_key(vhost)?;
                for table in [
                    &mut self.vhosts,
                    &mut self.exchanges,
                    &mut self.queues,
                    &mut self.bindings,
                    &mut self.by_destination,
                    &mut self.policies,
                    &mut self.vhost_metadata,
                ] {
                    delete_prefix(table, &prefix)?;
                }
                self.delete_access_in(vhost)?;
                self.limits.remove(limits_key(LimitScope::Vhost, vhost)?.as_slice()).map_err(db_err)?;
            }
            Change::PutExchange(exchange) => {
                let key = entity_key(&exchange.vhost, &exchange.name)?;
                self.exchanges.insert(key.as_slice(), encode_exchange(exchange)?.as_slice()).map_err(db_err)?;
            }
            Change::DeleteExchange { vhost, name } => {
                // The exchange's key is also the prefix of the bindings from it.
                let key = entity_key(vhost, name)?;
                self.exchanges.remove(key.as_slice()).map_err(db_err)?;
                self.delete_bindings_from(&key)?;
                self.delete_bindings_to(vhost, TAG_EXCHANGE, name)?;
            }
            Change::PutQueue(queue) => {
                let key = entity_key(&queue.vhost, &queue.name)?;
                self.queues.insert(key.as_slice(), encode_queue(queue)?.as_slice()).map_err(db_err)?;
                if queue.id >= read_next_queue_id(&self.counters)? {
                    self.counters.insert(NEXT_QUEUE_ID, queue.id.saturating_add(1)).map_err(db_err)?;
                }
            }
            Change::DeleteQueue { vhost, name } => {
                self.queues.remove(entity_key(vhost, name)?.as_slice()).map_err(db_err)?;
                self.delete_bindings_to(vhost, TAG_QUEUE, name)?;
            }
            Change::PutBinding(binding) => {
                let parts = BindingParts::of(binding);
                self.bindings.insert(parts.forward_key()?.as_slice(), MARKER).map_err(db_err)?;
                self.by_destination.insert(parts.reverse_key()?.as_slice(), MARKER).map_err(db_err)?;
            }
            Change::DeleteBinding(binding) => {
                let parts = BindingParts::of(binding);
                self.bindings.remove(parts.forward_key()?.as_slice()).map_err(db_err)?;
                self.by_destination.remove(parts.reverse_key()?.as_slice()).map_err(db_err)?;
            }
            Change::PutUser(user) => {
                self.users.insert(user_key(&user.name)?.as_slice(), encode_user(user)?.as_slice()).map_err(db_err)?;
                self.counters.insert(USERS_INITIALISED, 1).map_err(db_err)?;
            }
            Change::DeleteUser(name) => {
                let key = user_key(name)?;
                self.users.remove(key.as_slice()).map_err(db_err)?;
                delete_prefix(&mut self.permissions, &key)?;
                delete_prefix(&mut self.topic_permissions, &key)?;
                self.limits.remove(limits_key(LimitScope::User, name)?.as_slice()).map_err(db_err)?;
            }
            Change::PutPermission(p) => {
                let key = user_vhost_key(&p.user, &p.vhost)?;
                self.permissions.insert(key.as_slice(), encode_permission(p)?.as_slice()).map_err(db_err)?;
                self.counters.insert(PERMISSIONS_INITIALISED, 1).map_err(db_err)?;
            }
            Change::DeletePermission { user, vhost } => {
                self.permissions.remove(user_vhost_key(user, vhost)?.as_slice()).map_err(db_err)?;
            }
            Change::PutTopicPermission(p) => {
                let mut key = user_vhost_key(&p.user, &p.vhost)?;
                put_s16(&mut key, "exchange name", &p.exchange)?;
                self.topic_permissions
                    .insert(key.as_slice(), encode_topic_permission(p)?.as_slice())
                    .map_err(db_err)?;
            }
            Change::DeleteTopicPermission { user, vhost, exchange } => {
                let mut key = user_vhost_key(user, vhost)?;
                match exchange {
                    Some(x) => {
                        put_s16(&mut key, "exchange name", x)?;
                        self.topic_permissions.remove(key.as_slice()).map_err(db_err)?;
                    }
                    None => delete_prefix(&mut self.topic_permissions, &key)?,
                }
            }
            Change::PutLimits(l) => {
                let key = limits_key(l.scope, &l.name)?;
                if l.limits.is_empty() {
                    self.limits.remove(key.as_slice()).map_err(db_err)?;
                } else {
                    self.limits.insert(key.as_slice(), encode_limits(l)?.as_slice()).map_err(db_err)?;
                }
            }
            Change::PutPolicy(policy) => {
                let key = policy_key(&policy.vhost, policy.operator, &policy.name)?;
                let mut value = Vec::with_capacity(5 + policy.body.len());
                value.push(VALUE_VERSION);
                put_s32(&mut value, "policy", &policy.body)?;
                self.policies.insert(key.as_slice(), value.as_slice()).map_err(db_err)?;
            }
            Change::DeletePolicy { vhost, operator, name } => {
                self.policies.remove(policy_key(vhost, *operator, name)?.as_slice()).map_err(db_err)?;
            }
            Change::PutVhostMetadata { vhost, body } => {
                let mut value = Vec::with_capacity(5 + body.len());
                value.push(VALUE_VERSION);
                put_s32(&mut value, "vhost metadata", body)?;
                self.vhost_metadata.insert(vhost_key(vhost)?.as_slice(), value.as_slice()).map_err(db_err)?;
            }
        }
        Ok(())
    }

    /// Deletes every user's permissions and topic permissions in `vhost` (keyed by user first,
    /// so this scans them; vhosts are deleted rarely).
    fn delete_access_in(&mut self, vhost: &str) -> Result<()> {
        for table in [&mut self.permissions, &mut self.topic_permissions] {
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                let mut r = Reader::new(key.value(), PERMISSIONS_NAME, "key");
                r.s16()?;
                if r.s16()? == vhost.as_bytes() {
                    doomed.push(key.value().to_vec());
                }
            }
            for key in doomed {
                table.remove(key.as_slice()).map_err(db_err)?;
            }
        }
        Ok(())
    }

    /// Deletes every binding whose forward key starts with `prefix` (`s16 vhost, s16 source`).
    fn delete_bindings_from(&mut self, prefix: &[u8]) -> Result<()> {
        for key in take_prefix(&mut self.bindings, prefix)? {
            let parts = BindingParts::parse_forward(&key)?;
            self.by_destination.remove(parts.reverse_key()?.as_slice()).map_err(db_err)?;
        }
        Ok(())
    }

    /// Deletes every binding of `vhost` to the destination `tag`, `name`.
    fn delete_bindings_to(&mut self, vhost: &str, tag: u8, name: &[u8]) -> Result<()> {
        let mut prefix = vhost_key(vhost)?;
        prefix.push(tag);
        put_s16(&mut prefix, "destination name", name)?;
        for key in take_prefix(&mut self.by_destination, &prefix)? {
            let parts = BindingParts::parse_reverse(&key)?;
            self.bindings.remove(parts.forward_key()?.as_slice()).map_err(db_err)?;
        }
        Ok(())
    }
}

/// The least byte string above every string that starts with `prefix`, if there is one: drop
/// trailing 0xff bytes and increment the last remaining byte.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Removes every key starting with `prefix` from `table` and returns the removed keys.
fn take_prefix(table: &mut Table<'_, &'static [u8], &'static [u8]>, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
    let end = prefix_end(prefix);
    let range = (Bound::Included(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
    let removed = table.extract_from_if::<&[u8], _>(range, |_, _| true).map_err(db_err)?;
    removed.map(|entry| entry.map(|(key, _)| key.value().to_vec()).map_err(db_err)).collect()
}

/// Removes every key starting with `prefix` from `table`.
fn delete_prefix(table: &mut Table<'_, &'static [u8], &'static [u8]>, prefix: &[u8]) -> Result<()> {
    let end = prefix_end(prefix);
    let range = (Bound::Included(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
    table.retain_in::<&[u8], _>(range, |_, _| false).map_err(db_err)
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn too_long(what: &str, len: usize, limit: u64) -> StoreError {
    StoreError::Meta(format!("{what} is {len} bytes long; the metadata store takes at most {limit}"))
}

/// Appends `s16 bytes`.
fn put_s16(buf: &mut Vec<u8>, what: &str, bytes: &[u8]) -> Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| too_long(what, bytes.len(), u16::MAX.into()))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// Appends `s32 bytes`.
fn put_s32(buf: &mut Vec<u8>, what: &str, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| too_long(what, bytes.len(), u32::MAX.into()))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// `s16 vhost`: the key of a vhost and the prefix of every key in it.
fn vhost_key(vhost: &str) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(2 + vhost.len());
    put_s16(&mut key, "vhost name", vhost.as_bytes())?;
    Ok(key)
}

/// `s16 vhost, s16 name`: the key of an exchange or a queue.
fn entity_key(vhost: &str, name: &[u8]) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(4 + vhost.len() + name.len());
    put_s16(&mut key, "vhost name", vhost.as_bytes())?;
    put_s16(&mut key, "name", name)?;
    Ok(key)
}

fn encode_exchange(exchange: &ExchangeRecord) -> Result<Vec<u8>> {
    let mut value = Vec::with_capacity(8 + exchange.kind.len() + exchange.arguments.len());
    value.push(VALUE_VERSION);
    put_s16(&mut value, "exchange kind", exchange.kind.as_bytes())?;
    let mut flags = 0;
    if exchange.auto_delete {
        flags |= EXCHANGE_AUTO_DELETE;
    }
    if exchange.internal {
        flags |= EXCHANGE_INTERNAL;
    }
    value.push(flags);
    put_s32(&mut value, "exchange arguments", &exchange.arguments)?;
    Ok(value)
}

/// `s16 name`: the key of a user.
fn user_key(name: &str) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(2 + name.len());
    put_s16(&mut key, "user name", name.as_bytes())?;
    Ok(key)
}

/// `01, s16 password_hash, s32 tags` (tags joined by `,`, which no tag contains).
fn encode_user(user: &UserRecord) -> Result<Vec<u8>> {
    if let Some(tag) = user.tags.iter().find(|t| t.contains(',')) {
        return Err(StoreError::Meta(format!("user tag {tag:?} contains ','")));
    }
    let tags = user.tags.join(",");
    let mut value = Vec::with_capacity(7 + user.password_hash.len() + tags.len());
    value.push(VALUE_VERSION);
    put_s16(&mut value, "password hash", &user.password_hash)?;
    put_s32(&mut value, "user tags", tags.as_bytes())?;
    Ok(value)
}

/// `s16 user, s16 vhost`: the key of a permission and the prefix of a topic permission's.
fn user_vhost_key(user: &str, vhost: &str) -> Result<Vec<u8>> {
    let mut key = user_key(user)?;
    put_s16(&mut key, "vhost name", vhost.as_bytes())?;
    Ok(key)
}

/// `u8 scope, s16 name`: the key of a vhost's or a user's limits.
fn limits_key(scope: LimitScope, name: &str) -> Result<Vec<u8>> {
    let mut key = vec![scope.tag()];
    put_s16(&mut key, "limits owner", name.as_bytes())?;
    Ok(key)
}

/// `01, s16 configure, s16 write, s16 read`.
fn encode_permission(p: &PermissionRecord) -> Result<Vec<u8>> {
    let mut value = vec![VALUE_VERSION];
    for (what, s) in [("configure", &p.configure), ("write", &p.write), ("read", &p.read)] {
        put_s16(&mut value, what, s.as_bytes())?;
    }
    Ok(value)
}

/// `01, s16 write, s16 read`.
fn encode_topic_permission(p: &TopicPermissionRecord) -> Result<Vec<u8>> {
    let mut value = vec![VALUE_VERSION];
    put_s16(&mut value, "write", p.write.as_bytes())?;
    put_s16(&mut value, "read", p.read.as_bytes())?;
    Ok(value)
}

/// `01, u8 count, (s16 name, i64 value) * count`.
fn encode_limits(l: &LimitsRecord) -> Result<Vec<u8>> {
    let count = u8::try_from(l.limits.len()).map_err(|_| too_long("limits", l.limits.len(), u8::MAX.into()))?;
    let mut value = vec![VALUE_VERSION, count];
    for (name, n) in &l.limits {
        put_s16(&mut value, "limit name", name.as_bytes())?;
        value.extend_from_slice(&n.to_be_bytes());
    }
    Ok(value)
}

/// `s16 vhost, u8 kind, s16 name`: the key of a policy (kind `p`, or `o` for an operator policy).
fn policy_key(vhost: &str, operator: bool, name: &str) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(5 + vhost.len() + name.len());
    put_s16(&mut key, "vhost name", vhost.as_bytes())?;
    key.push(if operator { TAG_OPERATOR_POLICY } else { TAG_POLICY });
    put_s16(&mut key, "policy name", name.as_bytes())?;
    Ok(key)
}

fn encode_queue(queue: &QueueRecord) -> Result<Vec<u8>> {
    let mut value = Vec::with_capacity(14 + queue.arguments.len());
    value.push(VALUE_VERSION);
    value.extend_from_slice(&queue.id.to_be_bytes());
    value.push(if queue.auto_delete { QUEUE_AUTO_DELETE } else { 0 });
    put_s32(&mut value, "queue arguments", &queue.arguments)?;
    Ok(value)
}

/// A binding's components, borrowed from a record or a key.
#[derive(Debug, PartialEq, Eq)]
struct BindingParts<'a> {
    vhost: &'a [u8],
    source: &'a [u8],
    tag: u8,
    destination: &'a [u8],
    routing_key: &'a [u8],
    arguments: &'a [u8],
}

impl<'a> BindingParts<'a> {
    fn of(binding: &'a BindingRecord) -> BindingParts<'a> {
        let (tag, destination) = binding.destination.tag_and_name();
        BindingParts {
            vhost: binding.vhost.as_bytes(),
            source: &binding.source,
            tag,
            destination,
            routing_key: &binding.routing_key,
            arguments: &binding.arguments,
        }
    }

    fn capacity(&self) -> usize {
        13 + self.vhost.len()
            + self.source.len()
            + self.destination.len()
            + self.routing_key.len()
            + self.arguments.len()
    }

    /// The key in `bindings`: `s16 vhost, s16 source, u8 tag, s16 destination, s16 routing_key,
    /// s32 arguments`.
    fn forward_key(&self) -> Result<Vec<u8>> {
        let mut key = Vec::with_capacity(self.capacity());
        put_s16(&mut key, "vhost name", self.vhost)?;
        put_s16(&mut key, "binding source", self.source)?;
        key.push(self.tag);
        put_s16(&mut key, "binding destination", self.destination)?;
        put_s16(&mut key, "routing key", self.routing_key)?;
        put_s32(&mut key, "binding arguments", self.arguments)?;
        Ok(key)
    }

    /// The key in `bindings_by_destination`: `s16 vhost, u8 tag, s16 destination, s16 source,
    /// s16 routing_key, s32 arguments`.
    fn reverse_key(&self) -> Result<Vec<u8>> {
        let mut key = Vec::with_capacity(self.capacity());
        put_s16(&mut key, "vhost name", self.vhost)?;
        key.push(self.tag);
        put_s16(&mut key, "binding destination", self.destination)?;
        put_s16(&mut key, "binding source", self.source)?;
        put_s16(&mut key, "routing key", self.routing_key)?;
        put_s32(&mut key, "binding arguments", self.arguments)?;
        Ok(key)
    }

    fn parse_forward(key: &'a [u8]) -> Result<BindingParts<'a>> {
        let mut r = Reader::new(key, BINDINGS_NAME, "binding key");
        let vhost = r.s16()?;
        let source = r.s16()?;
        let tag = r.tag()?;
        let destination = r.s16()?;
        let routing_key = r.s16()?;
        let arguments = r.s32()?;
        r.finish()?;
        Ok(BindingParts { vhost, source, tag, destination, routing_key, arguments })
    }

    fn parse_reverse(key: &'a [u8]) -> Result<BindingParts<'a>> {
        let mut r = Reader::new(key, BY_DESTINATION_NAME, "binding index key");
        let vhost = r.s16()?;
        let tag = r.tag()?;
        let destination = r.s16()?;
        let source = r.s16()?;
        let routing_key = r.s16()?;
        let arguments = r.s32()?;
        r.finish()?;
        Ok(BindingParts { vhost, source, tag, destination, routing_key, arguments })
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A bounds-checked reader over one key or value; every failure is [`StoreError::CorruptMeta`].
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    table: &'static str,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], table: &'static str, what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, table, what }
    }

    fn corrupt(&self, detail: impl fmt::Display) -> StoreError {
        StoreError::CorruptMeta { table: self.table, detail: format!("{}: {detail}", self.what) }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(self.corrupt(format_args!("needs {n} bytes at offset {}, {left} left", self.pos)));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn s16(&mut self) -> Result<&'a [u8]> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(len.into())
    }

    fn s32(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| self.corrupt(format_args!("length {len} is too large")))?;
        self.take(len)
    }

    fn tag(&mut self) -> Result<u8> {
        let tag = self.u8()?;
        match tag {
            TAG_EXCHANGE | TAG_QUEUE => Ok(tag),
            _ => Err(self.corrupt(format_args!("unknown destination tag {tag:#04x}"))),
        }
    }

    fn utf8(&self, field: &str, bytes: &[u8]) -> Result<String> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.corrupt(format_args!("{field} is not UTF-8: {e}"))),
        }
    }

    fn version(&mut self) -> Result<()> {
        match self.u8()? {
            VALUE_VERSION => Ok(()),
            v => Err(self.corrupt(format_args!("unknown value version {v}"))),
        }
    }

    fn flags(&mut self, known: u8) -> Result<u8> {
        let flags = self.u8()?;
        if flags & !known != 0 {
            return Err(self.corrupt(format_args!("unknown flags {flags:#04x}")));
        }
        Ok(flags)
    }

    fn finish(self) -> Result<()> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(self.corrupt(format_args!("{extra} trailing bytes"))),
        }
    }
}

/// A value that holds the version byte alone.
fn decode_marker(table: &'static str, value: &[u8]) -> Result<()> {
    let mut r = Reader::new(value, table, "value");
    r.version()?;
    r.finish()
}

fn decode_vhost(key: &[u8], value: &[u8]) -> Result<String> {
    let mut r = Reader::new(key, VHOSTS_NAME, "vhost key");
    let vhost = r.s16()?;
    let vhost = r.utf8("vhost", vhost)?;
    r.finish()?;
    decode_marker(VHOSTS_NAME, value)?;
    Ok(vhost)
}

/// Decodes an `s16 vhost, s16 name` key.
fn decode_entity_key(table: &'static str, key: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut r = Reader::new(key, table, "key");
    let vhost = r.s16()?;
    let vhost = r.utf8("vhost", vhost)?;
    let name = r.s16()?.to_vec();
    r.finish()?;
    Ok((vhost, name))
}

fn decode_exchange(key: &[u8], value: &[u8]) -> Result<ExchangeRecord> {
    let (vhost, name) = decode_entity_key(EXCHANGES_NAME, key)?;
    let mut r = Reader::new(value, EXCHANGES_NAME, "value");
    r.version()?;
    let kind = r.s16()?;
    let kind = r.utf8("kind", kind)?;
    let flags = r.flags(EXCHANGE_AUTO_DELETE | EXCHANGE_INTERNAL)?;
    let arguments = r.s32()?.to_vec();
    r.finish()?;
    Ok(ExchangeRecord {
        vhost,
        name,
        kind,
        auto_delete: flags & EXCHANGE_AUTO_DELETE != 0,
        internal: flags & EXCHANGE_INTERNAL != 0,
        arguments,
    })
}

fn decode_user(key: &[u8], value: &[u8]) -> Result<UserRecord> {
    let mut k = Reader::new(key, USERS_NAME, "user key");
    let name = k.s16()?;
    let name = k.utf8("user name", name)?;
    k.finish()?;
    let mut r = Reader::new(value, USERS_NAME, "value");
    r.version()?;
    let password_hash = r.s16()?.to_vec();
    let tags = r.s32()?;
    let tags = r.utf8("user tags", tags)?;
    r.finish()?;
    let tags = if tags.is_empty() { Vec::new() } else { tags.split(',').map(str::to_owned).collect() };
    Ok(UserRecord { name, password_hash, tags })
}

/// Decodes an `s16 user, s16 vhost` key prefix.
fn decode_user_vhost(r: &mut Reader<'_>) -> Result<(String, String)> {
    let user = r.s16()?;
    let user = r.utf8("user name", user)?;
    let vhost = r.s16()?;
    let vhost = r.utf8("vhost", vhost)?;
    Ok((user, vhost))
}

fn decode_permission(key: &[u8], value: &[u8]) -> Result<PermissionRecord> {
    let mut k = Reader::new(key, PERMISSIONS_NAME, "key");
    let (user, vhost) = decode_user_vhost(&mut k)?;
    k.finish()?;
    let mut r = Reader::new(value, PERMISSIONS_NAME, "value");
    r.version()?;
    let mut text = |what| r.s16().and_then(|s| r.utf8(what, s));
    let (configure, write, read) = (text("configure")?, text("write")?, text("read")?);
    r.finish()?;
    Ok(PermissionRecord { user, vhost, configure, write, read })
}

fn decode_topic_permission(key: &[u8], value: &[u8]) -> Result<TopicPermissionRecord> {
    let mut k = Reader::new(key, TOPIC_PERMISSIONS_NAME, "key");
    let (user, vhost) = decode_user_vhost(&mut k)?;
    let exchange = k.s16()?.to_vec();
    k.finish()?;
    let mut r = Reader::new(value, TOPIC_PERMISSIONS_NAME, "value");
    r.version()?;
    let mut text = |what| r.s16().and_then(|s| r.utf8(what, s));
    let (write, read) = (text("write")?, text("read")?);
    r.finish()?;
    Ok(TopicPermissionRecord { user, vhost, exchange, write, read })
}

fn decode_limits(key: &[u8], value: &[u8]) -> Result<LimitsRecord> {
    let mut k = Reader::new(key, LIMITS_NAME, "key");
    let scope = match k.u8()? {
        b'v' => LimitScope::Vhost,
        b'u' => LimitScope::User,
        tag => return Err(k.corrupt(format!("unknown limits scope {tag:#04x}"))),
    };
    let name = k.s16()?;
    let name = k.utf8("name", name)?;
    k.finish()?;
    let mut r = Reader::new(value, LIMITS_NAME, "value");
    r.version()?;
    let count = r.u8()?;
    let mut limits = Vec::with_capacity(count.into());
    for _ in 0..count {
        let limit = r.s16()?;
        let limit = r.utf8("limit name", limit)?;
        limits.push((limit, r.u64()? as i64));
    }
    r.finish()?;
    Ok(LimitsRecord { scope, name, limits })
}

fn decode_policy(key: &[u8], value: &[u8]) -> Result<PolicyRecord> {
    let mut k = Reader::new(key, POLICIES_NAME, "policy key");
    let vhost = k.s16()?;
    let vhost = k.utf8("vhost", vhost)?;
    let operator = match k.u8()? {
        TAG_POLICY => false,
        TAG_OPERATOR_POLICY => true,
        tag => return Err(k.corrupt(format_args!("unknown policy kind {tag:#04x}"))),
    };
    let name = k.s16()?;
    let name = k.utf8("policy name", name)?;
    k.finish()?;
    let mut r = Reader::new(value, POLICIES_NAME, "value");
    r.version()?;
    let body = r.s32()?.to_vec();
    r.finish()?;
    Ok(PolicyRecord { vhost, operator, name, body })
}

fn decode_vhost_metadata(key: &[u8], value: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut k = Reader::new(key, VHOST_METADATA_NAME, "key");
    let vhost = k.s16()?;
    let vhost = k.utf8("vhost", vhost)?;
    k.finish()?;
    let mut r = Reader::new(value, VHOST_METADATA_NAME, "value");
    r.version()?;
    let body = r.s32()?.to_vec();
    r.finish()?;
    Ok((vhost, body))
}

fn decode_queue(key: &[u8], value: &[u8]) -> Result<QueueRecord> {
    let (vhost, name) = decode_entity_key(QUEUES_NAME, key)?;
    let mut r = Reader::new(value, QUEUES_NAME, "value");
    r.version()?;
    let id = r.u64()?;
    let flags = r.flags(QUEUE_AUTO_DELETE)?;
    let arguments = r.s32()?.to_vec();
    r.finish()?;
    Ok(QueueRecord { vhost, name, id, auto_delete: flags & QUEUE_AUTO_DELETE != 0, arguments })
}

fn decode_binding(key: &[u8], value: &[u8]) -> Result<BindingRecord> {
    let parts = BindingParts::parse_forward(key)?;
    decode_marker(BINDINGS_NAME, value)?;
    let vhost = Reader::new(key, BINDINGS_NAME, "binding key").utf8("vhost", parts.vhost)?;
    let destination = match parts.tag {
        TAG_QUEUE => Destination::Queue(parts.destination.to_vec()),
        TAG_EXCHANGE => Destination::Exchange(parts.destination.to_vec()),
        tag => {
            return Err(StoreError::CorruptMeta {
                table: BINDINGS_NAME,
                detail: format!("binding key: unknown destination tag {tag:#04x}"),
            });
        }
    };
    Ok(BindingRecord {
        vhost,
        source: parts.source.to_vec(),
        destination,
        routing_key: parts.routing_key.to_vec(),
        arguments: parts.arguments.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn corrupt_table(result: Result<impl fmt::Debug>) -> &'static str {
        match result {
            Err(StoreError::CorruptMeta { table, .. }) => table,
            other => panic!("expected CorruptMeta, got {other:?}"),
        }
    }

    fn exchange() -> ExchangeRecord {
        ExchangeRecord {
            vhost: "/".into(),
            name: b"x\0y".to_vec(),
            kind: "topic".into(),
            auto_delete: true,
            internal: false,
            arguments: vec![0, 0, 0, 0],
        }
    }

    fn queue() -> QueueRecord {
        QueueRecord { vhost: "/".into(), name: b"q".to_vec(), id: 7, auto_delete: false, arguments: vec![1, 2] }
    }

    fn binding() -> BindingRecord {
        BindingRecord {
            vhost: "/".into(),
            source: b"x".to_vec(),
            destination: Destination::Queue(b"q".to_vec()),
            routing_key: b"a.b".to_vec(),
            arguments: vec![],
        }
    }

    #[test]
    fn values_round_trip() {
        let e = exchange();
        let key = entity_key(&e.vhost, &e.name).unwrap();
        assert_eq!(decode_exchange(&key, &encode_exchange(&e).unwrap()).unwrap(), e);
        let q = queue();
        let key = entity_key(&q.vhost, &q.name).unwrap();
        assert_eq!(decode_queue(&key, &encode_queue(&q).unwrap()).unwrap(), q);
        let b = binding();
        let parts = BindingParts::of(&b);
        assert_eq!(decode_binding(&parts.forward_key().unwrap(), MARKER).unwrap(), b);
        assert_eq!(decode_vhost(&vhost_key("/").unwrap(), MARKER).unwrap(), "/");
    }

    #[test]
    fn permissions_and_limits_are_stored_and_go_with_their_user_or_vhost() {
        let dir = std::env::temp_dir().join(format!("lepus-meta-access-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let store = MetaStore::open(&dir).unwrap();
        let perm = |user: &str, vhost: &str| PermissionRecord {
            user: user.into(),
            vhost: vhost.into(),
            configure: "^c".into(),
            write: "".into(),
            read: ".*".into(),
        };
        let topic = TopicPermissionRecord {
            user: "bob".into(),
            vhost: "v1".into(),
            exchange: b"amq.topic".to_vec(),
            write: "^{username}".into(),
            read: ".*".into(),
        };
        let limits =
            |scope, name: &str| LimitsRecord { scope, name: name.into(), limits: vec![("max-queues".into(), 3)] };
        store
            .apply(&[
                Change::PutPermission(perm("bob", "v1")),
                Change::PutPermission(perm("bob", "v2")),
                Change::PutPermission(perm("eve", "v1")),
                Change::PutTopicPermission(topic.clone()),
                Change::PutLimits(limits(LimitScope::Vhost, "v1")),
                Change::PutLimits(limits(LimitScope::User, "bob")),
            ])
            .unwrap();
        let s = store.load().unwrap();
        assert!(s.permissions_initialised);
        assert_eq!(s.permissions, [perm("bob", "v1"), perm("bob", "v2"), perm("eve", "v1")]);
        assert_eq!(s.topic_permissions, [topic]);
        assert_eq!(s.limits, [limits(LimitScope::User, "bob"), limits(LimitScope::Vhost, "v1")]);
        store.apply(&[Change::DeleteVhost("v1".into()), Change::DeleteUser("bob".into())]).unwrap();
        let s = store.load().unwrap();
        assert!(s.permissions.is_empty() && s.topic_permissions.is_empty() && s.limits.is_empty(), "{s:?}");
        drop(store);
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn corrupt_values_are_errors() {
        let e = exchange();
        let key = entity_key(&e.vhost, &e.name).unwrap();
        let value = encode_exchange(&e).unwrap();
        // Every truncation, and one byte too many.
        for len in 0..value.len() {
            assert_eq!(corrupt_table(decode_exchange(&key, &value[..len])), "exchanges");
        }
        let mut long = value.clone();
        long.push(0);
        assert_eq!(corrupt_table(decode_exchange(&key, &long)), "exchanges");
        // Unknown version byte, unknown flag bit.
        let mut bad = value.clone();
        bad[0] = 2;
        assert_eq!(corrupt_table(decode_exchange(&key, &bad)), "exchanges");
        let flags_at = 1 + 2 + e.kind.len();
        bad = value.clone();
        bad[flags_at] |= 0x80;
        assert_eq!(corrupt_table(decode_exchange(&key, &bad)), "exchanges");
        // A kind that is not UTF-8.
        bad = value.clone();
        bad[3] = 0xff;
        assert_eq!(corrupt_table(decode_exchange(&key, &bad)), "exchanges");
        // A key with trailing bytes, and one whose vhost is not UTF-8.
        let mut bad_key = key.clone();
        bad_key.push(1);
        assert_eq!(corrupt_table(decode_exchange(&bad_key, &value)), "exchanges");
        assert_eq!(corrupt_table(decode_queue(&[0, 1, 0xff, 0, 0], &encode_queue(&queue()).unwrap())), "queues");
        // An arguments length far beyond the value.
        let mut huge = value[..flags_at + 1].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(corrupt_table(decode_exchange(&key, &huge)), "exchanges");

        let b = binding();
        let mut key = BindingParts::of(&b).forward_key().unwrap();
        assert_eq!(corrupt_table(decode_binding(&key, &[])), "bindings");
        assert_eq!(corrupt_table(decode_binding(&key, &[1, 1])), "bindings");
        key[2 + 1 + 2 + 1] = b'z'; // the destination tag
        assert_eq!(corrupt_table(decode_binding(&key, MARKER)), "bindings");
        assert_eq!(corrupt_table(BindingParts::parse_reverse(&[0, 0, b'x'])), "bindings_by_destination");
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MetaStore>();
    }

    #[test]
    fn names_too_long_are_refused() {
        let name = vec![b'n'; usize::from(u16::MAX) + 1];
        assert!(matches!(entity_key("/", &name), Err(StoreError::Meta(_))));
        assert!(entity_key("/", &name[1..]).is_ok());
    }

    #[test]
    fn prefix_end_is_the_least_upper_bound() {
        assert_eq!(prefix_end(&[0, 1, b'a']), Some(vec![0, 1, b'b']));
        assert_eq!(prefix_end(&[0, 1, 0xff]), Some(vec![0, 2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xff), any::<u8>()], 0..6)
    }

    proptest! {
        #[test]
        fn decoders_never_panic(key in proptest::collection::vec(any::<u8>(), 0..40),
                                value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_vhost(&key, &value);
            let _ = decode_exchange(&key, &value);
            let _ = decode_queue(&key, &value);
            let _ = decode_binding(&key, &value);
            let _ = BindingParts::parse_reverse(&key);
        }

        #[test]
        fn damaged_encodings_never_panic(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let e = exchange();
            let q = queue();
            let b = binding();
            let parts = BindingParts::of(&b);
            let cases = [
                (entity_key(&e.vhost, &e.name).unwrap(), encode_exchange(&e).unwrap()),
                (entity_key(&q.vhost, &q.name).unwrap(), encode_queue(&q).unwrap()),
                (parts.forward_key().unwrap(), MARKER.to_vec()),
                (parts.reverse_key().unwrap(), MARKER.to_vec()),
            ];
            let damage = |bytes: &[u8]| {
                let mut bytes = bytes.to_vec();
                let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
                if cut { bytes.truncate(i) } else if let Some(b) = bytes.get_mut(i) { *b = byte }
                bytes
            };
            for (key, value) in cases {
                for (key, value) in [(damage(&key), value.clone()), (key.clone(), damage(&value))] {
                    for result in [
                        decode_exchange(&key, &value).map(drop),
                        decode_queue(&key, &value).map(drop),
                        decode_binding(&key, &value).map(drop),
                        BindingParts::parse_reverse(&key).map(drop),
                    ] {
                        let ok = matches!(result, Ok(()) | Err(StoreError::CorruptMeta { .. }));
                        prop_assert!(ok, "unexpected {:?}", result);
                    }
                }
            }
        }

        #[test]
        fn binding_keys_round_trip(
            source in bytes(),
            dest in bytes(),
            rk in bytes(),
            args in bytes(),
            queue in any::<bool>(),
        ) {
            let b = BindingRecord {
                vhost: "v".into(),
                source,
                destination: if queue { Destination::Queue(dest) } else { Destination::Exchange(dest) },
                routing_key: rk,
                arguments: args,
            };
            let parts = BindingParts::of(&b);
            let forward = parts.forward_key().unwrap();
            let reverse = parts.reverse_key().unwrap();
            let from_forward = BindingParts::parse_forward(&forward).unwrap();
            prop_assert_eq!(from_forward, BindingParts::parse_reverse(&reverse).unwrap());
            prop_assert_eq!(decode_binding(&forward, MARKER).unwrap(), b);
        }

        #[test]
        fn keys_of_different_names_are_not_prefixes(a in bytes(), b in bytes()) {
            prop_assume!(a != b);
            let ka = entity_key("v", &a).unwrap();
            let kb = entity_key("v", &b).unwrap();
            prop_assert!(!ka.starts_with(&kb) && !kb.starts_with(&ka));
            // Every key under a name's prefix sorts inside [prefix, prefix_end).
            let mut under = ka.clone();
            under.extend_from_slice(&b);
            prop_assert!(under.as_slice() >= ka.as_slice());
            if let Some(end) = prefix_end(&ka) {
                prop_assert!(under < end);
            }
        }
    }
}
