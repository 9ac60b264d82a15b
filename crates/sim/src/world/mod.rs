//! The simulated world: members, network, clients and faults, driven by one queue of events
//! in simulated time. Nothing here reads a clock, starts a thread or iterates a hash map, so
//! a seed replays the same run.
//!
//! A run has two phases. While faults are on, a chaos schedule crashes and restarts members
//! (sometimes in the middle of a sync), stops and resumes them, partitions and heals the
//! network and changes how lossy it is, and adds, promotes and removes members, while
//! clients issue operations (faults.rs, clients.rs, transport.rs). Then everything heals
//! and restarts, clients stop, and the cluster must settle: a leader, a final write applied
//! everywhere, every member at the same applied index (settle.rs). Last, the client history
//! is checked.

use std::collections::{BTreeMap, BTreeSet};

use raft::prelude::{ConfChangeType, Message};

use crate::apply::ApplyFaults;
use crate::disk::{Backend, Disk, DiskFaults};
use crate::invariants::Invariants;
use crate::member::{
    ClientRef, Input, Io, Member, MemberFaults, MemberSettings, Outbox, Reply, TICK_US, TurnEnd,
    Wakeup,
};
use crate::network::{Conditions, Network};
use crate::outcome::{Report, Violation};
use crate::rng::SimRng;
use crate::{InjectedBug, Options};

mod clients;
mod faults;
mod settle;
mod transport;

use clients::{Client, Recorded};
use settle::FINAL_WRITE_ID_BASE;

enum Event {
    Tick {
        member: usize,
        incarnation: u64,
    },
    Wakeup {
        member: usize,
        incarnation: u64,
        wakeup: Wakeup,
    },
    Deliver {
        from: usize,
        to: usize,
        message: Message,
    },
    /// The transport exports the leader's backend for a snapshot message, once the state
    /// machine has reached the snapshot's index.
    ExportSnapshot {
        from: usize,
        incarnation: u64,
        message: Message,
        deadline: u64,
    },
    /// A snapshot message and its backend reach the receiver.
    SnapshotArrives {
        from: usize,
        incarnation: u64,
        message: Message,
        backend: Backend,
    },
    /// A transport report for the sender of a message.
    TransportReport {
        member: usize,
        input: Input,
    },
    ClientArrives {
        member: usize,
        input: Input,
        client: ClientRef,
    },
    ClientReply {
        client: ClientRef,
        reply: Reply,
    },
    ClientTimeout {
        client: usize,
        op: u64,
    },
    ClientRetry {
        client: usize,
        op: u64,
    },
    ClientNext {
        client: usize,
    },
    Chaos,
    Restart {
        member: usize,
    },
    Heal,
    EndFaults,
    Probe,
}

impl Event {
    /// The member whose process handles this event, if any.
    fn member(&self) -> Option<usize> {
        match self {
            Event::Tick { member, .. }
            | Event::Wakeup { member, .. }
            | Event::TransportReport { member, .. }
            | Event::ClientArrives { member, .. } => Some(*member),
            Event::Deliver { to, .. } => Some(*to),
            Event::ExportSnapshot { from, .. } => Some(*from),
            Event::SnapshotArrives { message, .. } => Some(message.to as usize - 1),
            _ => None,
        }
    }
}

enum Slot {
    Up(Box<Member>),
    Down(Disk),
    /// Removed from the cluster: stopped for good.
    Removed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Settling,
    Settled,
}

pub struct World {
    trace: bool,
    crash_inside_backend_install: bool,
    injected_bug: Option<InjectedBug>,
    rng: SimRng,
    now: u64,
    step: u64,
    next_seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    slots: Vec<Slot>,
    incarnations: Vec<u64>,
    tick_us: Vec<u64>,
    /// Until when each member is stopped (SIGSTOP): its events wait until then.
    paused_until: Vec<u64>,
    /// Each member's `initial_voters`: the founding members bootstrap the cluster, members
    /// added later join it with none.
    initial_voters: Vec<Vec<u64>>,
    /// The membership changes seen committed, by log index.
    membership_changes: BTreeMap<u64, (ConfChangeType, u64)>,
    disk_faults: DiskFaults,
    settings: MemberSettings,
    network: Network,
    healthy: Conditions,
    clients: Vec<Client>,
    keys: Vec<Vec<u8>>,
    think_max_us: u64,
    op_timeout_us: u64,
    operations_max: u64,
    history: Vec<Recorded>,
    applied_requests: BTreeSet<u64>,
    invariants: Invariants,
    report: Report,
    phase: Phase,
    faults_end_us: u64,
    final_attempts: u64,
    final_proposed_at: u64,
    /// The log index of the first final write to commit.
    final_index: Option<u64>,
}

