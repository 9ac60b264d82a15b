//! The multi-version store: the key index in memory, every revision's value in redb.
//!
//! One writer (the apply loop) and many readers. A write batch holds the index write lock
//! while it applies and makes a non-durable redb commit, so a reader sees either none or all
//! of a batch; readers copy what they need from the index under the read lock and fetch values
//! from a redb read transaction begun under that lock, so they never block on value I/O.
//! Batches commit without fsync: the WAL makes writes durable, and the applied index is written
//! in the same redb transaction so replaying the WAL after a crash is idempotent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::{Event, KeyValue};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::MvccError;
use crate::key_index::{KeyIndex, KeyRevision};
use crate::revision::Revision;

/// Every change, keyed by revision; the value is a record kind byte and a protobuf `KeyValue`.
const KV_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("kv");
/// Small named integers: the applied raft index, the compacted revision, member metadata.
const META_TABLE: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Granted leases: id -> (TTL, checkpointed remaining TTL; 0 when none), in seconds.
/// Attachments are not stored here: each key's value records its lease, as etcd's does.
const LEASE_TABLE: TableDefinition<i64, (i64, i64)> = TableDefinition::new("lease");
/// The cluster's members: id -> the server's encoding of the member (opaque here).
const MEMBERS_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("members");
/// The IDs of members removed from the cluster, kept for good (etcd's `members_removed`
/// bucket): a removed member must never take part again.
const MEMBERS_REMOVED_TABLE: TableDefinition<u64, ()> = TableDefinition::new("members_removed");

const META_APPLIED_INDEX: &str = "applied_index";
const META_COMPACTED_REVISION: &str = "compacted_revision";

const RECORD_PUT: u8 = 0;
const RECORD_TOMBSTONE: u8 = 1;

#[derive(Clone, Copy, Debug, Default)]
pub struct RangeOptions {
    /// Store revision to read at; 0 means the view's revision.
    pub revision: i64,
    /// Maximum number of key-values returned; 0 means no limit. `count` ignores it.
    pub limit: usize,
    pub count_only: bool,
    pub keys_only: bool,
}

#[derive(Debug, Default, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range at the revision, whatever the limit.
    pub count: usize,
    /// The revision the range was read at.
    pub revision: i64,
}

#[derive(Debug)]
struct IndexState {
    index: KeyIndex,
    current: i64,
    compacted: i64,
}

pub struct Store {
    /// Replaced as a whole when a leader's snapshot is installed; readers that began before
    /// keep the old file open until they finish.
    db: RwLock<Arc<Database>>,
    path: PathBuf,
    state: RwLock<IndexState>,
}

fn backend<E: Into<redb::Error>>(e: E) -> MvccError {
    MvccError::Backend(e.into())
}

fn encode_record(kind: u8, kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(kind);
    kv.encode(&mut buf).expect("a Vec grows as needed");
    buf
}

