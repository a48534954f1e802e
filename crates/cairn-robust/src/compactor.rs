//! The compactor: every 200 ms, a compaction a little behind the current revision, through a
//! member chosen at random (sometimes `physical`).
//!
//! The revision compacted to is the current one (as the member asked reports it) minus a
//! random lag of 5–40 revisions, but never past the best whole-keyspace watcher that has
//! delivered every revision so far (see `watch.rs`'s `Progress::contiguous`): the event log
//! the checks build from the watchers then always has every revision, while the other
//! watchers (and reads at old revisions) still run into compactions.

use crate::record::{Clock, Sink};
use crate::watch::Progress;
use etcd_client::{Client, CompactionOptions, GetOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often it compacts.
pub const PERIOD: Duration = Duration::from_millis(200);
/// Bound on each request it sends.
const TIMEOUT: Duration = Duration::from_secs(1);

/// One compaction attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// When it was sent ([`Clock`] nanoseconds).
    pub at: u64,
    /// Through which member.
    pub member: usize,
    /// The revision compacted to.
    pub revision: i64,
    /// Physical compaction.
    pub physical: bool,
    /// `ok`, or the error.
    pub result: String,
}

/// Compacts every [`PERIOD`] until `stop` is true.
pub async fn run_compactor(
    clients: Vec<Client>,
    seed: u64,
    clock: Clock,
    guards: Vec<Arc<Progress>>,
    out: Sink<Compaction>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0i64;
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let member = rng.gen_range(0..clients.len());
        let mut kv = clients[member].kv_client();
        let current = match tokio::time::timeout(
            TIMEOUT,
            kv.get("compactor", Some(GetOptions::new().with_serializable())),
        )
        .await
        {
            Ok(Ok(r)) => r.header().map_or(0, |h| h.revision()),
            _ => continue,
        };
        let safe = guards
            .iter()
            .map(|g| g.contiguous.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0);
        let target = (current - rng.gen_range(5..=40)).min(safe);
        if target <= done.max(1) {
            continue;
        }
        let physical = rng.gen_bool(0.3);
        let opts = physical.then(|| CompactionOptions::new().with_physical());
        let at = clock.now();
        let result = match tokio::time::timeout(TIMEOUT, kv.compact(target, opts)).await {
            Ok(Ok(_)) => {
                done = target;
                "ok".to_string()
            }
            Ok(Err(e)) => {
                let e = e.to_string();
                if e.contains("compacted") {
                    done = done.max(target);
                }
                e
            }
            Err(_) => "timed out".to_string(),
        };
        out.push(Compaction {
            at,
            member,
            revision: target,
            physical,
            result,
        });
    }
}
