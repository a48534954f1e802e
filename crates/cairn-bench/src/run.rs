//! The closed-loop workloads: every client loop sends one request, waits for the answer, records
//! its latency and sends the next, until `--total` requests have been handed out.
//!
//! With `--rate` the request numbered `i` is not sent before `start + i / rate`; its latency is
//! still measured from when it was sent (a closed loop: a slow server slows the senders down
//! rather than building a queue).

use crate::keys::{value, KeyGen, Rng};
use crate::report::Report;
use crate::{connect, error_text, is_unimplemented, BenchError, Common};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KvClient, LeaseClient, Txn, TxnOp, TxnOpResponse,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A closed-loop workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// One Put per request.
    Put,
    /// One Range per request: a single key (`keys == 1`) or `keys` consecutive keys.
    Range {
        /// Keys per request.
        keys: u64,
        /// Serializable (`--consistency s`) instead of linearizable.
        serializable: bool,
    },
    /// One Txn of `ops` Puts on consecutive keys per request.
    TxnPut {
        /// Puts per Txn.
        ops: usize,
    },
    /// Kubernetes-style optimistic update per request: Range the key, then
    /// `Txn(If ModRevision(key) == rev Then Put Else Range)`, retried with the revision the Else
    /// branch returns until it succeeds. The latency covers the whole update; retries are counted
    /// as `conflicts`.
    K8sUpdate,
    /// Pre-loads the whole key space (keys `0..key_space_size`), `batch` Puts per Txn.
    Load {
        /// Puts per Txn (etcd's `--max-txn-ops` default is 128).
        batch: usize,
    },
}

impl Workload {
    /// The name used in reports.
    pub fn name(&self) -> String {
        match self {
            Workload::Put => "put".into(),
            Workload::Range { keys, serializable } => format!(
                "range ({} key{}, {})",
                keys,
                if *keys == 1 { "" } else { "s" },
                if *serializable {
                    "serializable"
                } else {
                    "linearizable"
                }
            ),
            Workload::TxnPut { ops } => format!("txn-put ({ops} puts per txn)"),
            Workload::K8sUpdate => "k8s-update".into(),
            Workload::Load { batch } => format!("load ({batch} puts per txn)"),
        }
    }
}

/// What the closed loop executes; the public workloads plus the lease phases.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Kv(Workload),
    /// A Put whose acknowledgement time and revision are kept (for watch latency).
    PutAck,
    LeaseGrant {
        ttl: i64,
    },
    LeaseKeepAlive {
        ids: Arc<Vec<i64>>,
    },
}

/// Per-operation results beyond the latency.
#[derive(Default)]
struct Done {
    conflicts: u64,
    items: u64,
    lease: Option<i64>,
    rev: Option<i64>,
}

/// What one closed-loop run returns.
pub(crate) struct LoopResult {
    pub report: Report,
    pub conflicts: u64,
    pub items: u64,
    pub lease_ids: Vec<i64>,
    /// `(revision, sent at, acknowledged at)` of every [`Op::PutAck`].
    pub acks: Vec<(i64, Instant, Instant)>,
    pub unimplemented: Option<String>,
}

impl LoopResult {
    fn new() -> Self {
        LoopResult {
            report: Report::new(""),
            conflicts: 0,
            items: 0,
            lease_ids: Vec::new(),
            acks: Vec::new(),
            unimplemented: None,
        }
    }
}

struct Ctx {
    common: Common,
    op: Op,
    keys: KeyGen,
    val: Vec<u8>,
    total: u64,
    next: AtomicU64,
    stop: AtomicBool,
    start: Instant,
}

