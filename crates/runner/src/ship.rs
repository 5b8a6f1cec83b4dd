//! Ships a queue's files from the worker's scratch directory into the database while the
//! queue runs: the live logs every [`SHIP_EVERY`] (and at once when a case ends or much output
//! came, see [`Logs::completed`]), a build log
//! when it is complete, and at the end everything else the queue left (junit.xml, the files its builds
//! and `<run>` steps wrote). Every server replica reads them from there; nothing on the
//! worker's disk is needed once the queue ended, and a worker that dies loses at most its
//! last [`SHIP_EVERY`] of output.
//!
//! Each file is read from where the last shipment stopped, in bounded chunks: memory stays
//! flat however much the emulator prints. Every write carries the queue's claim: a worker that
//! lost it ships nothing more.

use crate::logs::Logs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use testarena_store::{Chunk, Holder, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often the live logs are shipped.
pub const SHIP_EVERY: Duration = Duration::from_millis(250);

/// Shortest time between two rounds of shipping (a case's end asks for one at once).
const MIN_ROUND_GAP: Duration = Duration::from_millis(50);

/// Largest chunk stored in one row.
const CHUNK: usize = 256 * 1024;

/// Most bytes written in one transaction.
const BATCH: usize = 1024 * 1024;

/// The queue log: it goes on across attempts; every other file starts over with an attempt.
pub const QUEUE_LOG: &str = "queue.log";

/// Deepest directory the final sweep looks into, and most files it ships.
const MAX_DEPTH: usize = 16;
const MAX_FILES: usize = 10_000;

/// Where one file stands.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    /// Its offset in the database where this attempt's bytes start (the queue log's earlier
    /// attempts come before).
    base: u64,
    /// Bytes of the local file shipped.
    local: u64,
}

/// What the final sweep left out.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Files not shipped because the queue's budget for them was spent.
    pub over_budget: Vec<String>,
}

/// The shipper of one queue's attempt.
pub struct Shipper {
    store: Store,
    id: i64,
    holder: Holder,
    dir: PathBuf,
    sent: HashMap<String, Sent>,
    /// Bytes the final sweep may still ship of files that are not logs (what builds left).
    budget: u64,
    /// ... of the `budget_total` it started with.
    budget_total: u64,
    /// The claim is gone, or the database full: nothing more is shipped.
    lost: bool,
    /// The database said it is full (not yet reported to the queue).
    full: Option<String>,
    /// Cancelled when the queue's logs are given up (the disk is full): a round under way
    /// stops after its current batch.
    halt: tokio_util::sync::CancellationToken,
}

impl Shipper {
    /// Starts the files of a new attempt of queue `id` over (the queue log goes on after the
    /// earlier attempts'); `budget` bounds what the final sweep ships besides the logs.
    pub async fn start(
        store: Store,
        id: i64,
        holder: Holder,
        dir: PathBuf,
        budget: u64,
    ) -> Result<Shipper, StoreError> {
        let base = store.restart_files(id, &holder, QUEUE_LOG).await?;
        let mut sent = HashMap::new();
        sent.insert(QUEUE_LOG.to_string(), Sent { base, local: 0 });
        Ok(Shipper {
            store,
            id,
            holder,
            dir,
            sent,
            budget,
            budget_total: budget,
            lost: false,
            full: None,
            halt: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Where this attempt's queue log starts in the database (after the earlier attempts').
    pub fn queue_log_base(&self) -> u64 {
        self.sent.get(QUEUE_LOG).map_or(0, |s| s.base)
    }

    /// The name of the file at `path` in the queue (its path under the queue directory).
    fn name_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        let name = rel.to_str()?;
        (!name.is_empty()).then(|| name.to_string())
    }

    /// Ships what the files at `paths` gained since the last time.
    pub async fn ship(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if let Some(name) = self.name_of(path) {
                self.ship_file(&name).await;
            }
        }
    }

