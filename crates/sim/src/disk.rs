//! A member's disk: the write-ahead log, the backend's durable copy, and the file a
//! received snapshot's backend lands in.
//!
//! The WAL models `cairn-raft`'s `RaftLogStore` on `cairn-wal`: records are appended in
//! order, `sync` makes everything appended so far durable (one fdatasync), and a crash keeps
//! the synced records plus some prefix of the unsynced ones (the OS may have written part of
//! the tail; the WAL's torn-tail repair cuts it at the first incomplete record). `open`
//! replays the durable records with `RaftLogStore::open`'s rules, checks included.
//!
//! The backend models `cairn-mvcc`'s redb file: the apply loop's batches are not durable
//! until a persist (once a second) or the install of a received backend; a crash goes back to
//! the last durable copy. The incoming backend is written and synced before raft sees the
//! snapshot message, as the transport does, and stays until the next one overwrites it.

use raft::prelude::{ConfState, Entry, HardState, SnapshotMetadata};

use crate::rng::SimRng;
use crate::state_machine::StateMachine;

#[derive(Clone, Debug)]
pub enum WalRecord {
    Entry(Entry),
    HardState(HardState),
    ConfState(ConfState),
    Snapshot(SnapshotMetadata),
}

/// A state machine image with the applied index it holds, as a backend file does.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    pub state: StateMachine,
    pub applied: u64,
    /// The raft snapshot index this backend was installed from (`installed_snapshot` meta).
    pub installed_snapshot: u64,
}

/// What replaying the WAL yields: the input to a restarted member's `MemStorage`.
#[derive(Debug, Default)]
pub struct OpenedLog {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub snapshot: Option<SnapshotMetadata>,
    pub entries: Vec<Entry>,
}

impl OpenedLog {
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or_else(
            || self.snapshot.as_ref().map_or(0, |s| s.index),
            |e| e.index,
        )
    }
}

/// Why the WAL cannot be opened, as `RaftError` says it.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    Corrupt(String),
    /// The WAL starts from a leader's snapshot whose backend was never installed.
    SnapshotNotInstalled {
        index: u64,
    },
}

/// How the disk breaks its promises, for tests that prove the checks catch a broken disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFaults {
    /// A disk that keeps what it synced.
    Honest,
    /// A crash also loses the last few synced WAL records: fdatasync lied.
    ForgetsSyncedTail,
}

#[derive(Debug)]
pub struct Disk {
    synced: Vec<WalRecord>,
    unsynced: Vec<WalRecord>,
    faults: DiskFaults,
    /// The backend as it would be found after a crash.
    pub backend: Backend,
    /// The backend of the last snapshot received, if any.
    pub incoming: Option<Backend>,
}

impl Disk {
    pub fn new(faults: DiskFaults) -> Disk {
        Disk {
            synced: Vec::new(),
            unsynced: Vec::new(),
            faults,
            backend: Backend::default(),
            incoming: None,
        }
    }

    pub fn append(&mut self, record: WalRecord) {
        self.unsynced.push(record);
    }

    /// Whether anything was appended since the last sync (`RaftLogStore`'s `dirty`).
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// One fdatasync: everything appended so far is durable.
    pub fn sync(&mut self) {
        self.synced.append(&mut self.unsynced);
    }

    /// Power loss or kill -9: unsynced records survive only as a prefix of what was appended.
    pub fn crash(&mut self, rng: &mut SimRng) {
        let kept = rng.below(self.unsynced.len() as u64 + 1) as usize;
        self.unsynced.truncate(kept);
        self.synced.append(&mut self.unsynced);
        if self.faults == DiskFaults::ForgetsSyncedTail {
            let forgotten = rng.between(1, 4) as usize;
            let keep = self.synced.len().saturating_sub(forgotten).max(1);
            self.synced.truncate(keep);
        }
    }

