//! The watch hub: every watcher of every stream, fed from the store after each applied batch.
//!
//! A watcher is *synced* when every event up to the hub's revision has been queued for it:
//! new events go straight to it. A watcher is *unsynced* when it starts in the past or its
//! client fell behind: the syncer replays its history from the backend in bounded batches
//! until it catches up. A stream's queue is bounded; a watcher whose queue is full is
//! demoted to unsynced instead of buffering without limit, so a slow consumer never stalls
//! writes or other watchers and its memory stays bounded (etcd's synced/unsynced design).
//!
//! Everything that queues a response does it under the hub lock, so a stream sees a
//! watcher's responses in revision order and a progress response only after every event up
//! to its revision.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_mvcc::{Event, EventType, RangeOptions, ReadView, Store, key_range};
use cairn_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use prost::Message;
use tokio::sync::mpsc;

/// Revisions replayed for unsynced watchers in one round, to bound the time the lock is held.
const SYNC_REVISIONS_MAX: i64 = 1000;

/// A stream's bounded queue of responses.
pub type WatchSender = mpsc::Sender<WatchResponse>;

/// What a client asked to watch.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// First revision to deliver.
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub fragment: bool,
    pub progress_notify: bool,
}

type WatcherId = (u64, i64);

struct Watcher {
    spec: WatchSpec,
    /// The first revision not yet queued for this watcher.
    next_revision: i64,
    synced: bool,
    sender: WatchSender,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        if kv.mod_revision < self.next_revision {
            return false;
        }
        let is_put = event.r#type == EventType::Put as i32;
        if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
            return false;
        }
        let range = key_range(&self.spec.key, &self.spec.range_end);
        std::ops::RangeBounds::<[u8]>::contains(&range, kv.key.as_slice())
    }
}

#[derive(Default)]
struct HubState {
    /// Every event up to this revision is queued for every synced watcher.
    revision: i64,
    watchers: HashMap<WatcherId, Watcher>,
    /// Synced single-key watchers by key, so an event finds its watchers without a scan.
    synced_by_key: HashMap<Vec<u8>, HashSet<WatcherId>>,
    /// Synced watchers of a range, prefix or from-key.
    synced_ranges: HashSet<WatcherId>,
    unsynced: HashSet<WatcherId>,
    /// Streams that asked for progress while one of their watchers was catching up.
    progress_pending: HashMap<u64, WatchSender>,
    next_stream: u64,
}

impl HubState {
    fn index_synced(&mut self, id: WatcherId) {
        let w = self
            .watchers
            .get_mut(&id)
            .expect("indexing an existing watcher");
        w.synced = true;
        self.unsynced.remove(&id);
        if w.spec.range_end.is_empty() {
            self.synced_by_key
                .entry(w.spec.key.clone())
                .or_default()
                .insert(id);
        } else {
            self.synced_ranges.insert(id);
        }
    }

    fn unindex_synced(&mut self, id: WatcherId) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        w.synced = false;
        if w.spec.range_end.is_empty() {
            if let Some(set) = self.synced_by_key.get_mut(&w.spec.key) {
                set.remove(&id);
                if set.is_empty() {
                    self.synced_by_key.remove(&w.spec.key);
                }
            }
        } else {
            self.synced_ranges.remove(&id);
        }
    }

    fn demote(&mut self, id: WatcherId, next_revision: i64) {
        self.unindex_synced(id);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.next_revision = next_revision;
        }
        self.unsynced.insert(id);
    }

    fn remove(&mut self, id: WatcherId) -> bool {
        self.unindex_synced(id);
        self.unsynced.remove(&id);
        self.watchers.remove(&id).is_some()
    }

    fn stream_synced(&self, stream: u64) -> bool {
        !self.unsynced.iter().any(|(s, _)| *s == stream)
    }
}

pub struct WatchHub {
    state: Mutex<HubState>,
    store: Arc<Store>,
    header: Box<dyn Fn(i64) -> ResponseHeader + Send + Sync>,
    /// Above this many bytes a response is split for watchers that accept fragments.
    fragment_bytes: usize,
    progress_interval: Duration,
    last_progress: Mutex<Instant>,
}

/// One read of new or replayed events, shared by every watcher it goes to: each event's
/// previous value is looked up at most once, however many watchers asked for `prev_kv`.
struct EventBatch<'a, 'v> {
    view: &'a ReadView<'v>,
    events: Vec<Event>,
    with_prev: OnceCell<Vec<Event>>,
}

impl<'a, 'v> EventBatch<'a, 'v> {
    fn new(view: &'a ReadView<'v>, events: Vec<Event>) -> Self {
        Self {
            view,
            events,
            with_prev: OnceCell::new(),
        }
    }

    /// The indices of the events `w` wants.
    fn wanted_by(&self, w: &Watcher) -> Vec<usize> {
        (0..self.events.len())
            .filter(|&i| w.wants(&self.events[i]))
            .collect()
    }

