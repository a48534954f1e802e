//! Plain HTTP on the client port, beside gRPC: `/health`, `/livez`, `/readyz`, `/version` and
//! `/metrics`, answered as etcd 3.5 answers them.

use crate::config::{CAIRN_VERSION, ETCD_CLUSTER_VERSION, ETCD_COMPAT_VERSION};
use crate::core::Core;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How long `/health` waits for a linearizable read before calling the member unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP routes, to be merged with the gRPC router on the client port.
pub fn routes(core: Arc<Core>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(core)
}

/// Why the member cannot serve, or `None` when it can: a leader is known and a linearizable
/// read completes in time.
async fn unhealthy_reason(core: &Core) -> Option<&'static str> {
    if core.node.status().leader_id() == 0 {
        return Some("RAFT NO LEADER");
    }
    match tokio::time::timeout(HEALTH_TIMEOUT, core.read_barrier()).await {
        Ok(Ok(())) => None,
        _ => Some("QGET ERROR"),
    }
}

async fn health(State(core): State<Arc<Core>>) -> impl IntoResponse {
    match unhealthy_reason(&core).await {
        None => (
            StatusCode::OK,
            Json(serde_json::json!({"health": "true", "reason": ""})),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"health": "false", "reason": reason})),
        ),
    }
}

/// Anything no route claims: a gRPC call to a service cairn does not have answers
/// `Unimplemented` as gRPC requires; any other request gets etcd's plain 404.
pub async fn unknown_path(req: axum::extract::Request) -> axum::response::Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented("unknown service").into_http()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    match unhealthy_reason(&core).await {
        None => (StatusCode::OK, "ok".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{reason}\nreadyz check failed"),
        ),
    }
}

async fn version() -> impl IntoResponse {
    Json(serde_json::json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
        "cairn": CAIRN_VERSION,
    }))
}

/// A small set of etcd's metric names, so existing dashboards find the basics.
async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    let st = core.node.status();
    let mut out = String::new();
    let gauges: [(&str, &str, f64); 8] = [
        (
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            (st.leader_id() != 0) as u8 as f64,
        ),
        (
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            st.is_leader() as u8 as f64,
        ),
        (
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            st.commit_index() as f64,
        ),
        (
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            core.applied_index() as f64,
        ),
        (
            "etcd_server_term",
            "The current raft term.",
            st.term() as f64,
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            core.store.db_size() as f64,
        ),
        (
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            core.store.db_size_in_use() as f64,
        ),
        (
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            core.store.current_revision() as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version.\n# TYPE etcd_server_version gauge\netcd_server_version{{server_version=\"{ETCD_COMPAT_VERSION}\"}} 1"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
