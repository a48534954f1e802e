//! The Wing–Gong–Lowe search over one (sub-)history, with Lowe's memoization.
//!
//! Every operation becomes a call entry and a return entry in a doubly linked list sorted by
//! time (calls before returns at equal times, so touching operations count as concurrent;
//! unknown operations return at +infinity, after everything). The search walks the list from
//! its head: at a call entry it tries to linearize that operation next (the model accepts the
//! step, and the pair (set of linearized operations, new state) was never seen before); if so
//! it lifts the operation's two entries out of the list, pushes it on a stack and restarts
//! from the head. Reaching a return entry means that operation should already have been
//! linearized: the search backtracks, popping the last linearized operation, putting its
//! entries back and trying the next candidate after it. The history is linearizable as soon
//! as every operation with a known outcome is linearized (unknown ones may be left out: they
//! never happened); it is not when the search backtracks past the first operation.
//!
//! The memo of (linearized set, state) pairs already explored is what makes the search
//! practical: two interleavings that linearized the same operations into the same state have
//! the same future, so only the first is explored. A model with a monotone progress measure
//! also gets dead branches cut at once (see `progress.rs`).

use crate::memo::{Linearized, Memo};
use crate::model::Model;
use crate::progress::Bounds;

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Why a sub-history is not linearizable: how far the search got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck {
    /// The longest sequence of operations linearized, in order (indices into the search's ops).
    pub(crate) prefix: Vec<usize>,
    /// The model state after `prefix`, as `Debug` text.
    pub(crate) state: String,
    /// The operation whose return was reached before it could be linearized after `prefix`.
    pub(crate) unplaceable: Option<usize>,
    /// The pending operation that `unplaceable` could not pass: the model accepts it next,
    /// but that would leave this one behind for good (see `progress.rs`).
    pub(crate) blocked_by: Option<usize>,
    /// The other operations pending then (called, not linearized).
    pub(crate) candidates: Vec<usize>,
}

/// The answer of a finished search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchResult {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable(Stuck),
}

/// An operation as the search sees it.
#[derive(Debug)]
pub(crate) struct Op<'a, I, O> {
    /// Call time.
    pub(crate) call: u64,
    /// Return time; `None` for +infinity.
    pub(crate) ret: Option<u64>,
    /// What was asked.
    pub(crate) input: &'a I,
    /// What it returned; `None` if unknown (then it may also never have taken effect).
    pub(crate) output: Option<&'a O>,
}

impl<I, O> Op<'_, I, O> {
    fn is_unknown(&self) -> bool {
        self.output.is_none()
    }
}

/// The entry list: index 0 is a sentinel head, then one call and one return entry per op.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call entry, its return entry.
    partner: Vec<usize>,
}

impl Entries {
    fn new<I, O>(ops: &[Op<'_, I, O>]) -> Self {
        // (time, kind, op): calls (kind 0) sort before returns (kind 1) at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, i));
            events.push((op.ret.unwrap_or(u64::MAX), 1, i));
        }
        events.sort_unstable();
        let len = events.len() + 1;
        let mut entries = Entries {
            next: (1..=len).map(|i| if i == len { NIL } else { i }).collect(),
            prev: (0..len).map(|i| if i == 0 { NIL } else { i - 1 }).collect(),
            op: vec![NIL; len],
            is_call: vec![false; len],
            partner: vec![NIL; len],
        };
        let mut call_entry = vec![NIL; ops.len()];
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let e = k + 1;
            entries.op[e] = op;
            if kind == 0 {
                entries.is_call[e] = true;
                call_entry[op] = e;
            } else {
                entries.partner[call_entry[op]] = e;
            }
        }
        entries
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    /// Takes a call entry and its return entry out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.partner[call]);
    }

    /// Undoes [`Entries::lift`] (the list must be as `lift` left it).
    fn unlift(&mut self, call: usize) {
        self.relink(self.partner[call]);
        self.relink(call);
    }
}

/// The longest partial linearization seen, for the explanation of a failure.
struct Best<S> {
    len: usize,
    prefix: Vec<usize>,
    state: S,
    stuck_recorded: bool,
    unplaceable: Option<usize>,
    blocked_by: Option<usize>,
    candidates: Vec<usize>,
}

/// A resumable search for a linearization of some operations (a whole history or one
/// partition of it): [`Search::run`] advances it by a number of steps at a time, so the checker
/// can share its budget among partitions and find the cheapest failure first.
pub(crate) struct Search<'a, M: Model> {
    model: &'a M,
    ops: Vec<Op<'a, M::Input, M::Output>>,
    entries: Entries,
    /// Operations with a known outcome not linearized yet.
    known_left: usize,
    linearized: Linearized,
    memo: Memo<M::State>,
    bounds: Bounds,
    /// (call entry, state before it) for every operation linearized so far.
    stack: Vec<(usize, M::State)>,
    state: M::State,
    /// The entry the search looks at next.
    entry: usize,
    best: Best<M::State>,
    steps: u64,
    result: Option<SearchResult>,
}

