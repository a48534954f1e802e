//! The gRPC services. Every service is registered; an RPC not built yet answers
//! `Unimplemented` (the generated default), never a fake success.

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use cairn_api::etcdserverpb::auth_server::Auth;

/// Stands for a service whose RPCs are not built yet: every call gets the generated
/// `Unimplemented` answer.
pub struct Unbuilt;

#[tonic::async_trait]
impl Auth for Unbuilt {}
