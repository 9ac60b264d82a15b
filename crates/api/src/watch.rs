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
    while let Ok(Some(request)) = inbound.message().await {
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
    hub.close_stream(watchers.stream);
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(serve_stream(self.server.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
