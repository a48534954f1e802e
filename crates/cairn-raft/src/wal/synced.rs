//! Power-loss simulation for the robustness harness (feature `failpoints` only).
//!
//! After every fsync of a segment, and every creation or removal of one, the WAL rewrites
//! `<wal dir>/synced.txt`: one line per live segment file, oldest first, `name length`, where
//! `length` is how many bytes of that file are known to be on disk (fdatasync'ed); blank lines
//! are padding. The file is rewritten in place with a single write (see `Sidecar::write`),
//! without an fsync of its own: it only has to survive the process being killed, and is only
//! ever read after that.
//!
//! [`truncate_to_synced`] then turns "killed with `SIGKILL`" into "lost power": every segment
//! is cut back to its synced length and segments never synced are removed, so the WAL is
//! exactly what a crash of the machine could have left (the most that can be lost).
//!
//! Only the WAL needs this: nothing reaches the backend before its WAL records are fsynced
//! (see `crate::node`), so the backend can never be ahead of the cut WAL.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::error::WalError;
use crate::wal::segment::{parse_segment_name, TMP_EXT};
use crate::wal::LOCK_FILE;

/// Name of the sidecar in the WAL directory.
pub const SYNCED_FILE: &str = "synced.txt";
/// The sidecar while it is being written.
const SYNCED_TMP: &str = "synced.txt.tmp";

/// The open sidecar of a running WAL.
#[derive(Debug)]
pub(crate) struct Sidecar {
    file: File,
    /// Bytes in the file now.
    len: usize,
}

/// Content that fits in one page is rewritten in place with one `pwrite` at offset 0: a
/// process killed during that call either finished it or never started it (Linux checks for a
/// fatal signal only between pages of a write), so the file is always whole. Larger content
/// goes through a temporary file and a rename.
const IN_PLACE_MAX: usize = 4096;

impl Sidecar {
    /// Opens (creating) the sidecar of the WAL in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Sidecar, WalError> {
        let path = dir.join(SYNCED_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io(&path, e))?;
        let len = file.metadata().map_err(|e| WalError::io(&path, e))?.len() as usize;
        Ok(Sidecar { file, len })
    }

    /// Rewrites the sidecar from `(segment file, synced length)` pairs, oldest first. A
    /// shorter content is padded with blank lines, which readers skip, so the file never has
    /// to shrink (which would take a second call).
    pub(crate) fn write<'a>(
        &mut self,
        dir: &Path,
        segments: impl Iterator<Item = (&'a Path, u64)>,
    ) -> Result<(), WalError> {
        let mut text = String::with_capacity(self.len.max(64));
        for (path, len) in segments {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let _ = writeln!(text, "{name} {len}");
        }
        let path = dir.join(SYNCED_FILE);
        if text.len() <= IN_PLACE_MAX && self.len <= IN_PLACE_MAX {
            while text.len() < self.len {
                text.push('\n');
            }
            self.file
                .write_all_at(text.as_bytes(), 0)
                .map_err(|e| WalError::io(&path, e))?;
            self.len = text.len();
            return Ok(());
        }
        let tmp = dir.join(SYNCED_TMP);
        fs::write(&tmp, &text).map_err(|e| WalError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
        // The old handle now names the replaced file.
        *self = Sidecar::open(dir)?;
        Ok(())
    }
}

/// What [`truncate_to_synced`] did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// Listed, and already exactly its synced length.
    Kept,
    /// Listed, and cut back to its synced length.
    Truncated,
    /// Not listed (never synced, or an interrupted creation): deleted.
    Removed,
    /// Listed but absent: its removal was done and not yet recorded in the sidecar.
    Missing,
}

/// One file's part of a [`TruncateReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file name inside the WAL directory.
    pub name: String,
    /// Its synced length from the sidecar; `None` when it was not listed.
    pub synced_len: Option<u64>,
    /// Its length before (0 when missing); includes preallocated zeros.
    pub old_len: u64,
    /// Bytes of written data dropped: from the synced length (0 for a removed file) up to the
    /// last non-zero byte. Preallocated zeros beyond the data are not counted.
    pub dropped_bytes: u64,
    /// What was done.
    pub outcome: FileOutcome,
}

/// What [`truncate_to_synced`] did, one entry per segment file involved, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncateReport {
    /// Every listed segment and every segment-like file that was not listed.
    pub files: Vec<FileReport>,
}

impl TruncateReport {
    /// Written bytes dropped over all files.
    pub fn dropped_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.dropped_bytes).sum()
    }
}

