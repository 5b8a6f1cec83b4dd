//! The worker host's build cache: the outputs of successful builds, by what decides them
//! (repository, commit, build command, build configuration), so that a later queue of the same
//! commit copies them into its checkout instead of building again.
//!
//! Layout under `<data>/build-cache/`: `<key>/meta.json` (which queue built it, its size) and
//! `<key>/files/` (the outputs, as paths of the checkout); `<key>.lock` is the key's `flock`,
//! held while a queue looks up, builds and stores that key, so that of two queues of one commit
//! one builds and the other waits, then reuses. The total size is bounded: after a store, the
//! entries least recently used are removed until the rest fits. The mtime of `meta.json` is the
//! last use.
//!
//! Everything is copied, never hard-linked: an emulator may write into its flash image, and
//! that must not change the cached one. (`std::fs::copy` clones extents on file systems that
//! can, so a copy is cheap there.) Symlinks are copied as links and never followed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Default bound of the cache's total size.
pub const DEFAULT_BUILD_CACHE_BYTES: u64 = 2 << 30;

/// Bumped when the layout or the key's inputs change, so old entries are never misread.
const KEY_VERSION: &str = "testarena-build-cache-v1";

/// What decides a build's outputs; hashed into the cache key.
#[derive(Debug, Clone)]
pub struct BuildKey<'a> {
    /// The repository URL, credentials removed (they do not change what is built).
    pub repo: &'a str,
    pub commit: &'a str,
    pub command: &'a str,
    pub outputs: &'a [String],
    /// `[env]` of testarena.toml, which the build sees.
    pub env: &'a [(String, String)],
    pub network: bool,
}

impl BuildKey<'_> {
    /// The key: sha256 of every input, each length-prefixed so no two inputs run together.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        put(KEY_VERSION);
        put(&testarena_core::redact::redact(self.repo));
        put(self.commit);
        put(self.command);
        put(&self.outputs.len().to_string());
        for o in self.outputs {
            put(o);
        }
        put(&self.env.len().to_string());
        for (k, v) in self.env {
            put(k);
            put(v);
        }
        put(if self.network { "net" } else { "no-net" });
        hex::encode(h.finalize())
    }
}

/// What `meta.json` of an entry holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The queue whose build this is.
    pub queue: i64,
    /// Total size of its files in bytes.
    pub bytes: u64,
}

/// The cache of one worker host.
#[derive(Debug, Clone)]
pub struct BuildCache {
    root: PathBuf,
    max_bytes: u64,
}

/// A key's lock; held until dropped (the kernel drops it if the process dies).
#[derive(Debug)]
pub struct KeyLock {
    key: String,
    _file: File,
}

impl BuildCache {
    /// A cache at `root` (created when first used) holding at most `max_bytes`.
    pub fn new(root: PathBuf, max_bytes: u64) -> Self {
        BuildCache { root, max_bytes }
    }

