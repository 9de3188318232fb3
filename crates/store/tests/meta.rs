//! The metadata store against a real redb file: round trips through reopen, cascading deletes,
//! the queue id counter, atomicity, corruption and version handling, recovery from I/O errors
//! without a restart, and a model-based proptest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lepus_store::StoreError;
use lepus_store::meta::{
    BindingRecord, Change, Destination, ExchangeRecord, MetaStore, PolicyRecord, QueueRecord, Snapshot, UserRecord,
};
use proptest::prelude::*;
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTableMetadata, StorageBackend, TableDefinition};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lepus-meta-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("meta.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(path: &Path) -> MetaStore {
    MetaStore::open(path).unwrap()
}

fn exchange(vhost: &str, name: &[u8]) -> ExchangeRecord {
    ExchangeRecord {
        vhost: vhost.into(),
        name: name.to_vec(),
        kind: "direct".into(),
        auto_delete: false,
        internal: false,
        arguments: vec![],
    }
}

fn queue(vhost: &str, name: &[u8], id: u64) -> QueueRecord {
    QueueRecord { vhost: vhost.into(), name: name.to_vec(), id, auto_delete: false, arguments: vec![] }
}

fn to_queue(vhost: &str, source: &[u8], queue: &[u8], key: &[u8]) -> BindingRecord {
    BindingRecord {
        vhost: vhost.into(),
        source: source.to_vec(),
        destination: Destination::Queue(queue.to_vec()),
        routing_key: key.to_vec(),
        arguments: vec![],
    }
}

