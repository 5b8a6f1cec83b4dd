//! One queue from claim to verdict: clone, build, run every scenario, report.

use crate::console::{Console, EmulatorSpec, StepFailure};
use crate::git::MirrorCache;
use crate::logs::{LogFile, Logs};
use crate::process::{self, Outcome, Spec};
use crate::profile::{self, Profile};
use crate::report::{self, CaseMeta, JunitCase, JunitSuite};
use crate::sandbox::{Jail, NetNs, Network, Sandbox, SandboxConfig, SandboxMode};
use regex::Regex;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testarena_core::state::queue_verdict;
use testarena_core::{CaseStatus, Phase, QueueStatus};
use testarena_scenario::{Action, BootMode, Scenario, Step, TestCase};
use testarena_store::{CaseResult, NewCase, QueueRow, StaleGroup, Store, StoreError};
use tokio_util::sync::CancellationToken;

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
    /// Commit statuses for queues from Gitea pushes, when configured.
    pub gitea: Option<crate::gitea::GiteaNotifier>,
    /// How builds, emulators and `<run>` steps are confined.
    pub sandbox: Arc<SandboxConfig>,
}

/// Why a running queue is being stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    Aborted,
    QueueTimeout(Duration),
    Shutdown,
    ClaimLost,
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

/// An infrastructure failure that ends the queue with `error`.
#[derive(Debug)]
enum Failure {
    /// Message for the queue's `error`.
    Infra(String),
    /// The queue was stopped (abort, timeout, shutdown, lost claim).
    Stopped,
    /// The database refused a write.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

use testarena_core::paths::{case_log, task_dir};

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
    /// Case HTML pages being rendered in the background; awaited at the end of each task.
    html_jobs: std::sync::Mutex<Vec<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

/// Runs one claimed queue to its end and records the verdict (unless the claim was lost).
pub async fn run_queue(
    store: &Store,
    cfg: &RunnerConfig,
    mirrors: &MirrorCache,
    queue: QueueRow,
    ctl: &QueueControl,
) {
    let dir = testarena_core::paths::queue_dir(&cfg.data_dir, queue.id);
    let id = queue.id;
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(queue = id, error = %e, "cannot create the queue directory");
    }
    let queue_log = LogFile::append(&dir.join("queue.log"), cfg.log_cap).ok();
    // A log that cannot be written (a full disk) stops the queue with that cause.
    let write_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (slot, cancel) = (write_error.clone(), ctl.cancel.clone());
    let data_dir = cfg.data_dir.clone();
    let logs = Logs::new(queue_log)
        .with_case_budget(cfg.log_cap)
        .on_write_error(move |e| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            crate::reserve::release(&data_dir);
            cancel.cancel();
        });
    logs.event(&format!(
        "queue {id} '{}' claimed by worker {} (attempt {}): {} branch {}",
        queue.name,
        cfg.worker_id,
        queue.attempts,
        crate::git::redact(&queue.repo),
        queue.branch
    ));
    if let (Some(g), Some(origin), Some(sha)) = (&cfg.gitea, &queue.origin, &queue.requested_commit)
    {
        g.notify(
            origin,
            sha,
            queue.id,
            QueueStatus::Running,
            "TestArena is testing this commit",
        );
    }
    let mut run = Run {
        store,
        cfg,
        ctl,
        mirrors,
        work: dir.join("work"),
        mirror: None,
        dir,
        queue,
        logs,
        suites: Vec::new(),
        phase: Phase::Cloning,
        html_jobs: Default::default(),
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

impl Run<'_> {
    async fn set_phase(&mut self, phase: Phase) -> Result<(), Failure> {
        self.phase = phase;
        self.logs.event(&format!("phase: {phase}"));
        self.store
            .set_phase(self.queue.id, &self.cfg.worker_id, Some(phase))
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

    async fn pipeline(&mut self) -> Result<(), Failure> {
        let cancel = self.ctl.cancel.clone();
        // 1. cloning
        self.set_phase(Phase::Cloning).await?;
        let mirrors = self.mirrors;
        let logs = self.logs.clone();
        let mut on_line = move |l: &[u8]| logs.output(l);
        let mirror = mirrors
            .fetch(
                &self.queue.repo,
                self.cfg.clone_timeout,
                &cancel,
                &mut on_line,
            )
            .await
            .map_err(|e| self.git_failure(e))?;
        self.mirror = Some(mirror.clone());
        let sha = mirrors
            .resolve(
                &mirror,
                &self.queue.branch,
                self.queue.requested_commit.as_deref(),
                &cancel,
            )
            .await
            .map_err(|e| self.git_failure(e))?;
        self.logs.event(&format!("testing commit {sha}"));
        self.store
            .set_commit(self.queue.id, &self.cfg.worker_id, &sha)
            .await?;
        if self.work.exists() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
        mirrors
            .checkout(
                &mirror,
                &sha,
                &self.work,
                self.cfg.clone_timeout,
                &cancel,
                &mut on_line,
            )
            .await
            .map_err(|e| self.git_failure(e))?;
        let profile = profile::load(&self.work).map_err(|e| Failure::Infra(e.to_string()))?;
        self.logs.event(&format!("profile: {}", profile.kind));
        let tasks = match &self.queue.scenarios {
            Some(_) => self
                .store
                .queue(self.queue.id)
                .await?
                .tasks
                .into_iter()
                .map(|(t, _)| t)
                .collect(),
            None => {
                let found = profile::expand_scenarios(&self.work, &profile.default_scenarios)
                    .map_err(Failure::Infra)?;
                if found.is_empty() {
                    return Err(Failure::Infra(format!(
                        "no scenario files match the default set {:?} in the repository",
                        profile.default_scenarios
                    )));
                }
                self.store
                    .create_tasks(self.queue.id, &self.cfg.worker_id, &found)
                    .await?
            }
        };
        // 2. building
        self.set_phase(Phase::Building).await?;
        self.build(&profile).await?;
        // 3. testing
        self.set_phase(Phase::Testing).await?;
        let Some(emulator) = profile.emulator_command.clone() else {
            return Err(Failure::Infra(
                "testarena.toml has no [emulator] command".into(),
            ));
        };
        let ready = match &profile.ready {
            Some(r) => {
                Some(Regex::new(r).map_err(|e| Failure::Infra(format!("emulator.ready: {e}")))?)
            }
            None => None,
        };
        for task in tasks {
            self.check_stopped()?;
            let tdir = task_dir(&self.dir, task.position, &task.scenario);
            let _ = std::fs::create_dir_all(&tdir);
            let spec = EmulatorSpec {
                command: emulator.clone(),
                console: profile.console,
                ready: ready.clone(),
                boot_timeout: profile.boot_timeout,
                cwd: self.work.clone(),
                sandbox: self.task_sandbox(&profile, &tdir)?,
            };
            let suite = self.run_task(task.id, &task.scenario, &tdir, &spec).await?;
            self.suites.push(suite);
        }
        Ok(())
    }

    fn git_failure(&self, e: crate::git::GitError) -> Failure {
        if self.ctl.cancel.is_cancelled() {
            Failure::Stopped
        } else {
            Failure::Infra(format!("cloning failed: {e}"))
        }
    }

    /// The jail of a command whose files directory is `<dir>/files`: the workspace and that
    /// directory writable, the mirror readable, the `TESTARENA_*` variables and `[env]` set.
    fn jail(&self, profile: &Profile, dir: &Path, network: Network) -> Result<Jail, Failure> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files)
            .map_err(|e| Failure::Infra(format!("cannot create {}: {e}", files.display())))?;
        let firmware = profile
            .firmware
            .as_deref()
            .map(|f| self.work.join(f).display().to_string())
            .unwrap_or_default();
        let mut env = profile.env.clone();
        env.extend([
            ("TESTARENA_QUEUE_ID".into(), self.queue.id.to_string()),
            (
                "TESTARENA_WORKSPACE".into(),
                self.work.display().to_string(),
            ),
            ("TESTARENA_FIRMWARE".into(), firmware),
            ("TESTARENA_LOG_DIR".into(), files.display().to_string()),
        ]);
        Ok(Jail {
            writable: vec![self.work.clone(), files],
            readable: self.mirror.iter().cloned().collect(),
            network,
            env,
        })
    }

    /// The sandbox of the build.
    fn build_sandbox(&self, profile: &Profile) -> Result<Sandbox, Failure> {
        let network = if profile.build_network {
            Network::Host
        } else {
            Network::None
        };
        let jail = self.jail(profile, &self.dir, network)?;
        Ok(Sandbox::new(self.cfg.sandbox.clone(), jail))
    }

    /// The sandbox shared by the emulator and the `<run>` steps of one task: a loopback-only
    /// network namespace of their own unless the repository asks for the host's network.
    fn task_sandbox(&self, profile: &Profile, tdir: &Path) -> Result<Sandbox, Failure> {
        let network = if profile.emulator_network || self.cfg.sandbox.mode == SandboxMode::Off {
            Network::Host
        } else {
            match NetNs::create() {
                Ok(ns) => Network::Shared(Arc::new(ns)),
                Err(e) => {
                    self.logs.event(&format!(
                        "warning: cannot create a network namespace for the emulator ({e}; it needs CAP_SYS_ADMIN): it shares the host's network"
                    ));
                    Network::Host
                }
            }
        };
        let jail = self.jail(profile, tdir, network)?;
        Ok(Sandbox::new(self.cfg.sandbox.clone(), jail))
    }

    async fn build(&mut self, profile: &Profile) -> Result<(), Failure> {
        let Some(command) = &profile.build_command else {
            self.logs.event("no build command: skipping the build");
            return Ok(());
        };
        let build_log = LogFile::create(&self.dir.join("build.log"), self.cfg.log_cap).ok();
        self.logs.set_current(build_log);
        self.logs.event(&format!(
            "build: {command} (timeout {})",
            humantime::format_duration(profile.build_timeout)
        ));
        let spec = self
            .build_sandbox(profile)?
            .wrap(Spec::shell(command).with_cwd(&self.work));
        let logs = self.logs.clone();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut on_line = |l: &[u8]| {
            logs.output(l);
            if tail.len() == 15 {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(l).into_owned());
        };
        let started = Instant::now();
        let outcome = process::run(
            &spec,
            profile.build_timeout,
            &self.ctl.cancel,
            &mut on_line,
            Duration::from_secs(5),
        )
        .await;
        let tail_text: Vec<String> = tail.iter().map(|l| format!("  {l}")).collect();
        let result = match outcome {
            Ok(Outcome::Exited(0)) => {
                self.logs.event(&format!(
                    "build passed in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            Ok(Outcome::Exited(code)) => Err(Failure::Infra(format!(
                "build failed with exit code {code} (see build.log); last lines:\n{}",
                tail_text.join("\n")
            ))),
            Ok(Outcome::TimedOut(d)) => Err(Failure::Infra(format!(
                "build timed out after {} and was killed",
                humantime::format_duration(d)
            ))),
            Ok(Outcome::Cancelled) => Err(Failure::Stopped),
            Err(e) => Err(Failure::Infra(format!("build could not run: {e}"))),
        };
        if let Err(Failure::Infra(m)) = &result {
            self.logs.event(m);
        }
        self.logs.set_current(None);
        result
    }

    /// Waits until every case's HTML page started so far is written.
    async fn wait_for_html(&self) {
        let jobs = std::mem::take(&mut *self.html_jobs.lock().unwrap_or_else(|p| p.into_inner()));
        for job in jobs {
            match job.await.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "cannot write a case's HTML log"),
            }
        }
    }

    /// Starts the emulator, records its process group, and logs what happened.
    async fn boot(
        &self,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<Console, String> {
        match Console::start(spec, self.logs.clone(), cancel).await {
            Ok(c) => {
                let g = StaleGroup {
                    pgid: c.pgid().await,
                    worker_id: self.cfg.worker_id.clone(),
                    hostname: self.cfg.hostname.clone(),
                    boot_id: self.cfg.boot_id.clone(),
                    queue_id: Some(self.queue.id),
                    command: spec.command.clone(),
                };
                if let Err(e) = self.store.record_group(&g).await {
                    tracing::warn!(error = %e, "cannot record the emulator's process group");
                }
                Ok(c)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn shutdown_console(&self, console: &Console) {
        let pgid = console.pgid().await;
        let code = console.stop().await;
        self.logs.event(&format!(
            "emulator stopped{}",
            code.map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        ));
        let _ = self.store.forget_group(&self.cfg.hostname, pgid).await;
    }

    async fn run_task(
        &mut self,
        task_id: i64,
        scenario_path: &str,
        tdir: &Path,
        spec: &EmulatorSpec,
    ) -> Result<JunitSuite, Failure> {
        let worker = self.cfg.worker_id.clone();
        self.store
            .set_task(task_id, &worker, CaseStatus::Running, None)
            .await?;
        self.logs.event(&format!("scenario {scenario_path}"));
        let mut suite = JunitSuite {
            name: scenario_path.to_string(),
            file: scenario_path.to_string(),
            error: None,
            cases: Vec::new(),
        };
        let scenario = match std::fs::read_to_string(self.work.join(scenario_path)) {
            Err(e) => Err(format!("cannot read scenario file {scenario_path}: {e}")),
            // Checking a file's regexes against their time budget takes up to seconds.
            Ok(text) => tokio::task::spawn_blocking(move || testarena_scenario::parse(&text))
                .await
                .map_err(|e| format!("checking scenario {scenario_path} failed: {e}"))
                .and_then(|r| r.map_err(|e| format!("invalid scenario {scenario_path}:\n{e}"))),
        };
        let mut scenario = match scenario {
            Ok(s) => s,
            Err(msg) => {
                self.logs.event(&msg);
                self.store
                    .set_task(task_id, &worker, CaseStatus::Error, Some(&msg))
                    .await?;
                suite.error = Some(msg);
                return Ok(suite);
            }
        };
        suite.name = scenario.name.clone();
        if let Some(only) = self
            .queue
            .case_filter
            .as_ref()
            .and_then(|f| f.get(scenario_path))
        {
            scenario.cases.retain(|c| only.contains(&c.id));
            self.logs
                .event(&format!("re-run of failed cases only: {}", only.join(", ")));
        }
        let new_cases: Vec<NewCase> = scenario
            .cases
            .iter()
            .map(|c| NewCase {
                key: c.id.clone(),
                name: c.name.clone(),
            })
            .collect();
        let case_ids = self
            .store
            .create_cases(task_id, &worker, &new_cases)
            .await?;

        // The scenario's own wall clock: a child token that fires on it as well as on queue stops.
        let task_cancel = self.ctl.cancel.child_token();
        let timer_token = task_cancel.clone();
        let limit = scenario.timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            timer_token.cancel();
        });
        let mut results: Vec<(CaseStatus, Option<String>, u64)> = Vec::new();
        let task_error = self
            .run_cases(&scenario, &case_ids, tdir, spec, &task_cancel, &mut results)
            .await;
        timer.abort();
        self.wait_for_html().await;
        let scenario_timed_out = task_cancel.is_cancelled() && !self.ctl.cancel.is_cancelled();
        // Cases that never ran: skipped, or error when the whole task could not run.
        for case_row in case_ids.iter().skip(results.len()) {
            let (status, msg) = match &task_error {
                Some(m) => (CaseStatus::Error, Some(m.clone())),
                None if scenario_timed_out => (
                    CaseStatus::Skipped,
                    Some(format!(
                        "scenario timed out after {}",
                        humantime::format_duration(limit)
                    )),
                ),
                None => (CaseStatus::Skipped, None),
            };
            if self.ctl.cancel.is_cancelled() {
                break;
            }
            self.store
                .finish_case(
                    *case_row,
                    &worker,
                    &CaseResult {
                        status,
                        duration_ms: None,
                        message: msg.clone(),
                    },
                )
                .await?;
            results.push((status, msg, 0));
        }
        self.check_stopped()?;
        for (case, (status, message, ms)) in scenario.cases.iter().zip(&results) {
            suite.cases.push(JunitCase {
                id: case.id.clone(),
                name: case.name.clone(),
                status: *status,
                duration_ms: *ms,
                message: message.clone(),
                log_path: Some(case_log(tdir, &case.id)),
            });
        }
        let verdict = results
            .iter()
            .fold(CaseStatus::Skipped, |acc, r| acc.worst(r.0));
        let verdict = if task_error.is_some() {
            CaseStatus::Error
        } else {
            verdict
        };
        self.store
            .set_task(task_id, &worker, verdict, task_error.as_deref())
            .await?;
        suite.error = task_error;
        Ok(suite)
    }

    /// Runs setup, the cases and teardown; returns a task-level error (emulator would not
    /// start, setup failed) if there was one. `results` gets one entry per case that ran.
    async fn run_cases(
        &mut self,
        scenario: &Scenario,
        case_ids: &[i64],
        tdir: &Path,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
        results: &mut Vec<(CaseStatus, Option<String>, u64)>,
    ) -> Option<String> {
        let mut console: Option<Console> = None;
        let mut task_error = None;
        for (case, case_id) in scenario.cases.iter().zip(case_ids) {
            if cancel.is_cancelled() {
                break;
            }
            if console.is_none() {
                match self.boot_and_setup(scenario, spec, cancel).await {
                    Ok(c) => console = Some(c),
                    Err(m) => {
                        if !cancel.is_cancelled() {
                            task_error = Some(m);
                        }
                        break;
                    }
                }
            }
            let Some(c) = console.as_mut() else { break };
            let r = self
                .run_case(scenario, case, *case_id, tdir, c, spec, cancel)
                .await;
            match r {
                Ok(r) => results.push(r),
                Err(_) => break,
            }
            if scenario.boot == BootMode::PerCase {
                if let Some(mut c) = console.take() {
                    self.teardown_and_stop(scenario, &mut c, spec, cancel).await;
                }
            }
        }
        if let Some(mut c) = console.take() {
            self.teardown_and_stop(scenario, &mut c, spec, cancel).await;
        }
        task_error
    }

    /// Runs the scenario's teardown (failures are logged only) and stops the emulator.
    async fn teardown_and_stop(
        &self,
        scenario: &Scenario,
        c: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) {
        if !scenario.teardown.is_empty() && !cancel.is_cancelled() {
            self.logs.event("teardown");
            for step in &scenario.teardown {
                if let Err(f) = self.run_step(step, c, spec, None, cancel).await {
                    self.logs
                        .event(&format!("teardown step {step} failed: {}", c.describe(&f)));
                    break;
                }
            }
        }
        self.shutdown_console(c).await;
    }

    async fn boot_and_setup(
        &self,
        scenario: &Scenario,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<Console, String> {
        let mut c = self
            .boot(spec, cancel)
            .await
            .map_err(|e| format!("emulator did not start: {e}"))?;
        if !scenario.setup.is_empty() {
            self.logs.event("setup");
            for step in &scenario.setup {
                if let Err(f) = self.run_step(step, &mut c, spec, None, cancel).await {
                    let m = format!("setup step {step} failed: {}", c.describe(&f));
                    self.shutdown_console(&c).await;
                    return Err(m);
                }
            }
        }
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_case(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        case_row: i64,
        tdir: &Path,
        console: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<(CaseStatus, Option<String>, u64), Failure> {
        let worker = &self.cfg.worker_id;
        self.store.start_case(case_row, worker).await?;
        let log_path = case_log(tdir, &case.id);
        self.logs
            .set_current(LogFile::create(&log_path, self.cfg.log_cap).ok());
        self.logs.event(&format!(
            "case {} '{}' started (timeout {})",
            case.id,
            case.name,
            humantime::format_duration(case.timeout)
        ));
        console.set_fail_pattern(scenario.fail_pattern_for(case));
        let idle = scenario.idle_timeout_for(case);
        let started = Instant::now();
        let current: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let steps = async {
            for step in &case.steps {
                *current.lock().unwrap_or_else(|p| p.into_inner()) = step.to_string();
                self.run_step(step, console, spec, idle, cancel).await?;
            }
            // A crash right after the last step still counts.
            match console.fail_hit() {
                Some(seq) => Err(StepFailure::FailPattern(seq)),
                None => Ok(()),
            }
        };
        let outcome = tokio::time::timeout(case.timeout, steps).await;
        let ms = started.elapsed().as_millis() as u64;
        let (status, message) = match outcome {
            Ok(Ok(())) => (CaseStatus::Passed, None),
            Ok(Err(StepFailure::Cancelled)) => {
                let why = match self.ctl.reason() {
                    Some(StopReason::Aborted) => "aborted".to_string(),
                    Some(StopReason::QueueTimeout(d)) => {
                        format!("queue timed out after {}", humantime::format_duration(d))
                    }
                    Some(StopReason::Shutdown) => "worker shut down".to_string(),
                    Some(StopReason::ClaimLost) => "worker lost its claim on the queue".to_string(),
                    None => "scenario timed out".to_string(),
                };
                (
                    CaseStatus::Error,
                    Some(format!(
                        "{why} during step {}",
                        current.lock().unwrap_or_else(|p| p.into_inner())
                    )),
                )
            }
            Ok(Err(f @ StepFailure::FailPattern(_))) => {
                // Let the crash finish printing (backtrace) before quoting it.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let step = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let described = console.describe(&f).replacen(
                    "fail pattern matched",
                    &format!("fail pattern matched during step {step}"),
                    1,
                );
                (CaseStatus::Failed, Some(described))
            }
            Ok(Err(f)) => (
                CaseStatus::Failed,
                Some(format!(
                    "step {}: {}",
                    current.lock().unwrap_or_else(|p| p.into_inner()),
                    console.describe(&f)
                )),
            ),
            Err(_) => (
                CaseStatus::Failed,
                Some(format!(
                    "test case timed out after {} in step {}; last lines:\n{}",
                    humantime::format_duration(case.timeout),
                    current.lock().unwrap_or_else(|p| p.into_inner()),
                    console.last_lines(10)
                )),
            ),
        };
        console.set_fail_pattern(None);
        self.logs.event(&format!(
            "case {} {status} in {ms} ms{}",
            case.id,
            message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
        self.logs.set_current(None);
        let meta = CaseMeta {
            queue_id: self.queue.id,
            scenario: scenario.name.clone(),
            case_id: case.id.clone(),
            case_name: case.name.clone(),
            status,
            duration_ms: ms,
            message: message.clone(),
        };
        // No space for a page when the logs failed: the little there is goes to the verdict.
        let logs_failed = self.logs_failed();
        if !logs_failed {
            // Rendering reads the whole case log: off the async threads, which serve the API.
            let html_path = log_path.with_extension("html");
            let log_for_html = log_path.clone();
            let job = tokio::task::spawn_blocking(move || {
                report::write_case_html(&log_for_html, &html_path, &meta)
            });
            self.html_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(job);
        }
        if logs_failed || (status == CaseStatus::Error && self.ctl.cancel.is_cancelled()) {
            // Recorded by the queue's close-out, with the stop reason.
            let r = CaseResult {
                status,
                duration_ms: Some(ms),
                message: message.clone(),
            };
            let _ = self.store.finish_case(case_row, worker, &r).await;
            return Err(Failure::Stopped);
        }
        self.store
            .finish_case(
                case_row,
                worker,
                &CaseResult {
                    status,
                    duration_ms: Some(ms),
                    message: message.clone(),
                },
            )
            .await?;
        Ok((status, message, ms))
    }

    async fn run_step(
        &self,
        step: &Step,
        console: &mut Console,
        spec: &EmulatorSpec,
        idle: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<(), StepFailure> {
        match &step.action {
            Action::Send { text, newline } => {
                self.logs.event(&format!("send: {text}"));
                console.send(text, *newline).await
            }
            Action::Expect { pattern, timeout } => {
                let line = console.expect(pattern, *timeout, idle, cancel).await?;
                self.logs
                    .event(&format!("expect /{pattern}/ matched: {line}"));
                Ok(())
            }
            Action::ExpectNot { pattern, timeout } => {
                console.expect_not(pattern, *timeout, cancel).await?;
                self.logs.event(&format!(
                    "expect-not /{pattern}/: not seen in {}",
                    humantime::format_duration(*timeout)
                ));
                Ok(())
            }
            Action::Sleep { duration } => console.sleep(*duration, cancel).await,
            Action::Reboot => {
                self.logs.event("reboot");
                let fail = console.fail_hit();
                let pattern = console.fail_pattern();
                self.shutdown_console(console).await;
                let fresh = self.boot(spec, cancel).await.map_err(StepFailure::Closed)?;
                fresh.set_fail_pattern(pattern);
                *console = fresh;
                match fail {
                    Some(seq) => Err(StepFailure::FailPattern(seq)),
                    None => Ok(()),
                }
            }
            Action::Run {
                command,
                timeout,
                exit_code,
            } => {
                self.logs.event(&format!("run: {command}"));
                let s = spec.sandbox.wrap(
                    Spec::shell(command)
                        .with_cwd(&self.work)
                        .with_env("TESTARENA_CONSOLE", console.bridge_url()),
                );
                let logs = self.logs.clone();
                let mut on_line = |l: &[u8]| {
                    let mut shown = b"[run] ".to_vec();
                    shown.extend_from_slice(l);
                    logs.output(&shown);
                };
                // A crash on the console ends the step at once, whatever the command does.
                let step_cancel = cancel.child_token();
                let run = process::run(
                    &s,
                    *timeout,
                    &step_cancel,
                    &mut on_line,
                    Duration::from_secs(3),
                );
                tokio::pin!(run);
                let outcome = tokio::select! {
                    r = &mut run => r,
                    seq = console.fail_hit_seen() => {
                        step_cancel.cancel();
                        let _ = run.await;
                        return Err(StepFailure::FailPattern(seq));
                    }
                };
                match outcome {
                    Ok(Outcome::Exited(code)) if code == *exit_code => Ok(()),
                    Ok(Outcome::Exited(code)) => Err(StepFailure::Unexpected(format!(
                        "command exited with code {code}, expected {exit_code}"
                    ))),
                    Ok(Outcome::TimedOut(d)) => Err(StepFailure::Unexpected(format!(
                        "command timed out after {} and was killed",
                        humantime::format_duration(d)
                    ))),
                    Ok(Outcome::Cancelled) => Err(StepFailure::Cancelled),
                    Err(e) => Err(StepFailure::Unexpected(format!(
                        "command could not run: {e}"
                    ))),
                }
            }
        }
    }

    /// Records the verdict: stop reasons and failures become `aborted`/`error`, otherwise the
    /// cases decide. Writes junit.xml either way.
    async fn finish(mut self, outcome: Result<(), Failure>, started: Instant) {
        let id = self.queue.id;
        let worker = self.cfg.worker_id.clone();
        self.logs.set_current(None);
        // Pages of cases of a task that was cut short.
        self.wait_for_html().await;
        let reason = self.ctl.reason();
        if reason == Some(StopReason::ClaimLost) {
            self.logs
                .event("this worker lost its claim on the queue (deleted or taken back); stopping");
            if self.store.queue(id).await.is_err() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            return;
        }
        let _ = self
            .store
            .set_phase(id, &worker, Some(Phase::Reporting))
            .await;
        let write_error = self
            .write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (status, error) = match (&outcome, &reason) {
            _ if write_error.is_some() && reason.is_none() => (
                QueueStatus::Error,
                Some(format!(
                    "cannot write the queue's logs in {}: {}",
                    self.dir.display(),
                    write_error.unwrap_or_default()
                )),
            ),
            (_, Some(StopReason::Aborted)) => {
                (QueueStatus::Aborted, Some("aborted on request".to_string()))
            }
            (_, Some(StopReason::QueueTimeout(d))) => (
                QueueStatus::Error,
                Some(format!(
                    "queue timed out after {} in phase {}",
                    humantime::format_duration(*d),
                    self.phase
                )),
            ),
            (_, Some(StopReason::Shutdown)) => (
                QueueStatus::Error,
                Some("the worker shut down while the queue ran; resubmit it".to_string()),
            ),
            (Err(Failure::Infra(m)), _) => (QueueStatus::Error, Some(m.clone())),
            (Err(Failure::Store(e)), _) => {
                (QueueStatus::Error, Some(format!("database error: {e}")))
            }
            (Err(Failure::Stopped), _) | (Ok(()), _) => {
                let detail = self.store.queue(id).await;
                let verdicts: Vec<CaseStatus> = match &detail {
                    Ok(d) => d
                        .tasks
                        .iter()
                        .flat_map(|(t, cases)| {
                            if cases.is_empty() {
                                vec![t.status]
                            } else {
                                cases
                                    .iter()
                                    .map(|c| c.status)
                                    .chain(
                                        std::iter::once(t.status)
                                            .filter(|s| *s == CaseStatus::Error),
                                    )
                                    .collect()
                            }
                        })
                        .collect(),
                    Err(_) => vec![CaseStatus::Error],
                };
                (queue_verdict(verdicts), None)
            }
        };
        let running_message = error.clone().unwrap_or_else(|| "stopped".into());
        if let Err(e) = self
            .store
            .close_unfinished(id, &worker, &running_message)
            .await
        {
            tracing::warn!(queue = id, error = %e, "cannot close unfinished cases");
        }
        self.write_junit().await;
        self.logs.event(&format!(
            "queue {id} {status} in {:.1}s{}",
            started.elapsed().as_secs_f64(),
            error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
        if let Err(e) = self
            .store
            .finish_queue(id, &worker, status, error.as_deref())
            .await
        {
            tracing::warn!(queue = id, error = %e, "cannot record the queue's verdict");
        } else if let Some(g) = &self.cfg.gitea {
            self.report_to_gitea(g, status, error.as_deref()).await;
        }
        self.logs.lock().flush();
    }

    /// Sets the verdict as the commit status on Gitea, if the queue came from a Gitea push.
    async fn report_to_gitea(
        &self,
        g: &crate::gitea::GiteaNotifier,
        status: QueueStatus,
        error: Option<&str>,
    ) {
        let Some(origin) = &self.queue.origin else {
            return;
        };
        let detail = self.store.queue(self.queue.id).await.ok();
        let sha = detail
            .as_ref()
            .and_then(|d| d.queue.commit.clone())
            .or_else(|| self.queue.requested_commit.clone());
        let Some(sha) = sha else { return };
        let description = match (error, detail.map(|d| d.to_api().summary)) {
            (Some(e), _) => format!("{status}: {}", e.lines().next().unwrap_or("")),
            (None, Some(s)) => format!(
                "{status}: {} passed, {} failed, {} error of {}",
                s.passed, s.failed, s.error, s.total
            ),
            (None, None) => status.to_string(),
        };
        g.notify(origin, &sha, self.queue.id, status, &description);
    }

    /// Writes junit.xml from what the database holds (it has every case, run or not).
    async fn write_junit(&mut self) {
        let Ok(detail) = self.store.queue(self.queue.id).await else {
            return;
        };
        let suites: Vec<JunitSuite> = detail
            .tasks
            .iter()
            .map(|(t, cases)| {
                let tdir = task_dir(&self.dir, t.position, &t.scenario);
                let known = self.suites.iter().find(|s| s.file == t.scenario);
                JunitSuite {
                    name: known
                        .map(|s| s.name.clone())
                        .unwrap_or_else(|| t.scenario.clone()),
                    file: t.scenario.clone(),
                    error: if cases.is_empty() {
                        t.error.clone()
                    } else {
                        None
                    },
                    cases: cases
                        .iter()
                        .map(|c| JunitCase {
                            id: c.key.clone(),
                            name: c.name.clone(),
                            status: c.status,
                            duration_ms: c.duration_ms.unwrap_or(0).max(0) as u64,
                            message: c.message.clone(),
                            log_path: Some(case_log(&tdir, &c.key)).filter(|p| p.exists()),
                        })
                        .collect(),
                }
            })
            .collect();
        if let Err(e) = report::write_junit(&self.dir.join("junit.xml"), &self.queue.name, &suites)
        {
            tracing::warn!(error = %e, "cannot write junit.xml");
        }
    }
}