    /// Takes `key`'s lock, waiting while another queue builds it, at most `timeout`.
    /// Errors: `Interrupted` when cancelled, `TimedOut` when the wait ran out.
    pub async fn lock(
        &self,
        key: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> io::Result<KeyLock> {
        fs::create_dir_all(&self.root)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let file = open_lock(&self.lock_path(key))?;
        loop {
            if try_flock(&file)? {
                return Ok(KeyLock {
                    key: key.to_string(),
                    _file: file,
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(io::ErrorKind::Interrupted.into()),
                _ = tokio::time::sleep_until(deadline) => return Err(io::ErrorKind::TimedOut.into()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// The entry of the locked key, if a build was stored (and is readable).
    pub fn lookup(&self, lock: &KeyLock) -> Option<Entry> {
        let text = fs::read_to_string(self.entry_dir(&lock.key).join("meta.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Copies the locked entry's files into the checkout `work`, and marks it used now.
    pub fn restore(&self, lock: &KeyLock, work: &Path) -> io::Result<()> {
        let dir = self.entry_dir(&lock.key);
        copy_tree(&dir.join("files"), work)?;
        touch(&dir.join("meta.json"))
    }

    /// Stores `outputs` of the checkout `work` (none: all of it but `.git`) as the locked key's
    /// entry, built by `queue`, then evicts the least recently used entries past the bound.
    /// `Ok(None)` when the outputs alone are larger than the whole cache may be.
    pub fn store(
        &self,
        lock: &KeyLock,
        work: &Path,
        outputs: &[String],
        queue: i64,
    ) -> io::Result<Option<Entry>> {
        let sources = output_paths(work, outputs)?;
        let bytes: u64 = sources.iter().map(|p| tree_size(p)).sum();
        if bytes > self.max_bytes {
            return Ok(None);
        }
        let dir = self.entry_dir(&lock.key);
        let tmp = self.root.join(format!("{}.new", lock.key));
        remove_any(&tmp)?;
        let files = tmp.join("files");
        fs::create_dir_all(&files)?;
        for src in &sources {
            let rel = src.strip_prefix(work).map_err(io::Error::other)?;
            let dst = files.join(rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)?;
            }
            copy_entry(src, &dst)?;
        }
        let entry = Entry { queue, bytes };
        fs::write(tmp.join("meta.json"), serde_json::to_vec(&entry)?)?;
        remove_any(&dir)?;
        fs::rename(&tmp, &dir)?;
        self.evict(&lock.key);
        Ok(Some(entry))
    }

    /// Removes the least recently used entries (never `keep`, never one another queue has
    /// locked) until the cache fits its bound. Best effort: what cannot be read is skipped.
    fn evict(&self, keep: &str) {
        let Ok(dir) = fs::read_dir(&self.root) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, String)> = Vec::new();
        for d in dir.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            // Keys have no dot: `<key>.lock` and `<key>.new` (a store in progress) are not entries.
            if name.contains('.') {
                continue;
            }
            let meta = d.path().join("meta.json");
            let (Ok(text), Ok(m)) = (fs::read_to_string(&meta), fs::metadata(&meta)) else {
                continue;
            };
            let Ok(e) = serde_json::from_str::<Entry>(&text) else {
                continue;
            };
            let used = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, e.bytes, name));
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, bytes, key) in entries {
            if total <= self.max_bytes {
                break;
            }
            if key == keep {
                continue;
            }
            // Only an entry nobody is using: its lock taken without waiting.
            let Ok(file) = open_lock(&self.lock_path(&key)) else {
                continue;
            };
            if try_flock(&file).unwrap_or(false) && remove_any(&self.entry_dir(&key)).is_ok() {
                tracing::info!(key, bytes, "build cache: evicted the least recently used");
                total = total.saturating_sub(bytes);
            }
        }
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.lock"))
    }
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
}

/// Takes an exclusive `flock` without waiting; false if another holder has it.
fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => Err(err),
    }
}

/// The paths to keep: each named output that exists, or every top-level entry but `.git`.
fn output_paths(work: &Path, outputs: &[String]) -> io::Result<Vec<PathBuf>> {
    if outputs.is_empty() {
        let mut all = Vec::new();
        for e in fs::read_dir(work)? {
            let e = e?;
            if e.file_name() != ".git" {
                all.push(e.path());
            }
        }
        return Ok(all);
    }
    // Validated by the profile: relative, inside the checkout. A missing one was not built.
    Ok(outputs
        .iter()
        .map(|o| work.join(o))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect())
}

/// Bytes of the regular files under `path` (symlinks not followed).
fn tree_size(path: &Path) -> u64 {
    let Ok(m) = path.symlink_metadata() else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(path)
            .map(|d| d.flatten().map(|e| tree_size(&e.path())).sum())
            .unwrap_or(0)
    } else if m.is_file() {
        m.len()
    } else {
        0
    }
}

/// Copies every entry of directory `src` into directory `dst` (merging directories).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        copy_entry(&e.path(), &dst.join(e.file_name()))?;
    }
    Ok(())
}

/// Copies one file, symlink or directory tree to `dst`, replacing what is there. A directory at
/// `dst` is merged into only if it is a real directory: a symlink there is replaced, so nothing
/// is ever written through a link.
fn copy_entry(src: &Path, dst: &Path) -> io::Result<()> {
    let m = src.symlink_metadata()?;
    let existing = dst.symlink_metadata().ok();
    if m.is_dir() {
        if !existing.is_some_and(|d| d.is_dir()) {
            remove_any(dst)?;
            fs::create_dir(dst)?;
        }
        return copy_tree(src, dst);
    }
    if existing.is_some() {
        remove_any(dst)?;
    }
    if m.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)
    } else if m.is_file() {
        fs::copy(src, dst).map(|_| ())
    } else {
        // Sockets, fifos, devices: not build outputs.
        Ok(())
    }
}

/// Removes a file, link or directory tree; nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    let Ok(m) = path.symlink_metadata() else {
        return Ok(());
    };
    if m.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Marks a file used now (its mtime), the order eviction goes by.
