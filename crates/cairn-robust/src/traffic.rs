//! Client traffic: etcd-like and Kubernetes-like clients, each with one request in flight, each
//! recording every request it sends with its call and return times.
//!
//! Rules every client follows, so that the history can be checked:
//! - every value written is unique in the run ([`UniqueValues`]);
//! - one request in flight per client; a request is bounded by the run's request timeout;
//! - writes are never retried: a write that fails or times out is recorded as
//!   [`Outcome::Unknown`] (it may or may not have happened; the checks resolve it from the
//!   watch event log); a read that fails is recorded as [`Outcome::Failed`] (reads change
//!   nothing, so it constrains nothing);
//! - serializable reads and reads at a past revision (the later pages of a paginated list) are
//!   recorded like the others and checked against a replay of the event log at their revision
//!   instead of for linearizability ([`Request::is_revision_read`]).
//!
//! **etcd-like** ([`TrafficKind::Etcd`]): linearizable and serializable gets and prefix lists
//! (some with a limit) over `key/0..9`, puts, deletes, multi-op transactions (guards on value,
//! mod revision or version; several puts and deletes in one branch), and leases: grant, puts
//! of `lease/0..4` attached to the client's lease, keep-alives, revokes, and leases left to
//! expire.
//!
//! **Kubernetes-like** ([`TrafficKind::Kubernetes`]): objects under `/registry/pods/`:
//! creates (`mod_revision == 0` guard), optimistic updates and deletes guarded on the
//! `mod_revision` the client last saw, gets, and paginated lists (first page linearizable, the
//! next pages at the first page's revision, as the kube-apiserver's list does); the watches
//! are the watchers' (`watch.rs`).
//!
//! Leases and the linearizability model: the model (cairn-check's `EtcdKv`) has no leases. A
//! put with a lease is checked as a plain put. Lease revocations and expiries delete keys at a
//! revision of their own that no client request explains; the checks add them to the history
//! from the watch event log (every delete of a `lease/` key, which clients never delete
//! directly) as writes that happened at some point. Grants, keep-alives and revokes themselves
//! are left out of the linearizability history.

use crate::record::{
    Clock, Cmp, CmpOp, CmpTarget, Kv, OpRecord, Outcome, Request, Response, Sink, TxnOp, TxnResult,
    UniqueValues,
};
use anyhow::{anyhow, Result};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOpResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Prefix of the etcd-like traffic's plain keys.
pub const ETCD_PREFIX: &str = "key/";
/// Prefix of the keys the etcd-like traffic attaches to leases (never deleted directly).
pub const LEASE_PREFIX: &str = "lease/";
/// Prefix of the Kubernetes-like traffic's objects.
pub const K8S_PREFIX: &str = "/registry/pods/";

/// Which traffic a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficKind {
    /// Gets, stale gets, lists, puts, deletes, multi-op txns, leases.
    Etcd,
    /// Optimistic updates on mod_revision, paginated lists (watches: the watchers).
    Kubernetes,
}

impl TrafficKind {
    /// `etcd` or `k8s`.
    pub fn name(self) -> &'static str {
        match self {
            TrafficKind::Etcd => "etcd",
            TrafficKind::Kubernetes => "k8s",
        }
    }

    /// Parses [`TrafficKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "etcd" => Some(TrafficKind::Etcd),
            "k8s" | "kubernetes" => Some(TrafficKind::Kubernetes),
            _ => None,
        }
    }
}

/// How a run's clients behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficConfig {
    /// Which traffic.
    pub kind: TrafficKind,
    /// Clients per member.
    pub clients_per_member: usize,
    /// Bound on one request.
    pub request_timeout: Duration,
    /// Plain keys (etcd) or objects (k8s).
    pub keys: usize,
    /// Page size of paginated lists.
    pub page: i64,
    /// Pause between two requests of a client (at most; uniform).
    pub max_pause: Duration,
    /// Only puts of several keys in one transaction (for the split-txn scenario).
    pub multi_put_txns_only: bool,
}