impl World {
    pub fn new(seed: u64, options: &Options) -> World {
        let mut rng = SimRng::new(seed);
        let members = options
            .members
            .unwrap_or(if rng.chance(500) { 3 } else { 5 });
        let bug = options.injected_bug;
        let sync_min_us = rng.between(20, 500);
        let settings = MemberSettings {
            voters: (1..=members as u64).collect(),
            // Small, so that a run of a few hundred entries takes several snapshots.
            snapshot_entries: rng.between(2, 30),
            // Cairn reports every 1024 entries; runs are a few hundred entries long, so the
            // simulation reports far more often, for the log to be trimmed at all.
            applied_report_entries: rng.between(1, 16),
            sync_min_us,
            sync_max_us: sync_min_us + rng.between(0, 3_000),
            sync_stall_per_mille: rng.between(0, 20),
            sync_stall_max_us: 500_000,
            apply_max_us: rng.between(0, 20_000),
            read_timeout_us: 3_000_000,
            syncs_membership_at_once: !options.known_bugs.unsynced_membership,
            faults: MemberFaults {
                acknowledges_before_sync: bug == Some(InjectedBug::AcknowledgeBeforeSync),
                serves_stale_reads: bug == Some(InjectedBug::StaleFollowerReads),
                apply: ApplyFaults::Faithful,
            },
        };
        let tick_us = (0..members)
            .map(|_| TICK_US - 2_000 + rng.between(0, 4_000))
            .collect();
        let delay_min_us = rng.between(50, 2_000);
        let healthy = Conditions::healthy(delay_min_us, delay_min_us + rng.between(0, 20_000));
        let faults_end_us = rng.between(8_000_000, 20_000_000);
        let client_count = rng.between(2, 5) as usize;
        let keys = (0..rng.between(1, 3))
            .map(|k| vec![b'a' + k as u8])
            .collect();
        let operations_max = options.operations_max.max(1);
        let think_max_us = 2 * faults_end_us * client_count as u64 / operations_max;
        let disk_faults = if bug == Some(InjectedBug::DiskForgetsSyncedWrites) {
            DiskFaults::ForgetsSyncedTail
        } else {
            DiskFaults::Honest
        };
        let world = World {
            trace: options.trace,
            crash_inside_backend_install: options.crash_inside_installs,
            injected_bug: bug,
            rng,
            now: 0,
            step: 0,
            next_seq: 0,
            events: BTreeMap::new(),
            slots: (0..members)
                .map(|_| Slot::Down(Disk::new(disk_faults)))
                .collect(),
            incarnations: vec![0; members],
            tick_us,
            paused_until: vec![0; members],
            initial_voters: vec![settings.voters.clone(); members],
            membership_changes: BTreeMap::new(),
            disk_faults,
            settings,
            network: Network::new(healthy.clone()),
            healthy,
            clients: (0..client_count)
                .map(|_| Client {
                    pending: None,
                    next_op: 0,
                    seen: BTreeMap::new(),
                })
                .collect(),
            keys,
            think_max_us,
            op_timeout_us: 3_000_000,
            operations_max,
            history: Vec::new(),
            applied_requests: BTreeSet::new(),
            invariants: Invariants::default(),
            report: Report {
                seed,
                members,
                ..Report::default()
            },
            phase: Phase::Faults,
            faults_end_us,
            final_attempts: 0,
            final_proposed_at: 0,
            final_index: None,
        };
        world.trace_line(format_args!(
            "seed {seed}: {members} members, {client_count} clients, faults for {} ms, snapshot every {} entries, sync {}..{} us, network {}..{} us",
            faults_end_us / 1000,
            world.settings.snapshot_entries,
            world.settings.sync_min_us,
            world.settings.sync_max_us,
            world.healthy.delay_min_us,
            world.healthy.delay_max_us,
        ));
        world
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    fn trace_line(&self, what: std::fmt::Arguments) {
        if self.trace {
            eprintln!("{:>12.3} ms  {what}", self.now as f64 / 1000.0);
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.next_seq += 1;
        self.events.insert((at, self.next_seq), event);
    }

    fn member_count(&self) -> usize {
        self.slots.len()
    }

    /// Runs to the end: faults, settling, then the history check.
    pub fn run(&mut self) -> Result<Report, Violation> {
        for member in 0..self.member_count() {
            self.restart(member)?;
        }
        for client in 0..self.clients.len() {
            let at = self.rng.between(0, self.think_max_us);
            self.schedule(at, Event::ClientNext { client });
        }
        let first_chaos = self.rng.between(100_000, 2_000_000);
        self.schedule(first_chaos, Event::Chaos);
        self.schedule(self.faults_end_us, Event::EndFaults);
        while self.phase != Phase::Settled {
            let Some(((at, _), event)) = self.events.pop_first() else {
                return Err(Violation::NotLive("nothing left to happen".into()));
            };
            self.now = at;
            self.step += 1;
            // A stopped process does nothing: what would reach it waits until it resumes,
            // and the ticks it missed come as one, as node.rs ticks at most once per turn.
            if let Some(member) = event.member()
                && self.paused_until[member] > at
            {
                self.schedule(self.paused_until[member], event);
                continue;
            }
            self.dispatch(event)?;
        }
        self.check_history()?;
        self.report.steps = self.step;
        self.report.simulated_us = self.now;
        self.report.elections = self.invariants.elections();
        Ok(self.report.clone())
    }

    fn dispatch(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick {
                member,
                incarnation,
            } => {
                if self.incarnations[member] != incarnation || !self.is_up(member) {
                    return Ok(());
                }
                let next = self.now + self.tick_us[member];
                self.schedule(
                    next,
                    Event::Tick {
                        member,
                        incarnation,
                    },
                );
                self.with_member(member, |m, io| {
                    m.deliver(Input::Tick, io);
                    m.apply_idle(io);
                    Ok(TurnEnd::Done)
                })
            }
            Event::Wakeup {
                member,
                incarnation,
                wakeup,
            } => {
                if self.incarnations[member] != incarnation {
                    return Ok(());
                }
                self.with_member(member, |m, io| match wakeup {
                    Wakeup::Turn => m.turn(io),
                    Wakeup::SyncDone => m.finish_ready(io),
                    Wakeup::Apply => m.run_apply(io),
                })
            }
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::ExportSnapshot {
                from,
                incarnation,
                message,
                deadline,
            } => {
                self.export_snapshot(from, incarnation, message, deadline);
                Ok(())
            }
            Event::SnapshotArrives {
                from,
                incarnation,
                message,
                backend,
            } => self.snapshot_arrives(from, incarnation, message, backend),
            Event::TransportReport { member, input } => self.with_member(member, |m, io| {
                m.deliver(input, io);
                Ok(TurnEnd::Done)
            }),
            Event::ClientArrives {
                member,
                input,
                client,
            } => {
                if self.is_up(member) {
                    self.with_member(member, |m, io| {
                        m.deliver(input, io);
                        Ok(TurnEnd::Done)
                    })
                } else {
                    let at = self.now + self.network.client_delay(&mut self.rng);
                    let reply = Reply::Failed("connection refused");
                    self.schedule(at, Event::ClientReply { client, reply });
                    Ok(())
                }
            }
            Event::ClientReply { client, reply } => {
                self.client_reply(client, reply);
                Ok(())
            }
            Event::ClientTimeout { client, op } => {
                self.client_timeout(client, op);
                Ok(())
            }
            Event::ClientRetry { client, op } => {
                if self.clients[client]
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.op == op)
                {
                    self.send_attempt(client);
                }
                Ok(())
            }
            Event::ClientNext { client } => {
                self.client_next(client);
                Ok(())
            }
            Event::Chaos => self.chaos(),
            Event::Restart { member } => self.restart(member),
            Event::Heal => {
                self.network.heal();
                self.trace_line(format_args!("network healed"));
                Ok(())
            }
            Event::EndFaults => self.end_faults(),
            Event::Probe => self.probe(),
        }
    }

