//! The lessor: every granted lease with its TTL and, while this member is the primary (the
//! raft leader that has applied its term's first entry), its expiry. Rebuilt from the store's
//! `leases` table at start; kept in step with the store by the apply thread, which hands it
//! what each committed batch granted, revoked and checkpointed ([`LessorOp`]).
//!
//! Expiry follows etcd's lessor: a lease granted on the primary expires `ttl` seconds after
//! its grant is applied; a keep-alive restarts it from the full TTL; a member that becomes
//! primary restarts every lease from `extend` (the election timeout) plus its checkpointed
//! remaining TTL when one is recorded, else its full TTL, spreading expiries when a thousand or
//! more would fall into the same second. Other members keep leases forever; only the primary's
//! expiry loop revokes, through raft.
//!
//! Functions take `now` so tests can move time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_mvcc::LeaseInfo;
use tokio::sync::{watch, Notify};

use super::checkpoint::CheckpointQueue;

/// Revokes proposed per second at most (etcd's `leaseRevokeRate`).
pub const REVOKE_RATE: usize = 1000;

/// A change the apply thread made to the leases, handed over once the batch committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LessorOp {
    /// A lease was granted with this (already raised) TTL.
    Granted {
        /// The lease.
        id: i64,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// A lease was revoked (its keys are gone).
    Revoked {
        /// The lease.
        id: i64,
    },
    /// A remaining TTL was checkpointed (0 clears it).
    Checkpointed {
        /// The lease.
        id: i64,
        /// Remaining TTL in seconds.
        remaining_ttl: i64,
    },
    /// This member, leader of `term`, applied its term's first entry: it becomes primary.
    Promote {
        /// The raft term.
        term: u64,
        /// Added to every lease's remaining time (etcd: the election timeout).
        extend: Duration,
    },
}

/// What a keep-alive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: the lease's TTL.
    Renewed(i64),
    /// The lease carries a checkpointed remaining TTL that must be cleared through raft
    /// first (only when checkpointing is on), as etcd does.
    ClearCheckpoint,
    /// No such lease.
    NotFound,
    /// Expired and waiting for its revoke: answer once that is applied.
    Expired,
    /// This member is not the primary.
    NotPrimary,
}

/// One lease in memory.
#[derive(Debug, Clone)]
struct Lease {
    ttl: i64,
    /// Checkpointed remaining TTL; 0 = none.
    remaining_ttl: i64,
    /// `None` = never (this member is not the primary).
    expiry: Option<Instant>,
    /// The deadline registered in the expiry heap (its expiry, or when to retry a revoke).
    next_check: Option<Instant>,
}

impl Lease {
    /// etcd's `RemainingTTL`: the checkpointed remaining TTL when set, else the TTL.
    fn restart_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<i64, Lease>,
    /// The term this member is primary for.
    primary: Option<u64>,
    /// Deadlines to check, `(when, id)`; entries whose `when` is no longer the lease's
    /// `next_check` are stale and skipped.
    expiry: BinaryHeap<Reverse<(Instant, i64)>>,
    checkpoints: CheckpointQueue,
    /// Revokes proposed in the current one-second window.
    revoke_window: Option<(Instant, usize)>,
}

impl State {
    fn set_expiry(&mut self, id: i64, expiry: Instant) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.expiry = Some(expiry);
            l.next_check = Some(expiry);
            self.expiry.push(Reverse((expiry, id)));
        }
    }
}

/// Settings of a [`Lessor`].
#[derive(Debug, Clone, Copy)]
pub struct LessorConfig {
    /// etcd's minLeaseTTL: shorter TTLs are raised to it.
    pub min_ttl: i64,
    /// How long after proposing a revoke an expired lease is proposed again (etcd: the
    /// request timeout).
    pub revoke_retry: Duration,
    /// Checkpoint interval when checkpointing is on.
    pub checkpoint_interval: Option<Duration>,
}

/// The lessor; see the module docs.
pub struct Lessor {
    cfg: LessorConfig,
    state: Mutex<State>,
    /// Bumped on every change of leases or of primacy; keep-alives waiting for a revoke or
    /// for primacy watch it.
    changed: watch::Sender<u64>,
    /// Wakes the expiry loop early (new deadlines).
    wake: Notify,
}

