//! The etcd v3 wire contract, as cairn speaks it.
//!
//! This crate holds cairn's own `.proto` files (under `proto/`), wire-compatible with etcd
//! v3.5: the same packages, services, method paths, message and field names and numbers. They
//! are compiled at build time with `protox` (no system `protoc`) and generated with prost and
//! tonic, clients and servers both:
//!
//! - [`etcdserverpb`]: the `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance` and `Auth` services
//!   and their messages (e.g. [`etcdserverpb::kv_server::KvServer`],
//!   [`etcdserverpb::kv_client::KvClient`], [`etcdserverpb::RangeRequest`]);
//! - [`mvccpb`]: [`mvccpb::KeyValue`] and [`mvccpb::Event`];
//! - [`authpb`]: users, roles, permissions;
//! - [`v3electionpb`] and [`v3lockpb`]: the `Election` and `Lock` services;
//! - [`cairnpb`]: cairn's own raft log payload, [`cairnpb::InternalRequest`], and the
//!   member-to-member `Peer` service on the peer port.
//!
//! Rust names follow prost's conversion of etcd's proto names: `HashKV*` becomes
//! [`etcdserverpb::HashKvRequest`], fields `ID`/`TTL`/`grantedTTL` become `id`/`ttl`/
//! `granted_ttl`, `peerURLs`/`clientURLs` become `peer_ur_ls`/`client_ur_ls`, `memberID` becomes
//! `member_id`; `bytes` fields are `Vec<u8>`, enum fields are `i32` with typed getters (e.g.
//! `RangeRequest::sort_order()`). Server traits are `#[tonic::async_trait]` traits
//! (e.g. [`etcdserverpb::kv_server::Kv`]).
//!
//! [`EtcdError`] is the one place etcd's error strings and gRPC codes live; clients match the
//! strings byte for byte.

mod error;

pub use error::EtcdError;

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in this crate
/// (imports included), e.g. for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));

/// etcd's key-value records and watch events (`mvccpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's users, roles and permissions (`authpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's client API: KV, Watch, Lease, Cluster, Maintenance and Auth (`etcdserverpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's leader election service (`v3electionpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// etcd's distributed lock service (`v3lockpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// cairn's own raft log entry payload and peer protocol (`cairnpb`); not part of etcd's API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
