//! A small TCP proxy for injecting network faults between the members of an in-process
//! cluster.
//!
//! # Wiring
//!
//! Member `i` listens on its real peer address (`--listen-peer-urls`) and advertises its
//! proxy's address instead (`--initial-advertise-peer-urls` and its `--initial-cluster`
//! entry). Every member reaches member `i` through `i`'s proxy, so that proxy carries all
//! traffic *into* `i`: member `j`'s outgoing connections to `i` (its raft stream, snapshots,
//! forwarded requests).
//!
//! # Faults
//!
//! * [`Proxy::set_blocked`] cuts every connection into the target and refuses new ones (the
//!   listener is closed meanwhile, so connecting fails with "connection refused", as with a
//!   member that is down): nothing reaches the target, from anyone. (Accepting and closing at
//!   once instead is harsher: it once left a member's `Raft` call over such a connection
//!   pending forever, so that member never reached the healed peer again — cairn's peer
//!   stream now gives up on a call that takes no batch for 3 s.)
//! * [`Proxy::block_source`] cuts only the connections opened by one member (by member id).
//!   All peer URLs are one per member, so the proxy cannot tell senders apart by address: every
//!   member connects from 127.0.0.1 on an ephemeral port. It tells them apart by content
//!   instead: each cairn peer call (`cairnpb.Peer/*`) starts with a message whose field 1 is a
//!   `PeerHeader` naming the sender (`from`, field 2). The proxy reads the client's HTTP/2
//!   frames, forwards every frame before the first DATA frame, holds that DATA frame until it
//!   has decoded the sender, and only then forwards it — or cuts the connection if the sender
//!   is blocked. A connection carries calls of one member only (each member has its own
//!   channels), so it is identified once.
//! * [`Proxy::set_delay`] delays every chunk, in both directions, by a fixed time (latency,
//!   not bandwidth: chunks are timestamped on arrival and written when due, in order);
//!   [`Proxy::set_delay_jitter`] adds a random extra delay in `0..jitter` to each chunk (still
//!   written in order: a chunk never overtakes the one before it).
//! * [`Proxy::set_blackhole`] / [`Proxy::blackhole_source`] swallow traffic silently instead:
//!   connections are accepted and kept open, but every byte read from either side of an
//!   affected connection is discarded, so both ends see a live connection that carries nothing
//!   (as with packets dropped by a partitioned network; TCP connects still succeed here, since
//!   the proxy itself accepts them). A connection that lost bytes can never carry a valid
//!   HTTP/2 stream again, so it is cut as soon as the blackhole is lifted.
//! * [`Proxy::set_cut_chance`] "drops a share of the traffic": a TCP proxy cannot drop bytes
//!   inside a stream without corrupting it, so instead every chunk forwarded (either
//!   direction) cuts its whole connection with the given probability, chunk not forwarded.
//!   The sender sees its connection reset and redials; what was in flight is lost, as with
//!   a lossy link whose retransmissions eventually fail.
//!
//! Isolating member `i` completely (a symmetric partition of `i` from everyone else, with the
//! others still connected to each other) is therefore: block `i`'s proxy (nothing gets in)
//! and block source `i` on every other member's proxy (nothing gets out). Blocking only `i`'s
//! proxy is a one-way cut: `i` still talks to the others but hears nothing back.
//!
//! Cutting closes the sockets, so both ends see the connection fail (as after a reset); the
//! proxy never corrupts or drops bytes inside a live connection.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Default)]
struct Rules {
    /// Nothing passes.
    blocked: bool,
    /// Connections from these member ids are cut.
    blocked_sources: HashSet<u64>,
    /// Added to every chunk, each direction.
    delay: Duration,
    /// Up to this much more is added to every chunk, at random.
    jitter: Duration,
    /// Every byte of every connection is discarded.
    blackhole: bool,
    /// Every byte of the connections these member ids opened is discarded.
    blackholed_sources: HashSet<u64>,
    /// The probability that forwarding a chunk cuts its connection instead.
    cut_chance: f64,
}

