//! cairn's linearizability checker: is what the clients saw explainable by some sequential
//! order of their operations that respects real time?
//!
//! - [`History`] holds operations with their client, call time, input and [`Outcome`]: a
//!   return time and output, or unknown (timed out, never returned), in which case the
//!   operation may have taken effect at any point after its call, or never. [`Recorder`]
//!   builds one from invoke / complete events.
//! - A [`Model`] is the sequential specification: an initial state, a step that accepts or
//!   rejects an output, and optional hooks: which operations are read-only (unknown ones are
//!   dropped), how the history splits into independent parts (e.g. per key), a monotone
//!   progress measure with per-operation bounds (etcd's revision: branches that strand an
//!   operation are cut at once, see `progress.rs`), and which unknown operations the rest of
//!   the history proves took effect.
//! - [`check`] runs the Wing–Gong–Lowe search with Lowe's memoization of
//!   (linearized set, state) pairs (see `wgl.rs`, `memo.rs`) on every part, the parts taking
//!   turns in slices of steps so the cheapest failure ends the check, within an optional time
//!   or step bound ([`CheckOptions`]). It answers with a [`Verdict`]: linearizable, not, or
//!   unknown when the bound ran out. A failure comes with the longest linearizable prefix
//!   found and the operation that could not be placed after it ([`Failure::explain`]).
//! - [`models`]: [`Register`](models::Register) (read / write / cas),
//!   [`KvAppend`](models::KvAppend) (get / put / append per key) and
//!   [`EtcdKv`](models::EtcdKv), etcd's keyspace with revisions (gets, ranges, puts, deletes,
//!   transactions) and leases (grants, puts with a lease, revokes), for cairn's own histories.
//! - [`parse`]: the golden history formats (Jepsen etcd logs, EDN key-value logs).
//! - [`watch`]: what watchers saw ([`WatchRecord`](watch::WatchRecord)), the ground truth
//!   merged from them ([`EventLog`](watch::EventLog): every revision's events where a
//!   whole-keyspace watcher saw it, gaps reported, the keyspace replayed at a revision), and
//!   etcd's watch guarantees checked against it ([`check_watches`](watch::check_watches):
//!   ordered, unique, atomic, reliable, resumable, `prev_kv`, filters).
//! - [`consistency`]: the client history against the event log: unknown writes resolved by it
//!   before [`check`], serializable reads equal to its replay at their revision, every
//!   acknowledged write in it and nothing invented, its replay equal to the final keyspace.
//! - [`Violation`]: what the watch and consistency checks report, one line each.
//!
//! ```
//! use cairn_check::models::{Register, RegisterInput as In, RegisterOutput as Out};
//! use cairn_check::{check, CheckOptions, History, Verdict};
//!
//! let mut history = History::new();
//! history.push_returned(0, 0, 10, In::Write(1), Out::Write).unwrap();
//! // A read that starts after the write returned must see it.
//! history.push_returned(1, 11, 12, In::Read, Out::Read(None)).unwrap();
//! let report = check(&Register, &history, &CheckOptions::default());
//! assert_eq!(report.verdict, Verdict::NotLinearizable);
//! ```

mod bitset;
mod check;
pub mod consistency;
mod error;
mod fxhash;
mod history;
mod memo;
mod model;
pub mod models;
pub mod parse;
mod progress;
mod recorder;
mod violation;
pub mod watch;
mod wgl;

pub use check::{check, CheckOptions, CheckReport, Failure, Verdict};
pub use error::{HistoryError, ParseError};
pub use history::{History, Operation, Outcome};
pub use model::{partition_by_key, Model};
pub use recorder::Recorder;
pub use violation::{Violation, ViolationKind};
