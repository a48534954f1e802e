//! The side-by-side comparison behind `scripts/bench-compare`: start the real etcd and cairn
//! with the same flags (one member, or three for the `c3-*` workloads with clients spread over
//! every member; loopback, free ports, a fresh temporary data dir per workload, removed
//! afterwards), run the same workload on each in turn — alternating which
//! goes first — and tabulate throughput, p50/p99, peak RSS (`VmHWM` of the server process),
//! disk use of the data dir and the ratio cairn/etcd, then check the targets.
//!
//! The load generator runs in this process, on the same 2 cores as the server under test; both
//! servers pay that cost alike. Nothing here asserts: benchmarks report.

use crate::lease::{lease_keepalive, LeaseOpts};
use crate::report::fmt_dur;
use crate::watch::{watch_latency, WatchOpts};
use crate::{run, BenchError, Common, Report, Workload};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The real etcd (Debian `etcd-server`).
    Etcd,
    /// cairn's release binary.
    Cairn,
}

impl Kind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Cairn => "cairn",
        }
    }
}

/// How long a server may take to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Servers running now, with their temporary dirs: what the signal handler cleans up if this
/// program is interrupted (Drop does not run then).
static LIVE: std::sync::Mutex<Vec<(u32, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(u32, PathBuf)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT or SIGTERM: kill every server still running, remove their dirs, exit 130.
fn spawn_cleanup_on_signal(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("interrupted: stopping the servers and removing their data dirs");
        for (pid, dir) in live().drain(..) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(100));
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    });
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One running server (a single member, or one member of a cluster) with its own data dir.
pub struct Server {
    /// Which binary.
    pub kind: Kind,
    bin: PathBuf,
    dir: tempfile::TempDir,
    name: String,
    client_addr: String,
    peer_addr: String,
    /// `--initial-cluster`; `None` for a single member.
    initial_cluster: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `kind` from `bin` with a fresh data dir under `tmp`; returns once `/health` says
    /// it is healthy, with the time that took.
    pub fn start(kind: Kind, bin: &Path, tmp: &Path) -> Result<(Server, Duration)> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cairn-bench-{}-", kind.name()))
            .tempdir_in(tmp)
            .with_context(|| format!("creating a temporary dir in {}", tmp.display()))?;
        let mut s = Server {
            kind,
            bin: bin.to_path_buf(),
            log: dir.path().join("server.log"),
            dir,
            name: "bench".into(),
            client_addr: format!("127.0.0.1:{}", free_port()?),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            initial_cluster: None,
            child: None,
        };
        let t = s.spawn_and_wait()?;
        Ok((s, t))
    }

    /// Starts an `n`-member cluster of `kind` (members `m0`..), each with its own data dir;
    /// returns once every member answers `/health` healthy.
    pub fn start_cluster(kind: Kind, bin: &Path, tmp: &Path, n: usize) -> Result<Vec<Server>> {
        let mut members = Vec::new();
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix(&format!("cairn-bench-{}-m{i}-", kind.name()))
                .tempdir_in(tmp)
                .with_context(|| format!("creating a temporary dir in {}", tmp.display()))?;
            members.push(Server {
                kind,
                bin: bin.to_path_buf(),
                log: dir.path().join("server.log"),
                dir,
                name: format!("m{i}"),
                client_addr: format!("127.0.0.1:{}", free_port()?),
                peer_addr: format!("127.0.0.1:{}", free_port()?),
                initial_cluster: None,
                child: None,
            });
        }
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = Some(cluster.clone());
            m.spawn()?;
        }
        let t0 = Instant::now();
        for m in &mut members {
            m.wait_healthy(t0)?;
        }
        Ok(members)
    }

    /// The flags both servers are started with.
    pub fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer_addr);
        let cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={cluster}"),
        ];
        if self.initial_cluster.is_some() {
            args.push("--initial-cluster-token=bench-cluster".into());
        }
        args
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://127.0.0.1:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    fn spawn_and_wait(&mut self) -> Result<Duration> {
        let t0 = Instant::now();
        self.spawn()?;
        self.wait_healthy(t0)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        live().push((child.id(), self.dir.path().to_path_buf()));
        self.child = Some(child);
        Ok(())
    }

    /// Polls `/health` until healthy; returns the time since `t0`.
    fn wait_healthy(&mut self, t0: Instant) -> Result<Duration> {
        loop {
            if health_ok(&self.client_addr) {
                return Ok(t0.elapsed());
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                if let Some(c) = self.child.take() {
                    live().retain(|(pid, _)| *pid != c.id());
                }
                bail!(
                    "{} exited during startup ({st}); log tail:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            if t0.elapsed() > START_TIMEOUT {
                bail!(
                    "{} not healthy after {START_TIMEOUT:?}; log tail:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size of the server process so far (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        proc_status_kib(&status, "VmHWM:").map(|k| k * 1024)
    }

    /// Bytes allocated on disk under the data dir (what `du` counts; preallocated WAL space
    /// included).
    pub fn disk_usage(&self) -> u64 {
        du(&self.data_dir())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after [`STOP_TIMEOUT`]); returns how long the
    /// shutdown took.
    pub fn stop(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        live().retain(|(pid, _)| *pid != child.id());
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        loop {
            if child.try_wait()?.is_some() {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)",
                    self.kind.name()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same data dir; returns the
    /// shutdown time and the time from the new process's start to a healthy `/health`.
    pub fn restart(&mut self) -> Result<(Duration, Duration)> {
        let stop = self.stop()?;
        let start = self.spawn_and_wait()?;
        Ok((stop, start))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            live().retain(|(pid, _)| *pid != c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn proc_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes allocated under `path` (st_blocks × 512), like `du`.
fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut n = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                n += du(&e.path());
            }
        }
    }
    n
}

/// `GET /health` over HTTP/1.1: true when the answer is 200 with `"health":"true"`.
fn health_ok(addr: &str) -> bool {
    let Ok(sa) = addr.parse() else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200") && text.replace(' ', "").contains("\"health\":\"true\"")
}

/// Busy CPU ticks of the whole machine (`/proc/stat`: user, nice, system, irq, softirq, steal).
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?)
}

/// utime + stime of a process (`/proc/<pid>/stat` fields 14 and 15), in ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Measures the CPU that processes other than the server and this program use during a phase.
struct CpuMeter {
    t0: Instant,
    busy: Option<u64>,
    server: Option<u64>,
    me: Option<u64>,
    pid: Option<u32>,
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            t0: Instant::now(),
            busy: machine_busy_ticks(),
            server: pid.and_then(|p| process_ticks(&p.to_string())),
            me: process_ticks("self"),
            pid,
        }
    }

    /// Average cores used by everything else since `start`.
    fn other_cores(&self) -> Option<f64> {
        let busy = machine_busy_ticks()?.checked_sub(self.busy?)?;
        let server = process_ticks(&self.pid?.to_string())?.saturating_sub(self.server?);
        let me = process_ticks("self")?.saturating_sub(self.me?);
        let secs = self.t0.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some((busy.saturating_sub(server + me) as f64 / clk_tck() / secs).max(0.0))
    }
}

