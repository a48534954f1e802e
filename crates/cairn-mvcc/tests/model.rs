//! Model-based test: random sequences of put / delete / txn / range / compact / lease grant /
//! revoke / checkpoint (plus commits, aborts, compaction steps and reopens) run against the
//! store and against a plain in-memory model of etcd's semantics, written after etcd's
//! `apply.go`, `mvcc` and `lessor` code; every response, every error, every revision, every
//! batch's events, the granted leases and the keys attached to each must match.

use std::collections::BTreeMap;

use proptest::prelude::*;

use cairn_api::etcdserverpb::compare::{CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_api::etcdserverpb::request_op::Request;
use cairn_api::etcdserverpb::response_op::Response;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};
use cairn_mvcc::{
    validate, GrantedLeases, LeaseInfo, MvccError, RevisionEvents, Store, StoreOptions, WriteBatch,
};

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// Errors as the model knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Err {
    Compacted,
    FutureRev,
    KeyNotFound,
    LeaseNotFound,
    LeaseExists,
}

fn err_of(e: MvccError) -> Err {
    match e {
        MvccError::Compacted => Err::Compacted,
        MvccError::FutureRev => Err::FutureRev,
        MvccError::KeyNotFound => Err::KeyNotFound,
        MvccError::LeaseNotFound => Err::LeaseNotFound,
        MvccError::LeaseExists => Err::LeaseExists,
        other => panic!("unexpected store error: {other}"),
    }
}

fn hdr(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

/// Every version of every key, in write order; `None` is a tombstone.
#[derive(Clone, Debug)]
struct Model {
    rev: i64,
    compact: i64,
    hist: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    /// Granted leases: id → (ttl, checkpointed remaining ttl).
    leases: BTreeMap<i64, (i64, i64)>,
}

impl Model {
    fn new() -> Model {
        Model {
            rev: 1,
            compact: -1,
            hist: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// The live keys whose latest version carries lease `id`, in key order.
    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.kvs(&[0], &[0], self.rev)
            .into_iter()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect()
    }

    /// The leases as the store lists them.
    fn lease_infos(&self) -> Vec<LeaseInfo> {
        self.leases
            .iter()
            .map(|(&id, &(ttl, remaining_ttl))| LeaseInfo {
                id,
                ttl,
                remaining_ttl,
            })
            .collect()
    }

    /// etcd's lessor Revoke: the lease's keys deleted in key order in one write transaction
    /// (no revision when there are none), then the lease removed.
    fn revoke(&mut self, id: i64) -> Result<Option<RevisionEvents>, Err> {
        if !self.leases.contains_key(&id) {
            return Err(Err::LeaseNotFound);
        }
        let doomed: Vec<KeyValue> = self
            .kvs(&[0], &[0], self.rev)
            .into_iter()
            .filter(|kv| kv.lease == id)
            .collect();
        let mut w = W::new(self);
        for kv in doomed {
            w.delete_raw(kv);
        }
        let events = w.end();
        self.leases.remove(&id);
        Ok(events)
    }

    fn get(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        self.hist
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= at)?
            .1
            .clone()
    }

    /// etcd's index Range: `end` empty = the key; `"\0"` = every key from `key`.
    fn kvs(&self, key: &[u8], end: &[u8], at: i64) -> Vec<KeyValue> {
        if end.is_empty() {
            return self.get(key, at).into_iter().collect();
        }
        self.hist
            .keys()
            .filter(|k| k.as_slice() >= key && (end == [0] || k.as_slice() < end))
            .filter_map(|k| self.get(k, at))
            .collect()
    }

    /// etcd's applier Range over `rangeKeys(curRev)`.
    fn range(&self, r: &RangeRequest, cur: i64) -> Result<RangeResponse, Err> {
        if r.revision > cur {
            return Err(Err::FutureRev);
        }
        let rev = if r.revision <= 0 { cur } else { r.revision };
        if rev < self.compact {
            return Err(Err::Compacted);
        }
        let all = self.kvs(&r.key, &r.range_end, rev);
        let mut limit = r.limit;
        if r.sort_order != 0
            || r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0
        {
            limit = 0;
        }
        if limit > 0 {
            limit += 1;
        }
        let count = all.len() as i64;
        let mut kvs = if r.count_only {
            vec![]
        } else if limit > 0 && (limit as usize) < all.len() {
            all[..limit as usize].to_vec()
        } else {
            all
        };
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        let mut order = r.sort_order;
        if r.sort_target != SortTarget::Key as i32 && order == SortOrder::None as i32 {
            order = SortOrder::Ascend as i32;
        }
        if order != SortOrder::None as i32 {
            let less = |a: &KeyValue, b: &KeyValue| -> bool {
                match r.sort_target {
                    0 => a.key < b.key,
                    1 => a.version < b.version,
                    2 => a.create_revision < b.create_revision,
                    3 => a.mod_revision < b.mod_revision,
                    _ => a.value < b.value,
                }
            };
            // Insertion sort, as Go's sort.Sort does on small slices.
            for i in 1..kvs.len() {
                let mut j = i;
                while j > 0 {
                    let swap = if order == SortOrder::Ascend as i32 {
                        less(&kvs[j], &kvs[j - 1])
                    } else {
                        less(&kvs[j - 1], &kvs[j])
                    };
                    if !swap {
                        break;
                    }
                    kvs.swap(j, j - 1);
                    j -= 1;
                }
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: hdr(cur),
            kvs,
            more,
            count,
        })
    }
}

/// etcd's storeTxnWrite on the model.
struct W<'a> {
    m: &'a mut Model,
    begin: i64,
    changes: usize,
    events: Vec<Event>,
}

