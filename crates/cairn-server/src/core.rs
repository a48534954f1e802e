//! The state every service shares, and the two paths a request takes: a write is proposed
//! through raft and answered once applied; a linearizable read waits for a read index to be
//! applied, then reads the local store.

use crate::apply::{Applied, ApplyResult};
use crate::config::ServerConfig;
use crate::errors::{mvcc_error, node_error};
use crate::membership::{Member, Membership};
use crate::peer::PeerContext;
use crate::waiters::{RequestIds, Waiters};
use cairn_api::cairnpb::{internal_request::Request, InternalRequest, RequestHeader};
use cairn_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use cairn_api::EtcdError;
use cairn_mvcc::Store;
use cairn_raft::node::{NodeError, NodeHandle};
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Ranges at most this big (by limit) are served on the calling task; bigger ones move to the
/// blocking pool so a long scan does not stall the async workers.
const INLINE_RANGE_LIMIT: i64 = 128;

/// Shared server state.
pub struct Core {
    /// Resolved configuration.
    pub cfg: ServerConfig,
    /// The keyspace.
    pub store: Arc<Store>,
    /// The raft thread.
    pub node: NodeHandle,
    /// Clients waiting for their proposal to apply.
    pub waiters: Waiters<ApplyResult>,
    /// Request id generator.
    pub ids: RequestIds,
    /// This member as configured (id, name, URLs); its live entry is in `membership`.
    pub member: Member,
    /// Every member of the cluster as applied so far, this one included.
    pub membership: Arc<Membership>,
    /// The peer port's shared state (how to reach other members).
    pub peers: Arc<PeerContext>,
    /// The cluster id.
    pub cluster_id: u64,
    /// Leases and their expiry (`lease/`).
    pub lessor: crate::lease::Lessor,
    /// Every watcher; the apply thread publishes each commit's events to it.
    pub watch: Arc<crate::watch::Hub>,
    applied: watch::Sender<u64>,
    /// Big range scans run on tokio's blocking pool; at most this many at once. Without a
    /// bound, 16 concurrent 1,000-key ranges grew the pool to 16–28 threads, each keeping its
    /// allocator heap (+45–70 MiB peak RSS at 100k keys) for no throughput: the scans are
    /// CPU-bound, so more of them than cores only queue inside the kernel instead of here.
    scan_slots: tokio::sync::Semaphore,
}

impl Core {
    /// Assembles the shared state; `applied` is the store's durable applied index.
    pub fn new(
        cfg: ServerConfig,
        store: Arc<Store>,
        node: NodeHandle,
        member: Member,
        peers: Arc<PeerContext>,
        applied: u64,
    ) -> Self {
        Core {
            ids: RequestIds::new(member.id),
            lessor: crate::lease::Lessor::new(crate::lease::lessor_config(&cfg)),
            watch: Arc::new(crate::watch::Hub::new(
                store.clone(),
                crate::watch::HubLimits::default(),
            )),
            cfg,
            store,
            node,
            waiters: Waiters::default(),
            member,
            membership: peers.membership.clone(),
            cluster_id: peers.identity.cluster_id,
            peers,
            applied: watch::channel(applied).0,
            scan_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    /// Records that this member was removed from the cluster; the server then stops.
    pub fn mark_removed(&self) {
        self.peers.mark_removed();
    }

    /// Whether this member was removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.peers.is_removed()
    }

    /// Highest raft index applied to the store.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the applied index reaches `index`; false when the apply side stopped.
    pub async fn wait_applied(&self, index: u64) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = applied.wait_for(|a| *a >= index).await.is_ok();
        reached
    }

