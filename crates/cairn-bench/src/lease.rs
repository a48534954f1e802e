//! Lease keep-alive: grant `leases` leases (the grant phase is reported in the details), then send
//! `--total` keep-alives spread round-robin over them. Each keep-alive is etcd's
//! `KeepAliveOnce`, as in etcd's `tools/benchmark lease-keepalive`: open a LeaseKeepAlive
//! stream, send one request, wait for the answer (a TTL ≤ 0 — lease not found — is an error),
//! close. The leases are left to expire.

use crate::keys::KeyGen;
use crate::report::ms;
use crate::run::{closed_loop, Op};
use crate::{connect, BenchError, Common, Report};
use std::sync::Arc;

/// Options of the lease-keepalive workload.
#[derive(Clone, Debug)]
pub struct LeaseOpts {
    /// Leases to grant and keep alive.
    pub leases: usize,
    /// TTL of each lease, seconds.
    pub ttl: i64,
}

impl Default for LeaseOpts {
    fn default() -> Self {
        LeaseOpts {
            leases: 1_000,
            ttl: 60,
        }
    }
}

/// Runs the lease-keepalive workload; see the module documentation.
pub async fn lease_keepalive(common: &Common, opts: &LeaseOpts) -> Result<Report, BenchError> {
    common.validate()?;
    if opts.leases == 0 || opts.ttl <= 0 {
        return Err(anyhow::anyhow!("need --leases ≥ 1 and --ttl ≥ 1").into());
    }
    let clients = connect(common).await?;
    let nokeys = KeyGen::new("", 1, 1)?;
    let grants = closed_loop(
        common,
        &clients,
        Op::LeaseGrant { ttl: opts.ttl },
        nokeys.clone(),
        opts.leases as u64,
    )
    .await;
    if let Some(message) = grants.unimplemented {
        return Err(BenchError::Unimplemented {
            service: "Lease",
            message,
        });
    }
    if grants.lease_ids.is_empty() {
        return Err(
            anyhow::anyhow!("no lease could be granted: {:?}", grants.report.error_kinds).into(),
        );
    }
    let ids = Arc::new(grants.lease_ids);
    let n = ids.len();
    let ka = closed_loop(
        common,
        &clients,
        Op::LeaseKeepAlive { ids },
        nokeys,
        common.total,
    )
    .await;
    if let Some(message) = ka.unimplemented {
        return Err(BenchError::Unimplemented {
            service: "Lease",
            message,
        });
    }
    let mut rep = ka.report;
    rep.name = "lease-keepalive".into();
    for (k, v) in &grants.report.error_kinds {
        rep.errors += v;
        *rep.error_kinds.entry(format!("grant: {k}")).or_default() += v;
    }
    let g = &grants.report;
    rep.push_extra("leases_granted", n);
    rep.push_extra("ttl_s", opts.ttl);
    rep.push_extra("grants_per_sec", g.rps());
    rep.push_extra("grant_p50_ms", ms(g.hist.quantile(0.5)));
    rep.push_extra("grant_p99_ms", ms(g.hist.quantile(0.99)));
    rep.push_extra("clients", common.clients);
    rep.push_extra("conns", common.conns);
    Ok(rep)
}
