//! The server side: TLS on accepted connections of an `https://` listener.
//!
//! [`incoming`] accepts TCP connections and runs each handshake in its own task (bounded by
//! [`HANDSHAKE_TIMEOUT`]), so a client that stalls mid-handshake never holds up the others,
//! as etcd's TLS listener does. Connections that complete it come out as [`TlsConn`]s, ready
//! for the gRPC/HTTP server; the others are logged as etcd logs them ("rejected connection",
//! with the remote address and the reason) and closed.
//!
//! A plaintext HTTP/1 request (`GET /health` without TLS) is answered with Go's
//! `400 Client sent an HTTP request to an HTTPS server.` rather than dropped, so `curl
//! http://...` says what is wrong; any other plaintext (a gRPC client without TLS) fails the
//! handshake at once and the connection is closed, which such a client reports as an error.

use super::policy::TlsPolicy;
use super::reload::Reloading;
use super::verify::{check_san, Allowed, AllowedClientCert};
use super::{pem, Port, Resolved, TlsError};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client has, from connecting, to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of a TLS record carrying a handshake message: a ClientHello starts so.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Go's `net/http` answer to a plaintext HTTP request on a TLS port.
const PLAINTEXT_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// One port's TLS server configuration, reloaded when its files change.
pub struct ServerTls {
    port: Port,
    config: Reloading<ServerConfig>,
}

impl ServerTls {
    /// Loads the port's certificate, key, CA and CRL; any problem names the flag and file.
    pub fn new(resolved: &Resolved, policy: &TlsPolicy) -> Result<Arc<ServerTls>, TlsError> {
        let info = &resolved.info;
        let flags = resolved.port.flags();
        let verifies = client_certs_required(resolved);
        if resolved.self_signed && (info.client_cert_auth || info.trusted_ca_file.is_some()) {
            tracing::warn!(
                port = resolved.port.name(),
                "{} replaces {} and {}: client certificates are not verified",
                flags.auto_tls,
                flags.client_cert_auth,
                flags.trusted_ca
            );
        }
        if info.crl_file.is_some() && !verifies {
            tracing::warn!(
                port = resolved.port.name(),
                "{} has no effect: clients are not asked for certificates",
                flags.crl
            );
        }
        let mut paths = vec![resolved.cert.clone(), resolved.key.clone()];
        if verifies {
            paths.extend(info.trusted_ca_file.clone());
            paths.extend(info.crl_file.clone());
        }
        let r = resolved.clone();
        let policy = policy.clone();
        let config = Reloading::new(format!("{} server", r.port.name()), paths, move || {
            server_config(&r, &policy)
        })?;
        Ok(Arc::new(ServerTls {
            port: resolved.port,
            config,
        }))
    }

    /// The configuration for a new connection (rebuilt if the files changed).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.get()
    }

    /// Runs the server side of the handshake on an accepted connection; the error says why
    /// the connection was refused.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<TlsConn, String> {
        let info = tcp.connect_info();
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake_inner(tcp, &info))
            .await
            .map_err(|_| format!("TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}"))?
            .map(|inner| TlsConn { inner, info })
    }

    async fn handshake_inner(
        &self,
        tcp: TcpStream,
        info: &TcpConnectInfo,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let mut first = [0u8; 5];
        let n = tcp.peek(&mut first).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".into());
        }
        if looks_like_http(&first[..n]) {
            answer_plaintext_http(tcp).await;
            return Err("client sent an HTTP request to an HTTPS server".into());
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            // Plaintext of another kind (a gRPC client without TLS): closed without a word,
            // which such a client reports at once; Go's words for the log.
            return Err("tls: first record does not look like a TLS handshake".into());
        }
        let stream = tokio_rustls::TlsAcceptor::from(self.config())
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        if self.port == Port::Peer {
            // etcd's peer listener checks the client certificate's names against the address.
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            if let (Some(cert), Some(remote)) = (presented, info.remote_addr) {
                check_san(cert, remote.ip()).await?;
            }
        }
        Ok(stream)
    }
}

/// Whether a listener asks clients for certificates: etcd does so when
/// `--client-cert-auth` is set or a trusted CA is given, unless `--auto-tls` replaced both.
fn client_certs_required(r: &Resolved) -> bool {
    !r.self_signed && (r.info.client_cert_auth || r.info.trusted_ca_file.is_some())
}

/// Builds a port's rustls server configuration from its files.
fn server_config(r: &Resolved, policy: &TlsPolicy) -> Result<ServerConfig, TlsError> {
    let flags = r.port.flags();
    let provider = policy.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&policy.versions())
        .map_err(|e| TlsError::Config(format!("TLS versions and cipher suites: {e}")))?;
    let builder = if client_certs_required(r) {
        let ca = r.info.trusted_ca_file.as_ref().ok_or_else(|| {
            TlsError::Config(format!(
                "{} needs {} (the CA that signs client certificates)",
                flags.client_cert_auth, flags.trusted_ca
            ))
        })?;
        let roots = Arc::new(pem::load_roots(flags.trusted_ca, ca)?);
        let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        if let Some(crl) = &r.info.crl_file {
            // As etcd: a listed serial is refused; certificates of CAs without a CRL pass.
            verifier = verifier
                .with_crls(pem::load_crls(flags.crl, crl)?)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build().map_err(|e| match &r.info.crl_file {
            Some(crl) => TlsError::file(flags.crl, crl, e),
            None => TlsError::file(flags.trusted_ca, ca, e),
        })?;
        let verifier: Arc<dyn ClientCertVerifier> = match Allowed::from_info(&r.info) {
            Some(allowed) => Arc::new(AllowedClientCert {
                inner: verifier,
                allowed,
            }),
            None => verifier,
        };
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let certs = pem::load_certs(flags.cert, &r.cert)?;
    let key = pem::load_key(flags.key, &r.key)?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::key_mismatch(&flags, &r.key, &r.cert, e))?;
    // gRPC needs h2; HTTP/1.1 serves /health and friends to clients that ask for it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's test for a plaintext HTTP request where a TLS record was expected.
fn looks_like_http(first: &[u8]) -> bool {
    matches!(first, b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO")
}

/// Answers a plaintext HTTP request with Go's 400 and closes the connection. The request is
/// read first and the close waits briefly for the client's, so the kernel does not reset the
/// connection (and lose the answer) over unread bytes.
async fn answer_plaintext_http(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut sink)).await;
    if tcp.write_all(PLAINTEXT_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serves TLS on `listener`: every accepted connection is handshaken in its own task; those
/// that succeed come out of the stream, the others are logged and closed. The accept loop
/// stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: transient, as for a plain listener.
                    tracing::warn!(port = tls.port.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Nagle off, as etcd's gRPC server has it.
            let _ = tcp.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tls.handshake(tcp).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(error) => tracing::warn!(
                        remote_addr = %remote,
                        port = tls.port.name(),
                        error = %error,
                        "rejected connection"
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An accepted connection after its TLS handshake. Its connect info is the TCP connection's,
/// so everything that reads the remote address works as on a plaintext listener.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl TlsConn {
    /// The TLS session (negotiated version, suite, the client's certificates).
    pub fn session(&self) -> &rustls::ServerConnection {
        self.inner.get_ref().1
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
