//! TLS for end-to-end tests: test CAs issuing server, client and peer certificates and CRLs
//! (rcgen, written as PEM files), and single servers with an `https://` client listener beside
//! the plain one (readiness is polled on the plain one, as for every other server).

use crate::{etcdctl, free_port, Kind, Server};
use anyhow::{bail, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

/// Serial numbers unique within the process, so a CRL revokes exactly what it names.
static SERIAL: AtomicU64 = AtomicU64::new(1000);

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8 ECDSA P-256).
    pub key: PathBuf,
    /// The certificate's serial number.
    pub serial: u64,
}

/// A test certificate authority writing into a directory.
pub struct Ca {
    /// Its certificate (PEM): what `--trusted-ca-file` / `--cacert` name.
    pub cert: PathBuf,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA called `name`, its certificate written to `dir/name.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem())?;
        Ok(Ca {
            cert: path,
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for common name `cn`, valid for `sans` (IPs or DNS names), usable by
    /// servers and clients, written to `dir/file.pem` and `dir/file-key.pem`.
    pub fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
            serial,
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// A CRL revoking `revoked`, written to `dir/file.pem`.
    pub fn crl(&self, file: &str, revoked: &[&CertFiles]) -> Result<PathBuf> {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(SERIAL.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)?;
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, crl.pem()?)?;
        Ok(path)
    }
}

/// `--flag=path` for a path.
pub fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

impl Server {
    /// Starts a single-member server of `kind` with an `https://` client listener (on
    /// [`Server::tls_addr`]) beside the plain one; `extra` gives its TLS flags. Retried on
    /// fresh ports if one was taken meanwhile.
    pub fn start_tls(kind: Kind, extra: &[&str]) -> Result<Server> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_tls_once(kind, extra) {
                Err(e)
                    if attempt < 3
                        && format!("{e:#}")
                            .to_ascii_lowercase()
                            .contains("address already in use") => {}
                other => return other,
            }
        }
    }

    fn start_tls_once(kind: Kind, extra: &[&str]) -> Result<Server> {
        let mut s = Self::unstarted_tls(kind, extra)?;
        s.spawn()?;
        s.wait_ready()?;
        Ok(s)
    }

    /// A server with a TLS listener, on fresh ports and a fresh data dir, not yet spawned.
    fn unstarted_tls(kind: Kind, extra: &[&str]) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-e2e-tls-")
            .tempdir()?;
        Ok(Server {
            kind,
            child: None,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            tls_addr: Some(format!("127.0.0.1:{}", free_port())),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log_path: dir.path().join("server.log"),
            dir,
        })
    }

    /// The `https://` client endpoint.
    pub fn tls_endpoint(&self) -> String {
        match &self.tls_addr {
            Some(addr) => format!("https://{addr}"),
            None => panic!("started without a TLS listener"),
        }
    }

    /// Runs `etcdctl` against the TLS endpoint with `tls` flags (`--cacert=...`) then `args`.
    pub fn etcdctl_tls(&self, tls: &[&str], args: &[&str]) -> Output {
        let all: Vec<&str> = tls.iter().chain(args).copied().collect();
        etcdctl(&self.tls_endpoint(), &all, None)
    }

    /// Starts a server like [`Server::start_tls`] that is expected to refuse to start: returns
    /// its exit status and log once it exits.
    pub fn start_tls_expecting_exit(
        kind: Kind,
        extra: &[&str],
    ) -> Result<(std::process::ExitStatus, String)> {
        let mut s = Self::unstarted_tls(kind, extra)?;
        s.spawn()?;
        let mut child = s.child.take().expect("just spawned");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status, s.log()));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{kind:?} still running 20s later:\n{}", s.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
