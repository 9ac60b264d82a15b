//! The lessor: every granted lease, its TTL, when it expires, and the keys attached to it.
//!
//! Grants, revokes and attachments change only in the apply loop, from committed entries, so
//! every member agrees on them. Expiry times are local: the leader renews on keep-alive
//! without a Raft round trip and proposes a revoke when a lease runs out, as etcd does.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::ServerError;

/// etcd's largest TTL, in seconds.
pub const MAX_LEASE_TTL_SECONDS: i64 = 9_000_000_000;
/// A revoke proposed for an expired lease is proposed again if it has not applied by then.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

struct Lease {
    ttl_seconds: i64,
    /// The remaining TTL last checkpointed through Raft (0: none): what a restart resumes from.
    checkpointed_seconds: i64,
    expiry: Instant,
    keys: BTreeSet<Vec<u8>>,
    revoke_proposed: Option<Instant>,
}

#[derive(Default)]
struct LessorState {
    leases: HashMap<i64, Lease>,
    /// The lease each leased key is attached to, to detach it when it is overwritten.
    key_lease: HashMap<Vec<u8>, i64>,
}

pub struct Lessor {
    state: Mutex<LessorState>,
    min_ttl_seconds: i64,
}

/// What `LeaseTimeToLive` reports.
pub struct LeaseTimeToLive {
    pub remaining_seconds: i64,
    pub granted_seconds: i64,
    pub keys: Vec<Vec<u8>>,
}

impl Lease {
    /// Starts the lease's clock again from now: from its checkpointed remaining TTL if it
    /// has one, else from its full TTL.
    fn resume(&mut self) {
        let seconds = if self.checkpointed_seconds > 0 {
            self.checkpointed_seconds
        } else {
            self.ttl_seconds
        };
        self.expiry = expiry_after(seconds);
        self.revoke_proposed = None;
    }
}

fn expiry_after(ttl_seconds: i64) -> Instant {
    Instant::now() + Duration::from_secs(ttl_seconds.max(0) as u64)
}