/// One server's figures for one table row. `None` = not measured for this row.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Wall time of the phase (for restart rows: start to healthy).
    pub time: Option<Duration>,
    /// Operations per second.
    pub rps: Option<f64>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
    /// Peak RSS of the server process so far, bytes.
    pub rss: Option<u64>,
    /// Disk use of the data dir, bytes.
    pub disk: Option<u64>,
    /// Failed requests.
    pub errors: u64,
    /// CPU used by processes other than the server and this program during the phase, in
    /// cores (other work on the machine competes with the measurement).
    pub other_cpu: Option<f64>,
    /// Why the row was not measured, or what to know about it.
    pub note: Option<String>,
}

impl Cell {
    fn from_report(r: &Report) -> Cell {
        let mut note = None;
        if r.errors > 0 {
            let kinds: Vec<String> = r
                .error_kinds
                .iter()
                .take(3)
                .map(|(k, v)| format!("{v}× {k}"))
                .collect();
            note = Some(format!("errors: {}", kinds.join("; ")));
        }
        Cell {
            time: Some(r.elapsed),
            rps: Some(r.rps()),
            p50: Some(r.hist.quantile(0.5)),
            p99: Some(r.hist.quantile(0.99)),
            rss: None,
            disk: None,
            errors: r.errors,
            other_cpu: None,
            note,
        }
    }

    /// Puts `extra` in front of the note.
    fn prepend_note(&mut self, extra: String) {
        self.note = Some(match self.note.take() {
            Some(n) => format!("{extra}; {n}"),
            None => extra,
        });
    }

    fn skipped(note: String) -> Cell {
        Cell {
            note: Some(note),
            ..Default::default()
        }
    }
}

/// One row of the results: the same measurement on both servers.
#[derive(Clone, Debug)]
pub struct Row {
    /// Stable id (targets refer to it).
    pub id: String,
    /// What was measured.
    pub title: String,
    /// etcd's figures.
    pub etcd: Cell,
    /// cairn's figures.
    pub cairn: Cell,
}

impl Row {
    fn cell_mut(&mut self, k: Kind) -> &mut Cell {
        match k {
            Kind::Etcd => &mut self.etcd,
            Kind::Cairn => &mut self.cairn,
        }
    }
}

/// Keys and values a workload needs present before it starts.
#[derive(Clone, Debug)]
struct Prep {
    keys: u64,
    val_size: usize,
}

