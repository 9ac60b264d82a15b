//! The network between members: how long each raft message takes, and which ones never
//! arrive. Delays differ per message, so messages overtake each other (reordering).
//!
//! Proposals forwarded to the leader (`MsgPropose`) are never duplicated: raft-rs does not
//! deduplicate them, so a duplicate would apply a client's put twice. Cairn's peer
//! transport is a stream and must not redeliver them either.

use raft::prelude::{Message, MessageType};

use crate::rng::SimRng;

/// How the network behaves for a while; the fault schedule changes it.
#[derive(Clone, Debug)]
pub struct Conditions {
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// Messages held up much longer than the rest, to be overtaken.
    pub straggle_per_mille: u64,
    pub straggle_max_us: u64,
}

impl Conditions {
    /// A healthy network of the given speed: nothing lost, nothing held up.
    pub fn healthy(delay_min_us: u64, delay_max_us: u64) -> Conditions {
        Conditions {
            delay_min_us,
            delay_max_us,
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            straggle_per_mille: 0,
            straggle_max_us: 0,
        }
    }
}

pub struct Network {
    pub conditions: Conditions,
    /// Each member's side while partitioned; members on different sides cannot talk.
    sides: Option<Vec<u8>>,
}

impl Network {
    pub fn new(conditions: Conditions) -> Network {
        Network {
            conditions,
            sides: None,
        }
    }

    pub fn partition(&mut self, sides: Vec<u8>) {
        self.sides = Some(sides);
    }

    /// A member joins: while partitioned, it starts on the first side.
    pub fn add_member(&mut self) {
        if let Some(sides) = &mut self.sides {
            sides.push(0);
        }
    }

    pub fn heal(&mut self) {
        self.sides = None;
    }

    pub fn is_partitioned(&self) -> bool {
        self.sides.is_some()
    }

    /// Whether members `a` and `b` (indexes, not raft ids) can reach each other.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.sides.as_ref().is_none_or(|sides| sides[a] == sides[b])
    }

    /// How long a client request or reply takes: clients are never partitioned.
    pub fn client_delay(&self, rng: &mut SimRng) -> u64 {
        rng.between(self.conditions.delay_min_us, self.conditions.delay_max_us)
    }

    /// The delays after which copies of `message` arrive: none if it is lost.
    pub fn plan(&self, message: &Message, rng: &mut SimRng) -> Vec<u64> {
        let c = &self.conditions;
        if rng.chance(c.drop_per_mille) {
            return Vec::new();
        }
        let copies = if message.get_msg_type() != MessageType::MsgPropose
            && rng.chance(c.duplicate_per_mille)
        {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut delay = rng.between(c.delay_min_us, c.delay_max_us);
                if rng.chance(c.straggle_per_mille) {
                    delay += rng.between(0, c.straggle_max_us);
                }
                delay
            })
            .collect()
    }
}
