//! Crash tests of cairn's own durability (WAL + backend): SIGKILL under concurrent write load,
//! torn WAL tails, corruption in the middle of the log, and clean SIGTERM restarts.
//!
//! Randomness (kill delays, operation mix, corruption choices) comes from one seeded RNG whose
//! seed is printed; set `CAIRN_CRASH_SEED=<n>` to replay a run's choices (timing still varies).
//! The write-load test also runs against real etcd (fewer cycles) to check the test itself.

use anyhow::{bail, ensure, Context, Result};
use cairn_tests::{Kind, Server};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Crash tests are CPU-heavy; run them one at a time even when the harness runs tests in
/// parallel.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bound on any single client request, so a hung server fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL record type bytes (see `crates/cairn-raft/src/wal/record.rs`).
const REC_ENTRY: u8 = 2;

fn seed() -> u64 {
    let seed = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed: {seed} (CAIRN_CRASH_SEED={seed} to reuse it)");
    seed
}

/// A clean exit after SIGTERM: status 0, or death by the SIGTERM itself re-raised after cleanup
/// (what etcd does).
fn clean_exit(st: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.success() || st.signal() == Some(libc::SIGTERM)
}

async fn connect(server: &Server) -> Result<Client> {
    tokio::time::timeout(REQUEST_TIMEOUT, server.client())
        .await
        .context("connecting timed out")?
}

/// Every key under `prefix` → (value, mod_revision), read in pages of 1000; plus the header
/// revision of the first page.
async fn read_prefix(
    c: &mut Client,
    prefix: &str,
) -> Result<(BTreeMap<String, (String, i64)>, i64)> {
    let mut out = BTreeMap::new();
    let mut from = prefix.as_bytes().to_vec();
    let end = {
        let mut e = prefix.as_bytes().to_vec();
        *e.last_mut().expect("non-empty prefix") += 1;
        e
    };
    let mut rev = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
        if rev != 0 {
            opts = opts.with_revision(rev);
        }
        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.get(from.clone(), Some(opts)))
            .await
            .context("range timed out")??;
        if rev == 0 {
            rev = r.header().map_or(0, |h| h.revision());
        }
        for kv in r.kvs() {
            out.insert(
                String::from_utf8_lossy(kv.key()).to_string(),
                (
                    String::from_utf8_lossy(kv.value()).to_string(),
                    kv.mod_revision(),
                ),
            );
        }
        if !r.more() {
            break;
        }
        let last = r.kvs().last().context("more=true with no kvs")?;
        from = last.key().to_vec();
        from.push(0);
    }
    Ok((out, rev))
}

// ---------------------------------------------------------------------------------------------
// Crash under load
// ---------------------------------------------------------------------------------------------

/// One write a client task attempted.
#[derive(Debug, Clone)]
enum Op {
    Put {
        key: String,
        value: String,
    },
    /// Both keys get `value` in one txn.
    Txn {
        a: String,
        b: String,
        value: String,
    },
}

#[derive(Default)]
struct Ledger {
    /// Every write sent (acknowledged or not).
    attempted: Vec<Op>,
    /// Writes the server acknowledged.
    acked: Vec<Op>,
}

async fn writer(
    mut c: Client,
    prefix: String,
    tag: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let value = format!("{tag}-{i}");
        let op = if rng.gen_bool(0.5) {
            Op::Put {
                key: format!("{prefix}p{i:06}"),
                value,
            }
        } else {
            Op::Txn {
                a: format!("{prefix}t{i:06}/a"),
                b: format!("{prefix}t{i:06}/b"),
                value,
            }
        };
        ledger.lock().expect("ledger").attempted.push(op.clone());
        let res = match &op {
            Op::Put { key, value } => {
                tokio::time::timeout(REQUEST_TIMEOUT, c.put(key.as_str(), value.as_str(), None))
                    .await
                    .map(|r| r.map(|_| true))
            }
            Op::Txn { a, b, value } => {
                // Guarded by a compare that always holds, so it goes through the txn path.
                let t = Txn::new()
                    .when(vec![Compare::version(a.as_str(), CompareOp::Equal, 0)])
                    .and_then(vec![
                        TxnOp::put(a.as_str(), value.as_str(), None),
                        TxnOp::put(b.as_str(), value.as_str(), None),
                    ])
                    .or_else(vec![]);
                tokio::time::timeout(REQUEST_TIMEOUT, c.txn(t))
                    .await
                    .map(|r| r.map(|r| r.succeeded()))
            }
        };
        match res {
            Ok(Ok(true)) => ledger.lock().expect("ledger").acked.push(op),
            Ok(Ok(false)) => {
                // The compare can only fail if the key already existed: impossible for unique
                // keys. Record it so verification reports it.
                ledger.lock().expect("ledger").acked.push(Op::Put {
                    key: format!("{prefix}IMPOSSIBLE-txn-compare-failed-{i}"),
                    value: String::new(),
                });
                return;
            }
            // The server died (or timed out): the outcome of this write is unknown; stop.
            _ => return,
        }
    }
}