fn touch(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(commit: &str) -> String {
        BuildKey {
            repo: "https://user:secret@example.com/r.git",
            commit,
            command: "make",
            outputs: &[],
            env: &[],
            network: true,
        }
        .digest()
    }

    #[test]
    fn the_key_covers_what_decides_the_build_but_not_credentials() {
        let base = BuildKey {
            repo: "https://other:token@example.com/r.git",
            commit: "a",
            command: "make",
            outputs: &[],
            env: &[],
            network: true,
        };
        assert_eq!(
            key("a"),
            base.digest(),
            "other credentials give the same key"
        );
        assert_ne!(key("a"), key("b"));
        let cmd = BuildKey {
            command: "make all",
            ..base.clone()
        };
        assert_ne!(cmd.digest(), base.digest());
        let outputs = ["build".to_string()];
        let out = BuildKey {
            outputs: &outputs,
            ..base.clone()
        };
        assert_ne!(out.digest(), base.digest());
        let env = [("CFLAGS".to_string(), "-O2".to_string())];
        let with_env = BuildKey {
            env: &env,
            ..base.clone()
        };
        assert_ne!(with_env.digest(), base.digest());
    }

    #[tokio::test]
    async fn stores_restores_and_never_writes_through_links() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path().join("cache"), 1 << 20);
        let work = d.path().join("work");
        fs::create_dir_all(work.join("build/sub")).unwrap();
        fs::create_dir_all(work.join(".git")).unwrap();
        fs::write(work.join("build/sub/fw.bin"), b"firmware").unwrap();
        fs::write(work.join("src.c"), b"int main;").unwrap();
        std::os::unix::fs::symlink("sub/fw.bin", work.join("build/link")).unwrap();
        let cancel = CancellationToken::new();
        let lock = cache
            .lock(&key("a"), Duration::from_secs(1), &cancel)
            .await
            .unwrap();
        assert_eq!(cache.lookup(&lock), None);
        let e = cache
            .store(&lock, &work, &["build".into(), "missing".into()], 7)
            .unwrap()
            .unwrap();
        assert_eq!(e, Entry { queue: 7, bytes: 8 });
        assert_eq!(cache.lookup(&lock), Some(e));

        // A fresh checkout whose `build` is a link elsewhere: replaced, not written through.
        let fresh = d.path().join("fresh");
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&fresh).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, fresh.join("build")).unwrap();
        cache.restore(&lock, &fresh).unwrap();
        assert_eq!(
            fs::read(fresh.join("build/sub/fw.bin")).unwrap(),
            b"firmware"
        );
        assert_eq!(fs::read(fresh.join("build/link")).unwrap(), b"firmware");
        assert!(fresh
            .join("build/link")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert!(!fresh.join("src.c").exists(), "only the outputs are kept");
    }

    #[tokio::test]
    async fn the_default_keeps_the_checkout_but_git() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path().join("cache"), 1 << 20);
        let work = d.path().join("work");
        fs::create_dir_all(work.join(".git")).unwrap();
        fs::write(work.join(".git/HEAD"), b"x").unwrap();
        fs::write(work.join("fw.bin"), b"fw").unwrap();
        let lock = cache
            .lock(&key("a"), Duration::from_secs(1), &CancellationToken::new())
            .await
            .unwrap();
        cache.store(&lock, &work, &[], 1).unwrap().unwrap();
        let fresh = d.path().join("fresh");
        fs::create_dir_all(&fresh).unwrap();
        cache.restore(&lock, &fresh).unwrap();
        assert_eq!(fs::read(fresh.join("fw.bin")).unwrap(), b"fw");
        assert!(!fresh.join(".git").exists());
    }

    #[tokio::test]
    async fn a_second_locker_waits_and_times_out_or_is_cancelled() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path().to_path_buf(), 1 << 20);
        let cancel = CancellationToken::new();
        let held = cache
            .lock("k", Duration::from_secs(1), &cancel)
            .await
            .unwrap();
        let e = cache
            .lock("k", Duration::from_millis(300), &cancel)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let other = CancellationToken::new();
        other.cancel();
        let e = cache
            .lock("k", Duration::from_secs(5), &other)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        drop(held);
        cache
            .lock("k", Duration::from_secs(1), &cancel)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn least_recently_used_entries_go_first_and_oversized_builds_are_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(d.path().join("cache"), 25);
        let work = d.path().join("work");
        fs::create_dir_all(&work).unwrap();
        fs::write(work.join("fw.bin"), [0u8; 10]).unwrap();
        let cancel = CancellationToken::new();
        let t = Duration::from_secs(1);
        for (i, k) in ["a", "b"].iter().enumerate() {
            let l = cache.lock(k, t, &cancel).await.unwrap();
            cache.store(&l, &work, &[], i as i64).unwrap().unwrap();
        }
        // `a` used after `b` was stored: `b` is now the least recently used.
        let past = SystemTime::now() - Duration::from_secs(60);
        let meta_b = cache.entry_dir("b").join("meta.json");
        OpenOptions::new()
            .write(true)
            .open(&meta_b)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let l = cache.lock("c", t, &cancel).await.unwrap();
        cache.store(&l, &work, &[], 3).unwrap().unwrap();
        drop(l);
        let present = |k: &str| cache.entry_dir(k).join("meta.json").exists();
        assert!(present("a") && !present("b") && present("c"));

        fs::write(work.join("big.bin"), [0u8; 30]).unwrap();
        let l = cache.lock("d", t, &cancel).await.unwrap();
        assert_eq!(cache.store(&l, &work, &[], 4).unwrap(), None);
        assert!(cache.lookup(&l).is_none());
    }
}
