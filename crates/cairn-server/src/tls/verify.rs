//! Certificate checks beyond chain verification, as etcd makes them:
//!
//! - `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname` /
//!   `--client-cert-allowed-hostname` ([`Allowed`]): after the chain verifies, the other side's
//!   certificate must have that common name, or be valid for that host. etcd sets the check on
//!   its base TLS configuration, so it applies both to certificates clients present to a
//!   listener and to the certificate a peer's listener presents when this member dials it.
//! - the peer listener's SAN check ([`check_san`]): a peer's client certificate that names IP
//!   addresses or DNS names must name the address the connection comes from.
//! - `--peer-auto-tls` dialing ([`AcceptAnyServerCert`]): a self-signed peer certificate
//!   cannot be verified against anything, so etcd skips verification; the handshake
//!   signatures are still checked.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The names a certificate is valid for, and its subject's common name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's common name (the last one, as Go's `pkix.Name` keeps it).
    pub common_name: Option<String>,
    /// DNS names of the subject alternative name extension.
    pub dns: Vec<String>,
    /// IP addresses of the subject alternative name extension.
    pub ips: Vec<IpAddr>,
}

impl CertNames {
    /// Reads the names of a DER certificate.
    pub fn of(der: &[u8]) -> Result<CertNames, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .last()
            .map(str::to_string);
        let mut names = CertNames {
            common_name,
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => names.dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            names.ips.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            names.ips.push(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(names)
    }

    /// Whether the certificate is valid for `host` (Go's `VerifyHostname`: an IP against the
    /// IP SANs, a name against the DNS SANs, case-insensitively, a `*.` wildcard matching one
    /// leftmost label; the common name is not consulted).
    pub fn valid_for(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.dns.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => pattern == host,
            }
        })
    }
}

/// `--peer-cert-allowed-cn` or `--*-cert-allowed-hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// The certificate's common name must be exactly this.
    CommonName(String),
    /// The certificate must be valid for this host name or IP address.
    Hostname(String),
}

impl Allowed {
    /// The check a port's settings ask for, if any.
    pub fn from_info(info: &super::TlsInfo) -> Option<Allowed> {
        match (&info.allowed_cn, &info.allowed_hostname) {
            (Some(cn), _) => Some(Allowed::CommonName(cn.clone())),
            (None, Some(host)) => Some(Allowed::Hostname(host.clone())),
            (None, None) => None,
        }
    }

    /// Checks a verified end-entity certificate.
    pub fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let names = CertNames::of(end_entity)
            .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let ok = match self {
            Allowed::CommonName(cn) => names.common_name.as_deref() == Some(cn.as_str()),
            Allowed::Hostname(host) => names.valid_for(host),
        };
        if ok {
            Ok(())
        } else {
            // etcd's words for the refusal.
            Err(Error::General(
                "client certificate authentication failed".into(),
            ))
        }
    }
}

/// A client-certificate verifier that also applies an [`Allowed`] check.
#[derive(Debug)]
pub struct AllowedClientCert {
    /// Chain (and CRL) verification.
    pub inner: Arc<dyn ClientCertVerifier>,
    /// The extra check.
    pub allowed: Allowed,
}

impl ClientCertVerifier for AllowedClientCert {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server-certificate verifier that also applies an [`Allowed`] check.
#[derive(Debug)]
pub struct AllowedServerCert {
    /// Chain and name verification.
    pub inner: Arc<dyn ServerCertVerifier>,
    /// The extra check.
    pub allowed: Allowed,
}

impl ServerCertVerifier for AllowedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`--peer-auto-tls`: peers' self-signed certificates have no
/// CA to be verified against, as etcd's `InsecureSkipVerify` for self-signed certificates);
/// handshake signatures are still verified, so the connection is encrypted to whoever holds
/// the presented certificate's key.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    /// The provider's signature algorithms.
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// etcd's peer-listener SAN check: a client certificate that names IP addresses or DNS names
/// must name the address the connection comes from — one of its IPs, or a DNS name that
/// resolves to it (etcd also tries a reverse lookup of the address; cairn only resolves the
/// names). A certificate without such names passes.
pub async fn check_san(end_entity: &CertificateDer<'_>, remote: IpAddr) -> Result<(), String> {
    let names = CertNames::of(end_entity).map_err(|e| format!("bad client certificate: {e}"))?;
    if names.ips.is_empty() && names.dns.is_empty() {
        return Ok(());
    }
    if names.ips.contains(&remote) {
        return Ok(());
    }
    if names.dns.is_empty() {
        let ips: Vec<String> = names.ips.iter().map(IpAddr::to_string).collect();
        return Err(format!(
            "x509: certificate is valid for {}, not {remote}",
            ips.join(", ")
        ));
    }
    for name in names.dns.iter().filter(|n| !n.starts_with("*.")) {
        if let Ok(addrs) = tokio::net::lookup_host((name.as_str(), 0)).await {
            if addrs.into_iter().any(|a| a.ip() == remote) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "tls: {:?} does not match any of DNSNames {:?}",
        remote.to_string(),
        names.dns
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn names_and_hostname_matching() {
        let c = cert("m1", &["127.0.0.1", "::1", "Example.COM", "*.svc.local"]);
        let names = CertNames::of(&c).unwrap();
        assert_eq!(names.common_name.as_deref(), Some("m1"));
        assert_eq!(names.ips.len(), 2);
        for ok in [
            "127.0.0.1",
            "[::1]",
            "example.com",
            "a.svc.local",
            "EXAMPLE.com.",
        ] {
            assert!(names.valid_for(ok), "{ok}");
        }
        for bad in ["127.0.0.2", "svc.local", "a.b.svc.local", "m1", "other.com"] {
            assert!(!names.valid_for(bad), "{bad}");
        }
    }

    #[test]
    fn allowed_checks() {
        let c = cert("m1", &["127.0.0.1"]);
        assert!(Allowed::CommonName("m1".into()).check(&c).is_ok());
        let err = Allowed::CommonName("m2".into()).check(&c).unwrap_err();
        assert!(err
            .to_string()
            .contains("client certificate authentication failed"));
        assert!(Allowed::Hostname("127.0.0.1".into()).check(&c).is_ok());
        assert!(Allowed::Hostname("10.0.0.1".into()).check(&c).is_err());
    }

    #[tokio::test]
    async fn san_check_wants_the_remote_address() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_san(&cert("x", &[]), local).await.is_ok());
        assert!(check_san(&cert("x", &["127.0.0.1"]), local).await.is_ok());
        assert!(check_san(&cert("x", &["localhost"]), local).await.is_ok());
        let err = check_san(&cert("x", &["10.1.2.3"]), local)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "x509: certificate is valid for 10.1.2.3, not 127.0.0.1"
        );
        let err = check_san(&cert("x", &["nowhere.invalid"]), local)
            .await
            .unwrap_err();
        assert!(err.contains("does not match any of DNSNames"), "{err}");
    }
}
