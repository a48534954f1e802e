//! Leases, with etcd's semantics.
//!
//! - Grants, revokes and checkpoints go through raft; the apply thread writes them to the
//!   backend ([`cairn_mvcc::WriteBatch::lease_grant`] and friends, in the batch's transaction)
//!   through [`PendingLessor`], and hands the committed changes to the [`Lessor`].
//! - The [`Lessor`] (`lessor.rs`) holds every lease's TTL and, on the primary (the leader,
//!   once it applied its term's first entry), its expiry.
//! - The leader's expiry loop (`expiry.rs`) proposes a revoke for each expired lease and, with
//!   checkpointing on, the due checkpoints (`checkpoint.rs`).
//! - The gRPC service is `services/lease.rs`.

pub mod checkpoint;
pub mod expiry;
pub mod lessor;

pub use lessor::{Lessor, LessorConfig, LessorOp, Renewal};

use std::time::{Duration, Instant};

use cairn_api::cairnpb::internal_request::Request;
use cairn_api::etcdserverpb::{LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse};
use cairn_api::EtcdError;
use cairn_mvcc::WriteBatch;

use crate::apply::Applied;
use crate::config::ServerConfig;
use crate::core::Core;
use crate::errors::mvcc_error;

/// The largest TTL a lease may be granted (etcd's `MaxLeaseTTL`), in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's minimum lease TTL: one and a half election timeouts (counted in whole heartbeat
/// ticks, `3 * election_ticks / 2`), rounded up to whole seconds. Shorter TTLs are raised to it.
pub fn min_ttl(cfg: &ServerConfig) -> i64 {
    let ticks = (3 * cfg.election_ticks() / 2) as u32;
    let d = cfg.heartbeat_interval * ticks;
    d.as_secs_f64().ceil() as i64
}

/// The election timeout as etcd's lessor is promoted with it: election ticks × heartbeat.
pub fn promote_extend(cfg: &ServerConfig) -> Duration {
    cfg.heartbeat_interval * cfg.election_ticks() as u32
}

/// The lessor settings `cfg` asks for.
pub fn lessor_config(cfg: &ServerConfig) -> LessorConfig {
    LessorConfig {
        min_ttl: min_ttl(cfg),
        revoke_retry: cfg.request_timeout(),
        checkpoint_interval: cfg
            .lease_checkpoint
            .then_some(cfg.lease_checkpoint_interval),
    }
}

/// What applying one batch does to leases: the backend writes go into the batch, the lessor
/// changes wait in `ops` until the batch is committed ([`PendingLessor::commit`]).
pub struct PendingLessor {
    min_ttl: i64,
    persist_checkpoints: bool,
    extend: Duration,
    ops: Vec<LessorOp>,
}

impl PendingLessor {
    /// Nothing pending yet.
    pub fn new(core: &Core) -> Self {
        PendingLessor {
            min_ttl: core.lessor.config().min_ttl,
            persist_checkpoints: core.cfg.lease_checkpoint_persist,
            extend: promote_extend(&core.cfg),
            ops: Vec::new(),
        }
    }

