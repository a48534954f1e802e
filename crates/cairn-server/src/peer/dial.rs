//! The one place a connection to another member's peer URL is made: plain for `http://`,
//! TLS for `https://` with this member's peer TLS configuration (`--peer-*` flags).
//!
//! For TLS the TCP connection and handshake are made by cairn's own connector and handed to
//! tonic as an already-secure stream, under an `http://` URI: tonic never sees `https`, so its
//! own TLS layer (compiled in whenever another crate in the build enables a tonic TLS feature)
//! stays out of the way, and the TLS settings are exactly the ones the flags give.

use crate::tls::connector::ClientTls;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why a peer connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The URL does not parse.
    #[error("invalid peer URL {url}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An `https://` peer URL, but this member has no peer TLS configuration.
    #[error("peer URL {0} uses https but this member has no peer TLS (--peer-cert-file/--peer-key-file or --peer-auto-tls)")]
    NoTls(String),
    /// Connecting (or the TLS handshake) failed; the text carries the causes.
    #[error("{0}")]
    Connect(String),
}

/// Per-call connection settings.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions {
    /// Bound on the TCP connect plus, for TLS, the handshake.
    pub connect_timeout: Duration,
    /// Bound on each request, if any.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 keep-alive ping interval and timeout, if any.
    pub keepalive: Option<Duration>,
    /// Return at once and connect on first use (reconnecting as needed).
    pub lazy: bool,
}

impl DialOptions {
    /// Connect now, bounded by `connect_timeout`, no other settings.
    pub fn now(connect_timeout: Duration) -> DialOptions {
        DialOptions {
            connect_timeout,
            request_timeout: None,
            keepalive: None,
            lazy: false,
        }
    }
}

/// Opens channels to peers.
#[derive(Clone, Default)]
pub struct PeerDialer {
    tls: Option<Arc<ClientTls>>,
}

impl PeerDialer {
    /// A dialer using `tls` for `https://` peer URLs (`None`: only `http://` works).
    pub fn new(tls: Option<Arc<ClientTls>>) -> PeerDialer {
        PeerDialer { tls }
    }

    /// A channel to the member at `url`, plain or TLS by the URL's scheme.
    pub async fn channel(&self, url: &str, opts: DialOptions) -> Result<Channel, DialError> {
        let (secure, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => {
                return Err(DialError::InvalidUrl {
                    url: url.into(),
                    reason: "expected http:// or https://".into(),
                })
            }
        };
        let invalid = |e: tonic::transport::Error| DialError::InvalidUrl {
            url: url.into(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(format!("http://{rest}"))
            .map_err(invalid)?
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true);
        if let Some(t) = opts.request_timeout {
            endpoint = endpoint.timeout(t);
        }
        if let Some(k) = opts.keepalive {
            endpoint = endpoint.http2_keep_alive_interval(k).keep_alive_timeout(k);
        }
        if !secure {
            if opts.lazy {
                return Ok(endpoint.connect_lazy());
            }
            return endpoint.connect().await.map_err(connect_error);
        }
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| DialError::NoTls(url.into()))?;
        let connector = tower::service_fn(move |uri: Uri| {
            let tls = tls.clone();
            async move {
                let host = uri.host().unwrap_or_default().to_string();
                let port = uri.port_u16().unwrap_or(443);
                let stream = tls.connect(&host, port).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        if opts.lazy {
            return Ok(endpoint.connect_with_connector_lazy(connector));
        }
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(connect_error)
    }
}

/// The error with its causes (tonic's own text is only "transport error").
fn connect_error(e: tonic::transport::Error) -> DialError {
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(s) = cur {
        // io::Error repeats the text of the error it wraps.
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    DialError::Connect(text)
}
