//! etcdserverpb.Lease: grants and revokes through raft; keep-alives, time-to-live and the
//! lease list from the lessor, as etcd's v3rpc and etcdserver answer them.
//!
//! - LeaseGrant: a TTL above 9,000,000,000 s is refused before proposing; ID 0 gets a fresh id
//!   from the request id generator (positive, never 0), as etcd does.
//! - LeaseKeepAlive: each request answers the lease's TTL; an unknown (or just revoked) lease
//!   answers TTL 0. The header is taken before renewing, as etcd does.
//! - LeaseTimeToLive: remaining seconds truncated, the granted TTL and, with `keys`, the
//!   attached keys in key order; an unknown lease answers TTL -1.
//! - LeaseLeases: every lease, soonest expiry first.
//!
//! Keep-alives and time-to-live need the primary lessor (the leader): a follower forwards them
//! to the leader over the peer port ([`crate::peer::forward`]), retrying across leader changes
//! up to the request timeout; the leader waits until its lessor is primary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::cairnpb::internal_request::Request as Internal;
use cairn_api::etcdserverpb::lease_server::Lease;
use cairn_api::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use cairn_api::EtcdError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::apply::Applied;
use crate::core::Core;
use crate::errors::mvcc_error;
use crate::lease::{Renewal, MAX_LEASE_TTL};
use crate::peer::forward::Renewed;

/// etcd's `applyTimeout`: how long a lease read waits for apply to catch up with commit.
const APPLY_WAIT: Duration = Duration::from_secs(1);
/// Pause between attempts while the leader is unknown or changing.
const RETRY: Duration = Duration::from_millis(100);

/// The Lease service.
pub struct LeaseService {
    core: Arc<Core>,
}

impl LeaseService {
    /// A Lease service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        LeaseService { core }
    }
}

/// A response variant that does not match its request means the apply path is broken.
fn mismatched() -> Status {
    tracing::error!("apply returned a response of the wrong kind");
    EtcdError::Stopped.into()
}

/// etcd's `waitAppliedIndex`: everything committed when the request arrived is applied.
async fn wait_applied(core: &Core) -> Result<(), EtcdError> {
    let commit = core.node.status().commit_index();
    match tokio::time::timeout(APPLY_WAIT, core.wait_applied(commit)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(EtcdError::Stopped),
        Err(_) => Err(EtcdError::TimeoutWaitAppliedIndex),
    }
}

/// Waits for the lessor to change (a revoke applied, primacy gained or lost) until `deadline`.
async fn wait_change(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
) -> Result<(), EtcdError> {
    match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(EtcdError::Stopped),
        Err(_) => Err(EtcdError::Timeout),
    }
}

