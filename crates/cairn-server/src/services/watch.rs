//! etcdserverpb.Watch: one bidirectional stream carries many watchers. The request side
//! creates and cancels watchers in the hub (`crate::watch`) and asks for progress; a driver
//! task per stream sends what the hub queues for it.

use crate::core::Core;
use crate::watch::hub::{CreateResult, WatchSpec};
use crate::watch::stream::{drive, leader_lost, StreamConfig};
use crate::watch::{Hub, Signals, StreamId};
use cairn_api::etcdserverpb::watch_create_request::FilterType;
use cairn_api::etcdserverpb::watch_request::RequestUnion;
use cairn_api::etcdserverpb::watch_server::Watch;
use cairn_api::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_api::EtcdError;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

/// gRPC metadata key clientv3's `WithRequireLeader` sets.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";
/// Its value.
pub const HAS_LEADER: &str = "true";
/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// etcd raises shorter intervals to this.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// etcd's gRPC overhead allowance added to `--max-request-bytes` for the fragment limit.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Responses buffered between a stream's driver and gRPC.
const RESPONSE_BUFFER: usize = 16;
/// etcd cancels `hasleader` streams after this many election timeouts without a leader.
const NO_LEADER_ELECTIONS: u32 = 3;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

/// The Watch service.
pub struct WatchService {
    core: Arc<Core>,
    progress_interval: Duration,
}

/// The progress interval etcd uses for a configured one: 0 keeps the default, anything below
/// 100 ms becomes 100 ms.
pub fn effective_progress_interval(configured: Duration) -> Duration {
    if configured.is_zero() {
        DEFAULT_PROGRESS_INTERVAL
    } else if configured < MIN_PROGRESS_INTERVAL {
        tracing::warn!(
            min_watch_progress_notify_interval = ?MIN_PROGRESS_INTERVAL,
            "adjusting watch progress notify interval to minimum period"
        );
        MIN_PROGRESS_INTERVAL
    } else {
        configured
    }
}

impl WatchService {
    /// A Watch service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let progress_interval =
            effective_progress_interval(core.cfg.watch_progress_notify_interval);
        WatchService {
            core,
            progress_interval,
        }
    }
}

/// A create request as the hub takes it; unknown filter types are ignored, as etcd does.
pub fn spec_from_request(c: WatchCreateRequest) -> WatchSpec {
    let has = |f: FilterType| c.filters.contains(&(f as i32));
    WatchSpec {
        watch_id: c.watch_id,
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        key: c.key,
        range_end: c.range_end,
        start_revision: c.start_revision,
        prev_kv: c.prev_kv,
        progress_notify: c.progress_notify,
        fragment: c.fragment,
    }
}

/// Creates a watcher, waiting while the stream's queue is full (as etcd's request loop
/// blocks on its control channel). False once the stream is gone.
async fn create(hub: &Hub, stream: StreamId, signals: &Signals, spec: &WatchSpec) -> bool {
    loop {
        let space = signals.space.notified();
        tokio::pin!(space);
        space.as_mut().enable();
        match hub.create(stream, spec) {
            CreateResult::Done => return true,
            CreateResult::Closed => return false,
            CreateResult::NoSpace => space.await,
        }
    }
}

/// Reads the client's requests until it closes its side (the stream then keeps running, as
/// etcd's does) or fails (the stream ends with that error).
async fn recv_loop(
    hub: Arc<Hub>,
    stream: StreamId,
    signals: Arc<Signals>,
    mut incoming: Streaming<WatchRequest>,
    stop: oneshot::Sender<Option<Status>>,
) {
    loop {
        let req = match incoming.message().await {
            Ok(Some(req)) => req,
            // The client closed its side: the stream keeps running until it goes away.
            Ok(None) => return,
            Err(status) => {
                let _ = stop.send(Some(status));
                return;
            }
        };
        let open = match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                create(&hub, stream, &signals, &spec_from_request(c)).await
            }
            Some(RequestUnion::CancelRequest(c)) => {
                hub.cancel(stream, c.watch_id);
                true
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                hub.request_progress(stream);
                true
            }
            None => true,
        };
        if !open {
            return;
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let require_leader = req
            .metadata()
            .get(REQUIRE_LEADER_KEY)
            .and_then(|v| v.to_str().ok())
            == Some(HAS_LEADER);
        if require_leader && self.core.node.status().leader_id() == 0 {
            return Err(EtcdError::NoLeader.into());
        }
        let incoming = req.into_inner();
        let hub = self.core.watch.clone();
        let (stream, signals) = hub.open_stream();
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let (stop_tx, stop_rx) = oneshot::channel();
        let recv = tokio::spawn(recv_loop(
            hub.clone(),
            stream,
            signals.clone(),
            incoming,
            stop_tx,
        ));
        let leader = require_leader.then(|| {
            leader_lost(
                self.core.node.leader_watch(),
                self.core.cfg.election_timeout * NO_LEADER_ELECTIONS,
            )
        });
        let stop = async move {
            let leader = async move {
                match leader {
                    Some(lost) => lost.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A dropped sender (the client closed its side) stops nothing.
                r = stop_rx => match r {
                    Ok(status) => status,
                    Err(_) => std::future::pending().await,
                },
                _ = leader => Some(EtcdError::NoLeader.into()),
            }
        };
        let core = self.core.clone();
        let cfg = StreamConfig {
            fragment_limit: self.core.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES,
            progress_interval: self.progress_interval,
            header: Arc::new(move |rev| core.header(rev)),
        };
        tokio::spawn(async move {
            drive(hub, stream, signals, tx, cfg, stop).await;
            recv.abort();
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