fn to_exchange(vhost: &str, source: &[u8], exchange: &[u8], key: &[u8]) -> BindingRecord {
    BindingRecord {
        vhost: vhost.into(),
        source: source.to_vec(),
        destination: Destination::Exchange(exchange.to_vec()),
        routing_key: key.to_vec(),
        arguments: vec![],
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The bindings of a snapshot in a canonical order, for comparing sets.
fn binding_set(bindings: &[BindingRecord]) -> Vec<String> {
    sorted(bindings.iter().map(|b| format!("{b:?}")).collect())
}

#[test]
fn every_record_kind_survives_reopen() {
    let dir = TempDir::new("roundtrip");
    let exchanges = vec![
        ExchangeRecord {
            vhost: "/".into(),
            name: b"amq.direct".to_vec(),
            kind: "direct".into(),
            auto_delete: false,
            internal: false,
            arguments: vec![],
        },
        ExchangeRecord {
            vhost: "/".into(),
            name: b"x\0\xff".to_vec(),
            kind: "x-consistent-hash".into(),
            auto_delete: true,
            internal: true,
            arguments: vec![0, 0, 0, 5, 1, b'k', b'S', 0, 0],
        },
        ExchangeRecord {
            vhost: "other\0vhost".into(),
            name: vec![],
            kind: "topic".into(),
            auto_delete: false,
            internal: true,
            arguments: vec![0xff; 300],
        },
    ];
    let queues = vec![
        QueueRecord { vhost: "/".into(), name: b"q1".to_vec(), id: 1, auto_delete: false, arguments: vec![] },
        QueueRecord {
            vhost: "/".into(),
            name: b"\0".to_vec(),
            id: u64::MAX - 1,
            auto_delete: true,
            arguments: vec![9; 70_000],
        },
    ];
    let bindings = vec![
        to_queue("/", b"amq.direct", b"q1", b"q1"),
        to_queue("/", b"amq.direct", b"q1", b""),
        to_exchange("/", b"amq.direct", b"x\0\xff", b"#"),
        BindingRecord {
            vhost: "other\0vhost".into(),
            source: vec![],
            destination: Destination::Queue(b"\0".to_vec()),
            routing_key: vec![0, 0xff],
            arguments: vec![1, 2, 3],
        },
    ];
    let mut changes = vec![Change::PutVhost("/".into()), Change::PutVhost("other\0vhost".into())];
    changes.extend(exchanges.iter().cloned().map(Change::PutExchange));
    changes.extend(queues.iter().cloned().map(Change::PutQueue));
    changes.extend(bindings.iter().cloned().map(Change::PutBinding));
    {
        let store = open(&dir.db());
        assert_eq!(store.load().unwrap(), Snapshot::default());
        store.apply(&changes).unwrap();
    }
    let store = open(&dir.db());
    let snapshot = store.load().unwrap();
    assert_eq!(sorted(snapshot.vhosts.clone()), vec!["/".to_string(), "other\0vhost".to_string()]);
    let by_name = |e: &ExchangeRecord| (e.vhost.clone(), e.name.clone());
    let mut loaded = snapshot.exchanges.clone();
    loaded.sort_by_key(by_name);
    let mut expected = exchanges;
    expected.sort_by_key(by_name);
    assert_eq!(loaded, expected);
    let mut loaded = snapshot.queues.clone();
    loaded.sort_by_key(|q| q.name.clone());
    assert_eq!(loaded, sorted_queues(queues));
    assert_eq!(binding_set(&snapshot.bindings), binding_set(&bindings));
    // Loading again, and after another reopen, gives the same lists in the same order.
    assert_eq!(store.load().unwrap(), snapshot);
    drop(store);
    assert_eq!(open(&dir.db()).load().unwrap(), snapshot);
}

fn sorted_queues(mut queues: Vec<QueueRecord>) -> Vec<QueueRecord> {
    queues.sort_by_key(|q| q.name.clone());
    queues
}

#[test]
fn load_is_sorted_by_vhost_then_length_prefixed_name() {
    let dir = TempDir::new("order");
    let store = open(&dir.db());
    let names: [&[u8]; 5] = [b"b", b"aa", b"a", b"", b"a\0"];
    let mut changes: Vec<Change> = ["zz", "z", "/"].iter().map(|v| Change::PutVhost(v.to_string())).collect();
    for vhost in ["z", "/"] {
        changes.extend(names.iter().map(|n| Change::PutExchange(exchange(vhost, n))));
    }
    store.apply(&changes).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.vhosts, ["/", "z", "zz"]);
    let order: Vec<(&str, &[u8])> = snapshot.exchanges.iter().map(|e| (e.vhost.as_str(), e.name.as_slice())).collect();
    let expected: Vec<(&str, &[u8])> = vec![
        ("/", b""),
        ("/", b"a"),
        ("/", b"b"),
        ("/", b"a\0"),
        ("/", b"aa"),
        ("z", b""),
        ("z", b"a"),
        ("z", b"b"),
        ("z", b"a\0"),
        ("z", b"aa"),
    ];
    assert_eq!(order, expected);
}

#[test]
fn puts_overwrite_and_a_binding_is_stored_once() {
    let dir = TempDir::new("overwrite");
    let store = open(&dir.db());
    let b = to_queue("/", b"x", b"q", b"k");
    store
        .apply(&[
            Change::PutVhost("/".into()),
            Change::PutVhost("/".into()),
            Change::PutExchange(exchange("/", b"x")),
            Change::PutQueue(queue("/", b"q", 1)),
            Change::PutBinding(b.clone()),
            Change::PutBinding(b.clone()),
        ])
        .unwrap();
    store.apply(&[Change::PutBinding(b.clone())]).unwrap();
    let topic = ExchangeRecord { kind: "topic".into(), auto_delete: true, ..exchange("/", b"x") };
    let renumbered = QueueRecord { id: 2, arguments: vec![7], ..queue("/", b"q", 1) };
    store.apply(&[Change::PutExchange(topic.clone()), Change::PutQueue(renumbered.clone())]).unwrap();
    // Bindings differing in any one component are distinct.
    let others = [
        BindingRecord { arguments: vec![0], ..b.clone() },
        BindingRecord { routing_key: b"k\0".to_vec(), ..b.clone() },
        BindingRecord { destination: Destination::Exchange(b"q".to_vec()), ..b.clone() },
    ];
    store.apply(&others.iter().cloned().map(Change::PutBinding).collect::<Vec<_>>()).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.vhosts, ["/"]);
    assert_eq!(snapshot.exchanges, [topic]);
    assert_eq!(snapshot.queues, [renumbered]);
    let mut all = vec![b.clone()];
    all.extend(others.iter().cloned());
    assert_eq!(binding_set(&snapshot.bindings), binding_set(&all));
    // Deleting one of them leaves the others.
    store.apply(&[Change::DeleteBinding(b)]).unwrap();
    assert_eq!(binding_set(&store.load().unwrap().bindings), binding_set(&others));
}

/// Names that are prefixes of each other, or differ only in a 0 byte.
const TRICKY: [&[u8]; 6] = [b"a", b"ab", b"a\0", b"\0a", b"", b"a\0b"];
const VHOSTS: [&str; 3] = ["v", "v\0", "vv"];

