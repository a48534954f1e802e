//! etcd's command-line flags, their `ETCD_*` environment twins and `--config-file` YAML, with
//! etcd's names and defaults, resolved into a [`ServerConfig`].
//!
//! Every etcd flag is recognised. A flag cairn does not implement yet is refused when given a
//! value other than etcd's default, so nobody believes a setting took effect when it did not.

use anyhow::{anyhow, bail, Context, Result};
use cairn_server::tls::policy::TlsPolicy;
use cairn_server::tls::{Port, TlsInfo};
use cairn_server::{ClusterState, ServerConfig};
use clap::{ArgAction, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// The flags. Booleans accept `--flag`, `--flag=true` and `--flag=false`, as Go's flag package.
#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    about = "cairn: an etcd-compatible, Raft-replicated key-value store",
    disable_version_flag = true
)]
pub struct Flags {
    /// Print the version and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub version: bool,
    /// Path to a YAML configuration file; when set, other flags and variables are ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default `${name}.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Path to the dedicated WAL directory.
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// Number of committed transactions between log compactions.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept behind a log compaction for slow followers.
    #[arg(
        long,
        env = "ETCD_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000,
        alias = "experimental-snapshot-catchup-entries"
    )]
    pub snapshot_catchup_entries: u64,
    /// Time (ms) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (ms) for an election to time out.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// Maximum number of snapshot files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: usize,
    /// Maximum number of WAL files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_WALS", default_value_t = 5)]
    pub max_wals: usize,
    /// Raise alarms when the backend size exceeds this quota (0 = default 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Maximum number of operations per txn.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum concurrent streams per client connection.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// This member's client URLs to advertise to the public.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// Force to create a new one-member cluster from this member's data.
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub force_new_cluster: bool,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub strict_reconfig_check: bool,
    /// Enable the raft Pre-Vote algorithm.
    #[arg(long, env = "ETCD_PRE_VOTE", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub pre_vote: bool,
    /// Logger: only 'zap' (structured JSON) is supported.
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Log level: debug, info, warn, error, panic, fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Where to write logs: 'default' (stderr), 'stderr', 'stdout' or a file path; comma separated.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// Enable debug-level logging.
    #[arg(long, env = "ETCD_DEBUG", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub debug: bool,
    /// cairn: the backend's page cache size in bytes.
    #[arg(long, env = "ETCD_BACKEND_CACHE_SIZE", default_value_t = 256 << 20)]
    pub backend_cache_size: usize,
    /// Enable the leader to checkpoint long leases' remaining TTLs through raft, so a restart or
    /// a new leader does not restart them from their full TTL (cairn's default: true; etcd's:
    /// false).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: bool,
    /// Persist checkpointed remaining TTLs in the backend so they survive restarts (cairn's
    /// default: true; etcd 3.4/3.5: false). Requires lease checkpoints.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT_PERSIST", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub experimental_enable_lease_checkpoint_persist: Option<bool>,
    /// cairn: time between two checkpoints of a lease (Go duration: 5m, 30s, 1m30s).
    #[arg(long, env = "ETCD_LEASE_CHECKPOINT_INTERVAL", default_value = "5m0s")]
    pub lease_checkpoint_interval: String,
    /// Duration of periodic watch progress notifications (Go duration: 10m0s, 5s, 100ms; 0 or
    /// negative keeps the default, below 100ms is raised to 100ms).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m0s"
    )]
    pub experimental_watch_progress_notify_interval: String,

    /// Client and peer TLS.
    #[command(flatten)]
    pub tls: TlsFlags,

    /// Not implemented yet (refused unless etcd's default).
    #[command(flatten)]
    pub unbuilt: Unbuilt,
}