fn decode_record(revision: Revision, bytes: &[u8]) -> Result<(u8, KeyValue), MvccError> {
    let corrupt = |reason: String| MvccError::Corrupt { revision, reason };
    let (&kind, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    if kind != RECORD_PUT && kind != RECORD_TOMBSTONE {
        return Err(corrupt(format!("unknown record kind {kind}")));
    }
    let kv = KeyValue::decode(body).map_err(|e| corrupt(e.to_string()))?;
    Ok((kind, kv))
}

/// Collects the index entries of a range at `at`, under whatever lock the caller holds.
fn collect_range(
    index: &KeyIndex,
    key: &[u8],
    end: &[u8],
    at: i64,
    opts: &RangeOptions,
) -> (Vec<KeyRevision>, usize) {
    let mut found = Vec::new();
    let mut count = 0usize;
    index.visit_range(key, end, at, |_, kr| {
        count += 1;
        if !opts.count_only && (opts.limit == 0 || found.len() < opts.limit) {
            found.push(kr);
        }
        true
    });
    (found, count)
}

fn fetch_values(
    table: &impl ReadableTable<u128, &'static [u8]>,
    found: Vec<KeyRevision>,
    keys_only: bool,
) -> Result<Vec<KeyValue>, MvccError> {
    let mut kvs = Vec::with_capacity(found.len());
    for kr in found {
        let guard = table
            .get(kr.modified.to_backend_key())
            .map_err(backend)?
            .ok_or_else(|| MvccError::Corrupt {
                revision: kr.modified,
                reason: "indexed revision missing from the backend".into(),
            })?;
        let (_, mut kv) = decode_record(kr.modified, guard.value())?;
        if keys_only {
            kv.value = Vec::new();
        }
        kvs.push(kv);
    }
    Ok(kvs)
}

fn check_readable(at: i64, current: i64, compacted: i64) -> Result<(), MvccError> {
    if at > current {
        return Err(MvccError::FutureRevision);
    }
    if at < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(())
}

/// Every live key attached to a lease, as (key, lease id).
pub type LeaseAttachments = Vec<(Vec<u8>, i64)>;

/// Rebuilds the key index from the backend, and finds the live keys attached to leases in
/// the same pass, so the lessor can be rebuilt without reading every value again.
fn load(db: &Database) -> Result<(IndexState, LeaseAttachments), MvccError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut index = KeyIndex::new();
    // The lease of each key's latest value, in revision order: a later put without a
    // lease or a delete ends the attachment.
    let mut leased: HashMap<Vec<u8>, i64> = HashMap::new();
    let (mut current, compacted);
    {
        let kv = txn.open_table(KV_TABLE).map_err(backend)?;
        let meta = txn.open_table(META_TABLE).map_err(backend)?;
        // Every table exists from here on, so readers need not expect a missing one.
        txn.open_table(LEASE_TABLE).map_err(backend)?;
        txn.open_table(MEMBERS_TABLE).map_err(backend)?;
        txn.open_table(MEMBERS_REMOVED_TABLE).map_err(backend)?;
        compacted = meta
            .get(META_COMPACTED_REVISION)
            .map_err(backend)?
            .map_or(0, |v| v.value() as i64);
        // An empty store is at revision 1, as etcd's: the first change is revision 2.
        current = compacted.max(1);
        for entry in kv.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let revision = Revision::from_backend_key(k.value());
            let (kind, kv) = decode_record(revision, v.value())?;
            if kind == RECORD_PUT {
                index.restore(&kv.key, revision, kv.create_revision, kv.version);
            } else {
                index.tombstone(&kv.key, revision);
            }
            if kind == RECORD_PUT && kv.lease != 0 {
                leased.insert(kv.key, kv.lease);
            } else {
                leased.remove(&kv.key);
            }
            current = current.max(revision.main);
        }
    }
    txn.commit().map_err(backend)?;
    tracing::info!(
        keys = index.len(),
        revision = current,
        compacted,
        "mvcc store loaded"
    );
    let state = IndexState {
        index,
        current,
        compacted,
    };
    Ok((state, leased.into_iter().collect()))
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &redb::ReadTransaction,
    target: &redb::WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<(), MvccError> {
    let from = source.open_table(definition).map_err(backend)?;
    let mut to = target.open_table(definition).map_err(backend)?;
    for entry in from.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        to.insert(k.value(), v.value()).map_err(backend)?;
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the backend file and rebuilds the key index from it. Returns the
    /// live keys attached to leases too, found in the same pass, so the lessor can be rebuilt
    /// without reading every value again.
    pub fn open(path: &Path) -> Result<(Store, LeaseAttachments), MvccError> {
        let db = Database::create(path).map_err(backend)?;
        let (state, leased) = load(&db)?;
        let store = Store {
            db: RwLock::new(Arc::new(db)),
            path: path.to_owned(),
            state: RwLock::new(state),
        };
        Ok((store, leased))
    }

    fn db(&self) -> Arc<Database> {
        self.db
            .read()
            .expect("the database lock is never poisoned")
            .clone()
    }

    /// Replaces the whole store with the backend file at `incoming` (a copy of the leader's,
    /// made by `export_to`), which moves to this store's path. Returns the leased keys, as
    /// `open` does.
    ///
    /// `stamp` is a meta entry written into the received file before it moves: the move is
    /// then the one step that both replaces the data and records where it came from, so a
    /// crash leaves either the old store or the new one with its stamp, never the new one
    /// without.
    pub fn install(
        &self,
        incoming: &Path,
        stamp: (&str, u64),
    ) -> Result<LeaseAttachments, MvccError> {
        let db = Database::create(incoming).map_err(backend)?;
        let (loaded, leased) = load(&db)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(META_TABLE)
            .map_err(backend)?
            .insert(stamp.0, stamp.1)
            .map_err(backend)?;
        txn.commit().map_err(backend)?;
        drop(db);
        std::fs::rename(incoming, &self.path).map_err(|e| backend(redb::StorageError::Io(e)))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| backend(redb::StorageError::Io(e)))?;
        }
        let db = Database::create(&self.path).map_err(backend)?;
        let mut state = self.write_state();
        *self
            .db
            .write()
            .expect("the database lock is never poisoned") = Arc::new(db);
        *state = loaded;
        Ok(leased)
    }

    /// Writes a consistent copy of the whole store to a new file at `path`; returns the
    /// applied index the copy holds.
    pub fn export_to(&self, path: &Path) -> Result<u64, MvccError> {
        let source = self.db().begin_read().map_err(backend)?;
        let _ = std::fs::remove_file(path);
        let target = Database::create(path).map_err(backend)?;
        let txn = target.begin_write().map_err(backend)?;
        {
            copy_table(&source, &txn, KV_TABLE)?;
            copy_table(&source, &txn, META_TABLE)?;
            copy_table(&source, &txn, LEASE_TABLE)?;
            copy_table(&source, &txn, MEMBERS_TABLE)?;
            copy_table(&source, &txn, MEMBERS_REMOVED_TABLE)?;
        }
        txn.commit().map_err(backend)?;
        let applied = source
            .open_table(META_TABLE)
            .map_err(backend)?
            .get(META_APPLIED_INDEX)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        Ok(applied)
    }

    /// Every member record, by id.
    pub fn members(&self) -> Result<Vec<(u64, Vec<u8>)>, MvccError> {
        let txn = self.db().begin_read().map_err(backend)?;
        let table = txn.open_table(MEMBERS_TABLE).map_err(backend)?;
        let mut members = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (id, value) = entry.map_err(backend)?;
            members.push((id.value(), value.value().to_vec()));
        }
        Ok(members)
    }

    /// The IDs of every member ever removed.
    pub fn removed_members(&self) -> Result<Vec<u64>, MvccError> {
        let txn = self.db().begin_read().map_err(backend)?;
        let table = txn.open_table(MEMBERS_REMOVED_TABLE).map_err(backend)?;
        let mut removed = Vec::new();
        for entry in table.iter().map_err(backend)? {
            removed.push(entry.map_err(backend)?.0.value());
        }
        Ok(removed)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state
            .read()
            .expect("the index lock is never poisoned: writers do not panic while holding it")
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state
            .write()
            .expect("the index lock is never poisoned: writers do not panic while holding it")
    }

    pub fn current_revision(&self) -> i64 {
        self.read_state().current
    }

    pub fn compacted_revision(&self) -> i64 {
        self.read_state().compacted
    }

    /// Keys in the index, live or deleted but not yet compacted away.
    pub fn key_count(&self) -> usize {
        self.read_state().index.len()
    }

    /// The raft index of the last entry whose effects are in the backend.
    pub fn applied_index(&self) -> Result<u64, MvccError> {
        Ok(self.meta(META_APPLIED_INDEX)?.unwrap_or(0))
    }

    pub fn meta(&self, name: &str) -> Result<Option<u64>, MvccError> {
        let txn = self.db().begin_read().map_err(backend)?;
        let table = txn.open_table(META_TABLE).map_err(backend)?;
        Ok(table.get(name).map_err(backend)?.map(|v| v.value()))
    }

    /// Every granted lease as (id, TTL, checkpointed remaining TTL or 0), in seconds.
    pub fn leases(&self) -> Result<Vec<(i64, i64, i64)>, MvccError> {
        let txn = self.db().begin_read().map_err(backend)?;
        let table = txn.open_table(LEASE_TABLE).map_err(backend)?;
        let mut leases = Vec::new();
        for entry in table.iter().map_err(backend)? {
            let (id, value) = entry.map_err(backend)?;
            let (ttl, remaining) = value.value();
            leases.push((id.value(), ttl, remaining));
        }
        Ok(leases)
    }

    /// Size of the backend file in bytes.
    pub fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// A consistent view at the current revision for one or more reads.
    pub fn read_view(&self) -> Result<ReadView<'_>, MvccError> {
        let state = self.read_state();
        let txn = self.db().begin_read().map_err(backend)?;
        Ok(ReadView {
            store: self,
            txn,
            revision: state.current,
            compacted: state.compacted,
        })
    }

    /// Applies one batch of raft entries ending at `applied_index`: `apply` runs with exclusive
    /// access, then everything commits together (without fsync) and becomes visible to readers.
    pub fn write<R, E: From<MvccError>>(
        &self,
        applied_index: u64,
        apply: impl FnOnce(&mut Writer<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut txn = self.db().begin_write().map_err(backend)?;
        txn.set_durability(Durability::None).map_err(backend)?;
        let mut state = self.write_state();
        debug_assert!(
            applied_index >= self.applied_index_in(&txn).unwrap_or(0),
            "the applied index never goes backwards"
        );
        let before = (state.current, state.compacted);
        let result = {
            let mut writer = Writer {
                kv: txn.open_table(KV_TABLE).map_err(backend)?,
                leases: txn.open_table(LEASE_TABLE).map_err(backend)?,
                members: txn.open_table(MEMBERS_TABLE).map_err(backend)?,
                members_removed: txn.open_table(MEMBERS_REMOVED_TABLE).map_err(backend)?,
                state: &mut state,
            };
            let r = apply(&mut writer);
            if r.is_ok() {
                let mut meta = txn.open_table(META_TABLE).map_err(backend)?;
                meta.insert(META_APPLIED_INDEX, applied_index)
                    .map_err(backend)?;
                meta.insert(META_COMPACTED_REVISION, writer.state.compacted as u64)
                    .map_err(backend)?;
            }
            r
        };
        match result {
            Ok(r) => {
                txn.commit().map_err(backend)?;
                debug_assert!(
                    state.current >= before.0 && state.compacted >= before.1,
                    "revisions never go backwards"
                );
                Ok(r)
            }
            Err(e) => {
                // The index may hold part of the failed batch; the caller must stop applying.
                drop(txn);
                Err(e)
            }
        }
    }

    fn applied_index_in(&self, txn: &redb::WriteTransaction) -> Result<u64, MvccError> {
        let meta = txn.open_table(META_TABLE).map_err(backend)?;
        Ok(meta
            .get(META_APPLIED_INDEX)
            .map_err(backend)?
            .map_or(0, |v| v.value()))
    }

    /// Writes a named integer (member metadata) durably.
    pub fn set_meta(&self, name: &str, value: u64) -> Result<(), MvccError> {
        let txn = self.db().begin_write().map_err(backend)?;
        txn.open_table(META_TABLE)
            .map_err(backend)?
            .insert(name, value)
            .map_err(backend)?;
        txn.commit().map_err(backend)
    }

    /// Makes every earlier batch durable with one fsync'ed commit.
    pub fn persist(&self) -> Result<(), MvccError> {
        let txn = self.db().begin_write().map_err(backend)?;
        txn.commit().map_err(backend)
    }
}

