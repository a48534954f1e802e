//! Requests a follower forwards to the leader over the peer port: lease keep-alives and
//! time-to-live (only the leader tracks expiry) and learner promotion (only the leader knows
//! how far the learner's log is).

use crate::core::Core;
use crate::peer::dial::DialOptions;
use cairn_api::cairnpb::{
    peer_client::PeerClient, LeaseRenewRequest, LeaseTimeToLiveForward, MemberPromoteForward,
};
use cairn_api::etcdserverpb::{
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MemberPromoteRequest, MemberPromoteResponse,
};
use cairn_api::EtcdError;
use std::time::Duration;
use tonic::transport::Channel;

/// What the leader answered to a forwarded keep-alive.
pub enum Renewed {
    /// The lease's TTL.
    Ttl(i64),
    /// The lease does not exist.
    NotFound,
    /// The member asked is no longer the leader; ask again.
    NotLeader,
}

async fn leader_client(core: &Core) -> Result<(u64, PeerClient<Channel>), EtcdError> {
    let leader = core.node.status().leader_id();
    if leader == 0 {
        return Err(EtcdError::NoLeader);
    }
    let url = core.peers.peer_url(leader).ok_or(EtcdError::NoLeader)?;
    let cached = core
        .peers
        .forward_channel
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .filter(|(id, u, _)| *id == leader && *u == url)
        .map(|(_, _, c)| c.clone());
    let channel = match cached {
        Some(c) => c,
        None => {
            // Connected lazily: a channel survives reconnects to the same URL.
            let opts = DialOptions {
                request_timeout: Some(core.cfg.request_timeout()),
                lazy: true,
                ..DialOptions::now(Duration::from_secs(1))
            };
            let c = core.peers.dialer.channel(&url, opts).await.map_err(|e| {
                tracing::warn!(url = %url, error = %e, "cannot reach the leader's peer URL");
                EtcdError::NoLeader
            })?;
            *core
                .peers
                .forward_channel
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((leader, url, c.clone()));
            c
        }
    };
    Ok((leader, PeerClient::new(channel)))
}

/// Renews `id` on the leader.
pub async fn renew(core: &Core, id: i64) -> Result<Renewed, EtcdError> {
    let (leader, mut client) = leader_client(core).await?;
    let resp = client
        .lease_renew(LeaseRenewRequest {
            header: Some(core.peers.header_to(leader)),
            lease_id: id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(if resp.not_leader {
        Renewed::NotLeader
    } else if resp.not_found {
        Renewed::NotFound
    } else {
        Renewed::Ttl(resp.ttl)
    })
}

/// Asks the leader for a lease's TTL; `None` when it turned out not to be the leader.
pub async fn time_to_live(
    core: &Core,
    request: LeaseTimeToLiveRequest,
) -> Result<Option<LeaseTimeToLiveResponse>, EtcdError> {
    let (leader, mut client) = leader_client(core).await?;
    let resp = client
        .lease_time_to_live(LeaseTimeToLiveForward {
            header: Some(core.peers.header_to(leader)),
            request: Some(request),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(if resp.not_leader { None } else { resp.response })
}

/// Asks the leader to promote learner `id`.
pub async fn promote(core: &Core, id: u64) -> Result<MemberPromoteResponse, tonic::Status> {
    let (leader, mut client) = leader_client(core).await?;
    client
        .member_promote(MemberPromoteForward {
            header: Some(core.peers.header_to(leader)),
            request: Some(MemberPromoteRequest { id }),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A failed forward: the leader's own etcd error passes through; transport trouble reads as
/// etcd's timeout.
fn status_error(s: tonic::Status) -> EtcdError {
    EtcdError::from_message(s.message()).unwrap_or(EtcdError::Timeout)
}
