//! Handshakes between [`acceptor`](super::acceptor) and [`connector`](super::connector) over
//! loopback with generated certificates: mutual TLS, CA and CRL refusals, allowed names,
//! cipher suites and versions, rotation, auto-TLS dialing, and plaintext clients.

use super::acceptor::{incoming, ServerTls, TlsConn};
use super::connector::ClientTls;
use super::policy::TlsPolicy;
use super::{Port, Resolved, TlsInfo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

static SERIAL: AtomicU64 = AtomicU64::new(100);

/// A test CA writing its certificates into a directory.
struct Ca {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and key on disk, with the certificate's serial number.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    serial: u64,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: Issuer::new(params, key),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A certificate for `cn` valid for 127.0.0.1, for servers and clients.
    fn issue(&self, file: &str, cn: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
            serial,
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    fn crl(&self, file: &str, revoked: &[&Issued]) -> PathBuf {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(r.serial),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap();
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }
}

fn resolved(port: Port, issued: &Issued, info: TlsInfo) -> Resolved {
    Resolved {
        port,
        info,
        cert: issued.cert.clone(),
        key: issued.key.clone(),
        self_signed: false,
    }
}

/// A peer-side client presenting `issued` and trusting `ca`.
fn client(issued: &Issued, ca: &Ca, policy: &TlsPolicy) -> Arc<ClientTls> {
    let info = TlsInfo {
        trusted_ca_file: Some(ca.path()),
        ..Default::default()
    };
    ClientTls::new(&resolved(Port::Peer, issued, info), policy).unwrap()
}

/// Serves `tls` on a loopback port; every accepted connection echoes one message.
async fn echo_server(tls: Arc<ServerTls>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut conns = incoming(listener, tls);
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = conns.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = conn.read(&mut buf).await {
                    let _ = conn.write_all(&buf[..n]).await;
                    let _ = conn.flush().await;
                }
                let _: TlsConn = conn;
            });
        }
    });
    port
}

/// Whether `client` gets its message echoed by the server on `port`.
async fn round_trip(client: &ClientTls, port: u16) -> Result<(), String> {
    let mut stream = client
        .connect("127.0.0.1", port)
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    // With TLS 1.3 a refused client certificate only shows on the first read.
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_exact(&mut buf),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if &buf == b"ping" {
        Ok(())
    } else {
        Err(format!("echoed {buf:?}"))
    }
}

#[tokio::test]
async fn mutual_tls_crl_and_foreign_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other-ca");
    let server = ca.issue("server", "server");
    let good = ca.issue("good", "good");
    let revoked = ca.issue("revoked", "revoked");
    let foreign = other.issue("foreign", "foreign");
    let policy = TlsPolicy::default();
    let info = TlsInfo {
        trusted_ca_file: Some(ca.path()),
        client_cert_auth: true,
        crl_file: Some(ca.crl("crl", &[&revoked])),
        ..Default::default()
    };
    let tls = ServerTls::new(&resolved(Port::Client, &server, info), &policy).unwrap();
    let port = echo_server(tls).await;
    round_trip(&client(&good, &ca, &policy), port)
        .await
        .unwrap();
    let err = round_trip(&client(&revoked, &ca, &policy), port)
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert!(round_trip(&client(&foreign, &ca, &policy), port)
        .await
        .is_err());
    // The client side refuses a server certificate from a CA it does not trust.
    let err = round_trip(&client(&good, &other, &policy), port)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn allowed_common_name_applies_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let member = ca.issue("member", "member");
    let stranger = ca.issue("stranger", "stranger");
    let policy = TlsPolicy::default();
    let info = TlsInfo {
        trusted_ca_file: Some(ca.path()),
        client_cert_auth: true,
        allowed_cn: Some("member".into()),
        ..Default::default()
    };
    let tls = ServerTls::new(&resolved(Port::Peer, &member, info.clone()), &policy).unwrap();
    let port = echo_server(tls).await;
    let dialer = |issued: &Issued| {
        ClientTls::new(&resolved(Port::Peer, issued, info.clone()), &policy).unwrap()
    };
    round_trip(&dialer(&member), port).await.unwrap();
    assert!(round_trip(&dialer(&stranger), port).await.is_err());
    // A listener whose own certificate has another CN is refused by the dialing side.
    let tls = ServerTls::new(&resolved(Port::Peer, &stranger, info.clone()), &policy).unwrap();
    let port = echo_server(tls).await;
    let err = round_trip(&dialer(&member), port).await.unwrap_err();
    assert!(
        err.contains("client certificate authentication failed"),
        "{err}"
    );
}

