//! One queue from claim to verdict, in its phases: checkout, build, then for each task (a
//! scenario) boot and run its cases step by step, then the verdict and the reports.
//!
//! `run_queue` is the entry point; each phase lives in its own module as methods of [`Run`].

mod boot;
mod build;
mod case;
mod case_writer;
mod checkout;
mod failure;
mod repro;
mod retry;
mod step;
mod task;
mod verdict;

#[cfg(test)]
mod tests;

pub use failure::{InfraError, StopReason};

use crate::git::MirrorCache;
use crate::logs::{LogFile, Logs};
use crate::sandbox::SandboxConfig;
use crate::ship::{Shipper, Shipping, QUEUE_LOG};
use failure::Failure;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testarena_core::Phase;
use testarena_report::JunitSuite;
use testarena_store::{Holder, QueueRow, Store};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Settings of the runner that do not come from the repository.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub data_dir: PathBuf,
    pub worker_id: String,
    pub hostname: String,
    pub boot_id: String,
    /// Wall-clock limit of a whole queue.
    pub queue_timeout: Duration,
    /// Limit of fetching and checking out the repository.
    pub clone_timeout: Duration,
    /// Largest size of one log file; past it a truncation marker is written.
    pub log_cap: u64,
    /// How builds, emulators and `<run>` steps are confined.
    pub sandbox: Arc<SandboxConfig>,
    /// What a local run (`testarena run`) adds to its one queue; empty for a worker.
    pub local: LocalRun,
    /// The host's build cache; `None` builds every queue (and keeps nothing). `testarena run`
    /// has none: its work tree may hold uncommitted changes, which no commit names.
    pub build_cache: Option<crate::build_cache::BuildCache>,
}

/// What `testarena run` gives its queue beyond what a queue row holds: scenario files from the
/// developer's disk, and a case filter over every scenario (default ones included, whose
/// paths are not known before the checkout). Never stored: a worker's is always empty.
#[derive(Debug, Clone, Default)]
pub struct LocalRun {
    /// Scenario texts by task name (the queue's scenario path): read from here instead of from
    /// the checkout.
    pub scenarios: std::collections::BTreeMap<String, String>,
    /// Only the cases with these ids run, in every scenario; empty: all of them.
    pub cases: Vec<String>,
    /// No build: the checkout already holds the images (`testarena repro` replays a bundle).
    pub no_build: bool,
    /// Keep no repro bundle: the run's database is thrown away (a worker keeps one when a
    /// case fails).
    pub no_repro: bool,
}

/// The handle a worker uses to stop a running queue.
#[derive(Debug, Default)]
pub struct QueueControl {
    pub cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl QueueControl {
    /// Stops the queue for `reason` (the first reason wins).
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        self.cancel.cancel();
    }

    /// Why the queue was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One queue being run: what every phase reads and writes.
struct Run<'a> {
    store: &'a Store,
    cfg: &'a RunnerConfig,
    ctl: &'a QueueControl,
    mirrors: &'a MirrorCache,
    queue: QueueRow,
    dir: PathBuf,
    work: PathBuf,
    /// The repository's git mirror, which the checkout borrows objects from.
    mirror: Option<PathBuf>,
    logs: Logs,
    suites: Vec<JunitSuite>,
    phase: Phase,
    /// Why the queue's logs could not be written (e.g. no space left on device), if so.
    write_error: Arc<Mutex<Option<String>>>,
    /// Ships the queue's files into the database as they grow (none if it could not start).
    shipping: Option<Shipping>,
    /// Writes the cases' starts and verdicts, in batches.
    cases: case_writer::CaseWriter,
    /// Decodes the code addresses of crashes against the booted ELF (set once the profile is
    /// read; the ELF is loaded on the first crash).
    decoder: Arc<crate::panics::Decoder>,
    /// The repository's profile, once the checkout read it (the repro bundle needs it).
    profile: Option<crate::profile::Profile>,
    /// The failed tries of each case (by its row id) that was tried more than once, for
    /// junit.xml.
    failed_tries: Mutex<std::collections::HashMap<i64, Vec<retry::FailedTry>>>,
}

/// Runs one claimed queue to its end and records the verdict (unless the claim was lost).
pub async fn run_queue(
    store: &Store,
    cfg: &RunnerConfig,
    mirrors: &MirrorCache,
    queue: QueueRow,
    ctl: &QueueControl,
) {
    let span = tracing::info_span!("queue", queue = queue.id, attempt = queue.attempts);
    run_queue_in_span(store, cfg, mirrors, queue, ctl)
        .instrument(span)
        .await
}

