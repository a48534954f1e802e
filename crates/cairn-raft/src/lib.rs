//! Raft consensus for cairn: the write-ahead log ([`wal`]), raft-rs `Storage` on top of it
//! ([`storage::DiskStorage`]), the Ready loop that drives raft-rs ([`node`]) and their errors
//! ([`error`]). This crate knows nothing of the keyspace: committed entries leave it as bytes.
//!
//! Feature `failpoints` (test builds for the robustness harness): the `raft_before_save` and
//! `raft_after_save` failpoints in the Ready loop, and the WAL's `synced.txt` with
//! `wal::truncate_to_synced` to simulate a power loss.

pub mod error;
mod logger;
pub mod node;
pub mod storage;
pub mod wal;

pub use error::WalError;
