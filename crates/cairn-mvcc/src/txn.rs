//! etcd's Txn: compares, the chosen path through nested txns, the checks made before anything
//! is written, and execution.
//!
//! As in etcd, every compare of every nested txn on the chosen path is evaluated against the
//! state before the txn, and so are the pre-checks (`ignore_value` / `ignore_lease` need the key,
//! leases must exist, range revisions must be readable). Ops then run in order and see the
//! writes of earlier ops.

use std::cmp::Ordering;

use cairn_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_api::etcdserverpb::request_op::Request;
use cairn_api::etcdserverpb::response_op::Response;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;

use crate::change::Revision;
use crate::error::MvccError;
use crate::range::header;
use crate::read::Span;
use crate::LeaseCheck;

/// What a txn needs from the store it runs on.
pub(crate) trait TxnTarget {
    /// The revision before the txn.
    fn base(&self) -> i64;
    /// The revision readers inside the txn see now.
    fn view_rev(&self) -> i64;
    /// The compact revision (-1 if never compacted).
    fn compact(&self) -> i64;
    /// The latest live version of `key` before the txn.
    fn get_before(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError>;
    /// The live keys of `span` before the txn.
    fn collect_before(&self, span: Span<'_>) -> Result<Vec<KeyValue>, MvccError>;
    /// A Range seeing the txn's writes so far.
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError>;
    /// A Put (lease already checked).
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError>;
    /// A DeleteRange.
    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError>;
}

impl TxnTarget for Revision<'_> {
    fn base(&self) -> i64 {
        Revision::base(self)
    }
    fn view_rev(&self) -> i64 {
        Revision::view_rev(self)
    }
    fn compact(&self) -> i64 {
        Revision::compact(self)
    }
    fn get_before(&self, key: &[u8]) -> Result<Option<KeyValue>, MvccError> {
        Revision::get_before(self, key)
    }
    fn collect_before(&self, span: Span<'_>) -> Result<Vec<KeyValue>, MvccError> {
        Revision::collect_before(self, span)
    }
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        Revision::range(self, req)
    }
    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, MvccError> {
        Revision::put(self, req)
    }
    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        Revision::delete_range(self, req)
    }
}

/// True when etcd serves the txn without raft: every top-level op of both branches is a Range
/// (a nested txn, even of ranges only, makes it a write).
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

/// Runs `req` on `target`. On error nothing must be kept: the caller rolls back.
pub(crate) fn run<T: TxnTarget>(
    target: &mut T,
    req: &TxnRequest,
    leases: &dyn LeaseCheck,
) -> Result<TxnResponse, MvccError> {
    let mut path = Vec::new();
    compare_path(&*target, req, &mut path)?;
    if !is_read_only(req) {
        check_path(req, &path, &mut 0, &mut |op| {
            check_put(&*target, op, leases)
        })?;
    }
    let (base, compact) = (target.base(), target.compact());
    check_path(req, &path, &mut 0, &mut |op| check_range(op, base, compact))?;
    let mut resp = execute(target, req, &path, &mut 0)?;
    resp.header = header(target.view_rev());
    Ok(resp)
}

