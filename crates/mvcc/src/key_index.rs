//! The in-memory index from user key to its history of revisions.
//!
//! A key's history is a list of generations: a generation starts with the put that created
//! the key and ends with the delete (tombstone) that removed it; the last generation is the
//! live one, empty while the key is deleted. Values live in the backend, keyed by revision;
//! the index only says which revision holds a key's value at a given store revision.

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroI64;
use std::ops::Bound;

use crate::revision::Revision;

/// The version of a key's first value in a generation.
const FIRST_VERSION: NonZeroI64 = NonZeroI64::new(1).unwrap();

#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<Box<[u8]>, KeyHistory>,
}

/// Where a key's value stands at some store revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRevision {
    pub modified: Revision,
    pub created: i64,
    pub version: i64,
}

/// One key's history. Most keys hold one value that was written once, or compacted down to
/// its latest write: that case is stored inline, without the two allocations of the general
/// form, because the index holds one of these per key and keys are many.
#[derive(Debug)]
enum KeyHistory {
    /// One live generation with one revision. A version is never 0, which gives the enum its
    /// tag for free: the whole history is 32 bytes.
    Single {
        created: i64,
        version: NonZeroI64,
        modified: Revision,
    },
    /// etcd's general form, boxed to keep the common case small. Never empty; only the last
    /// generation may be empty (the key is deleted).
    #[allow(
        clippy::box_collection,
        reason = "a bare Vec is 24 bytes and would not fit beside Single's niche: 40 bytes a key instead of 32"
    )]
    Generations(Box<Vec<Generation>>),
}

#[derive(Debug, Default)]
struct Generation {
    created: i64,
    /// Number of puts (and the final tombstone) this generation has seen, including compacted ones.
    version: i64,
    revs: Vec<Revision>,
}

impl Generation {
    /// Index of the newest revision at or before `at`.
    fn newest_at(&self, at: i64) -> Option<usize> {
        self.revs.iter().rposition(|r| r.main <= at)
    }
}

/// A key range as the etcd API spells it: an empty end is the single key, `\0` is "every key from
/// `key` on", anything else is the half-open range `[key, end)`.
pub fn key_range<'a>(key: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    match end {
        [] => (Bound::Included(key), Bound::Included(key)),
        [0] => (Bound::Included(key), Bound::Unbounded),
        _ => (Bound::Included(key), Bound::Excluded(end)),
    }
}

