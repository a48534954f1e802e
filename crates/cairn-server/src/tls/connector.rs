//! The client side, for dialing other members' `https://` peer URLs: this member presents its
//! peer certificate and verifies the other member's against `--peer-trusted-ca-file` (its
//! IP or DNS name must match the URL's host), plus `--peer-cert-allowed-cn` /
//! `--peer-cert-allowed-hostname` as etcd applies them. With `--peer-auto-tls` the other
//! side's self-signed certificate is not verified, as in etcd.

use super::policy::TlsPolicy;
use super::reload::Reloading;
use super::verify::{AcceptAnyServerCert, Allowed, AllowedServerCert};
use super::{pem, Resolved, TlsError};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;

/// The TLS client configuration for peer connections, reloaded when its files change.
pub struct ClientTls {
    config: Reloading<ClientConfig>,
}

impl ClientTls {
    /// Loads the peer certificate, key and CA; any problem names the flag and file.
    pub fn new(resolved: &Resolved, policy: &TlsPolicy) -> Result<Arc<ClientTls>, TlsError> {
        let mut paths = vec![resolved.cert.clone(), resolved.key.clone()];
        if !resolved.self_signed {
            paths.extend(resolved.info.trusted_ca_file.clone());
        }
        let r = resolved.clone();
        let policy = policy.clone();
        let config = Reloading::new(format!("{} client", r.port.name()), paths, move || {
            client_config(&r, &policy)
        })?;
        Ok(Arc::new(ClientTls { config }))
    }

    /// The configuration for a new connection (rebuilt if the files changed).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.get()
    }

    /// Connects to `host:port` and completes the handshake, verifying the server as `host`
    /// (an IP address or a DNS name; IPv6 in brackets or not).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config())
            .connect(name, tcp)
            .await
    }
}

/// Builds the peer client configuration from its files.
fn client_config(r: &Resolved, policy: &TlsPolicy) -> Result<ClientConfig, TlsError> {
    let flags = r.port.flags();
    let provider = policy.provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&policy.versions())
        .map_err(|e| TlsError::Config(format!("TLS versions and cipher suites: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if r.self_signed {
        Arc::new(AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let ca = r.info.trusted_ca_file.as_ref().ok_or_else(|| {
            TlsError::Config(format!(
                "{} is set without {}: cairn verifies other members' certificates only against {} (etcd would fall back to the system's CAs)",
                flags.cert, flags.trusted_ca, flags.trusted_ca
            ))
        })?;
        let roots = Arc::new(pem::load_roots(flags.trusted_ca, ca)?);
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::file(flags.trusted_ca, ca, e))?
    };
    let verifier: Arc<dyn ServerCertVerifier> = match Allowed::from_info(&r.info) {
        Some(allowed) if !r.self_signed => Arc::new(AllowedServerCert {
            inner: verifier,
            allowed,
        }),
        _ => verifier,
    };
    let certs = pem::load_certs(flags.cert, &r.cert)?;
    let key = pem::load_key(flags.key, &r.key)?;
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::key_mismatch(&flags, &r.key, &r.cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
