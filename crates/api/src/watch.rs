//! Service `etcdserverpb.Watch`: one bidirectional stream carries many watchers. Requests
//! are handled in order; every response goes through one bounded queue per stream, owned by
//! the server's watch hub once the watcher is registered.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_server::{Server, WatchSender, WatchSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Responses queued per stream before its watchers fall back to catching up from history.
const STREAM_QUEUE: usize = 1024;

/// As etcd: a stream that requires a leader is ended with `no leader` once the member has had
/// none at this many checks in a row, one per election timeout, so that its client moves to a
/// member that has one. New requests are refused at once; an open stream is given longer,
/// since reopening it costs more.
const NO_LEADER_CHECKS_MAX: u32 = 3;

/// etcd's message for a client-chosen watch ID already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's message for a range whose end is not after its start.
const EMPTY_WATCHER_RANGE: &str = "mvcc: watcher range is empty";

pub struct WatchService {
    pub server: Arc<Server>,
}

/// The watchers of one stream: etcd numbers automatic IDs from 0 per stream and never hands
/// one out twice, so a late event for a cancelled watcher cannot be mistaken for a new one.
struct StreamWatchers {
    stream: u64,
    ids: HashSet<i64>,
    next_id: i64,
}

impl StreamWatchers {
    fn allocate(&mut self, requested: i64) -> Option<i64> {
        if requested != 0 {
            return self.ids.insert(requested).then_some(requested);
        }
        while self.ids.contains(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.ids.insert(id);
        self.next_id += 1;
        Some(id)
    }
}

async fn create(
    server: &Server,
    watchers: &mut StreamWatchers,
    mut create: WatchCreateRequest,
    tx: &WatchSender,
) {
    let hub = server.watch_hub();
    let revision = hub.revision();
    let refusal = |reason: &str| WatchResponse {
        header: Some(hub.header(revision)),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..WatchResponse::default()
    };
    if create.key.is_empty() {
        // As etcd: the empty key is the smallest key, "\0".
        create.key = vec![0];
    }
    let from_key = create.range_end == [0];
    if !create.range_end.is_empty() && !from_key && create.key >= create.range_end {
        let _ = tx.send(refusal(EMPTY_WATCHER_RANGE)).await;
        return;
    }
    let Some(watch_id) = watchers.allocate(create.watch_id) else {
        let _ = tx.send(refusal(DUPLICATE_WATCH_ID)).await;
        return;
    };
    let filters: Vec<FilterType> = create
        .filters
        .iter()
        .filter_map(|f| FilterType::try_from(*f).ok())
        .collect();
    let spec = WatchSpec {
        start_revision: if create.start_revision > 0 {
            create.start_revision
        } else {
            revision + 1
        },
        key: create.key,
        range_end: create.range_end,
        no_put: filters.contains(&FilterType::Noput),
        no_delete: filters.contains(&FilterType::Nodelete),
        prev_kv: create.prev_kv,
        fragment: create.fragment,
        progress_notify: create.progress_notify,
    };
    let created = WatchResponse {
        header: Some(hub.header(revision)),
        watch_id,
        created: true,
        ..WatchResponse::default()
    };
    // `created` is queued before the watcher exists, so it precedes every event.
    if tx.send(created).await.is_ok() {
        hub.add(watchers.stream, watch_id, spec, tx.clone());
    }
}

async fn serve_stream(server: Arc<Server>, mut inbound: Streaming<WatchRequest>, tx: WatchSender) {
    let hub = server.watch_hub();
    let mut watchers = StreamWatchers {
        stream: hub.open_stream(),
        ids: HashSet::new(),
        next_id: 0,
    };
    loop {
        let request = tokio::select! {
            request = inbound.message() => request,
            // The response stream is gone (ended for want of a leader, or dropped).
            () = tx.closed() => break,
        };
        let Ok(Some(request)) = request else { break };
        match request.request_union {
            Some(RequestUnion::CreateRequest(c)) => create(&server, &mut watchers, c, &tx).await,
            Some(RequestUnion::CancelRequest(c)) if hub.cancel(watchers.stream, c.watch_id) => {
                watchers.ids.remove(&c.watch_id);
                let canceled = WatchResponse {
                    header: Some(hub.header(hub.revision())),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..WatchResponse::default()
                };
                let _ = tx.send(canceled).await;
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                hub.request_progress(watchers.stream, tx.clone())
            }
            Some(RequestUnion::CancelRequest(_)) | None => {}
        }
    }
    // A client that stops sending (a half-close) still gets its events, as from etcd: the
    // watchers stay until the response stream is gone.
    tx.closed().await;
    hub.close_stream(watchers.stream);
}

/// Sends `no leader` once the member has had no leader for `NO_LEADER_CHECKS_MAX` checks in a
/// row; returns early when the stream is gone.
async fn end_without_leader(server: Arc<Server>, no_leader: mpsc::Sender<Status>) {
    let mut checks_without_leader = 0;
    while checks_without_leader < NO_LEADER_CHECKS_MAX {
        tokio::select! {
            () = no_leader.closed() => return,
            () = tokio::time::sleep(server.election_timeout()) => {}
        }
        checks_without_leader = if server.has_leader() {
            0
        } else {
            checks_without_leader + 1
        };
    }
    let _ = no_leader
        .send(crate::to_status(cairn_server::ServerError::NoLeader))
        .await;
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let requires_leader = crate::requires_leader(request.metadata());
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let responses = ReceiverStream::new(rx).map(Ok);
        if !requires_leader {
            tokio::spawn(serve_stream(self.server.clone(), request.into_inner(), tx));
            return Ok(Response::new(Box::pin(responses)));
        }
        let (no_leader_tx, no_leader_rx) = mpsc::channel(1);
        tokio::spawn(end_without_leader(self.server.clone(), no_leader_tx));
        tokio::spawn(serve_stream(self.server.clone(), request.into_inner(), tx));
        // tonic ends the response at the first error, with that status.
        let no_leader = ReceiverStream::new(no_leader_rx).map(Err);
        Ok(Response::new(Box::pin(responses.merge(no_leader))))
    }
}
