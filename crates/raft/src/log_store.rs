//! Raft's durable state: every entry, the hard state and the membership, written to the WAL
//! and mirrored in raft-rs's in-memory `MemStorage`, which the raft state machine reads.
//!
//! A snapshot record marks an index the state machine holds durably: entries up to it are no
//! longer needed, so the WAL segments holding only such entries are deleted. That bounds the
//! disk the WAL takes and the time a restart spends replaying it.
//!
//! The records go to a [`RecordLog`]: cairn-wal's segment files in Cairn, a simulated disk in
//! cairn-sim, so the simulation replays, trims and snapshots the log with this very code.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_wal::{RecordPosition, Wal, WalOptions};
use raft::Storage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;

use crate::RaftError;
use crate::core::LogStorage;

/// WAL record kinds written by this layer.
pub const RECORD_ENTRY: u8 = 1;
pub const RECORD_HARD_STATE: u8 = 2;
pub const RECORD_CONF_STATE: u8 = 3;
pub const RECORD_SNAPSHOT: u8 = 4;

/// Entries kept in memory behind the applied index at most, for a slow follower to catch up
/// from (fewer with a smaller `--snapshot-count`).
const RETAINED_APPLIED_ENTRIES: u64 = 10_000;

/// An append-only log of typed records in numbered segments, made durable by `sync`.
pub trait RecordLog {
    /// Appends a record; the position says which segment holds it.
    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<RecordPosition, RaftError>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> Result<(), RaftError>;
    /// Deletes every segment before `position`'s.
    fn purge_before(&mut self, position: RecordPosition) -> Result<(), RaftError>;
}

impl RecordLog for Wal {
    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<RecordPosition, RaftError> {
        Ok(Wal::append(self, kind, payload)?)
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        Ok(Wal::sync(self)?)
    }

    fn purge_before(&mut self, position: RecordPosition) -> Result<(), RaftError> {
        Ok(Wal::purge_before(self, position)?)
    }
}

/// One record found on replay: its kind, its payload and the segment holding it.
pub type ReplayedRecord<'a> = (u8, &'a [u8], u64);

pub struct RaftLogStore<W: RecordLog = Wal> {
    wal: W,
    memory: MemStorage,
    /// Whether anything was appended since the last sync.
    dirty: bool,
    /// The highest entry index in each WAL segment still on disk.
    segment_last_index: BTreeMap<u64, u64>,
    /// Index of the last snapshot record.
    snapshot_index: u64,
}

fn decode<M: protobuf::Message>(kind: &str, payload: &[u8]) -> Result<M, RaftError> {
    M::parse_from_bytes(payload)
        .map_err(|e| RaftError::CorruptLog(format!("undecodable {kind} record: {e}")))
}

fn encode(message: &impl protobuf::Message) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding to a Vec cannot fail")
}

impl RaftLogStore<Wal> {
    /// Replays the WAL in `dir`; see [`RaftLogStore::replay`].
    pub fn open(
        dir: &Path,
        wal_options: WalOptions,
        initial_voters: &[u64],
        applied: u64,
        installed_snapshot: u64,
    ) -> Result<RaftLogStore, RaftError> {
        let opened = Wal::open(dir, wal_options)?;
        if let Some(repair) = &opened.repaired_tail {
            tracing::warn!(
                segment = repair.segment,
                offset = repair.offset,
                discarded_bytes = repair.discarded_bytes,
                "WAL had a torn tail (an interrupted write); cut it off"
            );
        }
        let records = opened
            .records
            .iter()
            .zip(&opened.record_segments)
            .map(|(record, segment)| (record.kind, record.payload.as_slice(), *segment));
        RaftLogStore::replay(
            opened.wal,
            records,
            initial_voters,
            applied,
            installed_snapshot,
        )
    }
}

