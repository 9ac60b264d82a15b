//! Raft's durable state: every entry, the hard state and the membership, written to the WAL
//! and mirrored in raft-rs's in-memory `MemStorage`, which the raft state machine reads.

use std::path::Path;

use cairn_wal::{Wal, WalOptions};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};
use raft::storage::MemStorage;

use crate::RaftError;

/// WAL record kinds written by this layer.
const RECORD_ENTRY: u8 = 1;
const RECORD_HARD_STATE: u8 = 2;
const RECORD_CONF_STATE: u8 = 3;

/// Entries kept in memory behind the applied index, for a slow follower to catch up from.
const RETAINED_APPLIED_ENTRIES: u64 = 10_000;

pub struct RaftLogStore {
    wal: Wal,
    memory: MemStorage,
    /// Whether anything was appended since the last sync.
    dirty: bool,
}

fn decode<M: protobuf::Message>(kind: &str, payload: &[u8]) -> Result<M, RaftError> {
    M::parse_from_bytes(payload)
        .map_err(|e| RaftError::CorruptLog(format!("undecodable {kind} record: {e}")))
}

impl RaftLogStore {
    /// Replays the WAL in `dir`. A brand-new log is bootstrapped with `initial_voters`.
    /// `applied` is the index the state machine already holds: everything up to it is known to
    /// be committed, even if the hard state recording that commit was not synced before a crash.
    pub fn open(
        dir: &Path,
        initial_voters: &[u64],
        applied: u64,
    ) -> Result<RaftLogStore, RaftError> {
        let opened = Wal::open(dir, WalOptions::default())?;
        if let Some(repair) = &opened.repaired_tail {
            tracing::warn!(
                segment = repair.segment,
                offset = repair.offset,
                discarded_bytes = repair.discarded_bytes,
                "WAL had a torn tail (an interrupted write); cut it off"
            );
        }
        let mut wal = opened.wal;
        let mut entries: Vec<Entry> = Vec::new();
        let mut hard_state = HardState::default();
        let mut conf_state: Option<ConfState> = None;
        for record in &opened.records {
            match record.kind {
                RECORD_ENTRY => {
                    let entry: Entry = decode("entry", &record.payload)?;
                    // A later entry at an index overwrites the suffix from that index on (a new
                    // leader replaced uncommitted entries).
                    if let Some(first) = entries.first().map(|e| e.index) {
                        if entry.index < first {
                            return Err(RaftError::CorruptLog(format!(
                                "entry {} precedes the first entry {first}",
                                entry.index
                            )));
                        }
                        entries.truncate((entry.index - first) as usize);
                    }
                    entries.push(entry);
                }
                RECORD_HARD_STATE => hard_state = decode("hard state", &record.payload)?,
                RECORD_CONF_STATE => conf_state = Some(decode("conf state", &record.payload)?),
                other => {
                    return Err(RaftError::CorruptLog(format!(
                        "unknown WAL record kind {other}"
                    )));
                }
            }
        }
        let last_index = entries.last().map_or(0, |e| e.index);
        if applied > last_index {
            return Err(RaftError::CorruptLog(format!(
                "the backend has applied index {applied} but the WAL ends at {last_index}: the WAL is missing synced entries"
            )));
        }
        hard_state.commit = hard_state.commit.max(applied);

        let memory = MemStorage::new();
        let conf_state = match conf_state {
            Some(cs) => cs,
            None => {
                let cs = ConfState {
                    voters: initial_voters.to_vec(),
                    ..ConfState::default()
                };
                wal.append(
                    RECORD_CONF_STATE,
                    &cs.write_to_bytes().expect("encoding to a Vec cannot fail"),
                )?;
                wal.sync()?;
                cs
            }
        };
        {
            let mut core = memory.wl();
            core.set_conf_state(conf_state);
            core.append(&entries)?;
            core.set_hardstate(hard_state);
        }
        let store = RaftLogStore {
            wal,
            memory,
            dirty: false,
        };
        store.compact_memory(applied)?;
        tracing::info!(
            entries = entries.len(),
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

    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.wal.append(
                RECORD_ENTRY,
                &entry
                    .write_to_bytes()
                    .expect("encoding to a Vec cannot fail"),
            )?;
        }
        self.memory.wl().append(entries)?;
        self.dirty = true;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError> {
        self.wal.append(
            RECORD_HARD_STATE,
            &hard_state
                .write_to_bytes()
                .expect("encoding to a Vec cannot fail"),
        )?;
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
        self.wal.append(
            RECORD_HARD_STATE,
            &hard_state
                .write_to_bytes()
                .expect("encoding to a Vec cannot fail"),
        )?;
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
    pub fn compact_memory(&self, applied: u64) -> Result<(), RaftError> {
        let target = applied.saturating_sub(RETAINED_APPLIED_ENTRIES);
        if target > 1 {
            // Already-compacted targets are a no-op; `target <= applied <= last index` holds.
            self.memory.wl().compact(target)?;
        }
        Ok(())
    }
}
