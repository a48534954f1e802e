//! [`check`]: the entry point. Drops what constrains nothing, partitions the history as the
//! model says, runs the search on every part within a budget, and explains a failure.

use std::collections::HashMap;
use std::fmt::{Debug, Write as _};
use std::time::{Duration, Instant};

use crate::history::History;
use crate::model::Model;
use crate::wgl::{Op, Search, SearchResult};

/// Limits on a check. The default has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Give up (verdict [`Verdict::Unknown`]) after this long.
    pub timeout: Option<Duration>,
    /// Give up after this many search steps, over all partitions.
    pub max_steps: Option<u64>,
}

impl CheckOptions {
    /// Options with a time bound.
    pub fn with_timeout(timeout: Duration) -> Self {
        CheckOptions {
            timeout: Some(timeout),
            ..Self::default()
        }
    }
}

/// Whether a history is linearizable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Some sequential order of the operations, respecting real time, is legal for the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The check ran out of time or steps before deciding.
    Unknown,
}

/// Why a history is not linearizable, with indices into the checked [`History`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which partition (in the model's [`Model::partition`] order) failed.
    pub partition: usize,
    /// The longest legal sequence of that partition's operations the search found, in order.
    pub longest_prefix: Vec<usize>,
    /// The model's state after `longest_prefix`, as `Debug` text.
    pub state_after_prefix: String,
    /// The operation whose return the search reached, after `longest_prefix`, without being
    /// able to linearize it: it and what ran concurrently with it are where to look.
    pub unplaceable: Option<usize>,
    /// When the model accepts `unplaceable` next but its progress (e.g. etcd's revision) would
    /// then pass what this pending operation requires: the operation in the way.
    pub blocked_by: Option<usize>,
    /// The other operations pending at that point (called, not linearized).
    pub candidates: Vec<usize>,
}

/// How many operations of the prefix [`Failure::explain`] shows (the last ones).
const PREFIX_SHOWN: usize = 40;

impl Failure {
    /// A readable account of the failure: the end of the longest prefix, the state after it,
    /// the operation that cannot be placed and the other pending ones.
    pub fn explain<I: Debug, O: Debug>(&self, history: &History<I, O>) -> String {
        let mut text = String::new();
        let len = self.longest_prefix.len();
        let _ = writeln!(
            text,
            "partition {}: the longest linearizable prefix has {len} operations{}",
            self.partition,
            if len > PREFIX_SHOWN {
                format!("; the last {PREFIX_SHOWN}:")
            } else {
                ":".to_string()
            }
        );
        for &index in &self.longest_prefix[len.saturating_sub(PREFIX_SHOWN)..] {
            let _ = writeln!(text, "  {}", describe(history, index));
        }
        let _ = writeln!(text, "state after it: {}", self.state_after_prefix);
        if let Some(index) = self.unplaceable {
            let _ = writeln!(
                text,
                "no extension of it places this operation before its return:\n  {}",
                describe(history, index)
            );
        }
        if let Some(index) = self.blocked_by {
            let _ = writeln!(
                text,
                "placing it next would leave no room for this pending operation:\n  {}",
                describe(history, index)
            );
        }
        if !self.candidates.is_empty() {
            let _ = writeln!(text, "the other operations pending there:");
            for &index in &self.candidates {
                let _ = writeln!(text, "  {}", describe(history, index));
            }
        }
        text
    }
}

fn describe<I: Debug, O: Debug>(history: &History<I, O>, index: usize) -> String {
    match history.get(index) {
        Some(op) => {
            let ret = op
                .return_time()
                .map_or_else(|| "unknown".to_string(), |t| t.to_string());
            match op.output() {
                Some(output) => format!(
                    "#{index} client {} [{}, {}] {:?} -> {:?}",
                    op.client, op.call, ret, op.input, output
                ),
                None => format!(
                    "#{index} client {} [{}, {}] {:?} -> unknown",
                    op.client, op.call, ret, op.input
                ),
            }
        }
        None => format!("#{index} (not in this history)"),
    }
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The answer.
    pub verdict: Verdict,
    /// Why, when the verdict is [`Verdict::NotLinearizable`].
    pub failure: Option<Failure>,
    /// How many partitions the model split the history into.
    pub partitions: usize,
    /// Search steps taken, over all partitions.
    pub steps: u64,
    /// Time taken.
    pub elapsed: Duration,
}

/// How many steps a partition's search runs before the next partition gets its turn.
const SLICE: u64 = 4096;

/// Checks `history` for linearizability against `model`.
///
/// Unknown operations the model proves took effect ([`Model::resolve_unknown`]) must be
/// linearized, at any point after their call; of the others, those the model calls read-only
/// are dropped, and the rest may take effect at any point after their call, or never. The partitions' searches take turns, a
/// slice of steps each, so the cheapest failure is found first and ends the check; if no
/// partition fails but one has not finished when the budget runs out, the verdict is
/// [`Verdict::Unknown`].
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> CheckReport {
    let start = Instant::now();
    let deadline = options.timeout.map(|t| start + t);
    let partitions = model.partition(history);
    let resolved: HashMap<usize, M::Output> = model.resolve_unknown(history).into_iter().collect();
    let mut searches: Vec<(usize, Vec<usize>, Search<'_, M>)> = partitions
        .iter()
        .enumerate()
        .map(|(number, part)| {
            let mut indices = Vec::with_capacity(part.len());
            let mut ops = Vec::with_capacity(part.len());
            for &i in part {
                let op = &history.ops()[i];
                let output = op.output().or_else(|| resolved.get(&i));
                if output.is_none() && model.is_read_only(&op.input) {
                    continue;
                }
                indices.push(i);
                ops.push(Op {
                    call: op.call,
                    ret: op.return_time(),
                    input: &op.input,
                    output,
                });
            }
            (number, indices, Search::new(model, ops))
        })
        .collect();
    let mut done_steps = 0;
    let mut verdict = Verdict::Linearizable;
    let mut failure = None;
    'rounds: while !searches.is_empty() {
        let mut k = 0;
        while k < searches.len() {
            let running: u64 = searches.iter().map(|(_, _, s)| s.steps()).sum();
            let steps = done_steps + running;
            let left = options
                .max_steps
                .map_or(SLICE, |max| max.saturating_sub(steps));
            if left == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                verdict = Verdict::Unknown;
                break 'rounds;
            }
            let (number, indices, search) = &mut searches[k];
            match search.run(left.min(SLICE)) {
                None => k += 1,
                Some(SearchResult::Linearizable) => {
                    done_steps += search.steps();
                    searches.remove(k);
                }
                Some(SearchResult::NotLinearizable(stuck)) => {
                    verdict = Verdict::NotLinearizable;
                    failure = Some(Failure {
                        partition: *number,
                        longest_prefix: stuck.prefix.iter().map(|&i| indices[i]).collect(),
                        state_after_prefix: stuck.state.clone(),
                        unplaceable: stuck.unplaceable.map(|i| indices[i]),
                        blocked_by: stuck.blocked_by.map(|i| indices[i]),
                        candidates: stuck.candidates.iter().map(|&i| indices[i]).collect(),
                    });
                    break 'rounds;
                }
            }
        }
    }
    let steps = done_steps + searches.iter().map(|(_, _, s)| s.steps()).sum::<u64>();
    CheckReport {
        verdict,
        failure,
        partitions: partitions.len(),
        steps,
        elapsed: start.elapsed(),
    }
}