/// Every vhost has every exchange and queue in [`TRICKY`], and each exchange is bound to every
/// queue and every exchange of its vhost.
fn full_mesh() -> (Vec<Change>, Vec<BindingRecord>) {
    let mut changes = Vec::new();
    let mut bindings = Vec::new();
    let mut id = 0;
    for vhost in VHOSTS {
        changes.push(Change::PutVhost(vhost.into()));
        for name in TRICKY {
            id += 1;
            changes.push(Change::PutExchange(exchange(vhost, name)));
            changes.push(Change::PutQueue(queue(vhost, name, id)));
        }
        for source in TRICKY {
            for destination in TRICKY {
                bindings.push(to_queue(vhost, source, destination, b"rk"));
                bindings.push(to_exchange(vhost, source, destination, b""));
            }
        }
    }
    changes.extend(bindings.iter().cloned().map(Change::PutBinding));
    (changes, bindings)
}

/// Applies `deletion` to a full mesh and checks the bindings that are left, after a reopen.
fn check_cascade(name: &str, deletion: Change, survives: impl Fn(&BindingRecord) -> bool) -> Snapshot {
    let dir = TempDir::new(name);
    let (changes, bindings) = full_mesh();
    {
        let store = open(&dir.db());
        store.apply(&changes).unwrap();
        store.apply(&[deletion]).unwrap();
    }
    let snapshot = open(&dir.db()).load().unwrap();
    let expected: Vec<BindingRecord> = bindings.into_iter().filter(|b| survives(b)).collect();
    assert_eq!(binding_set(&snapshot.bindings), binding_set(&expected));
    snapshot
}

#[test]
fn delete_exchange_removes_bindings_from_and_to_it_only() {
    for name in TRICKY {
        let snapshot =
            check_cascade("del-exchange", Change::DeleteExchange { vhost: "v".into(), name: name.to_vec() }, |b| {
                b.vhost != "v" || (b.source != name && b.destination != Destination::Exchange(name.to_vec()))
            });
        let gone: Vec<_> = snapshot.exchanges.iter().filter(|e| e.vhost == "v" && e.name == name).collect();
        assert!(gone.is_empty());
        assert_eq!(snapshot.exchanges.len(), VHOSTS.len() * TRICKY.len() - 1);
        assert_eq!(snapshot.queues.len(), VHOSTS.len() * TRICKY.len());
        assert_eq!(snapshot.vhosts.len(), VHOSTS.len());
    }
}

#[test]
fn delete_queue_removes_bindings_to_it_only() {
    for name in TRICKY {
        let snapshot =
            check_cascade("del-queue", Change::DeleteQueue { vhost: "v\0".into(), name: name.to_vec() }, |b| {
                b.vhost != "v\0" || b.destination != Destination::Queue(name.to_vec())
            });
        assert!(!snapshot.queues.iter().any(|q| q.vhost == "v\0" && q.name == name));
        assert_eq!(snapshot.queues.len(), VHOSTS.len() * TRICKY.len() - 1);
        assert_eq!(snapshot.exchanges.len(), VHOSTS.len() * TRICKY.len());
    }
}

#[test]
fn delete_vhost_removes_everything_in_it_only() {
    for vhost in VHOSTS {
        let snapshot = check_cascade("del-vhost", Change::DeleteVhost(vhost.into()), |b| b.vhost != vhost);
        let left: Vec<&str> = VHOSTS.iter().copied().filter(|v| *v != vhost).collect();
        assert_eq!(sorted(snapshot.vhosts.clone()), sorted(left.iter().map(|v| v.to_string()).collect()));
        assert!(snapshot.exchanges.iter().all(|e| e.vhost != vhost));
        assert!(snapshot.queues.iter().all(|q| q.vhost != vhost));
        assert_eq!(snapshot.exchanges.len(), left.len() * TRICKY.len());
        assert_eq!(snapshot.queues.len(), left.len() * TRICKY.len());
    }
}

fn policy(vhost: &str, operator: bool, name: &str, body: &[u8]) -> PolicyRecord {
    PolicyRecord { vhost: vhost.into(), operator, name: name.into(), body: body.to_vec() }
}

#[test]
fn policies_survive_reopen_by_kind_and_go_with_their_vhost() {
    let dir = TempDir::new("policies");
    {
        let store = open(&dir.db());
        store
            .apply(&[
                Change::PutVhost("a".into()),
                Change::PutVhost("b".into()),
                Change::PutPolicy(policy("a", false, "p", b"one")),
                Change::PutPolicy(policy("a", true, "p", b"operator")),
                Change::PutPolicy(policy("b", false, "p", b"other vhost")),
                Change::PutPolicy(policy("a", false, "p", b"replaced")),
                Change::PutPolicy(policy("a", false, "gone", b"x")),
                Change::DeletePolicy { vhost: "a".into(), operator: false, name: "gone".into() },
                Change::DeletePolicy { vhost: "a".into(), operator: false, name: "never".into() },
            ])
            .unwrap();
    }
    let store = open(&dir.db());
    let expected = vec![
        policy("a", true, "p", b"operator"),
        policy("a", false, "p", b"replaced"),
        policy("b", false, "p", b"other vhost"),
    ];
    assert_eq!(store.load().unwrap().policies, expected);
    store.apply(&[Change::DeleteVhost("a".into())]).unwrap();
    assert_eq!(store.load().unwrap().policies, vec![policy("b", false, "p", b"other vhost")]);
}