    /// Copies of the chosen events, with their previous values if `prev_kv`.
    fn select(&self, indices: &[usize], prev_kv: bool) -> Vec<Event> {
        let source = if prev_kv {
            self.with_prev.get_or_init(|| {
                self.events
                    .iter()
                    .cloned()
                    .map(|e| with_prev_kv(self.view, e))
                    .collect()
            })
        } else {
            &self.events
        };
        indices.iter().map(|&i| source[i].clone()).collect()
    }
}

fn with_prev_kv(view: &ReadView<'_>, mut event: Event) -> Event {
    if let Some(kv) = &event.kv {
        let opts = RangeOptions {
            revision: kv.mod_revision - 1,
            ..RangeOptions::default()
        };
        // A previous value compacted away is simply not reported, as etcd does.
        event.prev_kv = view
            .range(&kv.key, b"", &opts)
            .ok()
            .and_then(|mut r| r.kvs.pop());
    }
    event
}

impl WatchHub {
    pub fn new(
        store: Arc<Store>,
        header: Box<dyn Fn(i64) -> ResponseHeader + Send + Sync>,
        fragment_bytes: usize,
        progress_interval: Duration,
    ) -> Self {
        let revision = store.current_revision();
        Self {
            state: Mutex::new(HubState {
                revision,
                ..HubState::default()
            }),
            store,
            header,
            fragment_bytes,
            progress_interval,
            last_progress: Mutex::new(Instant::now()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .expect("the watch hub lock is never held across a panic")
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        (self.header)(revision)
    }

    /// The revision up to which every synced watcher has its events queued.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    pub fn open_stream(&self) -> u64 {
        let mut st = self.lock();
        st.next_stream += 1;
        st.next_stream
    }

    pub fn close_stream(&self, stream: u64) {
        let mut st = self.lock();
        let ids: Vec<WatcherId> = st
            .watchers
            .keys()
            .filter(|(s, _)| *s == stream)
            .copied()
            .collect();
        for id in ids {
            st.remove(id);
        }
        st.progress_pending.remove(&stream);
    }

    /// Registers a watcher. Its `created` response must already be queued on `sender`, so it
    /// precedes every event.
    pub fn add(&self, stream: u64, watch_id: i64, spec: WatchSpec, sender: WatchSender) {
        let mut st = self.lock();
        let id = (stream, watch_id);
        let next_revision = spec.start_revision;
        let behind = next_revision <= st.revision;
        st.watchers.insert(
            id,
            Watcher {
                spec,
                next_revision,
                synced: false,
                sender,
            },
        );
        if behind {
            st.unsynced.insert(id);
        } else {
            st.index_synced(id);
        }
    }

    pub fn cancel(&self, stream: u64, watch_id: i64) -> bool {
        self.lock().remove((stream, watch_id))
    }

    /// Answers a progress request once every watcher of the stream is synced.
    pub fn request_progress(&self, stream: u64, sender: WatchSender) {
        let mut st = self.lock();
        if st.stream_synced(stream) {
            let _ = sender.try_send(self.progress_response(st.revision, -1));
        } else {
            st.progress_pending.insert(stream, sender);
        }
    }

    fn progress_response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.header(revision)),
            watch_id,
            ..WatchResponse::default()
        }
    }

    /// Queues `events` for one watcher as one response (or fragments of one), atomically: all
    /// or nothing. False when the stream's queue has no room.
    fn queue(&self, w: &Watcher, watch_id: i64, revision: i64, events: Vec<Event>) -> bool {
        let responses = self.responses(w, watch_id, revision, events);
        match w.sender.try_reserve_many(responses.len()) {
            Ok(permits) => {
                for (permit, response) in permits.zip(responses) {
                    permit.send(response);
                }
                true
            }
            Err(_) => false,
        }
    }

    fn responses(
        &self,
        w: &Watcher,
        watch_id: i64,
        revision: i64,
        events: Vec<Event>,
    ) -> Vec<WatchResponse> {
        let whole = WatchResponse {
            header: Some(self.header(revision)),
            watch_id,
            events,
            ..WatchResponse::default()
        };
        if !w.spec.fragment || whole.encoded_len() <= self.fragment_bytes {
            return vec![whole];
        }
        let mut fragments: Vec<WatchResponse> = Vec::new();
        let mut current = WatchResponse {
            header: whole.header,
            watch_id,
            ..WatchResponse::default()
        };
        for event in whole.events {
            let size = event.encoded_len();
            if !current.events.is_empty() && current.encoded_len() + size > self.fragment_bytes {
                let next = WatchResponse {
                    header: whole.header,
                    watch_id,
                    ..WatchResponse::default()
                };
                let mut done = std::mem::replace(&mut current, next);
                done.fragment = true;
                fragments.push(done);
            }
            current.events.push(event);
        }
        fragments.push(current);
        fragments
    }

    /// Hands the events of everything applied up to `revision` to the synced watchers. Called
    /// by the apply loop after each batch is committed.
    pub fn notify(&self, revision: i64) {
        let mut st = self.lock();
        if revision <= st.revision {
            return;
        }
        if st.synced_by_key.is_empty() && st.synced_ranges.is_empty() {
            st.revision = revision;
            self.answer_pending_progress(&mut st);
            return;
        }
        let view = match self.store.read_view() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "watch: cannot read the new events; watchers will catch up");
                self.demote_all_synced(&mut st);
                st.revision = revision;
                return;
            }
        };
        let from = st.revision + 1;
        let events = match view.changes(from, revision, i64::MAX) {
            Ok((events, _)) => events,
            Err(e) => {
                tracing::error!(error = %e, "watch: cannot read the new events; watchers will catch up");
                self.demote_all_synced(&mut st);
                st.revision = revision;
                return;
            }
        };
        let mut per_watcher: HashMap<WatcherId, Vec<usize>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let Some(kv) = &event.kv else { continue };
            let single = st.synced_by_key.get(&kv.key).into_iter().flatten();
            for id in single.chain(st.synced_ranges.iter()) {
                if st.watchers[id].wants(event) {
                    per_watcher.entry(*id).or_default().push(i);
                }
            }
        }
        let batch = EventBatch::new(&view, events);
        for (id, indices) in per_watcher {
            let w = &st.watchers[&id];
            let events = batch.select(&indices, w.spec.prev_kv);
            let first = events[0].kv.as_ref().map_or(from, |kv| kv.mod_revision);
            if !self.queue(w, id.1, revision, events) {
                st.demote(id, first);
            }
        }
        st.revision = revision;
        self.answer_pending_progress(&mut st);
    }

    fn demote_all_synced(&self, st: &mut HubState) {
        let from = st.revision + 1;
        let synced: Vec<WatcherId> = st
            .watchers
            .iter()
            .filter(|(_, w)| w.synced)
            .map(|(id, _)| *id)
            .collect();
        for id in synced {
            let next = st.watchers[&id].next_revision.max(from);
            st.demote(id, next);
        }
    }

    fn answer_pending_progress(&self, st: &mut HubState) {
        if st.progress_pending.is_empty() {
            return;
        }
        let ready: Vec<u64> = st
            .progress_pending
            .keys()
            .filter(|s| st.stream_synced(**s))
            .copied()
            .collect();
        for stream in ready {
            if let Some(sender) = st.progress_pending.remove(&stream) {
                let _ = sender.try_send(self.progress_response(st.revision, -1));
            }
        }
    }

    /// One round of catching up unsynced watchers from the backend, and periodic progress
    /// notifications. Called by the syncer thread.
    pub fn sync_round(&self) {
        let mut st = self.lock();
        self.progress_notify(&st);
        if st.unsynced.is_empty() {
            return;
        }
        let view = match self.store.read_view() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "watch: cannot read history");
                return;
            }
        };
        let compacted = view.compacted_revision();
        let ids: Vec<WatcherId> = st.unsynced.iter().copied().collect();
        // Watchers whose history is gone are cancelled, telling the client where it resumes.
        for id in &ids {
            let w = &st.watchers[id];
            if w.next_revision < compacted {
                let cancel = WatchResponse {
                    header: Some(self.header(st.revision)),
                    watch_id: id.1,
                    canceled: true,
                    compact_revision: compacted,
                    ..WatchResponse::default()
                };
                if w.sender.try_send(cancel).is_ok() {
                    st.remove(*id);
                }
            }
        }
        let ids: Vec<WatcherId> = st.unsynced.iter().copied().collect();
        let Some(from) = ids.iter().map(|id| st.watchers[id].next_revision).min() else {
            return;
        };
        let (events, last) = match view.changes(from, st.revision, SYNC_REVISIONS_MAX) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "watch: cannot replay history this round");
                return;
            }
        };
        let batch = EventBatch::new(&view, events);
        for id in ids {
            let w = &st.watchers[&id];
            let mine = batch.wanted_by(w);
            if !mine.is_empty() {
                let mine = batch.select(&mine, w.spec.prev_kv);
                if !self.queue(w, id.1, last, mine) {
                    continue; // still no room: try again next round
                }
            }
            let w = st.watchers.get_mut(&id).expect("watcher exists");
            w.next_revision = w.next_revision.max(last + 1);
            if w.next_revision > st.revision {
                st.index_synced(id);
            }
        }
        self.answer_pending_progress(&mut st);
    }

    fn progress_notify(&self, st: &HubState) {
        let mut last = self
            .last_progress
            .lock()
            .expect("never held across a panic");
        if last.elapsed() < self.progress_interval {
            return;
        }
        *last = Instant::now();
        for ((_, watch_id), w) in st
            .watchers
            .iter()
            .filter(|(_, w)| w.synced && w.spec.progress_notify)
        {
            let _ = w
                .sender
                .try_send(self.progress_response(st.revision, *watch_id));
        }
    }
}
