//! Raft consensus for cairn: the write-ahead log ([`wal`]), raft-rs `Storage` on top of it
//! ([`storage::DiskStorage`]), the Ready loop that drives raft-rs ([`node`]) and their errors
//! ([`error`]). This crate knows nothing of the keyspace: committed entries leave it as bytes.

pub mod error;
mod logger;
pub mod node;
pub mod storage;
pub mod wal;

pub use error::WalError;