    fn is_up(&self, member: usize) -> bool {
        matches!(self.slots[member], Slot::Up(_))
    }

    /// Lets member `index` work, then carries out what it produced.
    fn with_member<F>(&mut self, index: usize, work: F) -> Result<(), Violation>
    where
        F: FnOnce(&mut Member, &mut Io) -> Result<TurnEnd, Violation>,
    {
        let Slot::Up(member) = &mut self.slots[index] else {
            return Ok(());
        };
        let mut out = Outbox::default();
        let mut io = Io {
            now: self.now,
            rng: &mut self.rng,
            invariants: &mut self.invariants,
            report: &mut self.report,
            out: &mut out,
            trace: self.trace,
        };
        let end = work(member, &mut io)?;
        self.carry_out(index, out);
        if let TurnEnd::Crashed(point) = end {
            self.trace_line(format_args!("member {} crashes at {point:?}", index + 1));
            self.crash(index);
        }
        Ok(())
    }

    fn carry_out(&mut self, index: usize, out: Outbox) {
        for message in out.messages {
            self.send(index, message);
        }
        for (client, reply) in out.replies {
            let at = self.now + self.network.client_delay(&mut self.rng);
            self.schedule(at, Event::ClientReply { client, reply });
        }
        let incarnation = self.incarnations[index];
        for (at, wakeup) in out.wakeups {
            self.schedule(
                at,
                Event::Wakeup {
                    member: index,
                    incarnation,
                    wakeup,
                },
            );
        }
        for (id, log_index) in out.applied_requests {
            self.applied_requests.insert(id);
            if id >= FINAL_WRITE_ID_BASE && self.final_index.is_none() {
                self.final_index = Some(log_index);
            }
        }
        for (log_index, change, member) in out.membership_changes {
            if self
                .membership_changes
                .insert(log_index, (change, member))
                .is_some()
            {
                continue;
            }
            self.report.membership_changes += 1;
            self.trace_line(format_args!(
                "membership change committed at {log_index}: {change:?} {member}"
            ));
            // A removed member stops for good, as etcd's does once it sees its removal.
            if change == ConfChangeType::RemoveNode
                && let Some(slot) = self.slots.get_mut(member as usize - 1)
            {
                *slot = Slot::Removed;
            }
        }
    }

