//! Sequential specifications for [`check`](crate::check()).
//!
//! - [`Register`]: one register with read, write and compare-and-set (Jepsen's etcd test).
//! - [`KvAppend`]: a map of string keys with get, put and append, split per key.
//! - [`EtcdKv`]: etcd's keyspace with revisions and leases, for cairn's own histories.

mod etcd;
mod kv_append;
mod register;

pub use etcd::{
    key_in_range, Compare, CompareOp, CompareTarget, EtcdInput, EtcdKv, EtcdOutput, EtcdState,
    KeyValue, LeaseError, Txn, TxnOp, TxnOpResult,
};
pub use kv_append::{KvAppend, KvInput, KvOutput, KvState};
pub use register::{Register, RegisterInput, RegisterOutput};
