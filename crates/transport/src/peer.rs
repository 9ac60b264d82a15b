//! The sending side: one task per peer keeps a stream of raft messages open, and one task
//! per snapshot streams the backend.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{RaftBatch, SnapshotChunk};
use cairn_raft::{Message, RaftNode};
use protobuf::Message as _;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{CLUSTER_ID_HEADER, FROM_HEADER, LocalMember, PeerTransport, is_removed_status};

/// Messages queued for one peer; beyond this they are dropped and raft resends.
pub(crate) const OUTBOX_MESSAGES_MAX: usize = 4096;
/// Batches queued on an open stream: a peer that stops reading fills it, and the task
/// drops messages rather than buffer without bound.
const STREAM_BATCHES_MAX: usize = 64;
/// Bytes of encoded messages sent in one batch at most.
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

pub(crate) fn identify<T>(request: &mut tonic::Request<T>, cluster_id: u64, local_id: u64) {
    let metadata = request.metadata_mut();
    for (key, value) in [
        (CLUSTER_ID_HEADER, format!("{cluster_id:x}")),
        (FROM_HEADER, format!("{local_id:x}")),
    ] {
        metadata.insert(key, value.parse().expect("a hex number is valid metadata"));
    }
}

fn encode(message: &Message) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding a raft message to a Vec cannot fail")
}

/// Keeps a message stream to peer `to` open until its outbox is dropped (the peer was
/// removed or re-addressed). Each failure reports the peer unreachable and backs off.
pub(crate) async fn run_stream(
    transport: Arc<PeerTransport>,
    to: u64,
    mut client: PeerClient<Channel>,
    mut outbox: mpsc::Receiver<Message>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    loop {
        let (batches, stream) = mpsc::channel::<RaftBatch>(STREAM_BATCHES_MAX);
        let mut request = tonic::Request::new(ReceiverStream::new(stream));
        identify(&mut request, transport.cluster_id, transport.local_id);
        let mut call = Box::pin(client.raft(request));
        let mut sent_any = false;
        let ended = loop {
            tokio::select! {
                message = outbox.recv() => {
                    let Some(message) = message else {
                        return; // the peer is gone
                    };
                    let first = encode(&message);
                    let mut size = first.len();
                    let mut messages = vec![first];
                    while size < BATCH_BYTES_MAX {
                        let Ok(next) = outbox.try_recv() else { break };
                        let bytes = encode(&next);
                        size += bytes.len();
                        messages.push(bytes);
                    }
                    match batches.try_send(RaftBatch { messages }) {
                        Ok(()) => sent_any = true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The peer is not reading (paused, or the link is slow).
                            if let Some(node) = transport.node() {
                                node.report_unreachable(to);
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break None,
                    }
                }
                result = &mut call => break Some(result),
            }
        };
        let error = match ended {
            Some(Ok(_)) => "stream closed by the peer".to_owned(),
            Some(Err(status)) => {
                if is_removed_status(&status) {
                    transport.member.removed_from_cluster();
                }
                status.message().to_owned()
            }
            None => "stream closed".to_owned(),
        };
        if error != last_error {
            tracing::warn!(
                peer = format_args!("{to:x}"),
                error,
                "raft message stream to peer broke"
            );
            last_error = error;
        }
        if let Some(node) = transport.node() {
            node.report_unreachable(to);
        }
        if sent_any {
            backoff = BACKOFF_MIN;
        }
        // Messages queued while disconnected are stale by the time a connection returns.
        while outbox.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Streams the backend behind `message` (a MsgSnapshot) to its receiver, then tells raft
/// whether it arrived.
pub(crate) async fn send_snapshot(
    member: Arc<dyn LocalMember>,
    node: RaftNode,
    mut client: PeerClient<Channel>,
    message: Message,
    cluster_id: u64,
    local_id: u64,
) {
    let to = message.to;
    let index = message.get_snapshot().get_metadata().index;
    let delivered = match stream_snapshot(member, &mut client, &message, cluster_id, local_id).await
    {
        Ok(bytes) => {
            tracing::info!(to = format_args!("{to:x}"), index, bytes, "sent a snapshot");
            true
        }
        Err(e) => {
            tracing::warn!(to = format_args!("{to:x}"), index, error = %e, "could not send a snapshot");
            false
        }
    };
    node.report_snapshot(to, delivered);
}

async fn stream_snapshot(
    member: Arc<dyn LocalMember>,
    client: &mut PeerClient<Channel>,
    message: &Message,
    cluster_id: u64,
    local_id: u64,
) -> Result<u64, String> {
    let index = message.get_snapshot().get_metadata().index;
    let exporter = member.clone();
    let path = tokio::task::spawn_blocking(move || exporter.export_backend(index))
        .await
        .map_err(|e| format!("backend export panicked: {e}"))??;
    let result = async {
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let (chunks, stream) = mpsc::channel::<SnapshotChunk>(4);
        let mut request = tonic::Request::new(ReceiverStream::new(stream));
        identify(&mut request, cluster_id, local_id);
        let call = tokio::spawn({
            let mut client = client.clone();
            async move { client.snapshot(request).await }
        });
        let mut first = Some(encode(message));
        let mut total = 0u64;
        loop {
            let mut data = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let read = file
                .read(&mut data)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            data.truncate(read);
            total += read as u64;
            let chunk = SnapshotChunk {
                message: first.take().unwrap_or_default(),
                data,
            };
            if chunks.send(chunk).await.is_err() {
                break; // the call ended early; its result says why
            }
            if read == 0 {
                break;
            }
        }
        drop(chunks);
        call.await
            .map_err(|e| format!("snapshot call panicked: {e}"))?
            .map_err(|status| {
                if is_removed_status(&status) {
                    member.removed_from_cluster();
                }
                status.message().to_owned()
            })?;
        Ok(total)
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    result
}
