//! etcdserverpb.Maintenance: Status, Alarm listing, HashKV and MoveLeader. The other RPCs
//! (defragment, hash, snapshot, downgrade) are not built yet and answer `Unimplemented`.

use crate::config::ETCD_COMPAT_VERSION;
use crate::core::Core;
use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::maintenance_server::Maintenance;
use cairn_api::etcdserverpb::{
    AlarmRequest, AlarmResponse, HashKvRequest, HashKvResponse, MoveLeaderRequest,
    MoveLeaderResponse, StatusRequest, StatusResponse,
};
use cairn_api::EtcdError;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Maintenance service.
pub struct MaintenanceService {
    core: Arc<Core>,
}

impl MaintenanceService {
    /// A Maintenance service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        MaintenanceService { core }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        if req.action() != AlarmAction::Get {
            return Err(Status::unimplemented(
                "raising and clearing alarms is not implemented yet",
            ));
        }
        // cairn raises no alarm yet (no space quota, no corruption check), so the list is
        // truthfully empty.
        // etcd answers an alarm request with no header at all.
        Ok(Response::new(AlarmResponse {
            header: None,
            alarms: vec![],
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let core = &self.core;
        let st = core.node.status();
        Ok(Response::new(StatusResponse {
            header: Some(core.header(core.store.current_revision())),
            version: ETCD_COMPAT_VERSION.to_string(),
            db_size: core.store.db_size() as i64,
            leader: st.leader_id(),
            raft_index: st.commit_index(),
            raft_term: st.term(),
            raft_applied_index: core.applied_index(),
            // etcd reports a member without a leader this way (etcdctl shows it).
            errors: if st.leader_id() == 0 {
                vec![EtcdError::NoLeader.message().to_string()]
            } else {
                vec![]
            },
            db_size_in_use: core.store.db_size_in_use() as i64,
            is_learner: st.is_learner(),
            ..Default::default()
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let core = self.core.clone();
        let revision = req.into_inner().revision;
        let hash = tokio::task::spawn_blocking(move || core.store.hash_kv(revision))
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?
            .map_err(crate::errors::mvcc_error)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.core.header(self.core.store.current_revision())),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    /// etcd's MoveLeader: only the leader may hand leadership over, only to a voter.
    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let core = &self.core;
        let target = req.into_inner().target_id;
        if !core.node.status().is_leader() {
            return Err(EtcdError::NotLeader.into());
        }
        match core.membership.get(target) {
            Some(m) if !m.is_learner => {}
            _ => return Err(EtcdError::BadLeaderTransferee.into()),
        }
        tracing::info!(
            transferee_member_id = %format!("{target:x}"),
            "leadership transfer starting"
        );
        crate::services::cluster::transfer_leadership(core, target).await?;
        tracing::info!(
            new_leader_member_id = %format!("{target:x}"),
            "leadership transfer finished"
        );
        Ok(Response::new(MoveLeaderResponse {
            header: Some(core.header(core.store.current_revision())),
        }))
    }
}
