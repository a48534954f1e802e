//! TLS on the client and peer ports, configured with etcd's flags (rustls with the *ring*
//! provider).
//!
//! - [`TlsInfo`] holds one port's settings as etcd's `transport.TLSInfo` does (`--cert-file`,
//!   `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`, `--auto-tls`
//!   and their `--peer-*` twins); [`policy::TlsPolicy`] the settings both ports share
//!   (`--cipher-suites`, `--tls-min-version`, `--tls-max-version`).
//! - [`PortTls::build`] turns a [`ServerConfig`] into what the listeners and the peer dialer
//!   use, loading every file once so that a missing or unreadable one refuses the start with
//!   its flag and path.
//! - [`acceptor`] serves TLS on accepted TCP connections (handshakes run concurrently, failures
//!   are logged as etcd's "rejected connection"); [`connector`] dials peers over TLS.
//!
//! Rotation: both sides keep their rustls configuration in a [`reload::Reloading`] cell that
//! stats the certificate, key, CA and CRL files whenever a connection starts, and rebuilds the
//! configuration when one of them changed (modification time, size or inode). New connections
//! use the new files; established ones keep theirs. A replacement that does not load (a
//! half-written file, a key that does not match its certificate) is logged once and the
//! previous configuration stays in use until the files are fixed.

pub mod acceptor;
pub mod auto;
pub mod connector;
pub mod pem;
pub mod policy;
pub mod reload;
#[cfg(test)]
mod tests;
pub mod verify;

use crate::config::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named by a flag could not be read or holds nothing usable.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag naming the file (`--cert-file`, `--peer-trusted-ca-file`, ...).
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The flags ask for something invalid or not supported.
    #[error("{0}")]
    Config(String),
    /// A self-signed certificate could not be generated or written (`--auto-tls`).
    #[error("generating a self-signed certificate in {dir}: {reason}")]
    AutoCert {
        /// The fixtures directory.
        dir: String,
        /// What failed.
        reason: String,
    },
}

impl TlsError {
    pub(crate) fn file(flag: &'static str, path: &std::path::Path, reason: impl ToString) -> Self {
        TlsError::File {
            flag,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The key in `key` does not go with the certificate in `cert`.
    pub(crate) fn key_mismatch(
        flags: &FlagNames,
        key: &std::path::Path,
        cert: &std::path::Path,
        reason: impl std::fmt::Display,
    ) -> Self {
        TlsError::file(
            flags.key,
            key,
            format!(
                "cannot be used with {} {}: {reason}",
                flags.cert,
                cert.display()
            ),
        )
    }
}

/// Which port a [`TlsInfo`] belongs to; it names the flags in messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The client port (`--listen-client-urls`).
    Client,
    /// The peer port (`--listen-peer-urls`) and connections to other members.
    Peer,
}

/// The flag names of one port's settings.
#[derive(Debug, Clone, Copy)]
pub struct FlagNames {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert: &'static str,
    /// `--key-file` / `--peer-key-file`.
    pub key: &'static str,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca: &'static str,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: &'static str,
    /// `--client-crl-file` / `--peer-crl-file`.
    pub crl: &'static str,
    /// `--auto-tls` / `--peer-auto-tls`.
    pub auto_tls: &'static str,
}

impl Port {
    /// This port's flag names.
    pub fn flags(self) -> FlagNames {
        match self {
            Port::Client => FlagNames {
                cert: "--cert-file",
                key: "--key-file",
                trusted_ca: "--trusted-ca-file",
                client_cert_auth: "--client-cert-auth",
                crl: "--client-crl-file",
                auto_tls: "--auto-tls",
            },
            Port::Peer => FlagNames {
                cert: "--peer-cert-file",
                key: "--peer-key-file",
                trusted_ca: "--peer-trusted-ca-file",
                client_cert_auth: "--peer-client-cert-auth",
                crl: "--peer-crl-file",
                auto_tls: "--peer-auto-tls",
            },
        }
    }

    /// `client` or `peer`, for logs and the auto-TLS fixtures directory.
    pub fn name(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Peer => "peer",
        }
    }
}