impl TrafficConfig {
    /// Defaults for `kind`.
    pub fn new(kind: TrafficKind) -> Self {
        TrafficConfig {
            kind,
            clients_per_member: 2,
            request_timeout: Duration::from_secs(2),
            keys: 10,
            page: 3,
            max_pause: Duration::from_millis(4),
            multi_put_txns_only: false,
        }
    }
}

/// The exclusive end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return String::from_utf8_lossy(&b).into_owned();
        }
    }
    "\0".to_string()
}

/// One client: its connection, randomness and what it remembers of the keyspace.
pub struct TrafficClient {
    id: u64,
    member: usize,
    client: Client,
    rng: StdRng,
    cfg: TrafficConfig,
    clock: Clock,
    ops: Sink<OpRecord>,
    values: Arc<UniqueValues>,
    /// The lease this client attaches keys to.
    lease: Option<i64>,
    /// Last seen (mod revision, value) per key.
    known: HashMap<String, (i64, String)>,
}

impl TrafficClient {
    /// A client `id` of member `member`, connected with `client`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        member: usize,
        client: Client,
        seed: u64,
        cfg: TrafficConfig,
        clock: Clock,
        ops: Sink<OpRecord>,
        values: Arc<UniqueValues>,
    ) -> Self {
        TrafficClient {
            id,
            member,
            client,
            rng: StdRng::seed_from_u64(seed),
            cfg,
            clock,
            ops,
            values,
            lease: None,
            known: HashMap::new(),
        }
    }

    /// Sends requests until `stop` turns true; the request in flight then completes or times
    /// out. Returns how many requests it sent.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> usize {
        let mut sent = 0;
        while !*stop.borrow_and_update() {
            let ok = match self.cfg.kind {
                TrafficKind::Etcd => self.etcd_step().await,
                TrafficKind::Kubernetes => self.k8s_step().await,
            };
            sent += 1;
            // After a failure back off a little, so a down member is not hammered.
            let pause = if ok {
                self.cfg.max_pause.mul_f64(self.rng.gen_range(0.0..1.0))
            } else {
                Duration::from_millis(self.rng.gen_range(20..100))
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        sent
    }

    fn key(&mut self) -> String {
        let k = self.rng.gen_range(0..self.cfg.keys);
        match self.cfg.kind {
            TrafficKind::Etcd => format!("{ETCD_PREFIX}{k}"),
            TrafficKind::Kubernetes => format!("{K8S_PREFIX}default/pod-{k}"),
        }
    }

    fn distinct_keys(&mut self, n: usize) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        while keys.len() < n.min(self.cfg.keys) {
            let k = self.key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    fn value(&self) -> String {
        self.values.next(self.id)
    }

    /// One etcd-like request; whether it succeeded.
    async fn etcd_step(&mut self) -> bool {
        if self.cfg.multi_put_txns_only {
            let n = self.rng.gen_range(2..=3);
            let keys = self.distinct_keys(n);
            let success = keys
                .into_iter()
                .map(|key| TxnOp::Put {
                    key,
                    value: self.value(),
                })
                .collect();
            let req = Request::Txn {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            };
            return self.execute(req).await;
        }
        let roll = self.rng.gen_range(0..100);
        let req = match roll {
            0..=19 => Request::Get {
                key: self.key(),
                serializable: false,
                revision: 0,
            },
            20..=27 => Request::Get {
                key: self.key(),
                serializable: true,
                revision: 0,
            },
            28..=39 => {
                let limit = *[0i64, 0, 3, 5].get(self.rng.gen_range(0..4)).unwrap_or(&0);
                let (start, end) = if self.rng.gen_bool(0.8) {
                    (ETCD_PREFIX.to_string(), prefix_end(ETCD_PREFIX))
                } else {
                    // Everything, lease keys included.
                    (String::new(), "\0".to_string())
                };
                Request::Range {
                    start,
                    end,
                    limit,
                    serializable: roll >= 36,
                    revision: 0,
                }
            }
            40..=63 => Request::Put {
                key: self.key(),
                value: self.value(),
                lease: 0,
            },
            64..=71 => Request::Delete { key: self.key() },
            72..=85 => self.etcd_txn(),
            86..=93 => match self.lease {
                None => Request::LeaseGrant {
                    ttl: self.rng.gen_range(2..=4),
                },
                Some(id) => Request::Put {
                    key: format!("{LEASE_PREFIX}{}", self.rng.gen_range(0..5)),
                    value: self.value(),
                    lease: id,
                },
            },
            94..=96 => match self.lease.take() {
                Some(id) => Request::LeaseRevoke { id },
                None => Request::LeaseGrant {
                    ttl: self.rng.gen_range(2..=4),
                },
            },
            _ => match self.lease {
                Some(id) => Request::LeaseKeepAlive { id },
                None => Request::Get {
                    key: self.key(),
                    serializable: false,
                    revision: 0,
                },
            },
        };
        self.execute(req).await
    }

    fn etcd_txn(&mut self) -> Request {
        let n = self.rng.gen_range(2..=4);
        let keys = self.distinct_keys(n);
        let guard = keys[0].clone();
        let seen = self.known.get(&guard).cloned();
        let compare = match (self.rng.gen_range(0..4), seen) {
            (0, Some((_, value))) => vec![Cmp {
                key: guard.clone(),
                op: CmpOp::Equal,
                target: CmpTarget::Value(value),
            }],
            (1, Some((rev, _))) => vec![Cmp {
                key: guard.clone(),
                op: CmpOp::Equal,
                target: CmpTarget::ModRevision(rev),
            }],
            (2, _) => vec![Cmp {
                key: guard.clone(),
                op: CmpOp::Greater,
                target: CmpTarget::Version(0),
            }],
            (3, _) => Vec::new(),
            _ => vec![Cmp {
                key: guard.clone(),
                op: CmpOp::Equal,
                target: CmpTarget::ModRevision(0),
            }],
        };
        let mut success = Vec::new();
        for (i, key) in keys[1..].iter().enumerate() {
            if i > 0 && self.rng.gen_bool(0.25) {
                success.push(TxnOp::Delete { key: key.clone() });
            } else {
                success.push(TxnOp::Put {
                    key: key.clone(),
                    value: self.value(),
                });
            }
        }
        let mut failure = vec![TxnOp::Get { key: guard }];
        if self.rng.gen_bool(0.3) {
            failure.push(TxnOp::Put {
                key: keys[1].clone(),
                value: self.value(),
            });
        }
        Request::Txn {
            compare,
            success,
            failure,
        }
    }

    /// One Kubernetes-like request (a whole paginated list counts as one step); whether it
    /// succeeded.
    async fn k8s_step(&mut self) -> bool {
        let roll = self.rng.gen_range(0..100);
        let key = self.key();
        let seen = self.known.get(&key).map(|(rev, _)| *rev);
        let guarded = |key: &str, rev: i64, then: TxnOp| Request::Txn {
            compare: vec![Cmp {
                key: key.to_string(),
                op: CmpOp::Equal,
                target: CmpTarget::ModRevision(rev),
            }],
            success: vec![then],
            failure: vec![TxnOp::Get {
                key: key.to_string(),
            }],
        };
        let req = match (roll, seen) {
            (0..=14, _) | (15..=49, None) | (50..=56, None) => guarded(
                &key,
                0,
                TxnOp::Put {
                    key: key.clone(),
                    value: self.value(),
                },
            ),
            (15..=49, Some(rev)) => guarded(
                &key,
                rev,
                TxnOp::Put {
                    key: key.clone(),
                    value: self.value(),
                },
            ),
            (50..=56, Some(rev)) => guarded(&key, rev, TxnOp::Delete { key: key.clone() }),
            (57..=69, _) => Request::Get {
                key,
                serializable: false,
                revision: 0,
            },
            (70..=94, _) => return self.paginated_list().await,
            _ => Request::Range {
                start: K8S_PREFIX.to_string(),
                end: prefix_end(K8S_PREFIX),
                limit: 0,
                serializable: true,
                revision: 0,
            },
        };
        self.execute(req).await
    }

    /// A list in pages: the first linearizable, the next ones at its revision.
    async fn paginated_list(&mut self) -> bool {
        let end = prefix_end(K8S_PREFIX);
        let mut start = K8S_PREFIX.to_string();
        let mut revision = 0;
        for _ in 0..100 {
            let req = Request::Range {
                start: start.clone(),
                end: end.clone(),
                limit: self.cfg.page,
                serializable: false,
                revision,
            };
            let Some(Response::Range {
                kvs,
                more,
                revision: header,
                ..
            }) = self.send(req).await
            else {
                return false;
            };
            if revision == 0 {
                revision = header;
            }
            match kvs.last() {
                Some(last) if more => start = format!("{}\0", last.key),
                _ => return true,
            }
        }
        true
    }

    /// Sends `req` and records it; whether it succeeded.
    async fn execute(&mut self, req: Request) -> bool {
        self.send(req).await.is_some()
    }

    /// Sends `req`, records it, remembers what it showed; its response if it succeeded.
    async fn send(&mut self, req: Request) -> Option<Response> {
        let call = self.clock.now();
        let result =
            match tokio::time::timeout(self.cfg.request_timeout, execute(&self.client, &req)).await
            {
                Ok(r) => r,
                Err(_) => Err(anyhow!("timed out after {:?}", self.cfg.request_timeout)),
            };
        let ret = self.clock.now();
        let outcome = match &result {
            Ok(resp) => Outcome::Ok(resp.clone()),
            Err(e) if req.is_write() => Outcome::Unknown(format!("{e:#}")),
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        if let Ok(resp) = &result {
            self.learn(&req, resp);
        }
        if matches!(req, Request::LeaseKeepAlive { .. }) {
            if let Ok(Response::LeaseKeepAlive { ttl: 0 }) = &result {
                self.lease = None;
            }
        }
        if let (Request::Put { lease, .. }, Err(e)) = (&req, &result) {
            if *lease != 0 && format!("{e:#}").contains("lease not found") {
                self.lease = None;
            }
        }
        self.ops.push(OpRecord {
            client: self.id,
            member: self.member,
            call,
            ret,
            request: req,
            outcome,
        });
        result.ok()
    }

    /// Remembers what a response showed of the keyspace (for guards) and leases granted.
    fn learn(&mut self, req: &Request, resp: &Response) {
        let mut saw = |kv: &Kv| {
            self.known
                .insert(kv.key.clone(), (kv.mod_revision, kv.value.clone()));
        };
        match resp {
            Response::Get { kv: Some(kv), .. } => saw(kv),
            Response::Get { kv: None, .. } => {
                if let Request::Get { key, .. } = req {
                    self.known.remove(key);
                }
            }
            Response::Range { kvs, .. } => kvs.iter().for_each(saw),
            Response::Txn { results, .. } => {
                for r in results {
                    if let TxnResult::Get(Some(kv)) = r {
                        saw(kv);
                    }
                }
            }
            Response::LeaseGrant { id, .. } => self.lease = Some(*id),
            _ => {}
        }
    }
}

fn revision_of(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

fn compare_of(c: &Cmp) -> Compare {
    let op = match c.op {
        CmpOp::Equal => CompareOp::Equal,
        CmpOp::NotEqual => CompareOp::NotEqual,
        CmpOp::Greater => CompareOp::Greater,
        CmpOp::Less => CompareOp::Less,
    };
    match &c.target {
        CmpTarget::Value(v) => Compare::value(c.key.clone(), op, v.clone()),
        CmpTarget::ModRevision(r) => Compare::mod_revision(c.key.clone(), op, *r),
        CmpTarget::CreateRevision(r) => Compare::create_revision(c.key.clone(), op, *r),
        CmpTarget::Version(v) => Compare::version(c.key.clone(), op, *v),
    }
}

fn txn_op_of(op: &TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Get { key } => etcd_client::TxnOp::get(key.clone(), None),
        TxnOp::Put { key, value } => etcd_client::TxnOp::put(key.clone(), value.clone(), None),
        TxnOp::Delete { key } => etcd_client::TxnOp::delete(key.clone(), None),
    }
}

/// The key as sent: etcd refuses an empty key, and spells "from the first key" `"\0"`.
pub fn wire_key(key: &str) -> Vec<u8> {
    if key.is_empty() {
        vec![0]
    } else {
        key.as_bytes().to_vec()
    }
}

/// Sends one request through `client` (no timeout: the caller bounds it).
pub async fn execute(client: &Client, req: &Request) -> Result<Response> {
    let mut kv = client.kv_client();
    Ok(match req {
        Request::Get {
            key,
            serializable,
            revision,
        } => {
            let mut opts = GetOptions::new();
            if *serializable {
                opts = opts.with_serializable();
            }
            if *revision > 0 {
                opts = opts.with_revision(*revision);
            }
            let r = kv.get(key.clone(), Some(opts)).await?;
            Response::Get {
                kv: r.kvs().first().map(Kv::from),
                revision: revision_of(r.header()),
            }
        }
        Request::Range {
            start,
            end,
            limit,
            serializable,
            revision,
        } => {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(*limit);
            if *serializable {
                opts = opts.with_serializable();
            }
            if *revision > 0 {
                opts = opts.with_revision(*revision);
            }
            let r = kv.get(wire_key(start), Some(opts)).await?;
            Response::Range {
                kvs: r.kvs().iter().map(Kv::from).collect(),
                count: r.count(),
                more: r.more(),
                revision: revision_of(r.header()),
            }
        }
        Request::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            let r = kv.put(key.clone(), value.clone(), opts).await?;
            Response::Put {
                revision: revision_of(r.header()),
            }
        }
        Request::Delete { key } => {
            let r = kv.delete(key.clone(), None::<DeleteOptions>).await?;
            Response::Delete {
                deleted: r.deleted(),
                revision: revision_of(r.header()),
            }
        }
        Request::Txn {
            compare,
            success,
            failure,
        } => {
            let txn = Txn::new()
                .when(compare.iter().map(compare_of).collect::<Vec<_>>())
                .and_then(success.iter().map(txn_op_of).collect::<Vec<_>>())
                .or_else(failure.iter().map(txn_op_of).collect::<Vec<_>>());
            let r = kv.txn(txn).await?;
            let results = r
                .op_responses()
                .iter()
                .map(|op| match op {
                    TxnOpResponse::Get(g) => TxnResult::Get(g.kvs().first().map(Kv::from)),
                    TxnOpResponse::Put(_) => TxnResult::Put,
                    TxnOpResponse::Delete(d) => TxnResult::Delete(d.deleted()),
                    TxnOpResponse::Txn(_) => TxnResult::Put,
                })
                .collect();
            Response::Txn {
                succeeded: r.succeeded(),
                revision: revision_of(r.header()),
                results,
            }
        }
        Request::LeaseGrant { ttl } => {
            let r = client.lease_client().grant(*ttl, None).await?;
            Response::LeaseGrant {
                id: r.id(),
                ttl: r.ttl(),
            }
        }
        Request::LeaseRevoke { id } => {
            let r = client.lease_client().revoke(*id).await?;
            Response::LeaseRevoke {
                revision: revision_of(r.header()),
            }
        }
        Request::LeaseKeepAlive { id } => {
            let (mut keeper, mut stream) = client.lease_client().keep_alive(*id).await?;
            keeper.keep_alive().await?;
            let r = stream
                .message()
                .await?
                .ok_or_else(|| anyhow!("keep-alive stream ended"))?;
            Response::LeaseKeepAlive { ttl: r.ttl() }
        }
    })
}
