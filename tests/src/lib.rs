//! Harness for cairn's end-to-end tests: starts the real `cairn` binary, or the real `etcd`
//! (Debian `etcd-server`) with the same flags, on free loopback ports in a temporary data dir;
//! runs the real `etcdctl`; and cleans every process up when dropped.
//!
//! The cairn binary is `$CAIRN_BIN` if set, else `target/{release,debug}/cairn` beside this
//! workspace, matching the profile the tests were built with. The README's test command builds
//! it first.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
pub mod cluster;
pub mod proxy;
pub mod tls;

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The cairn binary under test.
    Cairn,
    /// The real etcd, the behavioural oracle.
    Etcd,
}

impl Kind {
    /// Both, cairn first.
    pub const BOTH: [Kind; 2] = [Kind::Cairn, Kind::Etcd];
}

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the cairn binary.
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let bin = target.join(profile).join("cairn");
    assert!(
        bin.exists(),
        "cairn binary not found at {}: build it first (`cargo build{} -p cairn`) or set CAIRN_BIN",
        bin.display(),
        if profile == "release" {
            " --release"
        } else {
            ""
        }
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests that start at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A running server process with its own data dir and ports.
pub struct Server {
    /// Which binary.
    pub kind: Kind,
    child: Option<Child>,
    /// Keeps the data dir alive for the server's lifetime.
    dir: tempfile::TempDir,
    /// `127.0.0.1:port` of the client listener.
    pub client_addr: String,
    /// `127.0.0.1:port` of the peer listener.
    pub peer_addr: String,
    /// `127.0.0.1:port` of an `https://` client listener beside the plain one, if started
    /// with one (see [`tls`]).
    pub tls_addr: Option<String>,
    /// Extra flags given at start (kept for restarts).
    extra: Vec<String>,
    /// Extra environment variables given at start.
    env: Vec<(String, String)>,
    log_path: PathBuf,
}

impl Server {
    /// Starts a single-member server of `kind` with etcd's defaults plus `extra` flags.
    pub fn start(kind: Kind, extra: &[&str]) -> Result<Server> {
        Self::start_with_env(kind, extra, &[])
    }

    /// Like [`Server::start`], with environment variables.
    pub fn start_with_env(kind: Kind, extra: &[&str], env: &[(&str, &str)]) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("cairn-e2e-").tempdir()?;
        let mut s = Server {
            kind,
            child: None,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            tls_addr: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: dir.path().join("server.log"),
            dir,
        };
        s.spawn()?;
        s.wait_ready()?;
        Ok(s)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The client endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr)
    }

    /// The flags this server is started with.
    pub fn args(&self) -> Vec<String> {
        let peer = format!("http://{}", self.peer_addr);
        let mut client = self.endpoint();
        if let Some(tls) = &self.tls_addr {
            client = format!("{client},https://{tls}");
        }
        let mut args = vec![
            "--name=e2e".to_string(),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=e2e={peer}"),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = match self.kind {
            Kind::Cairn => cairn_bin(),
            Kind::Etcd => PathBuf::from("etcd"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(&bin);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls until the server answers `/health` with a healthy status, or fails with its log.
    pub fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{:?} exited during start ({status}):\n{}",
                        self.kind,
                        self.log()
                    );
                }
            }
            if http_get(&self.client_addr, "/health")
                .map(|(code, body)| code == 200 && body.contains("true"))
                .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{:?} not ready after {START_TIMEOUT:?}:\n{}",
            self.kind,
            self.log()
        )
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, no cleanup: the process dies mid-write.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        signal(&c, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("did not exit within 20s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again on the same data dir and ports, and waits until ready.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    /// Starts the same server again and expects it to exit on its own (e.g. refusing a
    /// corrupt data dir); returns its exit status and everything it logged during this start.
    pub fn start_expecting_exit(&mut self) -> Result<(std::process::ExitStatus, String)> {
        self.kill();
        let before = self.log().len();
        self.spawn()?;
        let mut c = self.child.take().expect("just spawned");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok((st, self.log()[before..].to_string()));
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("still running after {START_TIMEOUT:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `etcdctl` (API v3) against this server with `args`.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.client_addr, args, None)
    }

    /// Runs `etcdctl` with `stdin` fed to it.
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        etcdctl(&self.client_addr, args, Some(stdin))
    }

    /// A connected `etcd-client` client.
    pub async fn client(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([self.endpoint()], None).await?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we spawned has no memory-safety preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs `etcdctl` against `addr`, with a timeout so a hung server fails the test.
pub fn etcdctl(addr: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (Debian etcd-client)");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut si = child.stdin.take().expect("piped stdin");
        si.write_all(text.as_bytes())
            .expect("writing etcdctl stdin");
    }
    child.wait_with_output().expect("waiting for etcdctl")
}

/// A minimal HTTP/1.1 GET; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    // Chunked bodies: keep it simple, tests look for substrings.
    Ok((code, body))
}

/// stdout of an etcdctl run that must succeed.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

// ============================================================================================
// Differential etcdctl transcripts: run the same etcdctl commands against a fresh etcd and a
// fresh cairn, normalize what legitimately differs, and compare everything else byte for byte.
// ============================================================================================

/// Set to run only the etcd half of differential tests (to check expectations while cairn does
/// not build); by default both halves run and must agree.
pub const ETCD_ONLY_ENV: &str = "CAIRN_E2E_ETCD_ONLY";

/// Set to print every normalized run of differential tests (see with `--nocapture`).
pub const SHOW_ENV: &str = "CAIRN_E2E_SHOW";

/// One etcdctl invocation and its normalized result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlRun {
    /// The command as typed (arguments, then any stdin), for reports.
    pub cmd: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout after [`normalize_ctl_text`].
    pub stdout: String,
    /// stderr after [`normalize_ctl_text`].
    pub stderr: String,
}