#[test]
fn vhost_metadata_survives_reopen_is_replaced_and_goes_with_its_vhost() {
    let dir = TempDir::new("vhost-metadata");
    let put = |vhost: &str, body: &[u8]| Change::PutVhostMetadata { vhost: vhost.into(), body: body.to_vec() };
    {
        let store = open(&dir.db());
        store
            .apply(&[
                Change::PutVhost("a".into()),
                Change::PutVhost("ab".into()),
                put("a", b"first"),
                put("ab", b"other"),
                put("a", b"replaced"),
            ])
            .unwrap();
    }
    let store = open(&dir.db());
    let expected = vec![("a".to_string(), b"replaced".to_vec()), ("ab".to_string(), b"other".to_vec())];
    assert_eq!(store.load().unwrap().vhost_metadata, expected);
    store.apply(&[Change::DeleteVhost("a".into())]).unwrap();
    assert_eq!(store.load().unwrap().vhost_metadata, vec![("ab".to_string(), b"other".to_vec())]);
}

#[test]
fn deleting_what_is_absent_is_not_an_error() {
    let dir = TempDir::new("absent");
    let store = open(&dir.db());
    store
        .apply(&[
            Change::DeleteVhost("nope".into()),
            Change::DeleteExchange { vhost: "nope".into(), name: b"x".to_vec() },
            Change::DeleteQueue { vhost: "nope".into(), name: b"q".to_vec() },
            Change::DeleteBinding(to_queue("nope", b"x", b"q", b"")),
        ])
        .unwrap();
    store.apply(&[]).unwrap();
    assert_eq!(store.load().unwrap(), Snapshot::default());
}

#[test]
fn queue_ids_increase_across_reopen_and_skip_stored_ids() {
    let dir = TempDir::new("ids");
    {
        let store = open(&dir.db());
        assert_eq!(store.next_queue_id().unwrap(), 1);
        assert_eq!(store.next_queue_id().unwrap(), 2);
        assert_eq!(store.next_queue_id().unwrap(), 3);
    }
    {
        let store = open(&dir.db());
        assert_eq!(store.next_queue_id().unwrap(), 4);
        // A queue stored with an id from elsewhere pushes the counter past it, even once deleted.
        store.apply(&[Change::PutQueue(queue("/", b"q", 100))]).unwrap();
        store.apply(&[Change::DeleteQueue { vhost: "/".into(), name: b"q".to_vec() }]).unwrap();
        // A lower id does not move it back.
        store.apply(&[Change::PutQueue(queue("/", b"r", 50))]).unwrap();
    }
    let store = open(&dir.db());
    assert_eq!(store.stored_next_queue_id().unwrap(), 101, "read without taking");
    assert_eq!(store.stored_next_queue_id().unwrap(), 101);
    assert_eq!(store.next_queue_id().unwrap(), 101);
    assert_eq!(store.next_queue_id().unwrap(), 102);
    assert_eq!(store.stored_next_queue_id().unwrap(), 103);
}

#[test]
fn a_new_store_has_no_users_set_up() {
    let dir = TempDir::new("users-new");
    assert!(!open(&dir.db()).load().unwrap().users_initialised);
}

#[test]
fn a_new_store_hands_out_ids_from_one() {
    let dir = TempDir::new("ids-new");
    let store = open(&dir.db());
    assert_eq!(store.stored_next_queue_id().unwrap(), 1);
    // Ids taken in memory from there are stored with their queues, which raise the counter.
    store.apply(&[Change::PutQueue(queue("/", b"a", 1)), Change::PutQueue(queue("/", b"b", 2))]).unwrap();
    drop(store);
    assert_eq!(open(&dir.db()).stored_next_queue_id().unwrap(), 3);
}