    /// Deletes what a snapshot at `index` covers, as `RaftLogStore` deletes WAL segments:
    /// the records before the last snapshot record, except entries after `index` (a segment
    /// holding one of those stays). Replay yields the same log either way.
    pub fn purge_before_snapshot(&mut self, index: u64) {
        let Some(position) = self
            .synced
            .iter()
            .rposition(|r| matches!(r, WalRecord::Snapshot(meta) if meta.index == index))
        else {
            return;
        };
        let tail = self.synced.split_off(position);
        self.synced
            .retain(|r| matches!(r, WalRecord::Entry(e) if e.index > index));
        self.synced.extend(tail);
    }

    /// `RaftLogStore::open`: replays the durable records and checks them against the
    /// backend's `applied` index and `installed_snapshot`. A brand-new log with
    /// `initial_voters` starts after a snapshot at index 1 that holds the membership; with
    /// none (a member joining an existing cluster) it starts empty.
    pub fn open(
        &mut self,
        initial_voters: &[u64],
        applied: u64,
        installed_snapshot: u64,
    ) -> Result<OpenedLog, OpenError> {
        debug_assert!(self.unsynced.is_empty(), "opened after a crash or at boot");
        let mut log = OpenedLog::default();
        let mut conf_state: Option<ConfState> = None;
        for record in &self.synced {
            match record {
                WalRecord::Entry(entry) => {
                    // A later entry at an index overwrites the suffix from that index on.
                    if let Some(first) = log.entries.first().map(|e| e.index) {
                        if entry.index < first {
                            return Err(OpenError::Corrupt(format!(
                                "entry {} precedes the first entry {first}",
                                entry.index
                            )));
                        }
                        log.entries.truncate((entry.index - first) as usize);
                    }
                    log.entries.push(entry.clone());
                }
                WalRecord::HardState(hs) => log.hard_state = hs.clone(),
                WalRecord::ConfState(cs) => conf_state = Some(cs.clone()),
                WalRecord::Snapshot(meta) => {
                    log.entries.retain(|e| e.index > meta.index);
                    conf_state = Some(meta.get_conf_state().clone());
                    log.snapshot = Some(meta.clone());
                }
            }
        }
        let snapshot_index = log.snapshot.as_ref().map_or(0, |s| s.index);
        if let Some(first) = log.entries.first()
            && first.index != snapshot_index + 1
        {
            return Err(OpenError::Corrupt(format!(
                "the WAL's entries start at {} but its snapshot is at {snapshot_index}",
                first.index
            )));
        }
        let last_index = log.last_index();
        let ahead_by_snapshot = installed_snapshot != 0 && installed_snapshot == snapshot_index;
        if applied > last_index && !ahead_by_snapshot {
            return Err(OpenError::Corrupt(format!(
                "the backend has applied index {applied} but the WAL ends at {last_index}: the WAL is missing synced entries"
            )));
        }
        if snapshot_index > applied.max(1) {
            return Err(OpenError::SnapshotNotInstalled {
                index: snapshot_index,
            });
        }
        log.hard_state.commit = log.hard_state.commit.max(applied.min(last_index));
        log.conf_state = match conf_state {
            Some(cs) => cs,
            None if initial_voters.is_empty() => ConfState::default(),
            None => {
                let cs = ConfState {
                    voters: initial_voters.to_vec(),
                    ..ConfState::default()
                };
                let mut meta = SnapshotMetadata::default();
                meta.set_index(1);
                meta.set_term(1);
                meta.set_conf_state(cs.clone());
                log.hard_state.term = log.hard_state.term.max(1);
                log.hard_state.commit = log.hard_state.commit.max(1);
                self.append(WalRecord::Snapshot(meta.clone()));
                self.append(WalRecord::HardState(log.hard_state.clone()));
                self.sync();
                log.snapshot = Some(meta);
                cs
            }
        };
        Ok(log)
    }

