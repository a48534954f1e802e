//! End to end: a tonic server whose connections go through `AuthorityNormalizer` serves HTTP/2
//! requests with the `:authority` values etcd clients send, which h2 alone refuses.
//!
//! The h2 client crate cannot send such a request (it takes `:authority` from an `http::Uri`,
//! which would not parse), so those requests are written by hand: frames and HPACK bytes.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_server::h2_authority::AuthorityNormalizer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

/// Starts a tonic server answering `GET /ok` with 200, its connections wrapped or not.
async fn start_server(normalize: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    // HTTP/1.1 on as well, as on cairn's client port (for /health and friends).
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app));
    let incoming = TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if normalize {
            let incoming = incoming.map(|conn| conn.map(AuthorityNormalizer::new));
            router.serve_with_incoming(incoming).await
        } else {
            router.serve_with_incoming(incoming).await
        }
    });
    addr
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend(stream_id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /ok` over http with the given `:authority`, stored in the client's dynamic table
/// (literal with incremental indexing, as Go's gRPC client does).
fn get_with_authority(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 3]; // :method GET, :scheme http, :path (literal)
    block.extend(b"/ok");
    block.extend([0x41, authority.len() as u8]); // :authority, incremental indexing
    block.extend(authority.as_bytes());
    block
}

/// The same request with `:authority` taken from the dynamic table (the newest entry).
fn get_with_indexed_authority() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 3];
    block.extend(b"/ok");
    block.push(0xbe); // index 62
    block
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Status(String),
    Reset(u32),
    GoAway(u32),
}

/// A bare HTTP/2 client connection.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: fluke_hpack::Decoder<'static>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            decoder: fluke_hpack::Decoder::new(),
        }
    }

    async fn next_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let id = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                    return (f[3], f[4], id, f[9..].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one request (a whole header block, END_STREAM) and waits for its fate.
    async fn request(&mut self, stream_id: u32, block: &[u8]) -> Outcome {
        let f = frame(HEADERS, END_STREAM | END_HEADERS, stream_id, block);
        self.stream.write_all(&f).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (kind, flags, id, payload) = self.next_frame().await;
                match kind {
                    HEADERS => {
                        // The server's responses are plain HEADERS frames (no padding).
                        assert_ne!(flags & END_HEADERS, 0);
                        let fields = self.decoder.decode(&payload).unwrap();
                        if id == stream_id {
                            let status = fields.iter().find(|(n, _)| n == b":status");
                            if let Some((_, v)) = status {
                                return Outcome::Status(String::from_utf8(v.clone()).unwrap());
                            }
                        }
                    }
                    SETTINGS if flags & 0x1 == 0 => {
                        let ack = frame(SETTINGS, 0x1, 0, &[]);
                        self.stream.write_all(&ack).await.unwrap();
                    }
                    RST_STREAM if id == stream_id => {
                        let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                        return Outcome::Reset(code);
                    }
                    GOAWAY => {
                        let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                        return Outcome::GoAway(code);
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("no answer from the server")
    }
}

fn ok() -> Outcome {
    Outcome::Status("200".into())
}

#[tokio::test]
async fn etcd_authorities_are_served_through_the_normalizer() {
    let addr = start_server(true).await;
    let mut client = RawClient::connect(addr).await;
    let url = format!("http://{addr}");
    // etcdctl 3.4: the endpoint URL as the authority; then the same from the dynamic table.
    assert_eq!(client.request(1, &get_with_authority(&url)).await, ok());
    assert_eq!(client.request(3, &get_with_indexed_authority()).await, ok());
    // etcd clientv3 v3.5.0: the resolver target.
    let initially = format!("#initially=[http://{addr};http://127.0.0.1:1]");
    assert_eq!(
        client.request(5, &get_with_authority(&initially)).await,
        ok()
    );
    assert_eq!(client.request(7, &get_with_indexed_authority()).await, ok());
    // A valid authority, and one that cannot be fixed (the header is dropped).
    let plain = addr.to_string();
    assert_eq!(client.request(9, &get_with_authority(&plain)).await, ok());
    let hopeless = "not an authority";
    assert_eq!(
        client.request(11, &get_with_authority(hopeless)).await,
        ok()
    );
}

#[tokio::test]
async fn the_same_requests_are_refused_without_it() {
    let addr = start_server(false).await;
    let mut client = RawClient::connect(addr).await;
    let url = format!("http://{addr}");
    let refused = Outcome::Reset(PROTOCOL_ERROR);
    assert_eq!(client.request(1, &get_with_authority(&url)).await, refused);
    assert_eq!(
        client.request(3, &get_with_indexed_authority()).await,
        refused
    );
    let initially = format!("#initially=[http://{addr}]");
    assert_eq!(
        client.request(5, &get_with_authority(&initially)).await,
        refused
    );
    // The connection itself is fine: a valid authority is served.
    let plain = addr.to_string();
    assert_eq!(client.request(7, &get_with_authority(&plain)).await, ok());
}

#[tokio::test]
async fn a_regular_h2_client_is_unaffected() {
    // h2's own encoder: Huffman strings and dynamic-table references on repeat requests.
    let addr = start_server(true).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for i in 0..5 {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::get(format!("http://{addr}/ok"))
            .header("x-request", i.to_string())
            .header("user-agent", "etcdctl/3.4")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(bytes, b"ok");
    }
}

#[tokio::test]
async fn http1_on_the_same_port_is_untouched() {
    let addr = start_server(true).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: http://x:1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("no answer from the server")
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nok"), "{out}");
}