impl<'a, M: Model> Search<'a, M> {
    /// A search over `ops` against `model`, not started.
    pub(crate) fn new(model: &'a M, ops: Vec<Op<'a, M::Input, M::Output>>) -> Self {
        let entries = Entries::new(&ops);
        let state = model.init();
        Search {
            model,
            known_left: ops.iter().filter(|op| !op.is_unknown()).count(),
            linearized: Linearized::new(ops.len()),
            memo: Memo::default(),
            bounds: Bounds::new(model, &ops),
            stack: Vec::new(),
            entry: entries.next[HEAD],
            best: Best {
                len: 0,
                prefix: Vec::new(),
                state: state.clone(),
                stuck_recorded: false,
                unplaceable: None,
                blocked_by: None,
                candidates: Vec::new(),
            },
            state,
            entries,
            ops,
            steps: 0,
            result: None,
        }
    }

    /// Steps taken so far.
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// Advances the search by at most `max_steps` steps; returns the result if it is decided.
    pub(crate) fn run(&mut self, max_steps: u64) -> Option<&SearchResult> {
        let mut budget = max_steps;
        while self.result.is_none() {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            self.step();
        }
        self.result.as_ref()
    }

    /// One step: try the entry at hand, or backtrack.
    fn step(&mut self) {
        if self.known_left == 0 {
            self.result = Some(SearchResult::Linearizable);
            self.memo = Memo::default();
            return;
        }
        self.steps += 1;
        let entry = self.entry;
        let op_index = self.entries.op[entry];
        if self.entries.is_call[entry] {
            let op = &self.ops[op_index];
            let next = self
                .model
                .step(&self.state, op.input, op.output)
                .filter(|next| {
                    let progress = self.model.progress(next);
                    self.bounds.blocker(op_index, progress).is_none()
                });
            if let Some(next_state) = next {
                self.linearized.insert(op_index);
                if self.memo.insert(&self.linearized, &next_state) {
                    let previous = std::mem::replace(&mut self.state, next_state);
                    self.stack.push((entry, previous));
                    self.entries.lift(entry);
                    self.bounds.remove(op_index);
                    if !op.is_unknown() {
                        self.known_left -= 1;
                    }
                    if self.stack.len() > self.best.len {
                        self.record_best();
                    }
                    self.entry = self.entries.next[HEAD];
                    return;
                }
                self.linearized.remove(op_index);
            }
            self.entry = self.entries.next[entry];
            return;
        }
        // A return entry: its operation had to be linearized by now.
        if !self.best.stuck_recorded && self.stack.len() == self.best.len {
            self.best.stuck_recorded = true;
            self.best.unplaceable = Some(op_index);
            self.best.blocked_by = self.blocker_of(op_index);
            self.best.candidates = pending_calls(&self.entries, entry);
            self.best.candidates.retain(|&op| op != op_index);
        }
        let Some((call, previous)) = self.stack.pop() else {
            let best = std::mem::replace(
                &mut self.best,
                Best {
                    len: 0,
                    prefix: Vec::new(),
                    state: self.state.clone(),
                    stuck_recorded: true,
                    unplaceable: None,
                    blocked_by: None,
                    candidates: Vec::new(),
                },
            );
            self.result = Some(SearchResult::NotLinearizable(Stuck {
                prefix: best.prefix,
                state: format!("{:?}", best.state),
                unplaceable: best.unplaceable,
                blocked_by: best.blocked_by,
                candidates: best.candidates,
            }));
            self.memo = Memo::default();
            return;
        };
        let undone = self.entries.op[call];
        self.state = previous;
        self.linearized.remove(undone);
        self.entries.unlift(call);
        self.bounds.restore(undone);
        if !self.ops[undone].is_unknown() {
            self.known_left += 1;
        }
        self.entry = self.entries.next[call];
    }

    /// The pending operation that keeps `op` from being linearized next, if the model
    /// accepts `op` but the progress bounds do not.
    fn blocker_of(&self, op: usize) -> Option<usize> {
        let op_ref = &self.ops[op];
        let next = self.model.step(&self.state, op_ref.input, op_ref.output)?;
        self.bounds.blocker(op, self.model.progress(&next))
    }

    fn record_best(&mut self) {
        self.best.len = self.stack.len();
        self.best.prefix = self
            .stack
            .iter()
            .map(|&(e, _)| self.entries.op[e])
            .collect();
        self.best.state = self.state.clone();
        self.best.stuck_recorded = false;
    }
}

/// The operations whose call entries precede `until` in the list.
fn pending_calls(entries: &Entries, until: usize) -> Vec<usize> {
    let mut ops = Vec::new();
    let mut e = entries.next[HEAD];
    while e != until && e != NIL {
        if entries.is_call[e] {
            ops.push(entries.op[e]);
        }
        e = entries.next[e];
    }
    ops
}
