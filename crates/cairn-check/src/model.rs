//! The [`Model`] trait: the sequential specification a history is checked against.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::History;

/// A sequential specification: a state machine whose steps say which outputs are legal.
///
/// States are compared and hashed to memoize the search, so two states that behave the same
/// for every later operation should be equal.
pub trait Model {
    /// What an operation asks for.
    type Input: Debug;
    /// What an operation returns.
    type Output: Debug;
    /// The state of the specified object.
    type State: Clone + Eq + Hash + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state` as one atomic step. `output` is what the operation returned,
    /// or `None` when its outcome is unknown (then any output is acceptable). Returns the new
    /// state, or `None` if this output is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether `input` never changes the state. An unknown read-only operation constrains
    /// nothing, so the checker drops it.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// A measure of progress that no step ever decreases, such as etcd's revision. With
    /// [`Model::progress_bound`] it lets the search drop a branch as soon as an operation that
    /// still has to be linearized no longer can be. The default is 0 for every state.
    fn progress(&self, _state: &Self::State) -> u64 {
        0
    }

    /// For an operation that returned `output`: the highest [`Model::progress`] of a state from
    /// which it can be applied (`step` must reject it from any state with more progress), or
    /// `None` for no bound, the default.
    fn progress_bound(&self, _input: &Self::Input, _output: &Self::Output) -> Option<u64> {
        None
    }

    /// Unknown operations that the rest of `history` proves took effect, each with the output
    /// it must have had (e.g. a write of a value only it wrote, which a read saw). The search
    /// then has to linearize them, at any point after their call. The default proves nothing.
    fn resolve_unknown(
        &self,
        _history: &History<Self::Input, Self::Output>,
    ) -> Vec<(usize, Self::Output)> {
        Vec::new()
    }

    /// Splits the history into independent sub-histories (e.g. one per key), as lists of
    /// operation indices; the history is linearizable iff each of them is. The default keeps
    /// a single sub-history.
    fn partition(&self, history: &History<Self::Input, Self::Output>) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// Splits a history by a key of each operation's input; the parts are ordered by key.
pub fn partition_by_key<I, O, K: Ord>(
    history: &History<I, O>,
    key: impl Fn(&I) -> K,
) -> Vec<Vec<usize>> {
    let mut parts: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops().iter().enumerate() {
        parts.entry(key(&op.input)).or_default().push(index);
    }
    parts.into_values().collect()
}
