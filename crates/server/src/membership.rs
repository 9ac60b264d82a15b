//! The cluster's members as the state machine records them: raft's membership changes and
//! each member's published attributes, applied from the log into the backend's members
//! table, and the rules etcd checks before proposing a change. Removed members are kept by ID
//! for good, as etcd keeps them, so that their traffic can be refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use cairn_mvcc::{Store, Writer};
use cairn_proto::etcdserverpb::Member;
use cairn_raft::{CommittedMembershipChange, MembershipChange};
use prost::Message;

use crate::ServerError;

/// etcd 3.4 allows one learner at a time.
const LEARNERS_MAX: usize = 1;

#[derive(Default)]
pub struct Membership {
    members: RwLock<BTreeMap<u64, Member>>,
    removed: RwLock<BTreeSet<u64>>,
}

fn decode_member(id: u64, bytes: &[u8]) -> Result<Member, ServerError> {
    Member::decode(bytes)
        .map_err(|e| ServerError::Internal(format!("member {id:x} record is corrupt: {e}")))
}

/// What applying a membership change did to this member's peer links.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerChange {
    Set { id: u64, urls: Vec<String> },
    Removed(u64),
}

impl Membership {
    pub fn load(store: &Store) -> Result<Membership, ServerError> {
        let members = store
            .members()
            .map_err(|e| ServerError::Internal(format!("cannot read members: {e}")))?
            .into_iter()
            .map(|(id, bytes)| Ok((id, decode_member(id, &bytes)?)))
            .collect::<Result<_, ServerError>>()?;
        let removed = store
            .removed_members()
            .map_err(|e| ServerError::Internal(format!("cannot read removed members: {e}")))?
            .into_iter()
            .collect();
        Ok(Membership {
            members: RwLock::new(members),
            removed: RwLock::new(removed),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Member>> {
        self.members
            .read()
            .expect("the members lock is never held across a panic")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Member>> {
        self.members
            .write()
            .expect("the members lock is never held across a panic")
    }

    pub fn list(&self) -> Vec<Member> {
        self.read().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Member> {
        self.read().get(&id).cloned()
    }

    /// Whether `id` was removed from the cluster: it can never be a member again.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed
            .read()
            .expect("the removed members lock is never held across a panic")
            .contains(&id)
    }

    /// Replaces every member, after a snapshot install reloaded the store.
    pub fn reload(&self, store: &Store) -> Result<(), ServerError> {
        let loaded = Membership::load(store)?;
        *self.write() = loaded.members.into_inner().expect("fresh lock");
        *self
            .removed
            .write()
            .expect("the removed members lock is never held across a panic") =
            loaded.removed.into_inner().expect("fresh lock");
        Ok(())
    }

    /// Records `members` as they are when a cluster is first bootstrapped.
    pub fn bootstrap(&self, w: &mut Writer<'_>, members: Vec<Member>) -> Result<(), ServerError> {
        for member in members {
            self.put(w, member)?;
        }
        Ok(())
    }

    fn put(&self, w: &mut Writer<'_>, member: Member) -> Result<(), ServerError> {
        w.put_member(member.id, &member.encode_to_vec())?;
        self.write().insert(member.id, member);
        Ok(())
    }

    /// Applies a committed raft membership change; `member` is the one the change context
    /// carried (for additions).
    pub fn apply_change(
        &self,
        w: &mut Writer<'_>,
        change: &CommittedMembershipChange,
        member: Option<Member>,
    ) -> Result<PeerChange, ServerError> {
        match change.change {
            MembershipChange::Remove => {
                w.remove_member(change.member)?;
                self.write().remove(&change.member);
                self.removed
                    .write()
                    .expect("the removed members lock is never held across a panic")
                    .insert(change.member);
                Ok(PeerChange::Removed(change.member))
            }
            MembershipChange::AddVoter | MembershipChange::AddLearner => {
                let is_learner = change.change == MembershipChange::AddLearner;
                let mut record = match (self.get(change.member), member) {
                    // A promotion keeps what the member has published.
                    (Some(existing), _) => existing,
                    (None, Some(added)) => added,
                    (None, None) => Member {
                        id: change.member,
                        ..Member::default()
                    },
                };
                record.id = change.member;
                record.is_learner = is_learner;
                let urls = record.peer_ur_ls.clone();
                self.put(w, record)?;
                Ok(PeerChange::Set {
                    id: change.member,
                    urls,
                })
            }
        }
    }

    /// Applies published attributes or a peer URL update: the fields given replace the
    /// recorded ones.
    pub fn apply_attributes(
        &self,
        w: &mut Writer<'_>,
        update: Member,
    ) -> Result<Option<PeerChange>, ServerError> {
        let Some(mut record) = self.get(update.id) else {
            return Err(ServerError::MemberNotFound);
        };
        let peers_changed = !update.peer_ur_ls.is_empty() && update.peer_ur_ls != record.peer_ur_ls;
        if !update.name.is_empty() {
            record.name = update.name;
        }
        if !update.client_ur_ls.is_empty() {
            record.client_ur_ls = update.client_ur_ls;
        }
        if !update.peer_ur_ls.is_empty() {
            record.peer_ur_ls = update.peer_ur_ls;
        }
        let change = peers_changed.then(|| PeerChange::Set {
            id: record.id,
            urls: record.peer_ur_ls.clone(),
        });
        self.put(w, record)?;
        Ok(change)
    }

    /// etcd's checks before proposing that `peer_urls` join.
    pub fn check_add(&self, peer_urls: &[String], is_learner: bool) -> Result<(), ServerError> {
        let members = self.read();
        if members
            .values()
            .any(|m| m.peer_ur_ls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(ServerError::PeerUrlExists);
        }
        if is_learner && members.values().filter(|m| m.is_learner).count() >= LEARNERS_MAX {
            return Err(ServerError::TooManyLearners);
        }
        Ok(())
    }

    /// `--strict-reconfig-check`: a change of voters must leave enough started voters (those
    /// that have published their name) for a quorum of the new membership.
    pub fn check_quorum_after(
        &self,
        voters_delta: isize,
        removed: Option<u64>,
    ) -> Result<(), ServerError> {
        let members = self.read();
        let voters = members.values().filter(|m| !m.is_learner).count() as isize + voters_delta;
        let started = members
            .values()
            .filter(|m| !m.is_learner && !m.name.is_empty() && Some(m.id) != removed)
            .count() as isize;
        if started < voters / 2 + 1 {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(change: MembershipChange, member: u64) -> CommittedMembershipChange {
        CommittedMembershipChange {
            change,
            member,
            context: Vec::new(),
        }
    }

    #[test]
    fn a_removed_member_stays_removed_across_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        {
            let (store, _) = Store::open(&path).expect("open store");
            let membership = Membership::load(&store).expect("load");
            store
                .write(1, |w| {
                    membership.apply_change(w, &change(MembershipChange::AddVoter, 5), None)?;
                    membership.apply_change(w, &change(MembershipChange::AddVoter, 6), None)
                })
                .expect("add members");
            let removed = store
                .write(2, |w| {
                    membership.apply_change(w, &change(MembershipChange::Remove, 5), None)
                })
                .expect("remove a member");
            assert_eq!(removed, PeerChange::Removed(5));
            assert!(membership.is_removed(5) && !membership.is_removed(6));
            store.persist().expect("persist");
        }
        let (store, _) = Store::open(&path).expect("reopen store");
        let membership = Membership::load(&store).expect("load");
        assert!(
            membership.is_removed(5),
            "the removal is kept in the backend"
        );
        assert!(membership.get(5).is_none());
        assert!(!membership.is_removed(6) && membership.get(6).is_some());
    }
}