/// etcd's LeaseRenew: on the leader, or forwarded to it.
async fn renew(core: &Core, id: i64) -> Result<i64, EtcdError> {
    let deadline = Instant::now() + core.cfg.request_timeout();
    loop {
        if core.node.status().is_leader() {
            match renew_local(core, id).await {
                Err(EtcdError::NotLeader) => {}
                other => return other,
            }
        } else if core.node.status().leader_id() != 0 {
            match crate::peer::forward::renew(core, id).await {
                Ok(Renewed::Ttl(ttl)) => return Ok(ttl),
                Ok(Renewed::NotFound) => return Err(EtcdError::LeaseNotFound),
                Ok(Renewed::NotLeader) => {}
                Err(e) => tracing::debug!(error = %e, "forwarding a lease renewal failed"),
            }
        }
        if Instant::now() >= deadline {
            return Err(EtcdError::Timeout);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// etcd's LeaseRenew on the leader: the lease's TTL, or `LeaseNotFound`; `NotLeader` once this
/// member stops being the leader.
pub async fn renew_local(core: &Core, id: i64) -> Result<i64, EtcdError> {
    wait_applied(core).await?;
    let deadline = Instant::now() + core.cfg.request_timeout();
    let mut changes = core.lessor.subscribe();
    let mut cleared = false;
    loop {
        changes.borrow_and_update();
        let now = Instant::now();
        let outcome = if cleared {
            core.lessor.renew_anyway(id, now)
        } else {
            core.lessor.renew(id, now)
        };
        match outcome {
            Renewal::Renewed(ttl) => return Ok(ttl),
            Renewal::NotFound => return Err(EtcdError::LeaseNotFound),
            Renewal::ClearCheckpoint => {
                let clear = LeaseCheckpointRequest {
                    checkpoints: vec![LeaseCheckpoint {
                        id,
                        remaining_ttl: 0,
                    }],
                };
                if let Err(e) = core.propose(Internal::LeaseCheckpoint(clear)).await {
                    tracing::warn!(lease_id = %format!("{id:016x}"), error = %e, "failed to clear a lease checkpoint on renewal");
                }
                cleared = true;
            }
            Renewal::NotPrimary if !core.node.status().is_leader() => {
                return Err(EtcdError::NotLeader)
            }
            // An expired lease is being revoked: answer once that is applied (or this member
            // stops being primary), as etcd does.
            Renewal::Expired | Renewal::NotPrimary => wait_change(&mut changes, deadline).await?,
        }
    }
}

/// Waits until this member is the primary lessor; `NotLeader` once it is not the leader.
async fn wait_primary(core: &Core) -> Result<(), EtcdError> {
    let deadline = Instant::now() + core.cfg.request_timeout();
    let mut changes = core.lessor.subscribe();
    loop {
        changes.borrow_and_update();
        if core.lessor.primary_term().is_some() {
            return Ok(());
        }
        if !core.node.status().is_leader() {
            return Err(EtcdError::NotLeader);
        }
        wait_change(&mut changes, deadline).await?;
    }
}

/// etcd's LeaseTimeToLive: on the leader, or forwarded to it.
async fn time_to_live(
    core: &Core,
    req: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, EtcdError> {
    let deadline = Instant::now() + core.cfg.request_timeout();
    loop {
        if core.node.status().is_leader() {
            match time_to_live_local(core, req).await {
                Err(EtcdError::NotLeader) => {}
                other => return other,
            }
        } else if core.node.status().leader_id() != 0 {
            match crate::peer::forward::time_to_live(core, req).await {
                Ok(Some(mut resp)) => {
                    // The header is this member's, as etcd's forwarding answers.
                    resp.header = Some(core.header(core.store.current_revision()));
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "forwarding a lease time-to-live failed"),
            }
        }
        if Instant::now() >= deadline {
            return Err(EtcdError::Timeout);
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// LeaseTimeToLive answered by the leader's lessor.
pub async fn time_to_live_local(
    core: &Core,
    req: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, EtcdError> {
    wait_applied(core).await?;
    wait_primary(core).await?;
    let header = Some(core.header(core.store.current_revision()));
    let Some((ttl, granted_ttl)) = core.lessor.time_to_live(req.id, Instant::now()) else {
        return Ok(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        });
    };
    let keys = if req.keys {
        core.store.lease_keys(req.id).map_err(mvcc_error)?
    } else {
        vec![]
    };
    Ok(LeaseTimeToLiveResponse {
        header,
        id: req.id,
        ttl,
        granted_ttl,
        keys,
    })
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = req.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        while req.id == 0 {
            req.id = (self.core.ids.next() & (i64::MAX as u64)) as i64;
        }
        match self.core.propose(Internal::LeaseGrant(req)).await? {
            (Applied::LeaseGrant(mut resp), rev) => {
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        match self
            .core
            .propose(Internal::LeaseRevoke(req.into_inner()))
            .await?
        {
            (Applied::LeaseRevoke(mut resp), rev) => {
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<LeaseKeepAliveResponse>>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    // The client went away: nobody reads the answers.
                    _ = tx.closed() => break,
                };
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(error = %status, "lease keep-alive stream ended");
                        break;
                    }
                };
                // As etcd: the header is taken before renewing, so its revision is never after
                // a revoke the renewal raced with.
                let header = Some(core.header(core.store.current_revision()));
                let ttl = match renew(&core, msg.id).await {
                    Ok(ttl) => ttl,
                    Err(EtcdError::LeaseNotFound) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                };
                let resp = LeaseKeepAliveResponse {
                    header,
                    id: msg.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.core.refuse_on_learner()?;
        Ok(Response::new(
            time_to_live(&self.core, req.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let core = &self.core;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(core.header(core.store.current_revision())),
            leases: core
                .lessor
                .leases()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
