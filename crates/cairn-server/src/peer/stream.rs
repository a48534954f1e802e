//! One peer's outgoing raft stream: connect, forward batches from the queue over a
//! client-streaming `Raft` call, and on any failure tell raft the peer is unreachable, drop what
//! is queued (raft resends what matters) and reconnect with backoff.

use super::dial::DialOptions;
use super::PeerContext;
use cairn_api::cairnpb::{peer_client::PeerClient, RaftBatch};
use protobuf::Message as _;
use raft::eraftpb::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Messages or bytes per batch at most (whichever comes first).
const BATCH_MESSAGES: usize = 1024;
const BATCH_BYTES: usize = 4 << 20;
/// How long a batch may wait for room on the stream before the stream is presumed dead.
const STALL_LIMIT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Runs until the queue's sender is dropped or `to` stops being a member.
pub(super) async fn run(ctx: Arc<PeerContext>, to: u64, mut queue: mpsc::Receiver<Message>) {
    let mut backoff = BACKOFF_MIN;
    // Log a peer going down once, not on every retry.
    let mut reported_down = false;
    loop {
        let Some(url) = ctx.peer_url(to) else {
            return;
        };
        let failure = match connect(&ctx, &url).await {
            Ok(client) => {
                ctx.set_active(to, true);
                if reported_down {
                    tracing::info!(remote_peer_id = %format!("{to:x}"), "peer became active");
                    reported_down = false;
                }
                let connected = std::time::Instant::now();
                let ended = forward(&ctx, to, client, &mut queue).await;
                // Only a stream that lasted resets the backoff: a peer that accepts and drops
                // connections at once must not be redialled twenty times a second.
                if connected.elapsed() >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                match ended {
                    Some(Failure::Removed) => {
                        // Removed while it was down: the others refuse it for good (etcd's
                        // member stops on the same answer).
                        tracing::error!(remote_peer_id = %format!("{to:x}"), "the member has been permanently removed from the cluster");
                        ctx.mark_removed();
                        return;
                    }
                    Some(Failure::Other(e)) => e,
                    None => return,
                }
            }
            Err(e) => e,
        };
        ctx.set_active(to, false);
        if !reported_down {
            tracing::warn!(remote_peer_id = %format!("{to:x}"), url = %url, error = %failure, "peer became inactive (message send to peer failed)");
            reported_down = true;
        }
        ctx.report_unreachable(to);
        // Whatever queued while the peer was unreachable is stale by the time it is back.
        while queue.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if queue.is_closed() && queue.is_empty() {
            return;
        }
    }
}

async fn connect(
    ctx: &PeerContext,
    url: &str,
) -> Result<PeerClient<tonic::transport::Channel>, String> {
    let opts = DialOptions {
        keepalive: Some(Duration::from_secs(5)),
        ..DialOptions::now(Duration::from_secs(1))
    };
    let channel = ctx
        .dialer
        .channel(url, opts)
        .await
        .map_err(|e| e.to_string())?;
    Ok(PeerClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX))
}

/// Why a stream ended.
enum Failure {
    /// The peer refused this member as removed from the cluster.
    Removed,
    /// Anything else; worth a retry.
    Other(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        if status.code() == tonic::Code::PermissionDenied {
            Failure::Removed
        } else {
            Failure::Other(status.message().to_string())
        }
    }
}

/// Streams batches until the call fails (returns why) or the queue closes (returns `None`).
async fn forward(
    ctx: &PeerContext,
    to: u64,
    mut client: PeerClient<tonic::transport::Channel>,
    queue: &mut mpsc::Receiver<Message>,
) -> Option<Failure> {
    let (body, body_rx) = mpsc::channel::<RaftBatch>(16);
    let mut call = tokio::spawn(async move { client.raft(ReceiverStream::new(body_rx)).await });
    let header = ctx.header_to(to);
    loop {
        let first = tokio::select! {
            m = queue.recv() => m,
            ended = &mut call => {
                return Some(match ended {
                    Ok(Ok(_)) => Failure::Other("peer closed the stream".to_string()),
                    Ok(Err(status)) => status.into(),
                    Err(e) => Failure::Other(e.to_string()),
                });
            }
        };
        let Some(first) = first else {
            call.abort();
            return None;
        };
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m.write_to_bytes() {
                Ok(b) => {
                    bytes += b.len();
                    messages.push(b);
                }
                Err(e) => tracing::error!(error = %e, "unencodable raft message dropped"),
            }
            if messages.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        let batch = RaftBatch {
            header: Some(header),
            messages,
        };
        match tokio::time::timeout(STALL_LIMIT, body.send(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Some(match call.await {
                    Ok(Err(status)) => status.into(),
                    _ => Failure::Other("stream closed".to_string()),
                });
            }
            Err(_) => {
                // A call over a connection that died without an error (closed right after
                // it was accepted, say) can stay pending forever, neither failing nor taking
                // batches; only a fresh connection gets messages through again.
                call.abort();
                return Some(Failure::Other(format!(
                    "stream stalled: no batch taken for {STALL_LIMIT:?}"
                )));
            }
        }
    }
}