#[derive(Clone, Debug)]
enum CaseKind {
    Kv {
        prep: Option<Prep>,
        common: Common,
        workload: Workload,
    },
    Watch {
        common: Common,
        opts: WatchOpts,
    },
    Lease {
        common: Common,
        opts: LeaseOpts,
    },
    /// A workload on a cluster of `members`, its clients spread over every member.
    Cluster {
        members: usize,
        prep: Option<Prep>,
        common: Common,
        workload: Workload,
    },
    /// Load `n` keys × `val` bytes, read them, restart, check them.
    ManyKeys {
        n: u64,
        val: usize,
        reads: u64,
        ranges: u64,
    },
}

/// One workload of the comparison.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short id, for `--only`.
    pub id: String,
    /// Title in the table.
    pub title: String,
    kind: CaseKind,
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The smoke run: a fifth of the requests (~3 minutes).
    pub quick: bool,
    /// Add the 1M-key test.
    pub big: bool,
}

fn base_common(endpoint: &str, clients: usize, conns: usize, total: u64) -> Common {
    Common {
        endpoints: vec![endpoint.to_string()],
        clients,
        conns,
        total,
        key_size: 16,
        val_size: 256,
        key_space_size: 100_000,
        ..Common::default()
    }
}

/// The workloads of `plan`, in order. Totals are sized so the default run takes about 12
/// minutes on a quiet 2-core machine (14 with `--big`) and `--quick` about 3.
pub fn cases(plan: &Plan) -> Vec<Case> {
    // Scale totals down for --quick.
    let t = |n: u64| if plan.quick { (n / 5).max(200) } else { n };
    let ep = ""; // filled in per server
    let mut v = Vec::new();
    let kv = |id: &str, title: &str, prep: Option<Prep>, common: Common, workload: Workload| Case {
        id: id.into(),
        title: title.into(),
        kind: CaseKind::Kv {
            prep,
            common,
            workload,
        },
    };
    v.push(kv(
        "put-1",
        "put, 1 client / 1 conn, 256 B values",
        None,
        base_common(ep, 1, 1, t(40_000)),
        Workload::Put,
    ));
    v.push(kv(
        "put-64",
        "put, 64 clients / 8 conns",
        None,
        base_common(ep, 64, 8, t(400_000)),
        Workload::Put,
    ));
    v.push(kv(
        "put-256",
        "put, 256 clients / 16 conns",
        None,
        base_common(ep, 256, 16, t(500_000)),
        Workload::Put,
    ));
    let get_prep = Some(Prep {
        keys: 10_000,
        val_size: 256,
    });
    let mut gc = base_common(ep, 256, 16, t(300_000));
    gc.key_space_size = 10_000;
    v.push(kv(
        "get-l",
        "get linearizable, 256 clients / 16 conns (10k keys)",
        get_prep.clone(),
        gc.clone(),
        Workload::Range {
            keys: 1,
            serializable: false,
        },
    ));
    v.push(kv(
        "get-s",
        "get serializable, 256 clients / 16 conns (10k keys)",
        get_prep.clone(),
        gc,
        Workload::Range {
            keys: 1,
            serializable: true,
        },
    ));
    let mut kc = base_common(ep, 64, 8, t(150_000));
    kc.key_space_size = 10_000;
    kc.val_size = 1024;
    v.push(kv(
        "k8s",
        "k8s-like update, 64 clients / 8 conns (10k objects × 1 KiB)",
        Some(Prep {
            keys: 10_000,
            val_size: 1024,
        }),
        kc,
        Workload::K8sUpdate,
    ));
    let mut rc = base_common(ep, 16, 4, t(10_000));
    rc.key_space_size = 1_000;
    rc.val_size = 1024;
    v.push(kv(
        "range-1000",
        "range of 1,000 keys × 1 KiB, linearizable, 16 clients / 4 conns",
        Some(Prep {
            keys: 1_000,
            val_size: 1024,
        }),
        rc,
        Workload::Range {
            keys: 1_000,
            serializable: false,
        },
    ));
    let mut wc = base_common(ep, 1, 1, t(3_000));
    wc.rate = 100.0;
    wc.prefix = "/watch/".into();
    wc.key_space_size = 1_000;
    v.push(Case {
        id: "watch".into(),
        title: "watch fan-out: 1,000 watchers (16 streams), 100 puts/s".into(),
        kind: CaseKind::Watch {
            common: wc,
            opts: WatchOpts {
                watchers: 1_000,
                streams: 16,
                wait: Duration::from_secs(10),
            },
        },
    });
    v.push(Case {
        id: "keys-100k".into(),
        title: "100k keys × 256 B".into(),
        kind: CaseKind::ManyKeys {
            n: 100_000,
            val: 256,
            reads: t(250_000),
            ranges: t(5_000),
        },
    });
    if plan.big {
        v.push(Case {
            id: "keys-1m".into(),
            title: "1M keys × 256 B".into(),
            kind: CaseKind::ManyKeys {
                n: 1_000_000,
                val: 256,
                reads: t(100_000),
                ranges: t(3_000),
            },
        });
    }
    let cluster = |id: &str, title: &str, prep: Option<Prep>, common: Common, workload| Case {
        id: id.into(),
        title: title.into(),
        kind: CaseKind::Cluster {
            members: 3,
            prep,
            common,
            workload,
        },
    };
    v.push(cluster(
        "c3-put-256",
        "3 members: put, 256 clients / 16 conns over all members",
        None,
        base_common(ep, 256, 16, t(300_000)),
        Workload::Put,
    ));
    let mut cg = base_common(ep, 256, 16, t(200_000));
    cg.key_space_size = 10_000;
    v.push(cluster(
        "c3-get-l",
        "3 members: get linearizable, 256 clients / 16 conns over all members (10k keys)",
        get_prep.clone(),
        cg,
        Workload::Range {
            keys: 1,
            serializable: false,
        },
    ));
    v.push(Case {
        id: "lease".into(),
        title: "10k leases kept alive, 64 clients / 8 conns".into(),
        kind: CaseKind::Lease {
            common: base_common(ep, 64, 8, t(400_000)),
            opts: LeaseOpts {
                leases: 10_000,
                ttl: 300,
            },
        },
    });
    v
}