    /// WAL records held, synced or not: bounds the model's memory in tests.
    #[cfg(test)]
    fn record_count(&self) -> usize {
        self.synced.len() + self.unsynced.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> WalRecord {
        WalRecord::Entry(Entry {
            index,
            term,
            ..Entry::default()
        })
    }

    fn snapshot(index: u64, term: u64) -> WalRecord {
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.mut_conf_state().voters = vec![1, 2, 3];
        WalRecord::Snapshot(meta)
    }

    fn indexes(log: &OpenedLog) -> Vec<(u64, u64)> {
        log.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn a_new_log_starts_after_a_membership_snapshot_at_index_one() {
        let mut disk = Disk::new(DiskFaults::Honest);
        let log = disk.open(&[1, 2, 3], 0, 0).expect("boot");
        assert_eq!(log.snapshot.as_ref().map(|s| s.index), Some(1));
        assert_eq!(log.conf_state.voters, vec![1, 2, 3]);
        assert_eq!((log.hard_state.term, log.hard_state.commit), (1, 1));
        let joining = Disk::new(DiskFaults::Honest).open(&[], 0, 0).expect("join");
        assert!(joining.snapshot.is_none() && joining.conf_state.voters.is_empty());
    }

    #[test]
    fn a_crash_keeps_synced_records_and_loses_an_unsynced_tail() {
        let mut disk = Disk::new(DiskFaults::Honest);
        disk.open(&[1, 2, 3], 0, 0).expect("boot");
        disk.append(entry(2, 1));
        disk.append(entry(3, 1));
        disk.sync();
        for i in 4..=50 {
            disk.append(entry(i, 1));
        }
        disk.crash(&mut SimRng::new(3));
        let log = disk.open(&[1, 2, 3], 0, 0).expect("replay");
        assert!(log.entries.len() >= 2 && log.entries.len() < 49);
    }

    #[test]
    fn later_entries_overwrite_the_suffix_and_a_snapshot_cuts_the_prefix() {
        let mut disk = Disk::new(DiskFaults::Honest);
        disk.open(&[1, 2, 3], 0, 0).expect("boot");
        for i in 2..=5 {
            disk.append(entry(i, 1));
        }
        disk.append(entry(4, 2));
        disk.sync();
        assert_eq!(
            indexes(&disk.open(&[1], 0, 0).expect("replay")),
            vec![(2, 1), (3, 1), (4, 2)]
        );
        disk.append(snapshot(3, 1));
        disk.append(entry(5, 2));
        disk.sync();
        disk.purge_before_snapshot(3);
        let log = disk.open(&[1], 3, 0).expect("replay");
        assert_eq!(indexes(&log), vec![(4, 2), (5, 2)]);
        assert_eq!(
            log.hard_state.commit, 3,
            "the applied index implies its commit"
        );
        // Entries after 3 stay, even overwritten ones, as the WAL segments holding them do.
        assert_eq!(disk.record_count(), 5, "{disk:?}");
    }

    #[test]
    fn open_refuses_what_raft_log_store_refuses() {
        let mut disk = Disk::new(DiskFaults::Honest);
        disk.open(&[1, 2, 3], 0, 0).expect("boot");
        disk.append(entry(2, 1));
        disk.sync();
        assert!(matches!(disk.open(&[1], 5, 0), Err(OpenError::Corrupt(_))));
        disk.append(snapshot(9, 2));
        disk.sync();
        assert_eq!(
            disk.open(&[1], 2, 0).map(|_| ()),
            Err(OpenError::SnapshotNotInstalled { index: 9 })
        );
        let ahead = disk
            .open(&[1], 12, 9)
            .expect("a backend installed from snapshot 9");
        assert_eq!(ahead.hard_state.commit, 9);
    }

    #[test]
    fn a_disk_that_forgets_synced_records_loses_them() {
        let mut disk = Disk::new(DiskFaults::ForgetsSyncedTail);
        disk.open(&[1], 0, 0).expect("boot");
        for i in 2..=10 {
            disk.append(entry(i, 1));
        }
        disk.sync();
        disk.crash(&mut SimRng::new(0));
        assert!(disk.open(&[1], 0, 0).expect("replay").entries.len() < 9);
    }
}