/// A fixed revision of the store for reads; later writes do not change what it sees.
pub struct ReadView<'a> {
    store: &'a Store,
    txn: redb::ReadTransaction,
    revision: i64,
    compacted: i64,
}

impl ReadView<'_> {
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compacted revision when the view was taken.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let at = if opts.revision > 0 {
            opts.revision
        } else {
            self.revision
        };
        let (found, count) = {
            let state = self.store.read_state();
            check_readable(at, self.revision, state.compacted)?;
            collect_range(&state.index, key, end, at, opts)
        };
        let kvs = if found.is_empty() {
            Vec::new()
        } else {
            let table = self.txn.open_table(KV_TABLE).map_err(backend)?;
            fetch_values(&table, found, opts.keys_only)?
        };
        Ok(RangeResult {
            kvs,
            count,
            revision: self.revision,
        })
    }
}

impl ReadView<'_> {
    /// Every change with a main revision in `from..=to`, in revision order, as watch events
    /// (a delete's key-value holds only the key and its revision), stopping after
    /// `revisions_max` main revisions. Returns the events and the last revision read.
    pub fn changes(
        &self,
        from: i64,
        to: i64,
        revisions_max: i64,
    ) -> Result<(Vec<Event>, i64), MvccError> {
        let to = to
            .min(self.revision)
            .min(from.saturating_add(revisions_max) - 1);
        if from > to {
            return Ok((Vec::new(), from - 1));
        }
        // As etcd: history is refused only below the compacted revision; at it, what the
        // compaction kept is replayed.
        if from < self.compacted {
            return Err(MvccError::Compacted);
        }
        let table = self.txn.open_table(KV_TABLE).map_err(backend)?;
        let range = Revision::new(from, 0).to_backend_key()..=Revision::last_backend_key_of(to);
        let mut events = Vec::new();
        for entry in table.range(range).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let revision = Revision::from_backend_key(k.value());
            let (kind, kv) = decode_record(revision, v.value())?;
            let kind = if kind == RECORD_PUT {
                EventType::Put
            } else {
                EventType::Delete
            };
            events.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv: None,
            });
        }
        Ok((events, to))
    }
}

