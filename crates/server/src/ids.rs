//! Member and cluster IDs derived as etcd derives them, so the same `--initial-cluster` and
//! `--initial-cluster-token` give the same IDs as etcd would; and unique request IDs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

fn first_u64(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-1 digest has 20 bytes"))
}

/// etcd's `NewMember` for an initial member: SHA-1 over the sorted peer URLs joined together,
/// then the cluster token; the first eight bytes big-endian.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(cluster_token.as_bytes());
    first_u64(&bytes)
}

/// etcd's cluster ID: SHA-1 over the sorted member IDs as big-endian u64s.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&bytes)
}

/// Request IDs as etcd's idutil makes them: the member ID's low 16 bits on top keep members
/// apart (every member applies every entry, and must wake only its own callers); the start
/// time in milliseconds below keeps an earlier run's IDs (still in the WAL) apart; a counter
/// fills the low bits.
pub struct RequestIds {
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let prefix = (member_id & 0xffff) << 48;
        let suffix = (millis & ((1 << 40) - 1)) << 8;
        Self {
            next: AtomicU64::new(prefix | suffix),
        }
    }

    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd_for_its_default_single_member() {
        // etcd 3.4 started with its defaults (`--initial-advertise-peer-urls
        // http://localhost:2380`, token `etcd-cluster`) reports member 8e9e05c52164694d and
        // cluster cdf818194e3a8c32.
        let member = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[member])), "cdf818194e3a8c32");
    }

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new(1);
        assert_ne!(ids.next(), ids.next());
    }
}