fn with_endpoint(c: &Common, ep: &str) -> Common {
    let mut c = c.clone();
    c.endpoints = vec![ep.to_string()];
    c
}

/// Loads keys `0..n` of the 16-byte key space (the same keys the read workloads use).
async fn load(ep: &str, n: u64, val_size: usize) -> Result<Report> {
    let mut c = base_common(ep, 16, 4, 0);
    c.key_space_size = n;
    c.val_size = val_size;
    let r = run(&c, &Workload::Load { batch: 128 })
        .await
        .map_err(|e| anyhow::anyhow!("load: {e}"))?;
    if r.errors > 0 {
        bail!("load: {} txns failed: {:?}", r.errors, r.error_kinds);
    }
    Ok(r)
}

/// Runs one case on one server; returns the rows (one for most cases).
fn run_case(
    rt: &tokio::runtime::Runtime,
    case: &Case,
    kind: Kind,
    bin: &Path,
    tmp: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    match &case.kind {
        CaseKind::Cluster {
            members,
            prep,
            common,
            workload,
        } => run_cluster_case(
            rt, case, kind, bin, tmp, rows, *members, prep, common, workload,
        ),
        _ => run_single_case(rt, case, kind, bin, tmp, rows),
    }
}

/// Runs one case on a single-member server.
fn run_single_case(
    rt: &tokio::runtime::Runtime,
    case: &Case,
    kind: Kind,
    bin: &Path,
    tmp: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let (mut server, _) = Server::start(kind, bin, tmp)?;
    let ep = server.endpoint();
    // Ends a phase: samples peak RSS, disk use and the CPU used by other processes, and starts
    // measuring the next phase.
    let finish = |server: &Server, cell: &mut Cell, meter: &mut CpuMeter| {
        cell.rss = server.peak_rss();
        cell.disk = Some(server.disk_usage());
        cell.other_cpu = meter.other_cores();
        *meter = CpuMeter::start(server.pid());
    };
    let mut meter = CpuMeter::start(server.pid());
    let bench = |res: Result<Report, BenchError>| -> Cell {
        match res {
            Ok(r) => Cell::from_report(&r),
            Err(BenchError::Unimplemented { service, message }) => Cell::skipped(format!(
                "skipped: {} answers Unimplemented for {service} ({message})",
                kind.name()
            )),
            Err(e) => Cell::skipped(format!("failed: {e}")),
        }
    };
    match &case.kind {
        CaseKind::Cluster { .. } => bail!("a cluster case on a single member"),
        CaseKind::Kv {
            prep,
            common,
            workload,
        } => {
            if let Some(p) = prep {
                rt.block_on(load(&ep, p.keys, p.val_size))?;
                meter = CpuMeter::start(server.pid());
            }
            let c = with_endpoint(common, &ep);
            let res = rt.block_on(run(&c, workload));
            let mut cell = bench(res.clone_report());
            if let (Ok(r), Workload::K8sUpdate) = (&res, workload) {
                let per = r.extra("conflicts_per_update").and_then(Value::as_f64);
                let extra = format!("{:.3} conflicts per update", per.unwrap_or(0.0));
                cell.prepend_note(extra);
            }
            finish(&server, &mut cell, &mut meter);
            let i = row_index(rows, &case.id, &case.title);
            *rows[i].cell_mut(kind) = cell;
        }
        CaseKind::Watch { common, opts } => {
            let c = with_endpoint(common, &ep);
            let res = rt.block_on(watch_latency(&c, opts));
            let mut cell = bench(res.clone_report());
            // The same deliveries timed from when each put was sent (etcd's tools/benchmark
            // definition; unaffected by whether the event or the put's answer arrives first).
            let mut sent = cell.clone();
            if let Ok(r) = &res {
                let f = |k: &str| r.extra(k).and_then(Value::as_f64).unwrap_or(0.0);
                cell.prepend_note(format!(
                    "ops/s = events delivered/s; {} of {} events arrived before their put's answer (counted as 0)",
                    f("events_before_ack"),
                    f("events_received"),
                ));
                sent.p50 = Some(Duration::from_secs_f64(f("from_put_send_p50_ms") / 1e3));
                sent.p99 = Some(Duration::from_secs_f64(f("from_put_send_p99_ms") / 1e3));
                sent.note = Some("same deliveries as the row above".into());
            }
            finish(&server, &mut cell, &mut meter);
            sent.rss = cell.rss;
            sent.disk = cell.disk;
            let title = format!("{}, timed from the put's answer", case.title);
            let i = row_index(rows, &case.id, &title);
            *rows[i].cell_mut(kind) = cell;
            let i = row_index(
                rows,
                &format!("{}-sent", case.id),
                &format!("{}, timed from the put being sent", case.title),
            );
            *rows[i].cell_mut(kind) = sent;
        }
        CaseKind::Lease { common, opts } => {
            let c = with_endpoint(common, &ep);
            let res = rt.block_on(lease_keepalive(&c, opts));
            let mut cell = bench(res.clone_report());
            if let Ok(r) = &res {
                let g = r
                    .extra("grants_per_sec")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let extra = format!("grants: {g:.0}/s");
                cell.prepend_note(extra);
            }
            finish(&server, &mut cell, &mut meter);
            let i = row_index(rows, &case.id, &case.title);
            *rows[i].cell_mut(kind) = cell;
        }
        CaseKind::ManyKeys {
            n,
            val,
            reads,
            ranges,
        } => {
            let id = &case.id;
            let t = &case.title;
            // Load.
            let r = rt.block_on(load(&ep, *n, *val))?;
            let mut cell = Cell::from_report(&r);
            cell.rps = r.extra("keys_per_sec").and_then(Value::as_f64);
            finish(&server, &mut cell, &mut meter);
            let i = row_index(
                rows,
                &format!("{id}-load"),
                &format!("{t}: load (keys/s; 128 puts per txn, 16 clients / 4 conns)"),
            );
            *rows[i].cell_mut(kind) = cell;
            // Random single-key gets over the whole key space.
            let mut c = base_common(&ep, 64, 8, *reads);
            c.key_space_size = *n;
            let mut cell = bench(rt.block_on(run(
                &c,
                &Workload::Range {
                    keys: 1,
                    serializable: false,
                },
            )));
            finish(&server, &mut cell, &mut meter);
            let i = row_index(
                rows,
                &format!("{id}-get"),
                &format!("{t}: get linearizable, random keys, 64 clients / 8 conns"),
            );
            *rows[i].cell_mut(kind) = cell;
            // Ranges of 1,000 keys anywhere in the key space.
            let mut c = base_common(&ep, 8, 2, *ranges);
            c.key_space_size = *n;
            let mut cell = bench(rt.block_on(run(
                &c,
                &Workload::Range {
                    keys: 1_000,
                    serializable: false,
                },
            )));
            finish(&server, &mut cell, &mut meter);
            let i = row_index(rows, &format!("{id}-read"), &format!("{t}: range of 1,000 keys, linearizable, 8 clients / 2 conns (peak RSS after load and reads)"));
            *rows[i].cell_mut(kind) = cell;
            // Restart: SIGTERM, start, poll /health.
            let (stop, start) = server.restart()?;
            let mut cell = Cell {
                time: Some(start),
                ..Default::default()
            };
            finish(&server, &mut cell, &mut meter);
            // Every key must still be there (a count-only range over the whole key space).
            let count = rt.block_on(count_keys(&ep))?;
            let after = server.peak_rss().map_or_else(|| "?".into(), mib);
            cell.note = Some(format!(
                "shutdown took {}; peak RSS after a count of all keys: {after}",
                fmt_dur(stop)
            ));
            if count != *n {
                cell.prepend_note(format!("after restart {count} keys instead of {n}!"));
                cell.errors = 1;
            }
            let i = row_index(rows, &format!("{id}-restart"), &format!("{t}: restart-to-serving (SIGTERM, start, /health healthy; peak RSS of the new process when healthy)"));
            *rows[i].cell_mut(kind) = cell;
        }
    }
    server.stop()?;
    Ok(())
}