impl Lessor {
    pub fn new(min_ttl_seconds: i64) -> Self {
        Self {
            state: Mutex::default(),
            min_ttl_seconds,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LessorState> {
        self.state
            .lock()
            .expect("the lessor lock is never held across a panic")
    }

    /// Rebuilds the lessor from the backend on start. A lease resumes from its checkpointed
    /// remaining TTL, or its full TTL if it has none.
    pub fn restore(&self, leases: Vec<(i64, i64, i64)>, attachments: Vec<(Vec<u8>, i64)>) {
        let mut state = self.lock();
        // A snapshot install replaces everything the lessor knew.
        state.leases.clear();
        state.key_lease.clear();
        for (id, ttl_seconds, checkpointed_seconds) in leases {
            let mut lease = Lease {
                ttl_seconds,
                checkpointed_seconds,
                expiry: Instant::now(),
                keys: BTreeSet::new(),
                revoke_proposed: None,
            };
            lease.resume();
            state.leases.insert(id, lease);
        }
        for (key, id) in attachments {
            if let Some(lease) = state.leases.get_mut(&id) {
                lease.keys.insert(key.clone());
                state.key_lease.insert(key, id);
            }
        }
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// The TTL a grant of `ttl_seconds` gets: never below the minimum, which outlasts an election.
    pub fn granted_ttl(&self, ttl_seconds: i64) -> i64 {
        ttl_seconds.max(self.min_ttl_seconds)
    }

    /// Applies a grant: checked first with `check_grant`, then recorded here.
    pub fn grant(&self, id: i64, ttl_seconds: i64) {
        self.lock().leases.insert(
            id,
            Lease {
                ttl_seconds,
                checkpointed_seconds: 0,
                expiry: expiry_after(ttl_seconds),
                keys: BTreeSet::new(),
                revoke_proposed: None,
            },
        );
    }

    pub fn check_grant(&self, id: i64) -> Result<(), ServerError> {
        if self.exists(id) {
            return Err(ServerError::LeaseExists);
        }
        Ok(())
    }

    /// The keys attached to lease `id`, or None when there is no such lease.
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    pub fn remove(&self, id: i64) {
        let mut state = self.lock();
        if let Some(lease) = state.leases.remove(&id) {
            for key in lease.keys {
                state.key_lease.remove(&key);
            }
        }
    }

    /// Records that `key` now holds a value attached to `lease` (0: to none).
    pub fn attach(&self, key: &[u8], lease: i64) {
        let mut state = self.lock();
        let state = &mut *state;
        let previous = if lease == 0 {
            state.key_lease.remove(key)
        } else {
            state.key_lease.insert(key.to_vec(), lease)
        };
        if let Some(old) = previous.filter(|old| *old != lease)
            && let Some(l) = state.leases.get_mut(&old)
        {
            l.keys.remove(key);
        }
        if lease != 0
            && let Some(l) = state.leases.get_mut(&lease)
        {
            l.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&self, key: &[u8]) {
        self.attach(key, 0);
    }

    /// A keep-alive: the lease lives another full TTL. Returns that TTL, and whether an older
    /// checkpoint must be cleared (else a restart would resume from its shorter remaining TTL).
    pub fn renew(&self, id: i64) -> Option<(i64, bool)> {
        let mut state = self.lock();
        let lease = state.leases.get_mut(&id)?;
        lease.expiry = expiry_after(lease.ttl_seconds);
        Some((lease.ttl_seconds, lease.checkpointed_seconds > 0))
    }

    /// Applies a checkpoint: returns the lease's TTL so it can be stored with the remaining
    /// TTL, or None if the lease is gone.
    pub fn checkpoint(&self, id: i64, remaining_seconds: i64) -> Option<i64> {
        let mut state = self.lock();
        let lease = state.leases.get_mut(&id)?;
        lease.checkpointed_seconds = remaining_seconds;
        Some(lease.ttl_seconds)
    }

    /// The remaining TTL of every lease that has run down since it was granted or renewed,
    /// at most `max` of them, for the leader to checkpoint.
    pub fn checkpoints_due(&self, max: usize) -> Vec<(i64, i64)> {
        let now = Instant::now();
        self.lock()
            .leases
            .iter()
            .filter_map(|(id, lease)| {
                let remaining = lease.expiry.saturating_duration_since(now).as_secs() as i64;
                (remaining > 0
                    && remaining < lease.ttl_seconds
                    && remaining != lease.checkpointed_seconds)
                    .then_some((*id, remaining))
            })
            .take(max)
            .collect()
    }

    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<LeaseTimeToLive> {
        let state = self.lock();
        let lease = state.leases.get(&id)?;
        Some(LeaseTimeToLive {
            remaining_seconds: lease
                .expiry
                .saturating_duration_since(Instant::now())
                .as_secs() as i64,
            granted_seconds: lease.ttl_seconds,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A new leader takes over expiry: keep-alives went to the old leader, so every lease
    /// gets its full TTL (or its checkpointed remaining TTL) from now, as etcd's Promote does.
    pub fn promote(&self) {
        for lease in self.lock().leases.values_mut() {
            lease.resume();
        }
    }

    /// Leases past their expiry whose revoke is not already on its way.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        for (id, lease) in state.leases.iter_mut() {
            let pending = lease
                .revoke_proposed
                .is_some_and(|at| now.duration_since(at) < REVOKE_RETRY);
            if lease.expiry <= now && !pending {
                lease.revoke_proposed = Some(now);
                expired.push(*id);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_resumes_from_the_checkpointed_remaining_ttl() {
        let lessor = Lessor::new(2);
        lessor.restore(vec![(1, 600, 30), (2, 600, 0)], vec![(b"k".to_vec(), 1)]);
        let checkpointed = lessor.time_to_live(1, true).expect("lease 1");
        assert!(
            checkpointed.remaining_seconds <= 30,
            "resumes from the checkpoint"
        );
        assert_eq!(checkpointed.keys, vec![b"k".to_vec()]);
        assert!(
            lessor
                .time_to_live(2, false)
                .expect("lease 2")
                .remaining_seconds
                > 590
        );
        assert_eq!(
            lessor.renew(1),
            Some((600, true)),
            "a renewal must clear the old checkpoint"
        );
        assert_eq!(lessor.checkpoint(1, 0), Some(600));
        assert_eq!(lessor.renew(1), Some((600, false)));
        assert_eq!(lessor.checkpoint(9, 5), None);
    }

    #[test]
    fn attaching_moves_a_key_between_leases_and_zero_detaches() {
        let lessor = Lessor::new(2);
        lessor.grant(1, 10);
        lessor.grant(2, 10);
        lessor.attach(b"k", 1);
        assert_eq!(lessor.keys(1), Some(vec![b"k".to_vec()]));
        lessor.attach(b"k", 2);
        assert_eq!(lessor.keys(1), Some(vec![]));
        assert_eq!(lessor.keys(2), Some(vec![b"k".to_vec()]));
        lessor.attach(b"k", 0);
        assert_eq!(lessor.keys(2), Some(vec![]));
        lessor.attach(b"j", 2);
        lessor.remove(2);
        assert_eq!(lessor.keys(2), None);
        lessor.grant(2, 10);
        assert_eq!(
            lessor.keys(2),
            Some(vec![]),
            "a removed lease's attachments are gone"
        );
    }

    #[test]
    fn expiry_is_reported_once_until_the_retry_interval() {
        let lessor = Lessor::new(0);
        lessor.grant(7, 0);
        let now = Instant::now() + Duration::from_millis(1);
        assert_eq!(lessor.expired(now), vec![7]);
        assert!(
            lessor.expired(now).is_empty(),
            "a revoke is already proposed"
        );
        assert_eq!(lessor.expired(now + REVOKE_RETRY), vec![7]);
        assert_eq!(lessor.renew(7), Some((0, false)));
        assert_eq!(lessor.granted_ttl(1), 1);
        assert_eq!(Lessor::new(2).granted_ttl(1), 2);
    }
}
