//! Reading certificates, keys, CA bundles and CRLs from the files the flags name. Every error
//! names the flag and the file.

use super::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::path::Path;

/// Reads a whole file.
fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::file(flag, path, format!("cannot read: {e}")))
}

/// Every `CERTIFICATE` block of a PEM file, in order (the end-entity first for a chain).
pub fn load_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(flag, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::file(flag, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key found".to_string(),
            other => format!("bad PEM private key: {other}"),
        };
        TlsError::file(flag, path, reason)
    })
}

/// The CA certificates of a PEM bundle as trust anchors.
pub fn load_roots(flag: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(flag, path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::file(flag, path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The CRLs of a file, PEM (`X509 CRL` blocks) or a single DER CRL, as Go's `x509.ParseCRL`
/// accepts both.
pub fn load_crls(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(flag, path, format!("bad PEM: {e}")))?;
    if !crls.is_empty() {
        return Ok(crls);
    }
    // DER starts with a SEQUENCE tag; anything else is neither form.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(TlsError::file(
        flag,
        path,
        "no certificate revocation list found (expected PEM `X509 CRL` or DER)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = load_certs("--cert-file", &missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--cert-file {}: cannot read: ", missing.display())),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let err = load_key("--key-file", &junk).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("--key-file {}: no PEM private key found", junk.display())
        );
        let err = load_certs("--trusted-ca-file", &junk)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate found"), "{err}");
        let err = load_crls("--client-crl-file", &junk)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate revocation list"), "{err}");
    }

    #[test]
    fn reads_generated_material() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        let paths = ["ca.pem", "key.pem", "crl.pem", "crl.der"].map(|n| dir.path().join(n));
        std::fs::write(&paths[0], cert.pem()).unwrap();
        std::fs::write(&paths[1], issuer.key().serialize_pem()).unwrap();
        std::fs::write(&paths[2], crl.pem().unwrap()).unwrap();
        std::fs::write(&paths[3], crl.der().as_ref()).unwrap();
        assert_eq!(load_roots("--trusted-ca-file", &paths[0]).unwrap().len(), 1);
        load_key("--key-file", &paths[1]).unwrap();
        assert_eq!(load_crls("--client-crl-file", &paths[2]).unwrap().len(), 1);
        assert_eq!(load_crls("--client-crl-file", &paths[3]).unwrap().len(), 1);
    }
}