#[test]
fn a_batch_is_applied_entirely_or_not_at_all() {
    let dir = TempDir::new("atomic");
    let store = open(&dir.db());
    let batch = vec![
        Change::PutVhost("/".into()),
        Change::PutExchange(exchange("/", b"x")),
        Change::PutQueue(queue("/", b"q", 1)),
        Change::PutBinding(to_queue("/", b"x", b"q", b"k")),
    ];
    store.apply(&batch).unwrap();
    let before = store.load().unwrap();
    assert_eq!(before.vhosts.len() + before.exchanges.len() + before.queues.len() + before.bindings.len(), 4);

    // The last change is refused (a name longer than a key component can hold): the deletions
    // and puts before it in the same batch must not be applied either.
    let too_long = vec![b'n'; 70_000];
    let failing = vec![
        Change::DeleteQueue { vhost: "/".into(), name: b"q".to_vec() },
        Change::PutExchange(exchange("/", b"y")),
        Change::PutQueue(queue("/", b"r", 500)),
        Change::DeleteVhost("/".into()),
        Change::PutExchange(exchange("/", &too_long)),
    ];
    assert!(matches!(store.apply(&failing), Err(StoreError::Meta(_))));
    assert_eq!(store.load().unwrap(), before);
    // The counter bump of the refused PutQueue was rolled back too.
    assert_eq!(store.next_queue_id().unwrap(), 2);
    drop(store);
    assert_eq!(open(&dir.db()).load().unwrap(), before);
}

#[test]
fn a_second_open_of_the_same_file_fails() {
    let dir = TempDir::new("locked");
    let _store = open(&dir.db());
    assert!(matches!(MetaStore::open(&dir.db()), Err(StoreError::Meta(_))));
}

const RAW_EXCHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("exchanges");
const RAW_BINDINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bindings");
const RAW_USERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("users");
const RAW_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bindings_by_destination");
const RAW_FORMAT: TableDefinition<&str, u32> = TableDefinition::new("format");

/// Writes `key`, `value` into `table` of the closed database at `path`, bypassing the store.
fn write_raw<K: redb::Key + 'static, V: redb::Value + 'static>(
    path: &Path,
    table: TableDefinition<K, V>,
    key: K::SelfType<'_>,
    value: V::SelfType<'_>,
) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

#[test]
fn corrupt_records_are_reported_not_panicked_on() {
    let dir = TempDir::new("corrupt");
    {
        let store = open(&dir.db());
        store.apply(&[Change::PutVhost("/".into()), Change::PutExchange(exchange("/", b"x"))]).unwrap();
    }
    // The key of ("/", "x") with a value cut short after its version byte and kind length.
    let key: &[u8] = &[0, 1, b'/', 0, 1, b'x'];
    write_raw(&dir.db(), RAW_EXCHANGES, key, &[1, 0, 9]);
    let store = open(&dir.db());
    match store.load() {
        Err(StoreError::CorruptMeta { table, detail }) => {
            assert_eq!(table, "exchanges");
            assert!(!detail.is_empty());
        }
        other => panic!("expected CorruptMeta, got {other:?}"),
    }
    // Overwriting the record repairs it.
    store.apply(&[Change::PutExchange(exchange("/", b"x"))]).unwrap();
    assert_eq!(store.load().unwrap().exchanges, [exchange("/", b"x")]);
    drop(store);

    // A garbage key in the bindings table.
    write_raw(&dir.db(), RAW_BINDINGS, &[0, 9, 1][..], &[1][..]);
    let store = open(&dir.db());
    assert!(matches!(store.load(), Err(StoreError::CorruptMeta { table: "bindings", .. })));
    drop(store);

    // A garbage entry in the destination index under ("/", queue "q"): deleting the queue walks
    // it and must fail cleanly, leaving the store as it was.
    write_raw(&dir.db(), RAW_INDEX, &[0, 1, b'/', b'q', 0, 1, b'q', 0xff][..], &[1][..]);
    let store = open(&dir.db());
    store.apply(&[Change::PutQueue(queue("/", b"q", 1))]).unwrap();
    let result = store.apply(&[Change::DeleteQueue { vhost: "/".into(), name: b"q".to_vec() }]);
    assert!(matches!(result, Err(StoreError::CorruptMeta { table: "bindings_by_destination", .. })));
}

