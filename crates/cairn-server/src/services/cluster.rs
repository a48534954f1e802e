//! etcdserverpb.Cluster: MemberList. Membership changes (add, remove, update, promote) come
//! with multi-member clusters and answer `Unimplemented` until then.

use crate::core::Core;
use cairn_api::etcdserverpb::cluster_server::Cluster;
use cairn_api::etcdserverpb::{Member, MemberListRequest, MemberListResponse};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Cluster service.
pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    /// A Cluster service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        ClusterService { core }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let core = &self.core;
        let members = core
            .members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect();
        Ok(Response::new(MemberListResponse {
            // etcd's MemberList header carries no revision.
            header: Some(core.header(0)),
            members,
        }))
    }
}