/// etcd's TLS flags for the client port, the peer port, and both.
#[derive(clap::Args, Debug, Default)]
pub struct TlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", default_value = "")]
    pub cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", default_value = "")]
    pub key_file: String,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE", default_value = "")]
    pub client_crl_file: String,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub client_cert_allowed_hostname: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", default_value = "")]
    pub trusted_ca_file: String,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", default_value = "")]
    pub peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", default_value = "")]
    pub peer_key_file: String,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", default_value = "")]
    pub peer_trusted_ca_file: String,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub peer_cert_allowed_hostname: String,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE", default_value = "")]
    pub peer_crl_file: String,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (Go's names; empty: the TLS library's defaults).
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty: the
    /// highest available).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,
}

/// An empty flag value means unset, as with Go's string flags.
fn path_flag(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn text_flag(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

impl TlsFlags {
    /// The client port's, the peer port's and the shared settings.
    pub fn resolve(&self) -> Result<(TlsInfo, TlsInfo, TlsPolicy)> {
        let client = TlsInfo {
            cert_file: path_flag(&self.cert_file),
            key_file: path_flag(&self.key_file),
            trusted_ca_file: path_flag(&self.trusted_ca_file),
            client_cert_auth: self.client_cert_auth,
            crl_file: path_flag(&self.client_crl_file),
            auto_tls: self.auto_tls,
            allowed_cn: None,
            allowed_hostname: text_flag(&self.client_cert_allowed_hostname),
        };
        let peer = TlsInfo {
            cert_file: path_flag(&self.peer_cert_file),
            key_file: path_flag(&self.peer_key_file),
            trusted_ca_file: path_flag(&self.peer_trusted_ca_file),
            client_cert_auth: self.peer_client_cert_auth,
            crl_file: path_flag(&self.peer_crl_file),
            auto_tls: self.peer_auto_tls,
            allowed_cn: text_flag(&self.peer_cert_allowed_cn),
            allowed_hostname: text_flag(&self.peer_cert_allowed_hostname),
        };
        client.validate(Port::Client)?;
        peer.validate(Port::Peer)?;
        let suites: Vec<String> = split_urls(&self.cipher_suites);
        let policy = TlsPolicy::new(&suites, &self.tls_min_version, &self.tls_max_version)?;
        Ok((client, peer, policy))
    }
}

/// etcd flags cairn recognises but does not implement yet. Each holds the raw text given, if
/// any; [`Unbuilt::refuse`] compares it with etcd's default.
#[derive(clap::Args, Debug, Default)]
pub struct Unbuilt {
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", hide = true)]
    initial_election_tick_advance: Option<String>,
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", hide = true)]
    backend_batch_interval: Option<String>,
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", hide = true)]
    backend_batch_limit: Option<String>,
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_MIN_TIME", hide = true)]
    grpc_keepalive_min_time: Option<String>,
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", hide = true)]
    grpc_keepalive_interval: Option<String>,
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", hide = true)]
    grpc_keepalive_timeout: Option<String>,
    #[arg(long, env = "ETCD_DISCOVERY", hide = true)]
    discovery: Option<String>,
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK", hide = true)]
    discovery_fallback: Option<String>,
    #[arg(long, env = "ETCD_DISCOVERY_PROXY", hide = true)]
    discovery_proxy: Option<String>,
    #[arg(long, env = "ETCD_DISCOVERY_SRV", hide = true)]
    discovery_srv: Option<String>,
    #[arg(long, env = "ETCD_DISCOVERY_SRV_NAME", hide = true)]
    discovery_srv_name: Option<String>,
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", hide = true)]
    auto_compaction_retention: Option<String>,
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", hide = true)]
    auto_compaction_mode: Option<String>,
    #[arg(long, env = "ETCD_ENABLE_V2", hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_v2: Option<String>,
    #[arg(long, env = "ETCD_CORS", hide = true)]
    cors: Option<String>,
    #[arg(long, env = "ETCD_HOST_WHITELIST", hide = true)]
    host_whitelist: Option<String>,
    #[arg(long, env = "ETCD_AUTH_TOKEN", hide = true)]
    auth_token: Option<String>,
    #[arg(long, env = "ETCD_BCRYPT_COST", hide = true)]
    bcrypt_cost: Option<String>,
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", hide = true)]
    auth_token_ttl: Option<String>,
    #[arg(long, env = "ETCD_ENABLE_PPROF", hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_pprof: Option<String>,
    #[arg(long, env = "ETCD_METRICS", hide = true)]
    metrics: Option<String>,
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", hide = true)]
    listen_metrics_urls: Option<String>,
    #[arg(long, env = "ETCD_PROXY", hide = true)]
    proxy: Option<String>,
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", hide = true, num_args = 0..=1, default_missing_value = "true")]
    experimental_initial_corrupt_check: Option<String>,
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", hide = true)]
    experimental_corrupt_check_time: Option<String>,
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", hide = true)]
    experimental_compaction_batch_limit: Option<String>,
    #[arg(long, env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", hide = true)]
    experimental_warning_apply_duration: Option<String>,
}

impl Unbuilt {
    /// Fails naming the first flag set to something other than etcd's default.
    pub fn refuse(&self) -> Result<()> {
        let given: [(&str, &Option<String>, &[&str]); 27] = [
            (
                "initial-election-tick-advance",
                &self.initial_election_tick_advance,
                &["true"],
            ),
            (
                "backend-batch-interval",
                &self.backend_batch_interval,
                &["0", "0s"],
            ),
            ("backend-batch-limit", &self.backend_batch_limit, &["0"]),
            (
                "grpc-keepalive-min-time",
                &self.grpc_keepalive_min_time,
                &["5s"],
            ),
            (
                "grpc-keepalive-interval",
                &self.grpc_keepalive_interval,
                &["2h0m0s", "2h"],
            ),
            (
                "grpc-keepalive-timeout",
                &self.grpc_keepalive_timeout,
                &["20s"],
            ),
            ("discovery", &self.discovery, &[""]),
            ("discovery-fallback", &self.discovery_fallback, &["proxy"]),
            ("discovery-proxy", &self.discovery_proxy, &[""]),
            ("discovery-srv", &self.discovery_srv, &[""]),
            ("discovery-srv-name", &self.discovery_srv_name, &[""]),
            (
                "auto-compaction-retention",
                &self.auto_compaction_retention,
                &["0"],
            ),
            (
                "auto-compaction-mode",
                &self.auto_compaction_mode,
                &["periodic"],
            ),
            ("enable-v2", &self.enable_v2, &["false"]),
            ("cors", &self.cors, &[""]),
            ("host-whitelist", &self.host_whitelist, &["", "*"]),
            ("auth-token", &self.auth_token, &["simple"]),
            ("bcrypt-cost", &self.bcrypt_cost, &["10"]),
            ("auth-token-ttl", &self.auth_token_ttl, &["300"]),
            ("enable-pprof", &self.enable_pprof, &["false"]),
            ("metrics", &self.metrics, &["basic"]),
            ("listen-metrics-urls", &self.listen_metrics_urls, &[""]),
            ("proxy", &self.proxy, &["off"]),
            (
                "experimental-initial-corrupt-check",
                &self.experimental_initial_corrupt_check,
                &["false"],
            ),
            (
                "experimental-corrupt-check-time",
                &self.experimental_corrupt_check_time,
                &["0s", "0"],
            ),
            (
                "experimental-compaction-batch-limit",
                &self.experimental_compaction_batch_limit,
                &["1000"],
            ),
            (
                "experimental-warning-apply-duration",
                &self.experimental_warning_apply_duration,
                &["100ms"],
            ),
        ];
        for (name, value, defaults) in given {
            if let Some(v) = value {
                if !defaults.contains(&v.as_str()) {
                    bail!("flag --{name}={v} is not implemented by cairn yet; remove it or set it to etcd's default ({})", defaults[0]);
                }
            }
        }
        Ok(())
    }
}

/// Parses a Go duration such as `5m0s`, `90s`, `1h30m` or `1.5s` (units h, m, s, ms, us/µs,
/// ns; a bare `0` is zero).
fn parse_go_duration(s: &str) -> Result<Duration> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| anyhow!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| anyhow!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => bail!("unknown unit {unit:?} in duration {s:?}"),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `name=url,name=url`.
fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>> {
    split_urls(s)
        .into_iter()
        .map(|pair| {
            let (name, url) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("--initial-cluster: {pair:?} is not name=url"))?;
            Ok((name.to_string(), url.to_string()))
        })
        .collect()
}

/// Reads a `--config-file` and turns it into the equivalent command line. Nested
/// `client-transport-security` / `peer-transport-security` sections map to the flat TLS flags.
pub fn config_file_args(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --config-file {}", path.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing --config-file {} as YAML", path.display()))?;
    let mut args = vec!["cairn".to_string()];
    let Some(map) = doc.as_mapping() else {
        if doc.is_null() {
            return Ok(args);
        }
        bail!(
            "--config-file {}: expected a mapping of flag names",
            path.display()
        );
    };
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| anyhow!("--config-file: non-string key {k:?}"))?;
        match (key, v) {
            (
                "client-transport-security" | "peer-transport-security",
                serde_yaml::Value::Mapping(sub),
            ) => {
                let prefix = if key.starts_with("peer") { "peer-" } else { "" };
                for (sk, sv) in sub {
                    let sk = sk
                        .as_str()
                        .ok_or_else(|| anyhow!("--config-file: bad key in {key}"))?;
                    if let Some(text) = scalar_text(sv)? {
                        args.push(format!("--{prefix}{sk}={text}"));
                    }
                }
            }
            _ => {
                if let Some(text) = scalar_text(v)? {
                    args.push(format!("--{key}={text}"));
                }
            }
        }
    }
    Ok(args)
}