/// The index of row `id` in `rows`, added (empty) with `title` if missing.
fn row_index(rows: &mut Vec<Row>, id: &str, title: &str) -> usize {
    if let Some(i) = rows.iter().position(|r| r.id == id) {
        return i;
    }
    rows.push(Row {
        id: id.into(),
        title: title.into(),
        etcd: Cell::default(),
        cairn: Cell::default(),
    });
    rows.len() - 1
}

/// Runs a workload on a fresh cluster; the row's RSS is the largest member's peak.
#[allow(clippy::too_many_arguments)]
fn run_cluster_case(
    rt: &tokio::runtime::Runtime,
    case: &Case,
    kind: Kind,
    bin: &Path,
    tmp: &Path,
    rows: &mut Vec<Row>,
    members: usize,
    prep: &Option<Prep>,
    common: &Common,
    workload: &Workload,
) -> Result<()> {
    let mut servers = Server::start_cluster(kind, bin, tmp, members)?;
    let eps: Vec<String> = servers.iter().map(Server::endpoint).collect();
    if let Some(p) = prep {
        rt.block_on(load(&eps[0], p.keys, p.val_size))?;
    }
    let mut c = common.clone();
    c.endpoints = eps;
    let mut cell = match rt.block_on(run(&c, workload)) {
        Ok(r) => Cell::from_report(&r),
        Err(e) => Cell::skipped(format!("failed: {e}")),
    };
    cell.rss = servers.iter().filter_map(Server::peak_rss).max();
    cell.disk = Some(servers.iter().map(Server::disk_usage).sum());
    cell.note = Some(format!(
        "RSS: the largest member's peak; disk: all {members} members"
    ));
    let i = row_index(rows, &case.id, &case.title);
    *rows[i].cell_mut(kind) = cell;
    for s in &mut servers {
        s.stop()?;
    }
    Ok(())
}