/// The branch taken by each txn on the chosen path, depth first, as etcd's `compareToPath`.
fn compare_path<T: TxnTarget>(
    target: &T,
    req: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), MvccError> {
    let mut ok = true;
    for c in &req.compare {
        if !compare(target, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    for op in branch(req, ok) {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            compare_path(target, nested, path)?;
        }
    }
    Ok(())
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// One compare against the state before the txn. Over a range every key must satisfy it; with
/// no key at all, VALUE compares fail and the others compare against zeros.
fn compare<T: TxnTarget>(target: &T, c: &Compare) -> Result<bool, MvccError> {
    let kvs = match Span::new(&c.key, &c.range_end) {
        Span::Single(key) => target.get_before(key)?.into_iter().collect(),
        span => target.collect_before(span)?,
    };
    if kvs.is_empty() {
        if c.target == CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// etcd's `compareKV`: a target union of the wrong kind compares against 0 / empty.
pub(crate) fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int =
        |pick: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(pick).unwrap_or(0);
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let empty = Vec::new();
            let v = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &empty,
            };
            kv.value.cmp(v)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(|t| match t {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(|t| match t {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int(|t| match t {
            TargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(|t| match t {
            TargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

/// Calls `check` on every non-txn op of the chosen path, depth first (etcd's `checkRequests`).
fn check_path(
    req: &TxnRequest,
    path: &[bool],
    at: &mut usize,
    check: &mut dyn FnMut(&RequestOp) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let ok = path[*at];
    *at += 1;
    for op in branch(req, ok) {
        match &op.request {
            Some(Request::RequestTxn(nested)) => check_path(nested, path, at, check)?,
            _ => check(op)?,
        }
    }
    Ok(())
}

/// etcd's `checkRequestPut`, against the state before the txn.
fn check_put<T: TxnTarget>(
    target: &T,
    op: &RequestOp,
    leases: &dyn LeaseCheck,
) -> Result<(), MvccError> {
    let Some(Request::RequestPut(put)) = &op.request else {
        return Ok(());
    };
    if (put.ignore_value || put.ignore_lease) && target.get_before(&put.key)?.is_none() {
        return Err(MvccError::KeyNotFound);
    }
    if put.lease != 0 && !leases.lease_exists(put.lease) {
        return Err(MvccError::LeaseNotFound);
    }
    Ok(())
}

/// etcd's `checkRequestRange`: revision 0 is fine; above the revision before the txn is a
/// future revision; below the compact revision (-1 if never compacted, so a negative revision
/// fails once the store was compacted) is compacted.
fn check_range(op: &RequestOp, base: i64, compact: i64) -> Result<(), MvccError> {
    let Some(Request::RequestRange(range)) = &op.request else {
        return Ok(());
    };
    match range.revision {
        0 => Ok(()),
        r if r > base => Err(MvccError::FutureRev),
        r if r < compact => Err(MvccError::Compacted),
        _ => Ok(()),
    }
}

fn execute<T: TxnTarget>(
    target: &mut T,
    req: &TxnRequest,
    path: &[bool],
    at: &mut usize,
) -> Result<TxnResponse, MvccError> {
    let succeeded = path[*at];
    *at += 1;
    let ops = branch(req, succeeded);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(target.range(r)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(target.put(p)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(target.delete_range(d)?))
            }
            Some(Request::RequestTxn(nested)) => {
                let mut resp = execute(target, nested, path, at)?;
                // etcd never sets the revision of a nested txn's header.
                resp.header = Some(ResponseHeader::default());
                Some(Response::ResponseTxn(resp))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use cairn_api::etcdserverpb::compare::{
        CompareResult as R, CompareTarget as T, TargetUnion as U,
    };
    use cairn_api::etcdserverpb::response_op::Response;
    use cairn_api::etcdserverpb::{Compare, PutRequest, RequestOp};

    use crate::testutil::*;
    use crate::MvccError;

    fn cmp(key: &str, end: &str, target: T, result: R, value: U) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.into(),
            range_end: end.into(),
            target_union: Some(value),
        }
    }

    fn count_all() -> RequestOp {
        let mut r = range_req("\0", "\0");
        r.count_only = true;
        RequestOp {
            request: Some(cairn_api::etcdserverpb::request_op::Request::RequestRange(
                r,
            )),
        }
    }

    fn succeeded(s: &crate::Store, c: Compare) -> bool {
        try_txn(s, &txn(vec![c], vec![], vec![]))
            .unwrap()
            .0
            .succeeded
    }

    #[test]
    fn compares() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        put(&s, "a", "2"); // 3
        let mut req = put_req("b", "x");
        req.lease = 5;
        try_put(&s, &req).unwrap(); // 4
        assert!(succeeded(
            &s,
            cmp("a", "", T::Version, R::Equal, U::Version(2))
        ));
        assert!(succeeded(
            &s,
            cmp("a", "", T::Create, R::Equal, U::CreateRevision(2))
        ));
        assert!(succeeded(
            &s,
            cmp("a", "", T::Mod, R::Greater, U::ModRevision(2))
        ));
        assert!(succeeded(
            &s,
            cmp("a", "", T::Mod, R::Less, U::ModRevision(4))
        ));
        assert!(succeeded(
            &s,
            cmp("a", "", T::Value, R::NotEqual, U::Value("1".into()))
        ));
        assert!(succeeded(&s, cmp("b", "", T::Lease, R::Equal, U::Lease(5))));
        assert!(!succeeded(
            &s,
            cmp("a", "", T::Value, R::Greater, U::Value("2".into()))
        ));
        // A union of the wrong kind compares against 0.
        assert!(succeeded(
            &s,
            cmp("a", "", T::Mod, R::Greater, U::Version(100))
        ));
        // Missing keys: version / create / mod / lease are 0, a value compare always fails.
        assert!(succeeded(
            &s,
            cmp("zz", "", T::Version, R::Equal, U::Version(0))
        ));
        assert!(succeeded(
            &s,
            cmp("zz", "", T::Create, R::Equal, U::CreateRevision(0))
        ));
        assert!(!succeeded(
            &s,
            cmp("zz", "", T::Value, R::NotEqual, U::Value("q".into()))
        ));
        // Ranges: every key must satisfy; an empty range compares zeros.
        assert!(succeeded(
            &s,
            cmp("a", "c", T::Version, R::Greater, U::Version(0))
        ));
        assert!(!succeeded(
            &s,
            cmp("a", "c", T::Version, R::Equal, U::Version(2))
        ));
        assert!(succeeded(
            &s,
            cmp("a", "\0", T::Mod, R::Less, U::ModRevision(5))
        ));
        assert!(succeeded(
            &s,
            cmp("x", "z", T::Mod, R::Equal, U::ModRevision(0))
        ));
        assert!(!succeeded(
            &s,
            cmp("x", "z", T::Value, R::Equal, U::Value(vec![]))
        ));
        // Read-only txns do not bump the revision.
        assert_eq!(s.current_revision(), 4);
    }

    #[test]
    fn branches_ops_and_one_revision() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        let t = txn(
            vec![cmp("a", "", T::Value, R::Equal, U::Value("1".into()))],
            vec![
                op_get("a", ""),
                op_put("b", "1"),
                op_put("c", "1"),
                op_get("b", "d"),
                op_del("a", ""),
                count_all(),
            ],
            vec![op_put("f", "1")],
        );
        let (resp, events) = try_txn(&s, &t).unwrap();
        assert!(resp.succeeded);
        assert_eq!(resp.header.unwrap().revision, 3);
        let headers: Vec<i64> = resp
            .responses
            .iter()
            .map(|r| match r.response.as_ref().unwrap() {
                Response::ResponseRange(r) => r.header.unwrap().revision,
                Response::ResponsePut(r) => r.header.unwrap().revision,
                Response::ResponseDeleteRange(r) => r.header.unwrap().revision,
                Response::ResponseTxn(r) => r.header.unwrap().revision,
            })
            .collect();
        // Ranges before any write see the old revision; after, the new one.
        assert_eq!(headers, vec![2, 3, 3, 3, 3, 3]);
        // The counts table answers with this txn's own changes.
        let Some(Response::ResponseRange(r)) = &resp.responses[5].response else {
            panic!()
        };
        assert_eq!(r.count, 2);
        let Some(Response::ResponseRange(r)) = &resp.responses[3].response else {
            panic!()
        };
        assert_eq!(keys(r), vec!["b", "c"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].revision, 3);
        assert_eq!(events[0].events.len(), 3);
        assert_eq!(s.current_revision(), 3);
        assert_eq!(get(&s, "a"), None);
        let Some(Response::ResponseRange(r)) = &resp.responses[0].response else {
            panic!()
        };
        assert_eq!(r.count, 1);
        // Failure branch.
        let (resp, _) = try_txn(&s, &t).unwrap();
        assert!(!resp.succeeded);
        assert_eq!(get(&s, "f").unwrap().mod_revision, 4);
        // A txn whose only write deletes nothing is no revision (and its delete header is
        // the old revision).
        let (resp, events) = try_txn(&s, &txn(vec![], vec![op_del("zz", "")], vec![])).unwrap();
        assert_eq!(resp.header.unwrap().revision, 4);
        assert!(events.is_empty());
    }

    #[test]
    fn nested_txns_compare_against_the_state_before() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        let inner = txn(
            // "b" does not exist before the txn, even though the outer txn puts it first.
            vec![cmp("b", "", T::Version, R::Equal, U::Version(0))],
            vec![op_put("c", "then")],
            vec![op_put("c", "else")],
        );
        let outer = txn(
            vec![],
            vec![op_put("b", "1"), op_txn(inner), op_get("c", "")],
            vec![],
        );
        let (resp, events) = try_txn(&s, &outer).unwrap();
        assert_eq!(get(&s, "c").unwrap().value, b"then");
        let Some(Response::ResponseTxn(nested)) = &resp.responses[1].response else {
            panic!()
        };
        assert!(nested.succeeded);
        assert_eq!(
            nested.header.unwrap().revision,
            0,
            "etcd leaves nested txn headers empty"
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].events.len(), 2);
    }

    #[test]
    fn failing_txns_write_nothing() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        let mut ignore = PutRequest {
            key: "missing".into(),
            ignore_value: true,
            ..PutRequest::default()
        };
        let put_op = |p: PutRequest| RequestOp {
            request: Some(cairn_api::etcdserverpb::request_op::Request::RequestPut(p)),
        };
        // The bad put is checked before anything runs, even behind a nested txn.
        let t = txn(
            vec![],
            vec![
                op_put("x", "1"),
                op_txn(txn(vec![], vec![put_op(ignore.clone())], vec![])),
            ],
            vec![],
        );
        assert!(matches!(try_txn(&s, &t), Err(MvccError::KeyNotFound)));
        // A put on the branch not taken does not matter.
        let t = txn(vec![], vec![op_put("x", "1")], vec![put_op(ignore.clone())]);
        try_txn(&s, &t).unwrap();
        assert_eq!(s.current_revision(), 3);
        ignore.ignore_value = false;
        ignore.lease = 99;
        let t = txn(vec![], vec![op_put("y", "1"), put_op(ignore)], vec![]);
        assert!(matches!(try_txn(&s, &t), Err(MvccError::LeaseNotFound)));
        // Range revisions are checked against the state before the txn.
        let mut future = range_req("a", "");
        future.revision = 4;
        let t = txn(
            vec![],
            vec![
                op_put("y", "1"),
                RequestOp {
                    request: Some(cairn_api::etcdserverpb::request_op::Request::RequestRange(
                        future,
                    )),
                },
            ],
            vec![],
        );
        assert!(matches!(try_txn(&s, &t), Err(MvccError::FutureRev)));
        // An op that fails while running (a put whose key an earlier op deleted; etcd would
        // panic here) is undone with everything before it.
        let mut later = put_req("x", "");
        later.ignore_value = true;
        let t = txn(
            vec![],
            vec![op_put("z", "1"), op_del("x", "\0"), put_op(later)],
            vec![],
        );
        let mut b = s.begin_write().unwrap();
        assert!(matches!(b.txn(&t, &Leases), Err(MvccError::KeyNotFound)));
        assert_eq!(b.revision(), 3);
        assert!(b.commit(false).unwrap().is_empty());
        assert_eq!(s.current_revision(), 3);
        assert_eq!(get(&s, "z"), None);
        assert_eq!(get(&s, "x").unwrap().mod_revision, 3);
        let mut all = range_req("\0", "\0");
        all.count_only = true;
        assert_eq!(s.range(&all).unwrap().count, 2);
        let r = s.range(&range_req("\0", "\0")).unwrap();
        assert_eq!((r.count, r.kvs.len()), (2, 2));
    }

    #[test]
    fn range_revisions_inside_txns() {
        let (_d, s) = store();
        put(&s, "a", "1"); // 2
        put(&s, "a", "2"); // 3
        compact(&s, 2).unwrap();
        let ranged = |rev: i64| {
            let mut r = range_req("a", "");
            r.revision = rev;
            txn(
                vec![],
                vec![RequestOp {
                    request: Some(cairn_api::etcdserverpb::request_op::Request::RequestRange(
                        r,
                    )),
                }],
                vec![],
            )
        };
        assert!(try_txn(&s, &ranged(2)).is_ok());
        assert!(matches!(try_txn(&s, &ranged(1)), Err(MvccError::Compacted)));
        // etcd quirk: a negative revision is below the compact revision once there is one.
        assert!(matches!(
            try_txn(&s, &ranged(-1)),
            Err(MvccError::Compacted)
        ));
        assert!(matches!(s.txn_read(&ranged(-1)), Err(MvccError::Compacted)));
        assert!(matches!(s.txn_read(&ranged(4)), Err(MvccError::FutureRev)));
        let resp = s.txn_read(&ranged(0)).unwrap();
        assert_eq!(resp.header.unwrap().revision, 3);
        assert!(matches!(
            s.txn_read(&txn(vec![], vec![op_put("a", "1")], vec![])),
            Err(MvccError::NotReadOnly)
        ));
    }

    #[test]
    fn delete_then_put_of_one_key_in_one_txn() {
        // Passes etcd's duplicate check (a "from key" delete holds no interval there).
        let (_d, s) = store();
        put(&s, "n", "1"); // 2
        let mut p = put_req("n", "2");
        p.prev_kv = true;
        let t = txn(
            vec![],
            vec![
                op_del("a", "\0"),
                RequestOp {
                    request: Some(cairn_api::etcdserverpb::request_op::Request::RequestPut(p)),
                },
            ],
            vec![],
        );
        let (resp, events) = try_txn(&s, &t).unwrap();
        let Some(Response::ResponsePut(pr)) = &resp.responses[1].response else {
            panic!()
        };
        assert_eq!(pr.prev_kv, None);
        let kv = get(&s, "n").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 3, 1));
        assert_eq!(events[0].events.len(), 2);
        assert_eq!(s.range(&range_req("\0", "\0")).unwrap().count, 1);
    }
}