fn user(name: &str, tags: &[&str]) -> UserRecord {
    UserRecord {
        name: name.into(),
        password_hash: vec![1, 2, 3, 4, 0xff],
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

#[test]
fn users_survive_reopen_and_are_replaced_or_deleted_by_name() {
    let dir = TempDir::new("users");
    {
        let store = open(&dir.db());
        let changes = [
            Change::PutUser(user("guest", &["administrator"])),
            Change::PutUser(user("alice", &[])),
            Change::PutUser(user("bob", &["monitoring", "policymaker"])),
            Change::PutUser(user("bob", &["management"])),
            Change::DeleteUser("alice".into()),
            Change::DeleteUser("nobody".into()),
        ];
        store.apply(&changes).unwrap();
        assert!(matches!(store.apply(&[Change::PutUser(user("eve", &["a,b"]))]), Err(StoreError::Meta(_))));
    }
    let loaded = open(&dir.db()).load().unwrap();
    assert_eq!(loaded.users, [user("bob", &["management"]), user("guest", &["administrator"])], "sorted by key");
    assert!(loaded.users_initialised);
    {
        let store = open(&dir.db());
        store.apply(&[Change::DeleteUser("bob".into()), Change::DeleteUser("guest".into())]).unwrap();
        let empty = store.load().unwrap();
        assert!(empty.users.is_empty() && empty.users_initialised, "deleting every user is remembered");
    }
    assert!(loaded.vhosts.is_empty() && loaded.queues.is_empty(), "users are not in any vhost");
    // A value cut short is reported, not panicked on.
    write_raw(&dir.db(), RAW_USERS, &[0, 3, b'b', b'o', b'b'][..], &[1, 0, 9][..]);
    assert!(matches!(open(&dir.db()).load(), Err(StoreError::CorruptMeta { table: "users", .. })));
}

#[test]
fn a_passwordless_user_is_stored_with_an_empty_hash() {
    let dir = TempDir::new("passwordless");
    let app = UserRecord { name: "app".into(), password_hash: Vec::new(), tags: Vec::new() };
    open(&dir.db()).apply(&[Change::PutUser(app.clone())]).unwrap();
    assert_eq!(open(&dir.db()).load().unwrap().users, [app]);
}

#[test]
fn a_newer_format_is_refused_without_writing() {
    let dir = TempDir::new("version");
    drop(open(&dir.db()));
    write_raw(&dir.db(), RAW_FORMAT, "version", 2);
    match MetaStore::open(&dir.db()) {
        Err(StoreError::UnsupportedVersion { path, found, supported }) => {
            assert_eq!(path, dir.db());
            assert_eq!((found, supported), (2, 1));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let db = Database::create(dir.db()).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(txn.open_table(RAW_FORMAT).unwrap().get("version").unwrap().map(|v| v.value()), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Model-based: random batches against BTreeMaps, compared after every step and after reopening.

/// vhost, source, is-queue, destination, routing key, arguments.
type BindingKey = (String, Vec<u8>, bool, Vec<u8>, Vec<u8>, Vec<u8>);

fn binding_key(b: &BindingRecord) -> BindingKey {
    let (queue, destination) = match &b.destination {
        Destination::Queue(name) => (true, name.clone()),
        Destination::Exchange(name) => (false, name.clone()),
    };
    (b.vhost.clone(), b.source.clone(), queue, destination, b.routing_key.clone(), b.arguments.clone())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Model {
    vhosts: BTreeSet<String>,
    exchanges: BTreeMap<(String, Vec<u8>), ExchangeRecord>,
    queues: BTreeMap<(String, Vec<u8>), QueueRecord>,
    bindings: BTreeSet<BindingKey>,
    users: BTreeMap<String, UserRecord>,
}

impl Model {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::PutVhost(v) => {
                self.vhosts.insert(v.clone());
            }
            Change::DeleteVhost(v) => {
                self.vhosts.remove(v);
                self.exchanges.retain(|(vhost, _), _| vhost != v);
                self.queues.retain(|(vhost, _), _| vhost != v);
                self.bindings.retain(|b| &b.0 != v);
            }
            Change::PutExchange(e) => {
                self.exchanges.insert((e.vhost.clone(), e.name.clone()), e.clone());
            }
            Change::DeleteExchange { vhost, name } => {
                self.exchanges.remove(&(vhost.clone(), name.clone()));
                let from_it = |b: &BindingKey| &b.0 == vhost && &b.1 == name;
                let to_it = |b: &BindingKey| &b.0 == vhost && !b.2 && &b.3 == name;
                self.bindings.retain(|b| !from_it(b) && !to_it(b));
            }
            Change::PutQueue(q) => {
                self.queues.insert((q.vhost.clone(), q.name.clone()), q.clone());
            }
            Change::DeleteQueue { vhost, name } => {
                self.queues.remove(&(vhost.clone(), name.clone()));
                let to_it = |b: &BindingKey| &b.0 == vhost && b.2 && &b.3 == name;
                self.bindings.retain(|b| !to_it(b));
            }
            Change::PutBinding(b) => {
                self.bindings.insert(binding_key(b));
            }
            Change::DeleteBinding(b) => {
                self.bindings.remove(&binding_key(b));
            }
            Change::PutUser(u) => {
                self.users.insert(u.name.clone(), u.clone());
            }
            Change::DeleteUser(name) => {
                self.users.remove(name);
            }
            // Not generated: policies have their own test.
            Change::PutPolicy(_) | Change::DeletePolicy { .. } => {}
            // Permissions and limits have their own test in the module.
            other => panic!("not generated by this model: {other:?}"),
        }
    }

    fn of(snapshot: &Snapshot) -> Model {
        let model = Model {
            vhosts: snapshot.vhosts.iter().cloned().collect(),
            exchanges: snapshot.exchanges.iter().map(|e| ((e.vhost.clone(), e.name.clone()), e.clone())).collect(),
            queues: snapshot.queues.iter().map(|q| ((q.vhost.clone(), q.name.clone()), q.clone())).collect(),
            bindings: snapshot.bindings.iter().map(binding_key).collect(),
            users: snapshot.users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
        };
        // No duplicates were collapsed.
        assert_eq!(model.vhosts.len(), snapshot.vhosts.len());
        assert_eq!(model.exchanges.len(), snapshot.exchanges.len());
        assert_eq!(model.queues.len(), snapshot.queues.len());
        assert_eq!(model.bindings.len(), snapshot.bindings.len());
        assert_eq!(model.users.len(), snapshot.users.len());
        model
    }
}

/// The documented key order: each component by length, then bytes.
fn lp(bytes: &[u8]) -> (usize, &[u8]) {
    (bytes.len(), bytes)
}

fn binding_order(b: &BindingRecord) -> Vec<(usize, &[u8])> {
    // Exchange destinations ('e') sort before queue destinations ('q').
    let (tag, destination): (&[u8], &[u8]) = match &b.destination {
        Destination::Exchange(name) => (b"e", name),
        Destination::Queue(name) => (b"q", name),
    };
    vec![lp(b.vhost.as_bytes()), lp(&b.source), (0, tag), lp(destination), lp(&b.routing_key), lp(&b.arguments)]
}

fn assert_key_order(snapshot: &Snapshot) {
    let strictly = |keys: Vec<Vec<(usize, &[u8])>>| keys.windows(2).all(|w| w[0] < w[1]);
    assert!(strictly(snapshot.vhosts.iter().map(|v| vec![lp(v.as_bytes())]).collect()));
    assert!(strictly(snapshot.exchanges.iter().map(|e| vec![lp(e.vhost.as_bytes()), lp(&e.name)]).collect()));
    assert!(strictly(snapshot.queues.iter().map(|q| vec![lp(q.vhost.as_bytes()), lp(&q.name)]).collect()));
    assert!(strictly(snapshot.bindings.iter().map(binding_order).collect()));
}

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<Change>),
    /// Unbind one of the bindings the model holds, if any (random unbinds rarely hit one).
    UnbindExisting(prop::sample::Index),
    NextQueueId,
}

fn vhost() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/", "a", "ab", "a\0"]).prop_map(String::from)
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![&b""[..], b"a", b"ab", b"a\0", b"\0", b"\xff"]).prop_map(<[u8]>::to_vec)
}

fn arguments() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![&b""[..], b"\0", b"\0\0\0\0"]).prop_map(<[u8]>::to_vec)
}

