//! Phase 3: the tasks of a queue, one scenario each: read and check the scenario, create its
//! cases, boot once (or once per case) and run the cases, close the ones that never ran.

use super::case::CaseOutcome;
use super::failure::{Failure, InfraError};
use super::Run;
use crate::console::{Console, EmulatorSpec};
use crate::profile::Profile;
use regex::Regex;
use testarena_core::paths::task_dir;
use testarena_core::CaseStatus;
use testarena_report::JunitSuite;
use testarena_scenario::{BootMode, Scenario};
use testarena_store::{CaseResult, CaseUpdate, NewCase, TaskRow};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Run<'_> {
    /// Runs every task in order, each with its own emulator and sandbox.
    pub(super) async fn run_tasks(
        &mut self,
        profile: &Profile,
        tasks: Vec<TaskRow>,
    ) -> Result<(), Failure> {
        let emulator = profile
            .emulator_command
            .clone()
            .ok_or(InfraError::NoEmulator)?;
        let ready = match &profile.ready {
            Some(r) => Some(Regex::new(r).map_err(InfraError::from)?),
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
                sandbox: self.task_sandbox(profile, &tdir)?,
            };
            let span = tracing::info_span!("task", task = task.id, scenario = %task.scenario);
            let suite = self
                .run_task(task.id, &task.scenario, &spec)
                .instrument(span)
                .await?;
            self.suites.push(suite);
        }
        Ok(())
    }

    /// Runs one scenario; its JUnit suite (with the task's error, if it could not run).
    async fn run_task(
        &mut self,
        task_id: i64,
        scenario_path: &str,
        spec: &EmulatorSpec,
    ) -> Result<JunitSuite, Failure> {
        // Its sandbox comes up while the task's cases are recorded.
        spec.sandbox.prepare(&spec.cwd);
        let worker = self.holder();
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
        let scenario = match self.load_scenario(scenario_path).await {
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
        let (outcomes, task_error) = self.run_timed(&scenario, &case_ids, spec).await?;
        let verdict = match &task_error {
            Some(_) => CaseStatus::Error,
            None => outcomes
                .iter()
                .fold(CaseStatus::Skipped, |acc, o| acc.worst(o.status)),
        };
        self.store
            .set_task(task_id, &worker, verdict, task_error.as_deref())
            .await?;
        suite.error = task_error;
        Ok(suite)
    }

    /// Reads and checks the scenario file (off the async threads: checking its regexes against
    /// their time budget takes up to seconds), keeping only the cases a re-run asks for.
    async fn load_scenario(&self, path: &str) -> Result<Scenario, String> {
        let text = match self.cfg.local.scenarios.get(path) {
            Some(text) => text.clone(),
            None => std::fs::read_to_string(self.work.join(path))
                .map_err(|e| format!("cannot read scenario file {path}: {e}"))?,
        };
        let mut scenario = tokio::task::spawn_blocking(move || testarena_scenario::parse(&text))
            .await
            .map_err(|e| format!("checking scenario {path} failed: {e}"))?
            .map_err(|e| format!("invalid scenario {path}:\n{e}"))?;
        let filter = self.queue.case_filter.as_ref().and_then(|f| f.get(path));
        if let Some(only) = filter {
            scenario.cases.retain(|c| only.contains(&c.id));
            self.logs
                .event(&format!("re-run of failed cases only: {}", only.join(", ")));
        }
        let only = &self.cfg.local.cases;
        if !only.is_empty() {
            scenario.cases.retain(|c| only.contains(&c.id));
            self.logs
                .event(&format!("only the cases asked for: {}", only.join(", ")));
        }
        Ok(scenario)
    }

    /// Runs the cases under the scenario's own time limit, then closes those that never ran:
    /// one outcome per case, and the task's error if the whole task could not run.
    async fn run_timed(
        &mut self,
        scenario: &Scenario,
        case_ids: &[i64],
        spec: &EmulatorSpec,
    ) -> Result<(Vec<CaseOutcome>, Option<String>), Failure> {
        // A child token that fires on the scenario's timeout as well as on queue stops.
        let task_cancel = self.ctl.cancel.child_token();
        let timer_token = task_cancel.clone();
        let limit = scenario.timeout;
        let timer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            timer_token.cancel();
        }));
        let mut outcomes = Vec::new();
        let task_error = self
            .run_cases(scenario, case_ids, spec, &task_cancel, &mut outcomes)
            .await;
        drop(timer);
        let timed_out = task_cancel.is_cancelled() && !self.ctl.cancel.is_cancelled();
        let never_ran = NeverRan {
            task_error: task_error.as_deref(),
            timed_out: timed_out.then_some(limit),
        };
        for case_row in case_ids.iter().skip(outcomes.len()) {
            if self.ctl.cancel.is_cancelled() {
                break;
            }
            let outcome = never_ran.outcome();
            self.cases.push(CaseUpdate::Finished {
                case_id: *case_row,
                at: testarena_store::now_ms(),
                result: outcome.result(),
                log_to: None,
            })?;
            outcomes.push(outcome);
        }
        self.cases.flush().await?;
        self.check_stopped()?;
        Ok((outcomes, task_error))
    }

    /// Runs setup, the cases and teardown; returns a task-level error (emulator would not
    /// start, setup failed) if there was one. `outcomes` gets one entry per case that ran.
    async fn run_cases(
        &mut self,
        scenario: &Scenario,
        case_ids: &[i64],
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
        outcomes: &mut Vec<CaseOutcome>,
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
            let span = tracing::info_span!("case", case = %case.id);
            let r = self
                .run_case(scenario, case, *case_id, &mut console, spec, cancel)
                .instrument(span)
                .await;
            match r {
                Ok(run) => {
                    outcomes.push(run.outcome);
                    if let Some(m) = run.boot_error {
                        // A retry could not boot the emulator: the rest cannot run either.
                        if !cancel.is_cancelled() {
                            task_error = Some(m);
                        }
                        break;
                    }
                }
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
}

/// What a case that never ran is: an error when the whole task could not run, skipped (with
/// the reason) when the scenario ran out of time, skipped otherwise.
struct NeverRan<'a> {
    task_error: Option<&'a str>,
    timed_out: Option<std::time::Duration>,
}

impl NeverRan<'_> {
    fn outcome(&self) -> CaseOutcome {
        let (status, message) = match (self.task_error, self.timed_out) {
            (Some(m), _) => (CaseStatus::Error, Some(m.to_string())),
            (None, Some(limit)) => (
                CaseStatus::Skipped,
                Some(format!(
                    "scenario timed out after {}",
                    humantime::format_duration(limit)
                )),
            ),
            (None, None) => (CaseStatus::Skipped, None),
        };
        CaseOutcome {
            status,
            message,
            duration_ms: None,
        }
    }
}

impl CaseOutcome {
    /// The store's record of this outcome.
    pub(super) fn result(&self) -> CaseResult {
        CaseResult {
            status: self.status,
            duration_ms: self.duration_ms,
            message: self.message.clone(),
        }
    }
}
