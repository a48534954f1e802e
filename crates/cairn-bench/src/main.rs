//! `cairn-bench`: a load generator for any etcd-compatible endpoint, in the spirit of etcd's
//! `tools/benchmark`.
//!
//! ```text
//! cairn-bench [global flags] <put|range|txn-put|k8s-update|watch-latency|lease-keepalive|load> [flags]
//! cairn-bench --endpoints 127.0.0.1:2379 --clients 64 --conns 8 --total 100000 \
//!     --key-size 8 --val-size 256 --key-space-size 100000 put
//! cairn-bench --key-space-size 1000 --val-size 1024 load
//! cairn-bench --key-space-size 1000 --clients 8 --total 1000 range --keys 1000 --consistency l
//! ```
//!
//! Prints total time, requests/s, latency percentiles and a log-bucket histogram, or with
//! `--json` one JSON object. Exit status: 0 when every request succeeded, 1 when the run finished
//! with errors (they are in the report), 2 when it could not run, 3 when the server answers
//! `Unimplemented` for the service the workload needs.

use anyhow::Result;
use cairn_bench::lease::{lease_keepalive, LeaseOpts};
use cairn_bench::watch::{watch_latency, WatchOpts};
use cairn_bench::{run, BenchError, Common, Report, Workload};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Load generator for etcd-compatible servers (in the spirit of etcd's tools/benchmark)"
)]
struct Cli {
    /// Comma-separated endpoints (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Concurrent request loops.
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// gRPC connections, shared round-robin by the request loops.
    #[arg(long, global = true, default_value_t = 1)]
    conns: usize,
    /// Total requests (put, range, txn-put, k8s-update, keep-alives; puts for watch-latency).
    #[arg(long, global = true, default_value_t = 10_000)]
    total: u64,
    /// Key size in bytes, prefix included (keys are the prefix + a zero-padded number).
    #[arg(long, global = true, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    val_size: usize,
    /// Number of distinct keys; `load` writes all of them.
    #[arg(long, global = true, default_value_t = 1)]
    key_space_size: u64,
    /// Walk the key space in order instead of at random.
    #[arg(long, global = true)]
    sequential_keys: bool,
    /// Overall requests per second; 0 = unlimited.
    #[arg(long, global = true, default_value_t = 0.0)]
    rate: f64,
    /// Prefix of every key.
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// Client-side timeout per request, seconds (a late answer counts as an error).
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Put one key per request.
    Put,
    /// Range one key, or `--keys` consecutive keys, per request.
    Range {
        /// l = linearizable, s = serializable.
        #[arg(long, default_value = "l", value_parser = ["l", "s"])]
        consistency: String,
        /// Keys per range (1 = a single-key get).
        #[arg(long, default_value_t = 1)]
        keys: u64,
    },
    /// A Txn of `--txn-ops` puts on consecutive keys per request.
    TxnPut {
        /// Puts per Txn.
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
    },
    /// Kubernetes-like optimistic update: get, then Txn(If ModRevision==rev Then Put Else Get),
    /// retried on conflict (conflicts are counted separately).
    K8sUpdate,
    /// Watch fan-out latency: watchers on the prefix, puts at --rate, latency from each put's
    /// acknowledgement to each watcher's receipt.
    WatchLatency {
        /// Watchers in total.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// gRPC watch streams the watchers are multiplexed over.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Seconds to wait for missing events after the last put.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// Grant --leases leases, then send --total keep-alives (KeepAliveOnce) round-robin.
    LeaseKeepalive {
        /// Leases to grant and keep alive.
        #[arg(long, default_value_t = 1_000)]
        leases: usize,
        /// Lease TTL, seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
    /// Pre-load the whole key space (--key-space-size keys × --val-size) in batched txns.
    Load {
        /// Puts per Txn (etcd's default --max-txn-ops is 128).
        #[arg(long, default_value_t = 128)]
        batch: usize,
    },
}

fn common(cli: &Cli) -> Result<Common> {
    anyhow::ensure!(
        cli.timeout.is_finite() && cli.timeout > 0.0,
        "--timeout must be positive"
    );
    Ok(Common {
        endpoints: cli.endpoints.clone(),
        clients: cli.clients,
        conns: cli.conns,
        total: cli.total,
        key_size: cli.key_size,
        val_size: cli.val_size,
        key_space_size: cli.key_space_size,
        sequential_keys: cli.sequential_keys,
        rate: cli.rate,
        prefix: cli.prefix.clone(),
        timeout: Duration::from_secs_f64(cli.timeout),
    })
}

fn cmd_name(cmd: &Cmd) -> &'static str {
    match cmd {
        Cmd::Put => "put",
        Cmd::Range { .. } => "range",
        Cmd::TxnPut { .. } => "txn-put",
        Cmd::K8sUpdate => "k8s-update",
        Cmd::WatchLatency { .. } => "watch-latency",
        Cmd::LeaseKeepalive { .. } => "lease-keepalive",
        Cmd::Load { .. } => "load",
    }
}

async fn execute(cli: &Cli) -> Result<Report, BenchError> {
    let c = common(cli)?;
    match &cli.cmd {
        Cmd::Put => run(&c, &Workload::Put).await,
        Cmd::Range { consistency, keys } => {
            let w = Workload::Range {
                keys: *keys,
                serializable: consistency == "s",
            };
            run(&c, &w).await
        }
        Cmd::TxnPut { txn_ops } => run(&c, &Workload::TxnPut { ops: *txn_ops }).await,
        Cmd::K8sUpdate => run(&c, &Workload::K8sUpdate).await,
        Cmd::Load { batch } => run(&c, &Workload::Load { batch: *batch }).await,
        Cmd::WatchLatency {
            watchers,
            streams,
            wait,
        } => {
            if !(wait.is_finite() && *wait >= 0.0) {
                return Err(anyhow::anyhow!("--wait must be a non-negative number").into());
            }
            let o = WatchOpts {
                watchers: *watchers,
                streams: *streams,
                wait: Duration::from_secs_f64(*wait),
            };
            watch_latency(&c, &o).await
        }
        Cmd::LeaseKeepalive { leases, ttl } => {
            let o = LeaseOpts {
                leases: *leases,
                ttl: *ttl,
            };
            lease_keepalive(&c, &o).await
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cmd_name(&cli.cmd);
    match execute(&cli).await {
        Ok(rep) => {
            if cli.json {
                println!("{}", rep.to_json());
            } else {
                print!("{}", rep.to_text());
            }
            if rep.errors > 0 {
                eprintln!(
                    "cairn-bench: {name}: {} requests failed (see the report)",
                    rep.errors
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ BenchError::Unimplemented { .. }) => {
            if cli.json {
                let BenchError::Unimplemented { service, message } = &e else {
                    unreachable!()
                };
                println!(
                    "{}",
                    serde_json::json!({"workload": name, "unimplemented": service, "message": message})
                );
            }
            eprintln!("cairn-bench: {name}: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("cairn-bench: {name}: {e}");
            ExitCode::from(2)
        }
    }
}