/// A YAML scalar as flag text; null (an unset key) gives `None`.
fn scalar_text(v: &serde_yaml::Value) -> Result<Option<String>> {
    Ok(match v {
        serde_yaml::Value::Null => None,
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        // etcd's YAML lists (`cipher-suites: [...]`) are the flags' comma-separated values.
        serde_yaml::Value::Sequence(items) => Some(
            items
                .iter()
                .map(|item| match item {
                    serde_yaml::Value::Sequence(_) | serde_yaml::Value::Mapping(_) => {
                        bail!("--config-file: unsupported value {item:?}")
                    }
                    scalar => Ok(scalar_text(scalar)?.unwrap_or_default()),
                })
                .collect::<Result<Vec<_>>>()?
                .join(","),
        ),
        other => bail!("--config-file: unsupported value {other:?}"),
    })
}

impl Flags {
    /// Parses the process's arguments. As etcd does, an `ETCD_*` variable that is also given
    /// as a flag is an error rather than silently shadowed.
    pub fn from_process() -> Result<Flags> {
        Self::parse_checked(std::env::args_os())
    }

    /// Parses `args`, refusing environment variables shadowed by flags.
    pub fn parse_checked<I, T>(args: I) -> Result<Flags>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = Flags::command();
        // Help and usage errors print themselves and exit, as clap does.
        let matches = cmd
            .clone()
            .try_get_matches_from(args)
            .unwrap_or_else(|e| e.exit());
        for arg in cmd.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let from_cli = matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine);
            if from_cli && std::env::var_os(env).is_some() {
                bail!(
                    "conflicting environment variable {:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)",
                    env.to_string_lossy()
                );
            }
        }
        Ok(Flags::from_arg_matches(&matches)?)
    }

    /// Resolves the flags into a server configuration, refusing what cairn cannot honour.
    pub fn into_config(self) -> Result<ServerConfig> {
        self.unbuilt.refuse()?;
        if self.logger != "zap" {
            bail!(
                "--logger={} is not supported; cairn logs structured JSON ('zap')",
                self.logger
            );
        }
        if self.quota_backend_bytes != 0 {
            bail!("flag --quota-backend-bytes={} is not implemented by cairn yet; remove it or set it to etcd's default (0)", self.quota_backend_bytes);
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let mut cfg = ServerConfig::with_defaults(&self.name, data_dir);
        let initial_cluster = match &self.initial_cluster {
            Some(s) => parse_initial_cluster(s)?,
            None => split_urls(&self.initial_advertise_peer_urls)
                .into_iter()
                .map(|u| (self.name.clone(), u))
                .collect(),
        };
        cfg.wal_dir = self.wal_dir;
        cfg.listen_client_urls = split_urls(&self.listen_client_urls);
        cfg.advertise_client_urls = split_urls(&self.advertise_client_urls);
        cfg.listen_peer_urls = split_urls(&self.listen_peer_urls);
        cfg.initial_advertise_peer_urls = split_urls(&self.initial_advertise_peer_urls);
        cfg.initial_cluster = initial_cluster;
        cfg.initial_cluster_state = match self.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                bail!("--initial-cluster-state: invalid value {other:?} (expected new or existing)")
            }
        };
        cfg.initial_cluster_token = self.initial_cluster_token;
        cfg.snapshot_count = self.snapshot_count;
        cfg.snapshot_catchup_entries = self.snapshot_catchup_entries;
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        cfg.election_timeout = Duration::from_millis(self.election_timeout);
        cfg.max_request_bytes = self.max_request_bytes;
        cfg.max_txn_ops = self.max_txn_ops;
        cfg.max_wals = self.max_wals;
        cfg.max_snapshots = self.max_snapshots;
        cfg.pre_vote = self.pre_vote;
        cfg.strict_reconfig_check = self.strict_reconfig_check;
        cfg.force_new_cluster = self.force_new_cluster;
        cfg.backend_cache_bytes = self.backend_cache_size;
        cfg.max_concurrent_streams = self.max_concurrent_streams;
        if self.experimental_enable_lease_checkpoint_persist == Some(true)
            && !self.experimental_enable_lease_checkpoint
        {
            bail!("setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint");
        }
        cfg.lease_checkpoint = self.experimental_enable_lease_checkpoint;
        cfg.lease_checkpoint_persist = self.experimental_enable_lease_checkpoint
            && self.experimental_enable_lease_checkpoint_persist != Some(false);
        cfg.lease_checkpoint_interval = parse_go_duration(&self.lease_checkpoint_interval)
            .with_context(|| {
                format!(
                    "--lease-checkpoint-interval={}",
                    self.lease_checkpoint_interval
                )
            })?;
        if cfg.lease_checkpoint_interval.is_zero() {
            bail!("--lease-checkpoint-interval must be positive");
        }
        let interval = &self.experimental_watch_progress_notify_interval;
        // Go accepts a sign; etcd ignores an interval that is not positive.
        cfg.watch_progress_notify_interval = match interval.strip_prefix('-') {
            Some(magnitude) => parse_go_duration(magnitude).map(|_| Duration::ZERO),
            None => parse_go_duration(interval.strip_prefix('+').unwrap_or(interval)),
        }
        .with_context(|| format!("--experimental-watch-progress-notify-interval={interval}"))?;
        if cfg.listen_client_urls.is_empty() {
            bail!("--listen-client-urls must name at least one URL");
        }
        (cfg.client_tls, cfg.peer_tls, cfg.tls_policy) = self.tls.resolve()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_etcd() {
        let f = Flags::try_parse_from(["cairn"]).unwrap();
        let cfg = f.into_config().unwrap();
        assert_eq!(cfg.name, "default");
        assert_eq!(cfg.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(cfg.listen_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(
            cfg.initial_cluster,
            vec![("default".to_string(), "http://localhost:2380".to_string())]
        );
        assert_eq!(cfg.max_request_bytes, 1_572_864);
        assert_eq!(cfg.max_txn_ops, 128);
        assert_eq!(cfg.election_ticks(), 10);
    }

    #[test]
    fn unimplemented_flag_is_refused_unless_default() {
        let f = Flags::try_parse_from(["cairn", "--auto-compaction-retention=1h"]).unwrap();
        let err = f.into_config().unwrap_err().to_string();
        assert!(
            err.contains("--auto-compaction-retention=1h is not implemented"),
            "{err}"
        );
        let f = Flags::try_parse_from(["cairn", "--auto-compaction-retention=0"]).unwrap();
        assert!(f.into_config().is_ok());
    }

    #[test]
    fn lease_checkpoint_flags() {
        let cfg = Flags::try_parse_from(["cairn"])
            .unwrap()
            .into_config()
            .unwrap();
        assert!(cfg.lease_checkpoint && cfg.lease_checkpoint_persist);
        assert_eq!(cfg.lease_checkpoint_interval, Duration::from_secs(300));
        let cfg = Flags::try_parse_from([
            "cairn",
            "--experimental-enable-lease-checkpoint=false",
            "--lease-checkpoint-interval=1m30s",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert!(!cfg.lease_checkpoint && !cfg.lease_checkpoint_persist);
        assert_eq!(cfg.lease_checkpoint_interval, Duration::from_secs(90));
        let cfg = Flags::try_parse_from([
            "cairn",
            "--experimental-enable-lease-checkpoint",
            "--experimental-enable-lease-checkpoint-persist=false",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert!(cfg.lease_checkpoint && !cfg.lease_checkpoint_persist);
        let err = Flags::try_parse_from([
            "cairn",
            "--experimental-enable-lease-checkpoint=false",
            "--experimental-enable-lease-checkpoint-persist",
        ])
        .unwrap()
        .into_config()
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("requires experimental-enable-lease-checkpoint"));
        for bad in ["0", "5", "5x", "-1s", ""] {
            let f = Flags::try_parse_from(["cairn", &format!("--lease-checkpoint-interval={bad}")])
                .unwrap();
            assert!(f.into_config().is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_go_duration("2h0m0s").unwrap(),
            Duration::from_secs(7200)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn watch_progress_notify_interval() {
        let interval = |args: &[&str]| {
            let mut all = vec!["cairn"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all)
                .unwrap()
                .into_config()
                .map(|c| c.watch_progress_notify_interval)
        };
        assert_eq!(interval(&[]).unwrap(), Duration::from_secs(600));
        for (text, want) in [
            ("10m0s", Duration::from_secs(600)),
            ("5s", Duration::from_secs(5)),
            ("100ms", Duration::from_millis(100)),
            ("1m30s", Duration::from_secs(90)),
            ("0", Duration::ZERO),
            ("-5s", Duration::ZERO),
        ] {
            let flag = format!("--experimental-watch-progress-notify-interval={text}");
            assert_eq!(interval(&[&flag]).unwrap(), want, "{text}");
        }
        for bad in ["5", "5x", "", "abc"] {
            let flag = format!("--experimental-watch-progress-notify-interval={bad}");
            let err = format!("{:#}", interval(&[&flag]).unwrap_err());
            assert!(
                err.contains("--experimental-watch-progress-notify-interval"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn go_style_booleans() {
        let f = Flags::try_parse_from(["cairn", "--pre-vote=false"]).unwrap();
        assert!(!f.pre_vote);
        let f = Flags::try_parse_from(["cairn", "--pre-vote"]).unwrap();
        assert!(f.pre_vote);
    }

    #[test]
    fn config_file_becomes_flags() {
        let dir = std::env::temp_dir().join(format!("cairn-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "name: m1\ndata-dir: /tmp/x\nheartbeat-interval: 50\nelection-timeout: 500\nenable-v2: false\nclient-transport-security:\n  cert-file:\n",
        )
        .unwrap();
        let args = config_file_args(&path).unwrap();
        let f = Flags::try_parse_from(args).unwrap();
        let cfg = f.into_config().unwrap();
        assert_eq!(cfg.name, "m1");
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tls_flags_become_settings() {
        let cfg = Flags::try_parse_from(["cairn"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(cfg.client_tls, TlsInfo::default());
        assert_eq!(cfg.peer_tls, TlsInfo::default());
        assert!(cfg.tls_policy.cipher_suite_names.is_empty());
        let cfg = Flags::try_parse_from([
            "cairn",
            "--cert-file=/c/server.pem",
            "--key-file",
            "/c/server-key.pem",
            "--trusted-ca-file=/c/ca.pem",
            "--client-cert-auth",
            "--client-crl-file=/c/crl.pem",
            "--client-cert-allowed-hostname=client.example",
            "--peer-auto-tls=true",
            "--peer-client-cert-auth=false",
            "--peer-cert-allowed-cn=member",
            "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "--tls-max-version=TLS1.2",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            cfg.client_tls.cert_file,
            Some(PathBuf::from("/c/server.pem"))
        );
        assert_eq!(
            cfg.client_tls.key_file,
            Some(PathBuf::from("/c/server-key.pem"))
        );
        assert_eq!(
            cfg.client_tls.trusted_ca_file,
            Some(PathBuf::from("/c/ca.pem"))
        );
        assert!(cfg.client_tls.client_cert_auth && !cfg.client_tls.auto_tls);
        assert_eq!(cfg.client_tls.crl_file, Some(PathBuf::from("/c/crl.pem")));
        assert_eq!(
            cfg.client_tls.allowed_hostname.as_deref(),
            Some("client.example")
        );
        assert!(cfg.peer_tls.auto_tls && !cfg.peer_tls.client_cert_auth);
        assert_eq!(cfg.peer_tls.allowed_cn.as_deref(), Some("member"));
        assert_eq!(cfg.tls_policy.cipher_suite_names.len(), 2);
        assert_eq!(
            cfg.tls_policy.max_version,
            Some(cairn_server::tls::policy::TlsVersion::Tls12)
        );
    }

    #[test]
    fn bad_tls_flags_are_refused_with_etcds_words() {
        let err = |args: &[&str]| {
            let mut all = vec!["cairn"];
            all.extend_from_slice(args);
            format!(
                "{:#}",
                Flags::try_parse_from(all)
                    .unwrap()
                    .into_config()
                    .unwrap_err()
            )
        };
        assert_eq!(
            err(&["--cipher-suites=TLS_NOPE"]),
            r#"unexpected TLS cipher suite "TLS_NOPE""#
        );
        assert_eq!(
            err(&["--tls-min-version=TLS1.0"]),
            r#"unexpected TLS version "TLS1.0" (must be one of: TLS1.2, TLS1.3)"#
        );
        assert_eq!(
            err(&["--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"]),
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        assert!(
            err(&["--peer-cert-allowed-cn=a", "--peer-cert-allowed-hostname=b"])
                .contains("mutually exclusive")
        );
        assert!(err(&["--cert-file=/c.pem"]).contains("--key-file"));
    }

    #[test]
    fn config_file_transport_security_and_lists() {
        let dir = std::env::temp_dir().join(format!("cairn-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(
            &path,
            "client-transport-security:\n  cert-file: /c/s.pem\n  key-file: /c/s.key\n  client-cert-auth: true\n  trusted-ca-file: /c/ca.pem\npeer-transport-security:\n  auto-tls: true\ncipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n",
        )
        .unwrap();
        let cfg = Flags::try_parse_from(config_file_args(&path).unwrap())
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(cfg.client_tls.cert_file, Some(PathBuf::from("/c/s.pem")));
        assert!(cfg.client_tls.client_cert_auth);
        assert!(cfg.peer_tls.auto_tls);
        assert_eq!(cfg.tls_policy.cipher_suite_names.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