/// Exclusive access to the store for one batch of applied entries.
pub struct Writer<'a> {
    kv: redb::Table<'a, u128, &'static [u8]>,
    leases: redb::Table<'a, i64, (i64, i64)>,
    members: redb::Table<'a, u64, &'static [u8]>,
    members_removed: redb::Table<'a, u64, ()>,
    state: &'a mut IndexState,
}

impl Writer<'_> {
    pub fn current_revision(&self) -> i64 {
        self.state.current
    }

    /// Adds or replaces a member record; membership is not revisioned.
    pub fn put_member(&mut self, id: u64, record: &[u8]) -> Result<(), MvccError> {
        self.members.insert(id, record).map_err(backend)?;
        Ok(())
    }

    /// Removes a member for good: its ID is recorded as removed in the same transaction.
    pub fn remove_member(&mut self, id: u64) -> Result<(), MvccError> {
        self.members.remove(id).map_err(backend)?;
        self.members_removed.insert(id, ()).map_err(backend)?;
        Ok(())
    }

    pub fn compacted_revision(&self) -> i64 {
        self.state.compacted
    }

    /// Runs one request's changes as a single revision: every put and delete inside shares the
    /// main revision `current + 1`; the store revision advances only if something changed.
    /// A request that fails must fail before it changes anything: its partial changes are not undone.
    pub fn txn<R, E>(
        &mut self,
        f: impl FnOnce(&mut TxnWriter<'_, '_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let main = self.state.current + 1;
        let mut txn = TxnWriter {
            writer: self,
            main,
            sub: 0,
        };
        let r = f(&mut txn)?;
        if txn.sub > 0 {
            self.state.current = main;
        }
        Ok(r)
    }

    /// Forgets every revision older than `revision` that no read at or after it can see.
    pub fn compact(&mut self, revision: i64) -> Result<(), MvccError> {
        if revision <= self.state.compacted {
            return Err(MvccError::Compacted);
        }
        if revision > self.state.current {
            return Err(MvccError::FutureRevision);
        }
        let keep = self.state.index.compact(revision);
        self.kv
            .retain_in(..=Revision::last_backend_key_of(revision), |k, _| {
                keep.contains(&Revision::from_backend_key(k))
            })
            .map_err(backend)?;
        self.state.compacted = revision;
        Ok(())
    }
}

