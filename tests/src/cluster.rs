//! Multi-member clusters for end-to-end tests: n members of one [`Kind`] on loopback, each
//! with its own client and peer ports and temporary data dir, bootstrapped with etcd's flags
//! (`--initial-cluster`, `--initial-cluster-state`, `--initial-cluster-token`). Members can be
//! SIGKILLed, SIGTERMed and restarted on their data dirs one by one, and new members added
//! with `etcdctl member add`. Every process is killed when its [`Member`] (or the
//! [`Cluster`]) is dropped, also when a test panics. Each member's stdout/stderr goes to a log
//! file whose tail is printed when a wait times out.

use crate::{cairn_bin, etcdctl, http_get, Kind};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `--heartbeat-interval` given to members unless their extra args override it (ms).
pub const HEARTBEAT_MS: u64 = 50;
/// `--election-timeout` given to members unless their extra args override it (ms).
pub const ELECTION_MS: u64 = 500;
/// How long a member may take to become ready, and a cluster to elect a leader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines of each member failure messages show.
const LOG_TAIL_LINES: usize = 40;

static TOKEN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Every port [`fresh_port`] handed out in this process.
static PORTS_GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free port on 127.0.0.1 that no earlier call in this process returned (the kernel
/// readily hands a just-released ephemeral port out again, which would give two listeners
/// of one cluster the same port).
pub fn fresh_port() -> u16 {
    let mut given = PORTS_GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Hold every candidate open until one is new, so the kernel cannot repeat itself.
    let mut held = Vec::new();
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
        let port = l.local_addr().expect("bound address").port();
        held.push(l);
        if given.insert(port) {
            return port;
        }
    }
}

/// A cluster token no other cluster started by this process (or, very likely, any other
/// process) uses.
pub fn unique_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "cairn-e2e-{}-{}-{nanos}",
        std::process::id(),
        TOKEN_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The flag name of an argument: `--snapshot-count=5` and `--snapshot-count` both give
/// `snapshot-count`; `None` for values.
fn flag_name(arg: &str) -> Option<&str> {
    let a = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    Some(a.split('=').next().unwrap_or(a))
}