trait CloneReport {
    fn clone_report(&self) -> Result<Report, BenchError>;
}

impl CloneReport for Result<Report, BenchError> {
    fn clone_report(&self) -> Result<Report, BenchError> {
        match self {
            Ok(r) => Ok(r.clone()),
            Err(BenchError::Unimplemented { service, message }) => Err(BenchError::Unimplemented {
                service,
                message: message.clone(),
            }),
            Err(BenchError::Other(e)) => Err(BenchError::Other(anyhow::anyhow!("{e:#}"))),
        }
    }
}

/// Number of keys in the benchmark's 16-byte key space (a count-only range over everything).
async fn count_keys(ep: &str) -> Result<u64> {
    let c = etcd_client::Client::connect([ep], None).await?;
    let r = c
        .kv_client()
        .get(
            vec![0u8],
            Some(
                etcd_client::GetOptions::new()
                    .with_from_key()
                    .with_count_only(),
            ),
        )
        .await?;
    Ok(r.count() as u64)
}

/// A target from the issue: `metric(cairn) / metric(etcd)` compared with `bound`.
#[derive(Clone, Debug)]
pub struct Target {
    /// The target as the issue states it.
    pub text: &'static str,
    /// Row id it is checked on (`None`: cannot be measured yet).
    pub row: Option<&'static str>,
    /// Which figure.
    pub metric: Metric,
    /// `true`: ratio ≥ bound; `false`: ratio ≤ bound.
    pub at_least: bool,
    /// The bound on the ratio.
    pub bound: f64,
    /// Why it cannot be measured, when `row` is `None`.
    pub why_not: &'static str,
}

/// A figure of a [`Cell`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Operations per second.
    Rps,
    /// Median latency.
    P50,
    /// 99th percentile latency.
    P99,
    /// Peak RSS.
    Rss,
    /// Phase time.
    Time,
}

fn metric(c: &Cell, m: Metric) -> Option<f64> {
    match m {
        Metric::Rps => c.rps,
        Metric::P50 => c.p50.map(|d| d.as_secs_f64()),
        Metric::P99 => c.p99.map(|d| d.as_secs_f64()),
        Metric::Rss => c.rss.map(|b| b as f64),
        Metric::Time => c.time.map(|d| d.as_secs_f64()),
    }
}

