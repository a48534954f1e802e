//! Watchers: long-lived watch streams on every member, recording every response.
//!
//! Every member gets a whole-keyspace watcher from revision 1 with `prev_kv` (together they
//! build the event log the checks rely on) and some narrower ones: a prefix, a range, a single
//! key, with and without `prev_kv`, filters (no puts / no deletes), started at the current
//! revision or at an explicit one.
//!
//! A stream that fails or ends is reopened (after a short back-off) from the revision after
//! the last event it delivered, as a client resuming a watch does; each stream is its own
//! [`WatchStreamRecord`]. Whole-keyspace watchers reopen *at* the last revision they
//! delivered instead (getting it twice, once per stream): cairn-check treats a stream's first
//! revision as possibly the compact revision, where etcd replays only the puts, so it never
//! takes the log's complete view of a revision from there — and after a restart of every
//! member all the whole-keyspace watchers resume together, which would leave that revision
//! incomplete in the log. A stream canceled because its start was compacted is reopened at
//! the compact revision (what a client that must resume does: it has lost the revisions in
//! between, which the checks allow only for that stream). At the end of a run each watcher is
//! asked to catch up to the final revision (with progress requests, so filtered watchers
//! that see no event still report how far they are) before it stops.

use crate::cluster::connect;
use crate::record::{Clock, Event, EventType, Kv, Sink, WatchResp, WatchSpec, WatchStreamRecord};
use etcd_client::{WatchFilterType, WatchOptions};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long opening a watch stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the run wants of its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Watch.
    Run,
    /// Report progress up to this revision (send progress requests).
    CatchUp(i64),
    /// End every stream.
    Stop,
}

/// How far a watcher got, shared with the run.
#[derive(Debug, Default)]
pub struct Progress {
    /// The highest header revision seen in any response (events or progress).
    pub seen: AtomicI64,
    /// For a whole-keyspace watcher that was never compacted: the highest revision up to
    /// which it delivered every revision (0 otherwise). The compactor never compacts past
    /// the best of these, so the event log stays complete.
    pub contiguous: AtomicI64,
    /// Streams opened.
    pub streams: AtomicI64,
}

/// A watcher: its id, member, endpoint and initial request.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// Unique in the run.
    pub id: u64,
    /// The member index.
    pub member: usize,
    /// The member's client URL.
    pub endpoint: String,
    /// The initial request.
    pub spec: WatchSpec,
}

fn options(spec: &WatchSpec, start: i64) -> WatchOptions {
    let mut o = WatchOptions::new();
    if !spec.end.is_empty() {
        o = o.with_range(spec.end.as_bytes().to_vec());
    }
    if start > 0 {
        o = o.with_start_revision(start);
    }
    if spec.prev_kv {
        o = o.with_prev_key();
    }
    let mut filters = Vec::new();
    if spec.no_put {
        filters.push(WatchFilterType::NoPut);
    }
    if spec.no_delete {
        filters.push(WatchFilterType::NoDelete);
    }
    if !filters.is_empty() {
        o = o.with_filters(filters);
    }
    o
}

