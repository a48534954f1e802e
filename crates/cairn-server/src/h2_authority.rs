//! Accept the HTTP/2 `:authority` values real etcd clients send.
//!
//! etcd clients put things in `:authority` that are not valid URI authorities, and etcd (Go's
//! gRPC server) takes them without a word:
//!
//! - etcdctl 3.4 with `--endpoints=http://127.0.0.1:2379` sends
//!   `:authority: http://127.0.0.1:2379`;
//! - etcd clientv3 v3.5.0 sends `:authority: #initially=[https://example.com:2379]` (its resolver
//!   target, with the endpoints joined by `;`).
//!
//! The `h2` crate under tonic/hyper parses `:authority` with `http::uri::Authority` and answers
//! such a request with `RST_STREAM(PROTOCOL_ERROR)` ("malformed authority"), before any of
//! cairn's code sees it. h2 has no switch for this, so [`AuthorityNormalizer`] fixes the bytes on
//! their way in: it wraps an accepted connection, follows the client's HTTP/2 frames, and
//! rewrites each request header block so that `:authority` is valid (see
//! [`normalize_authority`]) before h2 reads it. Everything else passes through untouched:
//! HTTP/1.1 connections (the client port also serves `/health` and friends), every frame that is
//! not `HEADERS`/`CONTINUATION`, and all writes.
//!
//! How a header block is rewritten: the `HEADERS` frame and its `CONTINUATION`s are collected,
//! padding and priority fields are stripped, the block is HPACK-decoded against a copy of the
//! client's dynamic table, and the header list is encoded again with literal representations
//! that never touch the dynamic table (static-table name indexes, plain non-Huffman strings),
//! so h2's own decoder table stays empty and can never disagree with the client's. The result
//! goes out as one `HEADERS` frame (plus `CONTINUATION`s when it is over 16 KiB).
//!
//! Anything unexpected (a malformed frame sequence, an HPACK error, a header block over
//! [`MAX_HEADER_BLOCK`]) stops the rewriting for the rest of the connection: the bytes held so
//! far and everything after them pass through unchanged, and h2 deals with the client's own bytes
//! (typically with a GOAWAY). Nothing panics and nothing waits for bytes that may never come.
//! Because the re-encoded blocks never add entries to h2's table, a later reference into the
//! client's table either resolves to the same entry in h2's table or fails there with a
//! compression error; it can never decode to a different header.

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame payload the adapter emits: the minimum SETTINGS_MAX_FRAME_SIZE, always allowed.
const MAX_EMITTED_FRAME: usize = 16_384;
/// The HPACK dynamic table size h2 starts with and cairn never changes (SETTINGS_HEADER_TABLE_SIZE
/// is not advertised, so it stays at the protocol default); a client's size update above it is
/// an error.
const HEADER_TABLE_SIZE: usize = 4_096;
/// Largest rewritten header block; past it (only a header-list bomb gets there: h2 refuses lists
/// over 16 KiB by default) the connection falls back to pass-through.
const MAX_REWRITTEN_BLOCK: usize = 1024 * 1024;
/// Buffers above this capacity are freed once empty rather than kept for the connection's life.
const BUFFER_KEEP: usize = 4 * MAX_EMITTED_FRAME;
/// The name of the pseudo-header this module exists for.
const AUTHORITY: &[u8] = b":authority";

/// Largest header block (`HEADERS` plus `CONTINUATION` frames, frame headers included) the
/// adapter buffers to rewrite. A bigger one is passed through unchanged and rewriting stops for
/// that connection; h2 accepts at most 16 KiB of decoded headers by default, so no real request
/// comes near it.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// What [`normalize_authority`] makes of an `:authority` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityFix<'a> {
    /// Already a valid authority: keep it byte for byte.
    Keep,
    /// Use this part of the value instead (always a sub-slice of it).
    Replace(&'a [u8]),
    /// Nothing usable: drop the `:authority` header (h2 accepts a request without one).
    Drop,
}

/// Decides what to send h2 for a client's `:authority` value.
///
/// A value `http::uri::Authority` accepts is kept as it is. Otherwise etcd 3.5.0's
/// `#initially=[url1;url2...]` form is reduced to its first URL, and a value containing `://`
/// to what follows the scheme, up to the first `/`, `?` or `#`; if that is a valid authority it
/// replaces the value, and if not the header is dropped.
pub fn normalize_authority(value: &[u8]) -> AuthorityFix<'_> {
    match authority_fix(value) {
        Fix::Keep => AuthorityFix::Keep,
        Fix::Replace(range) => AuthorityFix::Replace(&value[range]),
        Fix::Drop => AuthorityFix::Drop,
    }
}

/// [`normalize_authority`]'s verdict with the replacement as a range, so it can be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    Keep,
    Replace(Range<usize>),
    Drop,
}

fn is_valid_authority(value: &[u8]) -> bool {
    // The same check h2 makes (`Authority::from_maybe_shared` parses as `try_from` does).
    http::uri::Authority::try_from(value).is_ok()
}

fn authority_fix(value: &[u8]) -> Fix {
    if is_valid_authority(value) {
        return Fix::Keep;
    }
    let mut range = 0..value.len();
    const INITIALLY: &[u8] = b"#initially=[";
    if value.starts_with(INITIALLY) {
        let list = INITIALLY.len()..value.len();
        let end = value[list.clone()]
            .iter()
            .position(|&b| b == b']' || b == b';')
            .map_or(list.end, |i| list.start + i);
        range = list.start..end;
    }
    if let Some(i) = value[range.clone()].windows(3).position(|w| w == b"://") {
        let host = range.start + i + 3;
        let end = value[host..range.end]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .map_or(range.end, |i| host + i);
        range = host..end;
    }
    if range.len() < value.len() && is_valid_authority(&value[range.clone()]) {
        Fix::Replace(range)
    } else {
        Fix::Drop
    }
}

/// A connection adapter that makes the `:authority` of every HTTP/2 request acceptable to h2.
///
/// Wrap each accepted connection before handing it to tonic or hyper; reads are rewritten as the
/// [module documentation](self) describes, writes pass straight through, and
/// [`Connected::connect_info`] is the inner stream's, so
/// `serve_with_incoming` takes a stream of `io::Result<AuthorityNormalizer<TcpStream>>` and the
/// services see the same `TcpConnectInfo` as before:
///
/// ```ignore
/// use tokio_stream::StreamExt;
/// let incoming = TcpListenerStream::new(listener).map(|conn| conn.map(AuthorityNormalizer::new));
/// router.serve_with_incoming(incoming).await?;
/// ```
pub struct AuthorityNormalizer<S> {
    inner: S,
    parser: Parser,
    /// Bytes read from `inner` that the parser has not looked at yet: the tail of a read that
    /// did not fit in the caller's buffer next to rewritten output, or a partial frame header.
    backlog: Vec<u8>,
    backlog_pos: usize,
}