impl<'a> W<'a> {
    fn new(m: &'a mut Model) -> W<'a> {
        let begin = m.rev;
        W {
            m,
            begin,
            changes: 0,
            events: vec![],
        }
    }

    fn cur(&self) -> i64 {
        self.begin + i64::from(self.changes > 0)
    }

    fn put_raw(&mut self, key: &[u8], value: Vec<u8>, lease: i64) {
        let rev = self.begin + 1;
        let prev = self.m.get(key, rev);
        let (c, ver) = match &prev {
            Some(p) => (p.create_revision, p.version),
            None => (rev, 0),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: c,
            mod_revision: rev,
            version: ver + 1,
            value,
            lease,
        };
        self.m
            .hist
            .entry(key.to_vec())
            .or_default()
            .push((rev, Some(kv.clone())));
        // etcd's watch: the version before the revision, none for a creation.
        let prev_kv = if kv.version == 1 {
            None
        } else {
            self.m.get(key, self.begin)
        };
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv,
        });
        self.changes += 1;
    }

    fn delete_raw(&mut self, prev: KeyValue) {
        let rev = self.begin + 1;
        self.m
            .hist
            .entry(prev.key.clone())
            .or_default()
            .push((rev, None));
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: prev.key.clone(),
                mod_revision: rev,
                ..KeyValue::default()
            }),
            prev_kv: self.m.get(&prev.key, self.begin),
        });
        self.changes += 1;
    }

    /// etcd's applier Put once the lease was checked.
    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, Err> {
        let prev = self.m.get(&p.key, self.cur());
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Err::KeyNotFound);
        }
        let value = if p.ignore_value {
            prev.clone().unwrap().value
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.clone().unwrap().lease
        } else {
            p.lease
        };
        self.put_raw(&p.key, value, lease);
        Ok(PutResponse {
            header: hdr(self.begin + 1),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let kvs = self.m.kvs(&d.key, &d.range_end, self.cur());
        let n = kvs.len() as i64;
        for kv in kvs.clone() {
            self.delete_raw(kv);
        }
        DeleteRangeResponse {
            header: hdr(self.cur()),
            deleted: n,
            prev_kvs: if d.prev_kv { kvs } else { vec![] },
        }
    }

    fn range(&self, r: &RangeRequest) -> RangeResponse {
        self.m.range(r, self.cur()).expect("pre-checked")
    }

    /// Ends the request: its events when it changed something.
    fn end(self) -> Option<RevisionEvents> {
        if self.changes == 0 {
            return None;
        }
        self.m.rev += 1;
        Some(RevisionEvents {
            revision: self.m.rev,
            events: self.events,
        })
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let n =
        |want: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let result = match c.target {
        3 => {
            let v = match &c.target_union {
                Some(TargetUnion::Value(v)) => v.clone(),
                _ => vec![],
            };
            kv.value.cmp(&v)
        }
        1 => kv.create_revision.cmp(&n(|t| {
            if let TargetUnion::CreateRevision(r) = t {
                Some(*r)
            } else {
                None
            }
        })),
        2 => kv.mod_revision.cmp(&n(|t| {
            if let TargetUnion::ModRevision(r) = t {
                Some(*r)
            } else {
                None
            }
        })),
        0 => kv.version.cmp(&n(|t| {
            if let TargetUnion::Version(r) = t {
                Some(*r)
            } else {
                None
            }
        })),
        _ => kv.lease.cmp(&n(|t| {
            if let TargetUnion::Lease(r) = t {
                Some(*r)
            } else {
                None
            }
        })),
    };
    match c.result {
        0 => result.is_eq(),
        3 => result.is_ne(),
        1 => result.is_gt(),
        _ => result.is_lt(),
    }
}

fn compare_path(m: &Model, t: &TxnRequest, at: i64, path: &mut Vec<bool>) {
    let ok = t.compare.iter().all(|c| {
        let kvs = m.kvs(&c.key, &c.range_end, at);
        if kvs.is_empty() {
            c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| compare_kv(c, kv))
        }
    });
    path.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let Some(Request::RequestTxn(n)) = &op.request {
            compare_path(m, n, at, path);
        }
    }
}

