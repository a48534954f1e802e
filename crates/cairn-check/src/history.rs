//! Histories: the operations clients invoked, when, and what they saw.
//!
//! Times are plain `u64`s in any unit (nanoseconds since a start, or a logical clock that
//! ticks at every event); only their order matters. An operation whose outcome the client
//! never learned (a timeout, a lost connection, no reply before the end) is
//! [`Outcome::Unknown`]: it may have taken effect at any point after its call, or never, as if
//! it returned at +infinity.

use crate::error::HistoryError;

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The operation returned `output` at time `at`. An `at` of `u64::MAX` says it took
    /// effect, with that output, at some point after its call (e.g. a timed-out write that a
    /// watch later showed).
    Returned {
        /// Return time.
        at: u64,
        /// What the operation returned.
        output: O,
    },
    /// The client never learned the result: the operation took effect at some point after
    /// its call, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (process) that invoked it; one operation in flight per client.
    pub client: u64,
    /// When it was invoked.
    pub call: u64,
    /// What was asked.
    pub input: I,
    /// How it ended.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// The return time, `None` for an unknown outcome.
    pub fn return_time(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { at, .. } => Some(at),
            Outcome::Unknown => None,
        }
    }

    /// The output, `None` for an unknown outcome.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// Whether the outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown)
    }
}

/// A concurrent history: operations with their real-time windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation and returns its index; its return must not precede its call.
    pub fn push(&mut self, op: Operation<I, O>) -> Result<usize, HistoryError> {
        if op.call == u64::MAX {
            return Err(HistoryError::CallAtInfinity { client: op.client });
        }
        if let Some(ret) = op.return_time() {
            if ret < op.call {
                return Err(HistoryError::ReturnBeforeCall {
                    client: op.client,
                    call: op.call,
                    ret,
                });
            }
        }
        self.ops.push(op);
        Ok(self.ops.len() - 1)
    }

    /// Adds an operation that returned `output` at `ret`.
    pub fn push_returned(
        &mut self,
        client: u64,
        call: u64,
        ret: u64,
        input: I,
        output: O,
    ) -> Result<usize, HistoryError> {
        self.push(Operation {
            client,
            call,
            input,
            outcome: Outcome::Returned { at: ret, output },
        })
    }

    /// Adds an operation whose outcome is unknown.
    pub fn push_unknown(
        &mut self,
        client: u64,
        call: u64,
        input: I,
    ) -> Result<usize, HistoryError> {
        self.push(Operation {
            client,
            call,
            input,
            outcome: Outcome::Unknown,
        })
    }

    /// The operations, in the order they were added.
    pub fn ops(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// The operation at `index`.
    pub fn get(&self, index: usize) -> Option<&Operation<I, O>> {
        self.ops.get(index)
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, by value.
    pub fn into_ops(self) -> Vec<Operation<I, O>> {
        self.ops
    }
}