    fn crash(&mut self, index: usize) {
        let slot = std::mem::replace(
            &mut self.slots[index],
            Slot::Down(Disk::new(DiskFaults::Honest)),
        );
        self.slots[index] = match slot {
            Slot::Up(member) => {
                self.report.crashes += 1;
                self.paused_until[index] = 0;
                self.trace_line(format_args!("member {} crashed", index + 1));
                if self.phase == Phase::Faults {
                    let back = self.now + self.rng.between(100_000, 8_000_000);
                    self.schedule(back, Event::Restart { member: index });
                }
                Slot::Down(member.crash(&mut self.rng))
            }
            down => down,
        };
    }

    fn restart(&mut self, index: usize) -> Result<(), Violation> {
        let slot = std::mem::replace(
            &mut self.slots[index],
            Slot::Down(Disk::new(DiskFaults::Honest)),
        );
        let disk = match slot {
            Slot::Down(disk) => disk,
            up_or_removed => {
                self.slots[index] = up_or_removed;
                return Ok(());
            }
        };
        self.incarnations[index] += 1;
        let mut out = Outbox::default();
        let mut io = Io {
            now: self.now,
            rng: &mut self.rng,
            invariants: &mut self.invariants,
            report: &mut self.report,
            out: &mut out,
            trace: self.trace,
        };
        let mut settings = self.settings.clone();
        settings.voters = self.initial_voters[index].clone();
        if index == 0 && self.injected_bug == Some(InjectedBug::StateMachineDivergence) {
            settings.faults.apply = ApplyFaults::CorruptsPuts;
        }
        let mut member = Member::start(index as u64 + 1, disk, settings, &mut io)?;
        member.arm_crash_inside_backend_install(
            self.crash_inside_backend_install && self.phase == Phase::Faults,
        );
        self.slots[index] = Slot::Up(Box::new(member));
        self.carry_out(index, out);
        let first_tick = self.now + self.rng.between(1, self.tick_us[index]);
        let incarnation = self.incarnations[index];
        self.schedule(
            first_tick,
            Event::Tick {
                member: index,
                incarnation,
            },
        );
        Ok(())
    }

    fn leader(&self) -> Option<usize> {
        (0..self.member_count()).find(|i| matches!(&self.slots[*i], Slot::Up(m) if m.is_leader()))
    }

    fn up_members(&self) -> Vec<usize> {
        (0..self.member_count())
            .filter(|i| self.is_up(*i))
            .collect()
    }
}
