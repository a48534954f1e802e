//! The resolved server configuration. The binary turns etcd's flags, `ETCD_*` variables or a
//! config file into this; everything here is already validated and defaulted.

use crate::tls::policy::TlsPolicy;
use crate::tls::TlsInfo;
use std::path::PathBuf;
use std::time::Duration;

/// etcd reports this version so clients (kube-apiserver among them) enable the features they
/// gate on 3.5.13+.
pub const ETCD_COMPAT_VERSION: &str = "3.5.17";
/// The cluster version etcd 3.5 reports.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";
/// cairn's own version, reported beside the etcd one.
pub const CAIRN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// `--initial-cluster-state new`.
    New,
    /// `--initial-cluster-state existing`.
    Existing,
}

/// Everything a member needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--wal-dir`; `None` = `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// `--listen-client-urls`, as `host:port` socket addresses with their scheme.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--listen-metrics-urls`.
    pub listen_metrics_urls: Vec<String>,
    /// `--initial-cluster` as (name, peer URL) pairs.
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--snapshot-count`: applied entries between log compactions.
    pub snapshot_count: u64,
    /// `--snapshot-catchup-entries`: entries kept behind a compaction for slow followers.
    pub snapshot_catchup_entries: u64,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--quota-backend-bytes` (0 = 2 GiB).
    pub quota_backend_bytes: u64,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--max-wals`.
    pub max_wals: usize,
    /// `--max-snapshots`.
    pub max_snapshots: usize,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// `--force-new-cluster`: restart as the only member of the cluster, keeping the data.
    pub force_new_cluster: bool,
    /// `--backend-cache-size` (cairn's own): the backend's page cache in bytes.
    pub backend_cache_bytes: usize,
    /// `--max-concurrent-streams` per client connection.
    pub max_concurrent_streams: u32,
    /// `--experimental-enable-lease-checkpoint`: the leader periodically records the remaining
    /// TTL of long leases through raft. cairn's default: on (etcd's: off).
    pub lease_checkpoint: bool,
    /// `--experimental-enable-lease-checkpoint-persist`: checkpoints are also written to the
    /// backend, so they survive restarts. cairn's default: on (etcd 3.4/3.5: off; always on in
    /// 3.6).
    pub lease_checkpoint_persist: bool,
    /// `--lease-checkpoint-interval` (cairn's own; etcd's is a fixed 5 minutes).
    pub lease_checkpoint_interval: Duration,
    /// `--experimental-watch-progress-notify-interval` (0 = etcd's default, 10 minutes).
    pub watch_progress_notify_interval: Duration,
    /// TLS of `https://` client listeners (`--cert-file`, `--key-file`, `--trusted-ca-file`,
    /// `--client-cert-auth`, `--client-crl-file`, `--auto-tls`,
    /// `--client-cert-allowed-hostname`).
    pub client_tls: TlsInfo,
    /// TLS of `https://` peer listeners and of connections to other members (`--peer-*`).
    pub peer_tls: TlsInfo,
    /// `--cipher-suites`, `--tls-min-version`, `--tls-max-version`, for both ports.
    pub tls_policy: TlsPolicy,
}

impl ServerConfig {
    /// A configuration with etcd's defaults for a member called `name` in `data_dir`.
    pub fn with_defaults(name: &str, data_dir: PathBuf) -> Self {
        ServerConfig {
            name: name.to_string(),
            data_dir,
            wal_dir: None,
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            listen_metrics_urls: vec![],
            initial_cluster: vec![(name.to_string(), "http://localhost:2380".into())],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            quota_backend_bytes: 0,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            max_wals: 5,
            max_snapshots: 5,
            pre_vote: true,
            strict_reconfig_check: true,
            force_new_cluster: false,
            backend_cache_bytes: 256 << 20,
            max_concurrent_streams: u32::MAX,
            lease_checkpoint: true,
            lease_checkpoint_persist: true,
            lease_checkpoint_interval: Duration::from_secs(300),
            watch_progress_notify_interval: Duration::from_secs(600),
            client_tls: TlsInfo::default(),
            peer_tls: TlsInfo::default(),
            tls_policy: TlsPolicy::default(),
        }
    }

    /// Where the WAL lives.
    pub fn wal_path(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// `member/snap`: the backend and snapshots received from the leader.
    pub fn snap_path(&self) -> PathBuf {
        self.data_dir.join("member").join("snap")
    }

    /// Where the backend database file lives (etcd's `member/snap/db`).
    pub fn backend_path(&self) -> PathBuf {
        self.data_dir.join("member").join("snap").join("db")
    }

    /// etcd's request timeout: 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    /// Election timeout in ticks of one heartbeat interval.
    pub fn election_ticks(&self) -> usize {
        let hb = self.heartbeat_interval.as_millis().max(1);
        (self.election_timeout.as_millis() / hb).max(2) as usize
    }
}
