//! Errors of history building and parsing.

use thiserror::Error;

/// A history that cannot be built as given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HistoryError {
    /// An operation returned before it was called.
    #[error("operation of client {client} returns at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// The operation's client.
        client: u64,
        /// Call time.
        call: u64,
        /// Return time.
        ret: u64,
    },
    /// A call time of `u64::MAX` is reserved: it is the return time of unknown operations.
    #[error("operation of client {client} is called at u64::MAX, which is reserved")]
    CallAtInfinity {
        /// The operation's client.
        client: u64,
    },
    /// A client invoked an operation while another of its operations was in flight.
    #[error("client {client} invokes an operation while another one is in flight")]
    ClientBusy {
        /// The client.
        client: u64,
    },
    /// A client completed an operation it had not invoked.
    #[error("client {client} completes an operation it did not invoke")]
    NothingInFlight {
        /// The client.
        client: u64,
    },
}

/// A history file that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// A line does not have the expected shape.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The events of a line do not form a valid history.
    #[error("line {line}: {source}")]
    History {
        /// 1-based line number.
        line: usize,
        /// Why the event does not fit.
        #[source]
        source: HistoryError,
    },
}

impl ParseError {
    /// A syntax error at `line` (1-based).
    pub(crate) fn syntax(line: usize, reason: impl Into<String>) -> Self {
        ParseError::Syntax {
            line,
            reason: reason.into(),
        }
    }
}