/// Runs a closed-loop workload against `common.endpoints` and reports it.
pub async fn run(common: &Common, workload: &Workload) -> Result<Report, BenchError> {
    common.validate()?;
    let clients = connect(common).await?;
    let (total, space) = match workload {
        Workload::Load { batch } => {
            if *batch == 0 {
                return Err(anyhow::anyhow!("--batch must be at least 1").into());
            }
            (
                common.key_space_size.div_ceil(*batch as u64),
                common.key_space_size,
            )
        }
        Workload::TxnPut { ops } => {
            if *ops == 0 || *ops as u64 > common.key_space_size {
                return Err(anyhow::anyhow!(
                    "--txn-ops must be between 1 and --key-space-size ({})",
                    common.key_space_size
                )
                .into());
            }
            (common.total, common.key_space_size)
        }
        Workload::Range { keys: 0, .. } => {
            return Err(anyhow::anyhow!("--keys must be at least 1").into())
        }
        _ => (common.total, common.key_space_size),
    };
    let keys = KeyGen::new(&common.prefix, common.key_size, space)?;
    let res = closed_loop(common, &clients, Op::Kv(workload.clone()), keys, total).await;
    if let Some(msg) = res.unimplemented {
        return Err(BenchError::Unimplemented {
            service: "KV",
            message: msg,
        });
    }
    let mut rep = res.report;
    rep.name = workload.name();
    match workload {
        Workload::K8sUpdate => {
            rep.push_extra("conflicts", res.conflicts);
            rep.push_extra(
                "conflicts_per_update",
                res.conflicts as f64 / rep.ok.max(1) as f64,
            );
        }
        Workload::Range { .. } => {
            rep.push_extra("keys_returned_avg", res.items as f64 / rep.ok.max(1) as f64);
            if res.items == 0 && rep.ok > 0 {
                rep.notes.push(
                    "every range came back empty: load the key space first (`cairn-bench load`)"
                        .into(),
                );
            }
        }
        Workload::Load { .. } => {
            rep.push_extra("keys_loaded", res.items);
            rep.push_extra(
                "keys_per_sec",
                res.items as f64 / rep.elapsed.as_secs_f64().max(1e-9),
            );
        }
        Workload::TxnPut { ops } => rep.push_extra("puts_per_sec", rep.rps() * *ops as f64),
        Workload::Put => {}
    }
    rep.push_extra("clients", common.clients);
    rep.push_extra("conns", common.conns);
    Ok(rep)
}

/// Runs `op` `total` times from `common.clients` loops over `clients` (round-robin).
pub(crate) async fn closed_loop(
    common: &Common,
    clients: &[Client],
    op: Op,
    keys: KeyGen,
    total: u64,
) -> LoopResult {
    let ctx = Arc::new(Ctx {
        common: common.clone(),
        op,
        keys,
        val: value(common.val_size),
        total,
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        start: Instant::now(),
    });
    let mut tasks = Vec::with_capacity(common.clients);
    for i in 0..common.clients {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(client_loop(ctx.clone(), i, client)));
    }
    let mut out = LoopResult::new();
    for t in tasks {
        match t.await {
            Ok(r) => {
                out.report.absorb(&r.report);
                out.conflicts += r.conflicts;
                out.items += r.items;
                out.lease_ids.extend(r.lease_ids);
                out.acks.extend(r.acks);
                if out.unimplemented.is_none() {
                    out.unimplemented = r.unimplemented;
                }
            }
            Err(e) => out.report.add_error(format!("client task failed: {e}")),
        }
    }
    out.report.elapsed = ctx.start.elapsed();
    out
}