/// Checks the store against the ledgers: every acknowledged write is there with its value,
/// every txn is all-or-nothing, nothing that was never written exists.
fn verify(store: &BTreeMap<String, (String, i64)>, ledgers: &[Ledger]) -> Result<usize> {
    let mut problems = Vec::new();
    let mut written: BTreeMap<&str, &str> = BTreeMap::new();
    let mut acked = 0;
    for l in ledgers {
        for op in &l.acked {
            acked += 1;
            match op {
                Op::Put { key, value } => match store.get(key) {
                    Some((v, _)) if v == value => {}
                    other => problems.push(format!("acknowledged put {key}={value} is {other:?}")),
                },
                Op::Txn { a, b, value } => {
                    for k in [a, b] {
                        match store.get(k) {
                            Some((v, _)) if v == value => {}
                            other => problems
                                .push(format!("acknowledged txn write {k}={value} is {other:?}")),
                        }
                    }
                }
            }
        }
        for op in &l.attempted {
            match op {
                Op::Put { key, value } => {
                    written.insert(key, value);
                }
                Op::Txn { a, b, value } => {
                    written.insert(a, value);
                    written.insert(b, value);
                    match (store.get(a), store.get(b)) {
                        (None, None) => {}
                        (Some((va, ra)), Some((vb, rb))) => {
                            if va != value || vb != value || ra != rb {
                                problems.push(format!(
                                    "txn {a}/{b}={value}: values {va}/{vb} at revisions {ra}/{rb}"
                                ));
                            }
                        }
                        (x, y) => {
                            problems.push(format!("half a txn survived: {a}={x:?} {b}={y:?}"))
                        }
                    }
                }
            }
        }
    }
    for (k, (v, _)) in store {
        match written.get(k.as_str()) {
            Some(w) if *w == v => {}
            other => problems.push(format!("{k}={v} exists but was written as {other:?}")),
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(30);
        bail!("{n} problems after restart:\n{}", problems.join("\n"));
    }
    Ok(acked)
}

async fn crash_under_load(kind: Kind, cycles: usize, tasks: usize) -> Result<()> {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(kind, &[])?;
    let mut all: Vec<Ledger> = Vec::new();
    let mut total_acked = 0usize;
    for cycle in 0..cycles {
        let c = connect(&server).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..tasks).map(|_| Arc::default()).collect();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                tokio::spawn(writer(
                    c.clone(),
                    format!("load/{cycle}/{t}/"),
                    format!("s{seed}-c{cycle}-t{t}"),
                    rng.gen(),
                    stop.clone(),
                    ledgers[t].clone(),
                ))
            })
            .collect();
        let delay = Duration::from_millis(rng.gen_range(300..=1500));
        tokio::time::sleep(delay).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            tokio::time::timeout(REQUEST_TIMEOUT * 2, h)
                .await
                .context("a writer did not stop after the kill")??;
        }
        let ledgers: Vec<Ledger> = ledgers
            .into_iter()
            .map(|l| std::mem::take(&mut *l.lock().expect("ledger")))
            .collect();
        let acked: usize = ledgers.iter().map(|l| l.acked.len()).sum();
        let attempted: usize = ledgers.iter().map(|l| l.attempted.len()).sum();
        println!("{kind:?} cycle {cycle}: killed after {delay:?}; {acked} writes acknowledged of {attempted} sent");
        ensure!(acked >= tasks, "cycle {cycle}: only {acked} writes were acknowledged before the kill; the load did not run");
        all.extend(ledgers);

        server
            .restart()
            .with_context(|| format!("restart after kill #{cycle}"))?;
        let mut c = connect(&server).await?;
        let (store, rev) = read_prefix(&mut c, "load/").await?;
        let n =
            verify(&store, &all).with_context(|| format!("after kill #{cycle} (seed {seed})"))?;
        total_acked = n;
        // Each acknowledged write is one revision of its own, and all of them are present.
        ensure!(
            rev > total_acked as i64,
            "store revision {rev} after restart, but {total_acked} writes were acknowledged"
        );
    }
    println!("{kind:?}: {cycles} kill/restart cycles, {total_acked} acknowledged writes verified");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_keeps_acknowledged_writes_and_txn_atomicity() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(
        Duration::from_secs(100),
        crash_under_load(Kind::Cairn, 5, 8),
    )
    .await
    .expect("test timed out")
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The same test against real etcd (fewer cycles): checks the test, not cairn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_etcd_sanity() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(60), crash_under_load(Kind::Etcd, 2, 8))
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