/// One member process of a [`Cluster`] (running or not).
pub struct Member {
    /// Which binary.
    pub kind: Kind,
    /// `--name`.
    pub name: String,
    /// `127.0.0.1:port` of the client listener.
    pub client_addr: String,
    /// `127.0.0.1:port` of the peer listener.
    pub peer_addr: String,
    /// The scheme of its peer URL: `http`, or `https` for peer TLS.
    peer_scheme: &'static str,
    /// `127.0.0.1:port` it advertises to its peers instead of `peer_addr` (e.g. a fault
    /// proxy in front of its peer listener); `None` advertises `peer_addr`.
    advertise_peer_addr: Option<String>,
    /// Environment variables set on every start.
    env: Vec<(String, String)>,
    /// How the last process exited, once reaped.
    last_exit: Option<ExitStatus>,
    /// `--initial-cluster` it is started with.
    initial_cluster: String,
    /// `--initial-cluster-state` it is started with (`new` or `existing`).
    initial_state: String,
    /// `--initial-cluster-token` it is started with (unless `extra` overrides it).
    token: String,
    /// Extra flags, last on the command line; a flag named here replaces the harness's
    /// default for it.
    extra: Vec<String>,
    child: Option<Child>,
    /// Whether the harness means it to be running (spawned, and not killed, stopped or
    /// seen exiting since): such a member exiting is a failure when waiting for readiness.
    wanted: bool,
    /// Keeps the data dir and log alive for the member's lifetime.
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Member {
    fn new(
        kind: Kind,
        name: &str,
        initial_cluster: String,
        initial_state: &str,
        token: &str,
        extra: Vec<String>,
    ) -> Result<Member> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cairn-e2e-{name}-"))
            .tempdir()?;
        Ok(Member {
            kind,
            name: name.to_string(),
            client_addr: format!("127.0.0.1:{}", fresh_port()),
            peer_addr: format!("127.0.0.1:{}", fresh_port()),
            peer_scheme: "http",
            advertise_peer_addr: None,
            env: Vec::new(),
            last_exit: None,
            initial_cluster,
            initial_state: initial_state.to_string(),
            token: token.to_string(),
            extra,
            child: None,
            wanted: false,
            log_path: dir.path().join("member.log"),
            dir,
        })
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The client URL, `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// The peer URL, `http://127.0.0.1:port` (`https://` in a cluster with peer TLS).
    pub fn peer_url(&self) -> String {
        format!("{}://{}", self.peer_scheme, self.peer_addr)
    }

    /// The peer URL the member advertises (`--initial-advertise-peer-urls`, its
    /// `--initial-cluster` entry): [`Member::peer_url`] unless
    /// [`Member::set_advertise_peer_addr`] gave another address.
    pub fn advertise_peer_url(&self) -> String {
        match &self.advertise_peer_addr {
            Some(addr) => format!("{}://{addr}", self.peer_scheme),
            None => self.peer_url(),
        }
    }

    /// Makes the member advertise `addr` (`127.0.0.1:port`, e.g. a proxy forwarding to its
    /// peer listener) instead of its peer listener's address, from its next start on
    /// (`None`: its own address again). Its own `--initial-cluster` entry follows. Only while
    /// stopped.
    pub fn set_advertise_peer_addr(&mut self, addr: Option<&str>) -> Result<()> {
        ensure!(
            !self.is_running(),
            "{}: stop it before changing its advertised peer URL",
            self.name
        );
        self.update_own_entry(|m| m.advertise_peer_addr = addr.map(str::to_string));
        Ok(())
    }

    /// Applies `change` and rewrites this member's own `--initial-cluster` entry (the URL it
    /// advertises) to match.
    fn update_own_entry(&mut self, change: impl FnOnce(&mut Self)) {
        let old = format!("{}={}", self.name, self.advertise_peer_url());
        change(self);
        let new = format!("{}={}", self.name, self.advertise_peer_url());
        self.initial_cluster = self
            .initial_cluster
            .split(',')
            .map(|e| if e == old { new.as_str() } else { e })
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Sets (`Some`) or removes (`None`) an environment variable given to the member's
    /// process from its next start on.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// The environment variables given to the member's process (see [`Member::set_env`]).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Sets the `--initial-cluster` and `--initial-cluster-state` of the member's next start
    /// (e.g. to rejoin with `existing` after `member remove` / `member add` and a wiped data
    /// dir). Only while stopped.
    pub fn set_initial_cluster(&mut self, initial_cluster: &str, state: &str) -> Result<()> {
        ensure!(
            !self.is_running(),
            "{}: stop it before changing its initial cluster",
            self.name
        );
        self.initial_cluster = initial_cluster.to_string();
        self.initial_state = state.to_string();
        Ok(())
    }

    /// Deletes the member's data dir (WAL, snapshots, backend), so its next start is a first
    /// start. Only while stopped.
    pub fn wipe_data_dir(&mut self) -> Result<()> {
        ensure!(
            !self.is_running(),
            "{}: stop it before wiping its data dir",
            self.name
        );
        let dir = self.data_dir();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }

    /// The member's log file (every start's stdout and stderr, with a harness line before
    /// each start).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends signal `sig` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the running process.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let c = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = c.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped has no
        // memory-safety preconditions.
        #[allow(unsafe_code)]
        let r = unsafe { libc::kill(pid, sig) };
        ensure!(
            r == 0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// How the member's last process exited, once it has been seen exiting (by
    /// [`Member::is_running`], [`Member::wait_exit`], ...); `None` while running, and after a
    /// [`Member::kill`] by the harness.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// Moves the member's peer listener to `addr` (`127.0.0.1:port`) for its next start, as
    /// after `etcdctl member update`; its own entry in its `--initial-cluster` follows (etcd
    /// ignores `--initial-cluster` once the data dir exists, but an operator would update
    /// it). Only while stopped.
    pub fn set_peer_addr(&mut self, addr: &str) -> Result<()> {
        ensure!(
            !self.is_running(),
            "{}: stop it before moving its peer URL",
            self.name
        );
        self.update_own_entry(|m| m.peer_addr = addr.to_string());
        Ok(())
    }

    /// The full command line (after the binary) the member is started with.
    pub fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = self.peer_url();
        let advertised = self.advertise_peer_url();
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={advertised}"),
            format!("--initial-cluster={}", self.initial_cluster),
        ];
        let overridden: Vec<&str> = self.extra.iter().filter_map(|a| flag_name(a)).collect();
        for (flag, value) in [
            ("initial-cluster-state", self.initial_state.clone()),
            ("initial-cluster-token", self.token.clone()),
            ("heartbeat-interval", HEARTBEAT_MS.to_string()),
            ("election-timeout", ELECTION_MS.to_string()),
        ] {
            if !overridden.contains(&flag) {
                args.push(format!("--{flag}={value}"));
            }
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts the process (without waiting for it to be ready). Fails if it is running.
    pub fn spawn(&mut self) -> Result<()> {
        ensure!(!self.is_running(), "{} is already running", self.name);
        let bin = match self.kind {
            Kind::Cairn => cairn_bin(),
            Kind::Etcd => PathBuf::from("etcd"),
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        {
            use std::io::Write;
            writeln!(
                log,
                "===== e2e harness: starting {} {}",
                bin.display(),
                self.args().join(" ")
            )?;
        }
        let child = Command::new(&bin)
            .args(self.args())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.child = Some(child);
        self.last_exit = None;
        self.wanted = true;
        Ok(())
    }

    /// Polls until the member answers `/health` with a healthy status (it has a leader and
    /// serves clients), or fails with its log when it exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    self.child = None;
                    self.last_exit = Some(st);
                    bail!(
                        "{:?} member {} exited during start ({st}):\n{}",
                        self.kind,
                        self.name,
                        self.log_tail(LOG_TAIL_LINES)
                    );
                }
            } else {
                bail!(
                    "{:?} member {} is not running:\n{}",
                    self.kind,
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if http_get(&self.client_addr, "/health")
                .map(|(code, body)| code == 200 && body.contains("true"))
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} member {} not ready after {timeout:?}:\n{}",
                    self.kind,
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Member::spawn`] then [`Member::wait_ready`].
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Whether the process is running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(r) => {
                if let Ok(Some(st)) = r {
                    self.last_exit = Some(st);
                }
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: the process dies with no cleanup. No-op if not running.
    pub fn kill(&mut self) {
        self.wanted = false;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 20s) for it to exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let c = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = c.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped has no
        // memory-safety preconditions.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits (up to `timeout`) for the process to exit on its own; returns its status. On
    /// timeout the process keeps running and the error shows its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.wanted = false;
        let deadline = Instant::now() + timeout;
        let c = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        loop {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                self.last_exit = Some(st);
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} still running {timeout:?} later:\n{}",
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs it if running, starts it again on the same data dir and ports, and waits
    /// until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start()
    }

    /// Everything the member has logged (all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log, under a heading naming the member.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "----- {:?} member {} (client {}, peer {}), last {} log lines:\n{}\n",
            self.kind,
            self.name,
            self.client_addr,
            self.peer_addr,
            lines.len() - from,
            lines[from..].join("\n")
        )
    }

    /// Runs `etcdctl args` against this member only.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.client_addr, args, None)
    }

    /// `etcdctl endpoint status -w json` of this member: its `Status` object (`header`,
    /// `leader`, `raftTerm`, `errors`, `isLearner`, ...).
    pub fn status(&self) -> Result<Value> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json", "--command-timeout=2s"]);
        let v: Value = parse_json(&out).with_context(|| format!("status of {}", self.name))?;
        Ok(v[0]["Status"].clone())
    }

    /// This member's id (from its endpoint status).
    pub fn id(&self) -> Result<u64> {
        self.status()?["header"]["member_id"]
            .as_u64()
            .ok_or_else(|| anyhow!("{}: status has no member_id", self.name))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses the stdout of an etcdctl run that must succeed as JSON.
pub fn parse_json(out: &Output) -> Result<Value> {
    ensure!(
        out.status.success(),
        "etcdctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "etcdctl output is not JSON: {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A leader as every member asked reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderView {
    /// Index of the leader in [`Cluster::member`].
    pub index: usize,
    /// The leader's member id.
    pub id: u64,
    /// The raft term all asked members report.
    pub term: u64,
}

/// n members of one kind forming one cluster, plus members added later.
pub struct Cluster {
    /// Which binary every member runs.
    pub kind: Kind,
    /// The `--initial-cluster-token` of the initial members.
    pub token: String,
    /// The scheme of every member's peer URL (`http`, or `https` for peer TLS).
    peer_scheme: &'static str,
    members: Vec<Member>,
    started: Instant,
}

impl Cluster {
    /// Starts `n` members `m0..m{n-1}` with `extra` flags each (a flag named there replaces
    /// the harness's default for it, e.g. `--election-timeout=1000`), waits until every
    /// member is ready and all agree on a leader. Retried on fresh ports if a port was taken.
    pub fn start(kind: Kind, n: usize, extra: &[&str]) -> Result<Cluster> {
        Self::start_with(kind, n, |_| extra.iter().map(|s| s.to_string()).collect())
    }

    /// Like [`Cluster::start`] with per-member extra flags: `extra(i)` for member `i`.
    pub fn start_with(
        kind: Kind,
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        Self::start_with_scheme(kind, n, "http", extra)
    }

    /// Spawns with `scheme` peer URLs and waits for every member and a leader, retrying on
    /// fresh ports when a port turned out to be taken.
    fn start_with_scheme(
        kind: Kind,
        n: usize,
        scheme: &'static str,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = Self::spawn_with_scheme(kind, n, scheme, &extra).and_then(|mut c| {
                c.wait_all_ready()?;
                c.wait_for_leader(READY_TIMEOUT)?;
                Ok(c)
            });
            match r {
                Err(e)
                    if attempt < 3
                        && format!("{e:#}")
                            .to_ascii_lowercase()
                            .contains("address already in use") => {}
                other => return other,
            }
        }
    }

    /// Spawns `n` members like [`Cluster::start_with`] but returns without waiting for
    /// anything (for members that are not expected to become ready).
    pub fn spawn_with(
        kind: Kind,
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        Self::spawn_with_scheme(kind, n, "http", extra)
    }

    /// Like [`Cluster::start_with`] with `https://` peer URLs: `extra(i)` must give member
    /// `i` its peer TLS flags (`--peer-cert-file`..., or `--peer-auto-tls`).
    pub fn start_with_peer_tls(
        kind: Kind,
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        Self::start_with_scheme(kind, n, "https", extra)
    }

    /// [`Cluster::spawn_with`] with peer URLs of `scheme`.
    fn spawn_with_scheme(
        kind: Kind,
        n: usize,
        scheme: &'static str,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        let mut c = Self::create_with_scheme(kind, n, scheme, extra)?;
        c.spawn_all()?;
        Ok(c)
    }

    /// Creates `n` members like [`Cluster::spawn_with`] without starting any: each has its
    /// ports and data dir, so that something (e.g. a fault proxy, see
    /// [`Member::set_advertise_peer_addr`]) can be set up in front of its peer listener before
    /// [`Cluster::spawn_all`] starts them.
    pub fn create(kind: Kind, n: usize, extra: impl Fn(usize) -> Vec<String>) -> Result<Cluster> {
        Self::create_with_scheme(kind, n, "http", extra)
    }

    /// Gives every member of a [`Cluster::create`]d cluster the `--initial-cluster` of every
    /// member's advertised peer URL, and spawns them all (without waiting for anything).
    pub fn spawn_all(&mut self) -> Result<()> {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertise_peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut self.members {
            m.initial_cluster = initial.clone();
        }
        self.started = Instant::now();
        for m in &mut self.members {
            m.spawn()?;
        }
        Ok(())
    }

    /// [`Cluster::create`] with peer URLs of `scheme`.
    fn create_with_scheme(
        kind: Kind,
        n: usize,
        scheme: &'static str,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Result<Cluster> {
        let token = unique_token();
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let mut m = Member::new(
                kind,
                &format!("m{i}"),
                String::new(),
                "new",
                &token,
                extra(i),
            )?;
            m.peer_scheme = scheme;
            members.push(m);
        }
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.advertise_peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial.clone();
        }
        Ok(Cluster {
            kind,
            token,
            peer_scheme: scheme,
            members,
            started: Instant::now(),
        })
    }

    /// When the initial members were spawned.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Waits until every member the harness started (and did not kill or stop since) is
    /// ready; fails if one of them exited.
    pub fn wait_all_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for i in 0..self.members.len() {
            if self.members[i].wanted {
                let left = deadline.saturating_duration_since(Instant::now());
                self.members[i]
                    .wait_ready(left.max(Duration::from_millis(100)))
                    .map_err(|e| anyhow!("{e:#}\n{}", self.logs_tail(LOG_TAIL_LINES)))?;
            }
        }
        Ok(())
    }

