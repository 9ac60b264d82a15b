//! The simulated world: members, network, clients and faults, driven by one queue of events
//! in simulated time. Nothing here reads a clock, starts a thread or iterates a hash map, so
//! a seed replays the same run.
//!
//! A run has two phases. While faults are on, a chaos schedule crashes and restarts members
//! (sometimes in the middle of a sync), stops and resumes them, partitions and heals the
//! network and changes how lossy it is, and adds, promotes and removes members, while
//! clients issue operations. Then everything heals and restarts, clients
//! stop, and the cluster must settle: a leader, a final write applied everywhere, every
//! member at the same applied index. Last, the client history is checked.

use std::collections::{BTreeMap, BTreeSet};

use cairn_linearizability::KvOutput;
use raft::SnapshotStatus;
use raft::prelude::{ConfChangeType, Message, MessageType};

use crate::apply::ApplyFaults;
use crate::disk::Backend;
use crate::disk::{Disk, DiskFaults};
use crate::history::{ClientOp, HistoryOp, is_linearizable};
use crate::invariants::Invariants;
use crate::member::{
    ClientRef, Input, Io, Member, MemberFaults, MemberSettings, Outbox, Reply, TICK_US, TurnEnd,
    Wakeup,
};
use crate::network::{Conditions, Network};
use crate::outcome::{Report, Violation};
use crate::rng::SimRng;
use crate::state_machine::encode_request;
use crate::{InjectedBug, Options};

/// How long a leader waits for its state machine to reach a snapshot's index before it
/// gives up sending it (`EXPORT_WAIT`).
const EXPORT_WAIT_US: u64 = 30_000_000;
/// How long after raft asks for a snapshot its export starts, at most.
const EXPORT_START_MAX_US: u64 = 100_000;
/// How often a snapshot export looks at the state machine again.
const EXPORT_POLL_US: u64 = 10_000;
/// Members added to a run at most, each as a learner first.
const MEMBERS_ADDED_MAX: usize = 3;
/// The share of the leader's log a learner must hold to be promoted (the server's check).
const PROMOTE_LOG_PERCENT: u64 = 90;
/// How long the cluster gets to settle once faults stop.
const SETTLE_LIMIT_US: u64 = 60_000_000;
/// How often the settling phase looks at the cluster.
const PROBE_INTERVAL_US: u64 = 100_000;
/// A final write not applied anywhere after this long is proposed again.
const FINAL_WRITE_RETRY_US: u64 = 3_000_000;
/// How long a client waits before it tries a certainly failed request on another member.
const CLIENT_RETRY_MIN_US: u64 = 20_000;
const CLIENT_RETRY_MAX_US: u64 = 200_000;
/// Request ids of final writes: above any client's.
const FINAL_WRITE_ID_BASE: u64 = u64::MAX / 2;
/// The client index final writes answer to; no client has it.
const SETTLE_CLIENT: usize = usize::MAX;

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

/// An operation a client is waiting on.
struct Pending {
    op: u64,
    input: ClientOp,
    /// Attempts so far; a request that certainly failed is tried again on another member.
    attempt: u64,
    /// The request id of every attempt.
    request_ids: Vec<u64>,
    called: u64,
}

struct Client {
    pending: Option<Pending>,
    next_op: u64,
    /// The last value this client saw for each key, for compare-and-set guesses.
    seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A history entry with the request ids of a write, to tell "unknown" from "no effect".
struct Recorded {
    op: HistoryOp,
    request_ids: Vec<u64>,
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
            crash_inside_backend_install: options.known_bugs.crash_inside_backend_install,
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

    fn report_to_sender(&mut self, from: usize, input: Input) {
        let at = self.now + self.network.client_delay(&mut self.rng);
        self.schedule(
            at,
            Event::TransportReport {
                member: from,
                input,
            },
        );
    }

