//! Watch end to end, against cairn and the real etcd.
//!
//! - `etcdctl watch` (single key, `--prefix`, `--rev`, `--prev-kv`, interactive mode with
//!   `progress`, a compacted start) read incrementally: the output of both servers must be
//!   the same text.
//! - The `etcd-client` crate's watch streams, and the raw generated client where a field
//!   matters that etcd-client does not expose (`fragment`): create / cancel / progress, start
//!   revisions (past, future, compacted), duplicate ids, empty ranges, filters, prev_kv,
//!   fragments, periodic progress notifications. Each scenario records a normalised
//!   transcript of every response; cairn's must equal etcd's. The few places where cairn
//!   deliberately answers as etcd 3.5 rather than the 3.4 binary installed here are separate
//!   cairn-only tests, each saying why.
//! - A guarantee checker: ~1,000 watchers over four streams on one connection, concurrent
//!   writers (txns of several keys included) and compactions; every watcher's events must be
//!   exactly what an independent model of the write log says, in order, each revision in one
//!   response, and a watcher canceled mid-run and restarted from its last revision + 1 must
//!   see exactly what it missed.
//! - A slow watcher that never reads while 20k writes go through: writes complete, other
//!   watchers keep up, the server's memory stays bounded, and once it reads it gets
//!   everything in order.

