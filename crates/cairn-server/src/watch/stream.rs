//! One watch stream's driver task: drains the hub queue into the gRPC response stream, runs
//! catch-up rounds while the queue has room, and sends the periodic progress notifications.
//!
//! Backpressure: the response channel is small, so a client that does not read stops the
//! driver at `send`; the hub queue then fills and the stream's watchers fall back to catch-up,
//! which only resumes once the client reads again. Memory per stream stays bounded by the
//! queue limits whatever the client does.

use super::catchup::Round;
use super::hub::{Hub, Outgoing, Signals, StreamId};
use cairn_api::etcdserverpb::{ResponseHeader, WatchResponse};
use cairn_api::EtcdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// Responses popped from the queue at a time.
const POP_BATCH: usize = 64;
/// How long the final error of a stream may wait for a client that does not read.
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes the header of a response at a revision.
pub type HeaderFn = Arc<dyn Fn(i64) -> ResponseHeader + Send + Sync>;

/// A stream's settings.
#[derive(Clone)]
pub struct StreamConfig {
    /// Responses whose encoded size reaches this are fragmented (for watchers that asked):
    /// etcd's `--max-request-bytes` plus its 512 KiB gRPC overhead allowance.
    pub fragment_limit: usize,
    /// The progress notification interval (etcd adds up to 10% jitter).
    pub progress_interval: Duration,
    /// The response header.
    pub header: HeaderFn,
}

/// Splits a response as etcd's `sendFragments` does: unless it asked for fragments, is
/// smaller than `limit` or has fewer than two events, it goes whole; otherwise each fragment
/// takes events while it stays under `limit` (at least one), every fragment but the last has
/// `fragment` set, and all carry the same header and ids.
pub fn fragments(resp: WatchResponse, fragment: bool, limit: usize) -> Vec<WatchResponse> {
    use prost::Message as _;
    if !fragment || resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut base = resp;
    let events = std::mem::take(&mut base.events);
    base.fragment = true;
    let base_len = base.encoded_len();
    let mut out = Vec::new();
    let mut cur = base.clone();
    let mut cur_len = base_len;
    for ev in events {
        let len = prost::encoding::message::encoded_len(11, &ev);
        if !cur.events.is_empty() && cur_len + len >= limit {
            out.push(std::mem::replace(&mut cur, base.clone()));
            cur_len = base_len;
        }
        cur.events.push(ev);
        cur_len += len;
    }
    cur.fragment = false;
    out.push(cur);
    out
}

fn jittered(interval: Duration, salt: u64) -> Duration {
    let tenth = (interval / 10).as_nanos() as u64;
    if tenth == 0 {
        return interval;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let x = (nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % tenth;
    interval + Duration::from_nanos(x)
}

fn into_responses(out: Outgoing, cfg: &StreamConfig) -> Vec<WatchResponse> {
    let mut resp = out.resp;
    resp.header = Some((cfg.header)(out.header_revision));
    fragments(resp, out.fragment, cfg.fragment_limit)
}

/// Runs the stream until the client goes away or `stop` resolves (with the status to end the
/// stream with, if any); then removes the stream and its watchers from the hub.
pub async fn drive(
    hub: Arc<Hub>,
    stream: StreamId,
    signals: Arc<Signals>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    cfg: StreamConfig,
    stop: impl Future<Output = Option<Status>>,
) {
    tokio::pin!(stop);
    let mut next_tick = Instant::now() + jittered(cfg.progress_interval, stream);
    let ending: Option<Status> = 'run: loop {
        let wake = signals.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if Instant::now() >= next_tick {
            hub.progress_tick(stream);
            next_tick = Instant::now() + jittered(cfg.progress_interval, stream);
        }
        let Some(batch) = hub.pop(stream, POP_BATCH) else {
            break hub.is_shut_down().then(|| EtcdError::Stopped.into());
        };
        if !batch.is_empty() {
            for out in batch {
                for resp in into_responses(out, &cfg) {
                    tokio::select! {
                        sent = tx.send(Ok(resp)) => if sent.is_err() { break 'run None },
                        s = &mut stop => break 'run s,
                    }
                }
            }
            continue;
        }
        if hub.needs_catchup(stream) {
            let h = hub.clone();
            match tokio::task::spawn_blocking(move || h.catchup_round(stream)).await {
                Ok(Ok(Round::Progressed)) => continue,
                Ok(Ok(Round::Idle)) => {}
                Ok(Ok(Round::Closed)) => break None,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "watch catch-up failed to read history");
                    break Some(EtcdError::Stopped.into());
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up task failed");
                    break Some(EtcdError::Stopped.into());
                }
            }
        }
        tokio::select! {
            _ = &mut wake => {}
            _ = tokio::time::sleep_until(next_tick) => {}
            _ = tx.closed() => break None,
            s = &mut stop => break s,
        }
    };
    hub.close_stream(stream);
    if let Some(status) = ending {
        let _ = tokio::time::timeout(FINAL_SEND_TIMEOUT, tx.send(Err(status))).await;
    }
}