fn check_ops(
    t: &TxnRequest,
    path: &[bool],
    i: &mut usize,
    f: &mut dyn FnMut(&RequestOp) -> Result<(), Err>,
) -> Result<(), Err> {
    let ok = path[*i];
    *i += 1;
    for op in if ok { &t.success } else { &t.failure } {
        if let Some(Request::RequestTxn(n)) = &op.request {
            check_ops(n, path, i, f)?;
        } else {
            f(op)?;
        }
    }
    Ok(())
}

fn apply_txn(
    w: &mut W<'_>,
    t: &TxnRequest,
    path: &[bool],
    i: &mut usize,
) -> Result<TxnResponse, Err> {
    let ok = path[*i];
    *i += 1;
    let mut responses = vec![];
    for op in if ok { &t.success } else { &t.failure } {
        let response = match op.request.as_ref().unwrap() {
            Request::RequestRange(r) => Response::ResponseRange(w.range(r)),
            Request::RequestPut(p) => Response::ResponsePut(w.put(p)?),
            Request::RequestDeleteRange(d) => Response::ResponseDeleteRange(w.delete(d)),
            Request::RequestTxn(n) => {
                let mut resp = apply_txn(w, n, path, i)?;
                resp.header = Some(ResponseHeader::default());
                Response::ResponseTxn(resp)
            }
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    })
}

/// etcd's applier Txn.
fn model_txn(
    m: &Model,
    t: &TxnRequest,
) -> Result<(TxnResponse, Model, Option<RevisionEvents>), Err> {
    let mut path = vec![];
    compare_path(m, t, m.rev, &mut path);
    if !validate::is_txn_read_only(t) {
        check_ops(t, &path, &mut 0, &mut |op| {
            if let Some(Request::RequestPut(p)) = &op.request {
                if (p.ignore_value || p.ignore_lease) && m.get(&p.key, m.rev).is_none() {
                    return Err(Err::KeyNotFound);
                }
                if p.lease != 0 && !m.leases.contains_key(&p.lease) {
                    return Err(Err::LeaseNotFound);
                }
            }
            Ok(())
        })?;
    }
    check_ops(t, &path, &mut 0, &mut |op| {
        if let Some(Request::RequestRange(r)) = &op.request {
            if r.revision == 0 {
                return Ok(());
            }
            if r.revision > m.rev {
                return Err(Err::FutureRev);
            }
            if r.revision < m.compact {
                return Err(Err::Compacted);
            }
        }
        Ok(())
    })?;
    let mut next = m.clone();
    let mut w = W::new(&mut next);
    let mut resp = apply_txn(&mut w, t, &path, &mut 0)?;
    resp.header = hdr(w.cur());
    let events = w.end();
    Ok((resp, next, events))
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const KEYS: &[&str] = &["a", "a/", "a/b", "a/c", "b", "b/a", "c"];
const ENDS: &[&str] = &[
    "", "", "\0", "\0", "a0", "a0", "b", "b0", "c", "d", "a/c", "a",
];
const VALUES: &[&str] = &["", "x", "y"];
/// Range starts: the keys, plus the starts of the spans the counts table answers.
const RANGE_KEYS: &[&str] = &["a", "a/", "a/", "a/b", "b", "b/", "b/a", "c", "\0", "\0"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec())
}
fn end() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(ENDS).prop_map(|k| k.as_bytes().to_vec())
}
fn range_key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(RANGE_KEYS).prop_map(|k| k.as_bytes().to_vec())
}
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES).prop_map(|k| k.as_bytes().to_vec())
}