/// One port's TLS settings, as given on the command line (etcd's `TLSInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The certificate chain this member presents (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the other side's certificates. On a listener, setting
    /// it makes client certificates mandatory, as in etcd.
    pub trusted_ca_file: Option<PathBuf>,
    /// Clients must present a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// Revoked client certificates (PEM or DER CRL signed by the trusted CA).
    pub crl_file: Option<PathBuf>,
    /// Generate a self-signed certificate when no certificate file is given.
    pub auto_tls: bool,
    /// The verified certificate of the other side must have this common name.
    pub allowed_cn: Option<String>,
    /// The verified certificate of the other side must be valid for this host name or IP.
    pub allowed_hostname: Option<String>,
}

impl TlsInfo {
    /// Whether a certificate or key file is given (etcd's `!TLSInfo.Empty()`).
    pub fn has_files(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Checks what does not depend on files: exclusive options and needed companions.
    pub fn validate(&self, port: Port) -> Result<(), TlsError> {
        let flags = port.flags();
        if let (Some(cn), Some(host)) = (&self.allowed_cn, &self.allowed_hostname) {
            return Err(TlsError::Config(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={host:?})"
            )));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::Config(format!(
                "KeyFile and CertFile must both be present ({} and {})",
                flags.key, flags.cert
            )));
        }
        Ok(())
    }
}

/// The certificate files a port ends up serving with: the given ones, or the self-signed
/// ones `--auto-tls` wrote.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Which port.
    pub port: Port,
    /// The settings as given.
    pub info: TlsInfo,
    /// The certificate file in use.
    pub cert: PathBuf,
    /// The key file in use.
    pub key: PathBuf,
    /// The certificate is self-signed by `--auto-tls`: peers dialed with it are not verified
    /// (there is nothing to verify them against), as in etcd.
    pub self_signed: bool,
}

/// What the listeners and the peer dialer of one member use.
#[derive(Default)]
pub struct PortTls {
    /// TLS for `https://` client listeners.
    pub client: Option<Arc<acceptor::ServerTls>>,
    /// TLS for `https://` peer listeners.
    pub peer: Option<Arc<acceptor::ServerTls>>,
    /// TLS for dialing other members' `https://` peer URLs.
    pub dial: Option<Arc<connector::ClientTls>>,
}

impl PortTls {
    /// Loads (or generates, with `--auto-tls`) everything the configuration asks for.
    pub fn build(cfg: &ServerConfig) -> Result<PortTls, TlsError> {
        let policy = &cfg.tls_policy;
        let client = resolve(
            cfg,
            Port::Client,
            &cfg.client_tls,
            &cfg.listen_client_urls,
            &cfg.advertise_client_urls,
        )?;
        let peer = resolve(
            cfg,
            Port::Peer,
            &cfg.peer_tls,
            &cfg.listen_peer_urls,
            &cfg.initial_advertise_peer_urls,
        )?;
        let mut out = PortTls::default();
        if let Some(r) = &client {
            if cfg.listen_client_urls.iter().any(|u| is_https(u)) {
                out.client = Some(acceptor::ServerTls::new(r, policy)?);
            }
        }
        if let Some(r) = &peer {
            if cfg.listen_peer_urls.iter().any(|u| is_https(u)) {
                out.peer = Some(acceptor::ServerTls::new(r, policy)?);
            }
            // Needed once any member is reached over https; a cluster that starts all-http
            // with peer certificates given (ignored, as etcd warns) must not need a peer CA.
            let dialed = cfg
                .initial_advertise_peer_urls
                .iter()
                .chain(cfg.listen_peer_urls.iter())
                .chain(cfg.initial_cluster.iter().map(|(_, url)| url))
                .any(|u| is_https(u));
            if dialed {
                out.dial = Some(connector::ClientTls::new(r, policy)?);
            }
        }
        Ok(out)
    }
}

