//! The checks etcd makes at the gRPC edge, before a request is proposed (etcd's
//! `v3rpc/key.go`). They look at the request alone, never at the store.

use std::collections::HashSet;

use thiserror::Error;

use cairn_api::etcdserverpb::request_op::Request;
use cairn_api::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Why a request is refused before it is proposed. The gRPC layer maps these to etcd's
/// strings (all `InvalidArgument`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ValidateError {
    /// An empty key (etcd: "key is not provided").
    #[error("key is not provided")]
    KeyNotProvided,
    /// `ignore_value` with a value (etcd: "value is provided").
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease (etcd: "lease is provided").
    #[error("lease is provided")]
    LeaseProvided,
    /// More compares or ops than `--max-txn-ops` (etcd: "too many operations in txn request").
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A key written twice in one txn (etcd: "duplicate key given in txn request").
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A txn op with no request set. etcd answers this with "key not found".
    #[error("key not found")]
    EmptyOp,
}

/// etcd's `checkRangeRequest`.
pub fn check_range(req: &RangeRequest) -> Result<(), ValidateError> {
    if req.key.is_empty() {
        return Err(ValidateError::KeyNotProvided);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn check_put(req: &PutRequest) -> Result<(), ValidateError> {
    if req.key.is_empty() {
        return Err(ValidateError::KeyNotProvided);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(ValidateError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(ValidateError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), ValidateError> {
    if req.key.is_empty() {
        return Err(ValidateError::KeyNotProvided);
    }
    Ok(())
}

/// etcd's Txn checks: `checkTxnRequest` (sizes, keys, every op, recursively), then the
/// duplicate-key check (`checkIntervals`) of the success and of the failure branch.
///
/// Sizes: the largest of the compare, success and failure counts must not exceed
/// `max_txn_ops` (the branches are counted separately, not summed); a nested txn gets what is
/// left of the budget (`max_txn_ops` minus its parent's largest count).
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), ValidateError> {
    check_txn_request(req, max_txn_ops as i64)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// True when etcd serves the txn without raft (every top-level op a Range); such a txn is
/// served by [`crate::Store::txn_read`].
pub fn is_txn_read_only(req: &TxnRequest) -> bool {
    crate::txn::is_read_only(req)
}

fn check_txn_request(req: &TxnRequest, max_txn_ops: i64) -> Result<(), ValidateError> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if opc > max_txn_ops {
        return Err(ValidateError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ValidateError::KeyNotProvided);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), ValidateError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(p)) => check_put(p),
        Some(Request::RequestDeleteRange(d)) => check_delete_range(d),
        Some(Request::RequestTxn(t)) => check_txn_request(t, max_txn_ops),
        None => Err(ValidateError::EmptyOp),
    }
}

/// Deleted intervals `[begin, end)`; a single-key delete is `[key, key + "\0")`. An interval
/// with `end <= begin` (e.g. etcd's "every key from" `range_end == "\0"`) holds no key, exactly
/// as in etcd's interval tree.
#[derive(Default)]
struct Dels {
    ivs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For the intervals sorted by begin: index of the largest end among the first i + 1.
    max_end: Vec<usize>,
    sorted: bool,
}

impl Dels {
    fn insert(&mut self, begin: Vec<u8>, end: Vec<u8>) {
        self.ivs.push((begin, end));
        self.sorted = false;
    }

    fn extend(&mut self, other: &Dels) {
        self.ivs.extend(other.ivs.iter().cloned());
        self.sorted = false;
    }

    /// True when some interval holds `key`.
    fn intersects(&mut self, key: &[u8]) -> bool {
        if !self.sorted {
            self.ivs.sort();
            self.max_end.clear();
            let mut best = 0;
            for i in 0..self.ivs.len() {
                if self.ivs[i].1 > self.ivs[best].1 {
                    best = i;
                }
                self.max_end.push(best);
            }
            self.sorted = true;
        }
        let n = self
            .ivs
            .partition_point(|(begin, _)| begin.as_slice() <= key);
        n > 0 && self.ivs[self.max_end[n - 1]].1.as_slice() > key
    }
}

/// etcd's `checkIntervals`: no key may be put twice, or both put and deleted, on any path
/// through the txn (a key put in both branches of one nested txn is fine).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Dels), ValidateError> {
    let mut dels = Dels::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                crate::layout::key_successor(&d.key)
            } else {
                d.range_end.clone()
            };
            dels.insert(d.key.clone(), end);
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.intersects(k) {
                return Err(ValidateError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(ValidateError::DuplicateKey);
            }
            if dels.intersects(k) {
                return Err(ValidateError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(&dels_then);
        dels.extend(&dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.intersects(&p.key) {
            return Err(ValidateError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::etcdserverpb::Compare;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..PutRequest::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..DeleteRangeRequest::default()
            })),
        }
    }
    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..RangeRequest::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(t)),
        }
    }

    #[test]
    fn simple_requests() {
        assert_eq!(
            check_range(&RangeRequest::default()),
            Err(ValidateError::KeyNotProvided)
        );
        assert_eq!(
            check_delete_range(&DeleteRangeRequest::default()),
            Err(ValidateError::KeyNotProvided)
        );
        let mut p = PutRequest {
            key: "k".into(),
            ..PutRequest::default()
        };
        assert_eq!(check_put(&p), Ok(()));
        p.ignore_value = true;
        assert_eq!(check_put(&p), Ok(()));
        p.value = "v".into();
        assert_eq!(check_put(&p), Err(ValidateError::ValueProvided));
        p.value.clear();
        p.ignore_lease = true;
        p.lease = 5;
        assert_eq!(check_put(&p), Err(ValidateError::LeaseProvided));
        p.key.clear();
        assert_eq!(check_put(&p), Err(ValidateError::KeyNotProvided));
    }

    #[test]
    fn op_counts() {
        let many = |n: usize| (0..n).map(|i| get(&format!("k{i}"))).collect::<Vec<_>>();
        assert_eq!(check_txn(&txn(many(3), many(3)), 3), Ok(()));
        assert_eq!(
            check_txn(&txn(many(4), many(1)), 3),
            Err(ValidateError::TooManyOps)
        );
        assert_eq!(
            check_txn(&txn(many(1), many(4)), 3),
            Err(ValidateError::TooManyOps)
        );
        let mut t = txn(vec![], vec![]);
        t.compare = vec![
            Compare {
                key: "a".into(),
                ..Compare::default()
            };
            4
        ];
        assert_eq!(check_txn(&t, 3), Err(ValidateError::TooManyOps));
        t.compare = vec![Compare::default()];
        assert_eq!(check_txn(&t, 3), Err(ValidateError::KeyNotProvided));
        // A nested txn gets what its parent leaves: 3 - 2 = 1.
        let inner = txn(many(2), vec![]);
        assert_eq!(
            check_txn(&txn(vec![get("a"), nested(inner.clone())], vec![]), 3),
            Err(ValidateError::TooManyOps)
        );
        assert_eq!(check_txn(&txn(vec![nested(inner)], vec![]), 3), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![RequestOp { request: None }], vec![]), 3),
            Err(ValidateError::EmptyOp)
        );
        assert_eq!(
            check_txn(&txn(vec![get("")], vec![]), 3),
            Err(ValidateError::KeyNotProvided)
        );
    }

    #[test]
    fn duplicate_keys() {
        let dup = Err(ValidateError::DuplicateKey);
        assert_eq!(check_txn(&txn(vec![put("a"), put("a")], vec![]), 8), dup);
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 8), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![del("a", ""), put("a")], vec![]), 8),
            dup
        );
        assert_eq!(
            check_txn(&txn(vec![put("b"), del("a", "c")], vec![]), 8),
            dup
        );
        assert_eq!(
            check_txn(&txn(vec![put("c"), del("a", "c")], vec![]), 8),
            Ok(())
        );
        // Deletes may overlap each other.
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), del("b", "d")], vec![]), 8),
            Ok(())
        );
        // etcd's interval tree holds nothing for `range_end == "\0"`.
        assert_eq!(
            check_txn(&txn(vec![del("a", "\0"), put("b")], vec![]), 8),
            Ok(())
        );
        // Nested: a put in both branches of one nested txn is fine...
        let both = nested(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(check_txn(&txn(vec![both.clone()], vec![]), 8), Ok(()));
        // ...but not beside a put of the parent or of another nested txn.
        assert_eq!(
            check_txn(&txn(vec![both.clone(), put("a")], vec![]), 8),
            dup
        );
        assert_eq!(
            check_txn(
                &txn(
                    vec![both.clone(), nested(txn(vec![put("a")], vec![]))],
                    vec![]
                ),
                8
            ),
            dup
        );
        // A parent's delete covers nested puts, and a nested delete covers the parent's puts.
        assert_eq!(check_txn(&txn(vec![del("a", "b"), both], vec![]), 8), dup);
        assert_eq!(
            check_txn(
                &txn(
                    vec![nested(txn(vec![], vec![del("a", "")])), put("a")],
                    vec![]
                ),
                8
            ),
            dup
        );
        // Only an else-branch put already put elsewhere is a duplicate.
        let else_dup = nested(txn(vec![put("x")], vec![put("a")]));
        assert_eq!(
            check_txn(&txn(vec![put("y"), else_dup.clone()], vec![]), 8),
            Ok(())
        );
        assert_eq!(
            check_txn(
                &txn(vec![nested(txn(vec![put("a")], vec![])), else_dup], vec![]),
                8
            ),
            dup
        );
    }
}
