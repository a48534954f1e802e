//! etcdserverpb.KV: validation at the edge (as etcd's v3rpc does), then writes through raft and
//! reads through the linearizable barrier.

use crate::apply::Applied;
use crate::core::Core;
use crate::errors::{mvcc_error, validation_error};
use cairn_api::cairnpb::internal_request::Request as Internal;
use cairn_api::etcdserverpb::kv_server::Kv;
use cairn_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_api::EtcdError;
use cairn_mvcc::validate;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The KV service.
pub struct KvService {
    core: Arc<Core>,
}

impl KvService {
    /// A KV service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        KvService { core }
    }
}

/// A response variant that does not match its request means the apply path is broken.
fn mismatched() -> Status {
    tracing::error!("apply returned a response of the wrong kind");
    EtcdError::Stopped.into()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_range(&req).map_err(validation_error)?;
        Ok(Response::new(self.core.range(req).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        validate::check_put(&req).map_err(validation_error)?;
        match self.core.propose(Internal::Put(req)).await? {
            (Applied::Put(mut resp), rev) => {
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        validate::check_delete_range(&req).map_err(validation_error)?;
        match self.core.propose(Internal::DeleteRange(req)).await? {
            (Applied::DeleteRange(mut resp), rev) => {
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        validate::check_txn(&req, self.core.cfg.max_txn_ops).map_err(validation_error)?;
        if validate::is_txn_read_only(&req) {
            // As etcd: a txn of ranges only is served from the local store, after the
            // linearizable barrier unless every range in it is serializable.
            if !is_txn_serializable(&req) {
                self.core.linearizable_barrier().await?;
            }
            let mut resp = self.core.store.txn_read(&req).map_err(mvcc_error)?;
            let rev = resp
                .header
                .map(|h| h.revision)
                .unwrap_or_else(|| self.core.store.current_revision());
            resp.header = Some(self.core.header(rev));
            return Ok(Response::new(resp));
        }
        match self.core.propose(Internal::Txn(req)).await? {
            (Applied::Txn(mut resp), rev) => {
                // Responses inside the txn carry only a revision, as etcd's do; the store
                // fills those.
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        match self.core.propose(Internal::Compaction(req)).await? {
            (Applied::Compaction(mut resp), rev) => {
                resp.header = Some(self.core.header(rev));
                Ok(Response::new(resp))
            }
            _ => Err(mismatched()),
        }
    }
}

/// Every op in both branches is a serializable range.
fn is_txn_serializable(req: &TxnRequest) -> bool {
    use cairn_api::etcdserverpb::request_op::Request as Op;
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(&op.request, Some(Op::RequestRange(r)) if r.serializable))
}