    /// Publishes a new applied index to readers waiting on it and to raft.
    pub fn set_applied_index(&self, index: u64) {
        self.applied.send_replace(index);
        self.node.report_applied(index);
    }

    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member.id,
            revision,
            raft_term: self.node.status().term(),
        }
    }

    /// Refuses what a learner may not serve (everything but serializable reads), with etcd's
    /// error.
    pub fn refuse_on_learner(&self) -> Result<(), EtcdError> {
        if self.node.status().is_learner() {
            return Err(EtcdError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Proposes a client's `request` and waits until it is applied, returning what applying
    /// produced. A learner refuses.
    pub async fn propose(&self, request: Request) -> Result<(Applied, i64), EtcdError> {
        self.refuse_on_learner()?;
        self.propose_as_member(request).await
    }

    /// Proposes a membership change and waits until it is applied (or refused).
    pub async fn propose_conf_change(
        &self,
        change_type: ConfChangeType,
        node_id: u64,
        member: Option<&Member>,
    ) -> Result<(), EtcdError> {
        let id = self.ids.next();
        let mut cc = ConfChange {
            id,
            ..Default::default()
        };
        cc.set_change_type(change_type);
        cc.node_id = node_id;
        if let Some(m) = member {
            cc.context = m.encode().into();
        }
        let deadline = Instant::now() + self.cfg.request_timeout();
        let term = self.node.status().term();
        let rx = self.waiters.register(id);
        let mut leader = self.node.leader_watch();
        loop {
            match self.node.propose_conf_change(cc.clone()).await {
                Ok(()) => break,
                Err(NodeError::ProposalDropped) => {
                    let wait = tokio::time::timeout_at(deadline.into(), leader.changed());
                    let retry = tokio::time::sleep(self.cfg.heartbeat_interval);
                    tokio::select! {
                        r = wait => if r.is_err() { self.waiters.cancel(id); return Err(EtcdError::Timeout) },
                        _ = retry => if Instant::now() >= deadline { self.waiters.cancel(id); return Err(EtcdError::Timeout) },
                    }
                }
                Err(e) => {
                    self.waiters.cancel(id);
                    return Err(node_error(e));
                }
            }
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result.map(|_| ()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => {
                self.waiters.cancel(id);
                Err(self.timeout_error(term))
            }
        }
    }

    /// Proposes `request` on this member's own behalf (a learner may, e.g. to publish its
    /// attributes) and waits until it is applied.
    pub async fn propose_as_member(&self, request: Request) -> Result<(Applied, i64), EtcdError> {
        let id = self.ids.next();
        let data = InternalRequest {
            header: Some(RequestHeader {
                id,
                ..Default::default()
            }),
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let deadline = Instant::now() + self.cfg.request_timeout();
        let term = self.node.status().term();
        let rx = self.waiters.register(id);
        if let Err(e) = self.propose_until(data, deadline).await {
            self.waiters.cancel(id);
            return Err(e);
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => {
                self.waiters.cancel(id);
                Err(self.timeout_error(term))
            }
        }
    }

    /// The error for a proposal that never applied: when a new term began meanwhile, raft most
    /// likely dropped it with the old leader (etcd's "possibly due to previous leader
    /// failure"); otherwise etcd's plain timeout.
    fn timeout_error(&self, term_at_start: u64) -> EtcdError {
        if self.node.status().term() > term_at_start {
            EtcdError::TimeoutDueToLeaderFail
        } else {
            EtcdError::Timeout
        }
    }

    /// Hands `data` to raft, waiting for a leader while there is none (as etcd blocks a
    /// proposal until one is elected or the request times out).
    async fn propose_until(&self, data: Vec<u8>, deadline: Instant) -> Result<(), EtcdError> {
        let mut leader = self.node.leader_watch();
        loop {
            match self.node.propose(data.clone()).await {
                Ok(()) => return Ok(()),
                Err(NodeError::ProposalDropped) => {
                    let wait = tokio::time::timeout_at(deadline.into(), leader.changed());
                    let retry = tokio::time::sleep(self.cfg.heartbeat_interval);
                    tokio::select! {
                        r = wait => if r.is_err() { return Err(EtcdError::Timeout) },
                        _ = retry => if Instant::now() >= deadline { return Err(EtcdError::Timeout) },
                    }
                }
                Err(e) => return Err(node_error(e)),
            }
        }
    }

    /// Waits until this member has applied everything committed at a moment it was certainly
    /// leader (ReadIndex), so a read that follows observes every write acknowledged before it
    /// began.
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        self.refuse_on_learner()?;
        self.read_barrier().await
    }

    /// [`linearizable_barrier`](Self::linearizable_barrier) for the member's own use (health
    /// checks), which a learner may run too: its ReadIndex goes through the leader.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        if crate::faults::planted(crate::faults::Bug::ReadWithoutReadIndex) {
            // PLANTED BUG (test builds only): serve from whatever this member has applied,
            // with no leader confirmation.
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.request_timeout();
        let index = match tokio::time::timeout_at(deadline.into(), self.node.read_index()).await {
            Ok(r) => r.map_err(node_error)?,
            Err(_) => return Err(EtcdError::Timeout),
        };
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout_at(deadline.into(), async {
            applied.wait_for(|a| *a >= index).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::TimeoutWaitAppliedIndex),
        }
    }

    /// etcd's Range: linearizable unless `serializable`.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        if !req.serializable {
            self.linearizable_barrier().await?;
        }
        let big_scan =
            !req.range_end.is_empty() && (req.limit <= 0 || req.limit > INLINE_RANGE_LIMIT);
        let mut resp = if big_scan {
            let _slot = self
                .scan_slots
                .acquire()
                .await
                .map_err(|_| EtcdError::Stopped)?;
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.range(&req))
                .await
                .map_err(|_| EtcdError::Stopped)?
        } else {
            self.store.range(&req)
        }
        .map_err(mvcc_error)?;
        let revision = resp
            .header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.store.current_revision());
        resp.header = Some(self.header(revision));
        Ok(resp)
    }
}
