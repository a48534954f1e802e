//! Starting and stopping a member: open the backend and the WAL, bootstrap or recover raft,
//! start the raft and apply threads, then serve gRPC and HTTP on the client URLs.

use crate::apply::{apply_loop, ApplyError};
use crate::config::{ServerConfig, ETCD_CLUSTER_VERSION};
use crate::core::Core;
use crate::membership::{Membership, MembershipState};
use crate::peer::{service::PeerService, PeerContext, PeerTransport};
use crate::services::{
    cluster::ClusterService, kv::KvService, lease::LeaseService, maintenance::MaintenanceService,
};
use cairn_api::cairnpb::{internal_request::Request, peer_server::PeerServer, MemberAttrSet};
use cairn_api::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use cairn_mvcc::{MvccError, Store, StoreOptions};
use cairn_raft::node::{self, LoopError, NodeConfig};
use cairn_raft::storage::{DiskStorage, WalOptions};
use cairn_raft::WalError;
use raft::Storage as _;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest peer message accepted beyond twice `--max-request-bytes`.
const PEER_MESSAGE_LIMIT: usize = 64 << 20;
/// How long shutdown waits for in-flight client requests before closing their connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a member could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration asks for something invalid or not built yet.
    #[error("{0}")]
    Config(String),
    /// The WAL could not be opened or written (corruption names the file and offset).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The backend could not be opened or written.
    #[error("backend {path}: {source}")]
    Backend {
        /// The backend file.
        path: String,
        /// What failed.
        source: MvccError,
    },
    /// Raft refused its configuration or state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The raft loop stopped on an error.
    #[error("raft loop: {0}")]
    Loop(#[from] LoopError),
    /// The apply loop stopped on an error.
    #[error("apply: {0}")]
    Apply(#[from] ApplyError),
    /// A listener could not be bound or served.
    #[error("listener {url}: {source}")]
    Listen {
        /// The URL being served.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A certificate, key, CA or CRL could not be loaded, or the TLS flags are invalid.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// This member's removal from the cluster was applied.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// Creating the data directory failed.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running member.
pub struct RunningServer {
    core: Arc<Core>,
    raft_thread: Option<JoinHandle<Result<(), LoopError>>>,
    apply_thread: Option<JoinHandle<Result<(), ApplyError>>>,
    stop_serving: watch::Sender<bool>,
    listeners: JoinSet<Result<(), ServerError>>,
    /// The client addresses actually bound (useful with port 0).
    pub client_addrs: Vec<SocketAddr>,
}

/// Splits `http://host:port` or `https://host:port` into `host:port` and whether it is TLS.
fn listen_socket(url: &str) -> Result<(String, bool), ServerError> {
    for (scheme, secure) in [("http://", false), ("https://", true)] {
        if let Some(rest) = url.strip_prefix(scheme) {
            return Ok((rest.trim_end_matches('/').to_string(), secure));
        }
    }
    Err(ServerError::Config(format!(
        "unsupported URL scheme in {url:?} (expected http://host:port or https://host:port)"
    )))
}

fn make_dir(path: &std::path::Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(path).map_err(|source| ServerError::DataDir {
        path: path.display().to_string(),
        source,
    })
}

fn backend_error(path: &std::path::Path) -> impl Fn(MvccError) -> ServerError + '_ {
    move |source| ServerError::Backend {
        path: path.display().to_string(),
        source,
    }
}

/// A crash after the WAL recorded a snapshot from the leader but before the backend was
/// swapped leaves the received backend in `member/snap`: install it now.
fn recover_pending_snapshot(
    cfg: &ServerConfig,
    store: &Store,
    storage: &DiskStorage,
) -> Result<(), ServerError> {
    let snap_dir = cfg.snap_path();
    let (truncated, _) = storage.truncated();
    let (applied, _) = store.applied_index();
    if applied < truncated {
        let path = crate::peer::snapshot::install_path(&snap_dir, truncated);
        if path.exists() {
            tracing::info!(index = truncated, path = %path.display(), "installing the snapshot received before the last stop");
            store
                .replace_with(&path)
                .map_err(backend_error(&cfg.backend_path()))?;
        }
    }
    crate::peer::snapshot::clean_snap_dir(&snap_dir, store.applied_index().0);
    Ok(())
}

/// Binds every URL in `urls`; returns each URL, whether it is TLS, and its listener.
async fn bind_all(urls: &[String]) -> Result<Vec<(String, bool, TcpListener)>, ServerError> {
    let mut out = Vec::new();
    for url in urls {
        let (addr, secure) = listen_socket(url)?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Listen {
                url: url.clone(),
                source,
            })?;
        out.push((url.clone(), secure, listener));
    }
    Ok(out)
}

/// The TLS of an `https://` listener (`PortTls::build` made one for every such URL).
fn listener_tls(
    url: &str,
    secure: bool,
    tls: &Option<Arc<crate::tls::acceptor::ServerTls>>,
) -> Result<Option<Arc<crate::tls::acceptor::ServerTls>>, ServerError> {
    match (secure, tls) {
        (false, _) => Ok(None),
        (true, Some(t)) => Ok(Some(t.clone())),
        (true, None) => Err(ServerError::Config(format!(
            "no TLS configuration for {url}"
        ))),
    }
}

/// Serves `router` on the connections of `incoming` until `stop` turns true.
async fn serve_router<IO>(
    router: tonic::transport::server::Router,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>>,
    mut stop: watch::Receiver<bool>,
    url: String,
) -> Result<(), ServerError>
where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| ServerError::Listen {
            url,
            source: std::io::Error::other(e),
        })
}