/// The targets.
pub fn targets() -> Vec<Target> {
    let t = |text, row, metric, at_least, bound| Target {
        text,
        row: Some(row),
        metric,
        at_least,
        bound,
        why_not: "",
    };
    vec![
        t(
            "put ≥ 2× etcd at 256 clients",
            "put-256",
            Metric::Rps,
            true,
            2.0,
        ),
        t(
            "put ≥ 1.5× etcd at 64 clients",
            "put-64",
            Metric::Rps,
            true,
            1.5,
        ),
        t(
            "single-client put p50 latency ≤ etcd's",
            "put-1",
            Metric::P50,
            false,
            1.0,
        ),
        t("linearizable get ≥ 1.5×", "get-l", Metric::Rps, true, 1.5),
        t("serializable get ≥ 2×", "get-s", Metric::Rps, true, 2.0),
        t(
            "Kubernetes-like update ≥ 1.5×",
            "k8s",
            Metric::Rps,
            true,
            1.5,
        ),
        t(
            "range of 1,000 keys ≥ 2×",
            "range-1000",
            Metric::Rps,
            true,
            2.0,
        ),
        t(
            "watch fan-out p99 latency ≤ 0.5× (timed from the put's answer)",
            "watch",
            Metric::P99,
            false,
            0.5,
        ),
        t(
            "watch fan-out p99 latency ≤ 0.5× (timed from the put being sent)",
            "watch-sent",
            Metric::P99,
            false,
            0.5,
        ),
        t(
            "peak RSS ≤ 0.5× at 100k keys",
            "keys-100k-read",
            Metric::Rss,
            false,
            0.5,
        ),
        t(
            "peak RSS ≤ 0.25× at 1M keys",
            "keys-1m-read",
            Metric::Rss,
            false,
            0.25,
        ),
        t(
            "restart with 1M keys ≤ 0.2× etcd's time",
            "keys-1m-restart",
            Metric::Time,
            false,
            0.2,
        ),
        t(
            "3-member put at 256 clients ≥ 2×",
            "c3-put-256",
            Metric::Rps,
            true,
            2.0,
        ),
    ]
}

/// `(verdict symbol, explanation)` of `t` on `rows`.
pub fn verdict(t: &Target, rows: &[Row]) -> (&'static str, String) {
    let Some(id) = t.row else {
        return ("✘", t.why_not.to_string());
    };
    let Some(row) = rows.iter().find(|r| r.id == id) else {
        let why = if id.starts_with("keys-1m") {
            "not run (1M keys needs --big)"
        } else {
            "not run"
        };
        return ("–", why.to_string());
    };
    match (metric(&row.cairn, t.metric), metric(&row.etcd, t.metric)) {
        (Some(c), Some(e)) if e > 0.0 => {
            let ratio = c / e;
            let ok = if t.at_least {
                ratio >= t.bound
            } else {
                ratio <= t.bound
            };
            let errs = row.cairn.errors + row.etcd.errors;
            let mut s = format!("{ratio:.2}×");
            if errs > 0 {
                s.push_str(&format!(" ({errs} errors in the row)"));
            }
            (if ok { "✔" } else { "✘" }, s)
        }
        (None, _) => (
            "✘",
            row.cairn
                .note
                .clone()
                .unwrap_or_else(|| "cairn not measured".into()),
        ),
        _ => (
            "–",
            row.etcd
                .note
                .clone()
                .unwrap_or_else(|| "etcd not measured".into()),
        ),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn ratio(c: Option<f64>, e: Option<f64>) -> String {
    match (c, e) {
        (Some(c), Some(e)) if e > 0.0 => format!("**{:.2}×**", c / e),
        _ => String::new(),
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_default()
}

/// The results as a Markdown table: per row etcd, cairn and the ratio cairn/etcd.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| workload | server | time | ops/s | p50 | p99 | peak RSS | disk | errors | other CPU | notes |\n",
    );
    s.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in rows {
        for (name, c) in [("etcd", &r.etcd), ("cairn", &r.cairn)] {
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if name == "etcd" { r.title.as_str() } else { "" },
                opt(c.time, fmt_dur),
                opt(c.rps, |v| format!("{v:.0}")),
                opt(c.p50, fmt_dur),
                opt(c.p99, fmt_dur),
                opt(c.rss, mib),
                opt(c.disk, mib),
                if c.rps.is_some() || c.time.is_some() {
                    c.errors.to_string()
                } else {
                    String::new()
                },
                opt(c.other_cpu, |v| format!("{v:.2}")),
                c.note.clone().unwrap_or_default().replace('|', "/"),
            );
        }
        let (c, e) = (&r.cairn, &r.etcd);
        let _ = writeln!(
            s,
            "| | cairn/etcd | {} | {} | {} | {} | {} | {} | | | |",
            ratio(metric(c, Metric::Time), metric(e, Metric::Time)),
            ratio(c.rps, e.rps),
            ratio(metric(c, Metric::P50), metric(e, Metric::P50)),
            ratio(metric(c, Metric::P99), metric(e, Metric::P99)),
            ratio(metric(c, Metric::Rss), metric(e, Metric::Rss)),
            ratio(c.disk.map(|v| v as f64), e.disk.map(|v| v as f64)),
        );
    }
    s
}

/// The targets as a Markdown table with ✔/✘.
pub fn markdown_targets(rows: &[Row]) -> String {
    let mut s = String::from("| target | result | cairn/etcd |\n|---|:-:|---|\n");
    for t in targets() {
        let (v, why) = verdict(&t, rows);
        let _ = writeln!(s, "| {} | {v} | {why} |", t.text);
    }
    s
}