/// Whether a URL asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Decides which certificate a port uses, warning about settings that do not apply (as etcd
/// does), and refusing an `https://` listener without one.
fn resolve(
    cfg: &ServerConfig,
    port: Port,
    info: &TlsInfo,
    listen: &[String],
    advertise: &[String],
) -> Result<Option<Resolved>, TlsError> {
    info.validate(port)?;
    let flags = port.flags();
    for url in listen.iter().filter(|u| !is_https(u)) {
        if info.has_files() {
            tracing::warn!(url = %url, port = port.name(), "scheme is HTTP while key and cert files are present; ignoring key and cert files");
        }
        if info.client_cert_auth {
            tracing::warn!(url = %url, port = port.name(), "scheme is HTTP while {} is enabled; ignoring client cert auth for this URL", flags.client_cert_auth);
        }
    }
    let (cert, key, self_signed) = match (&info.cert_file, &info.key_file) {
        (Some(c), Some(k)) => {
            if info.auto_tls {
                tracing::warn!(
                    port = port.name(),
                    "ignoring {} since certs given",
                    flags.auto_tls
                );
            }
            (c.clone(), k.clone(), false)
        }
        _ if info.auto_tls => {
            let hosts = auto::hosts_of(listen.iter().chain(advertise));
            let dir = cfg.data_dir.join("fixtures").join(port.name());
            let (c, k) = auto::self_cert(&dir, &hosts, port)?;
            (c, k, true)
        }
        _ => {
            if let Some(url) = listen.iter().find(|u| is_https(u)) {
                return Err(TlsError::Config(match port {
                    Port::Client => format!(
                        "TLS key/cert ({}, {}) must be provided for client url {url} with HTTPS scheme",
                        flags.cert, flags.key
                    ),
                    Port::Peer => format!(
                        "cannot listen on TLS for {url}: KeyFile and CertFile are not presented ({}, {} or {})",
                        flags.cert, flags.key, flags.auto_tls
                    ),
                }));
            }
            return Ok(None);
        }
    };
    Ok(Some(Resolved {
        port,
        info: info.clone(),
        cert,
        key,
        self_signed,
    }))
}

#[cfg(test)]
mod setup_tests {
    use super::*;

    #[test]
    fn exclusive_and_paired_settings() {
        let info = TlsInfo {
            allowed_cn: Some("a".into()),
            allowed_hostname: Some("b".into()),
            ..Default::default()
        };
        let err = info.validate(Port::Peer).unwrap_err().to_string();
        assert_eq!(
            err,
            r#"AllowedCN and AllowedHostname are mutually exclusive (cn="a", hostname="b")"#
        );
        let info = TlsInfo {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        let err = info.validate(Port::Client).unwrap_err().to_string();
        assert!(err.contains("--key-file"), "{err}");
    }

    #[test]
    fn https_listener_needs_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::with_defaults("m", dir.path().to_path_buf());
        cfg.listen_client_urls = vec!["https://127.0.0.1:0".into()];
        let err = PortTls::build(&cfg).err().unwrap().to_string();
        assert!(err.contains("must be provided for client url https://127.0.0.1:0"));
        cfg.listen_client_urls = vec!["http://127.0.0.1:0".into()];
        cfg.listen_peer_urls = vec!["https://127.0.0.1:0".into()];
        let err = PortTls::build(&cfg).err().unwrap().to_string();
        assert!(err.contains("cannot listen on TLS for https://127.0.0.1:0"));
    }

    #[test]
    fn auto_tls_serves_and_dials() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::with_defaults("m", dir.path().to_path_buf());
        cfg.listen_client_urls = vec!["https://127.0.0.1:0".into()];
        cfg.listen_peer_urls = vec!["https://127.0.0.1:0".into()];
        cfg.client_tls.auto_tls = true;
        cfg.peer_tls.auto_tls = true;
        let tls = PortTls::build(&cfg).unwrap();
        assert!(tls.client.is_some() && tls.peer.is_some() && tls.dial.is_some());
        for port in ["client", "peer"] {
            let fixtures = dir.path().join("fixtures").join(port);
            assert!(fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists());
        }
    }

    #[test]
    fn certificates_for_http_urls_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::with_defaults("m", dir.path().to_path_buf());
        cfg.client_tls.cert_file = Some(dir.path().join("absent.pem"));
        cfg.client_tls.key_file = Some(dir.path().join("absent-key.pem"));
        cfg.peer_tls = cfg.client_tls.clone();
        let tls = PortTls::build(&cfg).unwrap();
        assert!(tls.client.is_none() && tls.peer.is_none() && tls.dial.is_none());
        // An https member elsewhere in the cluster needs the dialer, and so the files.
        cfg.initial_cluster
            .push(("other".into(), "https://127.0.0.1:1".into()));
        let err = PortTls::build(&cfg).err().unwrap().to_string();
        assert!(err.starts_with("--peer-cert-file"), "{err}");
    }
}
