//! The peer transport between members: raft messages over the simulated network, and
//! snapshots streamed with the leader's backend.

use raft::SnapshotStatus;
use raft::prelude::{Message, MessageType};

use super::{Event, Slot, World};
use crate::disk::Backend;
use crate::member::{Input, TurnEnd};
use crate::outcome::Violation;

/// How long a leader waits for its state machine to reach a snapshot's index before it
/// gives up sending it (`EXPORT_WAIT`).
const EXPORT_WAIT_US: u64 = 30_000_000;

/// How long after raft asks for a snapshot its export starts, at most.
const EXPORT_START_MAX_US: u64 = 100_000;

/// How often a snapshot export looks at the state machine again.
const EXPORT_POLL_US: u64 = 10_000;

impl World {
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
    pub(super) fn send(&mut self, from: usize, message: Message) {
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

    pub(super) fn deliver(
        &mut self,
        from: usize,
        to: usize,
        message: Message,
    ) -> Result<(), Violation> {
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
    pub(super) fn export_snapshot(
        &mut self,
        from: usize,
        incarnation: u64,
        message: Message,
        deadline: u64,
    ) {
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
    pub(super) fn snapshot_arrives(
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
}