// ---------------------------------------------------------------------------------------------
// WAL files
// ---------------------------------------------------------------------------------------------

/// One record frame of a WAL segment.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: usize,
    /// `len` field: type byte + payload.
    len: usize,
    kind: u8,
}

impl Frame {
    fn end(&self) -> usize {
        self.offset + 8 + self.len
    }
}

/// The segments of the WAL, sorted by name (= sequence order).
fn wal_segments(server: &Server) -> Result<Vec<PathBuf>> {
    let dir = server.data_dir().join("member").join("wal");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    ensure!(!segs.is_empty(), "no *.wal segment in {}", dir.display());
    Ok(segs)
}

/// Parses every record frame of a segment (`len: u32 LE | crc32c: u32 LE | type | payload`,
/// zeros after the last record), checking each crc; returns the frames and the end of the
/// written data. Also finds that end independently, scanning back over the zero-filled
/// preallocated area, and checks that both agree.
fn parse_segment(bytes: &[u8], path: &Path) -> Result<(Vec<Frame>, usize)> {
    let mut frames = Vec::new();
    let mut off = 0usize;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into()?) as usize;
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into()?);
        if len == 0 && crc == 0 {
            break;
        }
        ensure!(
            off + 8 + len <= bytes.len(),
            "{}: record at {off} of length {len} runs past the end",
            path.display()
        );
        let body = &bytes[off + 8..off + 8 + len];
        ensure!(
            crc32c::crc32c(body) == crc,
            "{}: record at {off} fails its crc before the test touched the file",
            path.display()
        );
        frames.push(Frame {
            offset: off,
            len,
            kind: body[0],
        });
        off += 8 + len;
    }
    let last_nonzero_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    ensure!(
        last_nonzero_end <= off,
        "{}: non-zero bytes after the last record (log ends at {off}, data until {last_nonzero_end})",
        path.display()
    );
    if let Some(last) = frames.last() {
        ensure!(
            last_nonzero_end > last.offset,
            "{}: the backward scan ends at {last_nonzero_end}, before the last record at {}",
            path.display(),
            last.offset
        );
    }
    Ok((frames, off))
}

// ---------------------------------------------------------------------------------------------
// Torn WAL tail
// ---------------------------------------------------------------------------------------------

/// How the last record is damaged.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// Its last 1–4 bytes garbled.
    GarbleEnd,
    /// Zeros from a point inside the record to its end (only a prefix reached the disk).
    ZeroSuffix,
    /// Only the first 1–7 header bytes were written.
    PartialHeader,
}

