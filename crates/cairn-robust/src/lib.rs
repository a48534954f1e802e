//! cairn's robustness harness: real cairn clusters under faults, with everything the clients
//! saw checked. It is how we know cairn never loses or invents data.
//!
//! A **run** ([`run::run`]) starts a cluster of 1 or 3 spawned `cairn` members, each behind a
//! fault proxy on its peer port ([`cluster`]); puts watchers with `prev_kv` on every member
//! ([`watch`]), a compactor every 200 ms ([`compactor`]) and etcd-like or Kubernetes-like
//! clients ([`traffic`]) to work; injects one fault ([`faults`]: partitions, one-way drops,
//! delays with jitter, connection cuts, SIGKILL of a follower, the leader or everyone,
//! SIGSTOP/SIGCONT, member replacement, crashes at failpoints inside cairn, loss of unsynced
//! writes); heals everything; reads the whole keyspace; and checks ([`checks`], with
//! cairn-check): linearizability (revision-aware etcd model, unknown writes resolved from the
//! watch event log), the watch guarantees, serializable reads against a replay of the log,
//! every acknowledged write present at the end, and equal HashKV on every member.
//!
//! Everything random comes from one seed ([`run::SEED_ENV`] overrides it); a failing run
//! leaves its history, watch records, fault timeline and member logs in a folder
//! ([`artifacts`]) named in its failure message, with the command that reruns it.
//!
//! **Profiles** ([`profile`]): `ci` (the `ci_profile` test, part of the README's test
//! command) and `long` (`cargo run --release -p cairn-robust -- --profile long`). The
//! `planted_bugs` test checks that bugs planted in cairn (feature `planted-bugs`) are caught.
//!
//! The cairn binary must be built with `cargo build -p cairn --features
//! failpoints,planted-bugs`; every run checks that first ([`run::ensure_binary`]).

pub mod artifacts;
pub mod checks;
pub mod cluster;
pub mod compactor;
pub mod faults;
pub mod profile;
pub mod record;
pub mod run;
pub mod traffic;
pub mod watch;
