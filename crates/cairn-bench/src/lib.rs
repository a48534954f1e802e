//! cairn-bench: a load generator for any etcd-compatible endpoint, in the spirit of etcd's
//! `tools/benchmark`, and the side-by-side comparison of cairn with the real etcd.
//!
//! - [`run`] drives the closed-loop workloads ([`Workload`]: put, range, txn-put, the
//!   Kubernetes-like optimistic update, and the batched `load` of a key space): `--clients`
//!   request loops share `--conns` gRPC channels round-robin, pull request numbers from one
//!   counter until `--total`, optionally paced to `--rate` requests/s overall, and each keep their
//!   own [`hist::Histogram`], merged at the end.
//! - [`watch::watch_latency`] measures the time from a put's acknowledgement to each watcher's
//!   receipt of its event; [`lease::lease_keepalive`] grants leases and keeps them alive.
//! - [`compare`] starts etcd and cairn with the same flags and runs the same workloads on both
//!   (`scripts/bench-compare`).
//!
//! Errors returned by the server are counted per message in the [`report::Report`], never
//! dropped. A server that answers `Unimplemented` for a whole service (cairn's Watch and Lease
//! today) makes the run end with [`BenchError::Unimplemented`] instead of a report.

pub mod compare;
pub mod hist;
pub mod keys;
pub mod lease;
pub mod report;
pub mod run;
pub mod watch;

pub use report::Report;
pub use run::{run, Workload};

use anyhow::Context as _;
use etcd_client::{Client, ConnectOptions, GetOptions};
use std::fmt;
use std::time::Duration;

/// Options shared by every workload (the global flags of the `cairn-bench` command).
#[derive(Clone, Debug)]
pub struct Common {
    /// Endpoints, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Concurrent request loops.
    pub clients: usize,
    /// gRPC channels (TCP connections) the loops share round-robin.
    pub conns: usize,
    /// Requests to send (for `load`: ignored, the whole key space is loaded).
    pub total: u64,
    /// Bytes per key, prefix included.
    pub key_size: usize,
    /// Bytes per value.
    pub val_size: usize,
    /// Number of distinct keys the workload touches.
    pub key_space_size: u64,
    /// Walk the key space in order instead of picking keys at random.
    pub sequential_keys: bool,
    /// Overall requests per second; 0 = as fast as the server answers.
    pub rate: f64,
    /// Prefix of every key.
    pub prefix: String,
    /// Client-side limit per request; a request that takes longer counts as an error.
    pub timeout: Duration,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            clients: 1,
            conns: 1,
            total: 10_000,
            key_size: 8,
            val_size: 8,
            key_space_size: 1,
            sequential_keys: false,
            rate: 0.0,
            prefix: String::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Common {
    /// Checks the option combinations every workload relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.endpoints.is_empty(), "--endpoints is empty");
        anyhow::ensure!(self.clients >= 1, "--clients must be at least 1");
        anyhow::ensure!(self.conns >= 1, "--conns must be at least 1");
        anyhow::ensure!(self.rate >= 0.0, "--rate must not be negative");
        anyhow::ensure!(
            self.key_space_size >= 1,
            "--key-space-size must be at least 1"
        );
        Ok(())
    }
}

/// Why a run produced no report.
#[derive(Debug)]
pub enum BenchError {
    /// The server answered gRPC `Unimplemented` for a service the workload needs.
    Unimplemented {
        /// The etcd service, e.g. `Watch`.
        service: &'static str,
        /// The server's message.
        message: String,
    },
    /// Anything else: bad options, unreachable endpoint, ...
    Other(anyhow::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Unimplemented { service, message } => write!(
                f,
                "the server does not implement the {service} service (gRPC {message})"
            ),
            BenchError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<anyhow::Error> for BenchError {
    fn from(e: anyhow::Error) -> Self {
        BenchError::Other(e)
    }
}

/// Whether `e` is a gRPC `Unimplemented` status.
pub fn is_unimplemented(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unimplemented)
}

/// A short, stable text for an error, used to group errors in reports.
pub fn error_text(e: &etcd_client::Error) -> String {
    let s = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    s.chars().take(200).collect()
}

/// Opens `common.conns` clients — each its own gRPC channel and TCP connection — and checks each
/// with a serializable Range, so connection setup is not part of any measurement.
pub async fn connect(common: &Common) -> anyhow::Result<Vec<Client>> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    let mut clients = Vec::with_capacity(common.conns);
    for i in 0..common.conns {
        let client = Client::connect(&common.endpoints, Some(opts.clone()))
            .await
            .with_context(|| format!("connecting to {:?}", common.endpoints))?;
        let mut kv = client.kv_client();
        tokio::time::timeout(
            common.timeout,
            kv.get(
                "cairn-bench/warm-up",
                Some(GetOptions::new().with_serializable()),
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connection {i}: no answer within {:?}", common.timeout))?
        .map_err(|e| anyhow::anyhow!("connection {i}: {}", error_text(&e)))?;
        clients.push(client);
    }
    Ok(clients)
}