async fn run_queue_in_span(
    store: &Store,
    cfg: &RunnerConfig,
    mirrors: &MirrorCache,
    queue: QueueRow,
    ctl: &QueueControl,
) {
    let dir = testarena_core::paths::attempt_dir(&cfg.data_dir, queue.id, queue.attempts);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(error = %e, "cannot create the queue directory");
    }
    let write_error: Arc<Mutex<Option<String>>> = Arc::default();
    let logs = queue_logs(cfg, &dir, ctl, write_error.clone());
    let shipping = start_shipping(store, cfg, &queue, &dir, &logs).await;
    logs.event(&format!(
        "queue {} '{}' claimed by worker {} (attempt {}): {} branch {}",
        queue.id,
        queue.name,
        cfg.worker_id,
        queue.attempts,
        crate::git::redact(&queue.repo),
        queue.branch
    ));
    let holder = Holder::new(cfg.worker_id.clone(), queue.attempts);
    let cases = case_writer::CaseWriter::new(store.clone(), holder);
    let mut run = Run {
        cases,
        store,
        cfg,
        ctl,
        mirrors,
        decoder: Arc::new(crate::panics::Decoder::new(None, &dir.join("work"))),
        profile: None,
        failed_tries: Mutex::default(),
        work: dir.join("work"),
        mirror: None,
        dir,
        queue,
        logs,
        suites: Vec::new(),
        phase: Phase::Cloning,
        shipping,
        write_error,
    };
    let started = Instant::now();
    let outcome = tokio::select! {
        r = run.pipeline() => r,
        _ = tokio::time::sleep(cfg.queue_timeout) => {
            ctl.stop(StopReason::QueueTimeout(cfg.queue_timeout));
            Err(Failure::Stopped)
        }
    };
    // The select dropped the pipeline future: every child it owned was killed on drop; wait for
    // nothing more here, the process groups are gone.
    run.finish(outcome, started).await;
}

/// The queue's logs: `queue.log`, a common cap for its build and case logs, and a write error
/// (a full disk) that releases the reserved space and stops the queue with that cause.
fn queue_logs(
    cfg: &RunnerConfig,
    dir: &std::path::Path,
    ctl: &QueueControl,
    write_error: Arc<Mutex<Option<String>>>,
) -> Logs {
    let queue_log = LogFile::create(&dir.join(QUEUE_LOG), cfg.log_cap).ok();
    let cancel = ctl.cancel.clone();
    let data_dir = cfg.data_dir.clone();
    Logs::new(queue_log)
        .with_case_budget(cfg.log_cap)
        .on_write_error(move |e| {
            *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            crate::reserve::release(&data_dir);
            cancel.cancel();
        })
}

/// Starts shipping the queue's files into the database; without it (the database away, the
/// claim gone) the queue still runs, and its writes will tell.
async fn start_shipping(
    store: &Store,
    cfg: &RunnerConfig,
    queue: &QueueRow,
    dir: &std::path::Path,
    logs: &Logs,
) -> Option<Shipping> {
    let holder = queue.holder()?;
    // Besides the logs (capped each), what builds and steps leave: as much as one log.
    match Shipper::start(
        store.clone(),
        queue.id,
        holder,
        dir.to_path_buf(),
        cfg.log_cap,
    )
    .await
    {
        Ok(shipper) => {
            logs.set_base(shipper.queue_log_base());
            Some(Shipping::start(shipper, logs.clone()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start shipping the queue's files");
            None
        }
    }
}

impl Run<'_> {
    /// The phases in order; any of them may end the queue early.
    async fn pipeline(&mut self) -> Result<(), Failure> {
        self.set_phase(Phase::Cloning).await?;
        let (profile, tasks) = self.checkout().await?;
        self.decoder = Arc::new(crate::panics::Decoder::new(
            profile.elf.as_deref(),
            &self.work,
        ));
        self.profile = Some(profile.clone());
        self.set_phase(Phase::Building).await?;
        if self.cfg.local.no_build {
            self.logs
                .event("no build: the firmware images are the repro bundle's");
        } else {
            self.build(&profile).await?;
        }
        self.set_phase(Phase::Testing).await?;
        self.run_tasks(&profile, tasks).await
    }

    /// This run's claim: the worker and the attempt, carried by every write (the fencing token).
    fn holder(&self) -> Holder {
        Holder::new(self.cfg.worker_id.clone(), self.queue.attempts)
    }

    async fn set_phase(&mut self, phase: Phase) -> Result<(), Failure> {
        self.phase = phase;
        self.logs.event(&format!("phase: {phase}"));
        self.store
            .set_phase(self.queue.id, &self.holder(), Some(phase))
            .await?;
        Ok(())
    }

    /// True once a log could not be written (the disk is full).
    fn logs_failed(&self) -> bool {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn check_stopped(&self) -> Result<(), Failure> {
        if self.ctl.cancel.is_cancelled() {
            return Err(Failure::Stopped);
        }
        Ok(())
    }
}