async fn client_loop(ctx: Arc<Ctx>, idx: usize, client: Client) -> LoopResult {
    let mut out = LoopResult::new();
    let mut rng = Rng::new(idx as u64 + 1);
    let mut kv = client.kv_client();
    let mut lease = client.lease_client();
    let timeout = ctx.common.timeout;
    while !ctx.stop.load(Ordering::Relaxed) {
        let seq = ctx.next.fetch_add(1, Ordering::Relaxed);
        if seq >= ctx.total {
            break;
        }
        if ctx.common.rate > 0.0 {
            let at = ctx.start + Duration::from_secs_f64(seq as f64 / ctx.common.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let t0 = Instant::now();
        let r =
            tokio::time::timeout(timeout, one_op(&ctx, &mut kv, &mut lease, &mut rng, seq)).await;
        let dt = t0.elapsed();
        match r {
            Ok(Ok(done)) => {
                out.report.ok += 1;
                out.report.hist.record(dt);
                out.conflicts += done.conflicts;
                out.items += done.items;
                out.lease_ids.extend(done.lease);
                if let Some(rev) = done.rev {
                    out.acks.push((rev, t0, t0 + dt));
                }
            }
            Ok(Err(e)) => {
                if is_unimplemented(&e) {
                    // A missing service fails every request alike: stop at once.
                    out.unimplemented = Some(error_text(&e));
                    ctx.stop.store(true, Ordering::Relaxed);
                }
                out.report.add_error(error_text(&e));
            }
            Err(_) => out
                .report
                .add_error(format!("no answer within the client timeout ({timeout:?})")),
        }
    }
    out
}

/// Picks the key number for request `seq`.
fn pick(ctx: &Ctx, rng: &mut Rng, seq: u64, space: u64) -> u64 {
    if ctx.common.sequential_keys {
        seq % space
    } else {
        rng.below(space)
    }
}

async fn one_op(
    ctx: &Ctx,
    kv: &mut KvClient,
    lease: &mut LeaseClient,
    rng: &mut Rng,
    seq: u64,
) -> Result<Done, etcd_client::Error> {
    let space = ctx.common.key_space_size;
    match &ctx.op {
        Op::Kv(Workload::Put) => {
            let k = ctx.keys.key(pick(ctx, rng, seq, space));
            kv.put(k, ctx.val.clone(), None).await?;
            Ok(Done::default())
        }
        Op::PutAck => {
            let k = ctx.keys.key(pick(ctx, rng, seq, space));
            let r = kv.put(k, ctx.val.clone(), None).await?;
            Ok(Done {
                rev: r.header().map(|h| h.revision()),
                ..Default::default()
            })
        }
        Op::Kv(Workload::Range { keys, serializable }) => {
            let mut opts = GetOptions::new();
            if *serializable {
                opts = opts.with_serializable();
            }
            let n = (*keys).min(space);
            let first = pick(ctx, rng, seq, space - n + 1);
            if *keys > 1 {
                opts = opts.with_range(ctx.keys.range_end_after(first + n - 1));
            }
            let resp = kv.get(ctx.keys.key(first), Some(opts)).await?;
            Ok(Done {
                items: resp.kvs().len() as u64,
                ..Default::default()
            })
        }
        Op::Kv(Workload::TxnPut { ops }) => {
            let base = pick(ctx, rng, seq, space);
            let puts: Vec<TxnOp> = (0..*ops as u64)
                .map(|j| TxnOp::put(ctx.keys.key((base + j) % space), ctx.val.clone(), None))
                .collect();
            kv.txn(Txn::new().and_then(puts)).await?;
            Ok(Done::default())
        }
        Op::Kv(Workload::K8sUpdate) => {
            let key = ctx.keys.key(pick(ctx, rng, seq, space));
            let resp = kv.get(key.clone(), None).await?;
            let mut rev = resp.kvs().first().map_or(0, |kv| kv.mod_revision());
            let mut conflicts = 0u64;
            loop {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key.clone(), ctx.val.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                let r = kv.txn(txn).await?;
                if r.succeeded() {
                    return Ok(Done {
                        conflicts,
                        ..Default::default()
                    });
                }
                conflicts += 1;
                if conflicts >= 1_000 {
                    return Err(etcd_client::Error::InvalidArgs(
                        "k8s-update: 1,000 conflicts in a row on one key".into(),
                    ));
                }
                rev = match r.op_responses().first() {
                    Some(TxnOpResponse::Get(g)) => {
                        g.kvs().first().map_or(0, |kv| kv.mod_revision())
                    }
                    _ => 0,
                };
            }
        }
        Op::Kv(Workload::Load { batch }) => {
            let first = seq * *batch as u64;
            let last = (first + *batch as u64).min(space);
            let puts: Vec<TxnOp> = (first..last)
                .map(|n| TxnOp::put(ctx.keys.key(n), ctx.val.clone(), None))
                .collect();
            kv.txn(Txn::new().and_then(puts)).await?;
            Ok(Done {
                items: last - first,
                ..Default::default()
            })
        }
        Op::LeaseGrant { ttl } => {
            let r = lease.grant(*ttl, None).await?;
            Ok(Done {
                lease: Some(r.id()),
                ..Default::default()
            })
        }
        Op::LeaseKeepAlive { ids } => {
            // KeepAliveOnce, as etcd's benchmark does: open the stream, send one request, wait
            // for its answer (the client checks the TTL is positive), close.
            let id = ids[(seq % ids.len() as u64) as usize];
            let (_keeper, _stream) = lease.keep_alive(id).await?;
            Ok(Done::default())
        }
    }
}
