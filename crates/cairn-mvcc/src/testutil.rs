//! Helpers for the unit tests.

use tempfile::TempDir;

use cairn_api::etcdserverpb::request_op::Request;
use cairn_api::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use cairn_api::mvccpb::KeyValue;

use crate::{LeaseCheck, MvccError, RevisionEvents, Store, StoreOptions};

/// Leases 1 to 9 exist.
pub struct Leases;
impl LeaseCheck for Leases {
    fn lease_exists(&self, id: i64) -> bool {
        (1..10).contains(&id)
    }
}

pub fn open_at(dir: &TempDir) -> Store {
    Store::open(
        &dir.path().join("db"),
        StoreOptions {
            cache_size_bytes: 4 << 20,
        },
    )
    .unwrap()
}

pub fn store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&dir);
    (dir, s)
}

pub fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..PutRequest::default()
    }
}

pub fn range_req(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..RangeRequest::default()
    }
}

pub fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..DeleteRangeRequest::default()
    }
}

pub fn try_put(s: &Store, req: &PutRequest) -> Result<PutResponse, MvccError> {
    let mut b = s.begin_write()?;
    let r = b.put(req, &Leases)?;
    b.commit(false)?;
    Ok(r)
}

pub fn put(s: &Store, k: &str, v: &str) -> PutResponse {
    try_put(s, &put_req(k, v)).unwrap()
}

pub fn del(s: &Store, k: &str, end: &str) -> DeleteRangeResponse {
    let mut b = s.begin_write().unwrap();
    let r = b.delete_range(&del_req(k, end)).unwrap();
    b.commit(false).unwrap();
    r
}

pub fn try_txn(
    s: &Store,
    req: &TxnRequest,
) -> Result<(TxnResponse, Vec<RevisionEvents>), MvccError> {
    let mut b = s.begin_write()?;
    let r = b.txn(req, &Leases)?;
    Ok((r, b.commit(false)?))
}

pub fn compact(s: &Store, rev: i64) -> Result<(), MvccError> {
    let mut b = s.begin_write()?;
    b.compact(rev)?;
    b.commit(false)?;
    Ok(())
}

pub fn get(s: &Store, k: &str) -> Option<KeyValue> {
    s.range(&range_req(k, "")).unwrap().kvs.pop()
}

pub fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

pub fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(k, v))),
    }
}

pub fn op_get(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range_req(k, end))),
    }
}

pub fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(del_req(k, end))),
    }
}

pub fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}
