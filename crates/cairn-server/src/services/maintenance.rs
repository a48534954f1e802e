//! etcdserverpb.Maintenance: Status and Alarm listing. The other RPCs (defragment, hash,
//! snapshot, move-leader, downgrade) are not built yet and answer `Unimplemented`.

use crate::config::ETCD_COMPAT_VERSION;
use crate::core::Core;
use cairn_api::etcdserverpb::alarm_request::AlarmAction;
use cairn_api::etcdserverpb::maintenance_server::Maintenance;
use cairn_api::etcdserverpb::{AlarmRequest, AlarmResponse, StatusRequest, StatusResponse};
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
            errors: vec![],
            db_size_in_use: core.store.db_size_in_use() as i64,
            is_learner: core.member.is_learner,
            ..Default::default()
        }))
    }
}
