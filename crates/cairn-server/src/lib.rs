//! cairn's etcd-compatible server: bootstrap and recovery, the apply loop that turns committed
//! raft entries into MVCC writes, the gRPC services (KV, Maintenance, Cluster, Lease, Watch; the
//! rest answer `Unimplemented` until built), the watch hub, the HTTP endpoints on the client
//! port, and TLS on the client and peer ports. Test builds add failpoints and planted bugs for
//! the robustness harness (features `failpoints`, `planted-bugs`; see [`faults`]).

pub mod apply;
pub mod bootstrap;
pub mod config;
pub mod core;
pub mod errors;
pub mod faults;
pub mod guard;
pub mod h2_authority;
pub mod http;
pub mod lease;
pub mod membership;
pub mod peer;
pub mod server;
pub mod services;
pub mod tls;
pub mod waiters;
pub mod watch;

pub use config::{ClusterState, ServerConfig};
pub use server::{start, RunningServer, ServerError};
