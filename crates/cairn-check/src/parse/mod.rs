//! Parsers for the golden history formats (see `shared/golden/linearizability/README.md`).
//!
//! - [`jepsen`]: Jepsen's etcd register logs, into [`Register`](crate::models::Register)
//!   histories.
//! - [`kv`]: one EDN map per event, into [`KvAppend`](crate::models::KvAppend) histories.
//!
//! Both use a logical clock that ticks at every invoke and every known return, in file order.

mod edn;
pub mod jepsen;
pub mod kv;

pub use jepsen::parse_jepsen;
pub use kv::parse_kv;
