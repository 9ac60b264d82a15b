//! A validator for recorded watch streams against the authoritative history of a prefix: etcd's
//! watch guarantees (ordered, unique, reliable, atomic, resumable, bookmarkable) and prev_kv.
//! Every problem is reported with its guarantee in brackets, e.g. `[reliable] ...`.
//! (Included with `#[path = "common/watch_history.rs"] mod watch_history;`, after `mod common;`
//! and `mod watching;`.)
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::common::Kv;
use crate::watching::Ev;

/// One watch response as received.
#[derive(Clone, Debug)]
pub struct Response {
    pub events: Vec<Ev>,
    /// A non-final piece of a revision split across responses.
    pub fragment: bool,
}

/// What a watcher received, in order.
#[derive(Clone, Debug)]
pub enum Item {
    Response(Response),
    /// An event-free progress response with its header revision.
    Progress(i64),
}

/// One watch stream of a watcher: the start revision it asked for and what it received.
/// A watcher that drops its stream and resumes records one segment per stream.
#[derive(Clone, Debug, Default)]
pub struct Segment {
    pub start: i64,
    pub items: Vec<Item>,
}

/// One change of a write: (key, Some(value) for a put or None for a delete, lease of a put).
pub type Effect = (String, Option<String>, i64);

/// A write the client saw acknowledged, with the revision of the response header.
#[derive(Clone, Debug)]
pub enum Acked {
    /// Puts and deletes, in the order their events must have. Empty if it changed nothing
    /// (e.g. deleted no key).
    Write { revision: i64, effects: Vec<Effect> },
    /// A lease revoke: deletes whichever keys were attached (or nothing).
    Revoke { revision: i64 },
}

/// Problems found in one watcher's record.
#[derive(Debug, Default)]
pub struct Report {
    /// Violations of every guarantee but bookmarkable.
    pub errors: Vec<String>,
    /// Progress responses that came before events they claim were delivered.
    pub bookmark_errors: Vec<String>,
}

/// The key's state before each event, derived from the history alone: (revision, key) -> the
/// key-value it had before (None if absent).
fn states_before(history: &[Ev]) -> HashMap<(i64, String), Option<Kv>> {
    let mut state: HashMap<String, Kv> = HashMap::new();
    let mut before = HashMap::new();
    for event in history {
        let key = event.key().to_owned();
        before.insert((event.revision(), key.clone()), state.get(&key).cloned());
        if event.put {
            state.insert(key, event.kv.clone());
        } else {
            state.remove(&key);
        }
    }
    before
}

/// Checks that `history` (all events from revision 1 of an initially empty store) is a
/// consistent sequence: revisions never decrease, a key appears at most once per revision,
/// create revisions and versions chain, deletes only delete existing keys and carry only the
/// key and revision, and every prev_kv is the key's previous state.
pub fn check_history(history: &[Ev]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut state: HashMap<String, Kv> = HashMap::new();
    let mut last = 0;
    let mut at_revision = HashSet::new();
    for event in history {
        let (key, revision) = (event.key().to_owned(), event.revision());
        if revision < last {
            errors.push(format!("[history] {key}@{revision} after revision {last}"));
        }
        if revision != last {
            at_revision.clear();
        }
        last = revision;
        if !at_revision.insert(key.clone()) {
            errors.push(format!("[history] {key} twice at revision {revision}"));
        }
        let before = state.get(&key).cloned();
        if event.prev != before {
            errors.push(format!(
                "[prev_kv] {key}@{revision}: prev_kv {:?}, but the history says {before:?}",
                event.prev
            ));
        }
        if event.put {
            let (create, version) = match &before {
                None => (revision, 1),
                Some(kv) => (kv.create_revision, kv.version + 1),
            };
            if (event.kv.create_revision, event.kv.version) != (create, version) {
                errors.push(format!(
                    "[history] {key}@{revision}: create {} version {}, expected {create} {version}",
                    event.kv.create_revision, event.kv.version
                ));
            }
            state.insert(key, event.kv.clone());
        } else {
            if before.is_none() {
                errors.push(format!("[history] {key}@{revision}: deletes an absent key"));
            }
            if event.kv != Kv::new(&key, "", 0, revision, 0) {
                errors.push(format!(
                    "[history] {key}@{revision}: a delete event's kv is {:?}",
                    event.kv
                ));
            }
            state.remove(&key);
        }
    }
    errors
}