/// A revision relative to the current one, resolved when the op runs.
#[derive(Debug, Clone, Copy)]
enum Rev {
    Zero,
    Negative,
    Back(i64),
    Future,
}

impl Rev {
    fn resolve(self, cur: i64) -> i64 {
        match self {
            Rev::Zero => 0,
            Rev::Negative => -1,
            Rev::Back(n) => (cur - n).max(1),
            Rev::Future => cur + 1,
        }
    }
}

fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        4 => Just(Rev::Zero),
        1 => Just(Rev::Negative),
        4 => (0i64..8).prop_map(Rev::Back),
        1 => Just(Rev::Future),
    ]
}

#[derive(Debug, Clone)]
struct RangeSpec {
    req: RangeRequest,
    rev: Rev,
}

fn small_filter() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0i64), 1 => 1i64..12]
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    (
        (
            range_key(),
            end(),
            prop_oneof![2 => Just(0i64), 2 => 1i64..4, 1 => Just(-1i64)],
            rev(),
        ),
        (0i32..3, 0i32..5, any::<bool>(), prop::bool::weighted(0.15)),
        (
            small_filter(),
            small_filter(),
            small_filter(),
            small_filter(),
        ),
    )
        .prop_map(
            |(
                (key, range_end, limit, rev),
                (order, target, keys_only, count_only),
                (a, b, c, d),
            )| RangeSpec {
                req: RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision: 0,
                    sort_order: order,
                    sort_target: target,
                    serializable: false,
                    keys_only,
                    count_only,
                    min_mod_revision: a,
                    max_mod_revision: b,
                    min_create_revision: c,
                    max_create_revision: d,
                },
                rev,
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        prop_oneof![4 => Just(0i64), 1 => 1i64..4],
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value: if ignore_value { vec![] } else { value },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn del_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        key(),
        prop_oneof![3 => Just(vec![]), 1 => end()],
        0i32..5,
        0i32..4,
        0i64..8,
        value(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(key, range_end, target, result, n, v, wrong_kind)| {
            let mut union = match target {
                0 => TargetUnion::Version(n % 4),
                1 => TargetUnion::CreateRevision(n),
                2 => TargetUnion::ModRevision(n),
                3 => TargetUnion::Value(v),
                _ => TargetUnion::Lease(n % 3),
            };
            if wrong_kind {
                union = TargetUnion::Version(n % 4);
            }
            Compare {
                result,
                target,
                key,
                range_end,
                target_union: Some(union),
            }
        })
}

fn request_op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        range_spec().prop_map(|r| Request::RequestRange(r.req)),
        put_req().prop_map(Request::RequestPut),
        del_req().prop_map(Request::RequestDeleteRange),
    ];
    let req = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![4 => leaf, 1 => txn_req(depth - 1).prop_map(Request::RequestTxn)].boxed()
    };
    req.prop_map(|r| RequestOp { request: Some(r) }).boxed()
}