fn binding() -> impl Strategy<Value = BindingRecord> {
    (vhost(), name(), any::<bool>(), name(), name(), arguments()).prop_map(
        |(vhost, source, queue, destination, routing_key, arguments)| BindingRecord {
            vhost,
            source,
            destination: if queue { Destination::Queue(destination) } else { Destination::Exchange(destination) },
            routing_key,
            arguments,
        },
    )
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        1 => vhost().prop_map(Change::PutVhost),
        1 => vhost().prop_map(Change::DeleteVhost),
        2 => (vhost(), name(), prop::sample::select(vec!["direct", "topic"]), any::<bool>(), any::<bool>(), arguments())
            .prop_map(|(vhost, name, kind, auto_delete, internal, arguments)| {
                Change::PutExchange(ExchangeRecord { vhost, name, kind: kind.into(), auto_delete, internal, arguments })
            }),
        2 => (vhost(), name()).prop_map(|(vhost, name)| Change::DeleteExchange { vhost, name }),
        2 => (vhost(), name(), 1..40u64, any::<bool>(), arguments())
            .prop_map(|(vhost, name, id, auto_delete, arguments)| {
                Change::PutQueue(QueueRecord { vhost, name, id, auto_delete, arguments })
            }),
        2 => (vhost(), name()).prop_map(|(vhost, name)| Change::DeleteQueue { vhost, name }),
        6 => binding().prop_map(Change::PutBinding),
        2 => binding().prop_map(Change::DeleteBinding),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(change(), 1..6).prop_map(Op::Apply),
        2 => any::<prop::sample::Index>().prop_map(Op::UnbindExisting),
        1 => Just(Op::NextQueueId),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn apply_matches_a_model_and_survives_reopen(ops in prop::collection::vec(op(), 1..24)) {
        let dir = TempDir::new("model");
        let mut model = Model::default();
        // The largest id handed out or stored so far; the next id must be one above it.
        let mut highest_id = 0;
        {
            let store = open(&dir.db());
            for op in &ops {
                let op = match op {
                    Op::UnbindExisting(index) if !model.bindings.is_empty() => {
                        let key = model.bindings.iter().nth(index.index(model.bindings.len())).unwrap().clone();
                        let (vhost, source, queue, destination, routing_key, arguments) = key;
                        let destination =
                            if queue { Destination::Queue(destination) } else { Destination::Exchange(destination) };
                        let binding = BindingRecord { vhost, source, destination, routing_key, arguments };
                        Op::Apply(vec![Change::DeleteBinding(binding)])
                    }
                    Op::UnbindExisting(_) => continue,
                    op => op.clone(),
                };
                match &op {
                    Op::UnbindExisting(_) => unreachable!(),
                    Op::Apply(changes) => {
                        store.apply(changes).unwrap();
                        for change in changes {
                            model.apply(change);
                            if let Change::PutQueue(q) = change {
                                highest_id = highest_id.max(q.id);
                            }
                        }
                        let snapshot = store.load().unwrap();
                        assert_key_order(&snapshot);
                        prop_assert_eq!(&Model::of(&snapshot), &model);
                    }
                    Op::NextQueueId => {
                        let id = store.next_queue_id().unwrap();
                        prop_assert_eq!(id, highest_id + 1);
                        highest_id = id;
                    }
                }
            }
        }
        let store = open(&dir.db());
        let snapshot = store.load().unwrap();
        assert_key_order(&snapshot);
        prop_assert_eq!(&Model::of(&snapshot), &model);
        prop_assert_eq!(store.next_queue_id().unwrap(), highest_id + 1);
        drop(store);
        // The destination index holds exactly one entry per binding: none left behind by a
        // cascade.
        prop_assert_eq!(raw_len(&dir.db(), RAW_INDEX), model.bindings.len() as u64);
        prop_assert_eq!(raw_len(&dir.db(), RAW_BINDINGS), model.bindings.len() as u64);
    }
}