impl Rules {
    /// Whether a connection from `source` (`None` = not identified yet) must be cut.
    fn cuts(&self, source: Option<u64>) -> bool {
        self.blocked || source.is_some_and(|s| self.blocked_sources.contains(&s))
    }

    /// Whether the bytes of a connection from `source` are swallowed.
    fn swallows(&self, source: Option<u64>) -> bool {
        self.blackhole || source.is_some_and(|s| self.blackholed_sources.contains(&s))
    }
}

/// A small, fast, non-cryptographic generator (splitmix64) for the proxy's random choices.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded differently for every connection of the process.
    fn fresh() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SplitMix(nanos ^ SEQ.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the proxy has seen, for tests to check that it identifies its clients.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted (none while blocked: the listener is closed then).
    pub accepted: usize,
    /// Connections identified per sender member id.
    pub sources: BTreeMap<u64, usize>,
    /// Connections whose first DATA frame did not carry a decodable peer header (these are
    /// never cut by [`Proxy::block_source`]).
    pub undecodable: usize,
    /// Connections cut at random by [`Proxy::set_cut_chance`].
    pub cut_by_chance: usize,
    /// Bytes swallowed by a blackhole.
    pub swallowed_bytes: u64,
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    rules: watch::Sender<Rules>,
    stats: Arc<Mutex<ProxyStats>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (rules, _) = watch::channel(Rules::default());
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            rules.subscribe(),
            stats.clone(),
        ));
        Ok(Proxy {
            addr,
            rules,
            stats,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` + [`addr`](Self::addr): the peer URL to advertise.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blocks (cuts every connection, refuses new ones) or unblocks all traffic to the target.
    pub fn set_blocked(&self, blocked: bool) {
        self.rules.send_modify(|r| r.blocked = blocked);
    }

    /// Blocks or unblocks the connections member `id` opens to the target.
    pub fn block_source(&self, id: u64, blocked: bool) {
        self.rules.send_modify(|r| {
            if blocked {
                r.blocked_sources.insert(id);
            } else {
                r.blocked_sources.remove(&id);
            }
        });
    }

    /// Delays every chunk forwarded from now on, both directions, by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.rules.send_modify(|r| r.delay = delay);
    }

    /// Delays every chunk forwarded from now on, both directions, by `delay` plus a random
    /// extra in `0..jitter` (chunks stay in order: one never overtakes the one before it).
    pub fn set_delay_jitter(&self, delay: Duration, jitter: Duration) {
        self.rules.send_modify(|r| {
            r.delay = delay;
            r.jitter = jitter;
        });
    }

    /// Swallows (or stops swallowing) every byte of every connection: accepted connections stay
    /// open and carry nothing. Lifting it cuts every connection that lost bytes.
    pub fn set_blackhole(&self, on: bool) {
        self.rules.send_modify(|r| r.blackhole = on);
    }

    /// Swallows (or stops swallowing) every byte, both ways, of the connections member `id`
    /// opens to the target. Lifting it cuts every connection that lost bytes.
    pub fn blackhole_source(&self, id: u64, on: bool) {
        self.rules.send_modify(|r| {
            if on {
                r.blackholed_sources.insert(id);
            } else {
                r.blackholed_sources.remove(&id);
            }
        });
    }

    /// From now on, forwarding a chunk (either direction) cuts its connection instead with
    /// probability `chance` (0 disables; clamped to `0..=1`).
    pub fn set_cut_chance(&self, chance: f64) {
        self.rules
            .send_modify(|r| r.cut_chance = chance.clamp(0.0, 1.0));
    }

    /// Lifts every fault: unblocked, no blocked sources, no delay.
    pub fn heal(&self) {
        self.rules.send_replace(Rules::default());
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> ProxyStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping `rules` afterwards closes every connection (their watch ends).
        self.accept.abort();
    }
}

/// Accepts connections while unblocked; while blocked the listener is closed, so connecting
/// fails at once (connection refused) as with a member that is down. The port is bound again
/// on unblocking (retried while something else briefly holds it).
async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mut rules: watch::Receiver<Rules>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let addr = listener.local_addr().expect("bound listener");
    let mut listener = Some(listener);
    loop {
        let blocked = rules.borrow_and_update().blocked;
        if blocked {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rules.changed() => if changed.is_err() { return },
            client = accept => match client {
                Some((client, _)) => {
                    stats.lock().unwrap_or_else(PoisonError::into_inner).accepted += 1;
                    tokio::spawn(serve(client, target, rules.clone(), stats.clone()));
                }
                // E.g. a connection reset while queued: keep serving.
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// One proxied connection: forwards both ways until both sides are done, or until the rules
/// say it must be cut (then both sockets are closed).
async fn serve(
    client: TcpStream,
    target: SocketAddr,
    mut rules: watch::Receiver<Rules>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let (source_tx, mut source) = watch::channel(None);
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let conn = Conn::default();
    let sniff = Sniff {
        sniffer: Sniffer::default(),
        source: &source_tx,
    };
    let (conn_ref, stats_ref) = (&conn, &stats);
    let pipes = {
        let (up_rules, down_rules) = (rules.clone(), rules.clone());
        let (up, down) = (
            Side {
                rules: up_rules,
                source: source.clone(),
                conn: conn_ref,
                stats: stats_ref,
                rng: SplitMix::fresh(),
            },
            Side {
                rules: down_rules,
                source: source.clone(),
                conn: conn_ref,
                stats: stats_ref,
                rng: SplitMix::fresh(),
            },
        );
        async move {
            tokio::join!(
                read_side(client_r, up_tx, up, Some(sniff)),
                write_side(server_w, up_rx),
                read_side(server_r, down_tx, down, None),
                write_side(client_w, down_rx),
            )
        }
    };
    let cut = async {
        loop {
            let src = *source.borrow_and_update();
            {
                let r = rules.borrow_and_update();
                if conn.cut.load(Ordering::SeqCst)
                    || r.cuts(src)
                    || (conn.tainted.load(Ordering::SeqCst) && !r.swallows(src))
                {
                    return;
                }
            }
            tokio::select! {
                r = rules.changed() => if r.is_err() { return },
                r = source.changed() => if r.is_err() { return },
                _ = conn.wake.notified() => {}
            }
        }
    };
    tokio::select! {
        _ = pipes => {}
        _ = cut => {}
    }
}

/// State one connection's two directions share with its cutter.
#[derive(Default)]
struct Conn {
    /// Cut it now (a chance cut).
    cut: AtomicBool,
    /// It lost bytes to a blackhole: cut it once the blackhole is lifted.
    tainted: AtomicBool,
    /// Wakes the cutter to look at `cut` and `tainted` again.
    wake: Notify,
}

/// What one direction of a connection needs to apply the rules.
struct Side<'a> {
    rules: watch::Receiver<Rules>,
    /// The connection's sender, once identified.
    source: watch::Receiver<Option<u64>>,
    conn: &'a Conn,
    stats: &'a Arc<Mutex<ProxyStats>>,
    rng: SplitMix,
}

/// The client→target direction's identification of its sender.
struct Sniff<'a> {
    sniffer: Sniffer,
    source: &'a watch::Sender<Option<u64>>,
}

/// Reads chunks and queues them, stamped with when they are due. With `sniff`, holds
/// everything from the first DATA frame on until the sender is known, and stops (without
/// forwarding) if that sender is blocked. Swallows chunks while a blackhole applies, and cuts
/// the connection at random as [`Rules::cut_chance`] says.
async fn read_side(
    mut from: OwnedReadHalf,
    to: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    mut side: Side<'_>,
    mut sniff: Option<Sniff<'_>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_due = Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return, // dropping `to` ends the writer, which half-closes
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        if let Some(s) = &mut sniff {
            let (ready, verdict) = s.sniffer.feed(&chunk);
            chunk = ready;
            match verdict {
                Verdict::Pending => {}
                Verdict::Source(id) => {
                    *side
                        .stats
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .sources
                        .entry(id)
                        .or_default() += 1;
                    let _ = s.source.send(Some(id));
                    if side.rules.borrow().cuts(Some(id)) {
                        return;
                    }
                    sniff = None;
                }
                Verdict::Undecodable => {
                    side.stats
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .undecodable += 1;
                    sniff = None;
                }
            }
        }
        if chunk.is_empty() {
            continue;
        }
        let (swallow, cut_chance, delay, jitter) = {
            let r = side.rules.borrow();
            let src = *side.source.borrow();
            (r.swallows(src), r.cut_chance, r.delay, r.jitter)
        };
        if swallow {
            side.stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .swallowed_bytes += chunk.len() as u64;
            side.conn.tainted.store(true, Ordering::SeqCst);
            side.conn.wake.notify_one();
            continue;
        }
        if cut_chance > 0.0 && side.rng.unit() < cut_chance {
            side.stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .cut_by_chance += 1;
            side.conn.cut.store(true, Ordering::SeqCst);
            side.conn.wake.notify_one();
            return;
        }
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(side.rng.unit())
        };
        // Never before the previous chunk: the writer takes them in order anyway.
        let due = (Instant::now() + delay + extra).max(last_due);
        last_due = due;
        if to.send((due, chunk)).is_err() {
            return;
        }
    }
}

/// Writes queued chunks when they are due; half-closes once the reader is done.
async fn write_side(
    mut to: OwnedWriteHalf,
    mut chunks: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
) {
    while let Some((due, chunk)) = chunks.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// What a client's first bytes say about who sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No DATA frame complete yet.
    Pending,
    /// The sender's member id.
    Source(u64),
    /// Not HTTP/2, or the first message carries no peer header.
    Undecodable,
}

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const FRAME_DATA: u8 = 0x0;
const FLAG_PADDED: u8 = 0x8;

/// Parses the client side of an HTTP/2 connection up to its first DATA frame.
#[derive(Debug, Default)]
struct Sniffer {
    /// Bytes received and not yet released.
    held: Vec<u8>,
    preface_seen: bool,
}

impl Sniffer {
    /// Takes the next bytes from the client; returns the bytes that may be forwarded now
    /// (every complete frame before the first DATA frame; everything once decided) and the
    /// verdict so far.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<u8>, Verdict) {
        self.held.extend_from_slice(bytes);
        let mut pos = 0;
        if !self.preface_seen {
            if self.held.len() < PREFACE.len() && PREFACE.starts_with(&self.held) {
                return (Vec::new(), Verdict::Pending);
            }
            if !self.held.starts_with(PREFACE) {
                return (std::mem::take(&mut self.held), Verdict::Undecodable);
            }
            self.preface_seen = true;
            pos = PREFACE.len();
        }
        let verdict = loop {
            let Some(h) = self.held.get(pos..pos + FRAME_HEADER) else {
                break Verdict::Pending;
            };
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let (kind, flags) = (h[3], h[4]);
            let start = pos + FRAME_HEADER;
            let Some(payload) = self.held.get(start..start + len) else {
                break Verdict::Pending;
            };
            if kind == FRAME_DATA && !payload.is_empty() {
                break match peer_sender(payload, flags) {
                    Some(id) => Verdict::Source(id),
                    None => Verdict::Undecodable,
                };
            }
            pos = start + len;
        };
        let release = match verdict {
            Verdict::Pending => self.held.drain(..pos).collect(),
            _ => std::mem::take(&mut self.held),
        };
        (release, verdict)
    }
}

/// The `from` of the `PeerHeader` (field 1) of the gRPC message starting in DATA payload
/// `payload`. The message may continue in later frames; the header is encoded first.
fn peer_sender(payload: &[u8], flags: u8) -> Option<u64> {
    let payload = if flags & FLAG_PADDED != 0 {
        let pad = *payload.first()? as usize;
        payload.get(1..payload.len().checked_sub(pad)?)?
    } else {
        payload
    };
    // gRPC length-prefixed message: compressed flag (cairn never compresses), 4-byte length.
    if *payload.first()? != 0 {
        return None;
    }
    let message = payload.get(5..)?;
    match proto_field(message, 1)? {
        Field::Bytes(header) => match proto_field(header, 2)? {
            Field::Varint(from) => Some(from),
            Field::Bytes(_) => None,
        },
        Field::Varint(_) => None,
    }
}

/// A protobuf field's value (fixed-width wire types are skipped, never returned).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The first field numbered `number` in protobuf `message`.
fn proto_field(message: &[u8], number: u64) -> Option<Field<'_>> {
    let mut pos = 0;
    while pos < message.len() {
        let key = varint(message, &mut pos)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(message, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(message, &mut pos)?).ok()?;
                let bytes = message.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                continue;
            }
            5 => {
                pos += 4;
                continue;
            }
            _ => return None,
        };
        if key >> 3 == number {
            return Some(value);
        }
    }
    None
}

fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    /// A gRPC message whose field 1 is a PeerHeader {cluster_id: 7, from: 300, to: 9}.
    fn raft_batch_message() -> Vec<u8> {
        let header = [0x08, 7, 0x10, 0xac, 0x02, 0x18, 9];
        let mut msg = vec![0x0a, header.len() as u8];
        msg.extend_from_slice(&header);
        msg.extend_from_slice(&[0x12, 2, b'h', b'i']);
        let mut grpc = vec![0];
        grpc.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        grpc.extend_from_slice(&msg);
        grpc
    }

    #[test]
    fn identifies_the_sender_and_holds_the_first_data_frame() {
        let settings = frame(0x4, 0, &[0, 3, 0, 0, 0, 100]);
        let headers = frame(0x1, 0x4, b"opaque hpack");
        let data = frame(FRAME_DATA, 0, &raft_batch_message());
        let mut all = PREFACE.to_vec();
        all.extend_from_slice(&settings);
        all.extend_from_slice(&headers);
        all.extend_from_slice(&data);
        // Byte by byte: frames before DATA are released as soon as complete, DATA is held.
        let mut s = Sniffer::default();
        let mut released = Vec::new();
        let mut verdict = Verdict::Pending;
        for (i, b) in all.iter().enumerate() {
            let (out, v) = s.feed(&[*b]);
            released.extend_from_slice(&out);
            verdict = v;
            if i + 1 < all.len() {
                assert_eq!(v, Verdict::Pending, "at byte {i}");
                assert!(released.len() <= all.len() - data.len());
            }
        }
        assert_eq!(verdict, Verdict::Source(300));
        assert_eq!(released, all);
    }

    #[test]
    fn padded_data_and_undecodable_input() {
        let mut padded = vec![2];
        padded.extend_from_slice(&raft_batch_message());
        padded.extend_from_slice(&[0, 0]);
        let mut all = PREFACE.to_vec();
        all.extend_from_slice(&frame(FRAME_DATA, FLAG_PADDED, &padded));
        assert_eq!(Sniffer::default().feed(&all).1, Verdict::Source(300));

        let mut all = PREFACE.to_vec();
        all.extend_from_slice(&frame(FRAME_DATA, 0, &[0, 0, 0, 0, 1, 0x08]));
        assert_eq!(Sniffer::default().feed(&all).1, Verdict::Undecodable);
        let (out, v) = Sniffer::default().feed(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((out.len(), v), (18, Verdict::Undecodable));
    }
}
