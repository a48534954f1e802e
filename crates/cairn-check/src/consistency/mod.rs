//! Cross-checks between the clients' history and the watchers' [`EventLog`]:
//!
//! - `resolve.rs`: [`resolve_unknown_writes`], unknown writes the log shows took effect (at
//!   its revision) or never happened, before the linearizability check.
//! - `reads.rs`: [`check_serializable_reads`], each equal to the log's keyspace at its
//!   revision (stale but consistent).
//! - `acked.rs`: [`check_acknowledged_writes`], every acknowledged write in the log as
//!   acknowledged, nothing in the log that no operation wrote, and the log's replay equal to
//!   the keyspace read at the end.
//!
//! All of them rely on each write's values being unique across the run.
//!
//! [`EventLog`]: crate::watch::EventLog

mod acked;
mod reads;
mod resolve;
mod writes;

pub use acked::check_acknowledged_writes;
pub use reads::check_serializable_reads;
pub use resolve::resolve_unknown_writes;
