//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate for the port's hosts, written
//! as etcd writes it to `<data-dir>/fixtures/{client,peer}/cert.pem` and `key.pem` and reused
//! on later starts while both files exist.
//!
//! Differences from etcd: the key is ECDSA P-256 (etcd uses P-521, which *ring* cannot sign
//! with), and the certificate names the hosts of the advertised URLs as well as the listen
//! URLs (etcd names only the listen hosts), so clients that verify it against the advertised
//! address can pin it.

use super::{Port, TlsError};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How long a generated certificate is valid (etcd's default `--self-signed-cert-validity`).
const VALIDITY: time::Duration = time::Duration::days(365);

/// The hosts of `urls` (`scheme://host:port`), without brackets or ports, deduplicated.
pub fn hosts_of<'a>(urls: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut hosts = BTreeSet::new();
    for url in urls {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        if !host.is_empty() {
            hosts.insert(host.to_string());
        }
    }
    hosts.into_iter().collect()
}

/// The certificate and key in `dir`, generated for `hosts` unless both already exist.
pub fn self_cert(dir: &Path, hosts: &[String], port: Port) -> Result<(PathBuf, PathBuf), TlsError> {
    let fail = |reason: String| TlsError::AutoCert {
        dir: dir.display().to_string(),
        reason,
    };
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| fail(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + VALIDITY;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    if port == Port::Peer {
        // Members present the same certificate when they dial each other.
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    }
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    // The key first and private from its creation; the pair only counts once both exist.
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| fail(e.to_string()))?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644).map_err(|e| fail(e.to_string()))?;
    tracing::info!(path = %cert_path.display(), hosts = ?hosts, "created cert file");
    tracing::info!(path = %key_path.display(), "created key file");
    Ok((cert_path, key_path))
}

/// Writes `bytes` durably to a new file with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::verify::CertNames;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn hosts_from_urls() {
        let urls: Vec<String> = [
            "https://127.0.0.1:2379",
            "http://localhost:2379",
            "https://[::1]:2379",
            "https://127.0.0.1:12379",
            "https://node-1.example.com:2380/",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            hosts_of(urls.iter()),
            vec!["127.0.0.1", "::1", "localhost", "node-1.example.com"]
        );
    }

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures").join("client");
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (cert, key) = self_cert(&fixtures, &hosts, Port::Client).unwrap();
        let mode = std::fs::metadata(&key).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
        let names = CertNames::of(&der).unwrap();
        assert!(names.valid_for("127.0.0.1") && names.valid_for("localhost"));
        let before = std::fs::read(&cert).unwrap();
        self_cert(&fixtures, &["10.0.0.1".to_string()], Port::Client).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            before,
            "reused, not regenerated"
        );
    }
}
