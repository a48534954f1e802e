//! Request ids and the table of clients waiting for their proposal to be applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Generates request ids unique across members and restarts, as etcd's idutil does: the low
/// 16 bits of the member id, then a millisecond timestamp taken at start, then a counter whose
/// carries run into the timestamp bits (so ids keep increasing and never repeat an earlier
/// start's, unless a member issues more than 256 requests per millisecond of downtime).
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    /// A generator for `member_id`, seeded with the current time.
    pub fn new(member_id: u64) -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        RequestIds {
            prefix: (member_id & 0xffff) << 48,
            next: AtomicU64::new((ms & ((1 << 40) - 1)) << 8),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.prefix | (n & ((1 << 48) - 1))
    }
}

/// Clients waiting for the apply of the entry carrying their request id.
pub struct Waiters<T> {
    map: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Waiters<T> {
    /// Registers a waiter for `id`; the receiver resolves when [`Waiters::trigger`] is called.
    pub fn register(&self, id: u64) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.map.lock().expect("waiters lock").insert(id, tx);
        rx
    }

    /// Wakes the waiter for `id`, if this member has one (entries proposed by other members,
    /// or replayed after a restart, have none).
    pub fn trigger(&self, id: u64, value: T) {
        let tx = self.map.lock().expect("waiters lock").remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(value);
        }
    }

    /// Forgets a waiter whose client gave up.
    pub fn cancel(&self, id: u64) {
        self.map.lock().expect("waiters lock").remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_carry_the_member_prefix() {
        let g = RequestIds::new(0x1234_5678_9abc_def0);
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert_eq!(a >> 48, 0xdef0);
        assert_eq!(b >> 48, 0xdef0);
    }

    #[tokio::test]
    async fn trigger_wakes_only_the_registered_waiter() {
        let w = Waiters::<u32>::default();
        let rx = w.register(7);
        w.trigger(8, 1);
        w.trigger(7, 2);
        assert_eq!(rx.await.unwrap(), 2);
    }
}
