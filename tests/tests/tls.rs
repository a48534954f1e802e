//! TLS on the client and peer ports, end to end: certificates from test CAs (rcgen), the real
//! `etcdctl`, the `etcd-client` crate, raw rustls clients for exact cipher suites and
//! versions, and clusters with peer TLS from files and with `--peer-auto-tls`.
//!
//! Each scenario runs against real etcd first (so every assertion is etcd's behaviour; a
//! failure there means the test is wrong), then against cairn; `CAIRN_E2E_ETCD_ONLY=1` runs
//! only etcd. etcd 3.4 has no `--tls-min-version` / `--tls-max-version`: those checks run
//! against cairn only. Where cairn deliberately differs (a plaintext HTTP request gets Go's
//! `400 Client sent an HTTP request to an HTTPS server.` instead of etcd 3.4's silent close)
//! the difference is asserted explicitly.

use anyhow::{anyhow, bail, ensure, Context, Result};
use cairn_tests::cluster::{parse_json, Cluster};
use cairn_tests::tls::{flag, Ca, CertFiles};
use cairn_tests::{kinds_under_test, Kind, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// etcdctl flags that keep a request that cannot succeed short.
const SHORT: [&str; 2] = ["--dial-timeout=1s", "--command-timeout=2s"];

/// Runs `body` for each kind under test (etcd first); a failure names the test and kind.
fn each_kind(test: &str, body: impl Fn(Kind) -> Result<()>) {
    for kind in kinds_under_test() {
        let t = Instant::now();
        let r = body(kind);
        println!("{test} [{kind:?}]: {:.1?}", t.elapsed());
        if let Err(e) = r {
            let hint = match kind {
                Kind::Etcd => "  (real etcd fails this: THE TEST IS WRONG)",
                Kind::Cairn => "",
            };
            panic!("{test} [{kind:?}]{hint}: {e:#}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: &Output, what: &str) -> Result<String> {
    ensure!(o.status.success(), "{what} failed: {}", show(o));
    Ok(String::from_utf8_lossy(&o.stdout).to_string())
}

fn failed(o: &Output, what: &str) -> Result<()> {
    ensure!(
        !o.status.success(),
        "{what} unexpectedly succeeded: {}",
        show(o)
    );
    Ok(())
}

/// A CA, a second unrelated CA, and certificates for servers and clients on 127.0.0.1.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    other: Ca,
    server: CertFiles,
    client: CertFiles,
    revoked: CertFiles,
    crl: PathBuf,
}

impl Pki {
    fn new() -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-tls-pki-")
            .tempdir()?;
        let ca = Ca::new(dir.path(), "ca")?;
        let other = Ca::new(dir.path(), "other-ca")?;
        let server = ca.issue("server", "server", &["127.0.0.1", "localhost"])?;
        let client = ca.issue("client", "client", &["127.0.0.1"])?;
        let revoked = ca.issue("revoked", "revoked", &["127.0.0.1"])?;
        let crl = ca.crl("crl", &[&revoked])?;
        Ok(Pki {
            dir,
            ca,
            other,
            server,
            client,
            revoked,
            crl,
        })
    }

    /// `--cert-file` and `--key-file` of the server certificate.
    fn server_flags(&self) -> Vec<String> {
        vec![
            flag("cert-file", &self.server.cert),
            flag("key-file", &self.server.key),
        ]
    }

    /// etcdctl's `--cacert` (and `--cert`/`--key` for `client`).
    fn ctl(&self, ca: &Ca, client: Option<&CertFiles>) -> Vec<String> {
        let mut out = vec![flag("cacert", &ca.cert)];
        if let Some(c) = client {
            out.push(flag("cert", &c.cert));
            out.push(flag("key", &c.key));
        }
        out
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A rustls client trusting `ca`, presenting `identity`, limited to `versions` and (if given)
/// `suites`, offering `alpn`.
fn client_config(
    ca: &Path,
    identity: Option<&CertFiles>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(s) = suites {
        provider.cipher_suites = s;
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(c) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(&c.key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects and completes a TLS handshake to `addr`; returns the negotiated version.
async fn handshake(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<rustls::ProtocolVersion, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    stream
        .get_ref()
        .1
        .protocol_version()
        .ok_or_else(|| "no version negotiated".into())
}

/// An HTTP/1.1 GET over TLS; returns (status, body).
async fn https_get(
    addr: &str,
    path: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .context("reading the response")?
        .or_else(|e| {
            // Some servers end TLS without close_notify; what was read counts.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(0)
            } else {
                Err(e)
            }
        })?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response: {text:?}"))?;
    Ok((
        code,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

#[test]
fn mutual_tls_on_the_client_port() {
    let pki = Pki::new().unwrap();
    each_kind("mutual_tls_on_the_client_port", |kind| {
        let mut flags = pki.server_flags();
        flags.push(flag("trusted-ca-file", &pki.ca.cert));
        flags.push("--client-cert-auth".into());
        flags.push(flag("client-crl-file", &pki.crl));
        let s = Server::start_tls(kind, &strs(&flags))?;
        let good = pki.ctl(&pki.ca, Some(&pki.client));
        let good = strs(&good);
        ok(&s.etcdctl_tls(&good, &["put", "k", "v"]), "put")?;
        let out = ok(
            &s.etcdctl_tls(&good, &["get", "k", "--print-value-only"]),
            "get",
        )?;
        ensure!(out.trim() == "v", "get printed {out:?}");
        ok(
            &s.etcdctl_tls(&good, &["endpoint", "health"]),
            "endpoint health",
        )?;

        let no_cert = pki.ctl(&pki.ca, None);
        let args: Vec<&str> = strs(&no_cert).into_iter().chain(SHORT).collect();
        failed(
            &s.etcdctl_tls(&args, &["get", "k"]),
            "get without a client certificate",
        )?;
        let revoked = pki.ctl(&pki.ca, Some(&pki.revoked));
        let args: Vec<&str> = strs(&revoked).into_iter().chain(SHORT).collect();
        failed(
            &s.etcdctl_tls(&args, &["get", "k"]),
            "get with a revoked certificate",
        )?;
        let foreign = pki
            .other
            .issue(&format!("foreign-{kind:?}"), "foreign", &["127.0.0.1"])?;
        let foreign = pki.ctl(&pki.ca, Some(&foreign));
        let args: Vec<&str> = strs(&foreign).into_iter().chain(SHORT).collect();
        failed(
            &s.etcdctl_tls(&args, &["get", "k"]),
            "get with another CA's certificate",
        )?;
        ensure!(
            s.log().contains("rejected connection"),
            "no `rejected connection` in the log:\n{}",
            s.log()
        );

        runtime().block_on(async {
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(
                    &pki.ca.cert,
                )?))
                .identity(etcd_client::Identity::from_pem(
                    std::fs::read(&pki.client.cert)?,
                    std::fs::read(&pki.client.key)?,
                ));
            let options = etcd_client::ConnectOptions::new()
                .with_tls(tls)
                .with_timeout(Duration::from_secs(5));
            let mut c = etcd_client::Client::connect([s.tls_endpoint()], Some(options)).await?;
            let mut watch = c.watch("w", None).await?;
            let created = watch.message().await?.context("watch created")?;
            ensure!(created.created(), "first watch response: {created:?}");
            c.put("w", "1", None).await?;
            let got = c.get("w", None).await?;
            ensure!(got.kvs()[0].value() == b"1", "get: {got:?}");
            let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
                .await
                .context("waiting for the watch event")??
                .context("watch closed")?;
            ensure!(
                event.events().len() == 1
                    && event.events()[0].kv().map(|kv| kv.value()) == Some(b"1".as_slice()),
                "watch event: {event:?}"
            );

            let https = client_config(
                &pki.ca.cert,
                Some(&pki.client),
                rustls::DEFAULT_VERSIONS,
                None,
                &[b"http/1.1"],
            )?;
            let addr = s.tls_addr.clone().expect("a TLS listener");
            let (code, body) = https_get(&addr, "/health", https.clone()).await?;
            ensure!(
                code == 200 && body.contains("\"health\":\"true\""),
                "/health: {code} {body}"
            );
            let (code, body) = https_get(&addr, "/metrics", https).await?;
            ensure!(
                code == 200 && body.contains("etcd_server_has_leader"),
                "/metrics: {code}"
            );
            Ok(())
        })
    });
}

#[test]
fn plaintext_clients_on_a_tls_port_fail_fast() {
    let pki = Pki::new().unwrap();
    each_kind("plaintext_clients_on_a_tls_port_fail_fast", |kind| {
        let s = Server::start_tls(kind, &strs(&pki.server_flags()))?;
        let addr = s.tls_addr.clone().expect("a TLS listener");

        let t = Instant::now();
        let args: Vec<&str> = SHORT.into_iter().chain(["get", "k"]).collect();
        let out = cairn_tests::etcdctl(&addr, &args, None);
        failed(&out, "plaintext etcdctl on the TLS port")?;
        ensure!(
            t.elapsed() < Duration::from_secs(8),
            "took {:?}",
            t.elapsed()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            err.lines().last() == Some("Error: context deadline exceeded"),
            "{}",
            show(&out)
        );

        // A plaintext HTTP/1 request: cairn answers as Go's net/http would; etcd 3.4's own
        // TLS listener closes without a word. Neither hangs.
        let t = Instant::now();
        let raw = cairn_tests::http_get(&addr, "/health");
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        match kind {
            Kind::Cairn => {
                let (code, body) = raw?;
                ensure!(
                    code == 400 && body == "Client sent an HTTP request to an HTTPS server.\n",
                    "{code} {body:?}"
                );
            }
            Kind::Etcd => ensure!(raw.is_err(), "etcd answered plaintext: {raw:?}"),
        }

        // A plaintext gRPC client fails at connect.
        let t = Instant::now();
        let connected = runtime().block_on(async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5));
            let channel = endpoint.connect().await?;
            let mut kv = cairn_api::etcdserverpb::kv_client::KvClient::new(channel);
            kv.range(cairn_api::etcdserverpb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await?;
            anyhow::Ok(())
        });
        ensure!(
            connected.is_err(),
            "plaintext gRPC succeeded on the TLS port"
        );
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        ensure!(
            s.log().contains("rejected connection"),
            "no `rejected connection` in the log"
        );
        Ok(())
    });
}

#[test]
fn cipher_suites_and_versions() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = Pki::new().unwrap();
    let tls12 = [&rustls::version::TLS12];
    each_kind("cipher_suites_and_versions", |kind| {
        let mut flags = pki.server_flags();
        // rcgen's keys are ECDSA P-256.
        flags.push("--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into());
        let s = Server::start_tls(kind, &strs(&flags))?;
        let addr = s.tls_addr.clone().expect("a TLS listener");
        runtime().block_on(async {
            let same = client_config(
                &pki.ca.cert,
                None,
                &tls12,
                Some(vec![cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
                &[b"h2"],
            )?;
            let v = handshake(&addr, same).await.map_err(|e| anyhow!(e))?;
            ensure!(v == rustls::ProtocolVersion::TLSv1_2, "negotiated {v:?}");
            let other = client_config(
                &pki.ca.cert,
                None,
                &tls12,
                Some(vec![cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]),
                &[b"h2"],
            )?;
            match handshake(&addr, other).await {
                Ok(v) => bail!("a suite outside --cipher-suites was accepted ({v:?})"),
                Err(e) => ensure!(e.contains("HandshakeFailure"), "{e}"),
            }
            anyhow::Ok(())
        })?;
        let ctl = pki.ctl(&pki.ca, None);
        ok(
            &s.etcdctl_tls(&strs(&ctl), &["put", "k", "v"]),
            "etcdctl put",
        )?;

        // Unknown names refuse the start with etcd's message.
        let mut bad = pki.server_flags();
        bad.push("--cipher-suites=TLS_NOPE".into());
        let (status, log) = Server::start_tls_expecting_exit(kind, &strs(&bad))?;
        // etcd 3.4 logs plain text (capnslog), cairn JSON lines.
        ensure!(
            !status.success()
                && (log.contains(r#"unexpected TLS cipher suite "TLS_NOPE""#)
                    || log.contains(r#"unexpected TLS cipher suite \"TLS_NOPE\""#)),
            "{status}: {log}"
        );
        Ok(())
    });

    if !kinds_under_test().contains(&Kind::Cairn) {
        return;
    }
    // cairn only (etcd 3.4 has neither the version flags nor unsupported Go suites).
    let mut flags = pki.server_flags();
    flags.push("--tls-max-version=TLS1.2".into());
    let s = Server::start_tls(Kind::Cairn, &strs(&flags)).unwrap();
    let addr = s.tls_addr.clone().unwrap();
    runtime()
        .block_on(async {
            let any = client_config(&pki.ca.cert, None, rustls::ALL_VERSIONS, None, &[b"h2"])?;
            let v = handshake(&addr, any).await.map_err(|e| anyhow!(e))?;
            ensure!(v == rustls::ProtocolVersion::TLSv1_2, "negotiated {v:?}");
            let only13 = client_config(
                &pki.ca.cert,
                None,
                &[&rustls::version::TLS13],
                None,
                &[b"h2"],
            )?;
            match handshake(&addr, only13).await {
                Ok(v) => bail!("TLS 1.3 accepted past --tls-max-version=TLS1.2 ({v:?})"),
                Err(e) => ensure!(e.contains("ProtocolVersion"), "{e}"),
            }
            anyhow::Ok(())
        })
        .unwrap();
    let mut flags = pki.server_flags();
    flags.push("--tls-min-version=TLS1.3".into());
    let s = Server::start_tls(Kind::Cairn, &strs(&flags)).unwrap();
    let addr = s.tls_addr.clone().unwrap();
    runtime()
        .block_on(async {
            let only12 = client_config(&pki.ca.cert, None, &tls12, None, &[b"h2"])?;
            ensure!(handshake(&addr, only12).await.is_err(), "TLS 1.2 accepted");
            anyhow::Ok(())
        })
        .unwrap();
    let ctl = pki.ctl(&pki.ca, None);
    ok(
        &s.etcdctl_tls(&strs(&ctl), &["put", "k", "v"]),
        "etcdctl put over TLS 1.3",
    )
    .unwrap();
    for (extra, want) in [
        (
            "--cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA",
            r#"TLS cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported by cairn"#,
        ),
        (
            "--tls-max-version=TLS1.1",
            r#"unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"#,
        ),
    ] {
        let mut bad = pki.server_flags();
        bad.push(extra.into());
        let (status, log) = Server::start_tls_expecting_exit(Kind::Cairn, &strs(&bad)).unwrap();
        assert!(
            !status.success() && log.contains(want),
            "{extra}: {status}: {log}"
        );
    }
}

#[test]
fn missing_or_unusable_files_refuse_to_start() {
    let pki = Pki::new().unwrap();
    let missing = pki.dir.path().join("missing.pem");
    each_kind("missing_or_unusable_files_refuse_to_start", |kind| {
        let flags = [
            flag("cert-file", &missing),
            flag("key-file", &pki.server.key),
        ];
        let (status, log) = Server::start_tls_expecting_exit(kind, &strs(&flags))?;
        ensure!(!status.success(), "exit {status}");
        ensure!(
            log.contains(&missing.display().to_string()),
            "the log does not name {}:\n{log}",
            missing.display()
        );
        Ok(())
    });
    if !kinds_under_test().contains(&Kind::Cairn) {
        return;
    }
    let junk = pki.dir.path().join("junk-key.pem");
    std::fs::write(&junk, "not a key").unwrap();
    for (flags, want) in [
        (
            vec![flag("cert-file", &pki.server.cert), flag("key-file", &junk)],
            format!("--key-file {}: no PEM private key found", junk.display()),
        ),
        (
            vec![
                flag("cert-file", &pki.server.cert),
                flag("key-file", &pki.client.key),
            ],
            format!(
                "--key-file {}: cannot be used with --cert-file",
                pki.client.key.display()
            ),
        ),
        (
            vec![
                flag("cert-file", &pki.server.cert),
                flag("key-file", &pki.server.key),
                flag("trusted-ca-file", &missing),
            ],
            format!("--trusted-ca-file {}: cannot read", missing.display()),
        ),
        (
            vec![
                flag("cert-file", &pki.server.cert),
                flag("key-file", &pki.server.key),
                flag("trusted-ca-file", &pki.ca.cert),
                flag("client-crl-file", &missing),
            ],
            format!("--client-crl-file {}: cannot read", missing.display()),
        ),
    ] {
        let (status, log) = Server::start_tls_expecting_exit(Kind::Cairn, &strs(&flags)).unwrap();
        assert!(
            !status.success() && log.contains(&want),
            "{want}: {status}: {log}"
        );
    }
}

#[test]
fn auto_tls_with_insecure_skip_verify() {
    each_kind("auto_tls_with_insecure_skip_verify", |kind| {
        let s = Server::start_tls(kind, &["--auto-tls"])?;
        // etcdctl 3.4 uses TLS without a CA or client certificate only when told to.
        let skip = ["--insecure-transport=false", "--insecure-skip-tls-verify"];
        ok(&s.etcdctl_tls(&skip, &["put", "k", "v"]), "put")?;
        let out = ok(
            &s.etcdctl_tls(&skip, &["get", "k", "--print-value-only"]),
            "get",
        )?;
        ensure!(out.trim() == "v", "get printed {out:?}");
        let fixtures = s.data_dir().join("fixtures").join("client");
        for f in ["cert.pem", "key.pem"] {
            ensure!(
                fixtures.join(f).exists(),
                "no {f} in {}",
                fixtures.display()
            );
        }
        // Without skipping verification the self-signed certificate is refused.
        let args: Vec<&str> = ["--insecure-transport=false"]
            .into_iter()
            .chain(SHORT)
            .collect();
        failed(&s.etcdctl_tls(&args, &["get", "k"]), "verified get")?;
        Ok(())
    });
}

#[test]
fn replaced_certificate_serves_new_connections() {
    let pki = Pki::new().unwrap();
    each_kind("replaced_certificate_serves_new_connections", |kind| {
        let dir = tempfile::tempdir_in(pki.dir.path())?;
        let cert = dir.path().join("served.pem");
        let key = dir.path().join("served-key.pem");
        std::fs::copy(&pki.server.cert, &cert)?;
        std::fs::copy(&pki.server.key, &key)?;
        let s = Server::start_tls(kind, &[&flag("cert-file", &cert), &flag("key-file", &key)])?;
        let first = pki.ctl(&pki.ca, None);
        let second = pki.ctl(&pki.other, None);
        ok(
            &s.etcdctl_tls(&strs(&first), &["put", "k", "1"]),
            "put trusting the first CA",
        )?;
        let next = pki
            .other
            .issue(&format!("rotated-{kind:?}"), "server", &["127.0.0.1"])?;
        std::fs::copy(&next.key, &key)?;
        std::fs::copy(&next.cert, &cert)?;
        ok(
            &s.etcdctl_tls(&strs(&second), &["put", "k", "2"]),
            "put trusting the new CA",
        )?;
        let args: Vec<&str> = strs(&first).into_iter().chain(SHORT).collect();
        failed(
            &s.etcdctl_tls(&args, &["get", "k"]),
            "get trusting only the old CA",
        )?;
        Ok(())
    });
}

/// Waits until a put on member 0 is readable on every member.
fn replicates(c: &mut Cluster) -> Result<()> {
    ok(
        &c.member(0).etcdctl(&["put", "replicated", "yes"]),
        "put on m0",
    )?;
    c.wait_converged(Duration::from_secs(20))?;
    for i in 0..c.len() {
        let v = parse_json(&c.member(i).etcdctl(&[
            "get",
            "replicated",
            "--consistency=s",
            "-w",
            "json",
        ]))?;
        ensure!(v["count"] == 1, "m{i}: {v}");
    }
    Ok(())
}

#[test]
fn peer_tls_from_files_and_a_stranger_cannot_join() {
    let pki = Pki::new().unwrap();
    let members: Vec<CertFiles> = (0..3)
        .map(|i| {
            pki.ca
                .issue(&format!("peer-m{i}"), &format!("m{i}"), &["127.0.0.1"])
        })
        .collect::<Result<_>>()
        .unwrap();
    let peer_crl = pki.ca.crl("peer-crl", &[&pki.revoked]).unwrap();
    let peer_flags = |certs: &CertFiles, ca: &Ca| {
        vec![
            flag("peer-cert-file", &certs.cert),
            flag("peer-key-file", &certs.key),
            flag("peer-trusted-ca-file", &ca.cert),
            "--peer-client-cert-auth".to_string(),
            "--peer-cert-allowed-hostname=127.0.0.1".to_string(),
            flag("peer-crl-file", &peer_crl),
        ]
    };
    each_kind("peer_tls_from_files_and_a_stranger_cannot_join", |kind| {
        let mut c = Cluster::start_with_peer_tls(kind, 3, |i| peer_flags(&members[i], &pki.ca))?;
        ensure!(
            c.member(0).peer_url().starts_with("https://"),
            "{}",
            c.member(0).peer_url()
        );
        replicates(&mut c)?;

        // A member whose certificate comes from another CA: `member add` succeeds, but it
        // never gets the membership from its peers, and exits.
        let stranger = pki
            .other
            .issue(&format!("stranger-{kind:?}"), "m3", &["127.0.0.1"])?;
        let flags = peer_flags(&stranger, &pki.other);
        let (i, _) = c.add_member_unstarted("m3", false, &strs(&flags))?;
        c.member_mut(i).spawn()?;
        let status = c.member_mut(i).wait_exit(Duration::from_secs(30))?;
        ensure!(!status.success(), "the stranger exited {status}");
        let why = match kind {
            Kind::Etcd => "x509: certificate signed by unknown authority",
            Kind::Cairn => "invalid peer certificate: UnknownIssuer",
        };
        ensure!(
            c.member(i).log().contains(why),
            "the stranger's log does not say {why:?}:\n{}",
            c.member(i).log_tail(20)
        );
        let leader = c.wait_for_leader_among(&[0, 1, 2], Duration::from_secs(10))?;
        ok(
            &c.member(leader.index)
                .etcdctl(&["put", "after", "stranger"]),
            "put",
        )?;
        let refused = (0..3).any(|m| c.member(m).log().contains("rejected connection"));
        ensure!(refused, "no member logged a rejected connection");
        Ok(())
    });
}

#[test]
fn peer_auto_tls_cluster() {
    each_kind("peer_auto_tls_cluster", |kind| {
        let mut c = Cluster::start_with_peer_tls(kind, 3, |_| vec!["--peer-auto-tls".into()])?;
        replicates(&mut c)?;
        let fixtures = c.member(0).data_dir().join("fixtures").join("peer");
        ensure!(
            fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists(),
            "no self-signed peer certificate in {}",
            fixtures.display()
        );
        Ok(())
    });
}
