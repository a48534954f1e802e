//! Watch fan-out latency: `watchers` watchers on the key prefix, multiplexed over `streams` gRPC
//! watch streams (as clientv3 multiplexes watchers), spread round-robin over the connections;
//! then `--total` puts at `--rate` under the prefix. Each watcher must see every put; the
//! latency of one delivery is the time from the put's acknowledgement (the client receiving the
//! Put response) to the watcher's stream receiving the event. An event that arrives before its
//! put's acknowledgement counts as 0 and is reported in `events_before_ack`; the latency from the
//! put being sent is reported too (`from_put_send_*`, what etcd's `watch-latency` measures).
//! Events not received within `wait` after the last put are errors.

use crate::hist::Histogram;
use crate::keys::KeyGen;
use crate::report::{ms, Report};
use crate::run::{closed_loop, Op};
use crate::{connect, error_text, is_unimplemented, BenchError, Common};
use etcd_client::{WatchOptions, WatchRequestSender, WatchResponseStream};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch as signal;

/// Options of the watch-latency workload.
#[derive(Clone, Debug)]
pub struct WatchOpts {
    /// Watchers in total.
    pub watchers: usize,
    /// gRPC watch streams the watchers are spread over.
    pub streams: usize,
    /// How long to wait for missing events after the last put.
    pub wait: Duration,
}

impl Default for WatchOpts {
    fn default() -> Self {
        WatchOpts {
            watchers: 100,
            streams: 10,
            wait: Duration::from_secs(10),
        }
    }
}

struct Received {
    /// `(mod_revision, received at)` per event delivered to any watcher of the stream.
    events: Vec<(i64, Instant)>,
    error: Option<String>,
}

fn unimplemented(e: &etcd_client::Error) -> BenchError {
    BenchError::Unimplemented {
        service: "Watch",
        message: error_text(e),
    }
}