impl CtlRun {
    /// The last line etcdctl wrote to stderr (its `Error: ...` line on failures).
    pub fn last_err_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

impl std::fmt::Display for CtlRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}\n[exit {}]", self.cmd, self.code)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        write!(f, "--- stderr:\n{}", self.stderr)
    }
}

/// Keys of etcdctl JSON whose values legitimately differ between two servers.
const CTL_JSON_MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    // etcdctl's own client log lines and health timings.
    "ts",
    "target",
    "took",
];

/// `-w fields` names whose values legitimately differ between two servers.
const CTL_FIELDS_MASKED: &[&str] = &[
    "ClusterID",
    "MemberID",
    "RaftTerm",
    "Leader",
    "RaftIndex",
    "RaftAppliedIndex",
    "DBSize",
    "DBSizeInUse",
];

fn mask_ctl_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                // A server version is a string ("3.4.23"); a key's version is a number and
                // must match.
                if CTL_JSON_MASKED.contains(&k.as_str()) || (k == "version" && val.is_string()) {
                    *val = serde_json::Value::String("<masked>".into());
                } else {
                    mask_ctl_json(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_ctl_json),
        _ => {}
    }
}

/// Normalizes etcdctl output for comparison between servers: the server's addresses become
/// `<client>`/`<peer>`; each line that is JSON is re-printed (pretty, so diffs point at the
/// field) with ids, raft term/indexes, db sizes, the server version string, and etcdctl's
/// client-log timestamps and targets masked; `-w fields` lines with those names are masked;
/// in other lines the given ids (decimal and hex) are replaced by their markers and health
/// timings (`took = ...`) are masked. Revisions, keys, values, versions, counts and error
/// texts are kept.
pub fn normalize_ctl_text(
    text: &str,
    client_addr: &str,
    peer_addr: &str,
    ids: &[(String, String)],
) -> String {
    let text = text
        .replace(client_addr, "<client>")
        .replace(peer_addr, "<peer>");
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let trimmed = body.trim();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(trimmed) {
                mask_ctl_json(&mut v);
                out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default());
                out.push_str(nl);
                continue;
            }
        }
        if let Some((name, value)) = body.split_once(" : ") {
            let bare = name.trim_matches('"');
            if name.starts_with('"')
                && (CTL_FIELDS_MASKED.contains(&bare)
                    || (bare == "Version" && value.starts_with('"')))
            {
                out.push_str(&format!("{name} : <masked>{nl}"));
                continue;
            }
        }
        let mut l = body.to_string();
        if let Some(i) = l.find("took = ") {
            l.truncate(i + "took = ".len());
            l.push_str("<masked>");
        }
        for (id, marker) in ids {
            l = l.replace(id.as_str(), marker);
        }
        out.push_str(&l);
        out.push_str(nl);
    }
    out
}