/// The number of entries in `table` of the closed database at `path`.
fn raw_len(path: &Path, table: TableDefinition<&[u8], &[u8]>) -> u64 {
    let db = Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.open_table(table).unwrap().len().unwrap()
}

/// Storage that survives reopening (it lives in memory, shared) and fails every change with
/// ENOSPC while `full` is set, as a full disk does.
#[derive(Debug)]
struct FlakyDisk {
    data: Arc<InMemoryBackend>,
    full: Arc<AtomicBool>,
}

impl FlakyDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::Acquire) { Err(std::io::Error::from_raw_os_error(28)) } else { Ok(()) }
    }
}

impl StorageBackend for FlakyDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.data.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.data.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.data.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.data.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.data.write(offset, data)
    }

    // The shared data outlives each database opened on it.
    fn close(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_io_error_fails_only_its_change_and_the_store_reopens_once_the_disk_has_room() {
    let data = Arc::new(InMemoryBackend::new());
    let full = Arc::new(AtomicBool::new(false));
    let (d, f) = (data.clone(), full.clone());
    let factory: lepus_store::meta::BackendFactory =
        Arc::new(move || Ok(Box::new(FlakyDisk { data: d.clone(), full: f.clone() }) as Box<dyn StorageBackend>));
    let store = MetaStore::open_with(Path::new("meta.redb"), Some(factory)).expect("open");
    store.apply(&[Change::PutVhost("/".into()), Change::PutQueue(queue("/", b"before", 1))]).expect("stored");

    full.store(true, Ordering::Release);
    let failed = store.apply(&[Change::PutQueue(queue("/", b"during", 2))]);
    assert!(matches!(failed, Err(StoreError::MetaIo(_))), "the write fails: {failed:?}");
    let again = store.apply(&[Change::PutQueue(queue("/", b"during", 2))]);
    assert!(again.is_err(), "still failing while the disk is full: {again:?}");

    full.store(false, Ordering::Release);
    store.apply(&[Change::PutQueue(queue("/", b"after", 3))]).expect("stored once the disk has room, no restart");
    assert!(store.next_queue_id().is_ok());
    let names: Vec<Vec<u8>> = store.load().expect("load").queues.into_iter().map(|q| q.name).collect();
    assert_eq!(names, [b"after".to_vec(), b"before".to_vec()], "the failed change left nothing behind");
}