impl Lessor {
    /// An empty lessor; [`Lessor::recover`] fills it from the store.
    pub fn new(cfg: LessorConfig) -> Self {
        Lessor {
            state: Mutex::new(State {
                checkpoints: CheckpointQueue::new(cfg.checkpoint_interval),
                ..State::default()
            }),
            cfg,
            changed: watch::channel(0).0,
            wake: Notify::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LessorConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }

    /// Replaces every lease with the store's, none primary (etcd's `initAndRecover`): TTLs
    /// below the minimum are raised to it.
    pub fn recover(&self, leases: Vec<LeaseInfo>) {
        let mut st = self.lock();
        st.leases = leases
            .into_iter()
            .map(|l| {
                (
                    l.id,
                    Lease {
                        ttl: l.ttl.max(self.cfg.min_ttl),
                        remaining_ttl: l.remaining_ttl,
                        expiry: None,
                        next_check: None,
                    },
                )
            })
            .collect();
        st.primary = None;
        st.expiry.clear();
        st.checkpoints.clear();
        drop(st);
        self.notify();
    }

    /// Applies what a committed batch did, in order.
    pub fn apply(&self, ops: Vec<LessorOp>, now: Instant) {
        if ops.is_empty() {
            return;
        }
        let mut st = self.lock();
        for op in ops {
            match op {
                LessorOp::Granted { id, ttl } => {
                    st.leases.insert(
                        id,
                        Lease {
                            ttl,
                            remaining_ttl: 0,
                            expiry: None,
                            next_check: None,
                        },
                    );
                    if st.primary.is_some() {
                        st.set_expiry(id, now + secs(ttl));
                        st.checkpoints.schedule(id, ttl, now);
                    }
                }
                LessorOp::Revoked { id } => {
                    st.leases.remove(&id);
                }
                LessorOp::Checkpointed { id, remaining_ttl } => {
                    let Some(l) = st.leases.get_mut(&id) else {
                        continue;
                    };
                    l.remaining_ttl = remaining_ttl;
                    let restart = l.restart_ttl();
                    if st.primary.is_some() {
                        st.checkpoints.schedule(id, restart, now);
                    }
                }
                LessorOp::Promote { term, extend } => self.promote(&mut st, term, extend, now),
            }
        }
        drop(st);
        self.notify();
    }

    /// etcd's `Promote`.
    fn promote(&self, st: &mut State, term: u64, extend: Duration, now: Instant) {
        st.primary = Some(term);
        st.expiry.clear();
        st.checkpoints.clear();
        let mut order: Vec<(Instant, i64)> = Vec::with_capacity(st.leases.len());
        let ids: Vec<i64> = st.leases.keys().copied().collect();
        for id in ids {
            let restart = st.leases[&id].restart_ttl();
            let expiry = now + extend + secs(restart);
            st.set_expiry(id, expiry);
            st.checkpoints.schedule(id, restart, now);
            order.push((expiry, id));
        }
        if order.len() < REVOKE_RATE {
            return;
        }
        // Spread expiries so that no second holds more than 3/4 of the revoke rate.
        order.sort();
        let target = (3 * REVOKE_RATE / 4) as f64;
        let mut base = order[0].0;
        let mut next_window = base + Duration::from_secs(1);
        let mut expires = 0usize;
        for (expiry, id) in order {
            if expiry > next_window {
                base = expiry;
                next_window = base + Duration::from_secs(1);
                expires = 1;
                continue;
            }
            expires += 1;
            if expires as f64 <= target {
                continue;
            }
            let delay = Duration::from_secs_f64(expires as f64 / target)
                .saturating_sub(expiry.saturating_duration_since(base));
            next_window = base + delay;
            let restart = st.leases[&id].restart_ttl();
            st.set_expiry(id, now + delay + extend + secs(restart));
        }
    }

    /// etcd's `Demote`: every lease lives forever here until this member is promoted again.
    pub fn demote(&self) {
        let mut st = self.lock();
        if st.primary.is_none() {
            return;
        }
        st.primary = None;
        for l in st.leases.values_mut() {
            l.expiry = None;
            l.next_check = None;
        }
        st.expiry.clear();
        st.checkpoints.clear();
        drop(st);
        self.notify();
    }

    /// The term this member is primary for, if it is.
    pub fn primary_term(&self) -> Option<u64> {
        self.lock().primary
    }

    /// Keep-alive, on the primary: restarts the lease from its full TTL.
    pub fn renew(&self, id: i64, now: Instant) -> Renewal {
        let mut st = self.lock();
        if st.primary.is_none() {
            return Renewal::NotPrimary;
        }
        let Some(l) = st.leases.get(&id) else {
            return Renewal::NotFound;
        };
        if l.expiry.is_some_and(|e| e <= now) {
            return Renewal::Expired;
        }
        if self.cfg.checkpoint_interval.is_some() && l.remaining_ttl > 0 {
            return Renewal::ClearCheckpoint;
        }
        let ttl = l.ttl;
        // A later deadline: the expiry loop need not wake (the stale entry is skipped).
        st.set_expiry(id, now + secs(ttl));
        Renewal::Renewed(ttl)
    }

    /// Renews ignoring a checkpointed remaining TTL (after clearing it failed).
    pub fn renew_anyway(&self, id: i64, now: Instant) -> Renewal {
        let mut st = self.lock();
        match st.leases.get(&id) {
            None => Renewal::NotFound,
            Some(_) if st.primary.is_none() => Renewal::NotPrimary,
            Some(l) if l.expiry.is_some_and(|e| e <= now) => Renewal::Expired,
            Some(l) => {
                let ttl = l.ttl;
                st.set_expiry(id, now + secs(ttl));
                Renewal::Renewed(ttl)
            }
        }
    }

    /// `(remaining seconds as etcd reports them, granted TTL)`, or `None` when the lease does
    /// not exist. Remaining is truncated toward zero (negative once expired); `i64::MAX`
    /// seconds on a member that is not the primary.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let st = self.lock();
        let l = st.leases.get(&id)?;
        let remaining = match l.expiry {
            None => i64::MAX / 1_000_000_000,
            Some(e) if e >= now => (e - now).as_secs() as i64,
            Some(e) => -((now - e).as_secs() as i64),
        };
        Some((remaining, l.ttl))
    }

