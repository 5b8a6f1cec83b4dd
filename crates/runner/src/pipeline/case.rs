//! One test case: its log, its steps under its time limit, how it ended and what that says,
//! its HTML page in the background, and its record in the store.

use super::failure::{Failure, StopReason};
use super::Run;
use crate::console::{Console, EmulatorSpec, StepFailure};
use crate::logs::LogFile;
use crate::report::{self, CaseMeta};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testarena_core::paths::case_log;
use testarena_core::CaseStatus;
use testarena_scenario::{Scenario, TestCase};
use tokio_util::sync::CancellationToken;

/// How long a crash gets to finish printing (its backtrace) before it is quoted.
const CRASH_SETTLE: Duration = Duration::from_millis(300);

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CaseOutcome {
    pub status: CaseStatus,
    pub message: Option<String>,
    /// How long it ran; `None` for a case that never ran.
    pub duration_ms: Option<u64>,
}

/// How a case's steps ended, before it is put into words.
enum CaseEnd {
    Passed,
    /// A step failed (the step as written in the scenario).
    Step {
        step: String,
        failure: StepFailure,
    },
    /// The case's own time limit ran out during `step`.
    TimedOut {
        after: Duration,
        step: String,
    },
}

impl Run<'_> {
    /// Runs one case on the running emulator and records its outcome; `Err` when the queue was
    /// stopped meanwhile (its close-out records the rest).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_case(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        case_row: i64,
        tdir: &Path,
        console: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<CaseOutcome, Failure> {
        self.store.start_case(case_row, &self.holder()).await?;
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
        let started = Instant::now();
        let end = self.run_steps(scenario, case, console, spec, cancel).await;
        let ms = started.elapsed().as_millis() as u64;
        if matches!(
            &end,
            CaseEnd::Step {
                failure: StepFailure::FailPattern(_),
                ..
            }
        ) {
            tokio::time::sleep(CRASH_SETTLE).await;
        }
        let (status, message) = self.describe_end(&end, console);
        console.set_fail_pattern(None);
        let outcome = CaseOutcome {
            status,
            message,
            duration_ms: Some(ms),
        };
        self.close_case(scenario, case, case_row, &log_path, &outcome)
            .await?;
        Ok(outcome)
    }

    /// Runs the case's steps in order under its time limit.
    async fn run_steps(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        console: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> CaseEnd {
        let idle = scenario.idle_timeout_for(case);
        let current: Arc<Mutex<String>> = Arc::default();
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
        let result = tokio::time::timeout(case.timeout, steps).await;
        let step = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match result {
            Ok(Ok(())) => CaseEnd::Passed,
            Ok(Err(failure)) => CaseEnd::Step { step, failure },
            Err(_) => CaseEnd::TimedOut {
                after: case.timeout,
                step,
            },
        }
    }

    /// The case's status and message: the one place a case's end is put into words.
    fn describe_end(&self, end: &CaseEnd, console: &Console) -> (CaseStatus, Option<String>) {
        match end {
            CaseEnd::Passed => (CaseStatus::Passed, None),
            CaseEnd::Step {
                step,
                failure: StepFailure::Cancelled,
            } => {
                let why = StopReason::case_text(self.ctl.reason().as_ref());
                (CaseStatus::Error, Some(format!("{why} during step {step}")))
            }
            CaseEnd::Step {
                step,
                failure: f @ StepFailure::FailPattern(_),
            } => {
                let text = console.describe(f).replacen(
                    "fail pattern matched",
                    &format!("fail pattern matched during step {step}"),
                    1,
                );
                (CaseStatus::Failed, Some(text))
            }
            CaseEnd::Step { step, failure } => (
                CaseStatus::Failed,
                Some(format!("step {step}: {}", console.describe(failure))),
            ),
            CaseEnd::TimedOut { after, step } => (
                CaseStatus::Failed,
                Some(format!(
                    "test case timed out after {} in step {step}; last lines:\n{}",
                    humantime::format_duration(*after),
                    console.last_lines(10)
                )),
            ),
        }
    }

    /// Logs the outcome, starts the case's HTML page and records the case.
    async fn close_case(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        case_row: i64,
        log_path: &Path,
        outcome: &CaseOutcome,
    ) -> Result<(), Failure> {
        let ms = outcome.duration_ms.unwrap_or(0);
        let said = outcome.message.as_deref().map(|m| format!(": {m}"));
        self.logs.event(&format!(
            "case {} {} in {ms} ms{}",
            case.id,
            outcome.status,
            said.unwrap_or_default()
        ));
        self.logs.set_current(None);
        // No space for a page when the logs failed: the little there is goes to the verdict.
        let logs_failed = self.logs_failed();
        if !logs_failed {
            let meta = CaseMeta {
                queue_id: self.queue.id,
                scenario: scenario.name.clone(),
                case_id: case.id.clone(),
                case_name: case.name.clone(),
                status: outcome.status,
                duration_ms: ms,
                message: outcome.message.clone(),
            };
            self.render_html(log_path, meta);
        }
        let worker = &self.holder();
        let stopped = outcome.status == CaseStatus::Error && self.ctl.cancel.is_cancelled();
        if logs_failed || stopped {
            // Recorded by the queue's close-out, with the stop reason.
            let _ = self
                .store
                .finish_case(case_row, worker, &outcome.result())
                .await;
            return Err(Failure::Stopped);
        }
        self.store
            .finish_case(case_row, worker, &outcome.result())
            .await?;
        Ok(())
    }

    /// Renders the case's HTML page in the background: it reads the whole case log, which is
    /// no work for the async threads.
    fn render_html(&self, log_path: &Path, meta: CaseMeta) {
        let html_path = log_path.with_extension("html");
        let log = log_path.to_path_buf();
        let logs = self.logs.clone();
        let job = tokio::task::spawn_blocking(move || {
            report::write_case_html(&log, &html_path, &meta)?;
            // Complete: the shipper sends it with its next round.
            logs.ready(html_path);
            Ok(())
        });
        self.html_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
    }
}