/// Damages the last record of the last segment like a torn write; returns what was done and
/// the type of the damaged record.
fn tear_tail(server: &Server, rng: &mut StdRng) -> Result<(String, u8)> {
    let segs = wal_segments(server)?;
    let path = segs.last().expect("non-empty").clone();
    let mut bytes = std::fs::read(&path)?;
    let (frames, _end) = parse_segment(&bytes, &path)?;
    let last = *frames.last().context("empty segment")?;
    ensure!(
        last.offset > 0,
        "{}: the last record is the segment header; nothing to tear",
        path.display()
    );
    let original = bytes.clone();
    let mut tear = match rng.gen_range(0..3) {
        0 => Tear::GarbleEnd,
        1 => Tear::ZeroSuffix,
        _ => Tear::PartialHeader,
    };
    for _ in 0..2 {
        match tear {
            Tear::GarbleEnd => {
                let n = rng.gen_range(1..=4.min(last.len));
                for b in &mut bytes[last.end() - n..last.end()] {
                    *b ^= 0xa5;
                }
            }
            Tear::ZeroSuffix => {
                let from = rng.gen_range(last.offset + 8..last.end());
                bytes[from..last.end()].iter_mut().for_each(|b| *b = 0);
            }
            Tear::PartialHeader => {
                let keep = rng.gen_range(1..=7);
                bytes[last.offset + keep..last.end()]
                    .iter_mut()
                    .for_each(|b| *b = 0);
            }
        }
        if bytes != original && bytes[last.offset..last.offset + 8] != [0u8; 8] {
            break;
        }
        // The damage changed nothing (the bytes were zeros already) or erased the whole header:
        // garble instead, which always changes the record.
        bytes.copy_from_slice(&original);
        tear = Tear::GarbleEnd;
    }
    ensure!(bytes != original, "could not damage the last record");
    std::fs::write(&path, &bytes)?;
    Ok((
        format!(
            "{tear:?} on the last record ({} at offset {}, {} bytes) of {}",
            if last.kind == REC_ENTRY {
                "entry"
            } else {
                "non-entry"
            },
            last.offset,
            last.len + 8,
            path.display()
        ),
        last.kind,
    ))
}

/// Writes `torn/{cycle}/{i}` sequentially until `stop`; returns (acked keys in order, the key in
/// flight when the server died, if any).
async fn sequential_writer(
    mut c: Client,
    cycle: usize,
    stop: Arc<AtomicBool>,
    max: usize,
) -> (Vec<String>, Option<String>) {
    let mut acked = Vec::new();
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("torn/{cycle}/{i:05}");
        match tokio::time::timeout(REQUEST_TIMEOUT, c.put(key.as_str(), key.as_str(), None)).await {
            Ok(Ok(_)) => acked.push(key),
            _ => return (acked, Some(key)),
        }
    }
    (acked, None)
}

async fn torn_tail(seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(Kind::Cairn, &[])?;
    // (cycle's acked keys, key in flight, may the last acked write be lost)
    let mut history: Vec<(Vec<String>, Option<String>, bool)> = Vec::new();
    for cycle in 0..4 {
        let c = connect(&server).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, in_flight) = if cycle % 2 == 0 {
            // Idle server: write, then kill.
            let (a, f) = sequential_writer(c, cycle, stop, 150).await;
            ensure!(
                f.is_none(),
                "cycle {cycle}: a write failed on a healthy server"
            );
            server.kill();
            (a, f)
        } else {
            // Kill in the middle of a stream of writes.
            let h = tokio::spawn(sequential_writer(c, cycle, stop.clone(), 100_000));
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..=900))).await;
            server.kill();
            stop.store(true, Ordering::Relaxed);
            tokio::time::timeout(REQUEST_TIMEOUT * 2, h)
                .await
                .context("writer did not stop")??
        };
        ensure!(
            acked.len() >= 10,
            "cycle {cycle}: only {} writes acknowledged",
            acked.len()
        );
        let (what, kind) = tear_tail(&server, &mut rng)?;
        println!(
            "torn tail cycle {cycle}: {} acknowledged, in flight {in_flight:?}; {what}",
            acked.len()
        );
        history.push((acked, in_flight, kind == REC_ENTRY));

        let log_before = server.log().len();
        server
            .restart()
            .with_context(|| format!("restart after a torn tail ({what})"))?;
        let log = server.log()[log_before..].to_string();
        ensure!(
            log.to_lowercase().contains("torn"),
            "cycle {cycle}: restart after {what} did not log a torn-tail repair:\n{log}"
        );
        let mut c = connect(&server).await?;
        let last = &history.last().expect("pushed").0;
        let survived = !c
            .get(last.last().expect("≥ 10 acked").as_str(), None)
            .await?
            .kvs()
            .is_empty();
        println!("  restart repaired the tail; the last acknowledged write survived: {survived}");
        check_torn_history(&mut c, &history)
            .await
            .with_context(|| format!("cycle {cycle} after {what} (seed {seed})"))?;
    }
    // The repaired log must take appends and replay cleanly afterwards.
    let mut c = connect(&server).await?;
    for i in 0..20 {
        c.put(format!("torn/after/{i}"), "x", None).await?;
    }
    let st = server.terminate()?;
    ensure!(clean_exit(st), "SIGTERM exit status {st}");
    let log_before = server.log().len();
    server
        .restart()
        .context("clean restart after the repairs")?;
    let log = server.log()[log_before..].to_string();
    ensure!(
        !log.to_lowercase().contains("torn"),
        "a clean restart reported a torn tail:\n{log}"
    );
    let mut c = connect(&server).await?;
    check_torn_history(&mut c, &history)
        .await
        .context("after the final clean restart")?;
    let (after, _) = read_prefix(&mut c, "torn/after/").await?;
    ensure!(
        after.len() == 20,
        "writes after the repair: {} of 20 survived a clean restart",
        after.len()
    );
    Ok(())
}