    /// Ships what file `name` gained since the last time, in batches of chunks.
    async fn ship_file(&mut self, name: &str) -> u64 {
        if self.lost {
            return 0;
        }
        let path = self.dir.join(name);
        let Ok(mut file) = open_no_follow(&path).await else {
            return 0;
        };
        let len = match file.metadata().await {
            Ok(m) if m.is_file() => m.len(),
            _ => return 0,
        };
        let mut at = self.sent.get(name).copied().unwrap_or_default();
        if len < at.local {
            // Written anew (a shorter file in its place): start it over.
            if let Err(e) = self.store.remove_file(self.id, &self.holder, name).await {
                return self.failed(name, e);
            }
            at = Sent::default();
            self.sent.insert(name.to_string(), at);
        }
        let mut shipped = 0;
        while at.local < len && !self.halt.is_cancelled() {
            let batch = match read_batch(&mut file, at.local, len, name, at.base).await {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(file = name, error = %e, "cannot read a queue file to ship");
                    break;
                }
            };
            let bytes: u64 = batch.iter().map(|c| c.data.len() as u64).sum();
            if let Err(e) = self.store.put_chunks(self.id, &self.holder, &batch).await {
                return self.failed(name, e);
            }
            at.local += bytes;
            shipped += bytes;
            self.sent.insert(name.to_string(), at);
        }
        shipped
    }

    /// Notes a failed shipment: a lost claim or a full database stops all shipping; anything
    /// else (the database away for a moment) is tried again next time from where it stopped.
    fn failed(&mut self, name: &str, e: StoreError) -> u64 {
        if matches!(e, StoreError::ClaimLost(_)) {
            self.lost = true;
        } else if let StoreError::DiskFull(message) = e {
            // What space is left goes to the verdict, not to more lines.
            self.lost = true;
            self.full = Some(message);
        } else {
            tracing::warn!(file = name, error = %e, "cannot ship a queue file; trying again");
        }
        0
    }

    /// Whether the database said it is full since last asked.
    pub fn take_full(&mut self) -> Option<String> {
        self.full.take()
    }

    /// Ships every file of the queue directory (but the checkout `work/`): the logs to their
    /// end, and the other files (pages, junit.xml, what builds left) within the budget.
    /// Symbolic links and special files are never followed nor shipped.
    pub async fn sweep(&mut self, logs: &[PathBuf]) -> Sweep {
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || regular_files(&dir))
            .await
            .unwrap_or_default();
        let logs: Vec<String> = logs.iter().filter_map(|p| self.name_of(p)).collect();
        let mut sweep = Sweep::default();
        for (name, len) in found {
            let known = self.sent.get(&name).map(|s| s.local).unwrap_or(0);
            if !logs.contains(&name) {
                let grows = len.saturating_sub(known);
                if grows > self.budget {
                    sweep.over_budget.push(name);
                    continue;
                }
                self.budget -= grows;
            }
            self.ship_file(&name).await;
        }
        sweep
    }
}

/// Opens `path` for reading without following a symbolic link in its last component.
async fn open_no_follow(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .await
}

/// Up to [`BATCH`] bytes of `file` from `from` (but not past `len`), as chunks of `name`
/// placed after `base`.
async fn read_batch(
    file: &mut tokio::fs::File,
    from: u64,
    len: u64,
    name: &str,
    base: u64,
) -> std::io::Result<Vec<Chunk>> {
    file.seek(std::io::SeekFrom::Start(from)).await?;
    let mut chunks = Vec::new();
    let mut at = from;
    let mut total = 0;
    while at < len && total < BATCH {
        let want = CHUNK.min((len - at) as usize);
        let mut data = vec![0; want];
        let n = read_up_to(file, &mut data).await?;
        if n == 0 {
            break;
        }
        data.truncate(n);
        chunks.push(Chunk {
            name: name.to_string(),
            start: (base + at) as i64,
            data,
        });
        at += n as u64;
        total += n;
    }
    Ok(chunks)
}

/// Fills `buf` as far as the file goes.
async fn read_up_to(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The regular files under `dir` (but `work/`), by name relative to it, with their lengths;
/// symbolic links are not followed; at most [`MAX_FILES`], [`MAX_DEPTH`] deep.
fn regular_files(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth + 1 < MAX_DEPTH && !(depth == 0 && e.file_name() == "work") {
                    todo.push((path, depth + 1));
                }
            } else if meta.is_file() {
                if found.len() >= MAX_FILES {
                    return found;
                }
                let Some(name) = path
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(String::from)
                else {
                    continue;
                };
                found.push((name, meta.len()));
            }
        }
    }
    found
}

/// Imports the files an older version kept in the data directory (`<data>/queues/<id>/`,
/// with `queue.log` in it) into the database, for finished queues that have none there yet,
/// and removes them: the server reads a queue's files from the database only. Returns how
/// many queues it imported.
pub async fn import_old_files(store: &Store, data_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("queues")) else {
        return 0;
    };
    let mut imported = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        // The layout of older versions; a worker's scratch has only attempt directories.
        if !std::fs::symlink_metadata(dir.join(QUEUE_LOG)).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match import_queue(store, id, &dir).await {
            Ok(true) => {
                imported += 1;
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(queue = id, error = %e, "cannot remove imported files");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(queue = id, error = %e, "cannot import a queue's old files"),
        }
    }
    if imported > 0 {
        tracing::info!(
            queues = imported,
            "imported the files of older versions into the database"
        );
    }
    imported
}

