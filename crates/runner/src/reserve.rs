//! Disk space held back so that a queue can still record its verdict when its logs fill the
//! disk: a file of zeros in the data directory, deleted at the first failed log write (which
//! also stops that log) and made again once the disk has room.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The most space held back.
const MAX_RESERVE: u64 = 16 * 1024 * 1024;
/// The share of the free space held back when there is less than ten times `MAX_RESERVE`.
const FREE_SHARE: u64 = 10;

/// The reserve file of `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(".space-reserve")
}

/// Makes the reserve file if it is missing: `MAX_RESERVE`, or a tenth of the free space.
pub fn ensure(data_dir: &Path) -> std::io::Result<()> {
    let file = path(data_dir);
    if file.exists() {
        return Ok(());
    }
    let stat = nix::sys::statvfs::statvfs(data_dir).map_err(std::io::Error::from)?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let size = (free / FREE_SHARE).min(MAX_RESERVE);
    let tmp = data_dir.join(".space-reserve.tmp");
    let result = write_zeros(&tmp, size).and_then(|()| std::fs::rename(&tmp, &file));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `size` bytes of real zeros (not a sparse file, which would hold nothing back).
fn write_zeros(file: &Path, size: u64) -> std::io::Result<()> {
    let mut out = std::fs::File::create(file)?;
    let chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.sync_all()
}

/// Gives the reserved space back to whoever needs it now (the database).
pub fn release(data_dir: &Path) {
    match std::fs::remove_file(path(data_dir)) {
        Ok(()) => {
            tracing::warn!(dir = %data_dir.display(), "the disk is full: released the space reserved for verdicts")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot release the reserved disk space"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_real_space_and_released_once() {
        let d = tempfile::tempdir().unwrap();
        ensure(d.path()).unwrap();
        let meta = std::fs::metadata(path(d.path())).unwrap();
        assert!(meta.len() > 0 && meta.len() <= MAX_RESERVE);
        // Allocated blocks, not a hole.
        assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 >= meta.len());
        ensure(d.path()).unwrap();
        release(d.path());
        assert!(!path(d.path()).exists());
        release(d.path());
    }
}
