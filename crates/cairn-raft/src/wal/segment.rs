//! One segment file: naming, atomic creation with preallocation, positioned writes, syncs.
//!
//! File name: `{seq:016x}-{first_index:016x}.wal` (like etcd), so a plain lexical sort is the
//! sequence order. `first_index` is the index the segment's first entry will have.
//!
//! Creation is atomic: the file is built as `<name>.tmp` (preallocated, header written,
//! `fsync`ed) and then renamed into place, followed by a directory `fsync`. A segment under its
//! final name therefore always starts with a complete, durable header; a leftover `.tmp` is an
//! interrupted creation and is deleted on open.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::WalError;

/// Suffix of segment files.
pub const SEGMENT_EXT: &str = ".wal";
/// Suffix of a segment being created.
pub const TMP_EXT: &str = ".wal.tmp";

/// The file name of segment `seq` whose first entry has index `first_index`.
pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SEGMENT_EXT}")
}

/// Parses a segment file name back into `(seq, first_index)`; `None` for anything else.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_EXT)?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 16 {
        return None;
    }
    let hex = |s: &str| {
        if s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(seq)?, hex(first)?))
}

/// `fsync` a directory so that file creations, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

/// Reserves `size` bytes of disk for `file` so that later writes inside that range do not
/// have to allocate blocks (which would make `fdatasync` also write metadata). Falls back to
/// `set_len` (a sparse file) where the filesystem cannot preallocate. Never shrinks the file.
pub fn preallocate(file: &File, path: &Path, size: u64) -> Result<(), WalError> {
    let cur = file.metadata().map_err(|e| WalError::io(path, e))?.len();
    if cur >= size {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        // Mode 0: allocate and extend the file size; the new range reads as zeros.
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::debug!(
                file = %path.display(),
                error = %e,
                "fallocate not supported, falling back to set_len"
            ),
        }
    }
    file.set_len(size).map_err(|e| WalError::io(path, e))
}

/// An open segment file.
#[derive(Debug)]
pub struct SegmentFile {
    /// Full path of the file.
    pub path: PathBuf,
    file: File,
}

impl SegmentFile {
    /// Creates segment `seq`/`first_index` in `dir` atomically, preallocated to `size` bytes,
    /// starting with `header` (an encoded segment-header frame). Durable when this returns.
    pub fn create(
        dir: &Path,
        seq: u64,
        first_index: u64,
        size: u64,
        header: &[u8],
    ) -> Result<SegmentFile, WalError> {
        let name = segment_name(seq, first_index);
        let path = dir.join(&name);
        let tmp = dir.join(format!(
            "{}{TMP_EXT}",
            name.strip_suffix(SEGMENT_EXT).unwrap_or(&name)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| WalError::io(&tmp, e))?;
        preallocate(&file, &tmp, size)?;
        file.write_all_at(header, 0)
            .map_err(|e| WalError::io(&tmp, e))?;
        // sync_all: the file is new, so its size and extents must be durable too.
        file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(SegmentFile { path, file })
    }

    /// Opens an existing segment for reading and writing.
    pub fn open(path: &Path) -> Result<SegmentFile, WalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| WalError::io(path, e))?;
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes `bytes` at `offset` (no sync).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), WalError> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| WalError::io(&self.path, e))
    }

    /// Overwrites `[from, to)` with zeros (no sync).
    pub fn zero_range(&self, from: u64, to: u64) -> Result<(), WalError> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
        let mut at = from;
        while at < to {
            let n = CHUNK.min(to - at) as usize;
            self.write_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// `fdatasync`: data written so far is durable (metadata only if needed to read it back).
    pub fn sync_data(&self) -> Result<(), WalError> {
        self.file
            .sync_data()
            .map_err(|e| WalError::io(&self.path, e))
    }

    /// Cuts the file to `len` bytes and makes data and size durable (used when a segment is
    /// closed by rotation, to give back its unused preallocation).
    pub fn finish(&self, len: u64) -> Result<(), WalError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| WalError::io(&self.path, e))
    }

    /// Ensures the file is preallocated to at least `size` bytes.
    pub fn ensure_preallocated(&self, size: u64) -> Result<(), WalError> {
        preallocate(&self.file, &self.path, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_sort() {
        let a = segment_name(1, 0);
        assert_eq!(a, "0000000000000001-0000000000000000.wal");
        assert_eq!(parse_segment_name(&a), Some((1, 0)));
        let b = segment_name(0x10, u64::MAX);
        assert_eq!(parse_segment_name(&b), Some((0x10, u64::MAX)));
        assert!(a < b);
        for bad in [
            "0000000000000001-0000000000000000.wal.tmp",
            "1-0.wal",
            "000000000000000g-0000000000000000.wal",
            "000000000000000A-0000000000000000.wal",
            "0000000000000001_0000000000000000.wal",
            "LOCK",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn create_is_preallocated_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentFile::create(dir.path(), 1, 1, 1 << 16, b"hello").unwrap();
        let md = fs::metadata(&seg.path).unwrap();
        assert_eq!(md.len(), 1 << 16);
        let bytes = fs::read(&seg.path).unwrap();
        assert_eq!(&bytes[..5], b"hello");
        assert!(bytes[5..].iter().all(|&b| b == 0));
        seg.zero_range(1, 3).unwrap();
        seg.finish(4).unwrap();
        assert_eq!(fs::read(&seg.path).unwrap(), b"h\0\0l");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![segment_name(1, 1)]);
    }
}
