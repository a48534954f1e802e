//! The gRPC services. Every service is registered; an RPC not built yet answers
//! `Unimplemented` (the generated default), never a fake success.

pub mod cluster;
pub mod kv;
pub mod maintenance;

use cairn_api::etcdserverpb::{auth_server::Auth, lease_server::Lease, watch_server::Watch};

/// Stands for a service whose RPCs are not built yet: every call gets the generated
/// `Unimplemented` answer.
pub struct Unbuilt;

#[tonic::async_trait]
impl Watch for Unbuilt {}
#[tonic::async_trait]
impl Lease for Unbuilt {}
#[tonic::async_trait]
impl Auth for Unbuilt {}
