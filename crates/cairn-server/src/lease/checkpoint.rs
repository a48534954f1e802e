//! Lease checkpoints (etcd's `--experimental-enable-lease-checkpoint`): the primary
//! periodically records, through raft, the remaining TTL of every lease whose remaining TTL is
//! longer than the checkpoint interval, so that a restart or a new leader continues such a
//! lease from about where it was instead of from its full TTL.
//!
//! As in etcd: a lease is scheduled one interval after it is granted, after the primary is
//! promoted and after each of its checkpoints is applied, when its (checkpointed or full)
//! remaining TTL exceeds the interval; a due checkpoint carries the remaining TTL rounded up and
//! is skipped when that is not below the TTL (the lease was just renewed) or the lease has
//! expired. A keep-alive of a lease with a checkpoint first clears it (a checkpoint of 0)
//! through raft, so a renewed lease restarts from its full TTL everywhere.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Checkpoints proposed in one raft entry at most (etcd's `maxLeaseCheckpointBatchSize`).
pub const MAX_BATCH: usize = 1000;

/// Leases waiting for their next checkpoint, soonest first.
#[derive(Debug, Default)]
pub(crate) struct CheckpointQueue {
    /// `None`: checkpointing is off and nothing is ever scheduled.
    interval: Option<Duration>,
    heap: BinaryHeap<Reverse<(Instant, i64)>>,
}

impl CheckpointQueue {
    /// A queue checkpointing every `interval`, or never.
    pub fn new(interval: Option<Duration>) -> Self {
        CheckpointQueue {
            interval,
            heap: BinaryHeap::new(),
        }
    }

    /// Forgets everything scheduled (on demotion and promotion).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Schedules lease `id`, whose remaining TTL is `remaining_ttl` seconds, one interval from
    /// `now` if that is longer than the interval.
    pub fn schedule(&mut self, id: i64, remaining_ttl: i64, now: Instant) {
        if let Some(interval) = self.interval {
            if remaining_ttl > interval.as_secs() as i64 {
                self.heap.push(Reverse((now + interval, id)));
            }
        }
    }

    /// When the next checkpoint is due.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _))| *when)
    }

    /// The checkpoints due at `now`, at most `limit`, as `(lease, remaining TTL)`. `lease`
    /// gives a lease's expiry (`None`: never) and TTL, or `None` when it is gone.
    pub fn due(
        &mut self,
        now: Instant,
        limit: usize,
        lease: impl Fn(i64) -> Option<(Option<Instant>, i64)>,
    ) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        while out.len() < limit {
            match self.heap.peek() {
                Some(Reverse((when, _))) if *when <= now => {}
                _ => break,
            }
            let Some(Reverse((_, id))) = self.heap.pop() else {
                break;
            };
            let Some((Some(expiry), ttl)) = lease(id) else {
                continue;
            };
            if expiry <= now || out.iter().any(|(seen, _)| *seen == id) {
                continue;
            }
            let remaining = (expiry - now).as_secs_f64().ceil() as i64;
            if remaining >= ttl {
                continue;
            }
            out.push((id, remaining));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_schedules_nothing() {
        let mut q = CheckpointQueue::new(None);
        let now = Instant::now();
        q.schedule(1, 1_000_000, now);
        assert_eq!(q.next(), None);
    }

    #[test]
    fn only_leases_longer_than_the_interval() {
        let mut q = CheckpointQueue::new(Some(Duration::from_secs(10)));
        let t0 = Instant::now();
        q.schedule(1, 10, t0);
        q.schedule(2, 11, t0);
        q.schedule(3, 50, t0);
        q.schedule(4, 50, t0);
        q.schedule(5, 50, t0);
        assert_eq!(q.next(), Some(t0 + Duration::from_secs(10)));
        let expiry = |id: i64| match id {
            2 => Some((Some(t0 + Duration::from_secs(11)), 11)),
            // Renewed just now: nothing to record.
            3 => Some((Some(t0 + Duration::from_secs(60)), 50)),
            4 => Some((Some(t0 + Duration::from_millis(30_200)), 50)),
            _ => None,
        };
        assert!(q.due(t0 + Duration::from_secs(9), 10, expiry).is_empty());
        assert_eq!(
            q.due(t0 + Duration::from_secs(10), 10, expiry),
            vec![(2, 1), (4, 21)]
        );
        assert_eq!(q.next(), None);
    }
}
