//! The primary's expiry loop: proposes a revoke, through raft, for every lease past its
//! expiry, and the due checkpoints when checkpointing is on. Also demotes the lessor as soon
//! as this member stops leading the term it was promoted in.
//!
//! etcd looks every 500 ms; this loop also wakes at the earliest deadline the lessor knows of,
//! so a lease goes within a few milliseconds of its expiry (plus the revoke's trip through
//! raft), never before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::cairnpb::internal_request::Request;
use cairn_api::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use cairn_api::EtcdError;
use tokio::sync::{watch, Semaphore};

use super::checkpoint::MAX_BATCH;
use super::lessor::REVOKE_RATE;
use crate::core::Core;

/// The loop looks at least this often (etcd's lessor loop period).
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Revokes in flight at most (etcd's `maxPendingRevokes`).
const MAX_PENDING_REVOKES: usize = 16;

/// Starts the loop; it ends when `stop` turns true or raft stops.
pub fn spawn(core: Arc<Core>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(core, stop))
}

async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut leader = core.node.leader_watch();
    let pending = Arc::new(Semaphore::new(MAX_PENDING_REVOKES));
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        if let Some(term) = core.lessor.primary_term() {
            let status = core.node.status();
            if !status.is_leader() || status.term() != term {
                tracing::info!(
                    term,
                    "no longer the leader of the promoted term; demoting the lessor"
                );
                core.lessor.demote();
            }
        }
        let now = Instant::now();
        for id in core.lessor.take_expired(now, REVOKE_RATE / 2) {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                break;
            };
            let core = core.clone();
            tokio::spawn(async move {
                let res = core
                    .propose(Request::LeaseRevoke(LeaseRevokeRequest { id }))
                    .await;
                match res {
                    Ok(_) => {
                        tracing::debug!(lease_id = %format!("{id:016x}"), "revoked an expired lease")
                    }
                    // Revoked by someone else meanwhile.
                    Err(EtcdError::LeaseNotFound) => {}
                    Err(e) => {
                        tracing::warn!(lease_id = %format!("{id:016x}"), error = %e, "failed to revoke lease")
                    }
                }
                drop(permit);
            });
        }
        let due = core.lessor.due_checkpoints(now, MAX_BATCH);
        if !due.is_empty() {
            let core = core.clone();
            tokio::spawn(async move {
                let n = due.len();
                let req = LeaseCheckpointRequest {
                    checkpoints: due
                        .into_iter()
                        .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                        .collect(),
                };
                if let Err(e) = core.propose(Request::LeaseCheckpoint(req)).await {
                    tracing::warn!(checkpoints = n, error = %e, "failed to checkpoint leases");
                }
            });
        }
        let cap = Instant::now() + CHECK_INTERVAL;
        let next = core
            .lessor
            .next_deadline(Instant::now())
            .map_or(cap, |d| d.min(cap));
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = core.lessor.woken() => {}
            r = leader.changed() => if r.is_err() { break },
            r = stop.changed() => if r.is_err() { break },
        }
    }
}