impl<W: RecordLog> RaftLogStore<W> {
    /// Rebuilds the log from the `records` found in `wal`, in order. A brand-new log is
    /// bootstrapped with `initial_voters` (none for a member joining an existing cluster).
    /// `applied` is the index the state machine already holds: everything up to it is known to
    /// be committed, even if the hard state recording that commit was not synced before a crash.
    /// `installed_snapshot` is the snapshot index the state machine was installed from, if any.
    pub fn replay<'a>(
        mut wal: W,
        records: impl IntoIterator<Item = ReplayedRecord<'a>>,
        initial_voters: &[u64],
        applied: u64,
        installed_snapshot: u64,
    ) -> Result<RaftLogStore<W>, RaftError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut hard_state = HardState::default();
        let mut conf_state: Option<ConfState> = None;
        let mut snapshot: Option<SnapshotMetadata> = None;
        let mut segment_last_index: BTreeMap<u64, u64> = BTreeMap::new();
        for (kind, payload, segment) in records {
            match kind {
                RECORD_ENTRY => {
                    let entry: Entry = decode("entry", payload)?;
                    let last = segment_last_index.entry(segment).or_default();
                    *last = (*last).max(entry.index);
                    // A later entry at an index overwrites the suffix from that index on (a new
                    // leader replaced uncommitted entries).
                    if let Some(first) = entries.first().map(|e| e.index) {
                        let next = first + entries.len() as u64;
                        if entry.index < first {
                            // It overwrites everything held. The entries before it were in
                            // segments deleted for a snapshot record further on, which covers
                            // them: a segment is kept while it holds an entry past the
                            // snapshot, even one this entry later overwrote.
                            entries.clear();
                        } else if entry.index > next {
                            return Err(RaftError::CorruptLog(format!(
                                "entry {} follows entry {} with a gap",
                                entry.index,
                                next - 1
                            )));
                        } else {
                            entries.truncate((entry.index - first) as usize);
                        }
                    }
                    entries.push(entry);
                }
                RECORD_HARD_STATE => hard_state = decode("hard state", payload)?,
                RECORD_CONF_STATE => conf_state = Some(decode("conf state", payload)?),
                RECORD_SNAPSHOT => {
                    let meta: SnapshotMetadata = decode("snapshot", payload)?;
                    entries.retain(|e| e.index > meta.index);
                    conf_state = Some(meta.get_conf_state().clone());
                    snapshot = Some(meta);
                }
                other => {
                    return Err(RaftError::CorruptLog(format!(
                        "unknown WAL record kind {other}"
                    )));
                }
            }
        }
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
        if let Some(first) = entries.first()
            && first.index != snapshot_index + 1
        {
            return Err(RaftError::CorruptLog(format!(
                "the WAL's entries start at {} but its snapshot is at {snapshot_index}",
                first.index
            )));
        }
        let last_index = entries.last().map_or(snapshot_index, |e| e.index);
        // A state machine installed from a leader's snapshot holds that leader's later
        // entries too; this log receives them again from the leader.
        let ahead_by_snapshot = installed_snapshot != 0 && installed_snapshot == snapshot_index;
        if applied > last_index && !ahead_by_snapshot {
            return Err(RaftError::CorruptLog(format!(
                "the backend has applied index {applied} but the WAL ends at {last_index}: the WAL is missing synced entries"
            )));
        }
        // The snapshot at index 1 that starts every new log holds no state.
        if snapshot_index > applied.max(1) {
            return Err(RaftError::SnapshotNotInstalled {
                index: snapshot_index,
                applied,
            });
        }
        hard_state.commit = hard_state.commit.max(applied.min(last_index));

        let memory = MemStorage::new();
        let conf_state = match conf_state {
            Some(cs) => cs,
            None if initial_voters.is_empty() => ConfState::default(),
            None => {
                // A new cluster's log starts after a snapshot at index 1 that holds the
                // membership: a member added later has no log, so the leader sends it a
                // snapshot, and with it the membership.
                let cs = ConfState {
                    voters: initial_voters.to_vec(),
                    ..ConfState::default()
                };
                let mut meta = SnapshotMetadata::default();
                meta.set_index(1);
                meta.set_term(1);
                meta.set_conf_state(cs.clone());
                hard_state.term = hard_state.term.max(1);
                hard_state.commit = hard_state.commit.max(1);
                wal.append(RECORD_SNAPSHOT, &encode(&meta))?;
                wal.append(RECORD_HARD_STATE, &encode(&hard_state))?;
                wal.sync()?;
                snapshot = Some(meta);
                cs
            }
        };
        let snapshot_index = snapshot.as_ref().map_or(0, |s| s.index);
        {
            let mut core = memory.wl();
            if let Some(meta) = snapshot {
                let mut snap = Snapshot::default();
                snap.set_metadata(meta);
                core.apply_snapshot(snap)?;
            }
            core.set_conf_state(conf_state);
            core.append(&entries)?;
            core.set_hardstate(hard_state);
        }
        let store = RaftLogStore {
            wal,
            memory,
            dirty: false,
            segment_last_index,
            snapshot_index,
        };
        store.compact_memory(applied, RETAINED_APPLIED_ENTRIES)?;
        tracing::info!(
            entries = entries.len(),
            snapshot_index,
            last_index,
            applied,
            "raft log replayed from the WAL"
        );
        Ok(store)
    }

    /// The storage raft-rs reads; clones share the same state.
    pub fn memory(&self) -> MemStorage {
        self.memory.clone()
    }

    /// The record log underneath, for a simulator to inspect and crash.
    pub fn record_log(&self) -> &W {
        &self.wal
    }

    pub fn record_log_mut(&mut self) -> &mut W {
        &mut self.wal
    }

    pub fn into_record_log(self) -> W {
        self.wal
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    pub fn last_index(&self) -> u64 {
        self.memory
            .last_index()
            .expect("MemStorage's last index never fails")
    }

    /// Records a new membership, applied from a committed change.
    pub fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), RaftError> {
        self.wal.append(RECORD_CONF_STATE, &encode(conf_state))?;
        self.memory.wl().set_conf_state(conf_state.clone());
        self.dirty = true;
        Ok(())
    }

    /// Replaces the whole log with the leader's snapshot: the state machine is about to be
    /// replaced by the backend that came with it, so nothing before it is needed.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let mut hard_state = self.memory.initial_state()?.hard_state;
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        let position = self.wal.append(RECORD_SNAPSHOT, &encode(meta))?;
        self.wal.append(RECORD_HARD_STATE, &encode(&hard_state))?;
        self.wal.sync()?;
        self.dirty = false;
        {
            let mut core = self.memory.wl();
            core.apply_snapshot(snapshot.clone())?;
            core.set_hardstate(hard_state);
        }
        self.snapshot_index = meta.index;
        self.wal.purge_before(RecordPosition {
            segment: position.segment,
            offset: 0,
        })?;
        self.segment_last_index.clear();
        Ok(())
    }

    fn note_position(&mut self, position: RecordPosition, index: u64) {
        let last = self.segment_last_index.entry(position.segment).or_default();
        *last = (*last).max(index);
    }

    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            let position = self.wal.append(RECORD_ENTRY, &encode(entry))?;
            self.note_position(position, entry.index);
        }
        self.memory.wl().append(entries)?;
        self.dirty = true;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError> {
        self.wal.append(RECORD_HARD_STATE, &encode(hard_state))?;
        self.memory.wl().set_hardstate(hard_state.clone());
        self.dirty = true;
        Ok(())
    }

    /// Records a commit index learned after the entries were persisted. It rides along with the
    /// next sync: losing it in a crash is harmless because the applied index implies it.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        let hard_state = {
            let mut core = self.memory.wl();
            core.mut_hard_state().commit = commit;
            core.hard_state().clone()
        };
        self.wal.append(RECORD_HARD_STATE, &encode(&hard_state))?;
        self.dirty = true;
        Ok(())
    }

    /// One fdatasync for everything appended since the last: the group commit.
    pub fn sync(&mut self) -> Result<(), RaftError> {
        if self.dirty {
            self.wal.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Drops in-memory entries well behind `applied`; the WAL keeps them until a snapshot.
    /// Trimming shifts every retained entry, so it waits until a whole chunk can go at once.
    /// At most `retained` entries behind the applied index stay, for a slow follower to catch
    /// up from; one further behind gets a snapshot instead.
    pub fn compact_memory(&self, applied: u64, retained: u64) -> Result<(), RaftError> {
        let retained = retained.clamp(1, RETAINED_APPLIED_ENTRIES);
        // A state machine installed from a snapshot may be ahead of this log.
        let applied = applied.min(self.last_index());
        let first = self.memory.first_index()?;
        if applied >= first + 2 * retained {
            // `target <= applied <= last index` holds, as compaction requires.
            self.memory.wl().compact(applied - retained)?;
        }
        Ok(())
    }

    /// Records that the state machine holds everything up to `index` durably, then deletes
    /// the WAL segments that hold nothing after it. The membership and hard state are written
    /// again with the snapshot record, so no record the log still needs lives only in a
    /// deleted segment.
    pub fn snapshot(&mut self, index: u64) -> Result<(), RaftError> {
        if index <= self.snapshot_index {
            return Ok(());
        }
        let (term, conf_state, hard_state) = {
            let term = match self.memory.term(index) {
                Ok(term) => term,
                // Already trimmed from memory: the next, later snapshot will do.
                Err(_) => return Ok(()),
            };
            let state = self.memory.initial_state()?;
            (term, state.conf_state, state.hard_state)
        };
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(conf_state);
        let position = self.wal.append(RECORD_SNAPSHOT, &encode(&meta))?;
        self.wal.append(RECORD_HARD_STATE, &encode(&hard_state))?;
        self.wal.sync()?;
        self.dirty = false;
        self.snapshot_index = index;

        let keep_from = self
            .segment_last_index
            .iter()
            .find(|(_, last)| **last > index)
            .map_or(position.segment, |(segment, _)| {
                (*segment).min(position.segment)
            });
        self.wal.purge_before(RecordPosition {
            segment: keep_from,
            offset: 0,
        })?;
        self.segment_last_index = self.segment_last_index.split_off(&keep_from);
        tracing::debug!(
            index,
            term,
            keep_from_segment = keep_from,
            "raft snapshot; WAL trimmed"
        );
        Ok(())
    }
}

/// The Ready loop writes through the inherent methods above.
impl<W: RecordLog> LogStorage for RaftLogStore<W> {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        RaftLogStore::append_entries(self, entries)
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError> {
        RaftLogStore::set_hard_state(self, hard_state)
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        RaftLogStore::set_commit(self, commit)
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), RaftError> {
        RaftLogStore::set_conf_state(self, conf_state)
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftError> {
        RaftLogStore::install_snapshot(self, snapshot)
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        RaftLogStore::sync(self)
    }

    fn snapshot_index(&self) -> u64 {
        RaftLogStore::snapshot_index(self)
    }

    fn snapshot(&mut self, index: u64) -> Result<(), RaftError> {
        RaftLogStore::snapshot(self, index)
    }

    fn compact_memory(&mut self, applied: u64, retained: u64) -> Result<(), RaftError> {
        RaftLogStore::compact_memory(self, applied, retained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        entry_in_term(index, 1)
    }

    fn entry_in_term(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![b'x'; 100].into(),
            ..Entry::default()
        }
    }

    fn open(
        dir: &Path,
        voters: &[u64],
        applied: u64,
        installed: u64,
    ) -> Result<RaftLogStore, RaftError> {
        RaftLogStore::open(dir, small_segments(), voters, applied, installed)
    }

    fn indexes(log: &RaftLogStore) -> Vec<(u64, u64)> {
        let memory = log.memory();
        let first = memory.first_index().expect("first");
        (first..=log.last_index())
            .map(|i| (i, memory.term(i).expect("term")))
            .collect()
    }

    #[test]
    fn a_new_log_starts_after_a_membership_snapshot_at_index_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open(dir.path(), &[1, 2, 3], 0, 0).expect("boot");
        let state = log.memory().initial_state().expect("state");
        assert_eq!(log.snapshot_index(), 1);
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!((state.hard_state.term, state.hard_state.commit), (1, 1));
        let joining_dir = tempfile::tempdir().expect("temp dir");
        let joining = open(joining_dir.path(), &[], 0, 0).expect("join");
        let state = joining.memory().initial_state().expect("state");
        assert_eq!(joining.snapshot_index(), 0);
        assert!(state.conf_state.voters.is_empty());
    }

    #[test]
    fn later_entries_overwrite_the_suffix_and_the_applied_index_implies_its_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), &[1], 0, 0).expect("boot");
        let first_term: Vec<Entry> = (2..=5).map(entry).collect();
        log.append_entries(&first_term).expect("append");
        log.append_entries(&[entry_in_term(4, 2)])
            .expect("overwrite");
        log.sync().expect("sync");
        drop(log);
        let mut log = open(dir.path(), &[1], 0, 0).expect("replay");
        assert_eq!(indexes(&log), vec![(2, 1), (3, 1), (4, 2)]);
        log.snapshot(3).expect("snapshot");
        log.append_entries(&[entry_in_term(5, 2)]).expect("append");
        log.sync().expect("sync");
        drop(log);
        let log = open(dir.path(), &[1], 3, 0).expect("replay");
        assert_eq!(log.snapshot_index(), 3);
        assert_eq!(indexes(&log), vec![(4, 2), (5, 2)]);
        let state = log.memory().initial_state().expect("state");
        assert_eq!(
            state.hard_state.commit, 3,
            "the applied index implies its commit"
        );
    }

    fn snapshot_record(index: u64, term: u64) -> Vec<u8> {
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.mut_conf_state().voters = vec![1];
        encode(&meta)
    }

    fn replay(records: &[(u8, Vec<u8>, u64)], applied: u64) -> Result<RaftLogStore, RaftError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = Wal::open(dir.path(), small_segments()).expect("wal").wal;
        RaftLogStore::replay(
            wal,
            records.iter().map(|(k, p, s)| (*k, p.as_slice(), *s)),
            &[1],
            applied,
            0,
        )
    }

    /// Segment 1 held entries 2..=4 of term 1; segment 2 entries 5..=8 of term 1, never
    /// committed. A term-2 leader rewrote the log from 4 on, in segment 3, and a snapshot at 7
    /// deleted segment 1 but kept segment 2, whose stale entry 8 lies past the snapshot.
    #[test]
    fn a_rewrite_whose_predecessors_were_deleted_for_a_later_snapshot_replays() {
        let mut records: Vec<(u8, Vec<u8>, u64)> = (5..=8)
            .map(|i| (RECORD_ENTRY, encode(&entry_in_term(i, 1)), 2))
            .collect();
        records.extend((4..=9).map(|i| (RECORD_ENTRY, encode(&entry_in_term(i, 2)), 3)));
        records.push((RECORD_SNAPSHOT, snapshot_record(7, 2), 3));
        let log = replay(&records, 7).expect("replays");
        assert_eq!(log.snapshot_index(), 7);
        assert_eq!(indexes(&log), vec![(8, 2), (9, 2)]);
    }

    #[test]
    fn entries_with_a_gap_are_refused() {
        let records = vec![
            (RECORD_SNAPSHOT, snapshot_record(1, 1), 0),
            (RECORD_ENTRY, encode(&entry(2)), 0),
            (RECORD_ENTRY, encode(&entry(4)), 0),
        ];
        let refused = replay(&records, 0).map(|_| ());
        assert!(
            matches!(&refused, Err(RaftError::CorruptLog(reason)) if reason.contains("gap")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_backend_ahead_of_the_log_is_refused_unless_installed_from_its_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), &[1], 0, 0).expect("boot");
        log.append_entries(&[entry(2)]).expect("append");
        log.sync().expect("sync");
        drop(log);
        let missing = open(dir.path(), &[1], 5, 0).map(|_| ());
        assert!(
            matches!(&missing, Err(RaftError::CorruptLog(reason)) if reason.contains("missing synced entries")),
            "{missing:?}"
        );
        let mut log = open(dir.path(), &[1], 2, 0).expect("replay");
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 9;
        snapshot.mut_metadata().term = 2;
        log.install_snapshot(&snapshot).expect("install");
        drop(log);
        let not_installed = open(dir.path(), &[1], 2, 0).map(|_| ());
        assert!(
            matches!(
                not_installed,
                Err(RaftError::SnapshotNotInstalled {
                    index: 9,
                    applied: 2
                })
            ),
            "{not_installed:?}"
        );
        let ahead = open(dir.path(), &[1], 12, 9).expect("a backend installed from snapshot 9");
        let state = ahead.memory().initial_state().expect("state");
        assert_eq!(state.hard_state.commit, 9);
    }

    fn small_segments() -> WalOptions {
        WalOptions {
            segment_bytes: 4096,
        }
    }

    #[test]
    fn a_snapshot_trims_whole_segments_and_restart_resumes_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = RaftLogStore::open(dir.path(), small_segments(), &[1], 0, 0).expect("open");
        // A new log starts after the membership snapshot at index 1.
        for index in 2..=500 {
            log.append_entries(&[entry(index)]).expect("append");
        }
        log.set_hard_state(&HardState {
            term: 1,
            vote: 1,
            commit: 500,
            ..HardState::default()
        })
        .expect("hs");
        log.sync().expect("sync");
        let segments_before = std::fs::read_dir(dir.path()).expect("list").count();
        log.snapshot(400).expect("snapshot");
        let segments_after = std::fs::read_dir(dir.path()).expect("list").count();
        assert!(
            segments_after < segments_before / 2,
            "segments {segments_before} -> {segments_after}: the covered ones are gone"
        );
        drop(log);

        let log = RaftLogStore::open(dir.path(), small_segments(), &[1], 450, 0).expect("reopen");
        let memory = log.memory();
        assert_eq!(log.snapshot_index(), 400);
        assert_eq!(memory.last_index().expect("last"), 500);
        assert_eq!(memory.term(400).expect("the snapshot's term"), 1);
        let first = memory.first_index().expect("first");
        assert!(
            first <= 401,
            "every entry after the snapshot survives, first is {first}"
        );
        let state = memory.initial_state().expect("state");
        assert_eq!(
            state.conf_state.voters,
            vec![1],
            "membership survives the trim"
        );
        assert_eq!(state.hard_state.commit, 500);
    }
}
