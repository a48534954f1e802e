//! etcdserverpb.Cluster: the member list and runtime reconfiguration, with etcd's checks and
//! errors.
//!
//! - MemberAdd: a new id from the peer URLs and the time (etcd's formula with an empty token),
//!   proposed as a raft ConfChange (`AddNode` / `AddLearnerNode`) carrying the member. At most
//!   one learner; with `--strict-reconfig-check`, a voter is added only when enough voters have
//!   started to keep quorum afterwards.
//! - MemberRemove: removing the leader first hands leadership to another voter (raft-rs does
//!   not step a removed leader down); with strict checking a removal must leave a quorum of
//!   started voters. The removed member stops once it applies its removal.
//! - MemberUpdate: new peer URLs, a normal log entry (raft-rs has no ConfChangeUpdateNode).
//! - MemberPromote: decided by the leader (a follower forwards it over the peer port): only a
//!   learner whose log matches at least 90% of the leader's.

use crate::core::Core;
use crate::membership::{member_id, Member};
use cairn_api::cairnpb::{internal_request::Request as Internal, MemberUpdate};
use cairn_api::etcdserverpb::cluster_server::Cluster;
use cairn_api::etcdserverpb::{
    self, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use cairn_api::EtcdError;
use raft::eraftpb::ConfChangeType;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// etcd's `maxLearners`.
const MAX_LEARNERS: usize = 1;
/// etcd's `readyPercent`: a learner may be promoted once its log matches this much of the
/// leader's.
const LEARNER_READY_PERCENT: f64 = 0.9;

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

fn members_proto(core: &Core) -> Vec<etcdserverpb::Member> {
    core.membership
        .list()
        .iter()
        .map(Member::to_proto)
        .collect()
}

/// Peer URLs must be `scheme://host:port` with http or https, as etcd's `types.NewURLs`.
fn valid_peer_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls);
    }
    let mut out = Vec::new();
    for u in urls {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or(EtcdError::MemberBadUrls)?;
        let hostport = rest.trim_end_matches('/');
        let valid = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            && !hostport.contains('/');
        if !valid {
            return Err(EtcdError::MemberBadUrls);
        }
        out.push(u.clone());
    }
    out.sort();
    Ok(out)
}

