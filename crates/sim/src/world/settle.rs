//! Settling once faults stop: a leader, a final write everywhere, one applied index, and
//! every member's membership as the log says.

use std::collections::BTreeSet;

use raft::prelude::ConfChangeType;

use super::{Event, Phase, Slot, World};
use crate::history::ClientOp;
use crate::member::{ClientRef, Input, TurnEnd};
use crate::outcome::Violation;
use crate::state_machine::encode_request;

/// How long the cluster gets to settle once faults stop.
const SETTLE_LIMIT_US: u64 = 60_000_000;

/// How often the settling phase looks at the cluster.
const PROBE_INTERVAL_US: u64 = 100_000;

/// A final write not applied anywhere after this long is proposed again.
const FINAL_WRITE_RETRY_US: u64 = 3_000_000;

/// Request ids of final writes: above any client's.
pub(super) const FINAL_WRITE_ID_BASE: u64 = u64::MAX / 2;

/// The client index final writes answer to; no client has it.
const SETTLE_CLIENT: usize = usize::MAX;

impl World {
    /// The members of the cluster as the leader sees it, voters and learners; a member
    /// started to join but never added is not one.
    fn cluster_members(&self) -> Vec<usize> {
        let Some(Slot::Up(leader)) = self.leader().map(|l| &self.slots[l]) else {
            return Vec::new();
        };
        let (voters, learners) = leader.membership();
        voters
            .into_iter()
            .chain(learners)
            .map(|id| id as usize - 1)
            .collect()
    }

    /// While settling: propose the final write through the leader until it is applied on
    /// every member, then wait until every member has applied the same index.
    pub(super) fn probe(&mut self) -> Result<(), Violation> {
        let members = self.cluster_members();
        let applied: Vec<(u64, Option<u64>)> = members
            .iter()
            .map(|&i| match &self.slots[i] {
                Slot::Up(m) => (i as u64 + 1, Some(m.applied())),
                _ => (i as u64 + 1, None),
            })
            .collect();
        self.check_membership()?;
        let clients_idle = self.clients.iter().all(|c| c.pending.is_none());
        // Every member holds the final write, by applying it or a snapshot after it.
        let everywhere = self.final_index.is_some_and(|index| {
            !applied.is_empty() && applied.iter().all(|(_, a)| a.is_some_and(|a| a >= index))
        });
        if everywhere && clients_idle && self.converged(&members)? {
            self.phase = Phase::Settled;
            self.report.last_applied_index = applied[0].1.unwrap_or(0);
            self.trace_line(format_args!(
                "settled at applied index {}",
                self.report.last_applied_index
            ));
            return Ok(());
        }
        if self.now >= self.faults_end_us + SETTLE_LIMIT_US {
            let leader = self.leader().map(|l| l + 1);
            return Err(Violation::NotLive(format!(
                "not settled {} s after faults stopped: leader {leader:?}, final write at index {:?}, (member, applied) {applied:?}, clients idle {clients_idle}",
                SETTLE_LIMIT_US / 1_000_000,
                self.final_index,
            )));
        }
        let retry_due = self.final_attempts == 0
            || (self.final_index.is_none()
                && self.now >= self.final_proposed_at + FINAL_WRITE_RETRY_US);
        if retry_due && let Some(leader) = self.leader() {
            self.final_attempts += 1;
            self.final_proposed_at = self.now;
            let id = FINAL_WRITE_ID_BASE + self.final_attempts;
            let op = ClientOp::Put {
                key: b"final".to_vec(),
                value: self.final_attempts.to_be_bytes().to_vec(),
            };
            let data = encode_request(id, &op).expect("a put is a write");
            let client = ClientRef {
                client: SETTLE_CLIENT,
                op: self.final_attempts,
                attempt: 1,
            };
            self.trace_line(format_args!(
                "final write {id} through member {}",
                leader + 1
            ));
            self.with_member(leader, |m, io| {
                m.deliver(Input::Propose { id, data, client }, io);
                Ok(TurnEnd::Done)
            })?;
        }
        self.schedule(self.now + PROBE_INTERVAL_US, Event::Probe);
        Ok(())
    }

    /// The voters and learners the committed log says the cluster has after `index`.
    fn membership_at(&self, index: u64) -> (Vec<u64>, Vec<u64>) {
        let mut voters: BTreeSet<u64> = self.settings.voters.iter().copied().collect();
        let mut learners = BTreeSet::new();
        for (change, member) in self.membership_changes.range(..=index).map(|(_, c)| c) {
            match change {
                ConfChangeType::AddNode => {
                    learners.remove(member);
                    voters.insert(*member);
                }
                ConfChangeType::AddLearnerNode => {
                    voters.remove(member);
                    learners.insert(*member);
                }
                ConfChangeType::RemoveNode => {
                    voters.remove(member);
                    learners.remove(member);
                }
            }
        }
        (voters.into_iter().collect(), learners.into_iter().collect())
    }

    /// A member that has handed over everything it knows committed has the membership the
    /// log says at that index, whatever crashes it went through. It may be ahead: a
    /// membership it recorded in the WAL before a crash may cover changes committed after
    /// the commit index it recovered.
    pub(super) fn check_membership(&self) -> Result<(), Violation> {
        for slot in &self.slots {
            let Slot::Up(member) = slot else {
                continue;
            };
            let index = member.handed_over();
            // A joining member with no log yet knows nothing; one catching up is checked
            // once it has caught up.
            if index == 0 || index != member.committed() {
                continue;
            }
            let (mut voters, mut learners) = member.membership();
            voters.sort_unstable();
            learners.sort_unstable();
            let known = (voters, learners);
            let log = self.membership_at(index);
            let mut later = self.membership_changes.range(index + 1..).map(|(i, _)| *i);
            if known != log && !later.any(|i| self.membership_at(i) == known) {
                let describe = |(voters, learners): &(Vec<u64>, Vec<u64>)| {
                    format!("voters {voters:?} and learners {learners:?}")
                };
                return Err(Violation::MembershipDiverged {
                    member: member.id(),
                    index,
                    known: describe(&known),
                    log: describe(&log),
                });
            }
        }
        Ok(())
    }

    /// Every member of the cluster up, at one applied index equal to its commit index, with
    /// one state.
    fn converged(&self, members: &[usize]) -> Result<bool, Violation> {
        let mut up = Vec::with_capacity(members.len());
        for &index in members {
            let Slot::Up(member) = &self.slots[index] else {
                return Ok(false);
            };
            up.push(member);
        }
        let Some(first) = up.first() else {
            return Ok(false);
        };
        for member in &up {
            if member.applied() != first.applied() || member.committed() != member.applied() {
                return Ok(false);
            }
            if member.digest() != first.digest() {
                return Err(Violation::StateMachinesDiverged {
                    index: first.applied(),
                    first_member: first.id(),
                    first_digest: first.digest(),
                    member: member.id(),
                    digest: member.digest(),
                });
            }
        }
        Ok(true)
    }
}