    /// True when lease `id` is granted.
    pub fn contains(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Every lease id, soonest expiry first (ties and leases without expiry by id).
    pub fn leases(&self) -> Vec<i64> {
        let st = self.lock();
        let mut all: Vec<(Option<Instant>, i64)> =
            st.leases.iter().map(|(id, l)| (l.expiry, *id)).collect();
        all.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// On the primary: the expired leases to revoke now, at most `limit` and within the revoke
    /// rate. Each is marked so it is proposed again only after the retry interval, should its
    /// revoke not be applied by then.
    pub fn take_expired(&self, now: Instant, limit: usize) -> Vec<i64> {
        let mut st = self.lock();
        if st.primary.is_none() {
            return Vec::new();
        }
        let used = match st.revoke_window {
            Some((start, n)) if now < start + Duration::from_secs(1) => n,
            _ => {
                st.revoke_window = Some((now, 0));
                0
            }
        };
        let limit = limit.min(REVOKE_RATE.saturating_sub(used));
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&Reverse((when, id))) = st.expiry.peek() else {
                break;
            };
            if when > now {
                break;
            }
            st.expiry.pop();
            let retry = now + self.cfg.revoke_retry;
            let Some(l) = st.leases.get_mut(&id) else {
                continue;
            };
            if l.next_check != Some(when) {
                continue; // stale
            }
            l.next_check = Some(retry);
            st.expiry.push(Reverse((retry, id)));
            out.push(id);
        }
        if let Some((_, n)) = st.revoke_window.as_mut() {
            *n += out.len();
        }
        out
    }

    /// On the primary, with checkpointing on: the `(lease, remaining TTL)` checkpoints due,
    /// at most `limit`.
    pub fn due_checkpoints(&self, now: Instant, limit: usize) -> Vec<(i64, i64)> {
        let mut st = self.lock();
        if st.primary.is_none() {
            return Vec::new();
        }
        let State {
            leases,
            checkpoints,
            ..
        } = &mut *st;
        checkpoints.due(now, limit, |id| leases.get(&id).map(|l| (l.expiry, l.ttl)))
    }