/// Imports one queue's old files, if the queue is finished and has none in the database.
async fn import_queue(store: &Store, id: i64, dir: &Path) -> Result<bool, StoreError> {
    match store.queue_row(id).await {
        Ok(q) if q.status.is_finished() => {}
        Ok(_) | Err(StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    }
    if !store.files(id).await?.is_empty() {
        return Ok(false);
    }
    let root = dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || regular_files(&root))
        .await
        .unwrap_or_default();
    for (name, len) in found {
        let Ok(mut file) = open_no_follow(&dir.join(&name)).await else {
            continue;
        };
        let mut at = 0;
        while at < len {
            let batch = match read_batch(&mut file, at, len, &name, 0).await {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(queue = id, file = name, error = %e, "cannot read an old file");
                    break;
                }
            };
            at += batch.iter().map(|c| c.data.len() as u64).sum::<u64>();
            store.import_chunks(id, &batch).await?;
        }
    }
    Ok(true)
}

/// The shipper of a running queue: a task ships the live logs every [`SHIP_EVERY`], and at once
/// when a file became complete (a case ended); the queue's close-out stops it and sweeps the
/// rest.
///
/// The task is asked to stop, never aborted: cancelled inside a write, it would leave its
/// transaction (and the queue row it locks) to a connection back in the pool, and every other
/// write of the queue would wait for it.
pub struct Shipping {
    shipper: Arc<tokio::sync::Mutex<Shipper>>,
    logs: Logs,
    stop: tokio_util::sync::CancellationToken,
    /// [`Shipper::halt`]: dropped without [`Shipping::finish`], nothing more is shipped.
    halt: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Shipping {
    /// Starts shipping `logs` with `shipper`; a round under way stops after its current batch
    /// once the logs fail (the disk is full: what space is left is for the verdict).
    pub fn start(mut shipper: Shipper, logs: Logs) -> Shipping {
        shipper.halt = logs.failure().child_token();
        let halt = shipper.halt.clone();
        let shipper = Arc::new(tokio::sync::Mutex::new(shipper));
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, l, stopped) = (shipper.clone(), logs.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(SHIP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = l.completed() => {}
                    _ = l.flooded() => {}
                    _ = stopped.cancelled() => return,
                }
                if l.failed() {
                    // The disk is full: the space left (and the reserve just released) is
                    // for the verdict, not for more lines.
                    return;
                }
                let paths = l.to_ship();
                let mut shipper = s.lock().await;
                shipper.ship(&paths).await;
                if let Some(message) = shipper.take_full() {
                    // The queue ends as if its log files could not be written.
                    tracing::warn!(%message, "the database is full: the queue's logs stop");
                    l.fail(std::io::Error::from_raw_os_error(libc::ENOSPC));
                    return;
                }
                drop(shipper);
                // At most one round per MIN_ROUND_GAP for ended cases (a hundred short cases
                // in a row would wake it a hundred times, each a write to the database); a
                // flood of output goes as it comes, so the live console stays within
                // WAKE_EVERY_BYTES of the emulator.
                tokio::select! {
                    _ = tokio::time::sleep(MIN_ROUND_GAP) => {}
                    _ = l.flooded() => {}
                    _ = stopped.cancelled() => return,
                }
            }
        });
        Shipping {
            shipper,
            logs,
            stop,
            halt,
            task: Some(task),
        }
    }

    /// Ships the files at `paths` now, whole (they do not count against the final sweep's
    /// budget: a repro bundle has its own bound).
    pub async fn ship_now(&self, paths: &[PathBuf]) {
        self.shipper.lock().await.ship(paths).await;
    }

    /// Stops shipping without shipping the rest, and waits until the round under way stopped
    /// (after its current batch), so that nothing of it competes with the verdict for the
    /// space left.
    pub async fn abandon(mut self) {
        self.stop.cancel();
        self.halt.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the periodic shipping (after the round under way) and ships everything the queue
    /// left.
    pub async fn finish(mut self) -> Sweep {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.logs.lock().flush();
        let paths = self.logs.to_ship();
        let mut shipper = self.shipper.lock().await;
        shipper.ship(&paths).await;
        let sweep = shipper.sweep(&paths).await;
        if !sweep.over_budget.is_empty() {
            self.logs.event(&format!(
                "not kept: {} (the queue's {} bytes for files besides its logs were used up)",
                sweep.over_budget.join(", "),
                shipper.budget_total
            ));
            shipper.ship(&self.logs.to_ship()).await;
        }
        sweep
    }
}

impl Drop for Shipping {
    fn drop(&mut self) {
        // No new round starts, and the one under way stops after its current batch (given up:
        // what space is left goes to the verdict).
        self.stop.cancel();
        self.halt.cancel();
    }
}

#[cfg(test)]
mod tests;