/// All acknowledged `torn/` writes are present — except that the last one of a cycle may be
/// lost when the damaged record was an entry — and nothing that was never written exists.
async fn check_torn_history(
    c: &mut Client,
    history: &[(Vec<String>, Option<String>, bool)],
) -> Result<()> {
    let (store, _) = read_prefix(c, "torn/").await?;
    let mut problems = Vec::new();
    let mut allowed: Vec<&String> = Vec::new();
    for (cycle, (acked, in_flight, may_lose_last)) in history.iter().enumerate() {
        for (i, k) in acked.iter().enumerate() {
            let last = i + 1 == acked.len();
            match store.get(k) {
                Some((v, _)) if v == k => {}
                None if last && *may_lose_last => {}
                other => problems.push(format!(
                    "cycle {cycle}: acknowledged write {k} (#{i} of {}) is {other:?}",
                    acked.len()
                )),
            }
            allowed.push(k);
        }
        allowed.extend(in_flight);
    }
    for (k, (v, _)) in store.range("torn/0".to_string()..="torn/9".to_string()) {
        if !allowed.contains(&k) || v != k {
            problems.push(format!("{k}={v} exists but was never written so"));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_is_repaired_on_restart() {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    tokio::time::timeout(Duration::from_secs(90), torn_tail(seed))
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

// ---------------------------------------------------------------------------------------------
// Corruption in the middle of the log
// ---------------------------------------------------------------------------------------------

async fn corruption_mid_log(seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(Kind::Cairn, &[])?;
    let mut c = connect(&server).await?;
    for i in 0..300 {
        c.put(format!("mid/{i:04}"), format!("value-{i}"), None)
            .await?;
    }
    drop(c);
    let st = server.terminate()?;
    ensure!(clean_exit(st), "SIGTERM exit status {st}");

    let path = wal_segments(&server)?[0].clone();
    let mut bytes = std::fs::read(&path)?;
    let (frames, end) = parse_segment(&bytes, &path)?;
    ensure!(
        frames.len() >= 100,
        "{}: only {} records after 300 writes",
        path.display(),
        frames.len()
    );
    // An early record, well before the tail: among the first quarter, never the header.
    let victim = frames[rng.gen_range(1..frames.len() / 4)];
    let pos = rng.gen_range(victim.offset..victim.end());
    let bit = rng.gen_range(0..8);
    bytes[pos] ^= 1 << bit;
    std::fs::write(&path, &bytes)?;
    println!(
        "flipped bit {bit} of byte {pos} in the record at offset {} ({} bytes; log ends at {end}) of {}",
        victim.offset,
        victim.len + 8,
        path.display()
    );

    let (status, out) = server.start_expecting_exit()?;
    println!(
        "cairn refused to start ({status}); last lines:\n{}",
        out.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    ensure!(
        !status.success(),
        "cairn started on a WAL corrupt at offset {}: exit {status}\n{out}",
        victim.offset
    );
    ensure!(
        !out.contains("panicked at") && !out.contains("RUST_BACKTRACE"),
        "cairn panicked instead of refusing cleanly:\n{out}"
    );
    let path_s = path.display().to_string();
    ensure!(
        out.contains(&path_s),
        "the error does not name the segment {path_s}:\n{out}"
    );
    let off = victim.offset;
    ensure!(
        out.contains(&off.to_string()) || out.contains(&format!("{off:#x}")),
        "the error does not name the offset {off} of the damaged record:\n{out}"
    );
    // Refusing must not "repair" (truncate) the log.
    let now = std::fs::read(&path)?;
    ensure!(
        now.len() >= end && now[..end] == bytes[..end],
        "the failed start modified the corrupt segment"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_corruption_mid_log_refuses_to_start() {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    tokio::time::timeout(Duration::from_secs(90), corruption_mid_log(seed))
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

// ---------------------------------------------------------------------------------------------
// Clean SIGTERM + restart
// ---------------------------------------------------------------------------------------------

/// Everything observable about the keyspace: all keys with create/mod/version, the header
/// revision, and a read in the past.
async fn keyspace(c: &mut Client, past: i64) -> Result<String> {
    let all = c
        .get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8])))
        .await?;
    let mut s = format!("rev {}\n", all.header().map_or(0, |h| h.revision()));
    for kv in all.kvs() {
        s += &format!(
            "{}={} c{} m{} v{} l{}\n",
            String::from_utf8_lossy(kv.key()),
            String::from_utf8_lossy(kv.value()),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        );
    }
    let old = c
        .get(
            vec![0u8],
            Some(GetOptions::new().with_range(vec![0u8]).with_revision(past)),
        )
        .await?;
    s += &format!("at {past}: {} keys\n", old.kvs().len());
    for kv in old.kvs() {
        s += &format!(
            "  {}={} m{}\n",
            String::from_utf8_lossy(kv.key()),
            String::from_utf8_lossy(kv.value()),
            kv.mod_revision()
        );
    }
    Ok(s)
}

/// SIGTERM, expecting a clean exit; then restart. The restart must not report a torn tail.
fn sigterm_and_restart(server: &mut Server, what: &str) -> Result<()> {
    let st = server.terminate()?;
    ensure!(
        clean_exit(st),
        "{what}: SIGTERM exit status {st}:\n{}",
        server.log()
    );
    let log_before = server.log().len();
    server.restart()?;
    let log = server.log()[log_before..].to_string();
    ensure!(
        !log.to_lowercase().contains("torn"),
        "{what}: a restart after a clean shutdown reported a torn tail:\n{log}"
    );
    Ok(())
}

async fn clean_restart() -> Result<()> {
    let mut server = Server::start(Kind::Cairn, &[])?;
    let mut c = connect(&server).await?;
    for i in 0..50 {
        c.put(format!("clean/{:02}", i % 17), format!("v{i}"), None)
            .await?;
    }
    for i in 0..10 {
        let t = Txn::new()
            .when(vec![Compare::version(
                format!("clean/t{i}"),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![
                TxnOp::put(format!("clean/t{i}"), "a", None),
                TxnOp::put(format!("clean/u{i}"), "b", None),
            ])
            .or_else(vec![]);
        ensure!(c.txn(t).await?.succeeded(), "txn {i} failed its compare");
    }
    c.delete("clean/03", None).await?;
    c.delete(
        "clean/1",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await?;
    c.compact(30, None).await?;
    c.put("clean/last", "x", None).await?;
    let mut before = keyspace(&mut c, 40).await?;
    drop(c);

    for round in 0..2 {
        sigterm_and_restart(&mut server, &format!("round {round}"))?;
        let mut c = connect(&server).await?;
        let after = keyspace(&mut c, 40).await?;
        ensure!(after == before, "round {round}: the keyspace changed across a clean restart:\nbefore:\n{before}\nafter:\n{after}");
        // The compaction is remembered.
        match c
            .get("clean/00", Some(GetOptions::new().with_revision(29)))
            .await
        {
            Err(etcd_client::Error::GRpcStatus(s))
                if s.message() == "etcdserver: mvcc: required revision has been compacted" => {}
            other => {
                bail!("round {round}: a read below the compact revision after restart: {other:?}")
            }
        }
        // And the store goes on from where it was.
        let before_rev = before
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("rev "))
            .and_then(|r| r.parse::<i64>().ok())
            .context("parsing the revision")?;
        let r = c.put("clean/after", format!("{round}"), None).await?;
        let rev = r.header().map_or(0, |h| h.revision());
        ensure!(
            rev == before_rev + 1,
            "round {round}: first write after restart got revision {rev}, expected {}",
            before_rev + 1
        );
        before = keyspace(&mut c, 40).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_sigterm_restart_keeps_everything() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(90), clean_restart())
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// A lease and its key survive a clean restart: the lease still exists with a remaining TTL,
/// the key is still attached, and revoking it afterwards deletes the key.
async fn lease_restart(kind: Kind) -> Result<()> {
    let mut server = Server::start(kind, &[])?;
    let mut c = connect(&server).await?;
    let lease = c.lease_grant(3600, None).await?.id();
    c.put(
        "lease/k",
        "v",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await?;
    drop(c);
    sigterm_and_restart(&mut server, "lease restart")?;
    let mut c = connect(&server).await?;
    let ttl = c
        .lease_time_to_live(
            lease,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await?;
    ensure!(
        ttl.ttl() > 0 && ttl.keys() == [b"lease/k".to_vec()],
        "lease after a clean restart: ttl {}, keys {:?}",
        ttl.ttl(),
        ttl.keys()
    );
    let kv = c.get("lease/k", None).await?;
    ensure!(
        kv.kvs().first().map(|kv| kv.lease()) == Some(lease),
        "key lost its lease: {:?}",
        kv.kvs()
    );
    c.lease_revoke(lease).await?;
    ensure!(
        c.get("lease/k", None).await?.kvs().is_empty(),
        "revoking the lease after the restart did not delete its key"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_sigterm_restart_keeps_leases() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(60), lease_restart(Kind::Cairn))
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_sigterm_restart_keeps_leases_etcd_sanity() {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(60), lease_restart(Kind::Etcd))
        .await
        .expect("test timed out")
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// SIGTERM must end the server promptly even while a client holds an HTTP/2 connection open
/// and does not answer (a hung or paused client): etcd drains with a bound.
fn sigterm_with_silent_client(kind: Kind) -> Result<()> {
    use std::io::{Read, Write};
    let mut server = Server::start(kind, &[])?;
    let out = server.etcdctl(&["put", "a", "b"]);
    ensure!(out.status.success(), "etcdctl put failed: {out:?}");
    // HTTP/2 preface and an empty SETTINGS frame, then silence; never reads.
    let mut sock = std::net::TcpStream::connect(&server.client_addr)?;
    sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")?;
    // Wait for the server's SETTINGS frame, so the connection is surely established on its
    // side; after that the client neither reads nor acknowledges anything.
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut frame_header = [0u8; 9];
    sock.read_exact(&mut frame_header)
        .context("no HTTP/2 SETTINGS frame from the server")?;
    ensure!(
        frame_header[3] == 4,
        "first server frame is not SETTINGS: {frame_header:?}"
    );
    let t0 = std::time::Instant::now();
    let st = server
        .terminate()
        .context("SIGTERM with an unresponsive client connected")?;
    drop(sock);
    ensure!(clean_exit(st), "exit status {st}");
    println!("{kind:?} exited {:?} after SIGTERM", t0.elapsed());
    Ok(())
}

#[test]
fn sigterm_exits_with_an_unresponsive_client_connected() {
    sigterm_with_silent_client(Kind::Cairn).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn sigterm_exits_with_an_unresponsive_client_connected_etcd_sanity() {
    sigterm_with_silent_client(Kind::Etcd).unwrap_or_else(|e| panic!("{e:#}"));
}
