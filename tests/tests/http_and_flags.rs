//! HTTP endpoints on the client port (`/health`, `/version`, `/metrics`), `Unimplemented`
//! for RPCs not built yet, and the server's command line: refused unimplemented flags,
//! `ETCD_*` environment variables, `--config-file`, SIGTERM and restart, `--version`.
//!
//! Behaviour both servers share is checked against both (so it is known to be etcd's); what
//! only cairn promises (a 3.5 version, exit 0 on SIGTERM, refusing flags it does not
//! implement) is checked against cairn only. Set `CAIRN_E2E_ETCD_ONLY=1` to run only the
//! etcd half.

use cairn_tests::{
    cairn_bin, free_port, http_get_decoded, kinds_under_test, ok_stdout, start_retrying_ports,
    Kind, Server,
};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `major.minor.patch` at the start of `s` (a suffix such as `-cairn` is ignored).
fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch_text = it.next()?;
    let digits: String = patch_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor, digits.parse().ok()?))
}

fn txn_of_puts(n: usize) -> String {
    let puts: String = (0..n).map(|i| format!("put t{i} {i}\n")).collect();
    format!("\n{puts}\n\n")
}

/// Checks that `server` enforces max-txn-ops 2 and max-request-bytes 1000, and that the
/// refused requests wrote nothing.
fn assert_limits_2_ops_1000_bytes(server: &Server) {
    let out = server.etcdctl_stdin(&["txn"], &txn_of_puts(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.ends_with("Error: etcdserver: too many operations in txn request\n"),
        "{:?}: a 3-op txn must be refused with max-txn-ops 2: {err}",
        server.kind
    );
    let out = server.etcdctl(&["put", "big", &"x".repeat(2000)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.ends_with("Error: etcdserver: request is too large\n"),
        "{:?}: a 2000-byte put must be refused with max-request-bytes 1000: {err}",
        server.kind
    );
    assert_eq!(
        ok_stdout(&server.etcdctl(&["get", "", "--from-key", "--keys-only"])),
        "",
        "{:?}: refused requests wrote something",
        server.kind
    );
    assert_eq!(
        ok_stdout(&server.etcdctl_stdin(&["txn"], &txn_of_puts(2))),
        "SUCCESS\n\nOK\n\nOK\n",
        "{:?}: a 2-op txn is within the limit",
        server.kind
    );
}

#[test]
fn health_version_and_metrics() {
    for kind in kinds_under_test() {
        let server = start_retrying_ports(kind, &[], &[]).unwrap();
        let addr = &server.client_addr;

        let (code, _, body) = http_get_decoded(addr, "/health").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{kind:?}: /health is not JSON ({e}): {body:?}"));
        assert_eq!(code, 200, "{kind:?}: /health status; body {body:?}");
        assert_eq!(v["health"], "true", "{kind:?}: /health body {body:?}");
        assert!(body.contains(r#""health":"true""#), "{kind:?}: {body:?}");

        let (code, _, body) = http_get_decoded(addr, "/version").unwrap();
        assert_eq!(code, 200, "{kind:?}: /version status; body {body:?}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{kind:?}: /version is not JSON ({e}): {body:?}"));
        let server_version = v["etcdserver"].as_str().and_then(parse_version);
        let cluster_version = v["etcdcluster"].as_str().and_then(parse_version);
        assert!(
            server_version.is_some() && cluster_version.is_some(),
            "{kind:?}: /version needs etcdserver and etcdcluster versions: {body:?}"
        );
        match kind {
            Kind::Etcd => assert_eq!(server_version, Some((3, 4, 23)), "{body}"),
            Kind::Cairn => assert!(
                server_version >= Some((3, 5, 13)) && server_version < Some((4, 0, 0)),
                "cairn's /version must report an etcd version ≥ 3.5.13: {body:?}"
            ),
        }

        let (code, _, body) = http_get_decoded(addr, "/metrics").unwrap();
        assert_eq!(code, 200, "{kind:?}: /metrics status");
        assert!(
            body.lines().any(|l| l == "etcd_server_has_leader 1"),
            "{kind:?}: /metrics lacks `etcd_server_has_leader 1`:\n{}",
            body.lines()
                .filter(|l| l.contains("has_leader"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            body.contains("# TYPE etcd_server_has_leader gauge"),
            "{kind:?}: etcd_server_has_leader must be a gauge"
        );

        let (code, _, _) = http_get_decoded(addr, "/no-such-path").unwrap();
        assert_eq!(code, 404, "{kind:?}: an unknown path");
    }
}

/// An RPC cairn has not built yet (Auth) must answer `Unimplemented`, never a fake success.
/// Update this test to the next unbuilt RPC when these are built.
#[test]
fn unbuilt_rpcs_answer_unimplemented() {
    if std::env::var_os(cairn_tests::ETCD_ONLY_ENV).is_some() {
        return;
    }
    let server = start_retrying_ports(Kind::Cairn, &[], &[]).unwrap();
    let out = server.etcdctl(&["user", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("code = Unimplemented"),
        "etcdctl user list must fail with Unimplemented: exit {}, stdout {:?}, stderr {err:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = tokio::time::timeout(Duration::from_secs(10), server.client())
            .await
            .expect("connecting in time")
            .expect("connecting");
        let code = |e: etcd_client::Error| match e {
            etcd_client::Error::GRpcStatus(s) => format!("{:?}", s.code()),
            other => format!("not a gRPC status: {other}"),
        };
        let users = tokio::time::timeout(Duration::from_secs(10), client.user_list())
            .await
            .expect("an answer in time");
        assert_eq!(
            users.map(|r| r.users().len()).map_err(code),
            Err("Unimplemented".to_string()),
            "UserList"
        );
        // The KV API on the same connection still works.
        client.put("k", "v", None).await.expect("put");
    });
}

/// Runs `cairn` with `args` (plus a temp data dir and free ports) and expects it to exit
/// on its own; returns its status and everything it printed.
fn cairn_until_exit(args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(cairn_bin())
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cairn {args:?} still running after 20s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn unimplemented_and_unknown_flags_are_refused() {
    if std::env::var_os(cairn_tests::ETCD_ONLY_ENV).is_some() {
        return;
    }
    for (flag, name) in [
        (
            "--auto-compaction-retention=1h",
            "auto-compaction-retention",
        ),
        (
            "--listen-metrics-urls=http://127.0.0.1:1",
            "listen-metrics-urls",
        ),
        ("--enable-v2=true", "enable-v2"),
        ("--quota-backend-bytes=1000", "quota-backend-bytes"),
        ("--no-such-flag", "no-such-flag"),
    ] {
        let (status, out) = cairn_until_exit(&[flag]);
        assert!(
            !status.success() && status.code().is_some(),
            "cairn {flag} must exit non-zero, got {status}:\n{out}"
        );
        assert!(
            out.contains(name),
            "cairn {flag} must name the flag ({name}) when refusing it:\n{out}"
        );
    }
    // The same flags set to etcd's defaults are accepted.
    let server = start_retrying_ports(
        Kind::Cairn,
        &[
            "--auto-compaction-retention=0",
            "--listen-metrics-urls=",
            "--enable-v2=false",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(ok_stdout(&server.etcdctl(&["put", "k", "v"])), "OK\n");
}

#[test]
fn environment_variables_are_honoured() {
    for kind in kinds_under_test() {
        let server = start_retrying_ports(
            kind,
            &[],
            &[
                ("ETCD_MAX_TXN_OPS", "2"),
                ("ETCD_MAX_REQUEST_BYTES", "1000"),
            ],
        )
        .unwrap();
        assert_limits_2_ops_1000_bytes(&server);
        let members = ok_stdout(&server.etcdctl(&["member", "list"]));
        assert!(
            members.contains(", started, e2e, "),
            "{kind:?}: the name given: {members}"
        );
    }
}

/// etcd refuses to start when a variable and a flag set the same thing (here `ETCD_NAME`
/// and the harness's `--name=e2e`) rather than silently picking one.
#[test]
fn variable_conflicting_with_a_flag_is_refused() {
    for kind in kinds_under_test() {
        match Server::start_with_env(kind, &[], &[("ETCD_NAME", "from-env")]) {
            Ok(server) => panic!(
                "{kind:?} started although ETCD_NAME conflicts with --name:\n{}",
                server.log()
            ),
            Err(e) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains("exited during start") && e.contains("ETCD_NAME"),
                    "{kind:?} must exit naming ETCD_NAME: {e}"
                );
            }
        }
    }
}

#[test]
fn config_file_is_honoured() {
    for kind in kinds_under_test() {
        // The file wins over the command line: etcd ignores other flags with --config-file.
        let server = Server::start_with_config_file(
            kind,
            "max-txn-ops: 2\nmax-request-bytes: 1000",
            &["--max-txn-ops=100", "--max-request-bytes=100000"],
        )
        .unwrap();
        assert_limits_2_ops_1000_bytes(&server);
        let members = ok_stdout(&server.etcdctl(&["member", "list"]));
        assert!(
            members.contains(", started, e2e, "),
            "{kind:?}: the member is named by the file: {members}"
        );
    }
}

#[test]
fn sigterm_and_restart_keep_the_data() {
    for kind in kinds_under_test() {
        let mut server = start_retrying_ports(kind, &[], &[]).unwrap();
        for i in 0..5 {
            assert_eq!(
                ok_stdout(&server.etcdctl(&["put", &format!("k{i}"), &format!("v{i}")])),
                "OK\n"
            );
        }
        assert_eq!(ok_stdout(&server.etcdctl(&["put", "k0", "again"])), "OK\n"); // 7
        assert_eq!(ok_stdout(&server.etcdctl(&["del", "k4"])), "1\n"); // 8
        assert_eq!(
            ok_stdout(&server.etcdctl(&["compaction", "3"])),
            "compacted revision 3\n"
        );
        let before = ok_stdout(&server.etcdctl(&["get", "", "--from-key"]));

        let status = server.terminate().unwrap();
        if kind == Kind::Cairn {
            assert!(
                status.success(),
                "cairn must exit 0 on SIGTERM, got {status}:\n{}",
                server.log()
            );
        }
        server.restart().unwrap();
        assert_eq!(
            ok_stdout(&server.etcdctl(&["get", "", "--from-key"])),
            before,
            "{kind:?}: the data after a restart"
        );
        assert_eq!(before, "k0\nagain\nk1\nv1\nk2\nv2\nk3\nv3\n");
        let v: serde_json::Value =
            serde_json::from_str(&ok_stdout(&server.etcdctl(&["get", "k0", "-w", "json"])))
                .unwrap();
        assert_eq!(
            v["header"]["revision"], 8,
            "{kind:?}: the revision survives"
        );
        assert_eq!(v["kvs"][0]["version"], 2, "{kind:?}: versions survive");
        assert_eq!(
            ok_stdout(&server.etcdctl(&["get", "k4", "--rev=7", "--print-value-only"])),
            "v4\n",
            "{kind:?}: history survives"
        );
        let out = server.etcdctl(&["get", "k0", "--rev=2"]);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .ends_with("Error: etcdserver: mvcc: required revision has been compacted\n"),
            "{kind:?}: the compaction survives: {out:?}"
        );
        assert_eq!(ok_stdout(&server.etcdctl(&["put", "k9", "v9"])), "OK\n");
        let v: serde_json::Value =
            serde_json::from_str(&ok_stdout(&server.etcdctl(&["get", "k9", "-w", "json"])))
                .unwrap();
        assert_eq!(
            v["kvs"][0]["mod_revision"], 9,
            "{kind:?}: revisions continue"
        );
    }
}

#[test]
fn version_flag_prints_an_etcd_version() {
    for kind in kinds_under_test() {
        let bin = match kind {
            Kind::Cairn => cairn_bin(),
            Kind::Etcd => "etcd".into(),
        };
        let out = Command::new(bin).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind:?} --version: {out:?}");
        let first = text.lines().next().unwrap_or("");
        let version = first.strip_prefix("etcd Version: ").and_then(parse_version);
        assert!(
            version.is_some(),
            "{kind:?} --version must start with an `etcd Version: x.y.z` line: {text:?}"
        );
        if kind == Kind::Cairn {
            assert!(
                version >= Some((3, 5, 13)),
                "cairn --version: {text:?} (must be ≥ 3.5.13)"
            );
        }
    }
}
