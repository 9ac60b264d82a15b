//! `RaftLogStore` over the simulated disk: the durable log that `cairn-raft`'s `RaftCore`
//! writes through its `LogStorage` trait, with raft-rs's `MemStorage` in front of it. The
//! record layout and the rules restate log_store.rs; the order of the calls is the core's.

use cairn_raft::{LogStorage, RaftError};
use raft::Storage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::storage::MemStorage;

use crate::disk::{Disk, WalRecord};

/// Entries kept in memory behind the applied index at most (`RETAINED_APPLIED_ENTRIES`).
pub const RETAINED_APPLIED_ENTRIES: u64 = 10_000;

pub struct SimLog {
    /// The storage raft reads; clones share it (`RaftLogStore::memory`).
    pub memory: MemStorage,
    pub disk: Disk,
    /// Index of the last snapshot in the WAL (`RaftLogStore::snapshot_index`).
    snapshot_index: u64,
    /// Log snapshots taken, for the run's report.
    pub snapshots_taken: u64,
    /// `KnownBugs::unsynced_membership`: the sync asked for right after a membership change
    /// is recorded does not happen, as before the fix.
    pub skips_membership_sync: bool,
    skip_next_sync: bool,
    /// While set, a sync is asked for but the disk does it later
    /// (`InjectedBug::AcknowledgeBeforeSync`).
    pub defers_syncs: bool,
}

impl SimLog {
    pub fn new(memory: MemStorage, disk: Disk, snapshot_index: u64) -> SimLog {
        SimLog {
            memory,
            disk,
            snapshot_index,
            snapshots_taken: 0,
            skips_membership_sync: false,
            skip_next_sync: false,
            defers_syncs: false,
        }
    }
}

impl LogStorage for SimLog {
    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.disk.append(WalRecord::Entry(entry.clone()));
        }
        self.memory.wl().append(entries)?;
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftError> {
        self.disk.append(WalRecord::HardState(hard_state.clone()));
        self.memory.wl().set_hardstate(hard_state.clone());
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        let hard_state = {
            let mut core = self.memory.wl();
            core.mut_hard_state().commit = commit;
            core.hard_state().clone()
        };
        self.disk.append(WalRecord::HardState(hard_state));
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), RaftError> {
        self.disk.append(WalRecord::ConfState(conf_state.clone()));
        self.memory.wl().set_conf_state(conf_state.clone());
        self.skip_next_sync = self.skips_membership_sync;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata().clone();
        let mut hard_state = self.memory.initial_state()?.hard_state;
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        self.disk.append(WalRecord::Snapshot(meta.clone()));
        self.disk.append(WalRecord::HardState(hard_state.clone()));
        self.disk.sync();
        {
            let mut core = self.memory.wl();
            core.apply_snapshot(snapshot.clone())?;
            core.set_hardstate(hard_state);
        }
        self.snapshot_index = meta.index;
        self.disk.purge_before_snapshot(meta.index);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        if std::mem::take(&mut self.skip_next_sync) || self.defers_syncs {
            return Ok(());
        }
        self.disk.sync();
        Ok(())
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    fn snapshot(&mut self, index: u64) -> Result<(), RaftError> {
        if index <= self.snapshot_index {
            return Ok(());
        }
        let Ok(term) = self.memory.term(index) else {
            // Already trimmed from memory: the next, later snapshot will do.
            return Ok(());
        };
        let state = self.memory.initial_state()?;
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(state.conf_state);
        self.disk.append(WalRecord::Snapshot(meta));
        self.disk.append(WalRecord::HardState(state.hard_state));
        self.disk.sync();
        self.snapshot_index = index;
        self.disk.purge_before_snapshot(index);
        self.snapshots_taken += 1;
        Ok(())
    }

    fn compact_memory(&mut self, applied: u64, retained: u64) -> Result<(), RaftError> {
        compact_memory(&self.memory, applied, retained)
    }
}

/// `RaftLogStore::compact_memory`: drops in-memory entries well behind `applied`, keeping
/// at most `retained` for a slow follower; one further behind gets a snapshot instead.
pub fn compact_memory(memory: &MemStorage, applied: u64, retained: u64) -> Result<(), RaftError> {
    let retained = retained.clamp(1, RETAINED_APPLIED_ENTRIES);
    let applied = applied.min(memory.last_index()?);
    let first = memory.first_index()?;
    if applied >= first + 2 * retained {
        memory.wl().compact(applied - retained)?;
    }
    Ok(())
}
