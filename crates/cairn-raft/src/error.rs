//! Errors of the write-ahead log and of [`DiskStorage`](crate::storage::DiskStorage)'s write path.
//!
//! raft-rs treats every storage error other than `Compacted`, `Unavailable`,
//! `LogTemporarilyUnavailable` and `SnapshotTemporarilyUnavailable` as fatal (it panics). So
//! only the *read* methods of the `raft::Storage` trait talk to raft. They read memory, except
//! `entries()` for indexes older than the entry cache, which reads them back from the WAL
//! segments: a damaged record found then is a fatal `Store(Other)`, as it would be corrupt data.
//! Every write operation returns a [`WalError`] to the Ready loop, which decides how to stop.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while opening, replaying or writing the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system I/O call failed. `path` is the file or directory it was about.
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the failing call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The log on disk is damaged somewhere other than a torn tail, so it cannot be trusted.
    /// The server must refuse to start; an operator has to look at `file` near `offset`.
    #[error("WAL corrupt: {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment file (or, for a missing segment, the file after the gap).
        file: PathBuf,
        /// Byte offset of the offending record inside `file`.
        offset: u64,
        /// What is wrong, e.g. `crc mismatch (expected 0x…, got 0x…)`.
        reason: String,
    },

    /// Another process (or another handle in this process) holds the WAL directory's lock.
    #[error("WAL directory {} is locked by another process", .0.display())]
    Locked(PathBuf),

    /// An earlier write or sync failed. After a failed `fdatasync` the kernel may have dropped
    /// the dirty pages, so what is on disk is unknown: the WAL refuses all further writes and
    /// the process must restart and replay.
    #[error("WAL is unusable after an earlier failure: {0}")]
    Failed(String),

    /// The caller asked for something that would break the log's invariants (a gap, an
    /// overwrite of compacted entries, compaction past the last index, a second bootstrap, …).
    /// Nothing was written.
    #[error("invalid WAL request: {0}")]
    InvalidRequest(String),

    /// A snapshot at or below the already truncated index was offered for installation.
    /// Nothing was written.
    #[error("snapshot at index {index} is out of date (log already truncated at {truncated})")]
    SnapshotOutOfDate {
        /// The offered snapshot's index.
        index: u64,
        /// The log's current truncated index.
        truncated: u64,
    },

    /// A raft message could not be encoded (never expected for the proto3 types we write).
    #[error("WAL encode error: {0}")]
    Encode(String),
}

impl WalError {
    /// Wraps an `io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for [`WalError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, WalError::Corrupt { .. })
    }
}

impl From<WalError> for raft::Error {
    /// Storage errors that are not one of raft's recoverable ones become `Store(Other)`; raft
    /// panics on those, which is why the `raft::Storage` methods never produce them.
    fn from(e: WalError) -> raft::Error {
        raft::Error::Store(raft::StorageError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_display_names_file_and_offset() {
        let e = WalError::Corrupt {
            file: PathBuf::from("/d/0000000000000001-0000000000000000.wal"),
            offset: 12345,
            reason: "crc mismatch (expected 0x00000001, got 0x00000002)".into(),
        };
        assert_eq!(
            e.to_string(),
            "WAL corrupt: /d/0000000000000001-0000000000000000.wal at offset 12345: \
             crc mismatch (expected 0x00000001, got 0x00000002)"
        );
        assert!(e.is_corrupt());
    }

    #[test]
    fn converts_to_raft_store_error() {
        let e: raft::Error = WalError::Failed("x".into()).into();
        assert!(matches!(
            e,
            raft::Error::Store(raft::StorageError::Other(_))
        ));
    }
}