impl<S> AuthorityNormalizer<S> {
    /// Wraps an accepted connection; nothing has been read from it yet.
    pub fn new(inner: S) -> Self {
        AuthorityNormalizer {
            inner,
            parser: Parser::new(),
            backlog: Vec::new(),
            backlog_pos: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the connection. Bytes the adapter has read but not yet handed out are lost, so
    /// call this only before the first read or after the last.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// True when reads can go straight to the inner stream: rewriting is over and nothing is
    /// buffered.
    fn is_transparent(&self) -> bool {
        matches!(self.parser.phase, Phase::Passthrough)
            && !self.parser.has_output()
            && self.backlog_pos == self.backlog.len()
    }

    /// Hands the caller's buffer whatever is ready without reading: pending rewritten output
    /// first, then the backlog, frame by frame. Stops when the buffer is full or the backlog is
    /// used up (or holds only a partial frame header).
    fn drain(&mut self, buf: &mut ReadBuf<'_>) {
        loop {
            if self.parser.has_output() {
                let out = &self.parser.out[self.parser.out_pos..];
                let n = out.len().min(buf.remaining());
                buf.put_slice(&out[..n]);
                self.parser.out_pos += n;
                if self.parser.has_output() {
                    return;
                }
                self.parser.clear_output();
            }
            if self.backlog_pos == self.backlog.len() {
                self.backlog.clear();
                self.backlog_pos = 0;
                if self.backlog.capacity() > BUFFER_KEEP {
                    self.backlog = Vec::new();
                }
                return;
            }
            if buf.remaining() == 0 {
                return;
            }
            let input = &self.backlog[self.backlog_pos..];
            match self.parser.step(input) {
                Step::Pass(n) => {
                    let n = n.min(buf.remaining());
                    buf.put_slice(&input[..n]);
                    self.parser.advance(n);
                    self.backlog_pos += n;
                }
                Step::Consumed(n) => self.backlog_pos += n,
                Step::NeedMore => {
                    self.backlog.drain(..self.backlog_pos);
                    self.backlog_pos = 0;
                    return;
                }
            }
        }
    }

    /// Goes through bytes just read into `buf[from..]` in place: pass-through bytes stay (moved
    /// down over consumed header frames), rewritten header blocks are put where their frames
    /// were when the buffer has room, and whatever cannot be placed yet goes to the backlog.
    fn scan_in_place(&mut self, buf: &mut ReadBuf<'_>, from: usize) {
        let mut end = buf.filled().len();
        let mut read = from;
        let mut write = from;
        // Shifting the unread tail to make room is cheaper than a trip through the backlog for
        // one or two header blocks per read, but quadratic for many pipelined ones: allow moving
        // at most as many bytes as were read, then use the backlog (two copies at most).
        let mut shift_budget = end - from;
        while read < end {
            let data = buf.filled_mut();
            match self.parser.step(&data[read..end]) {
                Step::Pass(n) => {
                    if write != read {
                        data.copy_within(read..read + n, write);
                    }
                    self.parser.advance(n);
                    read += n;
                    write += n;
                }
                Step::Consumed(n) => {
                    read += n;
                    if !self.parser.has_output() {
                        continue;
                    }
                    let out_len = self.parser.out.len() - self.parser.out_pos;
                    let gap = read - write;
                    if out_len > gap {
                        // Make room by shifting the unread tail up, if the buffer has it.
                        let extra = out_len - gap;
                        let tail = end - read;
                        if buf.remaining() < extra || tail > shift_budget {
                            break;
                        }
                        shift_budget -= tail;
                        buf.initialize_unfilled_to(extra);
                        buf.set_filled(end + extra);
                        buf.filled_mut().copy_within(read..end, read + extra);
                        read += extra;
                        end += extra;
                    }
                    let out = &self.parser.out[self.parser.out_pos..];
                    buf.filled_mut()[write..write + out_len].copy_from_slice(out);
                    write += out_len;
                    self.parser.clear_output();
                }
                Step::NeedMore => break,
            }
        }
        self.backlog.extend_from_slice(&buf.filled()[read..end]);
        buf.set_filled(write);
    }

    /// Reads more from the inner stream into `buf` and scans it. Returns `Ok(true)` at end of
    /// stream. Only called with no pending output and at most a partial frame header in the
    /// backlog.
    fn read_more(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<bool>>
    where
        S: AsyncRead + Unpin,
    {
        let before = buf.filled().len();
        let held = self.backlog.len() - self.backlog_pos;
        if held > 0 && buf.remaining() <= held {
            // A caller buffer too small to put the held bytes back in front: read on the side.
            let mut side = [0u8; 64];
            let mut side = ReadBuf::new(&mut side);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut side))?;
            if side.filled().is_empty() {
                return Poll::Ready(Ok(true));
            }
            self.backlog.extend_from_slice(side.filled());
            return Poll::Ready(Ok(false));
        }
        // Put the held partial frame header back in front of the new bytes, and scan them all.
        buf.put_slice(&self.backlog[self.backlog_pos..]);
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                buf.set_filled(before);
                return Poll::Ready(Err(e));
            }
            Poll::Pending => {
                buf.set_filled(before);
                return Poll::Pending;
            }
        }
        if buf.filled().len() == before + held {
            buf.set_filled(before);
            return Poll::Ready(Ok(true));
        }
        self.backlog.clear();
        self.backlog_pos = 0;
        self.scan_in_place(buf, before);
        Poll::Ready(Ok(false))
    }
}

impl<S: fmt::Debug> fmt::Debug for AuthorityNormalizer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityNormalizer")
            .field("inner", &self.inner)
            .field(
                "rewriting",
                &!matches!(self.parser.phase, Phase::Passthrough),
            )
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityNormalizer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_transparent() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let start = buf.filled().len();
        loop {
            this.drain(buf);
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
            if this.is_transparent() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if ready!(this.read_more(cx, buf))? {
                // End of stream: whatever is held (a truncated header block or frame header)
                // goes out as it came, then the end.
                let held = &this.backlog[this.backlog_pos..];
                if !this.parser.abort_with(held) {
                    return Poll::Ready(Ok(()));
                }
                this.backlog.clear();
                this.backlog_pos = 0;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityNormalizer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityNormalizer<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

// ===== the frame parser =====

/// Where the parser is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Matching the client preface; this many bytes matched so far.
    Preface(usize),
    /// At a frame boundary.
    FrameHeader,
    /// Inside a frame that passes through; this many bytes (header included) are left.
    Forward(usize),
    /// Collecting a HEADERS or CONTINUATION frame; this many payload bytes are left.
    Collect(usize),
    /// Not HTTP/2, or rewriting gave up: everything passes through.
    Passthrough,
}

/// What the parser made of the start of its input.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The first `n` bytes pass through unchanged; report how many were taken with `advance`.
    Pass(usize),
    /// The parser took the first `n` bytes (perhaps none); check for output.
    Consumed(usize),
    /// A frame header is incomplete: call again with more bytes.
    NeedMore,
}

struct Parser {
    phase: Phase,
    /// A header block is being collected (HEADERS seen, END_HEADERS not yet).
    in_block: bool,
    stream_id: u32,
    end_stream: bool,
    /// PRIORITY fields of the block's HEADERS frame, kept only when the stream depends on
    /// itself, so h2 still resets that stream as RFC 9113 §5.3.1 asks.
    priority: Option<[u8; 5]>,
    /// The current frame: where its header starts in `raw`, its type and flags.
    frame_start: usize,
    frame_type: u8,
    frame_flags: u8,
    /// The block's frames exactly as received, to pass on if rewriting gives up.
    raw: Vec<u8>,
    /// Where the header block fragments are in `raw`.
    fragments: Vec<Range<usize>>,
    /// The fragments joined, when there is more than one.
    joined: Vec<u8>,
    /// Rewritten bytes not yet handed out, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    hpack: Rewriter,
}

impl Parser {
    fn new() -> Self {
        Parser {
            phase: Phase::Preface(0),
            in_block: false,
            stream_id: 0,
            end_stream: false,
            priority: None,
            frame_start: 0,
            frame_type: 0,
            frame_flags: 0,
            raw: Vec::new(),
            fragments: Vec::new(),
            joined: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            hpack: Rewriter::new(),
        }
    }

    fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    fn clear_output(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > BUFFER_KEEP {
            self.out = Vec::new();
        }
    }

