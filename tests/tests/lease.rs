//! Lease end-to-end tests, against real etcd and cairn.
//!
//! - `etcdctl_*`: the real `etcdctl lease grant / keep-alive (--once and streaming) /
//!   timetolive --keys / revoke / list` and `put --lease`, as differential transcripts (lease
//!   ids, and remaining TTLs after a range check, are masked; attached keys are sorted, since
//!   etcd lists them in map order).
//! - `client_*`: the `etcd-client` crate for what etcdctl cannot express: exact error codes,
//!   client-chosen ids, revoke revisions, keys moving between leases, `ignore_lease`, txns.
//!   Each scenario runs against etcd and cairn; cairn's normalised transcript must equal
//!   etcd's.
//! - expiry: a key under a lease of TTL t is never gone before t and gone by t + 1 s.
//! - restarts (SIGTERM and SIGKILL): a restarted member restarts every lease from its full TTL
//!   (plus the election timeout), as etcd does; with cairn's lease checkpoints a long lease
//!   continues from its last checkpoint instead (cairn only: etcd's interval is 5 minutes).
//!
//! Fast flags (`--election-timeout=500 --heartbeat-interval=100`) keep the minimum TTL at 1 s
//! where expiry is waited for. Nothing sleeps a fixed time where a condition can be polled.

use cairn_tests::{
    differential, kinds_under_test, start_retrying_ports, CtlRun, Kind, Server, Transcript,
    ETCD_ONLY_ENV, SHOW_ENV,
};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
    Txn, TxnOp,
};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Flags that bring etcd's minimum lease TTL down to 1 s.
const FAST: &[&str] = &["--election-timeout=500", "--heartbeat-interval=100"];

// ---------------------------------------------------------------------------------------------
// etcdctl transcripts
// ---------------------------------------------------------------------------------------------

/// Lease ids seen in a transcript, masked as `<L0>`, `<L1>`, … in hex and decimal forms.
#[derive(Default)]
struct LeaseIds {
    hex: Vec<String>,
}

impl LeaseIds {
    fn learn(&mut self, hex: &str) -> usize {
        if let Some(i) = self.hex.iter().position(|h| h == hex) {
            return i;
        }
        self.hex.push(hex.to_string());
        self.hex.len() - 1
    }

    fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (i, hex) in self.hex.iter().enumerate() {
            let marker = format!("<L{i}>");
            out = out.replace(hex.as_str(), &marker);
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                out = out.replace(&(id as i64).to_string(), &marker);
            }
        }
        out
    }
}

/// Replaces the number in every `remaining(Ns)` and every JSON `"ttl": N` (the time-dependent
/// remaining TTL of timetolive) with `<r>`; returns the numbers.
fn mask_remaining(text: &str) -> (String, Vec<i64>) {
    let mut out = String::new();
    let mut found = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(start) = line.find("remaining(") {
            let from = start + "remaining(".len();
            if let Some(len) = line[from..].find("s)") {
                if let Ok(n) = line[from..from + len].parse() {
                    found.push(n);
                    out.push_str(&line[..from]);
                    out.push_str("<r>");
                    out.push_str(&line[from + len..]);
                    continue;
                }
            }
        }
        if let Some(rest) = line.trim_start().strip_prefix("\"ttl\": ") {
            let num = rest.trim_end().trim_end_matches(',');
            if let Ok(n) = num.parse() {
                found.push(n);
                out.push_str(&line.replacen(num, "<r>", 1));
                continue;
            }
        }
        out.push_str(line);
    }
    (out, found)
}

/// Sorts the words of `attached keys([...])`, which etcd prints in map order.
fn sort_attached_keys(text: &str) -> String {
    let Some(start) = text.find("attached keys([") else {
        return text.to_string();
    };
    let from = start + "attached keys([".len();
    let Some(len) = text[from..].find("])") else {
        return text.to_string();
    };
    let mut keys: Vec<&str> = text[from..from + len].split(' ').collect();
    keys.sort_unstable();
    format!("{}{}{}", &text[..from], keys.join(" "), &text[from + len..])
}