#[tokio::test]
async fn cipher_suites_and_versions_must_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue("server", "server");
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let server_policy = TlsPolicy::new(
        &names(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]),
        "",
        "TLS1.2",
    )
    .unwrap();
    let tls = ServerTls::new(
        &resolved(Port::Client, &server, TlsInfo::default()),
        &server_policy,
    )
    .unwrap();
    let port = echo_server(tls).await;
    round_trip(&client(&server, &ca, &TlsPolicy::default()), port)
        .await
        .unwrap();
    let other_suite = TlsPolicy::new(
        &names(&["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"]),
        "",
        "TLS1.2",
    )
    .unwrap();
    let err = round_trip(&client(&server, &ca, &other_suite), port)
        .await
        .unwrap_err();
    assert!(err.contains("HandshakeFailure"), "{err}");
    let only13 = TlsPolicy::new(&[], "TLS1.3", "").unwrap();
    let err = round_trip(&client(&server, &ca, &only13), port)
        .await
        .unwrap_err();
    assert!(err.contains("ProtocolVersion"), "{err}");
}

#[tokio::test]
async fn replaced_files_serve_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new(dir.path(), "first");
    let second = Ca::new(dir.path(), "second");
    let served = first.issue("served", "server");
    let me = first.issue("me", "me");
    let policy = TlsPolicy::default();
    let tls = ServerTls::new(
        &resolved(Port::Client, &served, TlsInfo::default()),
        &policy,
    )
    .unwrap();
    let port = echo_server(tls).await;
    round_trip(&client(&me, &first, &policy), port)
        .await
        .unwrap();
    assert!(round_trip(&client(&me, &second, &policy), port)
        .await
        .is_err());
    // Rotate: the served files now hold a certificate from the second CA.
    let next = second.issue("next", "server");
    std::fs::copy(&next.key, &served.key).unwrap();
    std::fs::copy(&next.cert, &served.cert).unwrap();
    round_trip(&client(&me, &second, &policy), port)
        .await
        .unwrap();
    assert!(round_trip(&client(&me, &first, &policy), port)
        .await
        .is_err());
    // A key that does not match is not taken: the last good pair stays in use.
    std::fs::copy(&me.key, &served.key).unwrap();
    round_trip(&client(&me, &second, &policy), port)
        .await
        .unwrap();
}

#[tokio::test]
async fn auto_tls_dialer_skips_verification() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = dir.path().join("fixtures").join("peer");
    let (cert, key) = super::auto::self_cert(&fixtures, &["127.0.0.1".into()], Port::Peer).unwrap();
    let auto = Resolved {
        port: Port::Peer,
        info: TlsInfo {
            auto_tls: true,
            ..Default::default()
        },
        cert,
        key,
        self_signed: true,
    };
    let policy = TlsPolicy::default();
    let tls = ServerTls::new(&auto, &policy).unwrap();
    let port = echo_server(tls).await;
    let dialer = ClientTls::new(&auto, &policy).unwrap();
    round_trip(&dialer, port).await.unwrap();
}

#[tokio::test]
async fn plaintext_clients_get_a_prompt_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue("server", "server");
    let tls = ServerTls::new(
        &resolved(Port::Client, &server, TlsInfo::default()),
        &TlsPolicy::default(),
    )
    .unwrap();
    let port = echo_server(tls).await;
    let answer = |request: &'static [u8]| async move {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .expect("the server answers and closes at once")
            .ok();
        out
    };
    let out = answer(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        out,
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );
    // A plaintext HTTP/2 (gRPC) client: closed without a word.
    let out = answer(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn missing_files_refuse_with_the_flag_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue("server", "server");
    let gone = Issued {
        cert: dir.path().join("nope.pem"),
        key: server.key.clone(),
        serial: 0,
    };
    let err = ServerTls::new(
        &resolved(Port::Client, &gone, TlsInfo::default()),
        &TlsPolicy::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with(&format!("--cert-file {}: cannot read", gone.cert.display())),
        "{err}"
    );
    let info = TlsInfo {
        client_cert_auth: true,
        ..Default::default()
    };
    let err = ServerTls::new(&resolved(Port::Peer, &server, info), &TlsPolicy::default())
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "--peer-client-cert-auth needs --peer-trusted-ca-file (the CA that signs client certificates)"
    );
    let err = ClientTls::new(
        &resolved(Port::Peer, &server, TlsInfo::default()),
        &TlsPolicy::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("without --peer-trusted-ca-file"), "{err}");
}