fn txn_req(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(request_op(depth), 0..4),
        prop::collection::vec(request_op(depth), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// Range revisions inside txns are generated relative to 0 (current) only, plus a few
/// absolute ones so the pre-checks get exercised.
fn with_txn_range_revs(mut t: TxnRequest, revs: &[i64]) -> TxnRequest {
    fn walk(ops: &mut [RequestOp], revs: &[i64], i: &mut usize) {
        for op in ops {
            match op.request.as_mut() {
                Some(Request::RequestRange(r)) => {
                    r.revision = revs[*i % revs.len()];
                    *i += 1;
                }
                Some(Request::RequestTxn(t)) => {
                    walk(&mut t.success, revs, i);
                    walk(&mut t.failure, revs, i);
                }
                _ => {}
            }
        }
    }
    let mut i = 0;
    walk(&mut t.success, revs, &mut i);
    walk(&mut t.failure, revs, &mut i);
    t
}

#[derive(Debug, Clone)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest, Vec<Rev>),
    /// A range on the open batch (true) or on the store's committed state (false).
    Range(RangeSpec, bool),
    /// A read-only txn on the store.
    TxnRead(TxnRequest, Vec<Rev>),
    Compact(Rev),
    CompactStep(usize),
    Commit(bool),
    Abort,
    Reopen,
    Grant(i64, i64),
    Revoke(i64),
    Checkpoint(i64, i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => put_req().prop_map(Op::Put),
        3 => del_req().prop_map(Op::Delete),
        6 => (txn_req(2), prop::collection::vec(rev(), 1..4), prop::option::of(0usize..3)).prop_map(|(mut t, r, count)| {
            // Often end both branches with a count the counts table answers, to see the
            // txn's own changes counted.
            if let Some(i) = count {
                let (key, end) = [("\0", "\0"), ("a/", "a0"), ("b/", "b0")][i];
                let op = RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: key.into(),
                        range_end: end.into(),
                        count_only: true,
                        ..RangeRequest::default()
                    })),
                };
                t.success.push(op.clone());
                t.failure.push(op);
            }
            Op::Txn(t, r)
        }),
        6 => (range_spec(), any::<bool>()).prop_map(|(r, b)| Op::Range(r, b)),
        2 => (prop::collection::vec(prop::collection::vec(range_spec(), 1..3), 1..2), prop::collection::vec(compare(), 0..2), prop::collection::vec(rev(), 1..3))
            .prop_map(|(ranges, compare, revs)| {
                let ops: Vec<RequestOp> = ranges.concat().into_iter().map(|r| RequestOp { request: Some(Request::RequestRange(r.req)) }).collect();
                Op::TxnRead(TxnRequest { compare, success: ops.clone(), failure: ops }, revs)
            }),
        // Writes, then a delete of every key from some key, then a put that needs its key:
        // passes the duplicate check and fails while running when the delete took the key.
        1 => (put_req(), key(), key()).prop_map(|(p, from, k)| {
            let op = |r| RequestOp { request: Some(r) };
            let needs_key = PutRequest { key: k, ignore_value: true, ..PutRequest::default() };
            Op::Txn(
                TxnRequest {
                    compare: vec![],
                    success: vec![
                        op(Request::RequestPut(p)),
                        op(Request::RequestDeleteRange(DeleteRangeRequest { key: from, range_end: vec![0], prev_kv: false })),
                        op(Request::RequestPut(needs_key)),
                    ],
                    failure: vec![],
                },
                vec![Rev::Zero],
            )
        }),
        2 => rev().prop_map(Op::Compact),
        2 => (1usize..4).prop_map(Op::CompactStep),
        3 => prop::bool::weighted(0.1).prop_map(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
        3 => (1i64..4, 1i64..100).prop_map(|(id, ttl)| Op::Grant(id, ttl)),
        2 => (0i64..4).prop_map(Op::Revoke),
        1 => (0i64..4, 0i64..100).prop_map(|(id, r)| Op::Checkpoint(id, r)),
    ]
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

struct Runner {
    /// State the store's committed snapshot has.
    committed: Model,
    /// State including the open batch.
    working: Model,
    /// Events of the open batch, per the model.
    pending: Vec<RevisionEvents>,
    /// Events of every committed batch.
    history: Vec<RevisionEvents>,
}

impl Runner {
    fn commit(
        &mut self,
        batch: Option<WriteBatch<'_>>,
        durable: bool,
    ) -> Result<(), TestCaseError> {
        if let Some(b) = batch {
            let events = b
                .commit(durable)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&events, &self.pending);
            self.history.extend(std::mem::take(&mut self.pending));
            self.committed = self.working.clone();
        }
        Ok(())
    }
}