/// Resolves once `leader` has reported no leader for `grace` without interruption (etcd
/// cancels `hasleader` streams after three election timeouts without a leader). Never
/// resolves if the sender is gone.
pub async fn leader_lost(mut leader: tokio::sync::watch::Receiver<u64>, grace: Duration) {
    loop {
        if leader.wait_for(|l| *l == 0).await.is_err() {
            return std::future::pending().await;
        }
        // The borrow `wait_for` returns is not Send; reduce it to a bool inside the timeout.
        let back =
            tokio::time::timeout(grace, async { leader.wait_for(|l| *l != 0).await.is_ok() }).await;
        match back {
            Err(_) => return,
            Ok(true) => continue,
            Ok(false) => return std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::mvccpb::{Event, KeyValue};
    use prost::Message as _;

    fn ev(key: &str, value_len: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'x'; value_len],
                mod_revision: 5,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn resp(events: Vec<Event>) -> WatchResponse {
        WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 5,
                raft_term: 3,
            }),
            watch_id: 7,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn event_sizes_add_up_to_the_response_size() {
        let r = resp(vec![ev("a", 10), ev("bb", 300), ev("c", 0)]);
        let base = resp(vec![]).encoded_len();
        let sum: usize = r
            .events
            .iter()
            .map(|e| prost::encoding::message::encoded_len(11, e))
            .sum();
        assert_eq!(base + sum, r.encoded_len());
    }

    #[test]
    fn fragments_like_etcd() {
        // Not asked for, small, or a single event: whole.
        let big = resp((0..10).map(|i| ev(&format!("k{i}"), 100)).collect());
        assert_eq!(fragments(big.clone(), false, 300).len(), 1);
        assert_eq!(fragments(big.clone(), true, 1 << 20).len(), 1);
        let one = resp(vec![ev("k", 10_000)]);
        assert_eq!(fragments(one.clone(), true, 300), vec![one]);
        // Split: every fragment under the limit unless it holds a single event, all but the
        // last marked, the events in order and all there.
        let parts = fragments(big.clone(), true, 300);
        assert!(parts.len() > 1);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!((p.watch_id, p.header), (7, big.header));
            assert!(
                p.encoded_len() < 300 || p.events.len() == 1,
                "{}",
                p.encoded_len()
            );
        }
        let all: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(all, big.events);
        // An event bigger than the limit goes alone.
        let mixed = resp(vec![ev("a", 10), ev("b", 1000), ev("c", 10)]);
        let parts = fragments(mixed, true, 300);
        assert_eq!(
            parts.iter().map(|p| p.events.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leader_lost_waits_for_the_grace_without_a_leader() {
        let (tx, rx) = tokio::sync::watch::channel(1u64);
        let grace = Duration::from_secs(3);
        let lost = tokio::spawn(leader_lost(rx, grace));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!lost.is_finished(), "a leader is known");
        tx.send(0).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(5).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!lost.is_finished(), "a leader came back within the grace");
        tx.send(0).unwrap();
        tokio::time::sleep(Duration::from_millis(2_900)).await;
        assert!(!lost.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(lost.is_finished(), "no leader for the whole grace");
    }
}
