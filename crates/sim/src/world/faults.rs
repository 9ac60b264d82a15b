//! The chaos schedule while faults last, and the healing that ends it.

use raft::prelude::ConfChangeType;

use super::{Event, Phase, Slot, World};
use crate::disk::Disk;
use crate::member::{Input, TICK_US, TurnEnd};
use crate::network::Conditions;
use crate::outcome::Violation;

/// Members added to a run at most, each as a learner first.
const MEMBERS_ADDED_MAX: usize = 3;

/// The share of the leader's log a learner must hold to be promoted (the server's check).
const PROMOTE_LOG_PERCENT: u64 = 90;

impl World {
    /// One fault, or none, then the next chaos event while faults last.
    pub(super) fn chaos(&mut self) -> Result<(), Violation> {
        if self.phase != Phase::Faults {
            return Ok(());
        }
        self.check_membership()?;
        let n = self
            .slots
            .iter()
            .filter(|s| !matches!(s, Slot::Removed))
            .count();
        let up = self.up_members();
        let down = n - up.len();
        // Usually a minority at most is down; now and then the whole cluster may go.
        let down_max = if self.rng.chance(100) { n } else { (n - 1) / 2 };
        match self.rng.below(100) {
            0..=34 if down < down_max && !up.is_empty() => {
                let victim = match self.leader() {
                    Some(leader) if self.rng.chance(500) => leader,
                    _ => *self.rng.pick(&up),
                };
                let at_next_sync = self.rng.chance(400);
                match &mut self.slots[victim] {
                    Slot::Up(member) if at_next_sync => {
                        member.arm_crash_at_next_sync(true);
                        self.trace_line(format_args!(
                            "member {} will crash at its next sync",
                            victim + 1
                        ));
                    }
                    _ => self.crash(victim),
                }
            }
            35..=54 if !self.network.is_partitioned() => {
                let sides = self.partition_sides();
                self.trace_line(format_args!("network partitioned: sides {sides:?}"));
                self.network.partition(sides);
                self.report.partitions += 1;
                let heal = self.now + self.rng.between(200_000, 6_000_000);
                self.schedule(heal, Event::Heal);
            }
            55..=74 => {
                let conditions = self.lossy_conditions();
                self.trace_line(format_args!("network conditions now {conditions:?}"));
                self.network.conditions = conditions;
            }
            75..=84 => self.change_membership()?,
            85..=92 if !up.is_empty() => {
                let member = match self.leader() {
                    Some(leader) if self.rng.chance(500) => leader,
                    _ => *self.rng.pick(&up),
                };
                let until = self.now + self.rng.between(200_000, 5_000_000);
                self.paused_until[member] = self.paused_until[member].max(until);
                self.report.pauses += 1;
                self.trace_line(format_args!(
                    "member {} stopped until {:.3} ms",
                    member + 1,
                    until as f64 / 1000.0
                ));
            }
            93..=96 => self.transfer_leadership()?,
            _ => {}
        }
        let next = self.now + self.rng.between(100_000, 2_000_000);
        self.schedule(next, Event::Chaos);
        Ok(())
    }

    /// One membership change through the leader, as an operator would make them: promote a
    /// learner once it holds nearly all of the log, else sometimes remove a voter (keeping
    /// three), else add a new member as a learner and start it.
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let Slot::Up(member) = &self.slots[leader] else {
            return Ok(());
        };
        let (voters, learners) = member.membership();
        let change = if let Some(&learner) = learners.first() {
            if !member.holds_log_share(learner, PROMOTE_LOG_PERCENT) {
                return Ok(());
            }
            (ConfChangeType::AddNode, learner)
        } else if voters.len() > 3 && self.rng.chance(500) {
            (ConfChangeType::RemoveNode, *self.rng.pick(&voters))
        } else if self.slots.len() < self.report.members + MEMBERS_ADDED_MAX {
            let index = self.slots.len();
            self.slots.push(Slot::Down(Disk::new(self.disk_faults)));
            self.incarnations.push(0);
            self.tick_us
                .push(TICK_US - 2_000 + self.rng.between(0, 4_000));
            self.initial_voters.push(Vec::new());
            self.paused_until.push(0);
            self.network.add_member();
            self.trace_line(format_args!("member {} starts, to join", index + 1));
            self.restart(index)?;
            (ConfChangeType::AddLearnerNode, index as u64 + 1)
        } else {
            return Ok(());
        };
        self.trace_line(format_args!(
            "proposing {:?} {} through member {}",
            change.0,
            change.1,
            leader + 1
        ));
        self.with_member(leader, |m, io| {
            m.deliver(
                Input::ProposeMembership {
                    change: change.0,
                    member: change.1,
                },
                io,
            );
            Ok(TurnEnd::Done)
        })
    }

    /// An operator's `MoveLeader`: the leader is asked to hand over to another voter.
    fn transfer_leadership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let Slot::Up(member) = &self.slots[leader] else {
            return Ok(());
        };
        let others: Vec<u64> = member
            .membership()
            .0
            .into_iter()
            .filter(|&voter| voter != leader as u64 + 1)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let to = *self.rng.pick(&others);
        self.report.leader_transfers += 1;
        self.trace_line(format_args!(
            "asking member {} to hand leadership to member {to}",
            leader + 1
        ));
        self.with_member(leader, |m, io| {
            m.deliver(Input::TransferLeader { to }, io);
            Ok(TurnEnd::Done)
        })
    }

    /// Two non-empty sides: sometimes the leader alone, otherwise a random split.
    fn partition_sides(&mut self) -> Vec<u8> {
        let n = self.member_count();
        let isolated = match self.leader() {
            Some(leader) if self.rng.chance(400) => Some(leader),
            _ => None,
        };
        if let Some(alone) = isolated {
            return (0..n).map(|i| u8::from(i == alone)).collect();
        }
        loop {
            let sides: Vec<u8> = (0..n).map(|_| self.rng.below(2) as u8).collect();
            if sides.contains(&0) && sides.contains(&1) {
                return sides;
            }
        }
    }

    fn lossy_conditions(&mut self) -> Conditions {
        let mut conditions = self.healthy.clone();
        if self.rng.chance(300) {
            return conditions;
        }
        conditions.drop_per_mille = self.rng.between(0, 300);
        conditions.duplicate_per_mille = self.rng.between(0, 100);
        conditions.straggle_per_mille = self.rng.between(0, 100);
        conditions.straggle_max_us = self.rng.between(0, 500_000);
        conditions
    }

    /// Faults stop: the network heals, crashed members restart, clients finish.
    pub(super) fn end_faults(&mut self) -> Result<(), Violation> {
        self.phase = Phase::Settling;
        self.trace_line(format_args!(
            "faults end: healing and restarting everything"
        ));
        self.network.heal();
        self.network.conditions = self.healthy.clone();
        self.paused_until.fill(0);
        for member in 0..self.member_count() {
            if let Slot::Up(m) = &mut self.slots[member] {
                m.arm_crash_at_next_sync(false);
                m.arm_crash_inside_backend_install(false);
            } else {
                self.restart(member)?;
            }
        }
        self.schedule(self.now, Event::Probe);
        Ok(())
    }
}