fn resolve(revs: &[Rev], cur: i64) -> Vec<i64> {
    revs.iter().map(|r| r.resolve(cur)).collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let opts = StoreOptions {
        cache_size_bytes: 1 << 20,
    };
    let mut runner = Runner {
        committed: Model::new(),
        working: Model::new(),
        pending: vec![],
        history: vec![],
    };
    for segment in ops.split(|o| matches!(o, Op::Reopen)) {
        let store = Store::open(&path, opts.clone()).unwrap();
        prop_assert_eq!(store.current_revision(), runner.committed.rev);
        prop_assert_eq!(store.compact_revision(), runner.committed.compact);
        let mut batch: Option<WriteBatch<'_>> = None;
        for op in segment {
            match op {
                Op::Put(p) => {
                    if validate::check_put(p).is_err() {
                        continue;
                    }
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.put(p, &GrantedLeases).map_err(err_of);
                    let mut next = runner.working.clone();
                    let want = if p.lease != 0 && !next.leases.contains_key(&p.lease) {
                        Err(Err::LeaseNotFound)
                    } else {
                        let mut w = W::new(&mut next);
                        w.put(p).map(|r| (r, w.end()))
                    };
                    match want {
                        Ok((resp, events)) => {
                            runner.working = next;
                            runner.pending.extend(events);
                            prop_assert_eq!(got, Ok(resp));
                        }
                        Err(e) => prop_assert_eq!(got, Err(e)),
                    }
                    prop_assert_eq!(b.revision(), runner.working.rev);
                }
                Op::Delete(d) => {
                    if validate::check_delete_range(d).is_err() {
                        continue;
                    }
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.delete_range(d).map_err(err_of);
                    let mut w = W::new(&mut runner.working);
                    let resp = w.delete(d);
                    runner.pending.extend(w.end());
                    prop_assert_eq!(got, Ok(resp));
                    prop_assert_eq!(b.revision(), runner.working.rev);
                }
                Op::Txn(t, revs) => {
                    let t = with_txn_range_revs(t.clone(), &resolve(revs, runner.working.rev));
                    if validate::check_txn(&t, 128).is_err() {
                        continue;
                    }
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.txn(&t, &GrantedLeases).map_err(err_of);
                    match model_txn(&runner.working, &t) {
                        Ok((resp, next, events)) => {
                            runner.working = next;
                            runner.pending.extend(events);
                            prop_assert_eq!(got, Ok(resp));
                        }
                        Err(e) => prop_assert_eq!(got, Err(e)),
                    }
                    prop_assert_eq!(b.revision(), runner.working.rev);
                }
                Op::Range(spec, on_batch) => {
                    let mut req = spec.req.clone();
                    if let (true, Some(b)) = (*on_batch, batch.as_ref()) {
                        req.revision = spec.rev.resolve(runner.working.rev);
                        let got = b.range(&req).map_err(err_of);
                        prop_assert_eq!(got, runner.working.range(&req, runner.working.rev));
                    } else {
                        req.revision = spec.rev.resolve(runner.committed.rev);
                        let got = store.range(&req).map_err(err_of);
                        prop_assert_eq!(got, runner.committed.range(&req, runner.committed.rev));
                    }
                }
                Op::TxnRead(t, revs) => {
                    let t = with_txn_range_revs(t.clone(), &resolve(revs, runner.committed.rev));
                    let got = store.txn_read(&t).map_err(err_of);
                    let want = model_txn(&runner.committed, &t).map(|(resp, _, events)| {
                        assert!(events.is_none());
                        resp
                    });
                    prop_assert_eq!(got, want);
                }
                Op::Compact(rev) => {
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let rev = rev.resolve(runner.working.rev);
                    let got = b.compact(rev).map_err(err_of);
                    let m = &mut runner.working;
                    let want = if rev <= m.compact {
                        Err(Err::Compacted)
                    } else if rev > m.rev {
                        Err(Err::FutureRev)
                    } else {
                        m.compact = rev;
                        Ok(())
                    };
                    prop_assert_eq!(got, want);
                }
                Op::CompactStep(n) => {
                    runner.commit(batch.take(), false)?;
                    store.compact_step(*n).unwrap();
                }
                Op::Commit(durable) => {
                    runner.commit(batch.take(), *durable)?;
                    prop_assert_eq!(store.current_revision(), runner.committed.rev);
                }
                Op::Abort => {
                    batch = None;
                    runner.working = runner.committed.clone();
                    runner.pending.clear();
                }
                Op::Grant(id, ttl) => {
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.lease_grant(*id, *ttl).map_err(err_of);
                    let m = &mut runner.working;
                    let want = if m.leases.contains_key(id) {
                        Err(Err::LeaseExists)
                    } else {
                        m.leases.insert(*id, (*ttl, 0));
                        Ok(())
                    };
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(b.revision(), runner.working.rev);
                }
                Op::Revoke(id) => {
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.lease_revoke(*id).map_err(err_of);
                    match runner.working.revoke(*id) {
                        Ok(events) => {
                            runner.pending.extend(events);
                            prop_assert_eq!(got, Ok(()));
                        }
                        Err(e) => prop_assert_eq!(got, Err(e)),
                    }
                    prop_assert_eq!(b.revision(), runner.working.rev);
                }
                Op::Checkpoint(id, remaining) => {
                    let b = batch.get_or_insert_with(|| store.begin_write().unwrap());
                    let got = b.lease_checkpoint(*id, *remaining).map_err(err_of);
                    let want = match runner.working.leases.get_mut(id) {
                        Some(lease) => {
                            lease.1 = *remaining;
                            true
                        }
                        None => false,
                    };
                    prop_assert_eq!(got, Ok(want));
                }
                Op::Reopen => unreachable!("segments are split at reopens"),
            }
        }
        runner.commit(batch.take(), false)?;
        // The lease tables agree with the model: the granted leases, and the keys attached to
        // each (unknown ids included).
        let m = &runner.committed;
        prop_assert_eq!(store.leases().unwrap(), m.lease_infos());
        for id in 1..5 {
            prop_assert_eq!(
                store.lease_keys(id).unwrap(),
                m.lease_keys(id),
                "lease {}",
                id
            );
        }
        // Watch replay gives back exactly what the commits returned; from the compact
        // revision itself, as in etcd, only its puts that compaction kept (the last write of
        // their key in that revision), without prev_kv.
        let m = &runner.committed;
        let mut kept: Vec<RevisionEvents> = Vec::new();
        for e in runner.history.iter().filter(|e| e.revision >= m.compact) {
            if e.revision > m.compact {
                kept.push(e.clone());
                continue;
            }
            let events: Vec<Event> = e
                .events
                .iter()
                .enumerate()
                .filter(|(i, ev)| {
                    let key = &ev.kv.as_ref().unwrap().key;
                    ev.r#type == EventType::Put as i32
                        && !e.events[i + 1..]
                            .iter()
                            .any(|later| &later.kv.as_ref().unwrap().key == key)
                })
                .map(|(_, ev)| Event {
                    prev_kv: None,
                    ..ev.clone()
                })
                .collect();
            if !events.is_empty() {
                kept.push(RevisionEvents {
                    revision: e.revision,
                    events,
                });
            }
        }
        prop_assert_eq!(
            store.history(m.compact.max(1), usize::MAX).unwrap(),
            kept.clone()
        );
        prop_assert_eq!(
            store.history(m.compact + 1, usize::MAX).unwrap(),
            kept.iter()
                .filter(|e| e.revision > m.compact)
                .cloned()
                .collect::<Vec<_>>()
        );
        prop_assert_eq!(
            store.history(m.compact + 2, 2).unwrap(),
            kept.iter()
                .skip_while(|e| e.revision < m.compact + 2)
                .take(2)
                .cloned()
                .collect::<Vec<_>>()
        );
        if m.compact >= 2 {
            prop_assert!(matches!(
                store.history(m.compact - 1, 1),
                Err(MvccError::Compacted)
            ));
        }
        // Every revision still readable reads the same as in the model.
        let m = &runner.committed;
        for rev in m.compact.max(1)..=m.rev {
            let mut req = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..RangeRequest::default()
            };
            prop_assert_eq!(
                store.range(&req).map_err(err_of),
                m.range(&req, m.rev),
                "at revision {}",
                rev
            );
            req.count_only = true;
            for (key, end) in [("\0", "\0"), ("a/", "a0"), ("b/", "b0")] {
                req.key = key.as_bytes().to_vec();
                req.range_end = end.as_bytes().to_vec();
                prop_assert_eq!(
                    store.range(&req).map_err(err_of),
                    m.range(&req, m.rev),
                    "count at revision {}",
                    rev
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