/// True when the range is well formed: BTreeMap panics on a range whose start is after its end.
fn is_nonempty(range: &(Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match (range.0, range.1) {
        (Bound::Included(s), Bound::Excluded(e)) => s < e,
        _ => true,
    }
}

fn generation_at(generations: &[Generation], at: i64) -> Option<&Generation> {
    let last = generations.len() - 1;
    for (i, g) in generations.iter().enumerate().rev() {
        let (Some(first), Some(tomb)) = (g.revs.first(), g.revs.last()) else {
            continue;
        };
        if i != last && tomb.main <= at {
            return None;
        }
        if first.main <= at {
            return Some(g);
        }
    }
    None
}

/// Drops history no reader at `at` or later can see; records in `keep` the revisions at or
/// before `at` that must stay in the backend.
fn compact_generations(generations: &mut Vec<Generation>, at: i64, keep: &mut HashSet<Revision>) {
    let last = generations.len() - 1;
    let mut gen_idx = 0;
    while gen_idx < last {
        let tomb = generations[gen_idx]
            .revs
            .last()
            .expect("only the last generation is empty");
        if tomb.main > at {
            break;
        }
        gen_idx += 1;
    }
    let g = &mut generations[gen_idx];
    if let Some(n) = g.newest_at(at) {
        keep.insert(g.revs[n]);
        g.revs.drain(..n);
        if g.revs.len() == 1 && gen_idx != last {
            // Only the tombstone is left: the key was deleted at or before `at`.
            keep.remove(&g.revs[0]);
            gen_idx += 1;
        }
    }
    generations.drain(..gen_idx);
}

impl KeyHistory {
    fn at(&self, at: i64) -> Option<KeyRevision> {
        match self {
            KeyHistory::Single {
                created,
                version,
                modified,
            } => (modified.main <= at).then_some(KeyRevision {
                modified: *modified,
                created: *created,
                version: version.get(),
            }),
            KeyHistory::Generations(generations) => {
                let g = generation_at(generations, at)?;
                let n = g.newest_at(at)?;
                Some(KeyRevision {
                    modified: g.revs[n],
                    created: g.created,
                    version: g.version - (g.revs.len() - n - 1) as i64,
                })
            }
        }
    }

    fn is_live(&self) -> bool {
        match self {
            KeyHistory::Single { .. } => true,
            KeyHistory::Generations(generations) => {
                generations.last().is_some_and(|g| !g.revs.is_empty())
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            KeyHistory::Single { .. } => false,
            KeyHistory::Generations(generations) => {
                generations.len() == 1 && generations[0].revs.is_empty()
            }
        }
    }

    /// Runs `change` on the general form, then stores the result inline if it fits.
    fn change<R>(&mut self, change: impl FnOnce(&mut Vec<Generation>) -> R) -> R {
        let mut generations = match std::mem::replace(self, KeyHistory::Generations(Box::default()))
        {
            KeyHistory::Single {
                created,
                version,
                modified,
            } => Box::new(vec![Generation {
                created,
                version: version.get(),
                revs: vec![modified],
            }]),
            KeyHistory::Generations(generations) => generations,
        };
        let result = change(&mut generations);
        *self = match (
            generations.as_slice(),
            generations.first().map(|g| NonZeroI64::new(g.version)),
        ) {
            ([only], Some(Some(version))) if only.revs.len() == 1 => KeyHistory::Single {
                created: only.created,
                version,
                modified: only.revs[0],
            },
            _ => KeyHistory::Generations(generations),
        };
        result
    }
}

impl KeyIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with any history left (live or deleted but not yet compacted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records a put of `key` at `rev`; returns the create revision and version of the new value.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> (i64, i64) {
        let Some(history) = self.keys.get_mut(key) else {
            let single = KeyHistory::Single {
                created: rev.main,
                version: FIRST_VERSION,
                modified: rev,
            };
            self.keys.insert(key.into(), single);
            return (rev.main, 1);
        };
        history.change(|generations| {
            let g = generations.last_mut().expect("a history has a generation");
            debug_assert!(
                g.revs.last().is_none_or(|last| *last < rev),
                "revisions of a key only grow"
            );
            if g.revs.is_empty() {
                g.created = rev.main;
            }
            g.revs.push(rev);
            g.version += 1;
            (g.created, g.version)
        })
    }

    /// Records a delete of a live key at `rev`. Returns false when the key is not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        let Some(history) = self.keys.get_mut(key) else {
            return false;
        };
        if !history.is_live() {
            return false;
        }
        history.change(|generations| {
            let g = generations.last_mut().expect("a live key has a generation");
            g.revs.push(rev);
            g.version += 1;
            generations.push(Generation::default());
        });
        true
    }

    /// Rebuilds a key's entry from a stored value whose earlier history may have been compacted.
    pub fn restore(&mut self, key: &[u8], modified: Revision, created: i64, version: i64) {
        let Some(history) = self.keys.get_mut(key) else {
            let history = match NonZeroI64::new(version) {
                Some(version) => KeyHistory::Single {
                    created,
                    version,
                    modified,
                },
                // A stored value always has a version; keep even a malformed one as it is.
                None => KeyHistory::Generations(Box::new(vec![Generation {
                    created,
                    version,
                    revs: vec![modified],
                }])),
            };
            self.keys.insert(key.into(), history);
            return;
        };
        history.change(|generations| {
            let g = generations.last_mut().expect("a history has a generation");
            if g.revs.is_empty() {
                g.created = created;
                g.version = version - 1;
            }
            g.revs.push(modified);
            g.version += 1;
        });
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyRevision> {
        self.keys.get(key)?.at(at)
    }

    /// Visits, in key order, every key in the range that holds a value at store revision `at`,
    /// until `visit` returns false.
    pub fn visit_range(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        mut visit: impl FnMut(&[u8], KeyRevision) -> bool,
    ) {
        let range = key_range(key, end);
        if !is_nonempty(&range) {
            return;
        }
        for (k, history) in self.keys.range::<[u8], _>(range) {
            if let Some(kr) = history.at(at)
                && !visit(k, kr)
            {
                return;
            }
        }
    }

    /// Keys live now in the range, for deletes.
    pub fn live_keys(&self, key: &[u8], end: &[u8]) -> Vec<Box<[u8]>> {
        let range = key_range(key, end);
        if !is_nonempty(&range) {
            return Vec::new();
        }
        self.keys
            .range::<[u8], _>(range)
            .filter(|(_, h)| h.is_live())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Compacts every key's history at store revision `at`; returns the revisions at or before
    /// `at` that are still visible and so must stay in the backend.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, history| {
            match history {
                // Nothing older to drop; the one value stays visible.
                KeyHistory::Single { modified, .. } if modified.main <= at => {
                    keep.insert(*modified);
                }
                KeyHistory::Single { .. } => {}
                KeyHistory::Generations(_) => {
                    history.change(|g| compact_generations(g, at, &mut keep))
                }
            }
            !history.is_empty()
        });
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn a_key_with_one_value_costs_32_bytes_of_history() {
        assert_eq!(std::mem::size_of::<KeyHistory>(), 32);
    }

    #[test]
    fn put_counts_versions_within_a_generation() {
        let mut index = KeyIndex::new();
        assert_eq!(index.put(b"a", rev(2)), (2, 1));
        assert_eq!(index.put(b"a", rev(3)), (2, 2));
        assert!(index.tombstone(b"a", rev(4)));
        assert_eq!(index.put(b"a", rev(5)), (5, 1));
        let at3 = index.get(b"a", 3).expect("a exists at 3");
        assert_eq!((at3.modified, at3.created, at3.version), (rev(3), 2, 2));
        assert_eq!(index.get(b"a", 1), None);
        assert_eq!(index.get(b"a", 4), None, "deleted at 4");
        assert_eq!(index.get(b"a", 5).map(|k| k.version), Some(1));
    }

    #[test]
    fn tombstone_of_a_missing_or_deleted_key_is_refused() {
        let mut index = KeyIndex::new();
        assert!(!index.tombstone(b"a", rev(2)));
        index.put(b"a", rev(2));
        assert!(index.tombstone(b"a", rev(3)));
        assert!(!index.tombstone(b"a", rev(4)));
    }

    #[test]
    fn visit_range_honours_single_key_range_and_from_key() {
        let mut index = KeyIndex::new();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            index.put(*k, rev(i as i64 + 2));
        }
        let collect = |key: &[u8], end: &[u8], at| {
            let mut out = Vec::new();
            index.visit_range(key, end, at, |k, _| {
                out.push(k.to_vec());
                true
            });
            out
        };
        assert_eq!(collect(b"b", b"", 10), vec![b"b".to_vec()]);
        assert_eq!(collect(b"a", b"c", 10), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(collect(b"b", b"\0", 10), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(collect(b"a", b"\0", 2), vec![b"a".to_vec()], "history view");
        assert!(
            collect(b"c", b"a", 10).is_empty(),
            "inverted range is empty, not a panic"
        );
    }

    #[test]
    fn compaction_keeps_the_newest_visible_revision_and_drops_deleted_keys() {
        let mut index = KeyIndex::new();
        index.put(b"a", rev(2));
        index.put(b"a", rev(3));
        index.put(b"b", rev(4));
        index.tombstone(b"b", rev(5));
        index.put(b"a", rev(6));
        let keep = index.compact(5);
        assert_eq!(keep, HashSet::from([rev(3)]));
        assert_eq!(index.len(), 1, "b was deleted at or before 5: gone");
        assert_eq!(
            index.get(b"a", 5).map(|k| (k.modified, k.version)),
            Some((rev(3), 2))
        );
        assert_eq!(index.get(b"a", 6).map(|k| k.version), Some(3));
    }

    #[test]
    fn compaction_brings_a_rewritten_key_back_to_the_inline_form() {
        let mut index = KeyIndex::new();
        index.put(b"a", rev(2));
        assert!(matches!(index.keys[&b"a"[..]], KeyHistory::Single { .. }));
        index.put(b"a", rev(3));
        assert!(matches!(index.keys[&b"a"[..]], KeyHistory::Generations(_)));
        index.compact(3);
        assert!(matches!(index.keys[&b"a"[..]], KeyHistory::Single { .. }));
        assert_eq!(
            index
                .get(b"a", 3)
                .map(|k| (k.modified, k.created, k.version)),
            Some((rev(3), 2, 2))
        );
        assert_eq!(
            index.put(b"a", rev(4)),
            (2, 3),
            "versions go on counting after compaction"
        );
    }

    #[test]
    fn restore_rebuilds_versions_after_compacted_history() {
        let mut index = KeyIndex::new();
        index.restore(b"a", rev(7), 2, 4);
        assert_eq!(index.put(b"a", rev(8)), (2, 5));
        assert!(index.tombstone(b"a", rev(9)));
        index.restore(b"a", rev(10), 10, 1);
        assert_eq!(
            index.get(b"a", 10).map(|k| (k.created, k.version)),
            Some((10, 1))
        );
    }
}
