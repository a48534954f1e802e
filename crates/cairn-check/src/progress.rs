//! Pruning by progress: with a model whose states carry a measure that never decreases (etcd's
//! revision), a known operation bounded by [`Model::progress_bound`] can never be linearized
//! once the state's progress passes its bound, so a branch that gets there is dead at once.
//! Without this, an unknown write tried too early is only found out when the search next has
//! to backtrack, and every subset of the pending unknown writes gets tried in between.

use std::collections::BTreeSet;

use crate::model::Model;
use crate::wgl::Op;

/// The bounds of the known operations not linearized yet, as `(bound, op)` pairs.
pub(crate) struct Bounds {
    of_op: Vec<Option<u64>>,
    pending: BTreeSet<(u64, usize)>,
}

impl Bounds {
    /// The bounds of `ops`, none of them linearized.
    pub(crate) fn new<M: Model>(model: &M, ops: &[Op<'_, M::Input, M::Output>]) -> Self {
        let of_op: Vec<Option<u64>> = ops
            .iter()
            .map(|op| {
                op.output
                    .and_then(|output| model.progress_bound(op.input, output))
            })
            .collect();
        let pending = of_op
            .iter()
            .enumerate()
            .filter_map(|(op, bound)| bound.map(|b| (b, op)))
            .collect();
        Bounds { of_op, pending }
    }

    /// The pending operation (other than `op`) that a state with `progress`, reached by
    /// linearizing `op`, would leave behind for good, if any.
    pub(crate) fn blocker(&self, op: usize, progress: u64) -> Option<usize> {
        let (bound, other) = *self.pending.iter().find(|(_, other)| *other != op)?;
        (progress > bound).then_some(other)
    }

    /// `op` was linearized.
    pub(crate) fn remove(&mut self, op: usize) {
        if let Some(bound) = self.of_op[op] {
            self.pending.remove(&(bound, op));
        }
    }

    /// `op` was taken back.
    pub(crate) fn restore(&mut self, op: usize) {
        if let Some(bound) = self.of_op[op] {
            self.pending.insert((bound, op));
        }
    }
}