/// The rows as JSON.
pub fn rows_json(rows: &[Row]) -> Value {
    let cell = |c: &Cell| {
        json!({
            "time_s": c.time.map(|d| d.as_secs_f64()),
            "ops_per_sec": c.rps,
            "p50_ms": c.p50.map(|d| d.as_secs_f64() * 1e3),
            "p99_ms": c.p99.map(|d| d.as_secs_f64() * 1e3),
            "peak_rss_bytes": c.rss,
            "disk_bytes": c.disk,
            "errors": c.errors,
            "other_cpu_cores": c.other_cpu,
            "note": c.note,
        })
    };
    Value::Array(
        rows.iter()
            .map(|r| json!({"id": r.id, "title": r.title, "etcd": cell(&r.etcd), "cairn": cell(&r.cairn)}))
            .collect(),
    )
}

/// Runs `cases` on both servers, alternating which goes first, printing progress to stderr.
pub fn compare(cases: &[Case], cairn: &Path, etcd: &Path, tmp: &Path) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    spawn_cleanup_on_signal(&rt);
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let order = if i % 2 == 0 {
            [(Kind::Cairn, cairn), (Kind::Etcd, etcd)]
        } else {
            [(Kind::Etcd, etcd), (Kind::Cairn, cairn)]
        };
        for (kind, bin) in order {
            let t0 = Instant::now();
            eprintln!("== {} on {} ...", case.title, kind.name());
            let before = rows.len();
            if let Err(e) = run_case(&rt, case, kind, bin, tmp, &mut rows) {
                eprintln!("   failed: {e:#}");
                if rows.len() == before && !rows.iter().any(|r| r.id == case.id) {
                    rows.push(Row {
                        id: case.id.clone(),
                        title: case.title.clone(),
                        etcd: Cell::default(),
                        cairn: Cell::default(),
                    });
                }
                // Mark every row of this case that this server did not fill.
                for r in rows.iter_mut().filter(|r| r.id.starts_with(&case.id)) {
                    let c = r.cell_mut(kind);
                    if c.rps.is_none() && c.time.is_none() && c.note.is_none() {
                        c.note = Some(format!("failed: {e:#}").chars().take(300).collect());
                    }
                }
            }
            for r in rows.iter().filter(|r| r.id.starts_with(&case.id)) {
                let c = match kind {
                    Kind::Etcd => &r.etcd,
                    Kind::Cairn => &r.cairn,
                };
                eprintln!(
                    "   {:<5} {:<50} ops/s {:>9} p50 {:>10} p99 {:>10} rss {:>10} errors {} other CPU {}{}",
                    kind.name(),
                    r.title.chars().take(50).collect::<String>(),
                    opt(c.rps, |v| format!("{v:.0}")),
                    opt(c.p50, fmt_dur),
                    opt(c.p99, fmt_dur),
                    opt(c.rss, mib),
                    c.errors,
                    opt(c.other_cpu, |v| format!("{v:.2}")),
                    opt(c.note.clone(), |n| format!(" — {n}")),
                );
            }
            eprintln!("   ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_fields_parse() {
        let s = "Name:\tetcd\nVmPeak:\t  123 kB\nVmHWM:\t   45678 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(proc_status_kib(s, "VmHWM:"), Some(45678));
        assert_eq!(proc_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn verdicts_follow_the_ratio() {
        let cell = |rps: f64, p50_ms: u64| Cell {
            rps: Some(rps),
            p50: Some(Duration::from_millis(p50_ms)),
            ..Default::default()
        };
        let rows = vec![
            Row {
                id: "put-256".into(),
                title: "".into(),
                etcd: cell(1000.0, 10),
                cairn: cell(2500.0, 5),
            },
            Row {
                id: "put-1".into(),
                title: "".into(),
                etcd: cell(1000.0, 1),
                cairn: cell(900.0, 2),
            },
        ];
        let ts = targets();
        let find = |row: &str| ts.iter().find(|t| t.row == Some(row)).unwrap();
        assert_eq!(verdict(find("put-256"), &rows).0, "✔");
        assert_eq!(verdict(find("put-256"), &rows).1, "2.50×");
        assert_eq!(verdict(find("put-1"), &rows).0, "✘");
        assert_eq!(verdict(find("put-64"), &rows).0, "–");
        let table = markdown_table(&rows);
        assert!(table.contains("**2.50×**"), "{table}");
    }

    #[test]
    fn every_target_row_is_a_case_row() {
        let all = cases(&Plan {
            quick: false,
            big: true,
        });
        for t in targets() {
            if let Some(row) = t.row {
                assert!(
                    all.iter().any(|c| row.starts_with(c.id.as_str())),
                    "target row {row} has no case"
                );
            }
        }
        let quick = cases(&Plan {
            quick: true,
            big: false,
        });
        assert!(quick.iter().all(|c| c.id != "keys-1m"));
    }
}