/// The normalized etcdctl commands run against one server, and the expectations that failed.
pub struct Transcript<'a> {
    /// The server the commands go to.
    pub server: &'a Server,
    ids: Vec<(String, String)>,
    /// Every recorded run, in order.
    pub runs: Vec<CtlRun>,
    /// Expectations that did not hold, each with the run it was about.
    pub failures: Vec<String>,
}

impl<'a> Transcript<'a> {
    /// A transcript for `server`. Learns its cluster and member ids from the header of a
    /// read-only `get` (not recorded) so that they can be masked in plain-text output.
    pub fn new(server: &'a Server) -> Transcript<'a> {
        let mut ids = Vec::new();
        let out = server.etcdctl(&["get", "cairn-e2e-id-probe", "-w", "json"]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            for (field, marker) in [("member_id", "<member_id>"), ("cluster_id", "<cluster_id>")] {
                if let Some(id) = v["header"][field].as_u64() {
                    ids.push((id.to_string(), marker.to_string()));
                    ids.push((format!("{id:x}"), marker.to_string()));
                }
            }
        }
        Transcript {
            server,
            ids,
            runs: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Which server this is.
    pub fn kind(&self) -> Kind {
        self.server.kind
    }

    /// Runs etcdctl and normalizes the result without recording it; see [`Transcript::record`].
    pub fn exec(&self, args: &[&str], stdin: Option<&str>) -> (CtlRun, Output) {
        let out = etcdctl(&self.server.client_addr, args, stdin);
        let norm = |b: &[u8]| {
            normalize_ctl_text(
                &String::from_utf8_lossy(b),
                &self.server.client_addr,
                &self.server.peer_addr,
                &self.ids,
            )
        };
        let mut cmd = args
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains([' ', '"', '\n']) {
                    format!("{a:?}")
                } else if a.len() > 60 {
                    format!(
                        "{}...({} bytes)",
                        a.chars().take(20).collect::<String>(),
                        a.len()
                    )
                } else {
                    a.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(s) = stdin {
            let shown = if s.len() > 300 {
                format!(
                    "{}...({} bytes)",
                    s.chars().take(100).collect::<String>(),
                    s.len()
                )
            } else {
                s.to_string()
            };
            cmd.push_str(&format!(" <<< {shown:?}"));
        }
        let run = CtlRun {
            cmd,
            code: out.status.code().unwrap_or(-1),
            stdout: norm(&out.stdout),
            stderr: norm(&out.stderr),
        };
        (run, out)
    }

    /// Records a run (possibly adjusted by the caller) for comparison.
    pub fn record(&mut self, run: CtlRun) -> CtlRun {
        self.runs.push(run.clone());
        run
    }

    /// Runs `etcdctl args` and records the normalized result.
    pub fn run(&mut self, args: &[&str]) -> CtlRun {
        let (run, _) = self.exec(args, None);
        self.record(run)
    }

    /// Runs `etcdctl args` with `stdin` and records the normalized result.
    pub fn run_stdin(&mut self, args: &[&str], stdin: &str) -> CtlRun {
        let (run, _) = self.exec(args, Some(stdin));
        self.record(run)
    }

    /// Records a failed expectation `what` about `run` unless `cond` holds.
    pub fn check(&mut self, cond: bool, run: &CtlRun, what: &str) {
        if !cond {
            self.failures
                .push(format!("{:?}: expected {what}\n{run}", self.server.kind));
        }
    }

    /// Runs and expects exit 0; returns the run.
    pub fn ok(&mut self, args: &[&str]) -> CtlRun {
        let r = self.run(args);
        self.check(r.code == 0, &r, "exit status 0");
        r
    }

    /// Runs and expects exit 0 with exactly `stdout` (after normalization).
    pub fn ok_eq(&mut self, args: &[&str], stdout: &str) -> CtlRun {
        let r = self.run(args);
        self.check(
            r.code == 0 && r.stdout == stdout,
            &r,
            &format!("exit 0 and stdout {stdout:?}"),
        );
        r
    }

    /// Like [`Transcript::ok_eq`] with `stdin` fed to etcdctl.
    pub fn ok_stdin_eq(&mut self, args: &[&str], stdin: &str, stdout: &str) -> CtlRun {
        let r = self.run_stdin(args, stdin);
        self.check(
            r.code == 0 && r.stdout == stdout,
            &r,
            &format!("exit 0 and stdout {stdout:?}"),
        );
        r
    }

    /// Runs and expects exit `code` with `Error: {msg}` as the last stderr line.
    pub fn err(&mut self, args: &[&str], code: i32, msg: &str) -> CtlRun {
        let (r, _) = self.exec(args, None);
        self.expect_err(r, code, msg)
    }

    /// Like [`Transcript::err`] with `stdin` fed to etcdctl.
    pub fn err_stdin(&mut self, args: &[&str], stdin: &str, code: i32, msg: &str) -> CtlRun {
        let (r, _) = self.exec(args, Some(stdin));
        self.expect_err(r, code, msg)
    }

    fn expect_err(&mut self, r: CtlRun, code: i32, msg: &str) -> CtlRun {
        let r = self.record(r);
        let want = format!("Error: {msg}");
        self.check(
            r.code == code && r.last_err_line() == want,
            &r,
            &format!("exit {code} and stderr ending {want:?}"),
        );
        r
    }

    /// Runs, expects exit 0, and parses the raw (unmasked) stdout as JSON.
    pub fn json(&mut self, args: &[&str]) -> serde_json::Value {
        self.json_stdin(args, None)
    }

    /// Like [`Transcript::json`], with optional stdin.
    pub fn json_stdin(&mut self, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
        let (r, out) = self.exec(args, stdin);
        let r = self.record(r);
        match serde_json::from_slice(&out.stdout) {
            Ok(v) if r.code == 0 => v,
            _ => {
                self.check(false, &r, "exit 0 and JSON on stdout");
                serde_json::Value::Null
            }
        }
    }
}

/// A readable line diff of `expected` (etcd, `-`) against `actual` (cairn, `+`).
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!("    {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("  + {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("  - {}\n", a[i]));
            i += 1;
        }
    }
    out
}

/// Every difference between etcd's and cairn's transcripts, as readable reports.
pub fn diff_transcripts(etcd: &[CtlRun], cairn: &[CtlRun]) -> Vec<String> {
    let mut diffs = Vec::new();
    for (i, (e, c)) in etcd.iter().zip(cairn).enumerate() {
        if e == c {
            continue;
        }
        let mut d = format!("step {}: $ {}\n", i + 1, e.cmd);
        if e.cmd != c.cmd {
            d.push_str(&format!("  (cairn ran a different command: {})\n", c.cmd));
        }
        if e.code != c.code {
            d.push_str(&format!("  exit: etcd {} / cairn {}\n", e.code, c.code));
        }
        if e.stdout != c.stdout {
            d.push_str("  stdout (- etcd, + cairn):\n");
            d.push_str(&line_diff(&e.stdout, &c.stdout));
        }
        if e.stderr != c.stderr {
            d.push_str("  stderr (- etcd, + cairn):\n");
            d.push_str(&line_diff(&e.stderr, &c.stderr));
        }
        diffs.push(d);
    }
    if etcd.len() != cairn.len() {
        diffs.push(format!(
            "etcd ran {} commands, cairn {}",
            etcd.len(),
            cairn.len()
        ));
    }
    diffs
}

/// What one server's run of a scenario gave: its runs and failed expectations, or why it
/// could not run.
type ScenarioResult = std::result::Result<(Vec<CtlRun>, Vec<String>), String>;

/// Runs `scenario` against a fresh etcd and a fresh cairn (concurrently), both started with
/// `extra` flags. Panics if etcd fails any of the scenario's own expectations (the test is
/// wrong), or if cairn fails an expectation or any normalized output (stdout, stderr, exit
/// status) differs from etcd's; the panic lists every difference as a diff. With
/// [`ETCD_ONLY_ENV`] set only etcd runs.
pub fn differential<F>(extra: &[&str], scenario: F)
where
    F: Fn(&mut Transcript<'_>) + Sync,
{
    let kinds: &[Kind] = if std::env::var_os(ETCD_ONLY_ENV).is_some() {
        &[Kind::Etcd]
    } else {
        &[Kind::Etcd, Kind::Cairn]
    };
    let results: Vec<(Kind, ScenarioResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|&kind| {
                let scenario = &scenario;
                scope.spawn(move || {
                    let server =
                        start_retrying_ports(kind, extra, &[]).map_err(|e| format!("{e:#}"))?;
                    let mut t = Transcript::new(&server);
                    scenario(&mut t);
                    if std::env::var_os(SHOW_ENV).is_some() {
                        for r in &t.runs {
                            println!("===== {kind:?}\n{r}");
                        }
                    }
                    Ok((t.runs, t.failures))
                })
            })
            .collect();
        kinds
            .iter()
            .zip(handles)
            .map(|(&k, h)| {
                let r = h.join().unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panicked: {msg}"))
                });
                (k, r)
            })
            .collect()
    });
    let mut report = Vec::new();
    let mut etcd_runs = None;
    for (kind, r) in &results {
        match r {
            Err(e) => report.push(format!("{kind:?} could not run the scenario: {e}")),
            Ok((runs, failures)) => {
                if *kind == Kind::Etcd {
                    if !failures.is_empty() {
                        report.push(format!(
                            "THE TEST IS WRONG: real etcd fails {} expectation(s):\n{}",
                            failures.len(),
                            failures.join("\n\n")
                        ));
                    }
                    etcd_runs = Some(runs);
                } else {
                    report.extend(failures.iter().cloned());
                }
            }
        }
    }
    if let (Some(etcd), Some((_, Ok((cairn, _))))) =
        (etcd_runs, results.iter().find(|(k, _)| *k == Kind::Cairn))
    {
        report.extend(diff_transcripts(etcd, cairn));
    }
    if !report.is_empty() {
        panic!(
            "{} problem(s) (- etcd, + cairn):\n\n{}",
            report.len(),
            report.join("\n")
        );
    }
}