/// Runs `w` until the phase is [`Phase::Stop`], recording every stream into `out`.
pub async fn run_watcher(
    w: Watcher,
    clock: Clock,
    out: Sink<WatchStreamRecord>,
    progress: Arc<Progress>,
    mut phase: watch::Receiver<Phase>,
) {
    let whole = w.spec.sees_everything() && w.spec.start_revision == 1;
    let mut compacted = false;
    let mut next = w.spec.start_revision;
    let Ok(client) = connect(&w.endpoint).await else {
        return;
    };
    loop {
        if *phase.borrow_and_update() == Phase::Stop {
            return;
        }
        progress.streams.fetch_add(1, Ordering::Relaxed);
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.watch_client().watch(
                crate::traffic::wire_key(&w.spec.key),
                Some(options(&w.spec, next)),
            ),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
        };
        let mut record = WatchStreamRecord {
            watcher: w.id,
            member: w.member,
            spec: WatchSpec {
                start_revision: next,
                ..w.spec.clone()
            },
            created_at_revision: None,
            responses: Vec::new(),
            ended_by: None,
        };
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            let catch_up = matches!(*phase.borrow(), Phase::CatchUp(_));
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        let header = resp.header().map_or(0, |h| h.revision());
                        progress.seen.fetch_max(header, Ordering::SeqCst);
                        if resp.created() {
                            record.created_at_revision = Some(header);
                            if next == 0 {
                                next = header + 1;
                            }
                            if resp.canceled() {
                                // A refused create (e.g. compacted start) is both.
                                record.responses.push(watch_resp(&clock, &resp));
                            } else {
                                continue;
                            }
                        }
                        if resp.canceled() {
                            if !resp.created() {
                                record.responses.push(watch_resp(&clock, &resp));
                            }
                            if resp.compact_revision() > 0 {
                                next = resp.compact_revision();
                                compacted = true;
                            }
                            break format!("canceled: {} (compact revision {})", resp.cancel_reason(), resp.compact_revision());
                        }
                        if resp.events().is_empty() {
                            continue; // a progress notification
                        }
                        let r = watch_resp(&clock, &resp);
                        if let Some(last) = r.events.iter().map(|e| e.kv.mod_revision).max() {
                            next = if w.spec.sees_everything() { last } else { last + 1 };
                            if whole && !compacted {
                                progress.contiguous.fetch_max(last, Ordering::SeqCst);
                            }
                        }
                        record.responses.push(r);
                    }
                    Ok(None) => break "stream ended by the server".to_string(),
                    Err(e) => break format!("error: {e}"),
                },
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Stop {
                        break "end of run".to_string();
                    }
                }
                _ = ticker.tick(), if catch_up => {
                    if stream.request_progress().await.is_err() {
                        break "progress request failed".to_string();
                    }
                }
            }
        };
        record.ended_by = Some(ended);
        out.push(record);
        if *phase.borrow() != Phase::Stop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = phase.changed() => {}
            }
        }
    }
}

fn watch_resp(clock: &Clock, resp: &etcd_client::WatchResponse) -> WatchResp {
    WatchResp {
        at: clock.now(),
        header_revision: resp.header().map_or(0, |h| h.revision()),
        compact_revision: resp.compact_revision(),
        canceled: resp.canceled(),
        cancel_reason: resp.cancel_reason().to_string(),
        events: resp
            .events()
            .iter()
            .map(|e| Event {
                kind: match e.event_type() {
                    etcd_client::EventType::Put => EventType::Put,
                    etcd_client::EventType::Delete => EventType::Delete,
                },
                kv: e.kv().map(Kv::from).unwrap_or(Kv {
                    key: String::new(),
                    value: String::new(),
                    mod_revision: 0,
                    create_revision: 0,
                    version: 0,
                    lease: 0,
                }),
                prev_kv: e.prev_kv().map(Kv::from),
            })
            .collect(),
    }
}

/// The watchers of a run on `members` members: per member, a whole-keyspace one from
/// revision 1 with `prev_kv`, and narrower ones chosen by `variant` (so runs differ).
pub fn watchers_for(
    endpoints: &[String],
    prefix: &str,
    single_key: &str,
    variant: u64,
) -> Vec<Watcher> {
    let mut out = Vec::new();
    let mut id = 0;
    let end = crate::traffic::prefix_end(prefix);
    for (m, ep) in endpoints.iter().enumerate() {
        let mut push = |spec: WatchSpec| {
            out.push(Watcher {
                id,
                member: m,
                endpoint: ep.clone(),
                spec,
            });
            id += 1;
        };
        push(WatchSpec {
            key: String::new(),
            end: "\0".into(),
            start_revision: 1,
            prev_kv: true,
            no_put: false,
            no_delete: false,
        });
        let pick = (variant + m as u64) % 4;
        let narrow = match pick {
            0 => WatchSpec {
                key: prefix.into(),
                end: end.clone(),
                start_revision: 0,
                prev_kv: true,
                no_put: false,
                no_delete: false,
            },
            1 => WatchSpec {
                key: prefix.into(),
                end: end.clone(),
                start_revision: 1,
                prev_kv: false,
                no_put: false,
                no_delete: true,
            },
            2 => WatchSpec {
                key: single_key.into(),
                end: String::new(),
                start_revision: 0,
                prev_kv: true,
                no_put: false,
                no_delete: false,
            },
            _ => WatchSpec {
                key: prefix.into(),
                end: end.clone(),
                start_revision: 1,
                prev_kv: true,
                no_put: true,
                no_delete: false,
            },
        };
        push(narrow);
    }
    out
}