/// End of the written data of `file` at or after `from`: one past its last non-zero byte, or
/// `from` when only zeros follow.
fn data_end(file: &mut File, path: &Path, from: u64) -> Result<u64, WalError> {
    let io = |e| WalError::io(path, e);
    file.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut end = from;
    let mut at = from;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(end);
        }
        if let Some(p) = buf[..n].iter().rposition(|&b| b != 0) {
            end = at + p as u64 + 1;
        }
        at += n as u64;
    }
}

/// Parses the sidecar into `(name, synced length)`, in file order.
fn read_sidecar(dir: &Path) -> Result<Vec<(String, u64)>, WalError> {
    let path = dir.join(SYNCED_FILE);
    let text = fs::read_to_string(&path).map_err(|e| WalError::io(&path, e))?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in text.lines() {
        if line.trim().is_empty() {
            // Padding (see Sidecar::write).
            offset += line.len() as u64 + 1;
            continue;
        }
        let parsed = line
            .split_once(' ')
            .and_then(|(name, len)| Some((name, len.parse::<u64>().ok()?)))
            .filter(|(name, _)| parse_segment_name(name).is_some());
        let Some((name, len)) = parsed else {
            return Err(WalError::Corrupt {
                file: path,
                offset,
                reason: format!("expected `<segment file> <length>`, got {line:?}"),
            });
        };
        out.push((name.to_string(), len));
        offset += line.len() as u64 + 1;
    }
    Ok(out)
}

/// Simulates a power loss on the WAL in `wal_dir` of a member that is not running (killed):
/// cuts every segment listed in `synced.txt` back to its synced length and deletes the segment
/// files it does not list (and leftovers of interrupted segment creations). The WAL then opens
/// as after a machine crash at the last fsync. A server's WAL directory is
/// `<data-dir>/member/wal` unless `--wal-dir` says otherwise.
///
/// Fails when `synced.txt` is missing or malformed (the WAL was not written by a `failpoints`
/// build), when a running process holds the WAL's lock ([`WalError::Locked`]), or when a
/// listed file is shorter than its synced length (something other than the WAL cut it).
pub fn truncate_to_synced(wal_dir: &Path) -> Result<TruncateReport, WalError> {
    let lock_path = wal_dir.join(LOCK_FILE);
    // Held until the end, so a member started meanwhile cannot open the WAL half-cut.
    let _lock = match OpenOptions::new().write(true).open(&lock_path) {
        Ok(f) => {
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(WalError::Locked(wal_dir.to_path_buf()))
                }
                Err(TryLockError::Error(e)) => return Err(WalError::io(&lock_path, e)),
            }
            Some(f)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(WalError::io(&lock_path, e)),
    };
    let listed = read_sidecar(wal_dir)?;
    let mut report = TruncateReport::default();

    for (name, synced) in &listed {
        let path = wal_dir.join(name);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                report.files.push(FileReport {
                    name: name.clone(),
                    synced_len: Some(*synced),
                    old_len: 0,
                    dropped_bytes: 0,
                    outcome: FileOutcome::Missing,
                });
                continue;
            }
            Err(e) => return Err(WalError::io(&path, e)),
        };
        let old_len = file.metadata().map_err(|e| WalError::io(&path, e))?.len();
        if old_len < *synced {
            return Err(WalError::Corrupt {
                file: path,
                offset: old_len,
                reason: format!("file is shorter than its synced length {synced}"),
            });
        }
        let dropped = data_end(&mut file, &path, *synced)? - synced;
        let outcome = if old_len > *synced {
            file.set_len(*synced).map_err(|e| WalError::io(&path, e))?;
            FileOutcome::Truncated
        } else {
            FileOutcome::Kept
        };
        report.files.push(FileReport {
            name: name.clone(),
            synced_len: Some(*synced),
            old_len,
            dropped_bytes: dropped,
            outcome,
        });
    }

    for ent in fs::read_dir(wal_dir).map_err(|e| WalError::io(wal_dir, e))? {
        let ent = ent.map_err(|e| WalError::io(wal_dir, e))?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let segment_like = parse_segment_name(&name).is_some() || name.ends_with(TMP_EXT);
        if !segment_like || listed.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let path = ent.path();
        let mut file = File::open(&path).map_err(|e| WalError::io(&path, e))?;
        let old_len = file.metadata().map_err(|e| WalError::io(&path, e))?.len();
        let dropped = data_end(&mut file, &path, 0)?;
        drop(file);
        fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
        report.files.push(FileReport {
            name,
            synced_len: None,
            old_len,
            dropped_bytes: dropped,
            outcome: FileOutcome::Removed,
        });
    }
    report.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}
