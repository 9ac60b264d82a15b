//! A member's apply loop, as `cairn-server`'s: committed entries arrive from the Ready loop
//! in log order and are applied to the state machine, skipping those the backend already
//! holds; the callers waiting on a request id are answered; linearizable reads wait here
//! until the applied index reaches their read index. A snapshot event replaces the state
//! machine with the received backend. The backend is made durable once a second, and the
//! Ready loop hears how far it got (to trim its log and take log snapshots).

use std::collections::{BTreeMap, VecDeque};

use cairn_linearizability::KvOutput;
use raft::prelude::{Entry, EntryType};

use crate::disk::{Backend, Disk};
use crate::member::{ClientRef, Input, Io, Reply};
use crate::outcome::Violation;
use crate::state_machine::{StateMachine, corrupt_put};

/// How often the backend is made durable (`PERSIST_INTERVAL`).
const PERSIST_INTERVAL_US: u64 = 1_000_000;

/// What the Ready loop hands over, in order (`NodeEvent`).
pub enum ApplyItem {
    Entries(Vec<Entry>),
    /// The received backend replaces the state machine; raft's log now starts after `index`.
    Snapshot {
        index: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Installed {
    Done,
    Crashed,
}

/// A read whose read index is known, waiting for the state machine to reach it.
struct PendingRead {
    index: u64,
    key: Vec<u8>,
    client: ClientRef,
}

/// Test-only sabotage of the state machine, to prove divergence is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyFaults {
    Faithful,
    /// Every put this member applies stores a corrupted value.
    CorruptsPuts,
}

pub struct ApplyLoop {
    member: u64,
    queue: VecDeque<ApplyItem>,
    backend: Backend,
    /// Request ids proposed on this member, and who waits for them (the server's wait table).
    waiters: BTreeMap<u64, ClientRef>,
    reads: Vec<PendingRead>,
    unpersisted_entries: u64,
    last_persist_us: u64,
    /// Entries between reports of the applied index (`APPLIED_REPORT_ENTRIES`).
    applied_report_entries: u64,
    faults: ApplyFaults,
}

impl ApplyLoop {
    pub fn new(
        member: u64,
        backend: Backend,
        now: u64,
        applied_report_entries: u64,
        faults: ApplyFaults,
    ) -> ApplyLoop {
        ApplyLoop {
            member,
            queue: VecDeque::new(),
            backend,
            waiters: BTreeMap::new(),
            reads: Vec::new(),
            unpersisted_entries: 0,
            last_persist_us: now,
            applied_report_entries: applied_report_entries.max(1),
            faults,
        }
    }

    pub fn applied(&self) -> u64 {
        self.backend.applied
    }

    pub fn state(&self) -> &StateMachine {
        &self.backend.state
    }

    /// A consistent copy of the backend, as `Store::export_to` writes for a lagging member.
    pub fn export(&self) -> Backend {
        self.backend.clone()
    }

    pub fn push(&mut self, item: ApplyItem) {
        self.queue.push_back(item);
    }

