//! Watch histories: what every watcher saw ([`WatchRecord`]), the ground truth merged from
//! them ([`EventLog`]), and etcd's watch guarantees checked against it ([`check_watches`]).
//!
//! - `record.rs`: the recorded types ([`WatchEvent`], [`WatchResponse`], [`WatchRequest`],
//!   [`WatchRecord`]).
//! - `log.rs`, `merge.rs`: the [`EventLog`], one entry per revision, complete when a watcher
//!   that sees everything delivered it; contradictions it cannot attribute are reported.
//! - `replay.rs`: the keyspace at a revision ([`EventLog::state_at`]) and a key before a
//!   revision ([`EventLog::value_before`]), where the log knows every revision before.
//! - `check.rs`, `against_log.rs`: [`check_watches`], per stream (ordered, unique, atomic,
//!   filters) and against the log (reliable, resumable, content, `prev_kv`).

mod against_log;
mod check;
mod log;
mod merge;
mod record;
mod replay;

pub use check::check_watches;
pub use log::{EventLog, Knowledge};
pub use record::{EventKind, WatchEvent, WatchRecord, WatchRequest, WatchResponse};