/// [`Server::start_with_env`], retried (up to 3 times, on fresh ports) when the server could
/// not bind its ports because something else took them between the harness picking them
/// and the server binding them.
pub fn start_retrying_ports(kind: Kind, extra: &[&str], env: &[(&str, &str)]) -> Result<Server> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match Server::start_with_env(kind, extra, env) {
            Err(e)
                if attempt < 3
                    && format!("{e:#}")
                        .to_ascii_lowercase()
                        .contains("address already in use") => {}
            other => return other,
        }
    }
}

/// The kinds a per-kind test should run against: both, or only etcd with [`ETCD_ONLY_ENV`].
pub fn kinds_under_test() -> Vec<Kind> {
    if std::env::var_os(ETCD_ONLY_ENV).is_some() {
        vec![Kind::Etcd]
    } else {
        vec![Kind::Etcd, Kind::Cairn]
    }
}

/// An HTTP/1.1 GET that decodes a chunked body; returns (status code, headers, body).
pub fn http_get_decoded(addr: &str, path: &str) -> Result<(u16, String, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| anyhow!("truncated chunk size"))?;
            let size_text = String::from_utf8_lossy(&rest[..eol]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size {
                bail!("truncated chunk");
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = decoded;
    }
    Ok((code, head, String::from_utf8_lossy(&body).to_string()))
}

impl Server {
    /// Starts a server whose whole configuration comes from a `--config-file` YAML written
    /// into its temp dir: the harness's name, data dir and URLs, then `yaml` (more
    /// `flag-name: value` lines). `extra` flags are also passed on the command line — etcd
    /// ignores every other flag when `--config-file` is given.
    pub fn start_with_config_file(kind: Kind, yaml: &str, extra: &[&str]) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("cairn-e2e-").tempdir()?;
        let cfg_path = dir.path().join("etcd.conf.yml");
        let mut flags = vec![format!("--config-file={}", cfg_path.display())];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Server {
            kind,
            child: None,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            tls_addr: None,
            extra: flags,
            env: Vec::new(),
            log_path: dir.path().join("server.log"),
            dir,
        };
        let (client, peer) = (s.endpoint(), format!("http://{}", s.peer_addr));
        let text = format!(
            "name: e2e\ndata-dir: {}\nlisten-client-urls: {client}\nadvertise-client-urls: {client}\n\
             listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n\
             initial-cluster: e2e={peer}\n{yaml}\n",
            s.data_dir().display()
        );
        std::fs::write(&cfg_path, text)?;
        s.spawn()?;
        s.wait_ready()?;
        Ok(s)
    }
}