/// Runs etcdctl, learns a granted lease id, masks lease ids and remaining TTLs, records the run;
/// returns it with the remaining TTLs found.
fn ctl(t: &mut Transcript<'_>, ids: &mut LeaseIds, args: &[&str]) -> (CtlRun, Vec<i64>) {
    let (mut run, _) = t.exec(args, None);
    if let Some(hex) = run
        .stdout
        .strip_prefix("lease ")
        .and_then(|rest| rest.split_whitespace().next())
        .filter(|_| run.stdout.contains(" granted with TTL("))
    {
        ids.learn(hex);
    }
    let (stdout, remaining) = mask_remaining(&sort_attached_keys(&ids.mask(&run.stdout)));
    run.stdout = stdout;
    run.stderr = ids.mask(&run.stderr);
    run.cmd = ids.mask(&run.cmd);
    (t.record(run), remaining)
}

fn ctl_ok(t: &mut Transcript<'_>, ids: &mut LeaseIds, args: &[&str], stdout: &str) -> Vec<i64> {
    let (r, remaining) = ctl(t, ids, args);
    t.check(
        r.code == 0 && r.stdout == stdout,
        &r,
        &format!("exit 0 and stdout {stdout:?}"),
    );
    remaining
}

fn ctl_err(t: &mut Transcript<'_>, ids: &mut LeaseIds, args: &[&str], msg: &str) {
    let (r, _) = ctl(t, ids, args);
    let want = format!("Error: {msg}");
    t.check(
        r.code != 0 && r.last_err_line() == want,
        &r,
        &format!("a failure with stderr ending {want:?}"),
    );
}

/// The real hex id of lease `<Li>`.
fn hex_of(ids: &LeaseIds, i: usize) -> String {
    ids.hex.get(i).cloned().unwrap_or_else(|| "0".into())
}