    /// Looks at the start of `input` (not empty). Only called with no pending output.
    fn step(&mut self, input: &[u8]) -> Step {
        debug_assert!(!input.is_empty() && !self.has_output());
        match self.phase {
            Phase::Passthrough => Step::Pass(input.len()),
            Phase::Forward(left) => Step::Pass(left.min(input.len())),
            Phase::Preface(matched) => {
                let n = (PREFACE.len() - matched).min(input.len());
                if input[..n] != PREFACE[matched..matched + n] {
                    // Not HTTP/2 with prior knowledge (HTTP/1.1): leave it alone for good.
                    self.phase = Phase::Passthrough;
                    return Step::Pass(input.len());
                }
                Step::Pass(n)
            }
            Phase::FrameHeader => self.frame_header(input),
            Phase::Collect(left) => {
                let n = left.min(input.len());
                self.raw.extend_from_slice(&input[..n]);
                if n == left {
                    self.finish_frame();
                } else {
                    self.phase = Phase::Collect(left - n);
                }
                Step::Consumed(n)
            }
        }
    }

    /// Records that `n` bytes of a [`Step::Pass`] were handed out.
    fn advance(&mut self, n: usize) {
        match &mut self.phase {
            Phase::Preface(matched) => {
                *matched += n;
                if *matched == PREFACE.len() {
                    self.phase = Phase::FrameHeader;
                }
            }
            Phase::Forward(left) => {
                *left -= n;
                if *left == 0 {
                    self.phase = Phase::FrameHeader;
                }
            }
            _ => {}
        }
    }

    fn frame_header(&mut self, input: &[u8]) -> Step {
        if input.len() < 4 {
            return Step::NeedMore;
        }
        let len =
            (usize::from(input[0]) << 16) | (usize::from(input[1]) << 8) | usize::from(input[2]);
        let kind = input[3];
        if !self.in_block {
            match kind {
                FRAME_HEADERS => {}
                FRAME_CONTINUATION | FRAME_PUSH_PROMISE => {
                    // Protocol errors h2 reports itself.
                    self.phase = Phase::Passthrough;
                    return Step::Pass(input.len());
                }
                _ => {
                    let total = FRAME_HEADER_LEN + len;
                    self.phase = Phase::Forward(total);
                    return Step::Pass(total.min(input.len()));
                }
            }
        }
        if input.len() < FRAME_HEADER_LEN {
            return Step::NeedMore;
        }
        let flags = input[4];
        let stream_id = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        if self.in_block {
            if kind != FRAME_CONTINUATION || stream_id != self.stream_id {
                return self.abort();
            }
        } else {
            if stream_id == 0 {
                self.phase = Phase::Passthrough;
                return Step::Pass(input.len());
            }
            self.in_block = true;
            self.stream_id = stream_id;
            self.end_stream = flags & FLAG_END_STREAM != 0;
            self.priority = None;
        }
        if self.raw.len() + FRAME_HEADER_LEN + len > MAX_HEADER_BLOCK {
            return self.abort();
        }
        self.frame_start = self.raw.len();
        self.frame_type = kind;
        self.frame_flags = flags;
        self.raw.extend_from_slice(&input[..FRAME_HEADER_LEN]);
        if len == 0 {
            self.finish_frame();
        } else {
            self.phase = Phase::Collect(len);
        }
        Step::Consumed(FRAME_HEADER_LEN)
    }

    /// The current HEADERS/CONTINUATION frame is all in `raw`: note its fragment, and rewrite
    /// the block if it ends here.
    fn finish_frame(&mut self) {
        let mut lo = self.frame_start + FRAME_HEADER_LEN;
        let mut hi = self.raw.len();
        if self.frame_type == FRAME_HEADERS {
            // The same checks, in the same order, as h2's `Headers::load`.
            let mut pad = 0;
            if self.frame_flags & FLAG_PADDED != 0 {
                if lo == hi {
                    self.abort();
                    return;
                }
                pad = usize::from(self.raw[lo]);
                lo += 1;
            }
            if self.frame_flags & FLAG_PRIORITY != 0 {
                if hi - lo < 5 {
                    self.abort();
                    return;
                }
                let fields: [u8; 5] = self.raw[lo..lo + 5].try_into().unwrap_or_default();
                let dependency =
                    u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & 0x7fff_ffff;
                if dependency == self.stream_id {
                    self.priority = Some(fields);
                }
                lo += 5;
            }
            if pad > hi - lo {
                self.abort();
                return;
            }
            hi -= pad;
        }
        self.fragments.push(lo..hi);
        if self.frame_flags & FLAG_END_HEADERS != 0 {
            self.finish_block();
        } else {
            self.phase = Phase::FrameHeader;
        }
    }

    /// Rewrites the complete header block into `out` as HEADERS (+ CONTINUATION) frames.
    fn finish_block(&mut self) {
        self.in_block = false;
        self.phase = Phase::FrameHeader;
        let block: &[u8] = if let [only] = self.fragments.as_slice() {
            &self.raw[only.clone()]
        } else {
            self.joined.clear();
            for fragment in &self.fragments {
                self.joined.extend_from_slice(&self.raw[fragment.clone()]);
            }
            &self.joined
        };
        let start = self.out.len();
        self.out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        if let Some(fields) = &self.priority {
            self.out.extend_from_slice(fields);
        }
        let limit = start + FRAME_HEADER_LEN + MAX_REWRITTEN_BLOCK;
        if self.hpack.rewrite(block, &mut self.out, limit).is_err() {
            // h2 gets the block as it came and decides; rewriting stops here.
            self.out.truncate(start);
            self.out.extend_from_slice(&self.raw);
            self.phase = Phase::Passthrough;
        } else {
            self.frame_output(start);
        }
        self.raw.clear();
        self.fragments.clear();
        if self.raw.capacity() > BUFFER_KEEP {
            self.raw = Vec::new();
            self.joined = Vec::new();
        }
        for scratch in [&mut self.hpack.name_buf, &mut self.hpack.value_buf] {
            if scratch.capacity() > BUFFER_KEEP {
                *scratch = Vec::new();
            }
        }
    }

    /// Writes the frame header(s) for the block payload at `out[start + 9..]`.
    fn frame_output(&mut self, start: usize) {
        let mut flags = FLAG_END_HEADERS;
        if self.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if self.priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        let payload_len = self.out.len() - start - FRAME_HEADER_LEN;
        if payload_len <= MAX_EMITTED_FRAME {
            let header = frame_header_bytes(payload_len, FRAME_HEADERS, flags, self.stream_id);
            self.out[start..start + FRAME_HEADER_LEN].copy_from_slice(&header);
            return;
        }
        // Too big for one frame (rare): HEADERS, then CONTINUATIONs, END_HEADERS on the last.
        let payload = self.out.split_off(start + FRAME_HEADER_LEN);
        self.out.truncate(start);
        let count = payload.len().div_ceil(MAX_EMITTED_FRAME);
        for (i, chunk) in payload.chunks(MAX_EMITTED_FRAME).enumerate() {
            let (kind, mut chunk_flags) = if i == 0 {
                (FRAME_HEADERS, flags & !FLAG_END_HEADERS)
            } else {
                (FRAME_CONTINUATION, 0)
            };
            if i + 1 == count {
                chunk_flags |= FLAG_END_HEADERS;
            }
            let header = frame_header_bytes(chunk.len(), kind, chunk_flags, self.stream_id);
            self.out.extend_from_slice(&header);
            self.out.extend_from_slice(chunk);
        }
    }

    /// Gives up rewriting: the frames held for the current block go out as they came, and
    /// everything after them passes through.
    fn abort(&mut self) -> Step {
        self.abort_with(&[]);
        Step::Consumed(0)
    }

    /// [`abort`](Self::abort), with `tail` (unparsed bytes) queued after the held frames.
    /// Returns whether anything was queued.
    fn abort_with(&mut self, tail: &[u8]) -> bool {
        self.out.extend_from_slice(&self.raw);
        self.out.extend_from_slice(tail);
        self.raw.clear();
        self.fragments.clear();
        self.in_block = false;
        self.phase = Phase::Passthrough;
        self.has_output()
    }
}

fn frame_header_bytes(len: usize, kind: u8, flags: u8, stream_id: u32) -> [u8; FRAME_HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    let id = stream_id.to_be_bytes();
    [
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ]
}