    /// How many members (initial and added).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i` (in start/add order: `m0` is 0).
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Member `i`, to kill, stop or restart it.
    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// Indexes of the members whose process is running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect()
    }

    /// Comma-joined client URLs of the running members.
    pub fn endpoints(&mut self) -> String {
        self.running()
            .into_iter()
            .map(|i| self.members[i].endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `etcdctl args` against all running members' endpoints.
    pub fn etcdctl(&mut self, args: &[&str]) -> Output {
        let eps = self.endpoints();
        etcdctl(&eps, args, None)
    }

    /// The endpoint status of each of `members` (see [`Member::status`]).
    pub fn statuses(&self, members: &[usize]) -> Vec<(usize, Result<Value>)> {
        members
            .iter()
            .map(|&i| (i, self.members[i].status()))
            .collect()
    }

    /// The leader as the running members see it: an error unless every running member
    /// answers its status and all name the same leader, that leader is one of them, and all
    /// are in the same term.
    pub fn leader(&mut self) -> Result<LeaderView> {
        let running = self.running();
        self.leader_among(&running)
    }

    /// Like [`Cluster::leader`] asking only `members`.
    pub fn leader_among(&self, members: &[usize]) -> Result<LeaderView> {
        ensure!(!members.is_empty(), "no members to ask for the leader");
        let mut view: Option<(u64, u64)> = None;
        let mut ids = Vec::new();
        for (i, st) in self.statuses(members) {
            let st = st?;
            let leader = st["leader"].as_u64().unwrap_or(0);
            let term = st["raftTerm"].as_u64().unwrap_or(0);
            let id = st["header"]["member_id"].as_u64().unwrap_or(0);
            ids.push((i, id));
            ensure!(
                leader != 0,
                "{} has no leader (errors {})",
                self.members[i].name,
                st["errors"]
            );
            match view {
                None => view = Some((leader, term)),
                Some(v) => ensure!(
                    v == (leader, term),
                    "members disagree on (leader, term): {:?} vs {} says ({leader:x}, {term})",
                    v,
                    self.members[i].name
                ),
            }
        }
        let (leader, term) = view.expect("at least one member asked");
        let index = ids
            .iter()
            .find(|(_, id)| *id == leader)
            .map(|(i, _)| *i)
            .ok_or_else(|| anyhow!("leader {leader:x} is none of the members asked {ids:?}"))?;
        Ok(LeaderView {
            index,
            id: leader,
            term,
        })
    }

    /// Index of the leader (see [`Cluster::leader`]).
    pub fn leader_index(&mut self) -> Result<usize> {
        Ok(self.leader()?.index)
    }

    /// Polls until [`Cluster::leader`] succeeds, up to `timeout`; fails with every member's
    /// log tail.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> Result<LeaderView> {
        let running = self.running();
        self.wait_for_leader_among(&running, timeout)
    }

    /// Like [`Cluster::wait_for_leader`] asking only `members`.
    pub fn wait_for_leader_among(
        &self,
        members: &[usize],
        timeout: Duration,
    ) -> Result<LeaderView> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader_among(members) {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "{:?}: no agreed leader among {:?} after {timeout:?}: {e:#}\n{}",
                        self.kind,
                        members
                            .iter()
                            .map(|&i| &self.members[i].name)
                            .collect::<Vec<_>>(),
                        self.logs_tail(LOG_TAIL_LINES)
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `etcdctl endpoint hashkv --rev=rev` of each running member: (index, hash).
    pub fn hashkv_all(&mut self, rev: i64) -> Result<Vec<(usize, u64)>> {
        let rev_flag = format!("--rev={rev}");
        let mut out = Vec::new();
        for i in self.running() {
            let m = &self.members[i];
            let v = parse_json(&m.etcdctl(&[
                "endpoint",
                "hashkv",
                &rev_flag,
                "-w",
                "json",
                "--command-timeout=3s",
            ]))
            .with_context(|| format!("hashkv of {}", m.name))?;
            let hash = v[0]["HashKV"]["hash"]
                .as_u64()
                .ok_or_else(|| anyhow!("{}: no hash in {v}", m.name))?;
            out.push((i, hash));
        }
        Ok(out)
    }

    /// Polls until every running member is at the same revision with the same
    /// `hashkv` at it; returns that revision. Fails after `timeout` with the last
    /// observation and the logs.
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = (|| -> Result<i64> {
                let running = self.running();
                let mut revs = Vec::new();
                for (i, st) in self.statuses(&running) {
                    revs.push((i, st?["header"]["revision"].as_i64().unwrap_or(0)));
                }
                let rev = revs[0].1;
                ensure!(
                    revs.iter().all(|(_, r)| *r == rev),
                    "revisions differ: {revs:?}"
                );
                let hashes = self.hashkv_all(rev)?;
                ensure!(
                    hashes.iter().all(|(_, h)| *h == hashes[0].1),
                    "hashes at revision {rev} differ: {hashes:?}"
                );
                Ok(rev)
            })();
            match attempt {
                Ok(rev) => return Ok(rev),
                Err(e) if Instant::now() > deadline => bail!(
                    "{:?}: members did not converge within {timeout:?}: {e:#}\n{}",
                    self.kind,
                    self.logs_tail(LOG_TAIL_LINES)
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `etcdctl member add name --peer-urls=<fresh port> [--learner]` against the
    /// cluster (retrying while etcd refuses with `etcdserver: unhealthy cluster`, which it
    /// does until every member has been connected for 5s) and creates — without starting —
    /// the new member with `--initial-cluster-state existing` and the `--initial-cluster`
    /// that `member add` printed. Returns its index and the `member add` output.
    pub fn add_member_unstarted(
        &mut self,
        name: &str,
        learner: bool,
        extra: &[&str],
    ) -> Result<(usize, String)> {
        let mut m = Member::new(
            self.kind,
            name,
            String::new(),
            "existing",
            &self.token,
            extra.iter().map(|s| s.to_string()).collect(),
        )?;
        m.peer_scheme = self.peer_scheme;
        let peer = format!("--peer-urls={}", m.peer_url());
        let mut args = vec!["member", "add", name, peer.as_str()];
        if learner {
            args.push("--learner");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out = self.etcdctl(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success()
                && stderr.contains("etcdserver: unhealthy cluster")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            break out;
        };
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(
            out.status.success(),
            "member add {name} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        m.initial_cluster = stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .map(|v| v.trim_matches('"').to_string())
            .ok_or_else(|| anyhow!("member add printed no ETCD_INITIAL_CLUSTER: {stdout}"))?;
        self.members.push(m);
        Ok((self.members.len() - 1, stdout))
    }

    /// [`Cluster::add_member_unstarted`], then starts the member and waits until it is
    /// ready. Returns its index.
    pub fn add_member(&mut self, name: &str, learner: bool) -> Result<usize> {
        let (i, _) = self.add_member_unstarted(name, learner, &[])?;
        self.members[i]
            .start()
            .map_err(|e| anyhow!("{e:#}\n{}", self.logs_tail(LOG_TAIL_LINES)))?;
        Ok(i)
    }

    /// The last `n` log lines of every member, for failure messages.
    pub fn logs_tail(&self, n: usize) -> String {
        self.members.iter().map(|m| m.log_tail(n)).collect()
    }
}