#[test]
fn etcdctl_grant_put_timetolive_keepalive_revoke_list() {
    differential(&[], |t| {
        let mut ids = LeaseIds::default();
        ctl_ok(
            t,
            &mut ids,
            &["lease", "grant", "100"],
            "lease <L0> granted with TTL(100s)\n",
        );
        // Below the minimum (1.5 election timeouts, rounded up: 2 s by default): raised.
        ctl_ok(
            t,
            &mut ids,
            &["lease", "grant", "1"],
            "lease <L1> granted with TTL(2s)\n",
        );
        // Soonest expiry first.
        ctl_ok(
            t,
            &mut ids,
            &["lease", "list"],
            "found 2 leases\n<L1>\n<L0>\n",
        );
        ctl_err(
            t,
            &mut ids,
            &["lease", "grant", "9000000001"],
            "failed to grant lease (etcdserver: too large lease TTL)",
        );
        let l0 = hex_of(&ids, 0);
        let lease0 = format!("--lease={l0}");
        ctl_ok(t, &mut ids, &["put", &lease0, "k1", "v1"], "OK\n");
        ctl_ok(t, &mut ids, &["put", &lease0, "k2", "v2"], "OK\n");
        ctl_err(
            t,
            &mut ids,
            &["put", "--lease=1234", "k3", "v"],
            "etcdserver: requested lease not found",
        );
        ctl(t, &mut ids, &["get", "k1", "-w", "json"]);
        let r = ctl_ok(
            t,
            &mut ids,
            &["lease", "timetolive", "--keys", &l0],
            "lease <L0> granted with TTL(100s), remaining(<r>s), attached keys([k1 k2])\n",
        );
        let run = t.runs.last().cloned().expect("just recorded");
        t.check(
            r.len() == 1 && (90..=100).contains(&r[0]),
            &run,
            "a remaining TTL within 10 s of 100",
        );
        let (run, r) = ctl(t, &mut ids, &["lease", "timetolive", "-w", "json", &l0]);
        t.check(
            run.code == 0 && r.len() == 1 && (90..=100).contains(&r[0]),
            &run,
            "JSON with a remaining TTL within 10 s of 100",
        );
        ctl_ok(
            t,
            &mut ids,
            &["lease", "keep-alive", "--once", &l0],
            "lease <L0> keepalived with TTL(100)\n",
        );
        ctl(
            t,
            &mut ids,
            &["lease", "keep-alive", "--once", "-w", "json", &l0],
        );
        ctl_err(
            t,
            &mut ids,
            &["lease", "keep-alive", "--once", "1234"],
            "etcdserver: requested lease not found",
        );
        ctl_ok(
            t,
            &mut ids,
            &["lease", "timetolive", "1234"],
            "lease 0000000000001234 already expired\n",
        );
        ctl(t, &mut ids, &["lease", "timetolive", "-w", "json", "1234"]);
        // Overwriting with the lease keeps k1 attached; without it detaches k2.
        ctl_ok(t, &mut ids, &["put", &lease0, "k1", "v1b"], "OK\n");
        ctl_ok(t, &mut ids, &["put", "k2", "v2b"], "OK\n");
        ctl_ok(
            t,
            &mut ids,
            &["lease", "timetolive", "--keys", &l0],
            "lease <L0> granted with TTL(100s), remaining(<r>s), attached keys([k1])\n",
        );
        ctl_ok(
            t,
            &mut ids,
            &["lease", "revoke", &l0],
            "lease <L0> revoked\n",
        );
        // k1 is gone in one revision (6); k2 no longer belongs to the lease.
        ctl(t, &mut ids, &["get", "--prefix", "k", "-w", "json"]);
        ctl_err(
            t,
            &mut ids,
            &["lease", "revoke", &l0],
            "failed to revoke lease (etcdserver: requested lease not found)",
        );
        ctl_ok(
            t,
            &mut ids,
            &["lease", "timetolive", &l0],
            "lease <L0> already expired\n",
        );
        // <L1> (2 s) expires on its own.
        let l1 = hex_of(&ids, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (run, _) = t.exec(&["lease", "timetolive", &l1], None);
            if run.stdout.contains("already expired") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ctl_ok(t, &mut ids, &["lease", "list"], "found 0 leases\n");
    });
}

/// `etcdctl lease keep-alive` (streaming) keeps a lease alive past its TTL and stops with
/// "expired or revoked." once it is revoked.
fn streaming_keepalive(kind: Kind) {
    let server = start_retrying_ports(kind, FAST, &[]).unwrap();
    let out = server.etcdctl(&["lease", "grant", "2"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{kind:?}: grant: {out:?}");
    let hex = text.split_whitespace().nth(1).unwrap().to_string();
    let put = server.etcdctl(&["put", &format!("--lease={hex}"), "kept", "v"]);
    assert!(put.status.success(), "{kind:?}: put: {put:?}");
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", server.client_addr))
        .args(["lease", "keep-alive", &hex])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // Keep-alives every TTL/3: several within 4 s, each answering the full TTL, and the key
    // outlives the 2 s TTL.
    let started = Instant::now();
    let mut answers = 0;
    while started.elapsed() < Duration::from_secs(4) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(
                line,
                format!("lease {hex} keepalived with TTL(2)"),
                "{kind:?}"
            );
            answers += 1;
        }
    }
    assert!(
        answers >= 3,
        "{kind:?}: only {answers} keep-alive answers in 4 s"
    );
    let get = server.etcdctl(&["get", "kept", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n", "{kind:?}");
    let revoke = server.etcdctl(&["lease", "revoke", &hex]);
    assert!(revoke.status.success(), "{kind:?}: revoke: {revoke:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => last = line,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    assert_eq!(last, format!("lease {hex} expired or revoked."), "{kind:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{kind:?}: keep-alive exit {status}");
    let get = server.etcdctl(&["get", "kept", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "", "{kind:?}");
}

#[test]
fn etcdctl_streaming_keepalive() {
    std::thread::scope(|s| {
        for kind in kinds_under_test() {
            s.spawn(move || streaming_keepalive(kind));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// etcd-client scenarios
// ---------------------------------------------------------------------------------------------

/// One scenario run: a transcript of normalised responses, and failed checks.
struct Cx {
    kind: Kind,
    c: Client,
    endpoint: String,
    transcript: Vec<(String, String)>,
    failures: Vec<String>,
}

fn err_s(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?}: {}", s.code(), s.message()),
        other => format!("ERR (client side) {other}"),
    }
}

impl Cx {
    fn rec(&mut self, label: &str, value: String) {
        self.transcript.push((label.to_string(), value));
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(format!("{:?}: {}", self.kind, what()));
        }
    }

    async fn rev(&mut self) -> i64 {
        self.c
            .get("probe", None)
            .await
            .map(|r| r.header().map_or(0, |h| h.revision()))
            .unwrap_or(-1)
    }

    async fn expect_rev(&mut self, label: &str, want: i64) {
        let got = self.rev().await;
        self.rec(label, format!("rev {got}"));
        self.check(got == want, || {
            format!("{label}: revision {got}, want {want}")
        });
    }

    async fn grant(&mut self, label: &str, ttl: i64, id: i64) -> i64 {
        let opts = (id != 0).then(|| LeaseGrantOptions::new().with_id(id));
        let r = self.c.lease_grant(ttl, opts).await;
        let v = match &r {
            Ok(r) => format!(
                "id {} ttl {} rev {}",
                if id == 0 {
                    "<generated>".to_string()
                } else {
                    r.id().to_string()
                },
                r.ttl(),
                r.header().map_or(-1, |h| h.revision())
            ),
            Err(e) => err_s(e),
        };
        self.rec(label, v);
        r.map(|r| r.id()).unwrap_or(0)
    }

    async fn put(&mut self, label: &str, k: &str, v: &str, opts: Option<PutOptions>) {
        let r = self.c.put(k, v, opts).await;
        let v = match &r {
            Ok(r) => format!("rev {}", r.header().map_or(-1, |h| h.revision())),
            Err(e) => err_s(e),
        };
        self.rec(label, v);
    }

    async fn revoke(&mut self, label: &str, id: i64) {
        let r = self.c.lease_revoke(id).await;
        let v = match &r {
            Ok(r) => format!("rev {}", r.header().map_or(-1, |h| h.revision())),
            Err(e) => err_s(e),
        };
        self.rec(label, v);
    }

    /// TimeToLive with keys: `(ttl, granted, keys sorted)`; the remaining TTL is recorded only
    /// as "alive" / its exact value when not positive.
    async fn ttl(&mut self, label: &str, id: i64) -> (i64, i64, Vec<String>) {
        let r = self
            .c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await;
        match r {
            Ok(r) => {
                let mut keys: Vec<String> = r
                    .keys()
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).to_string())
                    .collect();
                keys.sort();
                let ttl = if r.ttl() > 0 {
                    "alive".to_string()
                } else {
                    r.ttl().to_string()
                };
                self.rec(
                    label,
                    format!(
                        "id-match {} ttl {ttl} granted {} keys {keys:?}",
                        r.id() == id,
                        r.granted_ttl()
                    ),
                );
                (r.ttl(), r.granted_ttl(), keys)
            }
            Err(e) => {
                self.rec(label, err_s(&e));
                (i64::MIN, 0, vec![])
            }
        }
    }

    /// Every key with its value, mod revision and (masked) lease.
    async fn state(&mut self, label: &str, leases: &[i64]) {
        let r = self
            .c
            .get("", Some(GetOptions::new().with_all_keys()))
            .await;
        let v = match &r {
            Ok(r) => r
                .kvs()
                .iter()
                .map(|kv| {
                    let lease = match leases.iter().position(|l| *l == kv.lease()) {
                        Some(i) => format!("L{i}"),
                        None => kv.lease().to_string(),
                    };
                    format!(
                        "{}={} m{} {lease}",
                        kv.key_str().unwrap_or("?"),
                        kv.value_str().unwrap_or("?"),
                        kv.mod_revision()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => err_s(e),
        };
        self.rec(label, v);
    }
}

async fn run_scenario<F, Fut>(kind: Kind, flags: &[&str], scenario: &F) -> (Cx, Server)
where
    F: Fn(Cx) -> Fut,
    Fut: std::future::Future<Output = Cx>,
{
    let server = start_retrying_ports(kind, flags, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let c = server.client().await.unwrap();
    let cx = Cx {
        kind,
        c,
        endpoint: server.endpoint(),
        transcript: vec![],
        failures: vec![],
    };
    let cx = tokio::time::timeout(Duration::from_secs(120), scenario(cx))
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"));
    if std::env::var_os(SHOW_ENV).is_some() {
        for (label, value) in &cx.transcript {
            println!("{kind:?} {label}: {value}");
        }
    }
    (cx, server)
}

/// Runs `scenario` against etcd (its checks must pass: they are etcd's behaviour) and, unless
/// only etcd is under test, cairn, whose checks must pass and whose transcript must equal
/// etcd's.
async fn compare<F, Fut>(flags: &[&str], scenario: F)
where
    F: Fn(Cx) -> Fut,
    Fut: std::future::Future<Output = Cx>,
{
    let etcd_only = std::env::var_os(ETCD_ONLY_ENV).is_some();
    let (etcd, _e) = run_scenario(Kind::Etcd, flags, &scenario).await;
    assert!(
        etcd.failures.is_empty(),
        "THE TEST IS WRONG: etcd fails its checks:\n{}",
        etcd.failures.join("\n")
    );
    if etcd_only {
        return;
    }
    let (cairn, server) = run_scenario(Kind::Cairn, flags, &scenario).await;
    let mut problems = cairn.failures.clone();
    for i in 0..etcd.transcript.len().max(cairn.transcript.len()) {
        let e = etcd.transcript.get(i);
        let c = cairn.transcript.get(i);
        if e != c {
            problems.push(format!("step {i}:\n  etcd:  {e:?}\n  cairn: {c:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "cairn differs from etcd:\n{}\n\ncairn log tail:\n{}",
        problems.join("\n"),
        server
            .log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Errors, client-chosen ids, header revisions of grants and revokes.
async fn grants_and_errors(mut cx: Cx) -> Cx {
    let a = cx.grant("grant 42 ttl 30", 30, 42).await;
    cx.check(a == 42, || format!("client-chosen id: got {a}"));
    cx.grant("grant 42 again", 30, 42).await;
    cx.grant("grant too large", 9_000_000_001, 43).await;
    // The maximum is checked before existence.
    cx.grant("grant 42 too large", 9_000_000_001, 42).await;
    cx.grant("grant at the maximum", 9_000_000_000, 44).await;
    cx.grant("grant ttl 0 (raised)", 0, 45).await;
    cx.grant("grant ttl -5 (raised)", -5, 46).await;
    cx.grant("grant negative id", 10, -7).await;
    let g = cx.grant("grant generated id", 10, 0).await;
    cx.check(g > 0, || format!("a generated id is positive: {g}"));
    let (ttl, granted, keys) = cx.ttl("ttl 42", 42).await;
    cx.check(
        ttl > 0 && ttl <= 30 && granted == 30 && keys.is_empty(),
        || format!("ttl of 42: {ttl} {granted} {keys:?}"),
    );
    cx.ttl("ttl of an unknown lease", 4242).await;
    cx.ttl("ttl of the negative id", -7).await;
    cx.revoke("revoke unknown", 4242).await;
    cx.put(
        "put with unknown lease",
        "k",
        "v",
        Some(PutOptions::new().with_lease(4242)),
    )
    .await;
    cx.expect_rev("nothing written", 1).await;
    cx.revoke("revoke 44 (no keys)", 44).await;
    cx.expect_rev("revoking a lease without keys leaves the revision", 1)
        .await;
    cx.revoke("revoke 44 again", 44).await;
    let leases = cx.c.leases().await.map(|r| {
        let mut ids: Vec<i64> = r
            .leases()
            .iter()
            .map(|l| l.id())
            .filter(|id| *id != g)
            .collect();
        ids.sort();
        ids
    });
    cx.rec("leases (generated id left out)", format!("{leases:?}"));
    // Keep-alive through the client stream (the client reads the first answer itself and
    // refuses a TTL of 0).
    match cx.c.lease_keep_alive(42).await {
        Ok((mut keeper, mut stream)) => {
            cx.rec("keep-alive 42", format!("keeper for {}", keeper.id()));
            let again = keeper.keep_alive().await;
            let second = stream.message().await.map(|m| m.map(|m| (m.id(), m.ttl())));
            cx.rec("second keep-alive 42", format!("{again:?} {second:?}"));
        }
        Err(e) => cx.rec("keep-alive 42", err_s(&e)),
    }
    let unknown = cx.c.lease_keep_alive(4242).await.map(|(k, _)| k.id());
    cx.rec(
        "keep-alive 4242 (client)",
        format!("{:?}", unknown.map_err(|e| err_s(&e))),
    );
    // The raw stream: every request answered in order, an unknown lease with TTL 0.
    let answers = raw_keep_alive(&cx.endpoint, &[42, 4242, 45, -7]).await;
    cx.rec("raw keep-alives 42 4242 45 -7", format!("{answers:?}"));
    cx
}

/// Sends keep-alives for `ids` on one raw LeaseKeepAlive stream; returns `(id, ttl)` answers.
async fn raw_keep_alive(endpoint: &str, ids: &[i64]) -> Result<Vec<(i64, i64)>, String> {
    use cairn_api::etcdserverpb::lease_client::LeaseClient;
    use cairn_api::etcdserverpb::LeaseKeepAliveRequest;
    let ch = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let requests: Vec<LeaseKeepAliveRequest> =
        ids.iter().map(|&id| LeaseKeepAliveRequest { id }).collect();
    let mut stream = LeaseClient::new(ch)
        .lease_keep_alive(tokio_stream::iter(requests))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut out = Vec::new();
    while out.len() < ids.len() {
        match stream.message().await {
            Ok(Some(m)) => out.push((m.id, m.ttl)),
            Ok(None) => break,
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_grants_errors_and_ids() {
    compare(&[], grants_and_errors).await;
}

/// Keys moving between leases, ignore_lease, txns with leases, deletes detaching, and a revoke
/// deleting its keys in one revision.
async fn keys_and_revisions(mut cx: Cx) -> Cx {
    let l0 = cx.grant("grant L0", 60, 100).await;
    let l1 = cx.grant("grant L1", 60, 101).await;
    let leases = [l0, l1];
    for (i, k) in ["a", "b", "c"].iter().enumerate() {
        cx.put(
            &format!("put {k} with L0"),
            k,
            &i.to_string(),
            Some(PutOptions::new().with_lease(l0)),
        )
        .await; // 2, 3, 4
    }
    cx.put("put plain", "plain", "p", None).await; // 5
                                                   // b moves to L1.
    cx.put(
        "put b with L1",
        "b",
        "moved",
        Some(PutOptions::new().with_lease(l1)),
    )
    .await; // 6
            // ignore_lease keeps c on L0.
    cx.put(
        "put c ignore_lease",
        "c",
        "kept",
        Some(PutOptions::new().with_ignore_lease()),
    )
    .await; // 7
    cx.put(
        "ignore_lease on a missing key",
        "zz",
        "v",
        Some(PutOptions::new().with_ignore_lease()),
    )
    .await;
    // A txn attaching d to L1, and a txn naming an unknown lease (nothing written).
    let t = Txn::new()
        .when(vec![Compare::lease("a", CompareOp::Equal, l0)])
        .and_then(vec![TxnOp::put(
            "d",
            "txn",
            Some(PutOptions::new().with_lease(l1)),
        )]);
    let r = cx.c.txn(t).await;
    cx.rec(
        "txn put d with L1",
        match &r {
            Ok(r) => format!(
                "succeeded {} rev {}",
                r.succeeded(),
                r.header().map_or(-1, |h| h.revision())
            ),
            Err(e) => err_s(e),
        },
    ); // 8
    let t = Txn::new().and_then(vec![TxnOp::put(
        "e",
        "x",
        Some(PutOptions::new().with_lease(4242)),
    )]);
    let r = cx.c.txn(t).await;
    cx.rec(
        "txn with an unknown lease",
        match &r {
            Ok(r) => format!("succeeded {}", r.succeeded()),
            Err(e) => err_s(e),
        },
    );
    let (_, _, k0) = cx.ttl("L0 keys", l0).await;
    cx.check(k0 == ["a", "c"], || format!("L0 keys {k0:?}"));
    let (_, _, k1) = cx.ttl("L1 keys", l1).await;
    cx.check(k1 == ["b", "d"], || format!("L1 keys {k1:?}"));
    // A delete detaches a.
    let r = cx.c.delete("a", None).await.map(|r| r.deleted());
    cx.rec("delete a", format!("{:?}", r.map_err(|e| err_s(&e)))); // 9
    let (_, _, k0) = cx.ttl("L0 keys after delete", l0).await;
    cx.check(k0 == ["c"], || format!("L0 keys {k0:?}"));
    cx.state("before revoking", &leases).await;
    cx.revoke("revoke L1 (b, d)", l1).await; // 10
    cx.expect_rev("revoke is one revision", 10).await;
    cx.state("after revoking L1", &leases).await;
    // Re-attach the plain key to L0, then revoke L0: c and plain go, in one revision.
    cx.put(
        "put plain with L0",
        "plain",
        "p2",
        Some(PutOptions::new().with_lease(l0)),
    )
    .await; // 11
    cx.revoke("revoke L0 (c, plain)", l0).await; // 12
    cx.state("after revoking L0", &leases).await;
    let r =
        cx.c.get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(11)),
        )
        .await
        .map(|r| r.kvs().len());
    cx.rec(
        "keys at revision 11",
        format!("{:?}", r.map_err(|e| err_s(&e))),
    );
    cx.ttl("L0 after revoke", l0).await;
    cx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_move_between_leases_and_revoke_in_one_revision() {
    compare(&[], keys_and_revisions).await;
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

/// Keys under leases of 1, 2 and 3 s: each is present until its TTL has passed (counted from
/// before the grant was sent) and gone within TTL + 1 s of the grant's answer. TimeToLive then
/// answers -1.
async fn expiry(kind: Kind) -> anyhow::Result<()> {
    let server = start_retrying_ports(kind, FAST, &[])?;
    let mut c = server.client().await?;
    let mut leases = Vec::new();
    for ttl in [1i64, 2, 3] {
        let sent = Instant::now();
        let id = c.lease_grant(ttl, None).await?.id();
        let answered = Instant::now();
        let key = format!("ttl{ttl}");
        c.put(key.as_str(), "v", Some(PutOptions::new().with_lease(id)))
            .await?;
        leases.push((ttl, id, key, sent, answered, None::<Instant>));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while leases.iter().any(|l| l.5.is_none()) && Instant::now() < deadline {
        for (_, _, key, _, _, gone) in leases.iter_mut().filter(|l| l.5.is_none()) {
            if c.get(key.as_str(), None).await?.kvs().is_empty() {
                *gone = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (ttl, id, key, sent, answered, gone) in &leases {
        let gone = gone.ok_or_else(|| anyhow::anyhow!("{kind:?}: {key} never expired"))?;
        let ttl_d = Duration::from_secs(*ttl as u64);
        anyhow::ensure!(
            gone.duration_since(*sent) >= ttl_d,
            "{kind:?}: {key} gone {:?} after its grant was sent, before its TTL",
            gone.duration_since(*sent)
        );
        anyhow::ensure!(
            gone.duration_since(*answered) <= ttl_d + Duration::from_secs(1),
            "{kind:?}: {key} still there {:?} after its grant",
            gone.duration_since(*answered)
        );
        let t = c.lease_time_to_live(*id, None).await?;
        anyhow::ensure!(
            t.ttl() == -1,
            "{kind:?}: TimeToLive of expired lease: {}",
            t.ttl()
        );
        println!(
            "{kind:?}: ttl {ttl}s key gone {:?} after the grant answer",
            gone.duration_since(*answered)
        );
    }
    anyhow::ensure!(
        c.leases().await?.leases().is_empty(),
        "{kind:?}: expired leases still listed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_with_their_lease_never_early() {
    let runs = kinds_under_test().into_iter().map(expiry);
    for r in futures_join(runs).await {
        r.unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// Awaits every future concurrently.
async fn futures_join<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

/// The remaining TTL of `id` as TimeToLive reports it, and its keys.
async fn remaining(server: &Server, id: i64) -> anyhow::Result<(i64, Vec<Vec<u8>>)> {
    let mut c = server.client().await?;
    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    Ok((t.ttl(), t.keys().to_vec()))
}

/// Polls until lease `id`'s remaining TTL is at most `at_most`.
async fn wait_remaining(server: &Server, id: i64, at_most: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (r, _) = remaining(server, id).await?;
        if r <= at_most {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "remaining TTL stuck at {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a member is stopped before it restarts.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Term,
    Kill,
}

fn stop_and_restart(server: &mut Server, how: Stop) -> anyhow::Result<()> {
    match how {
        Stop::Term => {
            server.terminate()?;
        }
        Stop::Kill => server.kill(),
    }
    server.restart()
}

/// A 30 s lease, 6 s into its life, survives a restart with its key; the restarted member
/// restarts it from its full TTL (plus the 0.5 s election timeout), as etcd documents for a
/// new leader without checkpoints (a 30 s lease is never checkpointed anyway).
async fn restart_rule(kind: Kind, how: Stop) -> anyhow::Result<()> {
    let mut server = start_retrying_ports(kind, FAST, &[])?;
    let mut c = server.client().await?;
    let id = c.lease_grant(30, None).await?.id();
    c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
        .await?;
    wait_remaining(&server, id, 24).await?;
    drop(c);
    stop_and_restart(&mut server, how)?;
    let (r, keys) = remaining(&server, id).await?;
    anyhow::ensure!(
        (26..=30).contains(&r),
        "{kind:?} {how:?}: remaining TTL after restart {r}, want the full 30 s again"
    );
    anyhow::ensure!(keys == [b"leased".to_vec()], "{kind:?}: keys {keys:?}");
    let mut c = server.client().await?;
    anyhow::ensure!(
        c.get("leased", None)
            .await?
            .kvs()
            .first()
            .map(|kv| kv.lease())
            == Some(id),
        "{kind:?}: the key lost its lease"
    );
    // It still expires (and is revoked through raft) after the restart.
    let ka = c.lease_keep_alive(id).await;
    anyhow::ensure!(
        ka.is_ok(),
        "{kind:?}: keep-alive after restart: {:?}",
        ka.err()
    );
    c.lease_revoke(id).await?;
    anyhow::ensure!(c.get("leased", None).await?.kvs().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restarts_leases_from_their_full_ttl() {
    let mut runs = Vec::new();
    for kind in kinds_under_test() {
        for how in [Stop::Term, Stop::Kill] {
            runs.push(restart_rule(kind, how));
        }
    }
    for r in futures_join(runs).await {
        r.unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// cairn with checkpoints every second: a 30 s lease continues after a restart from its last
/// checkpoint; a keep-alive clears the checkpoint so it restarts from its full TTL again. With
/// `--experimental-enable-lease-checkpoint=false` it restarts from its full TTL, as etcd does
/// by default.
async fn checkpoint_rule(how: Stop, checkpoints: bool) -> anyhow::Result<()> {
    let mut flags = FAST.to_vec();
    flags.push("--lease-checkpoint-interval=1s");
    if !checkpoints {
        flags.push("--experimental-enable-lease-checkpoint=false");
    }
    let mut server = start_retrying_ports(Kind::Cairn, &flags, &[])?;
    let mut c = server.client().await?;
    let id = c.lease_grant(30, None).await?.id();
    wait_remaining(&server, id, 22).await?;
    drop(c);
    stop_and_restart(&mut server, how)?;
    let (r, _) = remaining(&server, id).await?;
    if checkpoints {
        anyhow::ensure!(
            (16..=24).contains(&r),
            "{how:?}: remaining TTL after restart {r}, want the last checkpoint (about 22)"
        );
        // A keep-alive restarts the lease from its full TTL and clears the checkpoint.
        let mut c = server.client().await?;
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
        keeper.keep_alive().await?;
        let ttl = stream.message().await?.map(|m| m.ttl());
        anyhow::ensure!(ttl == Some(30), "keep-alive answered {ttl:?}");
        drop((keeper, stream, c));
        stop_and_restart(&mut server, how)?;
        let (r, _) = remaining(&server, id).await?;
        anyhow::ensure!(
            (26..=30).contains(&r),
            "{how:?}: remaining TTL after keep-alive and restart {r}, want about 30"
        );
    } else {
        anyhow::ensure!(
            (26..=30).contains(&r),
            "{how:?}: remaining TTL after restart {r} without checkpoints, want 30"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_checkpoints_keep_remaining_ttl_across_restarts() {
    if std::env::var_os(ETCD_ONLY_ENV).is_some() {
        return;
    }
    let runs = vec![
        checkpoint_rule(Stop::Kill, true),
        checkpoint_rule(Stop::Term, true),
        checkpoint_rule(Stop::Kill, false),
    ];
    for r in futures_join(runs).await {
        r.unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// Persisting checkpoints without checkpointing is refused, by etcd and cairn alike.
#[test]
fn cairn_refuses_checkpoint_persist_without_checkpoints() {
    if std::env::var_os(ETCD_ONLY_ENV).is_some() {
        return;
    }
    let err = start_retrying_ports(
        Kind::Cairn,
        &[
            "--experimental-enable-lease-checkpoint=false",
            "--experimental-enable-lease-checkpoint-persist",
        ],
        &[],
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        err.contains("requires experimental-enable-lease-checkpoint"),
        "{err}"
    );
    // The same combination is refused by etcd too.
    let err = start_retrying_ports(
        Kind::Etcd,
        &[
            "--experimental-enable-lease-checkpoint=false",
            "--experimental-enable-lease-checkpoint-persist",
        ],
        &[],
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        err.contains("requires experimental-enable-lease-checkpoint"),
        "{err}"
    );
}
