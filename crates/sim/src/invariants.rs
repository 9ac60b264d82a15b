//! Raft's safety properties, checked as the run goes: each member reports what it does and
//! these maps remember what every member has claimed so far.

use std::collections::BTreeMap;

use raft::prelude::{Entry, EntryType};

use crate::outcome::Violation;

/// An entry some member reported committed, as first seen.
struct CommittedEntry {
    term: u64,
    entry_type: EntryType,
    data: Vec<u8>,
    member: u64,
}

fn describe(term: u64, entry_type: EntryType, data: &[u8]) -> String {
    format!("(term {term}, {entry_type:?}, {} bytes)", data.len())
}

#[derive(Default)]
pub struct Invariants {
    /// The leader of each term, as first seen.
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, CommittedEntry>,
    /// The state machine digest after applying each index, and the member that first got there.
    digests: BTreeMap<u64, (u64, u64)>,
}

impl Invariants {
    /// At most one leader per term, over the whole run.
    pub fn leader(&mut self, term: u64, member: u64) -> Result<bool, Violation> {
        match self.leaders.get(&term) {
            Some(first) if *first != member => Err(Violation::TwoLeaders {
                term,
                first: *first,
                second: member,
            }),
            Some(_) => Ok(false),
            None => {
                self.leaders.insert(term, member);
                Ok(true)
            }
        }
    }

    /// A committed entry never changes: every member commits the same entry at an index.
    pub fn committed(&mut self, member: u64, entry: &Entry) -> Result<(), Violation> {
        match self.committed.get(&entry.index) {
            None => {
                self.committed.insert(
                    entry.index,
                    CommittedEntry {
                        term: entry.term,
                        entry_type: entry.get_entry_type(),
                        data: entry.data.to_vec(),
                        member,
                    },
                );
                Ok(())
            }
            Some(first)
                if first.term == entry.term
                    && first.entry_type == entry.get_entry_type()
                    && first.data == entry.data.as_ref() =>
            {
                Ok(())
            }
            Some(first) => Err(Violation::CommittedEntryChanged {
                index: entry.index,
                first_member: first.member,
                first: describe(first.term, first.entry_type, &first.data),
                member,
                now: describe(entry.term, entry.get_entry_type(), &entry.data),
            }),
        }
    }

    /// A snapshot stands for the committed entry at its index, which must be the one known.
    pub fn snapshot_committed(&self, member: u64, index: u64, term: u64) -> Result<(), Violation> {
        match self.committed.get(&index) {
            Some(first) if first.term != term => Err(Violation::CommittedEntryChanged {
                index,
                first_member: first.member,
                first: describe(first.term, first.entry_type, &first.data),
                member,
                now: format!("a snapshot of term {term}"),
            }),
            _ => Ok(()),
        }
    }

    /// Members that reached the same applied index hold the same state.
    pub fn applied(&mut self, member: u64, index: u64, digest: u64) -> Result<(), Violation> {
        match self.digests.get(&index) {
            None => {
                self.digests.insert(index, (digest, member));
                Ok(())
            }
            Some((first_digest, _)) if *first_digest == digest => Ok(()),
            Some((first_digest, first_member)) => Err(Violation::StateMachinesDiverged {
                index,
                first_member: *first_member,
                first_digest: *first_digest,
                member,
                digest,
            }),
        }
    }

    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    #[test]
    fn a_second_leader_in_a_term_is_caught() {
        let mut inv = Invariants::default();
        assert_eq!(inv.leader(2, 1), Ok(true));
        assert_eq!(inv.leader(2, 1), Ok(false));
        assert_eq!(inv.leader(3, 2), Ok(true));
        assert!(matches!(
            inv.leader(2, 3),
            Err(Violation::TwoLeaders {
                term: 2,
                first: 1,
                second: 3
            })
        ));
    }

    #[test]
    fn a_changed_committed_entry_is_caught() {
        let mut inv = Invariants::default();
        inv.committed(1, &entry(5, 2, b"a")).expect("first");
        inv.committed(2, &entry(5, 2, b"a")).expect("same");
        assert!(inv.committed(3, &entry(5, 3, b"a")).is_err());
        assert!(inv.committed(3, &entry(5, 2, b"b")).is_err());
        assert!(inv.snapshot_committed(3, 5, 2).is_ok());
        assert!(inv.snapshot_committed(3, 5, 4).is_err());
    }

    #[test]
    fn different_states_at_one_applied_index_are_caught() {
        let mut inv = Invariants::default();
        inv.applied(1, 7, 0xabc).expect("first");
        inv.applied(2, 7, 0xabc).expect("same");
        assert!(inv.applied(3, 7, 0xdef).is_err());
    }
}