    /// Hands `message` to the network; a sender that cannot reach the peer is told so, as
    /// the transport tells raft. A snapshot goes its own way, with the backend.
    fn send(&mut self, from: usize, message: Message) {
        self.report.messages_sent += 1;
        if message.get_msg_type() == MessageType::MsgSnapshot {
            let incarnation = self.incarnations[from];
            let deadline = self.now + EXPORT_WAIT_US;
            // The export runs on a blocking thread, a little later; the leader keeps
            // applying meanwhile, so the copy may be ahead of the snapshot's index.
            let starts = self.now + self.rng.between(0, EXPORT_START_MAX_US);
            self.schedule(
                starts,
                Event::ExportSnapshot {
                    from,
                    incarnation,
                    message,
                    deadline,
                },
            );
            return;
        }
        let to = message.to as usize - 1;
        let delays = if self.network.connected(from, to) {
            self.network.plan(&message, &mut self.rng)
        } else {
            if message.get_msg_type() == MessageType::MsgAppend {
                self.report_to_sender(from, Input::Unreachable { to: message.to });
            }
            Vec::new()
        };
        if delays.is_empty() {
            self.report.messages_dropped += 1;
            return;
        }
        for delay in delays {
            let event = Event::Deliver {
                from,
                to,
                message: message.clone(),
            };
            self.schedule(self.now + delay, event);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message) -> Result<(), Violation> {
        if !self.network.connected(from, to) || !self.is_up(to) {
            self.report.messages_dropped += 1;
            return Ok(());
        }
        self.with_member(to, |m, io| {
            m.deliver(Input::Message(message), io);
            Ok(TurnEnd::Done)
        })
    }

    /// Tells the sender's raft whether its snapshot got through, if the sender is still the
    /// process that sent it.
    fn snapshot_status(&mut self, from: usize, incarnation: u64, to: u64, status: SnapshotStatus) {
        if self.incarnations[from] != incarnation {
            return;
        }
        if status == SnapshotStatus::Failure {
            self.report.messages_dropped += 1;
        }
        self.report_to_sender(from, Input::SnapshotStatus { to, status });
    }

    /// `export_backend`: wait until the state machine holds the snapshot's index, copy the
    /// backend (it may be further ahead), then stream it with the message.
    fn export_snapshot(&mut self, from: usize, incarnation: u64, message: Message, deadline: u64) {
        let index = message.get_snapshot().get_metadata().index;
        let backend = match &self.slots[from] {
            Slot::Up(member) if self.incarnations[from] == incarnation => {
                (member.applied() >= index).then(|| member.export_backend())
            }
            // The sending process is gone, and the export with it.
            _ => return,
        };
        let to = message.to;
        let Some(backend) = backend else {
            if self.now >= deadline {
                self.snapshot_status(from, incarnation, to, SnapshotStatus::Failure);
            } else {
                let event = Event::ExportSnapshot {
                    from,
                    incarnation,
                    message,
                    deadline,
                };
                self.schedule(self.now + EXPORT_POLL_US, event);
            }
            return;
        };
        // A stream of its own: lost or slow as the network is, never duplicated.
        let transfer = if self.network.connected(from, to as usize - 1) {
            self.network.plan(&message, &mut self.rng).first().copied()
        } else {
            None
        };
        let Some(transfer) = transfer else {
            self.snapshot_status(from, incarnation, to, SnapshotStatus::Failure);
            return;
        };
        let at = self.now + transfer;
        let event = Event::SnapshotArrives {
            from,
            incarnation,
            message,
            backend,
        };
        self.schedule(at, event);
    }

    /// The receiver writes the backend, then steps the message; the sender hears the outcome.
    fn snapshot_arrives(
        &mut self,
        from: usize,
        incarnation: u64,
        message: Message,
        backend: Backend,
    ) -> Result<(), Violation> {
        let to = message.to;
        let receiver = to as usize - 1;
        if !self.network.connected(from, receiver) || !self.is_up(receiver) {
            self.snapshot_status(from, incarnation, to, SnapshotStatus::Failure);
            return Ok(());
        }
        self.trace_line(format_args!(
            "member {to} receives a snapshot at {} from member {} (backend applied {})",
            message.get_snapshot().get_metadata().index,
            from + 1,
            backend.applied
        ));
        self.with_member(receiver, |m, io| {
            m.receive_backend(backend);
            m.deliver(Input::Message(message), io);
            Ok(TurnEnd::Done)
        })?;
        self.snapshot_status(from, incarnation, to, SnapshotStatus::Finish);
        Ok(())
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

    /// One fault, or none, then the next chaos event while faults last.
    fn chaos(&mut self) -> Result<(), Violation> {
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
    fn end_faults(&mut self) -> Result<(), Violation> {
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
    fn probe(&mut self) -> Result<(), Violation> {
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
    fn check_membership(&self) -> Result<(), Violation> {
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

    fn client_next(&mut self, client: usize) {
        if self.phase != Phase::Faults || self.report.operations_issued >= self.operations_max {
            return;
        }
        let key = self.rng.pick(&self.keys).clone();
        let c = &mut self.clients[client];
        let op = c.next_op;
        c.next_op += 1;
        let value = format!("{client}.{op}").into_bytes();
        let input = match self.rng.below(100) {
            0..=34 => ClientOp::Get { key },
            35..=64 => ClientOp::Put { key, value },
            65..=74 => ClientOp::Delete { key },
            _ => {
                let expected = self.clients[client].seen.get(&key).cloned().flatten();
                ClientOp::CompareAndSet {
                    key,
                    expected,
                    value,
                }
            }
        };
        self.clients[client].pending = Some(Pending {
            op,
            input,
            attempt: 0,
            request_ids: Vec::new(),
            called: self.now,
        });
        self.report.operations_issued += 1;
        let timeout = self.now + self.op_timeout_us;
        self.schedule(timeout, Event::ClientTimeout { client, op });
        self.send_attempt(client);
    }

    /// Sends the client's pending operation, as its next attempt, to a member picked at
    /// random.
    fn send_attempt(&mut self, client: usize) {
        let member = self.rng.below(self.member_count() as u64) as usize;
        let Some(pending) = self.clients[client].pending.as_mut() else {
            return;
        };
        pending.attempt += 1;
        let client_ref = ClientRef {
            client,
            op: pending.op,
            attempt: pending.attempt,
        };
        let request_id = ((client as u64 + 1) << 32) | (pending.op << 8) | pending.attempt;
        let node_input = match &pending.input {
            ClientOp::Get { key } => Input::Read {
                key: key.clone(),
                client: client_ref,
            },
            write => {
                pending.request_ids.push(request_id);
                Input::Propose {
                    id: request_id,
                    data: encode_request(request_id, write).expect("a write has entry data"),
                    client: client_ref,
                }
            }
        };
        if self.trace {
            eprintln!(
                "{:>12.3} ms  client {client} op {} attempt {} -> member {}: {}",
                self.now as f64 / 1000.0,
                client_ref.op,
                client_ref.attempt,
                member + 1,
                pending.input
            );
        }
        let arrives = self.now + self.network.client_delay(&mut self.rng);
        self.schedule(
            arrives,
            Event::ClientArrives {
                member,
                input: node_input,
                client: client_ref,
            },
        );
    }

    /// Takes the client's pending operation `op`, and plans its next one.
    fn finish_pending(&mut self, client: usize, op: u64) -> Option<Pending> {
        let c = self.clients.get_mut(client)?;
        if c.pending.as_ref().is_none_or(|p| p.op != op) {
            return None;
        }
        let pending = c.pending.take();
        let next = self.now + self.rng.between(0, self.think_max_us);
        self.schedule(next, Event::ClientNext { client });
        pending
    }

    fn client_reply(&mut self, client: ClientRef, reply: Reply) {
        let current = self
            .clients
            .get(client.client)
            .and_then(|c| c.pending.as_ref())
            .is_some_and(|p| p.op == client.op && p.attempt == client.attempt);
        if !current {
            return;
        }
        self.trace_line(format_args!(
            "client {} op {} attempt {} <- {reply}",
            client.client, client.op, client.attempt
        ));
        let Reply::Output(output) = reply else {
            // Certainly no effect: try another member after a moment, as clientv3 does.
            let retry = self.now + self.rng.between(CLIENT_RETRY_MIN_US, CLIENT_RETRY_MAX_US);
            let op = client.op;
            self.schedule(
                retry,
                Event::ClientRetry {
                    client: client.client,
                    op,
                },
            );
            return;
        };
        let Some(pending) = self.finish_pending(client.client, client.op) else {
            return;
        };
        let seen = &mut self.clients[client.client].seen;
        match (&pending.input, &output) {
            (ClientOp::Get { key }, KvOutput::Get(value)) => {
                seen.insert(key.clone(), value.clone());
            }
            (ClientOp::Put { key, value }, _)
            | (ClientOp::CompareAndSet { key, value, .. }, KvOutput::Txn { succeeded: true }) => {
                seen.insert(key.clone(), Some(value.clone()));
            }
            (ClientOp::Delete { key }, _) => {
                seen.insert(key.clone(), None);
            }
            _ => {}
        }
        self.history.push(Recorded {
            op: HistoryOp {
                input: pending.input,
                output: Some(output),
                called: pending.called,
                returned: Some(self.now),
            },
            request_ids: pending.request_ids,
        });
    }

    fn client_timeout(&mut self, client: usize, op: u64) {
        let Some(pending) = self.finish_pending(client, op) else {
            return;
        };
        self.trace_line(format_args!("client {client} op {op} timed out"));
        // A read that never answered changed nothing; a write may have happened.
        if !pending.input.is_read() {
            self.history.push(Recorded {
                op: HistoryOp {
                    input: pending.input,
                    output: None,
                    called: pending.called,
                    returned: None,
                },
                request_ids: pending.request_ids,
            });
        }
    }

    /// The history, judged. Writes whose outcome the client never learned stay in as
    /// "unknown" only if some member applied them: after settling, the rest never will.
    fn check_history(&mut self) -> Result<(), Violation> {
        let mut ops: Vec<HistoryOp> = self
            .history
            .iter()
            .filter(|r| {
                r.op.output.is_some()
                    || r.request_ids
                        .iter()
                        .any(|id| self.applied_requests.contains(id))
            })
            .map(|r| r.op.clone())
            .collect();
        if self.injected_bug == Some(InjectedBug::ForgedReadInHistory) {
            ops.push(HistoryOp {
                input: ClientOp::Get {
                    key: self.keys[0].clone(),
                },
                output: Some(KvOutput::Get(Some(b"never written".to_vec()))),
                called: self.now,
                returned: Some(self.now + 1),
            });
        }
        self.report.operations_checked = ops.len() as u64;
        self.report.operations_unknown = ops.iter().filter(|o| o.output.is_none()).count() as u64;
        if is_linearizable(&ops) {
            return Ok(());
        }
        if self.trace {
            for op in &ops {
                eprintln!("history: {op:?}");
            }
        }
        Err(Violation::NotLinearizable {
            operations: ops.len(),
        })
    }
}