// ===== HPACK =====

/// An HPACK decoding error: the block goes to h2 as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HpackError;

/// Decodes the client's header blocks (keeping its dynamic table) and re-encodes each header
/// list without the dynamic table.
struct Rewriter {
    table: DynamicTable,
    /// Huffman-decoded name and value of the current field.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
    /// The last `:authority` value seen and what to do with it: a connection sends the same one
    /// on every request, so the check (which allocates) runs once.
    last_authority: Vec<u8>,
    last_fix: Option<Fix>,
}

/// Where a decoded string is: a range of the block, or the scratch buffer.
enum Str {
    Block(Range<usize>),
    Scratch,
}

impl Rewriter {
    fn new() -> Self {
        Rewriter {
            table: DynamicTable::new(HEADER_TABLE_SIZE),
            name_buf: Vec::new(),
            value_buf: Vec::new(),
            last_authority: Vec::new(),
            last_fix: None,
        }
    }

    /// Decodes `block` (RFC 7541) and appends the re-encoded header list to `out`, failing if
    /// `out` would grow past `limit`.
    fn rewrite(&mut self, block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), HpackError> {
        let mut pos = 0;
        // Table size updates are allowed only at the start of a block.
        let mut may_resize = true;
        while pos < block.len() {
            let first = block[pos];
            if first & 0x80 != 0 {
                // Indexed header field.
                let (index, n) = decode_int(&block[pos..], 7)?;
                pos += n;
                let (name, value) = self.table.get(index).ok_or(HpackError)?;
                emit_field(
                    &mut self.last_authority,
                    &mut self.last_fix,
                    out,
                    name,
                    value,
                    false,
                );
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                if !may_resize {
                    return Err(HpackError);
                }
                let (size, n) = decode_int(&block[pos..], 5)?;
                pos += n;
                if size > HEADER_TABLE_SIZE {
                    return Err(HpackError);
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal header field, with incremental indexing (01), without indexing (0000)
                // or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let never = !indexing && first & 0x10 != 0;
                let (index, n) = decode_int(&block[pos..], if indexing { 6 } else { 4 })?;
                pos += n;
                let name = if index == 0 {
                    let (name, n) = decode_str(block, pos, &mut self.name_buf)?;
                    pos += n;
                    Some(name)
                } else {
                    None
                };
                let (value, n) = decode_str(block, pos, &mut self.value_buf)?;
                pos += n;
                let value = match value {
                    Str::Block(range) => &block[range],
                    Str::Scratch => &self.value_buf[..],
                };
                let name = match name {
                    Some(Str::Block(range)) => &block[range],
                    Some(Str::Scratch) => &self.name_buf[..],
                    None => self.table.get(index).ok_or(HpackError)?.0,
                };
                emit_field(
                    &mut self.last_authority,
                    &mut self.last_fix,
                    out,
                    name,
                    value,
                    never,
                );
                if indexing {
                    let entry = Entry::new(name, value);
                    self.table.insert(entry);
                }
            }
            may_resize = false;
            if out.len() > limit {
                return Err(HpackError);
            }
        }
        Ok(())
    }
}

/// Appends one header field to `out` as a literal that leaves the decoder's table alone,
/// normalising `:authority` on the way.
fn emit_field(
    last_authority: &mut Vec<u8>,
    last_fix: &mut Option<Fix>,
    out: &mut Vec<u8>,
    name: &[u8],
    value: &[u8],
    never: bool,
) {
    let mut value = value;
    if name == AUTHORITY {
        let fix = match last_fix {
            Some(fix) if last_authority.as_slice() == value => fix.clone(),
            _ => {
                let fix = authority_fix(value);
                last_authority.clear();
                last_authority.extend_from_slice(value);
                *last_fix = Some(fix.clone());
                fix
            }
        };
        match fix {
            Fix::Keep => {}
            Fix::Replace(range) => value = &value[range],
            Fix::Drop => return,
        }
    }
    // Literal without indexing (0000) or never indexed (0001), 4-bit name index.
    let flag = if never { 0x10 } else { 0x00 };
    match static_name_index(name) {
        Some(index) => encode_int(out, index, 4, flag),
        None => {
            out.push(flag);
            encode_str(out, name);
        }
    }
    encode_str(out, value);
}

/// Decodes an HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1) from the start of
/// `buf`: the value and the bytes used. At most 5 bytes, as h2 allows.
fn decode_int(buf: &[u8], prefix: u8) -> Result<(usize, usize), HpackError> {
    const MAX_BYTES: usize = 5;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*buf.first().ok_or(HpackError)?) & mask;
    if value < mask {
        return Ok((value, 1));
    }
    let mut shift = 0;
    for (i, &b) in buf[1..].iter().enumerate() {
        let used = i + 2;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok((value, used));
        }
        if used == MAX_BYTES {
            return Err(HpackError);
        }
    }
    Err(HpackError)
}

/// Decodes the string literal at `block[pos..]` (RFC 7541 §5.2): where it is, and the bytes used.
/// A Huffman-coded one is decoded into `scratch`.
fn decode_str(block: &[u8], pos: usize, scratch: &mut Vec<u8>) -> Result<(Str, usize), HpackError> {
    let rest = &block[pos..];
    let huffman = rest.first().ok_or(HpackError)? & 0x80 != 0;
    let (len, n) = decode_int(rest, 7)?;
    let end = n
        .checked_add(len)
        .filter(|&end| end <= rest.len())
        .ok_or(HpackError)?;
    if huffman {
        scratch.clear();
        huffman_decode(&rest[n..end], scratch)?;
        Ok((Str::Scratch, end))
    } else {
        Ok((Str::Block(pos + n..pos + end), end))
    }
}

fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix: u8, flags: u8) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A plain (not Huffman-coded) string literal.
fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// The HPACK static table (RFC 7541 Appendix A); index `i` is at `[i - 1]`.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The first static-table index with this name, if any.
fn static_name_index(name: &[u8]) -> Option<usize> {
    let index = match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    };
    Some(index)
}

/// A dynamic table entry: name and value in one allocation.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    /// The entry's size as RFC 7541 §4.1 counts it.
    fn size(&self) -> usize {
        self.bytes.len() + 32
    }
}

