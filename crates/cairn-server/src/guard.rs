//! What etcd's gRPC interceptors refuse before a request reaches its service, on every client
//! listener:
//!
//! - a request carrying `hasleader: true` (clientv3's `WithRequireLeader`) while this member
//!   knows no leader → "etcdserver: no leader";
//! - anything but `Status` and `Range` on a learner → "etcdserver: rpc not supported for
//!   learner" (a linearizable Range is refused later, once the body is decoded).

use crate::core::Core;
use crate::services::watch::{HAS_LEADER, REQUIRE_LEADER_KEY};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cairn_api::EtcdError;
use std::sync::Arc;

/// Methods a learner serves (etcd's `isRPCSupportedForLearner`).
const LEARNER_METHODS: &[&str] = &["/etcdserverpb.KV/Range", "/etcdserverpb.Maintenance/Status"];

/// Why `path` with these headers is refused, if it is.
pub fn refusal(core: &Core, path: &str, headers: &http::HeaderMap) -> Option<EtcdError> {
    let requires_leader = headers
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|v| v.as_bytes() == HAS_LEADER.as_bytes());
    if requires_leader && core.node.status().leader_id() == 0 {
        return Some(EtcdError::NoLeader);
    }
    if core.node.status().is_learner() && !LEARNER_METHODS.contains(&path) {
        return Some(EtcdError::NotSupportedForLearner);
    }
    None
}

/// axum middleware applying [`refusal`] to gRPC requests.
pub async fn admit(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        if let Some(err) = refusal(&core, req.uri().path(), req.headers()) {
            return tonic::Status::from(err).into_http::<axum::body::Body>();
        }
    }
    next.run(req).await
}