use cairn_api::etcdserverpb::watch_client::WatchClient;
use cairn_api::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use cairn_api::mvccpb::{event::EventType, Event, KeyValue};
use cairn_tests::{kinds_under_test, Kind, Server};
use etcd_client::{
    Client, ConnectOptions, DeleteOptions, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long to wait for a response or a line that must come.
const WAIT: Duration = Duration::from_secs(20);

fn start(kind: Kind, extra: &[&str]) -> Server {
    cairn_tests::start_retrying_ports(kind, extra, &[])
        .unwrap_or_else(|e| panic!("starting {kind:?}: {e:#}"))
}

// ---------------------------------------------------------------------------------------------
// etcdctl, read incrementally
// ---------------------------------------------------------------------------------------------

/// A running `etcdctl` whose output lines are read as they come.
struct Ctl {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    errs: std_mpsc::Receiver<String>,
}

impl Ctl {
    fn spawn(server: &Server, args: &[&str], stdin: bool) -> Ctl {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", server.client_addr))
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl is installed");
        let pipe = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std_mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let lines = pipe(Box::new(child.stdout.take().unwrap()));
        let errs = pipe(Box::new(child.stderr.take().unwrap()));
        Ctl { child, lines, errs }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("spawned with stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next `n` lines of stdout; fails with what came (and stderr) after [`WAIT`].
    fn lines(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!(
                    "expected {n} lines, got {got:?}; stderr: {:?}",
                    self.errs.try_iter().collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// No more stdout within `d`.
    fn quiet_for(&mut self, d: Duration) {
        if let Ok(l) = self.lines.recv_timeout(d) {
            panic!("unexpected output line {l:?}");
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` against every kind under test and requires the same result from all.
fn same_on_all<T: PartialEq + std::fmt::Debug>(f: impl Fn(Kind) -> T) {
    let mut results: Vec<(Kind, T)> = Vec::new();
    for kind in kinds_under_test() {
        results.push((kind, f(kind)));
    }
    for w in results.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{:?} and {:?} differ", w[0].0, w[1].0);
    }
}

fn ctl_ok(server: &Server, args: &[&str]) {
    cairn_tests::ok_stdout(&server.etcdctl(args));
}

#[test]
fn etcdctl_watch_key_prefix_rev_prev_kv() {
    same_on_all(|kind| {
        let s = start(kind, &[]);
        ctl_ok(&s, &["put", "foo", "v0"]); // 2
        ctl_ok(&s, &["put", "foo1", "x"]); // 3
        let mut single = Ctl::spawn(&s, &["watch", "foo", "--rev", "2"], false);
        let mut prefix = Ctl::spawn(&s, &["watch", "--prefix", "foo", "--rev", "3"], false);
        let mut prev = Ctl::spawn(&s, &["watch", "foo", "--prev-kv", "--rev", "4"], false);
        let mut range = Ctl::spawn(&s, &["watch", "foo1", "foo3", "--rev", "2"], false);
        ctl_ok(&s, &["put", "foo", "v1"]); // 4
        ctl_ok(&s, &["put", "foo2", "y"]); // 5
        ctl_ok(&s, &["del", "foo"]); // 6
        ctl_ok(&s, &["put", "bar", "z"]); // 7: nobody's
        let out = (
            single.lines(9),
            prefix.lines(12),
            prev.lines(10),
            range.lines(6),
        );
        assert_eq!(
            out.0,
            ["PUT", "foo", "v0", "PUT", "foo", "v1", "DELETE", "foo", ""]
        );
        assert_eq!(
            out.1,
            ["PUT", "foo1", "x", "PUT", "foo", "v1", "PUT", "foo2", "y", "DELETE", "foo", ""]
        );
        assert_eq!(
            out.2,
            ["PUT", "foo", "v0", "foo", "v1", "DELETE", "foo", "v1", "foo", ""]
        );
        assert_eq!(out.3, ["PUT", "foo1", "x", "PUT", "foo2", "y"]);
        single.quiet_for(Duration::from_millis(300));
        out
    });
}

#[test]
fn etcdctl_watch_interactive_with_progress() {
    same_on_all(|kind| {
        let s = start(kind, &[]);
        ctl_ok(&s, &["put", "foo", "v0"]); // 2
        ctl_ok(&s, &["put", "bar", "b0"]); // 3
        let mut ctl = Ctl::spawn(&s, &["watch", "-i"], true);
        // In interactive mode the flags go with each watch line.
        ctl.send("watch --rev 2 foo");
        let mut out = ctl.lines(3);
        ctl.send("watch --rev 3 --prev-kv --prefix ba");
        out.extend(ctl.lines(3));
        ctl_ok(&s, &["put", "foo", "v1"]); // 4
        out.extend(ctl.lines(3));
        // Both watchers share one stream: the progress answer goes to both.
        ctl.send("progress");
        out.extend(ctl.lines(2));
        assert_eq!(
            out,
            [
                "PUT",
                "foo",
                "v0",
                "PUT",
                "bar",
                "b0",
                "PUT",
                "foo",
                "v1",
                "progress notify: 4",
                "progress notify: 4"
            ]
        );
        out
    });
}

#[test]
fn etcdctl_watch_from_a_compacted_revision() {
    same_on_all(|kind| {
        let s = start(kind, &[]);
        for v in ["a", "b", "c", "d"] {
            ctl_ok(&s, &["put", "foo", v]); // 2..=5
        }
        ctl_ok(&s, &["compact", "4"]);
        let out = s.etcdctl(&["watch", "foo", "--rev", "2"]);
        let res = (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert!(
            res.2.contains(
                "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
            ),
            "{res:?}"
        );
        res
    });
}

// ---------------------------------------------------------------------------------------------
// etcd-client streams and the raw client: transcripts
// ---------------------------------------------------------------------------------------------

fn show_event(e: &Event) -> String {
    let kind = if e.r#type == EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    };
    let kv = e.kv.clone().unwrap_or_default();
    let mut s = format!(
        "{kind} {}={} c{} m{} v{}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if let Some(p) = &e.prev_kv {
        s.push_str(&format!(
            " prev({}={} m{} v{})",
            String::from_utf8_lossy(&p.key),
            String::from_utf8_lossy(&p.value),
            p.mod_revision,
            p.version
        ));
    }
    s
}

/// A response with what differs between servers (cluster, member, term) left out.
fn show(r: &WatchResponse) -> String {
    let mut s = format!(
        "id={} rev={}",
        r.watch_id,
        r.header.as_ref().map_or(-99, |h| h.revision)
    );
    if r.created {
        s.push_str(" created");
    }
    if r.canceled {
        s.push_str(" canceled");
    }
    if r.compact_revision != 0 {
        s.push_str(&format!(" compact={}", r.compact_revision));
    }
    if !r.cancel_reason.is_empty() {
        s.push_str(&format!(" reason={:?}", r.cancel_reason));
    }
    if r.fragment {
        s.push_str(" fragment");
    }
    for e in &r.events {
        s.push_str(&format!(" [{}]", show_event(e)));
    }
    s
}

/// The same for etcd-client's response (it does not expose `fragment`).
fn show_ec(r: &etcd_client::WatchResponse) -> String {
    show(&WatchResponse {
        header: r.header().map(|h| cairn_api::etcdserverpb::ResponseHeader {
            revision: h.revision(),
            ..Default::default()
        }),
        watch_id: r.watch_id(),
        created: r.created(),
        canceled: r.canceled(),
        compact_revision: r.compact_revision(),
        cancel_reason: r.cancel_reason().to_string(),
        fragment: false,
        events: r
            .events()
            .iter()
            .map(|e| Event {
                r#type: match e.event_type() {
                    etcd_client::EventType::Put => EventType::Put as i32,
                    etcd_client::EventType::Delete => EventType::Delete as i32,
                },
                kv: e.kv().map(ec_kv),
                prev_kv: e.prev_kv().map(ec_kv),
            })
            .collect(),
    })
}

fn ec_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

async fn next_ec(w: &mut etcd_client::WatchStream) -> String {
    match tokio::time::timeout(WAIT, w.message()).await {
        Ok(Ok(Some(r))) => show_ec(&r),
        other => panic!("no watch response: {other:?}"),
    }
}

async fn quiet_ec(w: &mut etcd_client::WatchStream, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, w.message()).await {
        panic!("unexpected: {:?}", r.map(|r| r.map(|r| show_ec(&r))));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs an async scenario against every kind; each returns its transcript, which must match
/// etcd's.
fn transcripts<F, Fut>(extra: &[&str], scenario: F)
where
    F: Fn(Kind, Server) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let rt = runtime();
    same_on_all(|kind| {
        let s = start(kind, extra);
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(120), scenario(kind, s))
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: scenario timed out"))
        })
    });
}

#[test]
fn create_cancel_progress_and_refusals() {
    transcripts(&[], |_kind, s| async move {
        let mut c = s.client().await.unwrap();
        c.put("a", "1", None).await.unwrap(); // 2
        let mut t = Vec::new();
        let mut w = c.watch("a", None).await.unwrap(); // id 0
        t.push(next_ec(&mut w).await);
        w.watch("a", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap(); // id 1
        t.push(next_ec(&mut w).await);
        w.watch("b", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        // A duplicate id and an empty range are refused with etcd's reasons.
        w.watch("c", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        w.watch("z", Some(WatchOptions::new().with_range("a")))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        // Auto ids go on after the client's.
        w.watch("a", Some(WatchOptions::new().with_from_key()))
            .await
            .unwrap(); // id 2
        t.push(next_ec(&mut w).await);
        c.put("ab", "2", None).await.unwrap(); // 3
        c.put("b", "3", None).await.unwrap(); // 4
        c.delete("a", None).await.unwrap(); // 5
        let mut events: Vec<String> = Vec::new();
        for _ in 0..7 {
            events.push(next_ec(&mut w).await);
        }
        // Responses of different watchers may interleave; each watcher's are in order.
        events.sort();
        t.extend(events);
        // Progress: every watcher is synced, so one answer with watch id -1.
        w.request_progress().await.unwrap();
        t.push(next_ec(&mut w).await);
        w.cancel(1).await.unwrap();
        t.push(next_ec(&mut w).await);
        // Canceling an unknown id answers nothing.
        w.cancel(99).await.unwrap();
        quiet_ec(&mut w, Duration::from_millis(500)).await;
        c.put("ac", "4", None).await.unwrap(); // 6: watcher 1 is gone
        let mut events = vec![next_ec(&mut w).await];
        events.sort();
        t.extend(events);
        quiet_ec(&mut w, Duration::from_millis(300)).await;
        // Many streams on one connection: a second stream has its own ids.
        let mut w2 = c.watch("a", None).await.unwrap();
        t.push(next_ec(&mut w2).await);
        t
    });
}

#[test]
fn start_revisions_past_future_and_compacted() {
    transcripts(&[], |_kind, s| async move {
        let mut c = s.client().await.unwrap();
        for i in 0..6 {
            c.put("k", format!("v{i}"), None).await.unwrap(); // 2..=7
        }
        c.compact(5, None).await.unwrap();
        let mut t = Vec::new();
        // Past (above the compact revision): replayed, one response.
        let mut w = c
            .watch("k", Some(WatchOptions::new().with_start_revision(6)))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        t.push(next_ec(&mut w).await);
        // Below the compact revision: created, then canceled with the compact revision.
        w.watch("k", Some(WatchOptions::new().with_start_revision(2)))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        t.push(next_ec(&mut w).await);
        // Future: nothing until the revision comes.
        w.watch("k", Some(WatchOptions::new().with_start_revision(10)))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        for i in 0..3 {
            c.put("k", format!("f{i}"), None).await.unwrap(); // 8..=10
        }
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(next_ec(&mut w).await);
        }
        events.sort();
        t.extend(events);
        quiet_ec(&mut w, Duration::from_millis(300)).await;
        // A prefix watch over history, with prev_kv.
        c.put("k2", "x", None).await.unwrap(); // 11
        let mut w2 = c
            .watch(
                "k",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_start_revision(7),
                ),
            )
            .await
            .unwrap();
        t.push(next_ec(&mut w2).await);
        t.push(next_ec(&mut w2).await);
        t
    });
}

#[test]
fn filters_and_prev_kv_on_live_events() {
    transcripts(&[], |_kind, s| async move {
        let mut c = s.client().await.unwrap();
        c.put("p/a", "0", None).await.unwrap(); // 2
        let mut w = c
            .watch(
                "p/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_filters([WatchFilterType::NoPut]),
                ),
            )
            .await
            .unwrap();
        let mut t = vec![next_ec(&mut w).await];
        w.watch(
            "p/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await
        .unwrap();
        t.push(next_ec(&mut w).await);
        w.watch("p/a", Some(WatchOptions::new().with_prev_key()))
            .await
            .unwrap();
        t.push(next_ec(&mut w).await);
        c.put("p/a", "1", None).await.unwrap(); // 3
        c.put("p/b", "1", None).await.unwrap(); // 4
        c.delete("p/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap(); // 5
        c.txn(etcd_client::Txn::new().and_then([
            TxnOp::put("p/a", "2", None),
            TxnOp::put("p/c", "2", None),
            TxnOp::put("q", "2", None),
        ]))
        .await
        .unwrap(); // 6
        let mut events = Vec::new();
        for _ in 0..7 {
            events.push(next_ec(&mut w).await);
        }
        events.sort();
        t.extend(events);
        quiet_ec(&mut w, Duration::from_millis(300)).await;
        t
    });
}

/// One raw stream: the generated client, for every field of the response.
struct Raw {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

fn create_req(c: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(c)),
    }
}

fn cancel_req(watch_id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
    }
}

fn progress_req() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

fn channel(s: &Server) -> tonic::transport::Channel {
    // Lazy: etcd's port answers the HTTP/2 handshake only once it sees a gRPC request.
    tonic::transport::Endpoint::from_shared(s.endpoint())
        .unwrap()
        .connect_lazy()
}

impl Raw {
    /// Opens a stream on `ch` with `first` as its first request (etcd sends the response
    /// headers with the first response).
    async fn open(ch: tonic::transport::Channel, first: WatchRequest) -> Raw {
        Self::open_with(ch, first, false).await
    }

    async fn open_with(
        ch: tonic::transport::Channel,
        first: WatchRequest,
        require_leader: bool,
    ) -> Raw {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(first).await.unwrap();
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if require_leader {
            req.metadata_mut()
                .insert("hasleader", "true".parse().unwrap());
        }
        let rx = tokio::time::timeout(
            WAIT,
            WatchClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .watch(req),
        )
        .await
        .expect("watch stream opens in time")
        .expect("watch stream opens")
        .into_inner();
        Raw { tx, rx }
    }

    async fn send(&self, r: WatchRequest) {
        self.tx.send(r).await.unwrap();
    }

    async fn next(&mut self) -> WatchResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            other => panic!("no watch response: {other:?}"),
        }
    }

    async fn quiet_for(&mut self, d: Duration) {
        if let Ok(r) = tokio::time::timeout(d, self.rx.message()).await {
            panic!("unexpected: {:?}", r.map(|r| r.map(|r| show(&r))));
        }
    }
}

fn wc(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: end.into(),
        start_revision: start,
        ..Default::default()
    }
}

#[test]
fn large_revisions_are_fragmented_on_request() {
    // The fragment limit is --max-request-bytes plus etcd's 512 KiB gRPC allowance.
    transcripts(&["--max-request-bytes=100000"], |_kind, s| async move {
        let mut c = s.client().await.unwrap();
        let value = "x".repeat(60_000);
        for i in 0..20 {
            c.put(format!("big/{i:02}"), value.clone(), None)
                .await
                .unwrap(); // 2..=21
        }
        let mut raw = Raw::open(
            channel(&s),
            create_req(WatchCreateRequest {
                prev_kv: true,
                fragment: true,
                ..wc("big/", "big0", 0)
            }),
        )
        .await;
        let mut t = vec![show(&raw.next().await)];
        raw.send(create_req(WatchCreateRequest {
            prev_kv: true,
            ..wc("big/", "big0", 0)
        }))
        .await;
        t.push(show(&raw.next().await));
        // One revision deleting every key: 20 × 60 KB of prev_kv, 1.2 MB in all.
        c.delete("big/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap(); // 22
        let mut fragments = Vec::new();
        let mut whole = None;
        while whole.is_none() || fragments.last().is_none_or(|f: &WatchResponse| f.fragment) {
            let r = raw.next().await;
            if r.watch_id == 0 {
                fragments.push(r);
            } else {
                whole = Some(r);
            }
        }
        let whole = whole.unwrap();
        assert!(!whole.fragment);
        assert_eq!(whole.events.len(), 20);
        assert!(fragments.len() >= 2, "{} fragments", fragments.len());
        let limit = 100_000 + 512 * 1024;
        for (i, f) in fragments.iter().enumerate() {
            assert_eq!(f.fragment, i + 1 < fragments.len());
            assert_eq!(f.header.as_ref().unwrap().revision, 22);
            use prost::Message as _;
            assert!(f.encoded_len() < limit || f.events.len() == 1);
        }
        let joined: Vec<Event> = fragments.iter().flat_map(|f| f.events.clone()).collect();
        assert_eq!(joined, whole.events);
        t.push(format!(
            "fragments: {:?}",
            fragments.iter().map(|f| f.events.len()).collect::<Vec<_>>()
        ));
        t.push(show(&whole));
        t
    });
}

#[test]
fn periodic_progress_notifications() {
    transcripts(
        &["--experimental-watch-progress-notify-interval=300ms"],
        |_kind, s| async move {
            let mut c = s.client().await.unwrap();
            c.put("a", "1", None).await.unwrap(); // 2
            let mut raw = Raw::open(
                channel(&s),
                create_req(WatchCreateRequest {
                    progress_notify: true,
                    ..wc("a", "", 0)
                }),
            )
            .await;
            let mut t = vec![show(&raw.next().await)];
            raw.send(create_req(wc("b", "", 0))).await;
            t.push(show(&raw.next().await));
            // Idle: empty responses to the watcher that asked, at the current revision.
            let first = raw.next().await;
            t.push(show(&first));
            c.put("zz", "1", None).await.unwrap(); // 3
            loop {
                let r = raw.next().await;
                assert_eq!((r.watch_id, r.events.len()), (0, 0), "{}", show(&r));
                if r.header.as_ref().unwrap().revision == 3 {
                    t.push(show(&r));
                    break;
                }
            }
            t
        },
    );
}

#[test]
fn require_leader_streams_work_with_a_leader() {
    transcripts(&[], |_kind, s| async move {
        let mut c = Client::connect(
            [s.endpoint()],
            Some(ConnectOptions::new().with_require_leader(true)),
        )
        .await
        .unwrap();
        let mut w = c.watch("a", None).await.unwrap();
        let mut t = vec![next_ec(&mut w).await];
        c.put("a", "1", None).await.unwrap();
        t.push(next_ec(&mut w).await);
        let mut raw = Raw::open_with(channel(&s), create_req(wc("a", "", 0)), true).await;
        t.push(show(&raw.next().await));
        t
    });
}

#[test]
fn stopping_the_server_ends_watch_streams() {
    let rt = runtime();
    for kind in kinds_under_test() {
        rt.block_on(async {
            let mut s = start(kind, &[]);
            let mut raw = Raw::open(channel(&s), create_req(wc("a", "", 0))).await;
            assert!(raw.next().await.created);
            let stopping = Instant::now();
            tokio::task::block_in_place(|| s.terminate()).unwrap();
            if kind == Kind::Cairn {
                // The stream was ended, not cut off after the shutdown grace period.
                let log = s.log();
                assert!(
                    !log.contains("did not finish in time"),
                    "the open watch stream held up the shutdown:\n{log}"
                );
            }
            let end = tokio::time::timeout(WAIT, raw.rx.message())
                .await
                .expect("the stream ends");
            assert!(!matches!(end, Ok(Some(_))), "{kind:?}: {end:?}");
            println!(
                "{kind:?}: stopped in {:?}, stream ended with {end:?}",
                stopping.elapsed()
            );
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Where cairn answers as etcd 3.5 / main rather than the 3.4 binary installed here
// ---------------------------------------------------------------------------------------------

/// etcd ≥ 3.5.8 answers a progress request only when every watcher of the stream is synced
/// (and then after every event up to the revision it reports); with no watchers it answers
/// nothing. etcd 3.4 answers at once, always.
#[test]
fn progress_request_waits_for_synced_watchers_as_etcd_3_5() {
    if std::env::var_os(cairn_tests::ETCD_ONLY_ENV).is_some() {
        return;
    }
    let rt = runtime();
    rt.block_on(async {
        let s = start(Kind::Cairn, &[]);
        let mut c = s.client().await.unwrap();
        c.put("a", "1", None).await.unwrap(); // 2
        let mut raw = Raw::open(channel(&s), create_req(wc("zz", "", 0))).await;
        raw.next().await;
        raw.send(cancel_req(0)).await;
        raw.next().await;
        raw.send(progress_req()).await;
        raw.quiet_for(Duration::from_millis(500)).await;
        raw.send(create_req(wc("a", "", 2))).await;
        raw.send(progress_req()).await;
        let created = raw.next().await;
        assert!(created.created);
        // The replay of revision 2 comes first; the progress answer (if any) after it.
        let replay = raw.next().await;
        assert_eq!(replay.events.len(), 1);
        raw.send(progress_req()).await;
        loop {
            let r = raw.next().await;
            if r.watch_id == -1 {
                assert_eq!(r.header.unwrap().revision, 2);
                break;
            }
        }
    });
}

/// A negative start revision: etcd main refuses it as compacted (created and canceled, watch
/// id -1); etcd 3.4 creates the watcher and then cancels it.
#[test]
fn negative_start_revision_is_refused() {
    if std::env::var_os(cairn_tests::ETCD_ONLY_ENV).is_some() {
        return;
    }
    let rt = runtime();
    rt.block_on(async {
        let s = start(Kind::Cairn, &[]);
        let mut raw = Raw::open(channel(&s), create_req(wc("a", "", -1))).await;
        assert_eq!(
            show(&raw.next().await),
            "id=-1 rev=1 created canceled reason=\"etcdserver: mvcc: required revision has been compacted\""
        );
    });
}

/// A watch starting exactly at the compact revision replays what compaction kept of it: the
/// puts (without prev_kv, the revision before is compacted), not the deletes; one below it is
/// canceled with the compact revision.
#[test]
fn start_at_the_compact_revision_replays_its_kept_puts() {
    transcripts(&[], |_kind, s| async move {
        let mut c = s.client().await.unwrap();
        c.put("a", "1", None).await.unwrap(); // 2
        c.put("b", "1", None).await.unwrap(); // 3
        c.txn(etcd_client::Txn::new().and_then([
            TxnOp::put("a", "2", None),
            TxnOp::delete("b", None),
            TxnOp::put("c", "1", None),
        ]))
        .await
        .unwrap(); // 4
        c.put("a", "3", None).await.unwrap(); // 5
        c.compact(
            4,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        let mut t = Vec::new();
        let opts = |rev: i64| {
            WatchOptions::new()
                .with_range("z")
                .with_prev_key()
                .with_start_revision(rev)
        };
        let mut w = c.watch("a", Some(opts(4))).await.unwrap();
        t.push(next_ec(&mut w).await);
        t.push(next_ec(&mut w).await);
        w.watch("a", Some(opts(3))).await.unwrap();
        t.push(next_ec(&mut w).await);
        t.push(next_ec(&mut w).await);
        quiet_ec(&mut w, Duration::from_millis(300)).await;
        assert!(
            t[1].contains(" [PUT a=2 c2 m4 v2] [PUT c=1 c4 m4 v1] [PUT a=3"),
            "{t:?}"
        );
        t
    });
}

// ---------------------------------------------------------------------------------------------
// The guarantee checker
// ---------------------------------------------------------------------------------------------

const STREAMS: usize = 4;
const WATCHERS_PER_STREAM: i64 = 250;
const GROUPS: usize = 8;
const KEYS_PER_GROUP: usize = 16;
const WRITERS: usize = 8;
const REVISIONS: usize = 7_000;
const COMPACT_EVERY: i64 = 1_500;
const COMPACT_LAG: i64 = 1_000;

fn gkey(g: usize, k: usize) -> String {
    format!("/g{g}/k{k:02}")
}

#[derive(Debug, Clone)]
struct WSpec {
    key: String,
    end: String,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

impl WSpec {
    fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key.as_bytes()
        } else if self.end == "\0" {
            k >= self.key.as_bytes()
        } else {
            k >= self.key.as_bytes() && k < self.end.as_bytes()
        }
    }

    fn wants(&self, e: &Event) -> bool {
        let put = e.r#type == EventType::Put as i32;
        self.contains(&e.kv.as_ref().unwrap().key)
            && if put { !self.no_put } else { !self.no_delete }
    }

    fn request(&self, id: i64, start: i64) -> WatchRequest {
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        create_req(WatchCreateRequest {
            key: self.key.clone().into(),
            range_end: self.end.clone().into(),
            start_revision: start,
            prev_kv: self.prev_kv,
            filters,
            watch_id: id,
            ..Default::default()
        })
    }
}

fn watcher_specs(rng: &mut rand::rngs::StdRng) -> Vec<WSpec> {
    let mut specs = Vec::new();
    let spec = |key: String, end: String, prev_kv, no_put, no_delete| WSpec {
        key,
        end,
        prev_kv,
        no_put,
        no_delete,
    };
    specs.push(spec("/g".into(), "/h".into(), false, false, false));
    specs.push(spec("/".into(), "\0".into(), true, false, false));
    for g in 0..GROUPS {
        let p = format!("/g{g}/");
        let e = format!("/g{g}0");
        specs.push(spec(p.clone(), e.clone(), false, false, false));
        specs.push(spec(p.clone(), e.clone(), true, false, false));
        specs.push(spec(p, e, false, false, true));
    }
    while specs.len() < WATCHERS_PER_STREAM as usize {
        let key = gkey(rng.gen_range(0..GROUPS), rng.gen_range(0..KEYS_PER_GROUP));
        let f: f64 = rng.gen();
        specs.push(spec(
            key,
            String::new(),
            rng.gen_bool(0.3),
            f < 0.1,
            (0.1..0.2).contains(&f),
        ));
    }
    specs
}

#[derive(Debug, Clone)]
enum Op {
    Put(String, String),
    Del(String),
}

/// What one stream's reader saw, per logical watcher.
#[derive(Default)]
struct Seen {
    /// (response number, event) for every event, in arrival order.
    events: Vec<(usize, Event)>,
    /// Revision intervals `(last seen, compact]` lost to compaction (and restarted after).
    gaps: Vec<(i64, i64)>,
    /// Headers below the last event revision of their response.
    bad_headers: Vec<String>,
}

/// Commands to a stream's reader.
enum Cmd {
    /// Cancel these logical watchers, then restart each from its last seen revision + 1.
    Resume(Vec<i64>),
}

/// The model of the write log: every revision's events, as etcd's watch reports them.
fn model_events(log: &BTreeMap<i64, Vec<Op>>, first_rev: i64) -> Vec<(i64, Vec<Event>)> {
    #[derive(Clone)]
    struct Live {
        value: Vec<u8>,
        create: i64,
        version: i64,
        modr: i64,
    }
    let kv_of = |k: &str, l: &Live| KeyValue {
        key: k.as_bytes().to_vec(),
        value: l.value.clone(),
        create_revision: l.create,
        mod_revision: l.modr,
        version: l.version,
        lease: 0,
    };
    let mut state: HashMap<String, Live> = HashMap::new();
    let mut out = Vec::new();
    for (expect, (rev, ops)) in (first_rev..).zip(log) {
        assert_eq!(*rev, expect, "the write log skips revision {expect}");
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let prev = state.get(k).cloned();
                    let live = Live {
                        value: v.as_bytes().to_vec(),
                        create: prev.as_ref().map_or(*rev, |p| p.create),
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        modr: *rev,
                    };
                    events.push(Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv_of(k, &live)),
                        prev_kv: prev.as_ref().map(|p| kv_of(k, p)),
                    });
                    state.insert(k.clone(), live);
                }
                Op::Del(k) => {
                    if let Some(prev) = state.remove(k) {
                        events.push(Event {
                            r#type: EventType::Delete as i32,
                            kv: Some(KeyValue {
                                key: k.as_bytes().to_vec(),
                                mod_revision: *rev,
                                ..Default::default()
                            }),
                            prev_kv: Some(kv_of(k, &prev)),
                        });
                    }
                }
            }
        }
        assert!(!events.is_empty(), "revision {rev} changed nothing");
        out.push((*rev, events));
    }
    out
}

async fn writer(
    c: Client,
    seed: u64,
    revisions: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<(i64, Vec<Op>)> {
    let mut c = c;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    let mut n = 0u64;
    while revisions.load(std::sync::atomic::Ordering::SeqCst) < REVISIONS {
        n += 1;
        let value = format!("w{seed}-{n}");
        let key = || {
            gkey(
                rand::random::<usize>() % GROUPS,
                rand::random::<usize>() % KEYS_PER_GROUP,
            )
        };
        let roll: f64 = rng.gen();
        let entry = if roll < 0.5 {
            let k = key();
            let r = c.put(k.clone(), value.clone(), None).await.unwrap();
            Some((r.header().unwrap().revision(), vec![Op::Put(k, value)]))
        } else if roll < 0.7 {
            let k = key();
            let r = c.delete(k.clone(), None).await.unwrap();
            (r.deleted() > 0).then(|| (r.header().unwrap().revision(), vec![Op::Del(k)]))
        } else {
            let mut keys: Vec<String> = Vec::new();
            let want = rng.gen_range(2..=5);
            while keys.len() < want {
                let k = key();
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let ops: Vec<Op> = keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| {
                    if rng.gen_bool(0.7) {
                        Op::Put(k, format!("{value}.{i}"))
                    } else {
                        Op::Del(k)
                    }
                })
                .collect();
            let txn_ops: Vec<TxnOp> = ops
                .iter()
                .map(|op| match op {
                    Op::Put(k, v) => TxnOp::put(k.clone(), v.clone(), None),
                    Op::Del(k) => TxnOp::delete(k.clone(), None),
                })
                .collect();
            let r = c
                .txn(etcd_client::Txn::new().and_then(txn_ops))
                .await
                .unwrap();
            // Only the ops that changed something are events.
            let effective: Vec<Op> = ops
                .into_iter()
                .zip(r.op_responses())
                .filter(|(_, resp)| match resp {
                    TxnOpResponse::Delete(d) => d.deleted() > 0,
                    _ => true,
                })
                .map(|(op, _)| op)
                .collect();
            (!effective.is_empty()).then(|| (r.header().unwrap().revision(), effective))
        };
        if let Some(e) = entry {
            log.push(e);
            revisions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    log
}

/// Reads one stream: records events per logical watcher, restarts watchers canceled by
/// compaction from the compact revision, and runs resume commands.
async fn reader(
    mut raw: Raw,
    specs: Vec<WSpec>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut done: tokio::sync::watch::Receiver<bool>,
    quiet: Duration,
    watch_from: i64,
) -> HashMap<i64, Seen> {
    let mut seen: HashMap<i64, Seen> = HashMap::new();
    // Server watch id → logical watcher (1..=WATCHERS_PER_STREAM keep their ids).
    let mut logical: HashMap<i64, i64> = (1..=WATCHERS_PER_STREAM).map(|i| (i, i)).collect();
    let mut next_id = 10_000;
    let mut resuming: HashMap<i64, ()> = HashMap::new();
    let mut n = 0usize;
    let mut finishing = false;
    let last_rev = |seen: &HashMap<i64, Seen>, w: i64| {
        seen.get(&w)
            .and_then(|s| s.events.last())
            .map(|(_, e)| e.kv.as_ref().unwrap().mod_revision)
    };
    loop {
        let msg = tokio::select! {
            m = raw.rx.message() => m,
            Some(Cmd::Resume(ws)) = cmds.recv() => {
                for w in ws {
                    let id = *logical.iter().find(|(_, l)| **l == w).unwrap().0;
                    resuming.insert(id, ());
                    raw.send(cancel_req(id)).await;
                }
                continue;
            }
            _ = async { drop(done.wait_for(|d| *d).await) }, if !finishing => {
                finishing = true;
                continue;
            }
            _ = tokio::time::sleep(quiet), if finishing => return seen,
        };
        let r = match msg {
            Ok(Some(r)) => r,
            other => panic!("watch stream ended: {other:?}"),
        };
        n += 1;
        let Some(&w) = logical.get(&r.watch_id) else {
            // A cancel answered for a watcher compaction already ended.
            let late_cancel = r.canceled && resuming.remove(&r.watch_id).is_some();
            assert!(
                late_cancel || r.watch_id == -1,
                "response for unknown id: {}",
                show(&r)
            );
            continue;
        };
        let entry = seen.entry(w).or_default();
        if r.created {
            assert!(!r.canceled, "watcher {w} refused: {}", show(&r));
            continue;
        }
        if let Some(last) = r.events.last() {
            let rev = last.kv.as_ref().unwrap().mod_revision;
            if r.header.as_ref().unwrap().revision < rev {
                entry.bad_headers.push(show(&r));
            }
        }
        for e in &r.events {
            entry.events.push((n, e.clone()));
        }
        if r.canceled {
            let start = if r.compact_revision > 0 {
                // Lost to compaction: restart from the revision the server reports.
                let last = last_rev(&seen, w).unwrap_or(0);
                seen.get_mut(&w)
                    .unwrap()
                    .gaps
                    .push((last, r.compact_revision));
                r.compact_revision
            } else {
                assert!(
                    resuming.remove(&r.watch_id).is_some(),
                    "unexpected cancel: {}",
                    show(&r)
                );
                // Resumable: from the last revision seen + 1 (or the first revision of the
                // run when it saw nothing yet).
                last_rev(&seen, w).map_or(watch_from, |r| r + 1)
            };
            logical.remove(&r.watch_id);
            let id = next_id;
            next_id += 1;
            logical.insert(id, w);
            raw.send(specs[(w - 1) as usize].request(id, start)).await;
        }
    }
}

async fn guarantees(kind: Kind) {
    let s = start(kind, &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let specs = watcher_specs(&mut rng);
    let ch = channel(&s);
    let c = s.client().await.unwrap();
    // Seed every key so that deletes have something to delete from the start.
    let mut seed_client = c.clone();
    let mut log: BTreeMap<i64, Vec<Op>> = BTreeMap::new();
    for g in 0..GROUPS {
        for k in 0..KEYS_PER_GROUP {
            let r = seed_client.put(gkey(g, k), "seed", None).await.unwrap();
            log.insert(
                r.header().unwrap().revision(),
                vec![Op::Put(gkey(g, k), "seed".into())],
            );
        }
    }
    let first_rev = 2;
    let watch_from = *log.keys().last().unwrap() + 1;
    // Streams on one connection, every watcher created before the writes begin.
    let (done, done_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    let mut cmd_txs = Vec::new();
    for _ in 0..STREAMS {
        let mut raw = Raw::open(ch.clone(), specs[0].request(1, 0)).await;
        for (i, sp) in specs.iter().enumerate().skip(1) {
            raw.send(sp.request(i as i64 + 1, 0)).await;
        }
        // Wait for every created answer before writing.
        let mut created = 0;
        while created < WATCHERS_PER_STREAM {
            let r = raw.next().await;
            assert!(r.created && !r.canceled, "{}", show(&r));
            assert_eq!(r.header.as_ref().unwrap().revision, watch_from - 1);
            created += 1;
        }
        let (tx, rx) = mpsc::channel(4);
        cmd_txs.push(tx);
        readers.push(tokio::spawn(reader(
            raw,
            specs.clone(),
            rx,
            done_rx.clone(),
            Duration::from_secs(3),
            watch_from,
        )));
    }
    let started = Instant::now();
    let revisions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| tokio::spawn(writer(c.clone(), i as u64 + 100, revisions.clone())))
        .collect();
    // Compactions while writing, and one round of cancel + resume on stream 0.
    let mut compactor = c.clone();
    let mut compacted_to = 0;
    let mut resumed = false;
    while !writers.iter().all(|w| w.is_finished()) {
        let written = revisions.load(std::sync::atomic::Ordering::SeqCst) as i64;
        let current = watch_from - 1 + written;
        if current - COMPACT_LAG >= compacted_to + COMPACT_EVERY {
            compacted_to = current - COMPACT_LAG;
            compactor.compact(compacted_to, None).await.unwrap();
        }
        if !resumed && written > REVISIONS as i64 * 2 / 5 {
            resumed = true;
            cmd_txs[0]
                .send(Cmd::Resume((1..=WATCHERS_PER_STREAM).step_by(25).collect()))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in writers {
        for (rev, ops) in w.await.unwrap() {
            assert!(log.insert(rev, ops).is_none(), "revision {rev} twice");
        }
    }
    let write_time = started.elapsed();
    done.send_replace(true);
    let mut seen_all = Vec::new();
    for r in readers {
        seen_all.push(r.await.unwrap());
    }
    println!(
        "{kind:?}: {} revisions written in {write_time:?}, checked after {:?}",
        log.len(),
        started.elapsed()
    );
    let model = model_events(&log, first_rev);
    let total_events: usize = model.iter().map(|(_, e)| e.len()).sum();
    assert!(total_events > 10_000, "only {total_events} events");
    // Check every watcher of every stream.
    let mut failures = Vec::new();
    let mut compaction_restarts = 0;
    for (si, seen) in seen_all.iter().enumerate() {
        for w in 1..=WATCHERS_PER_STREAM {
            let spec = &specs[(w - 1) as usize];
            let empty = Seen::default();
            let got = seen.get(&w).unwrap_or(&empty);
            compaction_restarts += got.gaps.len();
            let in_gap = |rev: i64| got.gaps.iter().any(|(last, c)| rev > *last && rev <= *c);
            let want: Vec<Event> = model
                .iter()
                .filter(|(rev, _)| *rev >= watch_from && !in_gap(*rev))
                .flat_map(|(_, evs)| evs.iter())
                .filter(|e| spec.wants(e))
                .map(|e| {
                    let mut e = e.clone();
                    if !spec.prev_kv {
                        e.prev_kv = None;
                    }
                    e
                })
                .collect();
            let got_events: Vec<Event> = got
                .events
                .iter()
                .filter(|(_, e)| !in_gap(e.kv.as_ref().unwrap().mod_revision))
                .map(|(_, e)| e.clone())
                .collect();
            if got_events != want {
                let first_diff = got_events
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got_events.len().min(want.len()));
                failures.push(format!(
                    "stream {si} watcher {w} {spec:?}: got {} events, want {}; first difference at {first_diff}: got {:?} want {:?}",
                    got_events.len(),
                    want.len(),
                    got_events.get(first_diff).map(show_event),
                    want.get(first_diff).map(show_event)
                ));
                continue;
            }
            // Atomic: all of a revision's events for this watcher in one response.
            let mut where_: HashMap<i64, usize> = HashMap::new();
            for (n, e) in &got.events {
                let rev = e.kv.as_ref().unwrap().mod_revision;
                if *where_.entry(rev).or_insert(*n) != *n {
                    failures.push(format!(
                        "stream {si} watcher {w}: revision {rev} split over responses"
                    ));
                    break;
                }
            }
            if !got.bad_headers.is_empty() {
                failures.push(format!(
                    "stream {si} watcher {w}: header below its events: {:?}",
                    got.bad_headers
                ));
            }
        }
    }
    println!("{kind:?}: {total_events} events, {compaction_restarts} restarts after compaction");
    assert!(
        failures.is_empty(),
        "{kind:?}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn guarantee_checker_many_watchers_concurrent_writes_compactions() {
    let rt = runtime();
    for kind in kinds_under_test() {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(300), guarantees(kind))
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: timed out"))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The slow watcher
// ---------------------------------------------------------------------------------------------

const SLOW_WRITES: usize = 20_000;
const SLOW_VALUE: usize = 4_096;

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads `n` single-event responses of watcher `id` (others ignored) and checks they are the
/// revisions `first..first + n` in order.
async fn expect_revisions(raw: &mut Raw, id: i64, first: i64, n: usize) {
    let mut next = first;
    let end = first + n as i64;
    while next < end {
        let r = tokio::time::timeout(Duration::from_secs(120), raw.rx.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        if r.watch_id != id {
            continue;
        }
        assert!(!r.canceled, "{}", show(&r));
        for e in &r.events {
            assert_eq!(
                e.kv.as_ref().unwrap().mod_revision,
                next,
                "in order, no gap"
            );
            next += 1;
        }
    }
}

/// Returns the peak RSS (kB) of the server while the writes went through (the slow watcher
/// not reading: what an unbounded queue would accumulate). The catch-up afterwards reads the
/// whole history through the backend's page cache, which grows the same way without any
/// watcher, so it is not part of the comparison.
async fn slow_run(kind: Kind, with_slow: bool) -> u64 {
    let s = start(kind, &[]);
    let pid = s.pid().unwrap();
    let c = s.client().await.unwrap();
    let first = 2;
    let mut fast = Raw::open(channel(&s), create_req(wc("/slow/", "/slow0", 0))).await;
    assert!(fast.next().await.created);
    let slow = if with_slow {
        let mut raw = Raw::open(
            channel(&s),
            create_req(WatchCreateRequest {
                prev_kv: true,
                ..wc("/slow/", "/slow0", 0)
            }),
        )
        .await;
        assert!(raw.next().await.created);
        Some(raw)
    } else {
        None
    };
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_kb(pid)));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(rss_kb(pid), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // The fast watcher reads concurrently with the writes.
    let fast_reader = tokio::spawn(async move {
        expect_revisions(&mut fast, 0, first, SLOW_WRITES).await;
        fast
    });
    let value = "v".repeat(SLOW_VALUE);
    let writes: Vec<_> = (0..8)
        .map(|w| {
            let mut c = c.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in (w..SLOW_WRITES).step_by(8) {
                    c.put(format!("/slow/{:03}", i % 500), value.clone(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writes {
        tokio::time::timeout(Duration::from_secs(240), w)
            .await
            .expect("writes complete while a watcher does not read")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), fast_reader)
        .await
        .expect("the fast watcher keeps up")
        .unwrap();
    // Let the server settle a moment, still sampling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.await.unwrap();
    if let Some(mut slow) = slow {
        // Now it reads: everything, in order, through catch-up.
        expect_revisions(&mut slow, 0, first, SLOW_WRITES).await;
    }
    peak.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn slow_watcher_does_not_hold_back_writes_or_memory() {
    let rt = runtime();
    for kind in kinds_under_test() {
        rt.block_on(async {
            let base = slow_run(kind, false).await;
            let slow = slow_run(kind, true).await;
            println!("{kind:?}: peak RSS without a slow watcher {base} kB, with one {slow} kB");
            // Unbounded buffering would hold 20k × (4 KiB value + 4 KiB prev_kv) ≈ 160 MiB.
            if kind == Kind::Cairn {
                assert!(
                    slow <= base + 64 * 1024,
                    "peak RSS grew from {base} kB to {slow} kB with a slow watcher"
                );
            }
        });
    }
}