/// Starts a member and returns once it serves clients.
pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
    // First of all: a binary without the features refuses CAIRN_FAILPOINTS /
    // CAIRN_PLANTED_BUG before touching the data dir, and failpoints armed at start must be
    // in place before recovery runs.
    let faults = crate::faults::configure_from_env()?;
    let backend_path = cfg.backend_path();
    make_dir(&cfg.snap_path())?;
    let wal_path = cfg.wal_path();
    make_dir(&wal_path)?;
    // Before the backend and the WAL are opened: a missing certificate refuses the start.
    let tls = crate::tls::PortTls::build(&cfg)?;
    let dialer = crate::peer::dial::PeerDialer::new(tls.dial.clone());
    let store = Store::open(
        &backend_path,
        StoreOptions {
            cache_size_bytes: cfg.backend_cache_bytes,
        },
    )
    .map_err(backend_error(&backend_path))?;
    let store = Arc::new(store);

    let (storage, fresh) = DiskStorage::open(
        &wal_path,
        WalOptions {
            max_wals: cfg.max_wals,
            ..WalOptions::default()
        },
    )?;
    recover_pending_snapshot(&cfg, &store, &storage)?;
    let (applied, _) = store.applied_index();
    tracing::info!(path = %backend_path.display(), revision = store.current_revision(), applied_index = applied, "opened backend db");

    let prepared = crate::bootstrap::prepare(&cfg, &storage, fresh, applied, &dialer).await?;
    let me = prepared.me.clone();
    let identity = prepared.identity;
    tracing::info!(
        name = %cfg.name,
        data_dir = %cfg.data_dir.display(),
        member_id = %format!("{:x}", identity.member_id),
        cluster_id = %format!("{:x}", identity.cluster_id),
        "starting an etcd server"
    );
    if !fresh {
        let first = storage.first_index().unwrap_or(1);
        if applied + 1 < first {
            return Err(ServerError::Config(format!(
                "the backend {} is at raft index {applied} but the WAL starts at {first}: entries in between are gone",
                backend_path.display()
            )));
        }
        // The store may be durably ahead of the commit index recorded in the WAL (commit
        // indexes are written without a sync); what it applied was committed.
        let mut hs = storage.hard_state();
        let last = storage.last_index().unwrap_or(0);
        if applied > last {
            return Err(ServerError::Config(format!(
                "the backend {} has applied raft index {applied} beyond the WAL's last index {last}",
                backend_path.display()
            )));
        }
        if hs.commit < applied {
            hs.commit = applied;
            storage.set_hard_state(&hs)?;
            storage.sync()?;
        }
        tracing::info!(
            term = hs.term,
            commit = hs.commit,
            applied_index = applied,
            last_index = last,
            "restarting local member"
        );
    }

    let mut membership = MembershipState::load(&store).map_err(backend_error(&backend_path))?;
    if cfg.force_new_cluster && !fresh {
        crate::bootstrap::force_new_cluster(&storage, me.id, membership.members.keys().copied())?;
    }
    if membership.members.is_empty() {
        membership = prepared.initial;
    }
    let membership = Arc::new(Membership::new(membership));
    let peers = PeerContext::new(
        identity,
        membership,
        store.clone(),
        cfg.snap_path(),
        dialer,
        tokio::runtime::Handle::current(),
    );
    let transport = PeerTransport::new(peers.clone());
    crate::peer::snapshot::spawn_preparer(peers.clone(), storage.clone());

    // Bound before any thread starts, so a port in use fails the start without leaving the
    // raft and apply threads running.
    let peer_listeners = bind_all(&cfg.listen_peer_urls).await?;
    let client_listeners = bind_all(&cfg.listen_client_urls).await?;

    let (apply_tx, apply_rx) = mpsc::channel();
    let tick = cfg.heartbeat_interval;
    let (node, raft_thread) = node::start(
        NodeConfig {
            id: me.id,
            tick_interval: tick,
            election_tick: cfg.election_ticks(),
            heartbeat_tick: 1,
            applied,
            pre_vote: cfg.pre_vote,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 << 20,
            campaign_if_sole_voter: true,
            ack_before_fsync: crate::faults::planted(crate::faults::Bug::AckBeforeFsync),
        },
        storage,
        apply_tx,
        Some(Box::new(transport)),
    )?;
    let _ = peers.node.set(node.clone());
    peers.spawn_connector();
    let core = Arc::new(Core::new(
        cfg.clone(),
        store,
        node,
        me.clone(),
        peers.clone(),
        applied,
    ));
    // etcd recovers its lessor from the backend before applying anything.
    let leases = core.store.leases().map_err(backend_error(&backend_path))?;
    tracing::info!(leases = leases.len(), "recovered leases");
    core.lessor.recover(leases);
    let apply_core = core.clone();
    let apply_thread = std::thread::Builder::new()
        .name("apply".into())
        .spawn(move || apply_loop(apply_core, apply_rx))
        .expect("spawning the apply thread");

    let (stop_serving, stop_rx) = watch::channel(false);
    let mut listeners = JoinSet::new();
    // Peers must reach this member before it can learn of a leader.
    let mut peer_addrs = Vec::new();
    for (url, secure, listener) in peer_listeners {
        peer_addrs.push(
            listener
                .local_addr()
                .map_err(|source| ServerError::Listen {
                    url: url.clone(),
                    source,
                })?,
        );
        // A raft batch is at most a few MiB plus one entry (itself at most
        // --max-request-bytes); a snapshot chunk is 1 MiB.
        let service = PeerServer::new(PeerService::new(peers.clone(), core.clone()))
            .max_decoding_message_size(PEER_MESSAGE_LIMIT + 2 * cfg.max_request_bytes)
            .max_encoding_message_size(usize::MAX);
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service);
        let stop = stop_rx.clone();
        match listener_tls(&url, secure, &tls.peer)? {
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                listeners.spawn(serve_router(router, incoming, stop, url));
            }
            Some(tls) => {
                let incoming = crate::tls::acceptor::incoming(listener, tls);
                listeners.spawn(serve_router(router, incoming, stop, url));
            }
        }
    }
    tracing::info!(addresses = ?peer_addrs, "serving peer traffic");

    let mut leader = core.node.leader_watch();
    // A member removed while it was down learns so from its peers' refusals, not a leader.
    while *leader.borrow_and_update() == 0 {
        if core.is_removed() {
            return Err(ServerError::Removed);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), leader.changed()).await;
    }
    tracing::info!(
        cluster_version = ETCD_CLUSTER_VERSION,
        "enabled capabilities for version"
    );
    publish_attributes(&core).await;

    crate::lease::expiry::spawn(core.clone(), stop_rx.clone());
    let mut client_addrs = Vec::new();
    for (url, secure, listener) in client_listeners {
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                url: url.clone(),
                source,
            })?;
        client_addrs.push(local);
        let router = grpc_router(&core);
        let stop = stop_rx.clone();
        // Every connection goes through the :authority normalizer (etcd clients send values
        // h2 would reject) — over TLS, around the decrypted stream — with Nagle off as etcd's
        // gRPC server has it.
        match listener_tls(&url, secure, &tls.client)? {
            None => {
                tracing::warn!(address = %local, "serving client traffic insecurely; this is strongly discouraged!");
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |conn| {
                        conn.and_then(|stream| {
                            stream.set_nodelay(true)?;
                            Ok(crate::h2_authority::AuthorityNormalizer::new(stream))
                        })
                    },
                );
                listeners.spawn(serve_router(router, incoming, stop, url));
            }
            Some(tls) => {
                tracing::info!(address = %local, "serving client traffic securely");
                let incoming = tokio_stream::StreamExt::map(
                    crate::tls::acceptor::incoming(listener, tls),
                    |conn| conn.map(crate::h2_authority::AuthorityNormalizer::new),
                );
                listeners.spawn(serve_router(router, incoming, stop, url));
            }
        }
    }
    faults.arm_when_serving();
    tracing::info!("ready to serve client requests");
    Ok(RunningServer {
        core,
        raft_thread: Some(raft_thread),
        apply_thread: Some(apply_thread),
        stop_serving,
        listeners,
        client_addrs,
    })
}

