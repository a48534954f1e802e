//! The `cairnpb.Peer` server on the peer port.

use super::PeerContext;
use crate::core::Core;
use cairn_api::cairnpb::peer_server::Peer;
use cairn_api::cairnpb::{
    LeaseRenewRequest, LeaseRenewResponse, LeaseTimeToLiveAnswer, LeaseTimeToLiveForward,
    MemberPromoteForward, MembersRequest, MembersResponse, PeerHeader, RaftAck, RaftBatch,
    SnapshotAck, SnapshotChunk,
};
use cairn_api::etcdserverpb::MemberPromoteResponse;
use cairn_api::EtcdError;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Refuses a call from another cluster, to another member, or from a removed member.
pub fn check_header(ctx: &PeerContext, header: Option<&PeerHeader>) -> Result<(), Status> {
    let h = header.ok_or_else(|| Status::invalid_argument("peer call without a header"))?;
    let local = ctx.identity;
    if h.cluster_id != local.cluster_id {
        tracing::warn!(
            local_member_id = %format!("{:x}", local.member_id),
            local_member_cluster_id = %format!("{:x}", local.cluster_id),
            remote_peer_id = %format!("{:x}", h.from),
            remote_peer_cluster_id = %format!("{:x}", h.cluster_id),
            "request cluster ID mismatch"
        );
        return Err(Status::failed_precondition(format!(
            "cluster ID mismatch: local {:x}, remote {:x}",
            local.cluster_id, h.cluster_id
        )));
    }
    if ctx.membership.is_removed(h.from) {
        return Err(Status::permission_denied(
            "the member has been permanently removed from the cluster",
        ));
    }
    if h.to != local.member_id {
        return Err(Status::failed_precondition(format!(
            "member ID mismatch: this is {:x}, not {:x}",
            local.member_id, h.to
        )));
    }
    Ok(())
}

/// The peer service of one member.
pub struct PeerService {
    ctx: Arc<PeerContext>,
    core: Arc<Core>,
}

impl PeerService {
    /// Serves `core`'s member.
    pub fn new(ctx: Arc<PeerContext>, core: Arc<Core>) -> PeerService {
        PeerService { ctx, core }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let mut batches = req.into_inner();
        while let Some(batch) = batches.message().await? {
            check_header(&self.ctx, batch.header.as_ref())?;
            for bytes in batch.messages {
                let msg = match Message::parse_from_bytes(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable raft message from peer dropped");
                        continue;
                    }
                };
                // A snapshot is only valid with its backend, which comes on its own call.
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    continue;
                }
                self.core.node.step(msg);
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let msg = super::snapshot::receive(&self.ctx, req.into_inner()).await?;
        self.core.node.step(msg);
        Ok(Response::new(SnapshotAck {}))
    }

    async fn members(
        &self,
        req: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        // A joining member does not know the cluster id yet; one that names it must match.
        if let Some(h) = req.get_ref().header.as_ref() {
            if h.cluster_id != 0 && h.cluster_id != self.ctx.identity.cluster_id {
                return Err(Status::failed_precondition("cluster ID mismatch"));
            }
        }
        let state = self.ctx.membership.state();
        Ok(Response::new(MembersResponse {
            cluster_id: self.ctx.identity.cluster_id,
            members: state.members.values().map(|m| m.to_proto()).collect(),
            removed: state.removed.into_iter().collect(),
        }))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let req = req.into_inner();
        check_header(&self.ctx, req.header.as_ref())?;
        if !self.core.node.status().is_leader() {
            return Ok(Response::new(LeaseRenewResponse {
                not_leader: true,
                ..Default::default()
            }));
        }
        Ok(Response::new(
            match crate::services::lease::renew_local(&self.core, req.lease_id).await {
                Ok(ttl) => LeaseRenewResponse {
                    ttl,
                    ..Default::default()
                },
                Err(EtcdError::LeaseNotFound) => LeaseRenewResponse {
                    not_found: true,
                    ..Default::default()
                },
                Err(e) => return Err(e.into()),
            },
        ))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveForward>,
    ) -> Result<Response<LeaseTimeToLiveAnswer>, Status> {
        let req = req.into_inner();
        check_header(&self.ctx, req.header.as_ref())?;
        if !self.core.node.status().is_leader() {
            return Ok(Response::new(LeaseTimeToLiveAnswer {
                not_leader: true,
                ..Default::default()
            }));
        }
        let request = req.request.unwrap_or_default();
        let response = crate::services::lease::time_to_live_local(&self.core, request).await?;
        Ok(Response::new(LeaseTimeToLiveAnswer {
            response: Some(response),
            ..Default::default()
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteForward>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let req = req.into_inner();
        check_header(&self.ctx, req.header.as_ref())?;
        if !self.core.node.status().is_leader() {
            return Err(EtcdError::NotLeader.into());
        }
        let id = req.request.unwrap_or_default().id;
        let resp = crate::services::cluster::promote_on_leader(&self.core, id).await?;
        Ok(Response::new(resp))
    }
}