/// Checks the history against the writes the clients saw acknowledged: each acknowledged
/// write's events are at its revision, exactly, in order; no two writes share a revision; and
/// every revision in the history belongs to an acknowledged write (a revoke's only deletes).
pub fn check_acknowledged(history: &[Ev], acked: &[Acked]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut by_revision: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
    for event in history {
        by_revision.entry(event.revision()).or_default().push(event);
    }
    let mut writes: HashMap<i64, &Vec<Effect>> = HashMap::new();
    let mut revokes = BTreeSet::new();
    for ack in acked {
        match ack {
            Acked::Write { revision, effects } if !effects.is_empty() => {
                if writes.insert(*revision, effects).is_some() {
                    errors.push(format!("[history] two writes acknowledged at {revision}"));
                }
                let events: Vec<Effect> = by_revision
                    .get(revision)
                    .map(|events| {
                        events
                            .iter()
                            .map(|e| {
                                let value = e.put.then(|| e.kv.value.clone());
                                (e.key().to_owned(), value, e.kv.lease)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if &events != effects {
                    errors.push(format!(
                        "[history] revision {revision}: acknowledged {effects:?}, history has \
                         {events:?}"
                    ));
                }
            }
            Acked::Write { .. } => {}
            Acked::Revoke { revision } => {
                revokes.insert(*revision);
            }
        }
    }
    for (revision, events) in &by_revision {
        if writes.contains_key(revision) {
            continue;
        }
        if !revokes.contains(revision) {
            errors.push(format!(
                "[history] revision {revision} was never acknowledged: {events:?}"
            ));
        } else if events.iter().any(|e| e.put) {
            errors.push(format!(
                "[history] revoke at {revision} put keys: {events:?}"
            ));
        }
    }
    errors
}

/// Checks one watcher's segments against `history` (complete, from revision 1), for the keys
/// starting with `prefix`, up to revision `end`, which the last segment must have reached.
pub fn check_watcher(history: &[Ev], prefix: &str, segments: &[Segment], end: i64) -> Report {
    let mut report = Report::default();
    let errors = &mut report.errors;
    let before = states_before(history);
    let watched: Vec<&Ev> = history
        .iter()
        .filter(|e| e.key().starts_with(prefix) && e.revision() <= end)
        .collect();
    let mut by_revision: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
    for event in &watched {
        by_revision.entry(event.revision()).or_default().push(event);
    }
    let Some(first) = segments.first() else {
        errors.push("[reliable] no segments".to_owned());
        return report;
    };

    let mut delivered: Vec<(i64, String)> = Vec::new();
    let mut seen: HashSet<(i64, String)> = HashSet::new();
    let mut last = 0;
    for (index, segment) in segments.iter().enumerate() {
        let mut pieces: Vec<Ev> = Vec::new();
        let mut segment_first = true;
        for item in &segment.items {
            let response = match item {
                Item::Progress(revision) => {
                    if *revision < last {
                        report.bookmark_errors.push(format!(
                            "[bookmarkable] segment {index}: progress at {revision} after an \
                             event at {last}"
                        ));
                    }
                    let undelivered = (segment.start <= *revision)
                        .then(|| {
                            by_revision
                                .range(segment.start..=*revision)
                                .find(|(r, _)| **r > last)
                        })
                        .flatten();
                    if let Some((missing, _)) = undelivered {
                        report.bookmark_errors.push(format!(
                            "[bookmarkable] segment {index}: progress at {revision} before \
                             revision {missing} was delivered"
                        ));
                    }
                    continue;
                }
                Item::Response(response) => response,
            };
            if response.events.is_empty() {
                errors.push(format!("[atomic] segment {index}: an event-free response"));
                continue;
            }
            pieces.extend(response.events.iter().cloned());
            if response.fragment {
                continue;
            }
            let events = std::mem::take(&mut pieces);
            let mut groups: Vec<&[Ev]> = Vec::new();
            let mut rest = &events[..];
            while let Some(head) = rest.first() {
                let n = rest
                    .iter()
                    .take_while(|e| e.revision() == head.revision())
                    .count();
                groups.push(&rest[..n]);
                rest = &rest[n..];
            }
            for group in groups {
                let revision = group[0].revision();
                if segment_first && index > 0 {
                    let expected = by_revision.range(segment.start..).next().map(|(r, _)| *r);
                    if expected != Some(revision) {
                        errors.push(format!(
                            "[resumable] segment {index} resumed at {} began at revision \
                             {revision}, the history continues at {expected:?}",
                            segment.start
                        ));
                    }
                }
                segment_first = false;
                if revision < segment.start {
                    errors.push(format!(
                        "[ordered] segment {index}: revision {revision} before its start {}",
                        segment.start
                    ));
                }
                if revision <= last {
                    let again = group
                        .iter()
                        .any(|e| seen.contains(&(revision, e.key().to_owned())));
                    errors.push(if again {
                        format!("[unique] revision {revision} delivered again (after {last})")
                    } else {
                        format!("[ordered] revision {revision} delivered after revision {last}")
                    });
                }
                let expected: Vec<(bool, &Kv)> = by_revision
                    .get(&revision)
                    .map(|events| events.iter().map(|e| (e.put, &e.kv)).collect())
                    .unwrap_or_default();
                let got: Vec<(bool, &Kv)> = group.iter().map(|e| (e.put, &e.kv)).collect();
                if got != expected {
                    errors.push(format!(
                        "[atomic] revision {revision}: one response carried {got:?}, the \
                         revision is {expected:?}"
                    ));
                }
                for event in group {
                    let key = event.key().to_owned();
                    if let Some(state) = before.get(&(revision, key.clone()))
                        && &event.prev != state
                    {
                        errors.push(format!(
                            "[prev_kv] {key}@{revision}: prev_kv {:?}, previous value {state:?}",
                            event.prev
                        ));
                    }
                    seen.insert((revision, key.clone()));
                    delivered.push((revision, key));
                }
                last = last.max(revision);
            }
        }
        if !pieces.is_empty() && index + 1 == segments.len() {
            errors.push(format!(
                "[atomic] the last segment ended inside a fragmented revision: {pieces:?}"
            ));
        }
    }

    // Reliable: between its start and the end, the watcher got every event, each once.
    let expected: Vec<(i64, String)> = watched
        .iter()
        .filter(|e| e.revision() >= first.start)
        .map(|e| (e.revision(), e.key().to_owned()))
        .collect();
    if delivered != expected {
        let at = delivered
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(delivered.len().min(expected.len()));
        errors.push(format!(
            "[reliable] delivered {} events, the history has {} from revision {}; first \
             difference at #{at}: delivered {:?}, history {:?}",
            delivered.len(),
            expected.len(),
            first.start,
            delivered.get(at),
            expected.get(at)
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rev 2: put a=1; rev 3: put b=1; rev 4: txn put a=2, delete b; rev 5: put c=1.
    fn history() -> Vec<Ev> {
        let a1 = Kv::new("a", "1", 2, 2, 1);
        let b1 = Kv::new("b", "1", 3, 3, 1);
        vec![
            Ev::put("a", "1", 2, 2, 1),
            Ev::put("b", "1", 3, 3, 1),
            Ev::put("a", "2", 2, 4, 2).with_prev(a1),
            Ev::delete("b", 4).with_prev(b1),
            Ev::put("c", "1", 5, 5, 1),
        ]
    }

    fn response(events: &[Ev]) -> Item {
        Item::Response(Response {
            events: events.to_vec(),
            fragment: false,
        })
    }

    fn fragment(events: &[Ev]) -> Item {
        Item::Response(Response {
            events: events.to_vec(),
            fragment: true,
        })
    }

    fn segment(start: i64, items: Vec<Item>) -> Segment {
        Segment { start, items }
    }

    /// The guarantee tags of the errors (bookmark errors included).
    fn tags(report: &Report) -> BTreeSet<String> {
        report
            .errors
            .iter()
            .chain(&report.bookmark_errors)
            .map(|e| e[..e.find(']').expect("a tag") + 1].to_owned())
            .collect()
    }

    fn check(segments: &[Segment]) -> Report {
        let h = history();
        assert_eq!(check_history(&h), Vec::<String>::new());
        check_watcher(&h, "", segments, 5)
    }

    #[track_caller]
    fn assert_caught(segments: &[Segment], tag: &str) {
        let report = check(segments);
        assert!(
            tags(&report).contains(tag),
            "expected a {tag} violation, got {report:#?}"
        );
    }

    #[test]
    fn a_faithful_stream_passes_including_batches_fragments_resumes_and_bookmarks() {
        let h = history();
        let report = check(&[
            segment(
                2,
                vec![
                    response(&h[0..2]), // two revisions replayed in one response
                    Item::Progress(3),
                    fragment(&h[2..3]),
                    response(&h[3..4]),
                ],
            ),
            segment(5, vec![Item::Progress(4), response(&h[4..5])]),
        ]);
        assert!(
            report.errors.is_empty() && report.bookmark_errors.is_empty(),
            "{report:#?}"
        );
        // Starting later only expects the later events.
        let report = check(&[segment(4, vec![response(&h[2..4]), response(&h[4..5])])]);
        assert!(report.errors.is_empty(), "{report:#?}");
    }

    #[test]
    fn a_gap_is_caught() {
        let h = history();
        assert_caught(
            &[segment(2, vec![response(&h[0..1]), response(&h[2..5])])],
            "[reliable]",
        );
        // Missing the end.
        assert_caught(&[segment(2, vec![response(&h[0..4])])], "[reliable]");
        // A resume that skips a revision.
        assert_caught(
            &[
                segment(2, vec![response(&h[0..1])]),
                segment(4, vec![response(&h[2..5])]),
            ],
            "[reliable]",
        );
    }

    #[test]
    fn a_duplicate_is_caught_also_across_a_resume() {
        let h = history();
        assert_caught(
            &[segment(
                2,
                vec![response(&h[0..2]), response(&h[1..2]), response(&h[2..5])],
            )],
            "[unique]",
        );
        assert_caught(
            &[
                segment(2, vec![response(&h[0..2])]),
                segment(3, vec![response(&h[1..5])]),
            ],
            "[unique]",
        );
    }

    #[test]
    fn a_reorder_is_caught() {
        let h = history();
        assert_caught(
            &[segment(
                2,
                vec![response(&h[1..2]), response(&h[0..1]), response(&h[2..5])],
            )],
            "[ordered]",
        );
        // Within one revision, events out of order.
        let swapped = [h[3].clone(), h[2].clone()];
        assert_caught(
            &[segment(
                2,
                vec![response(&h[0..2]), response(&swapped), response(&h[4..5])],
            )],
            "[atomic]",
        );
    }

    #[test]
    fn a_revision_split_across_responses_is_caught_unless_fragmented() {
        let h = history();
        assert_caught(
            &[segment(
                2,
                vec![
                    response(&h[0..2]),
                    response(&h[2..3]),
                    response(&h[3..4]),
                    response(&h[4..5]),
                ],
            )],
            "[atomic]",
        );
        // The last segment may not end inside a fragmented revision.
        assert_caught(
            &[segment(2, vec![response(&h[0..2]), fragment(&h[2..3])])],
            "[atomic]",
        );
    }

    #[test]
    fn a_resume_that_does_not_continue_exactly_is_caught() {
        let h = history();
        assert_caught(
            &[
                segment(2, vec![response(&h[0..1])]),
                segment(3, vec![response(&h[2..5])]),
            ],
            "[resumable]",
        );
    }

    #[test]
    fn a_wrong_prev_kv_is_caught() {
        let h = history();
        let mut wrong = h[2..4].to_vec();
        wrong[0].prev = None;
        assert_caught(
            &[segment(
                2,
                vec![response(&h[0..2]), response(&wrong), response(&h[4..5])],
            )],
            "[prev_kv]",
        );
        // And in the history itself.
        let mut history = history();
        history[3].prev = Some(Kv::new("b", "0", 3, 3, 1));
        assert!(check_history(&history)[0].starts_with("[prev_kv]"));
    }

    #[test]
    fn an_early_bookmark_is_caught() {
        let h = history();
        let report = check(&[segment(
            2,
            vec![response(&h[0..2]), Item::Progress(4), response(&h[2..5])],
        )]);
        assert!(report.errors.is_empty(), "{report:#?}");
        assert_eq!(report.bookmark_errors.len(), 1, "{report:#?}");
        // A progress revision below an event already delivered.
        assert_caught(
            &[segment(
                2,
                vec![response(&h[0..4]), Item::Progress(3), response(&h[4..5])],
            )],
            "[bookmarkable]",
        );
    }

    #[test]
    fn a_history_that_disagrees_with_the_acknowledged_writes_is_caught() {
        let h = history();
        let write = |revision, effects: &[(&str, Option<&str>)]| Acked::Write {
            revision,
            effects: effects
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_owned), 0))
                .collect(),
        };
        let good = vec![
            write(2, &[("a", Some("1"))]),
            write(3, &[("b", Some("1"))]),
            write(4, &[("a", Some("2")), ("b", None)]),
            write(5, &[("c", Some("1"))]),
            write(5, &[]), // a delete of nothing, answered at the current revision
        ];
        assert_eq!(check_acknowledged(&h, &good), Vec::<String>::new());
        let mut lost = good.clone();
        lost[3] = write(5, &[("c", Some("2"))]);
        assert_eq!(check_acknowledged(&h, &lost).len(), 1);
        let unacknowledged = &good[..3];
        assert_eq!(check_acknowledged(&h, unacknowledged).len(), 1);
        let as_revoke = [&good[..3], &[Acked::Revoke { revision: 5 }]].concat();
        assert_eq!(
            check_acknowledged(&h, &as_revoke).len(),
            1,
            "a revoke that puts"
        );
    }
}
