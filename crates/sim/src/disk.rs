//! A member's disk: the write-ahead log's records, the backend's durable copy, and the file a
//! received snapshot's backend lands in.
//!
//! `SimWal` models `cairn-wal` under `cairn-raft`'s `RaftLogStore`, which the simulation runs
//! as is: records are appended in order into numbered segments, `sync` makes everything
//! appended so far durable (one fdatasync), `purge_before` deletes whole segments, and a crash
//! keeps the synced records plus some prefix of the unsynced ones (the OS may have written
//! part of the tail; the WAL's torn-tail repair cuts it at the first incomplete record).
//!
//! The backend models `cairn-mvcc`'s redb file: the apply loop's batches are not durable
//! until a persist (once a second) or the install of a received backend; a crash goes back to
//! the last durable copy. The incoming backend is written and synced before raft sees the
//! snapshot message, as the transport does, and stays until the next one overwrites it.

use cairn_raft::{RECORD_CONF_STATE, RaftError, RecordLog, RecordPosition};

use crate::rng::SimRng;
use crate::state_machine::StateMachine;

/// Records per WAL segment: small, so that snapshots delete segments in every run.
const RECORDS_PER_SEGMENT: u64 = 8;

/// A state machine image with the applied index it holds, as a backend file does.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    pub state: StateMachine,
    pub applied: u64,
    /// The raft snapshot index this backend was installed from (`installed_snapshot` meta).
    pub installed_snapshot: u64,
}

/// How the disk breaks its promises, for tests that prove the checks catch a broken disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFaults {
    /// A disk that keeps what it synced.
    #[default]
    Honest,
    /// A crash also loses the last few synced WAL records: fdatasync lied.
    ForgetsSyncedTail,
}

#[derive(Clone, Debug)]
struct SimRecord {
    kind: u8,
    payload: Vec<u8>,
    segment: u64,
}

/// The WAL's records on the simulated disk.
#[derive(Clone, Debug, Default)]
pub struct SimWal {
    synced: Vec<SimRecord>,
    unsynced: Vec<SimRecord>,
    faults: DiskFaults,
    segment: u64,
    in_segment: u64,
    /// `KnownBugs::unsynced_membership`: the sync asked for right after a membership change
    /// is recorded does not happen, as before the fix.
    pub skips_membership_sync: bool,
    skip_next_sync: bool,
    /// While set, the disk says it synced but does not (`InjectedBug::AcknowledgeBeforeSync`);
    /// `sync_now` does it later.
    pub defers_syncs: bool,
}

impl SimWal {
    pub fn new(faults: DiskFaults) -> SimWal {
        SimWal {
            faults,
            ..SimWal::default()
        }
    }

    /// Whether anything was appended since the last sync.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// One fdatasync: everything appended so far is durable.
    pub fn sync_now(&mut self) {
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
        self.skip_next_sync = false;
        self.defers_syncs = false;
    }

    /// What a restart replays: every durable record, with its segment.
    pub fn durable_records(&self) -> Vec<(u8, Vec<u8>, u64)> {
        debug_assert!(
            self.unsynced.is_empty(),
            "replayed after a crash or at boot"
        );
        self.synced
            .iter()
            .map(|r| (r.kind, r.payload.clone(), r.segment))
            .collect()
    }

    /// WAL records held, synced or not: bounds the model's memory in tests.
    #[cfg(test)]
    fn record_count(&self) -> usize {
        self.synced.len() + self.unsynced.len()
    }
}

impl RecordLog for SimWal {
    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<RecordPosition, RaftError> {
        if self.in_segment == RECORDS_PER_SEGMENT {
            self.segment += 1;
            self.in_segment = 0;
        }
        let position = RecordPosition {
            segment: self.segment,
            offset: self.in_segment,
        };
        self.in_segment += 1;
        self.unsynced.push(SimRecord {
            kind,
            payload: payload.to_vec(),
            segment: self.segment,
        });
        if kind == RECORD_CONF_STATE && self.skips_membership_sync {
            self.skip_next_sync = true;
        }
        Ok(position)
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        if !std::mem::take(&mut self.skip_next_sync) && !self.defers_syncs {
            self.sync_now();
        }
        Ok(())
    }

    fn purge_before(&mut self, position: RecordPosition) -> Result<(), RaftError> {
        self.synced.retain(|r| r.segment >= position.segment);
        self.unsynced.retain(|r| r.segment >= position.segment);
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Disk {
    /// The WAL's records; while the member runs they live in its `RaftLogStore`.
    pub wal: SimWal,
    /// The backend as it would be found after a crash.
    pub backend: Backend,
    /// The backend of the last snapshot received, if any.
    pub incoming: Option<Backend>,
}

impl Disk {
    pub fn new(faults: DiskFaults) -> Disk {
        Disk {
            wal: SimWal::new(faults),
            ..Disk::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cairn_raft::{RECORD_ENTRY, RaftLogStore};
    use raft::Storage;
    use raft::prelude::Entry;

    fn replay(wal: &SimWal, applied: u64) -> Result<RaftLogStore<SimWal>, RaftError> {
        let records = wal.durable_records();
        RaftLogStore::replay(
            wal.clone(),
            records.iter().map(|(k, p, s)| (*k, p.as_slice(), *s)),
            &[1, 2, 3],
            applied,
            0,
        )
    }

    fn append_entries(wal: &mut SimWal, indexes: std::ops::RangeInclusive<u64>) {
        for index in indexes {
            let entry = Entry {
                index,
                term: 1,
                ..Entry::default()
            };
            let payload = protobuf::Message::write_to_bytes(&entry).expect("encode");
            wal.append(RECORD_ENTRY, &payload).expect("append");
        }
    }

    fn last_index(wal: &SimWal) -> u64 {
        let log = replay(wal, 0).expect("replay");
        log.memory().last_index().expect("last index")
    }

    #[test]
    fn a_crash_keeps_synced_records_and_loses_an_unsynced_tail() {
        let mut wal = replay(&SimWal::new(DiskFaults::Honest), 0)
            .expect("boot")
            .into_record_log();
        append_entries(&mut wal, 2..=3);
        wal.sync().expect("sync");
        append_entries(&mut wal, 4..=50);
        wal.crash(&mut SimRng::new(3));
        let last = last_index(&wal);
        assert!((3..50).contains(&last), "{last}");
    }

    #[test]
    fn segments_before_a_position_are_purged_whole() {
        let mut wal = SimWal::new(DiskFaults::Honest);
        append_entries(&mut wal, 1..=20);
        wal.sync().expect("sync");
        wal.purge_before(RecordPosition {
            segment: 2,
            offset: 0,
        })
        .expect("purge");
        assert_eq!(wal.record_count(), 4, "records 17..=20 were in segment 2");
    }

    #[test]
    fn a_disk_that_forgets_synced_records_loses_them() {
        let mut wal = replay(&SimWal::new(DiskFaults::ForgetsSyncedTail), 0)
            .expect("boot")
            .into_record_log();
        append_entries(&mut wal, 2..=10);
        wal.sync().expect("sync");
        wal.crash(&mut SimRng::new(0));
        assert!(last_index(&wal) < 10);
    }

    #[test]
    fn the_sync_after_a_membership_record_is_skipped_only_when_asked() {
        for skips in [false, true] {
            let mut wal = SimWal {
                skips_membership_sync: skips,
                ..SimWal::default()
            };
            wal.append(RECORD_CONF_STATE, &[]).expect("append");
            wal.sync().expect("sync");
            assert_eq!(wal.has_unsynced(), skips);
        }
    }
}