/// The changes of one request, all at main revision `main`.
pub struct TxnWriter<'w, 'a> {
    writer: &'w mut Writer<'a>,
    main: i64,
    sub: i64,
}

impl TxnWriter<'_, '_> {
    /// The revision reads inside this request see: the request's own if it changed anything yet.
    pub fn read_revision(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }

    pub fn compacted_revision(&self) -> i64 {
        self.writer.state.compacted
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    /// Records a granted lease and its checkpointed remaining TTL (0: none); leases are not
    /// revisioned, so this takes no revision.
    pub fn put_lease(
        &mut self,
        id: i64,
        ttl_seconds: i64,
        remaining_seconds: i64,
    ) -> Result<(), MvccError> {
        self.writer
            .leases
            .insert(id, (ttl_seconds, remaining_seconds))
            .map_err(backend)?;
        Ok(())
    }

    pub fn delete_lease(&mut self, id: i64) -> Result<(), MvccError> {
        self.writer.leases.remove(id).map_err(backend)?;
        Ok(())
    }

    /// Reads a range, seeing this request's earlier changes.
    pub fn range(
        &self,
        key: &[u8],
        end: &[u8],
        opts: &RangeOptions,
    ) -> Result<RangeResult, MvccError> {
        let current = self.read_revision();
        let at = if opts.revision > 0 {
            opts.revision
        } else {
            current
        };
        check_readable(at, current, self.writer.state.compacted)?;
        let (found, count) = collect_range(&self.writer.state.index, key, end, at, opts);
        let kvs = fetch_values(&self.writer.kv, found, opts.keys_only)?;
        Ok(RangeResult {
            kvs,
            count,
            revision: current,
        })
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: i64) -> Result<(), MvccError> {
        let rev = self.next_revision();
        let (create_revision, version) = self.writer.state.index.put(&key, rev);
        let kv = KeyValue {
            key,
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.writer
            .kv
            .insert(
                rev.to_backend_key(),
                encode_record(RECORD_PUT, &kv).as_slice(),
            )
            .map_err(backend)?;
        Ok(())
    }

    /// Deletes every live key in the range; returns the keys deleted.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<Box<[u8]>>, MvccError> {
        let keys = self.writer.state.index.live_keys(key, end);
        for k in &keys {
            let rev = self.next_revision();
            let was_live = self.writer.state.index.tombstone(k, rev);
            debug_assert!(was_live, "live_keys returned a key that is not live");
            let tombstone = KeyValue {
                key: k.to_vec(),
                mod_revision: rev.main,
                ..KeyValue::default()
            };
            self.writer
                .kv
                .insert(
                    rev.to_backend_key(),
                    encode_record(RECORD_TOMBSTONE, &tombstone).as_slice(),
                )
                .map_err(backend)?;
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(&dir.path().join("db")).expect("open store");
        (dir, store)
    }

    fn put(store: &Store, index: u64, key: &str, value: &str) {
        store
            .write(index, |w| w.txn(|t| t.put(key.into(), value.into(), 0)))
            .expect("put");
    }

    fn get(store: &Store, key: &str, revision: i64) -> Result<RangeResult, MvccError> {
        let opts = RangeOptions {
            revision,
            ..RangeOptions::default()
        };
        store.read_view()?.range(key.as_bytes(), b"", &opts)
    }

    #[test]
    fn an_exported_copy_installed_elsewhere_replaces_that_store_whole() {
        let (_leader_dir, leader) = open();
        put(&leader, 5, "a", "1");
        put(&leader, 6, "b", "2");
        leader
            .write(7, |w| {
                w.put_member(9, b"member nine")?;
                w.put_member(8, b"member eight")?;
                w.remove_member(8)?;
                w.txn(|t| t.put(b"leased".to_vec(), b"v".to_vec(), 42))
            })
            .expect("member and leased key");
        let (follower_dir, follower) = open();
        put(&follower, 3, "stale", "x");

        let incoming = follower_dir.path().join("incoming.db");
        assert_eq!(leader.export_to(&incoming).expect("export"), 7);
        let leased = follower
            .install(&incoming, ("installed_snapshot", 6))
            .expect("install");

        assert!(!incoming.exists(), "the received file became the store");
        assert_eq!(follower.applied_index().expect("applied"), 7);
        assert_eq!(
            follower.meta("installed_snapshot").expect("meta"),
            Some(6),
            "the stamp arrives with the data"
        );
        assert_eq!(follower.current_revision(), leader.current_revision());
        assert_eq!(get(&follower, "b", 0).expect("read").kvs[0].value, b"2");
        assert!(get(&follower, "stale", 0).expect("read").kvs.is_empty());
        assert_eq!(leased, vec![(b"leased".to_vec(), 42)]);
        assert_eq!(
            follower.members().expect("members"),
            vec![(9, b"member nine".to_vec())]
        );
        assert_eq!(
            follower.removed_members().expect("removed members"),
            vec![8],
            "a removed member stays removed on the member that installs the copy"
        );
    }

    #[test]
    fn each_request_is_one_revision_with_subs() {
        let (_dir, store) = open();
        assert_eq!(
            store.current_revision(),
            1,
            "an empty store is at revision 1, as etcd's"
        );
        store
            .write(1, |w| {
                w.txn(|t| {
                    t.put(b"a".to_vec(), b"1".to_vec(), 0)?;
                    t.put(b"b".to_vec(), b"2".to_vec(), 0)?;
                    let seen = t.range(b"a", b"", &RangeOptions::default())?;
                    assert_eq!(seen.kvs[0].value, b"1", "a request sees its own changes");
                    Ok::<_, MvccError>(())
                })
            })
            .expect("txn");
        assert_eq!(store.current_revision(), 2);
        let view = store.read_view().expect("view");
        let all = view
            .range(b"a", b"\0", &RangeOptions::default())
            .expect("range");
        assert_eq!(all.count, 2);
        assert!(
            all.kvs
                .iter()
                .all(|kv| kv.mod_revision == 2 && kv.create_revision == 2 && kv.version == 1)
        );
        assert_eq!(store.applied_index().expect("applied"), 1);
    }

    #[test]
    fn a_request_that_changes_nothing_takes_no_revision() {
        let (_dir, store) = open();
        put(&store, 1, "a", "1");
        let deleted = store
            .write(2, |w| w.txn(|t| t.delete_range(b"zz", b"")))
            .expect("delete");
        assert!(deleted.is_empty());
        assert_eq!(store.current_revision(), 2);
    }

    #[test]
    fn history_and_compaction_errors() {
        let (_dir, store) = open();
        put(&store, 1, "a", "1");
        put(&store, 2, "a", "2");
        put(&store, 3, "a", "3");
        assert_eq!(
            get(&store, "a", 1).expect("rev 1").count,
            0,
            "revision 1 is the empty store"
        );
        assert_eq!(get(&store, "a", 2).expect("rev 2").kvs[0].value, b"1");
        assert!(matches!(
            get(&store, "a", 9),
            Err(MvccError::FutureRevision)
        ));
        store.write(4, |w| w.compact(3)).expect("compact");
        assert!(matches!(get(&store, "a", 2), Err(MvccError::Compacted)));
        assert_eq!(get(&store, "a", 3).expect("rev 3").kvs[0].value, b"2");
        assert!(matches!(
            store.write(5, |w| w.compact(3)),
            Err(MvccError::Compacted)
        ));
        assert!(matches!(
            store.write(5, |w| w.compact(9)),
            Err(MvccError::FutureRevision)
        ));
    }

    #[test]
    fn reopening_rebuilds_the_index_with_revisions_and_versions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        {
            let (store, _) = Store::open(&path).expect("open");
            put(&store, 1, "a", "1");
            put(&store, 2, "a", "2");
            put(&store, 3, "b", "1");
            store
                .write(4, |w| w.txn(|t| t.delete_range(b"b", b"")))
                .expect("delete");
            store.write(5, |w| w.compact(5)).expect("compact");
            store.persist().expect("persist");
        }
        let (store, leased) = Store::open(&path).expect("reopen");
        assert!(leased.is_empty(), "no key was put with a lease");
        assert_eq!(
            store.current_revision(),
            5,
            "a tombstone compacted away still counts"
        );
        assert_eq!(store.compacted_revision(), 5);
        assert_eq!(store.applied_index().expect("applied"), 5);
        let a = get(&store, "a", 0).expect("a").kvs.remove(0);
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
        assert_eq!(get(&store, "b", 0).expect("b").count, 0);
        put(&store, 6, "a", "3");
        assert_eq!(get(&store, "a", 0).expect("a").kvs[0].version, 3);
    }

    #[test]
    fn changes_replay_history_as_events_in_revision_order() {
        let (_dir, store) = open();
        put(&store, 1, "a", "1");
        put(&store, 2, "b", "1");
        store
            .write(3, |w| w.txn(|t| t.delete_range(b"a", b"")))
            .expect("delete");
        let view = store.read_view().expect("view");
        let (events, last) = view.changes(2, 10, 100).expect("changes");
        assert_eq!(last, 4, "clamped to the view's revision");
        let summary: Vec<(i32, Vec<u8>, i64)> = events
            .iter()
            .map(|e| {
                (
                    e.r#type,
                    e.kv.as_ref().expect("kv").key.clone(),
                    e.kv.as_ref().expect("kv").mod_revision,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (EventType::Put as i32, b"a".to_vec(), 2),
                (EventType::Put as i32, b"b".to_vec(), 3),
                (EventType::Delete as i32, b"a".to_vec(), 4),
            ]
        );
        let (events, last) = view.changes(2, 10, 2).expect("bounded");
        assert_eq!((events.len(), last), (2, 3), "at most two revisions");
        store.write(4, |w| w.compact(3)).expect("compact");
        let view = store.read_view().expect("view");
        assert!(matches!(view.changes(2, 4, 10), Err(MvccError::Compacted)));
        assert_eq!(
            view.changes(3, 4, 10)
                .expect("from the compacted revision")
                .0
                .len(),
            2
        );
    }

    #[test]
    fn reopening_finds_the_keys_still_attached_to_leases() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        {
            let (store, _) = Store::open(&path).expect("open");
            let put = |index, key: &str, lease| {
                store
                    .write(index, |w| {
                        w.txn(|t| t.put(key.into(), b"v".to_vec(), lease))
                    })
                    .expect("put");
            };
            put(1, "kept", 7);
            put(2, "detached", 7);
            put(3, "detached", 0);
            put(4, "deleted", 8);
            store
                .write(5, |w| w.txn(|t| t.delete_range(b"deleted", b"")))
                .expect("delete");
            put(6, "moved", 7);
            put(7, "moved", 9);
            store.persist().expect("persist");
        }
        let (_, mut leased) = Store::open(&path).expect("reopen");
        leased.sort();
        assert_eq!(leased, vec![(b"kept".to_vec(), 7), (b"moved".to_vec(), 9)]);
    }

    #[test]
    fn limit_keeps_the_total_count_and_keys_only_drops_values() {
        let (_dir, store) = open();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            put(&store, i as u64 + 1, k, "v");
        }
        let opts = RangeOptions {
            limit: 2,
            keys_only: true,
            ..RangeOptions::default()
        };
        let r = store
            .read_view()
            .expect("view")
            .range(b"a", b"\0", &opts)
            .expect("range");
        assert_eq!((r.kvs.len(), r.count), (2, 3));
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
        let opts = RangeOptions {
            count_only: true,
            ..RangeOptions::default()
        };
        let r = store
            .read_view()
            .expect("view")
            .range(b"a", b"\0", &opts)
            .expect("range");
        assert_eq!((r.kvs.len(), r.count), (0, 3));
    }
}