/// Another member already has one of `urls`.
fn peer_urls_taken(core: &Core, urls: &[String], except: u64) -> bool {
    core.membership
        .list()
        .iter()
        .filter(|m| m.id != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
}

/// etcd's `IsReadyToAddVotingMember` / `IsReadyToRemoveVotingMember`: started voters (those
/// that published their attributes) must keep a quorum of the voters after the change.
fn enough_started(voters_after: usize, started_after: usize) -> bool {
    started_after > voters_after / 2
}

/// etcd's `HealthInterval`: a peer counts as connected once reachable this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// etcd's `isConnectedFullySince`: every voter has been reachable for the health interval.
fn connected_to_all_voters(core: &Core, voters: &[u64]) -> bool {
    let Some(since) = Instant::now().checked_sub(HEALTH_INTERVAL) else {
        return false;
    };
    core.peers.connected_since(voters, since) == voters.len()
}

/// Promotes learner `id`; runs on the leader.
pub async fn promote_on_leader(core: &Core, id: u64) -> Result<MemberPromoteResponse, EtcdError> {
    let member = core.membership.get(id).ok_or(EtcdError::MemberNotFound)?;
    if !member.is_learner {
        return Err(EtcdError::MemberNotLearner);
    }
    let progress = core
        .node
        .progress()
        .await
        .map_err(crate::errors::node_error)?;
    if !progress.is_leader {
        return Err(EtcdError::NotLeader);
    }
    let leader_match = progress.last_index;
    let learner_match = progress
        .peers
        .iter()
        .find(|p| p.id == id)
        .map_or(0, |p| p.matched);
    if (learner_match as f64) < (leader_match as f64) * LEARNER_READY_PERCENT {
        return Err(EtcdError::LearnerNotReady);
    }
    let promoted = Member {
        is_learner: false,
        ..member
    };
    core.propose_conf_change(ConfChangeType::AddNode, id, Some(&promoted))
        .await?;
    Ok(MemberPromoteResponse {
        header: Some(core.header(0)),
        members: members_proto(core),
    })
}

/// Hands leadership to the most caught-up other voter and waits until it has it.
async fn step_down(core: &Core) -> Result<(), EtcdError> {
    let progress = core
        .node
        .progress()
        .await
        .map_err(crate::errors::node_error)?;
    let target = progress
        .peers
        .iter()
        .filter(|p| p.id != core.member.id && !p.is_learner && p.recent_active)
        .max_by_key(|p| p.matched)
        .map(|p| p.id)
        .ok_or(EtcdError::MemberNotEnoughStarted)?;
    transfer_leadership(core, target).await
}

/// Asks raft to transfer leadership to `target` and waits for the result.
pub async fn transfer_leadership(core: &Core, target: u64) -> Result<(), EtcdError> {
    let deadline = Instant::now() + core.cfg.request_timeout();
    let mut leader = core.node.leader_watch();
    let mut next_try = Instant::now();
    loop {
        if *leader.borrow_and_update() == target {
            return Ok(());
        }
        if Instant::now() >= next_try {
            core.node.transfer_leader(target);
            // raft gives up on a transfer after an election timeout; ask again then.
            next_try = Instant::now() + core.cfg.election_timeout;
        }
        let wait = next_try.min(deadline);
        if tokio::time::timeout_at(wait.into(), leader.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return Err(EtcdError::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(EtcdError::TimeoutLeaderTransfer);
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let req = req.into_inner();
        let urls = valid_peer_urls(&req.peer_ur_ls)?;
        let state = core.membership.state();
        if peer_urls_taken(core, &urls, 0) {
            return Err(EtcdError::PeerUrlExist.into());
        }
        if req.is_learner {
            let learners = state.members.values().filter(|m| m.is_learner).count();
            if learners + 1 > MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners.into());
            }
        } else if core.cfg.strict_reconfig_check {
            let voters = state.voters();
            let started = state.started_voters_except(0);
            // etcd lets a lone started member add a second one (restoring a cluster).
            let restoring = started == 1 && voters == 1;
            if !restoring && !enough_started(voters + 1, started) {
                return Err(EtcdError::MemberNotEnoughStarted.into());
            }
        }
        if core.cfg.strict_reconfig_check && !connected_to_all_voters(core, &state.voter_ids()) {
            return Err(EtcdError::Unhealthy.into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let id = member_id(&urls, "", Some(now));
        if state.members.contains_key(&id) || state.removed.contains(&id) {
            return Err(EtcdError::MemberExist.into());
        }
        let member = Member {
            id,
            name: String::new(),
            peer_urls: urls,
            client_urls: vec![],
            is_learner: req.is_learner,
        };
        let change = if req.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        core.propose_conf_change(change, id, Some(&member)).await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(core.header(0)),
            member: Some(member.to_proto()),
            members: members_proto(core),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let id = req.into_inner().id;
        let state = core.membership.state();
        let Some(member) = state.members.get(&id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if core.cfg.strict_reconfig_check && !member.is_learner {
            let voters = state.voters();
            let started = state.started_voters_except(id);
            if voters > 1 && !enough_started(voters - 1, started) {
                return Err(EtcdError::MemberNotEnoughStarted.into());
            }
            // A member that is down is safe to remove: it is not part of the active quorum.
            let down = id != core.member.id && core.peers.active_since(id).is_none();
            if !down {
                let ids = state.voter_ids();
                let active = Instant::now()
                    .checked_sub(HEALTH_INTERVAL)
                    .map_or(1, |since| core.peers.connected_since(&ids, since));
                if active - 1 < 1 + (ids.len() - 1) / 2 {
                    return Err(EtcdError::Unhealthy.into());
                }
            }
        }
        if id == core.member.id && core.node.status().is_leader() {
            step_down(core).await?;
        }
        core.propose_conf_change(ConfChangeType::RemoveNode, id, None)
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(core.header(0)),
            members: members_proto(core),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let req = req.into_inner();
        let urls = valid_peer_urls(&req.peer_ur_ls)?;
        if core.membership.get(req.id).is_none() {
            return Err(EtcdError::MemberNotFound.into());
        }
        if peer_urls_taken(core, &urls, req.id) {
            return Err(EtcdError::PeerUrlExist.into());
        }
        core.propose(Internal::MemberUpdate(MemberUpdate {
            member_id: req.id,
            peer_urls: urls,
        }))
        .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(core.header(0)),
            members: members_proto(core),
        }))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let core = &self.core;
        if req.get_ref().linearizable {
            core.linearizable_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            // etcd's MemberList header carries no revision.
            header: Some(core.header(0)),
            members: members_proto(core),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let id = req.into_inner().id;
        let deadline = Instant::now() + core.cfg.request_timeout();
        loop {
            if core.node.status().is_leader() {
                return Ok(Response::new(promote_on_leader(core, id).await?));
            }
            match crate::peer::forward::promote(core, id).await {
                Err(s) if EtcdError::from_status(&s) == Some(EtcdError::NotLeader) => {}
                Err(s) if EtcdError::from_status(&s) == Some(EtcdError::NoLeader) => {}
                other => return other.map(Response::new),
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::Timeout.into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_validated_and_sorted() {
        assert_eq!(
            valid_peer_urls(&["http://b:2".into(), "https://a:1".into()]),
            Ok(vec!["http://b:2".to_string(), "https://a:1".to_string()])
        );
        for bad in [
            "",
            "a:1",
            "ftp://a:1",
            "http://a",
            "http://:1",
            "http://a:1/x",
        ] {
            assert_eq!(
                valid_peer_urls(&[bad.to_string()]),
                Err(EtcdError::MemberBadUrls),
                "{bad}"
            );
        }
        assert_eq!(valid_peer_urls(&[]), Err(EtcdError::MemberBadUrls));
    }
}