/// Publishes this member's name and client URLs through raft (etcd's `publish`), retrying
/// until it is applied: other members list them, and clients discover endpoints from them.
async fn publish_attributes(core: &Core) {
    let me = &core.member;
    let request = Request::MemberAttrSet(MemberAttrSet {
        member_id: me.id,
        name: me.name.clone(),
        client_urls: core.cfg.advertise_client_urls.clone(),
    });
    loop {
        match core.propose_as_member(request.clone()).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "failed to publish local member to cluster through raft; retrying");
                tokio::time::sleep(core.cfg.heartbeat_interval).await;
            }
        }
    }
    tracing::info!(
        local_member_id = %format!("{:x}", me.id),
        local_member_attributes = %format!("{{Name:{} ClientURLs:[{}]}}", me.name, core.cfg.advertise_client_urls.join(" ")),
        cluster_id = %format!("{:x}", core.cluster_id),
        "published local member to cluster through raft"
    );
}

/// gRPC services plus the HTTP endpoints, on one router per client listener.
fn grpc_router(core: &Arc<Core>) -> tonic::transport::server::Router {
    let limit = core.cfg.max_request_bytes + 512 * 1024;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            KvServer::new(KvService::new(core.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(core.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(ClusterServer::new(ClusterService::new(core.clone())))
        .add_service(
            WatchServer::new(crate::services::watch::WatchService::new(core.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(LeaseServer::new(LeaseService::new(core.clone())))
        .add_service(AuthServer::new(crate::services::Unbuilt));
    let axum_router = routes
        .routes()
        .into_axum_router()
        .merge(crate::http::routes(core.clone()))
        .fallback(crate::http::unknown_path)
        .layer(axum::middleware::from_fn_with_state(
            core.clone(),
            crate::guard::admit,
        ));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(core.cfg.max_concurrent_streams))
        .add_routes(tonic::service::Routes::from(axum_router))
}

impl RunningServer {
    /// Shared state, for in-process tests.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Waits until a listener or a background thread fails, which is fatal.
    pub async fn wait_fatal(&mut self) -> ServerError {
        loop {
            tokio::select! {
                Some(res) = self.listeners.join_next() => match res {
                    Ok(Err(e)) => return e,
                    Ok(Ok(())) => {}
                    Err(e) => return ServerError::Config(format!("listener task failed: {e}")),
                },
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
            if self.core.is_removed() {
                return ServerError::Removed;
            }
            let raft_done = self.raft_thread.as_ref().is_some_and(|t| t.is_finished());
            let apply_done = self.apply_thread.as_ref().is_some_and(|t| t.is_finished());
            if raft_done || apply_done {
                return match self.join_threads() {
                    Err(e) => e,
                    Ok(()) => ServerError::Config("server threads stopped".into()),
                };
            }
        }
    }

    /// Stops serving, stops raft (syncing the WAL), lets apply drain and make the backend
    /// durable.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let _ = self.stop_serving.send(true);
        // Watch streams never finish on their own.
        self.core.watch.shut_down();
        // In-flight requests get a short grace period; a client that holds its connection
        // open without reading must not keep the member from stopping.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.listeners.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "closing client connections that did not finish in time");
            self.listeners.abort_all();
            while self.listeners.join_next().await.is_some() {}
        }
        self.core.node.stop();
        let res = tokio::task::spawn_blocking(move || self.join_threads())
            .await
            .map_err(|e| ServerError::Config(format!("shutdown task failed: {e}")))?;
        tracing::info!("closed etcd server");
        res
    }

    fn join_threads(&mut self) -> Result<(), ServerError> {
        if let Some(t) = self.raft_thread.take() {
            t.join()
                .map_err(|_| ServerError::Config("raft thread panicked".into()))??;
        }
        if let Some(t) = self.apply_thread.take() {
            t.join()
                .map_err(|_| ServerError::Config("apply thread panicked".into()))??;
        }
        Ok(())
    }
}