    pub fn has_work(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn wait_for(&mut self, id: u64, client: ClientRef) {
        self.waiters.insert(id, client);
    }

    pub fn forget(&mut self, id: u64) -> Option<ClientRef> {
        self.waiters.remove(&id)
    }

    /// A read that may be answered once `index` is applied.
    pub fn read_at(&mut self, index: u64, key: Vec<u8>, client: ClientRef, io: &mut Io) {
        self.reads.push(PendingRead { index, key, client });
        self.answer_reads(io);
    }

    /// Applies everything handed over so far; returns the reports for the Ready loop, or
    /// None if the member crashed in the middle of installing a backend (`crash_mid_install`).
    pub fn run(
        &mut self,
        disk: &mut Disk,
        crash_mid_install: bool,
        io: &mut Io,
    ) -> Result<Option<Vec<Input>>, Violation> {
        let mut reports = Vec::new();
        while let Some(item) = self.queue.pop_front() {
            match item {
                ApplyItem::Entries(entries) => {
                    let before = self.backend.applied;
                    for entry in entries {
                        // The backend may hold it already: replayed after a restart, or
                        // inside a backend installed from a snapshot.
                        if entry.index > self.backend.applied {
                            self.apply_entry(&entry, io)?;
                        }
                    }
                    let after = self.backend.applied;
                    if after / self.applied_report_entries != before / self.applied_report_entries {
                        reports.push(Input::Applied { index: after });
                    }
                }
                ApplyItem::Snapshot { index } => {
                    if self.install(index, disk, crash_mid_install, io)? == Installed::Crashed {
                        return Ok(None);
                    }
                    reports.push(Input::Persisted {
                        index: self.backend.applied,
                    });
                }
            }
        }
        self.answer_reads(io);
        reports.extend(self.persist_if_due(disk, io.now));
        Ok(Some(reports))
    }

    /// The apply loop's idle wake-up: persist the backend if a second has passed.
    pub fn persist_if_due(&mut self, disk: &mut Disk, now: u64) -> Option<Input> {
        if self.unpersisted_entries == 0 || now < self.last_persist_us + PERSIST_INTERVAL_US {
            return None;
        }
        self.persist(disk, now);
        Some(Input::Persisted {
            index: self.backend.applied,
        })
    }

    fn persist(&mut self, disk: &mut Disk, now: u64) {
        disk.backend = self.backend.clone();
        self.unpersisted_entries = 0;
        self.last_persist_us = now;
    }

    /// `ApplyLoop::install_snapshot`: replace the backend with the received one.
    /// `Store::install` stamps the received file with the snapshot it came from, then renames
    /// it into place: a crash right after the rename leaves the new backend, stamped.
    fn install(
        &mut self,
        index: u64,
        disk: &mut Disk,
        crash_mid_install: bool,
        io: &mut Io,
    ) -> Result<Installed, Violation> {
        let Some(incoming) = disk.incoming.clone() else {
            return Err(Violation::SnapshotNotInstallable {
                member: self.member,
                index,
                reason: "no backend was received".into(),
            });
        };
        self.backend = Backend {
            installed_snapshot: index,
            ..incoming
        };
        disk.backend = self.backend.clone();
        if crash_mid_install {
            return Ok(Installed::Crashed);
        }
        io.trace(
            self.member,
            format_args!(
                "state machine replaced by the backend of snapshot {index} (applied {})",
                self.backend.applied
            ),
        );
        io.invariants.applied(
            self.member,
            self.backend.applied,
            self.backend.state.digest(),
        )?;
        Ok(Installed::Done)
    }

    fn apply_entry(&mut self, entry: &Entry, io: &mut Io) -> Result<(), Violation> {
        if entry.index != self.backend.applied + 1 {
            return Err(Violation::AppliedOutOfOrder {
                member: self.member,
                applied: self.backend.applied,
                index: entry.index,
            });
        }
        // Empty entries are raft's own (a new leader's first entry); membership changes
        // reached raft at hand-over, and the members table they also change is not modelled.
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let data = match self.faults {
                ApplyFaults::Faithful => entry.data.to_vec(),
                ApplyFaults::CorruptsPuts => corrupt_put(&entry.data),
            };
            let applied =
                self.backend
                    .state
                    .apply(&data)
                    .map_err(|e| Violation::UnappliableEntry {
                        member: self.member,
                        index: entry.index,
                        reason: e.to_string(),
                    })?;
            io.out.applied_requests.push((applied.id, entry.index));
            if let Some(client) = self.waiters.remove(&applied.id) {
                io.out.replies.push((client, Reply::Output(applied.output)));
            }
        }
        self.backend.applied = entry.index;
        self.unpersisted_entries += 1;
        io.invariants.applied(
            self.member,
            self.backend.applied,
            self.backend.state.digest(),
        )
    }

    fn answer_reads(&mut self, io: &mut Io) {
        let applied = self.backend.applied;
        let state = &self.backend.state;
        self.reads.retain(|read| {
            if read.index > applied {
                return true;
            }
            let value = state.get(&read.key);
            io.out
                .replies
                .push((read.client, Reply::Output(KvOutput::Get(value))));
            false
        });
    }
}