    /// The earliest moment something may be due (an expiry, a revoke retry, a checkpoint),
    /// never inside a revoke window already used up at `now`.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let st = self.lock();
        let mut expiry = st.expiry.peek().map(|Reverse((when, _))| *when);
        if let (Some(when), Some((start, used))) = (expiry, st.revoke_window) {
            let end = start + Duration::from_secs(1);
            if used >= REVOKE_RATE && now < end {
                expiry = Some(when.max(end));
            }
        }
        match (expiry, st.checkpoints.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Changes whenever leases or primacy change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Resolves when the expiry loop should look again.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lessor(checkpoint: Option<u64>) -> Lessor {
        Lessor::new(LessorConfig {
            min_ttl: 2,
            revoke_retry: Duration::from_secs(7),
            checkpoint_interval: checkpoint.map(Duration::from_secs),
        })
    }

    const EXTEND: Duration = Duration::from_secs(1);

    fn promote(l: &Lessor, now: Instant) {
        l.apply(
            vec![LessorOp::Promote {
                term: 2,
                extend: EXTEND,
            }],
            now,
        );
    }

    #[test]
    fn followers_keep_leases_forever_and_expire_nothing() {
        let l = lessor(None);
        let t0 = Instant::now();
        l.apply(vec![LessorOp::Granted { id: 1, ttl: 5 }], t0);
        assert_eq!(l.renew(1, t0), Renewal::NotPrimary);
        assert!(l
            .take_expired(t0 + Duration::from_secs(3600), 10)
            .is_empty());
        assert_eq!(l.time_to_live(1, t0), Some((9_223_372_036, 5)));
        assert_eq!(l.time_to_live(2, t0), None);
    }

    #[test]
    fn expiry_in_order_with_retries() {
        let l = lessor(None);
        let t0 = Instant::now();
        promote(&l, t0);
        l.apply(
            vec![
                LessorOp::Granted { id: 3, ttl: 40 },
                LessorOp::Granted { id: 1, ttl: 10 },
                LessorOp::Granted { id: 2, ttl: 20 },
            ],
            t0,
        );
        assert_eq!(l.leases(), vec![1, 2, 3]);
        assert_eq!(l.next_deadline(t0), Some(t0 + Duration::from_secs(10)));
        assert!(l
            .take_expired(t0 + Duration::from_millis(9_999), 10)
            .is_empty());
        assert_eq!(
            l.time_to_live(1, t0 + Duration::from_millis(2_500)),
            Some((7, 10))
        );
        let t = t0 + Duration::from_secs(25);
        assert_eq!(l.take_expired(t, 10), vec![1, 2]);
        // Proposed once; again only after the retry interval if still there.
        assert!(l.take_expired(t + Duration::from_secs(1), 10).is_empty());
        l.apply(vec![LessorOp::Revoked { id: 1 }], t);
        assert_eq!(l.take_expired(t + Duration::from_secs(7), 10), vec![2]);
        assert_eq!(l.renew(2, t), Renewal::Expired);
        assert_eq!(l.renew(1, t), Renewal::NotFound);
        assert_eq!(
            l.time_to_live(2, t + Duration::from_millis(500)),
            Some((-5, 20))
        );
        // Lease 2's revoke is retried again (its retry came first), then 3 expires.
        assert_eq!(l.take_expired(t0 + Duration::from_secs(40), 10), vec![2, 3]);
    }

    #[test]
    fn keepalive_restarts_from_the_full_ttl() {
        let l = lessor(None);
        let t0 = Instant::now();
        promote(&l, t0);
        l.apply(vec![LessorOp::Granted { id: 1, ttl: 10 }], t0);
        let t = t0 + Duration::from_secs(8);
        assert_eq!(l.renew(1, t), Renewal::Renewed(10));
        // The old deadline is stale now.
        assert!(l.take_expired(t0 + Duration::from_secs(12), 10).is_empty());
        assert_eq!(l.time_to_live(1, t + Duration::from_secs(4)), Some((6, 10)));
        assert_eq!(l.take_expired(t + Duration::from_secs(10), 10), vec![1]);
    }

    #[test]
    fn recover_raises_to_the_min_ttl_and_promote_restarts_leases() {
        let l = lessor(None);
        l.recover(vec![
            LeaseInfo {
                id: 1,
                ttl: 1,
                remaining_ttl: 0,
            },
            LeaseInfo {
                id: 2,
                ttl: 100,
                remaining_ttl: 40,
            },
        ]);
        assert_eq!(l.primary_term(), None);
        let t0 = Instant::now();
        promote(&l, t0);
        assert_eq!(l.primary_term(), Some(2));
        // Lease 1: min TTL 2 + extend; lease 2: its checkpointed 40 + extend.
        assert_eq!(l.time_to_live(1, t0), Some((3, 2)));
        assert_eq!(l.time_to_live(2, t0), Some((41, 100)));
        // A keep-alive restarts from the full TTL (no checkpointing: no clearing needed).
        assert_eq!(l.renew(2, t0), Renewal::Renewed(100));
        l.demote();
        assert_eq!(l.primary_term(), None);
        assert!(l
            .take_expired(t0 + Duration::from_secs(1000), 10)
            .is_empty());
    }

    #[test]
    fn promote_spreads_a_pile_of_expiries() {
        let l = lessor(None);
        let n = 3 * REVOKE_RATE;
        l.recover(
            (0..n as i64)
                .map(|id| LeaseInfo {
                    id,
                    ttl: 10,
                    remaining_ttl: 0,
                })
                .collect(),
        );
        let t0 = Instant::now();
        promote(&l, t0);
        let mut per_second = std::collections::BTreeMap::new();
        for id in 0..n as i64 {
            let (remaining, _) = l.time_to_live(id, t0).unwrap();
            *per_second.entry(remaining).or_insert(0usize) += 1;
        }
        assert!(
            per_second.values().all(|&c| c <= 3 * REVOKE_RATE / 4 + 1),
            "{per_second:?}"
        );
        // Never earlier than the plain rule.
        assert!(per_second.keys().all(|&s| s >= 10));
    }

    #[test]
    fn revokes_are_rate_limited() {
        let l = lessor(None);
        let t0 = Instant::now();
        promote(&l, t0);
        let n = REVOKE_RATE + 10;
        l.apply(
            (0..n as i64)
                .map(|id| LessorOp::Granted { id, ttl: 5 })
                .collect(),
            t0,
        );
        let t = t0 + Duration::from_secs(6);
        let first = l.take_expired(t, usize::MAX).len();
        assert_eq!(first, REVOKE_RATE);
        assert!(l
            .take_expired(t + Duration::from_millis(500), usize::MAX)
            .is_empty());
        assert_eq!(
            l.next_deadline(t + Duration::from_millis(500)),
            Some(t + Duration::from_secs(1))
        );
        assert_eq!(
            l.take_expired(t + Duration::from_secs(1), usize::MAX).len(),
            10
        );
    }

    #[test]
    fn checkpoints_of_long_leases() {
        let l = lessor(Some(60));
        let t0 = Instant::now();
        promote(&l, t0);
        l.apply(
            vec![
                LessorOp::Granted { id: 1, ttl: 600 },
                LessorOp::Granted { id: 2, ttl: 30 },
            ],
            t0,
        );
        assert!(l
            .due_checkpoints(t0 + Duration::from_secs(59), 10)
            .is_empty());
        // Only the lease longer than the interval is checkpointed, with its remaining TTL
        // rounded up.
        let t = t0 + Duration::from_millis(60_500);
        assert_eq!(l.due_checkpoints(t, 10), vec![(1, 540)]);
        l.apply(
            vec![LessorOp::Checkpointed {
                id: 1,
                remaining_ttl: 540,
            }],
            t,
        );
        // With a checkpoint recorded, a keep-alive first clears it through raft.
        assert_eq!(l.renew(1, t), Renewal::ClearCheckpoint);
        l.apply(
            vec![LessorOp::Checkpointed {
                id: 1,
                remaining_ttl: 0,
            }],
            t,
        );
        assert_eq!(l.renew(1, t), Renewal::Renewed(600));
        // The next checkpoint is scheduled an interval after the last applied one.
        assert_eq!(
            l.due_checkpoints(t + Duration::from_secs(61), 10),
            vec![(1, 539)]
        );
        // A new leader continues from the checkpoint.
        l.demote();
        l.apply(
            vec![LessorOp::Checkpointed {
                id: 1,
                remaining_ttl: 300,
            }],
            t,
        );
        promote(&l, t);
        assert_eq!(l.time_to_live(1, t), Some((301, 600)));
    }
}