/// The decoder's view of the client's dynamic table (RFC 7541 §2.3.2, §4).
struct DynamicTable {
    /// Newest first.
    entries: std::collections::VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn new(max_size: usize) -> Self {
        DynamicTable {
            entries: std::collections::VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry at `index` of the static + dynamic index space (1-based).
    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if index == 0 {
            return None;
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Some((name, value));
        }
        let entry = self.entries.get(index - 1 - STATIC_TABLE.len())?;
        Some(entry.bytes.split_at(entry.name_len))
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max_size {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front(entry);
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_back() {
                Some(entry) => self.size -= entry.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

// ===== Huffman decoding =====

/// The HPACK Huffman code (RFC 7541 Appendix B): `(code, length in bits)` for bytes 0-255. EOS
/// (30 one-bits) is left out: meeting it in a string is an error.
#[rustfmt::skip]
const HUFFMAN_CODES: [(u32, u8); 256] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12), (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27), (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27), (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
];

/// Transition flags of [`HUFFMAN`]: the nibble completed a symbol (in bits 8-15).
const HUFFMAN_EMIT: u32 = 1 << 16;
/// Transition flags of [`HUFFMAN`]: the nibble leads off the code tree (or into EOS).
const HUFFMAN_FAIL: u32 = 1 << 17;

/// A 4-bits-at-a-time decoder for the Huffman code: the states are the code tree's inner nodes
/// (at most 256; state 0 is the root).
struct HuffmanTables {
    /// `[state][nibble]`: next state in bits 0-7, symbol in bits 8-15, plus flags.
    transitions: [[u32; 16]; 256],
    /// States a string may end in: the root, or at most 7 one-bits into a code (EOS padding).
    accepting: [bool; 256],
}

static HUFFMAN: HuffmanTables = build_huffman_tables();

const fn build_huffman_tables() -> HuffmanTables {
    const LEAF: u16 = 0x100;
    // The code tree: `children[node][bit]`, 0 for none (the root is never a child), `LEAF | sym`
    // for a symbol.
    let mut children = [[0u16; 2]; 256];
    let mut nodes = 1;
    let mut sym = 0;
    while sym < 256 {
        let (code, len) = HUFFMAN_CODES[sym];
        let mut node = 0;
        let mut i = 0;
        while i < len {
            let bit = ((code >> (len - 1 - i)) & 1) as usize;
            if i == len - 1 {
                children[node][bit] = LEAF | sym as u16;
            } else {
                if children[node][bit] == 0 {
                    children[node][bit] = nodes as u16;
                    nodes += 1;
                }
                node = children[node][bit] as usize;
            }
            i += 1;
        }
        sym += 1;
    }

    let mut tables = HuffmanTables {
        transitions: [[HUFFMAN_FAIL; 16]; 256],
        accepting: [false; 256],
    };
    let mut state = 0;
    while state < nodes {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut entry = 0;
            let mut i = 0;
            while i < 4 {
                let child = children[node][(nibble >> (3 - i)) & 1];
                if child == 0 {
                    entry = HUFFMAN_FAIL;
                    break;
                }
                if child & LEAF != 0 {
                    entry = HUFFMAN_EMIT | ((child as u32 & 0xff) << 8);
                    node = 0;
                } else {
                    node = child as usize;
                }
                i += 1;
            }
            if entry & HUFFMAN_FAIL == 0 {
                entry |= node as u32;
            }
            tables.transitions[state][nibble] = entry;
            nibble += 1;
        }
        state += 1;
    }
    // Padding: up to 7 one-bits (the start of EOS) after the last symbol.
    tables.accepting[0] = true;
    let mut node = 0;
    let mut depth = 0;
    while depth < 7 {
        let child = children[node][1];
        if child == 0 || child & LEAF != 0 {
            break;
        }
        node = child as usize;
        tables.accepting[node] = true;
        depth += 1;
    }
    tables
}

/// Appends the Huffman-decoded `src` to `dst`; an invalid code, EOS, or bad padding is an error
/// (RFC 7541 §5.2).
fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    dst.reserve(src.len() * 8 / 5 + 1);
    let mut state = 0;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let entry = HUFFMAN.transitions[state][usize::from(nibble)];
            if entry & HUFFMAN_FAIL != 0 {
                return Err(HpackError);
            }
            if entry & HUFFMAN_EMIT != 0 {
                dst.push((entry >> 8) as u8);
            }
            state = (entry & 0xff) as usize;
        }
    }
    if HUFFMAN.accepting[state] {
        Ok(())
    } else {
        Err(HpackError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::AsyncReadExt;

    // ----- building the client side -----

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = frame_header_bytes(payload.len(), kind, flags, stream_id).to_vec();
        f.extend_from_slice(payload);
        f
    }

    /// Client preface plus an empty SETTINGS frame.
    fn preface() -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        v.extend(frame(0x4, 0, 0, &[]));
        v
    }

    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &b in s {
            let (code, len) = HUFFMAN_CODES[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) | (0xff >> bits)) as u8);
        }
        out
    }

    fn string(s: &[u8], huffman: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if huffman {
            let h = huffman_encode(s);
            encode_int(&mut out, h.len(), 7, 0x80);
            out.extend(h);
        } else {
            encode_str(&mut out, s);
        }
        out
    }

    fn indexed(index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(&mut out, index, 7, 0x80);
        out
    }

    /// A literal field: `(flags, prefix)` is `(0x40, 6)` for incremental indexing, `(0, 4)`
    /// without indexing, `(0x10, 4)` never indexed; `name` is a table index or a new name.
    fn literal(repr: (u8, u8), name: Result<usize, &[u8]>, value: &[u8], huffman: bool) -> Vec<u8> {
        let mut out = Vec::new();
        match name {
            Ok(index) => encode_int(&mut out, index, repr.1, repr.0),
            Err(name) => {
                out.push(repr.0);
                out.extend(string(name, huffman));
            }
        }
        out.extend(string(value, huffman));
        out
    }

    const INC: (u8, u8) = (0x40, 6);
    const WITHOUT: (u8, u8) = (0, 4);
    const NEVER: (u8, u8) = (0x10, 4);

    /// A gRPC-like request block, inserting :authority, content-type and te (so afterwards
    /// te is index 62, content-type 63, :authority 64).
    fn request_block(authority: &[u8], huffman: bool) -> Vec<u8> {
        let mut b = indexed(3); // :method POST
        b.extend(indexed(6)); // :scheme http
        b.extend(literal(WITHOUT, Ok(4), b"/etcdserverpb.KV/Range", huffman));
        b.extend(literal(INC, Ok(1), authority, huffman));
        b.extend(literal(INC, Ok(31), b"application/grpc", huffman));
        b.extend(literal(INC, Err(b"te"), b"trailers", huffman));
        b
    }

    /// The same request again, entirely from the dynamic table.
    fn repeat_block() -> Vec<u8> {
        let mut b = indexed(3);
        b.extend(indexed(6));
        b.extend(literal(WITHOUT, Ok(4), b"/etcdserverpb.KV/Range", false));
        for i in [64, 63, 62] {
            b.extend(indexed(i));
        }
        b
    }

    fn request_list(authority: &str) -> Vec<(String, String)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.KV/Range"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    // ----- running the adapter -----

    /// Reads hand out the chunks one by one (as much of one as fits), optionally returning
    /// `Pending` before each.
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        pending: bool,
        ready: bool,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending && !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            if let Some(mut chunk) = self.chunks.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunk.drain(..n);
                    self.chunks.push_front(chunk);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn run_with(chunks: Vec<Vec<u8>>, read_size: usize, pending: bool) -> Vec<u8> {
        let chunks = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut io = AuthorityNormalizer::new(Chunks {
            chunks,
            pending,
            ready: false,
        });
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = io.read(&mut buf).await.expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    async fn run(input: &[u8]) -> Vec<u8> {
        run_with(vec![input.to_vec()], 64 * 1024, false).await
    }

    // ----- reading the server side -----

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Frame {
        kind: u8,
        flags: u8,
        stream_id: u32,
        payload: Vec<u8>,
    }

    fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
        assert!(bytes.starts_with(PREFACE), "no preface");
        bytes = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= FRAME_HEADER_LEN, "truncated frame header");
            let len = (usize::from(bytes[0]) << 16)
                | (usize::from(bytes[1]) << 8)
                | usize::from(bytes[2]);
            let stream_id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            let end = FRAME_HEADER_LEN + len;
            assert!(bytes.len() >= end, "truncated frame");
            frames.push(Frame {
                kind: bytes[3],
                flags: bytes[4],
                stream_id,
                payload: bytes[FRAME_HEADER_LEN..end].to_vec(),
            });
            bytes = &bytes[end..];
        }
        frames
    }

    /// Checks a rewritten block uses only plain literals that leave the table alone; returns
    /// each field's representation byte flags (0x00 or 0x10).
    fn check_table_neutral(block: &[u8]) -> Vec<u8> {
        let mut reprs = Vec::new();
        let mut pos = 0;
        let mut scratch = Vec::new();
        while pos < block.len() {
            let first = block[pos];
            assert_eq!(
                first & 0xe0,
                0,
                "not a literal without indexing: {first:#x}"
            );
            reprs.push(first & 0x10);
            let (index, n) = decode_int(&block[pos..], 4).unwrap();
            pos += n;
            if index == 0 {
                assert_eq!(block[pos] & 0x80, 0, "Huffman-coded name");
                pos += decode_str(block, pos, &mut scratch).unwrap().1;
            } else {
                assert!(index <= STATIC_TABLE.len());
            }
            assert_eq!(block[pos] & 0x80, 0, "Huffman-coded value");
            pos += decode_str(block, pos, &mut scratch).unwrap().1;
        }
        reprs
    }

    /// A request h2 would see: stream, flags of the HEADERS frame, fields.
    #[derive(Debug)]
    struct Headers {
        stream_id: u32,
        flags: u8,
        fields: Vec<(String, String)>,
        reprs: Vec<u8>,
    }

    /// Splits the output into header blocks (checking their framing and encoding) and the
    /// other frames.
    fn parse_output(bytes: &[u8]) -> (Vec<Headers>, Vec<Frame>) {
        let mut decoder = fluke_hpack::Decoder::new();
        let mut headers = Vec::new();
        let mut others = Vec::new();
        let mut frames = parse_frames(bytes).into_iter().peekable();
        while let Some(f) = frames.next() {
            if f.kind != FRAME_HEADERS {
                assert_ne!(f.kind, FRAME_CONTINUATION, "stray CONTINUATION");
                others.push(f);
                continue;
            }
            assert_eq!(f.flags & (FLAG_PADDED | !0x25), 0, "flags {:#x}", f.flags);
            assert!(f.payload.len() <= MAX_EMITTED_FRAME);
            let mut block = f.payload.clone();
            if f.flags & FLAG_PRIORITY != 0 {
                block.drain(..5);
            }
            let mut last = f.flags;
            while last & FLAG_END_HEADERS == 0 {
                let c = frames.next().expect("CONTINUATION");
                assert_eq!((c.kind, c.stream_id), (FRAME_CONTINUATION, f.stream_id));
                assert_eq!(c.flags & !FLAG_END_HEADERS, 0);
                assert!(c.payload.len() <= MAX_EMITTED_FRAME);
                block.extend_from_slice(&c.payload);
                last = c.flags;
            }
            let reprs = check_table_neutral(&block);
            let fields = decoder
                .decode(&block)
                .expect("reference decoder")
                .into_iter()
                .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            headers.push(Headers {
                stream_id: f.stream_id,
                flags: f.flags,
                fields,
                reprs,
            });
        }
        (headers, others)
    }

    fn authority_of(h: &Headers) -> Option<&str> {
        h.fields
            .iter()
            .find(|(n, _)| n == ":authority")
            .map(|(_, v)| v.as_str())
    }

    // ----- the tests -----

    #[test]
    fn normalize_authority_cases() {
        use AuthorityFix::*;
        for keep in [
            "127.0.0.1:2379",
            "example.com",
            "Example.COM:2379",
            "[::1]:2379",
            "u@h:1",
        ] {
            assert_eq!(normalize_authority(keep.as_bytes()), Keep, "{keep}");
        }
        for (from, to) in [
            ("http://127.0.0.1:2379", "127.0.0.1:2379"),
            ("https://example.com:2379/", "example.com:2379"),
            ("http://example.com:2379/x?y", "example.com:2379"),
            ("#initially=[https://example.com:2379]", "example.com:2379"),
            ("#initially=[http://a:1;http://b:2]", "a:1"),
            ("#initially=[10.0.0.1:2379;10.0.0.2:2379]", "10.0.0.1:2379"),
            ("unix://localhost:2379", "localhost:2379"),
        ] {
            assert_eq!(
                normalize_authority(from.as_bytes()),
                Replace(to.as_bytes()),
                "{from}"
            );
        }
        for drop in [
            "",
            "a b",
            "#initially=[]",
            "unix:///tmp/etcd.sock",
            "http://",
            "x://a b/",
        ] {
            assert_eq!(normalize_authority(drop.as_bytes()), Drop, "{drop}");
        }
    }

    #[test]
    fn huffman_matches_rfc_and_reference_decoder() {
        // RFC 7541 C.4.1.
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(huffman_encode(b"www.example.com"), www);
        let mut out = Vec::new();
        huffman_decode(&www, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");

        let all: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        let encoded = huffman_encode(&all);
        let reference = fluke_hpack::huffman::HuffmanDecoder::new()
            .decode(&encoded)
            .unwrap();
        assert_eq!(reference, all);
        out.clear();
        huffman_decode(&encoded, &mut out).unwrap();
        assert_eq!(out, all);
        for len in 0..40 {
            let s = vec![b'0'; len];
            out.clear();
            huffman_decode(&huffman_encode(&s), &mut out).unwrap();
            assert_eq!(out, s);
        }

        // Errors: 8 bits of padding, padding that is not ones, EOS.
        let mut bad = huffman_encode(b"ab");
        bad.push(0xff);
        assert!(huffman_decode(&bad, &mut out).is_err());
        assert!(huffman_decode(&[0x1c], &mut out).is_err()); // padding 100
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
        assert!(huffman_decode(&[0x1f], &mut out).is_ok()); // 'a' (00011) + 3 bits of padding
    }

    #[test]
    fn integers_round_trip() {
        for prefix in [4, 5, 6, 7] {
            for value in [0, 1, 14, 15, 16, 126, 127, 128, 300, 4096, 1 << 20] {
                let mut out = Vec::new();
                encode_int(&mut out, value, prefix, 0);
                assert_eq!(decode_int(&out, prefix), Ok((value, out.len())));
            }
        }
        assert!(decode_int(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x01], 7).is_err());
        assert!(decode_int(&[0x7f, 0x80], 7).is_err());
        assert!(decode_int(&[], 7).is_err());
    }

    #[tokio::test]
    async fn rewrites_scheme_prefixed_authority() {
        let mut input = preface();
        input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0])); // WINDOW_UPDATE
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://127.0.0.1:2379", false),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\x02\x0a\x00"));
        let (headers, others) = parse_output(&run(&input).await);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].stream_id, 1);
        assert_eq!(headers[0].flags, FLAG_END_HEADERS);
        assert_eq!(headers[0].fields, request_list("127.0.0.1:2379"));
        let expected: Vec<Frame> = parse_frames(&input)
            .into_iter()
            .filter(|f| f.kind != FRAME_HEADERS)
            .collect();
        assert_eq!(others, expected);
    }

    #[tokio::test]
    async fn etcd_3_5_0_initially_authority() {
        let mut input = preface();
        let block = request_block(
            b"#initially=[https://example.com:2379;https://b:2379]",
            true,
        );
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &block,
        ));
        let (headers, _) = parse_output(&run(&input).await);
        assert_eq!(headers[0].fields, request_list("example.com:2379"));
        assert_eq!(headers[0].flags, FLAG_END_HEADERS | FLAG_END_STREAM);
    }

    #[tokio::test]
    async fn valid_authority_is_kept_and_unfixable_dropped() {
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"Example.COM:2379", true),
        ));
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            3,
            &request_block(b"not valid", false),
        ));
        let (headers, _) = parse_output(&run(&input).await);
        assert_eq!(authority_of(&headers[0]), Some("Example.COM:2379"));
        assert_eq!(authority_of(&headers[1]), None);
        assert_eq!(headers[1].fields.len(), 5);
    }

    #[tokio::test]
    async fn huffman_coded_authority() {
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://127.0.0.1:2379", true),
        ));
        let (headers, _) = parse_output(&run(&input).await);
        assert_eq!(headers[0].fields, request_list("127.0.0.1:2379"));
    }

    #[tokio::test]
    async fn dynamic_table_reuse_across_requests() {
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://127.0.0.1:2379", true),
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        for id in [3, 5, 7] {
            input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, id, &repeat_block()));
            input.extend(frame(0x0, FLAG_END_STREAM, id, b"\0\0\0\0\0"));
        }
        let (headers, others) = parse_output(&run(&input).await);
        assert_eq!(headers.len(), 4);
        for (h, id) in headers.iter().zip([1, 3, 5, 7]) {
            assert_eq!(h.stream_id, id);
            assert_eq!(h.fields, request_list("127.0.0.1:2379"));
        }
        assert_eq!(others.len(), 5);
    }

    #[tokio::test]
    async fn rfc_7541_c4_request_sequence() {
        // RFC 7541 C.4.1-C.4.3: Huffman-coded requests sharing the dynamic table.
        let blocks: [&[u8]; 3] = [
            &[
                0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
                0x90, 0xf4, 0xff,
            ],
            &[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
            ],
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
                0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
            ],
        ];
        let mut input = preface();
        for (i, block) in blocks.iter().enumerate() {
            input.extend(frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                1 + 2 * i as u32,
                block,
            ));
        }
        let (headers, _) = parse_output(&run(&input).await);
        let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(headers[0].fields, pairs(&base));
        let mut second = base.to_vec();
        second.push(("cache-control", "no-cache"));
        assert_eq!(headers[1].fields, pairs(&second));
        let third = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(headers[2].fields, pairs(&third));
    }

    #[tokio::test]
    async fn padded_and_priority_headers() {
        let block = request_block(b"http://127.0.0.1:2379", true);
        let mut input = preface();
        // PADDED + PRIORITY (depends on stream 0, weight 16), END_STREAM.
        let mut payload = vec![7];
        payload.extend([0, 0, 0, 0, 15]);
        payload.extend(&block);
        payload.extend([0; 7]);
        let flags = FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM;
        input.extend(frame(FRAME_HEADERS, flags, 1, &payload));
        // PADDED only, with a lot of padding (the rewrite is shorter than the frame).
        let mut payload = vec![200];
        payload.extend(repeat_block());
        payload.extend([0; 200]);
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            3,
            &payload,
        ));
        // PRIORITY only.
        let mut payload = vec![0x80, 0, 0, 1, 200];
        payload.extend(repeat_block());
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PRIORITY | FLAG_END_HEADERS,
            5,
            &payload,
        ));
        let (headers, others) = parse_output(&run(&input).await);
        assert_eq!(others.len(), 1); // SETTINGS
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[0].flags, FLAG_END_HEADERS | FLAG_END_STREAM);
        assert_eq!(headers[1].flags, FLAG_END_HEADERS);
        assert_eq!(headers[2].flags, FLAG_END_HEADERS);
        for h in &headers {
            assert_eq!(h.fields, request_list("127.0.0.1:2379"));
        }
    }

    #[tokio::test]
    async fn self_dependent_priority_is_kept() {
        let mut payload = vec![0, 0, 0, 1, 9];
        payload.extend(request_block(b"http://127.0.0.1:2379", false));
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PRIORITY | FLAG_END_HEADERS,
            1,
            &payload,
        ));
        let out = run(&input).await;
        let frames = parse_frames(&out);
        assert_eq!(frames[1].flags, FLAG_PRIORITY | FLAG_END_HEADERS);
        assert_eq!(frames[1].payload[..5], [0, 0, 0, 1, 9]);
        let (headers, _) = parse_output(&out);
        assert_eq!(headers[0].fields, request_list("127.0.0.1:2379"));
    }

    #[tokio::test]
    async fn continuation_frames_are_merged() {
        let block = request_block(b"http://127.0.0.1:2379", true);
        let (a, rest) = block.split_at(7);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_STREAM | FLAG_PADDED,
            1,
            &[&[3], a, &[0; 3]].concat(),
        ));
        input.extend(frame(FRAME_CONTINUATION, 0, 1, b));
        input.extend(frame(FRAME_CONTINUATION, 0, 1, &[]));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c));
        input.extend(frame(0x6, 0, 0, &[0; 8])); // PING
        let out = run(&input).await;
        let frames = parse_frames(&out);
        assert_eq!(frames.len(), 3); // SETTINGS, HEADERS, PING
        let (headers, _) = parse_output(&out);
        assert_eq!(headers[0].flags, FLAG_END_STREAM | FLAG_END_HEADERS);
        assert_eq!(headers[0].fields, request_list("127.0.0.1:2379"));
    }

    #[tokio::test]
    async fn oversized_block_is_split() {
        let big = vec![b'x'; 40_000];
        let mut block = request_block(b"http://127.0.0.1:2379", true);
        block.extend(literal(WITHOUT, Err(b"x-big"), &big, true));
        let mut input = preface();
        input.extend(frame(FRAME_HEADERS, FLAG_END_STREAM, 1, &block[..10_000]));
        input.extend(frame(
            FRAME_CONTINUATION,
            FLAG_END_HEADERS,
            1,
            &block[10_000..],
        ));
        let out = run(&input).await;
        let frames = parse_frames(&out);
        let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.flags)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0),
                (FRAME_HEADERS, FLAG_END_STREAM),
                (FRAME_CONTINUATION, 0),
                (FRAME_CONTINUATION, FLAG_END_HEADERS)
            ]
        );
        let (headers, _) = parse_output(&out);
        let mut expected = request_list("127.0.0.1:2379");
        expected.push(("x-big".into(), String::from_utf8(big).unwrap()));
        assert_eq!(headers[0].fields, expected);
    }

    #[tokio::test]
    async fn never_indexed_stays_never_indexed() {
        let mut block = request_block(b"http://127.0.0.1:2379", false);
        block.extend(literal(NEVER, Ok(23), b"secret", true));
        block.extend(literal(NEVER, Err(b"x-token"), b"secret2", false));
        let mut input = preface();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
        let (headers, _) = parse_output(&run(&input).await);
        assert_eq!(headers[0].reprs, [0, 0, 0, 0, 0, 0, 0x10, 0x10]);
        assert_eq!(
            headers[0].fields[6],
            ("authorization".into(), "secret".into())
        );
    }

    /// One connection's worth of everything: used to check that how the bytes are cut up does
    /// not change the output.
    fn mixed_stream() -> Vec<u8> {
        let mut input = preface();
        input.extend(frame(0x8, 0, 0, &[0, 1, 0, 0]));
        let mut payload = vec![5, 0, 0, 0, 0, 7];
        payload.extend(request_block(b"http://127.0.0.1:2379", true));
        payload.extend([0; 5]);
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS,
            1,
            &payload,
        ));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, &[7; 300]));
        let block = repeat_block();
        input.extend(frame(FRAME_HEADERS, 0, 3, &block[..4]));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &block[4..]));
        input.extend(frame(0x0, 0, 3, &[1; 40]));
        // Trailers on stream 3.
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &literal(INC, Err(b"x-t"), b"1", true),
        ));
        input.extend(frame(0x6, 0, 0, &[9; 8]));
        let mut block = request_block(b"#initially=[http://127.0.0.1:2379]", true);
        block.extend(literal(WITHOUT, Err(b"x-pad"), &[b'p'; 500], false));
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            5,
            &block,
        ));
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            7,
            &repeat_block(),
        ));
        input
    }

    fn check_mixed_output(out: &[u8]) {
        let (headers, others) = parse_output(out);
        let ids: Vec<_> = headers.iter().map(|h| h.stream_id).collect();
        assert_eq!(ids, [1, 3, 3, 5, 7]);
        assert_eq!(headers[0].fields, request_list("127.0.0.1:2379"));
        assert_eq!(headers[1].fields, request_list("127.0.0.1:2379"));
        assert_eq!(headers[2].fields, [("x-t".to_string(), "1".to_string())]);
        assert_eq!(authority_of(&headers[3]), Some("127.0.0.1:2379"));
        // After the #initially request the table holds its entries, so the last request's
        // index 64 is the new :authority.
        assert_eq!(authority_of(&headers[4]), Some("127.0.0.1:2379"));
        assert_eq!(others.len(), 5);
    }

    #[tokio::test]
    async fn every_split_point_gives_the_same_output() {
        let input = mixed_stream();
        let whole = run(&input).await;
        check_mixed_output(&whole);
        for i in 1..input.len() {
            let out = run_with(
                vec![input[..i].to_vec(), input[i..].to_vec()],
                64 * 1024,
                false,
            )
            .await;
            assert!(out == whole, "split at {i}");
        }
        let bytes: Vec<Vec<u8>> = input.iter().map(|&b| vec![b]).collect();
        for read_size in [1, 2, 3, 5, 8, 9, 10, 17, 64, 333, 4096] {
            for pending in [false, true] {
                let out = run_with(vec![input.clone()], read_size, pending).await;
                assert!(out == whole, "read size {read_size}");
                let out = run_with(bytes.clone(), read_size, pending).await;
                assert!(out == whole, "bytewise, read size {read_size}");
            }
        }
        let chunks: Vec<Vec<u8>> = input.chunks(7).map(<[u8]>::to_vec).collect();
        assert!(run_with(chunks, 50, true).await == whole);
    }

    #[tokio::test]
    async fn mutated_streams_never_panic_and_ignore_chunking() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        };
        let original = mixed_stream();
        for round in 0..1000 {
            let mut input = original.clone();
            for _ in 0..1 + rand(4) {
                if input.len() <= PREFACE.len() {
                    break;
                }
                let at = PREFACE.len() + rand(input.len() - PREFACE.len());
                match rand(3) {
                    0 => input[at] = rand(256) as u8,
                    1 => input.truncate(at),
                    _ => input.insert(at, rand(256) as u8),
                }
            }
            let whole = run(&input).await;
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + rand(rest.len().min(300));
                chunks.push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            let read_size = 1 + rand(200);
            let out = run_with(chunks, read_size, round % 2 == 0).await;
            assert!(out == whole, "round {round}");
        }
    }

    #[test]
    fn random_header_blocks_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for _ in 0..ROUNDS {
            let len = (next() % 48) as usize;
            let block: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            out.clear();
            if rewriter.rewrite(&block, &mut out, 4096).is_err() {
                rewriter = Rewriter::new();
            }
        }
    }

    const ROUNDS: usize = 20_000;

    #[tokio::test]
    async fn http1_passes_through() {
        for input in [
            &b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\nnot really",
            b"P",
            b"",
        ] {
            assert_eq!(run(input).await, input);
            let bytes = input.iter().map(|&b| vec![b]).collect();
            assert_eq!(run_with(bytes, 3, true).await, input);
        }
        // After pass-through starts, frames that look like HTTP/2 are not touched either.
        let mut input = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://a:1", false),
        ));
        assert_eq!(run(&input).await, input);
    }

    #[tokio::test]
    async fn garbage_after_preface_passes_through() {
        let good = frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://a:1", false),
        );
        let bad_cases: Vec<Vec<u8>> = vec![
            // Pseudo-random bytes.
            {
                let mut x = 0x2545_f491_4f6c_dd1d_u64;
                (0..5000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            },
            // CONTINUATION without HEADERS.
            frame(
                FRAME_CONTINUATION,
                FLAG_END_HEADERS,
                1,
                &request_block(b"http://a:1", false),
            ),
            // HPACK: index 0, index past the table, truncated string, bad Huffman.
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82, 0x80]),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82, 0xff, 0x00]),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x41, 0x05, b'a']),
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS,
                3,
                &[0x41, 0x82, 0xff, 0xff],
            ),
            // Size updates: too big, after a field.
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS,
                3,
                &[0x3f, 0xe2, 0x1f, 0x82],
            ),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82, 0x20]),
            // Bad padding and priority lengths.
            frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 3, &[]),
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_PADDED,
                3,
                &[4, 0x82, 0, 0],
            ),
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_PRIORITY,
                3,
                &[0, 0, 0],
            ),
            // HEADERS on stream 0, PUSH_PROMISE.
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 0, &[0x82]),
            frame(FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 3, &[0, 0, 0, 2, 0x82]),
            // Header block interrupted by another frame / another stream's CONTINUATION.
            [frame(FRAME_HEADERS, 0, 3, &[0x82]), frame(0x0, 0, 3, b"x")].concat(),
            [
                frame(FRAME_HEADERS, 0, 3, &[0x82]),
                frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 5, &[0x84]),
            ]
            .concat(),
            // Truncated at the end: mid-block, mid-frame, mid-frame-header.
            frame(FRAME_HEADERS, 0, 3, &[0x82]),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82, 0x84, 0x86])[..11].to_vec(),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x82])[..6].to_vec(),
            frame(0x0, 0, 3, b"data")[..2].to_vec(),
        ];
        for (i, bad) in bad_cases.iter().enumerate() {
            // Right after the preface, everything comes back unchanged.
            let mut input = preface();
            input.extend(bad);
            input.extend(&good);
            assert!(run(&input).await == input, "case {i}");
            let bytes = input.iter().map(|&b| vec![b]).collect();
            assert!(
                run_with(bytes, 5, true).await == input,
                "case {i}, bytewise"
            );

            // After a rewritten request, the rest comes back unchanged.
            let mut input = preface();
            input.extend(&good);
            let rewritten = run(&input).await;
            input.extend(bad);
            input.extend(&good);
            let mut expected = rewritten;
            expected.extend(bad);
            expected.extend(&good);
            assert!(run(&input).await == expected, "case {i} after a request");
        }
    }

    #[tokio::test]
    async fn size_updates_follow_the_client_table() {
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://a:1", true),
        ));
        // Shrink to 0 and back: the table is emptied, then the request inserts again.
        let mut block = vec![0x20, 0x3f, 0xe1, 0x1f];
        block.extend(request_block(b"http://b:2", false));
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block));
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, &repeat_block()));
        let (headers, _) = parse_output(&run(&input).await);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[1].fields, request_list("b:2"));
        assert_eq!(headers[2].fields, request_list("b:2"));

        // Shrunk to 0 and the client then refers to the dynamic table: an error, passed on.
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://a:1", true),
        ));
        let rewritten = run(&input).await;
        let mut block = vec![0x20];
        block.extend(repeat_block());
        let tail = frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &block);
        input.extend(&tail);
        assert_eq!(run(&input).await, [rewritten, tail].concat());
    }

    #[tokio::test]
    async fn header_list_bomb_passes_through() {
        // One 4000-byte entry referenced 300 times: 1.2 MB of headers from a 4 KB block.
        let mut block = literal(INC, Err(b"x-bomb"), &[b'b'; 4000], false);
        block.extend(std::iter::repeat_n(0xbe, 300));
        let mut input = preface();
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
        assert_eq!(run(&input).await, input);

        // A block bigger than MAX_HEADER_BLOCK is passed on as well.
        let mut input = preface();
        let chunk = vec![0u8; 16_000];
        input.extend(frame(FRAME_HEADERS, 0, 1, &chunk));
        for _ in 0..MAX_HEADER_BLOCK / 16_000 {
            input.extend(frame(FRAME_CONTINUATION, 0, 1, &chunk));
        }
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &chunk));
        assert!(run(&input).await == input);
    }

    #[tokio::test]
    async fn keeps_bytes_already_in_the_callers_buffer() {
        let mut input = preface();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(b"http://127.0.0.1:2379", true),
        ));
        let expected = run(&input).await;
        let mut io = AuthorityNormalizer::new(Chunks {
            chunks: [input].into(),
            pending: false,
            ready: false,
        });
        let mut storage = vec![0u8; 4096];
        let mut buf = ReadBuf::new(&mut storage);
        buf.put_slice(b"earlier");
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf))
            .await
            .unwrap();
        assert_eq!(&buf.filled()[..7], b"earlier");
        assert_eq!(&buf.filled()[7..], expected);
    }

    #[test]
    fn connect_info_is_the_inner_streams() {
        fn connected<T: Connected<ConnectInfo = tonic::transport::server::TcpConnectInfo>>() {}
        connected::<AuthorityNormalizer<tokio::net::TcpStream>>();
    }
}