/// Runs the watch-latency workload; see the module documentation.
pub async fn watch_latency(common: &Common, opts: &WatchOpts) -> Result<Report, BenchError> {
    common.validate()?;
    if opts.watchers == 0 || opts.streams == 0 || opts.streams > opts.watchers {
        return Err(anyhow::anyhow!("need 1 ≤ --streams ≤ --watchers").into());
    }
    let keys = KeyGen::new(&common.prefix, common.key_size, common.key_space_size)?;
    let clients = connect(common).await?;
    let prefix = keys.prefix().to_vec();
    let wopts = if prefix.is_empty() {
        WatchOptions::new().with_all_keys()
    } else {
        WatchOptions::new().with_prefix()
    };
    let expected_per_watcher = common.total;

    // 1. Create every watcher and wait for each creation to be confirmed.
    let setup = Instant::now();
    let (stop_tx, stop_rx) = signal::channel(false);
    let mut receivers = Vec::with_capacity(opts.streams);
    for s in 0..opts.streams {
        let n = opts.watchers / opts.streams + usize::from(s < opts.watchers % opts.streams);
        let mut wc = clients[s % clients.len()].watch_client();
        let mut ws = match wc.watch(prefix.clone(), Some(wopts.clone())).await {
            Ok(ws) => ws,
            Err(e) if is_unimplemented(&e) => return Err(unimplemented(&e)),
            Err(e) => return Err(anyhow::anyhow!("watch stream {s}: {}", error_text(&e)).into()),
        };
        for _ in 1..n {
            ws.watch(prefix.clone(), Some(wopts.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("watch stream {s}: {}", error_text(&e)))?;
        }
        let mut created = 0;
        while created < n {
            let msg = tokio::time::timeout(common.timeout, ws.message())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("watch stream {s}: no creation within {:?}", common.timeout)
                })?;
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return Err(anyhow::anyhow!(
                            "watch stream {s}: watcher canceled at creation: {}",
                            resp.cancel_reason()
                        )
                        .into());
                    }
                    if resp.created() {
                        created += 1;
                    }
                }
                Ok(None) => {
                    return Err(anyhow::anyhow!("watch stream {s}: closed by the server").into())
                }
                Err(e) if is_unimplemented(&e) => return Err(unimplemented(&e)),
                Err(e) => {
                    return Err(anyhow::anyhow!("watch stream {s}: {}", error_text(&e)).into())
                }
            }
        }
        let (sender, stream) = ws.split();
        let expected = n as u64 * expected_per_watcher;
        receivers.push(tokio::spawn(receive(
            sender,
            stream,
            expected,
            stop_rx.clone(),
        )));
    }
    let setup = setup.elapsed();

    // 2. The puts, paced by --rate.
    let put_start = Instant::now();
    let puts = closed_loop(common, &clients, Op::PutAck, keys, common.total).await;
    let put_elapsed = put_start.elapsed();

    // 3. Wait for the events (at most `wait` more), then stop the receivers.
    let wait = opts.wait;
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = stop_tx.send(true);
    });
    let mut received = Vec::with_capacity(receivers.len());
    for r in receivers {
        match r.await {
            Ok(r) => received.push(r),
            Err(e) => received.push(Received {
                events: Vec::new(),
                error: Some(format!("receiver task failed: {e}")),
            }),
        }
    }
    stopper.abort();

    // 4. Latency of every delivery.
    let acks: HashMap<i64, (Instant, Instant)> = puts
        .acks
        .iter()
        .map(|&(rev, sent, ack)| (rev, (sent, ack)))
        .collect();
    let mut rep = Report::new("watch-latency");
    let mut from_send = Histogram::new();
    let (mut before_ack, mut unmatched, mut got) = (0u64, 0u64, 0u64);
    let mut last_event = put_start;
    for r in &received {
        for &(rev, at) in &r.events {
            got += 1;
            last_event = last_event.max(at);
            match acks.get(&rev) {
                Some(&(sent, ack)) => {
                    if at < ack {
                        before_ack += 1;
                    }
                    rep.ok += 1;
                    rep.hist.record(at.saturating_duration_since(ack));
                    from_send.record(at.saturating_duration_since(sent));
                }
                None => unmatched += 1,
            }
        }
        if let Some(e) = &r.error {
            rep.add_error(format!("watch stream: {e}"));
        }
    }
    let expected = opts.watchers as u64 * puts.report.ok;
    let missing = expected.saturating_sub(rep.ok);
    for _ in 0..missing {
        rep.add_error(format!(
            "event not received within {wait:?} after the last put"
        ));
    }
    for (k, v) in &puts.report.error_kinds {
        rep.errors += v;
        *rep.error_kinds.entry(format!("put: {k}")).or_default() += v;
    }
    rep.elapsed = last_event
        .saturating_duration_since(put_start)
        .max(put_elapsed);
    let ph = &puts.report.hist;
    rep.push_extra("watchers", opts.watchers);
    rep.push_extra("streams", opts.streams);
    rep.push_extra("watch_setup_s", setup.as_secs_f64());
    rep.push_extra("puts_ok", puts.report.ok);
    rep.push_extra("put_errors", puts.report.errors);
    rep.push_extra(
        "puts_per_sec",
        puts.report.ok as f64 / put_elapsed.as_secs_f64().max(1e-9),
    );
    rep.push_extra("put_p50_ms", ms(ph.quantile(0.5)));
    rep.push_extra("put_p99_ms", ms(ph.quantile(0.99)));
    rep.push_extra("events_expected", expected);
    rep.push_extra("events_received", got);
    rep.push_extra("events_before_ack", before_ack);
    rep.push_extra("from_put_send_p50_ms", ms(from_send.quantile(0.5)));
    rep.push_extra("from_put_send_p99_ms", ms(from_send.quantile(0.99)));
    rep.push_extra("events_unmatched", unmatched);
    rep.notes.push(
        "requests/sec here is events delivered per second (all watchers), from the first put \
         to the last event"
            .into(),
    );
    if unmatched > 0 {
        rep.notes.push(format!(
            "{unmatched} events were for revisions this run did not write (another writer under \
             the prefix?); not counted"
        ));
    }
    Ok(rep)
}

async fn receive(
    _sender: WatchRequestSender, // kept open: closing it would end the stream
    mut stream: WatchResponseStream,
    expected: u64,
    mut stop: signal::Receiver<bool>,
) -> Received {
    let mut out = Received {
        events: Vec::with_capacity(expected.min(1 << 22) as usize),
        error: None,
    };
    while (out.events.len() as u64) < expected {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => {
                    let now = Instant::now();
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            out.events.push((kv.mod_revision(), now));
                        }
                    }
                    if resp.canceled() {
                        out.error = Some(format!("watcher canceled: {}", resp.cancel_reason()));
                        break;
                    }
                }
                Ok(None) => {
                    out.error = Some("stream closed by the server".into());
                    break;
                }
                Err(e) => {
                    out.error = Some(error_text(&e));
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    out
}