    /// Applies a LeaseGrant, LeaseRevoke or LeaseCheckpoint as etcd's applier does.
    pub fn apply(&mut self, wb: &mut WriteBatch<'_>, req: Request) -> Result<Applied, EtcdError> {
        match req {
            Request::LeaseGrant(r) => {
                // As etcd's lessor.Grant: id 0 is no lease, the maximum is checked before the
                // lease's existence, the minimum raises the TTL.
                if r.id == 0 {
                    return Err(EtcdError::LeaseNotFound);
                }
                if r.ttl > MAX_LEASE_TTL {
                    return Err(EtcdError::LeaseTtlTooLarge);
                }
                let ttl = r.ttl.max(self.min_ttl);
                wb.lease_grant(r.id, ttl).map_err(mvcc_error)?;
                self.ops.push(LessorOp::Granted { id: r.id, ttl });
                Ok(Applied::LeaseGrant(LeaseGrantResponse {
                    header: None,
                    id: r.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Request::LeaseRevoke(r) => {
                wb.lease_revoke(r.id).map_err(mvcc_error)?;
                self.ops.push(LessorOp::Revoked { id: r.id });
                Ok(Applied::LeaseRevoke(LeaseRevokeResponse { header: None }))
            }
            Request::LeaseCheckpoint(r) => {
                for cp in r.checkpoints {
                    let exists = if self.persist_checkpoints {
                        wb.lease_checkpoint(cp.id, cp.remaining_ttl)
                    } else {
                        wb.lease(cp.id).map(|l| l.is_some())
                    }
                    .map_err(mvcc_error)?;
                    if exists {
                        self.ops.push(LessorOp::Checkpointed {
                            id: cp.id,
                            remaining_ttl: cp.remaining_ttl,
                        });
                    }
                }
                Ok(Applied::LeaseCheckpoint(LeaseCheckpointResponse {
                    header: None,
                }))
            }
            _ => Err(EtcdError::NotCapable),
        }
    }

    /// An empty normal entry of `term` was applied: when this member leads that term, it has
    /// now applied everything of earlier terms and becomes the primary lessor (etcd promotes
    /// on the same entry).
    pub fn empty_entry(&mut self, core: &Core, term: u64) {
        let status = core.node.status();
        if status.is_leader() && status.term() == term {
            self.ops.push(LessorOp::Promote {
                term,
                extend: self.extend,
            });
        }
    }

    /// Hands the changes to the lessor once the batch is committed.
    pub fn commit(self, core: &Core) {
        core.lessor.apply(self.ops, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(heartbeat_ms: u64, election_ms: u64) -> ServerConfig {
        let mut c = ServerConfig::with_defaults("t", "/tmp/unused".into());
        c.heartbeat_interval = Duration::from_millis(heartbeat_ms);
        c.election_timeout = Duration::from_millis(election_ms);
        c
    }

    #[test]
    fn min_ttl_as_etcd_computes_it() {
        // Defaults: 10 ticks of 100 ms → 15 ticks → 1.5 s → 2 s.
        assert_eq!(min_ttl(&cfg(100, 1000)), 2);
        // 5 ticks → 7 ticks (integer halving) → 0.7 s → 1 s.
        assert_eq!(min_ttl(&cfg(100, 500)), 1);
        // 20 ticks of 100 ms → 30 ticks → 3 s exactly.
        assert_eq!(min_ttl(&cfg(100, 2000)), 3);
        // 10 ticks of 250 ms → 15 ticks → 3.75 s → 4 s.
        assert_eq!(min_ttl(&cfg(250, 2500)), 4);
        assert_eq!(promote_extend(&cfg(100, 500)), Duration::from_millis(500));
    }

    #[test]
    fn lessor_rebuilds_from_the_store() {
        use cairn_mvcc::{Store, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, StoreOptions::default()).unwrap();
            let mut wb = store.begin_write().unwrap();
            wb.lease_grant(1, 1).unwrap();
            wb.lease_grant(2, 100).unwrap();
            wb.lease_grant(3, 100).unwrap();
            wb.lease_checkpoint(2, 40).unwrap();
            wb.lease_revoke(3).unwrap();
            wb.commit(false).unwrap();
        }
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let l = Lessor::new(LessorConfig {
            min_ttl: 2,
            revoke_retry: Duration::from_secs(5),
            checkpoint_interval: None,
        });
        l.recover(store.leases().unwrap());
        assert_eq!(l.leases(), vec![1, 2]);
        let now = Instant::now();
        l.apply(
            vec![LessorOp::Promote {
                term: 1,
                extend: Duration::from_secs(1),
            }],
            now,
        );
        // Lease 1 raised to the minimum; lease 2 from its checkpoint; both plus the extension.
        assert_eq!(l.time_to_live(1, now), Some((3, 2)));
        assert_eq!(l.time_to_live(2, now), Some((41, 100)));
        assert_eq!(l.time_to_live(3, now), None);
    }
}
