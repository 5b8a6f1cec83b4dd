//! One test case: its steps under its time limit, how it ended and what that says, and its
//! record in the store (with the range of the queue log that is its log).

use super::failure::{Failure, StopReason};
use super::Run;
use crate::console::{Console, EmulatorSpec, StepFailure};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testarena_core::CaseStatus;
use testarena_scenario::{Scenario, TestCase};
use testarena_store::CaseUpdate;
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

/// How one try of a case ended (a case is tried again after a failure when it has retries).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TryOutcome {
    pub status: CaseStatus,
    pub message: Option<String>,
    pub duration_ms: u64,
    /// What kind of end it was, in a word (`expect-timeout`, `fail-pattern`, …): the JUnit
    /// `type` of a failed try.
    pub kind: &'static str,
    /// The emulator cannot serve another try: it exited, its console closed, a `<reboot/>`
    /// failed, or the firmware crashed (a fail pattern matched).
    pub broke_emulator: bool,
    /// Where this try's lines are in the queue's log (offsets across attempts).
    pub log_from: u64,
    pub log_to: u64,
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

impl CaseEnd {
    /// The end in a word, for the JUnit `type` of a failed try.
    fn kind(&self) -> &'static str {
        match self {
            CaseEnd::Passed => "passed",
            CaseEnd::TimedOut { .. } => "case-timeout",
            CaseEnd::Step { failure, .. } => match failure {
                StepFailure::Timeout { .. } => "expect-timeout",
                StepFailure::Idle(_) => "idle-timeout",
                StepFailure::FailPattern(_) => "fail-pattern",
                StepFailure::Closed(_) => "console-closed",
                StepFailure::Seen { .. } => "expect-not",
                StepFailure::ExitCode { .. } => "exit-code",
                StepFailure::RunTimedOut(_) => "run-timeout",
                StepFailure::RunNotStarted(_) => "run-not-started",
                StepFailure::Reboot(_) => "reboot-failed",
                StepFailure::Cancelled => "cancelled",
            },
        }
    }

    /// Whether the emulator is no good for another try after this end: it exited (the console
    /// closed), a `<reboot/>` could not start it again, or the firmware crashed (a fail
    /// pattern: what a crashed firmware does next is not the case's to find out).
    fn broke_emulator(&self) -> bool {
        matches!(
            self,
            CaseEnd::Step {
                failure: StepFailure::Closed(_)
                    | StepFailure::Reboot(_)
                    | StepFailure::FailPattern(_),
                ..
            }
        )
    }
}

impl Run<'_> {
    /// Records that case `case_row` started (its log starts here) and says so in the log.
    pub(super) fn start_case(
        &self,
        case: &TestCase,
        case_row: i64,
        tries: u32,
    ) -> Result<(), Failure> {
        self.cases.push(CaseUpdate::Started {
            case_id: case_row,
            at: testarena_store::now_ms(),
            log_from: Some(self.logs.position()),
        })?;
        let up_to = if tries > 1 {
            format!(", up to {tries} tries")
        } else {
            String::new()
        };
        self.logs.event(&format!(
            "case {} '{}' started (timeout {}{up_to})",
            case.id,
            case.name,
            humantime::format_duration(case.timeout)
        ));
        Ok(())
    }

    /// Runs the case's steps once on the running emulator (one try) and says how it ended.
    pub(super) async fn run_try(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        console: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> TryOutcome {
        console.set_fail_pattern(scenario.fail_pattern_for(case));
        let log_from = self.logs.position();
        let started = Instant::now();
        let end = self.run_steps(scenario, case, console, spec, cancel).await;
        let ms = started.elapsed().as_millis() as u64;
        let mut decoded = Vec::new();
        if let CaseEnd::Step {
            failure: StepFailure::FailPattern(seq),
            ..
        } = &end
        {
            tokio::time::sleep(CRASH_SETTLE).await;
            decoded = self.decode_crash(console, *seq).await;
        }
        let (status, mut message) = self.describe_end(&end, console);
        if let (Some(m), false) = (message.as_mut(), decoded.is_empty()) {
            m.push('\n');
            m.push_str(&decoded.join("\n"));
        }
        console.set_fail_pattern(None);
        TryOutcome {
            status,
            message,
            duration_ms: ms,
            kind: end.kind(),
            broke_emulator: end.broke_emulator() || console.is_closed(),
            log_from,
            log_to: self.logs.position(),
        }
    }

    /// Decodes the code addresses of the crash block of line `seq` and logs the result under
    /// it (so the case log, its HTML page and the live console show it); the lines, for the
    /// case's message. Loading and reading the ELF is file work: it runs off the async threads.
    async fn decode_crash(&self, console: &Console, seq: u64) -> Vec<String> {
        let block: Vec<String> = console
            .crash_block(seq)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        let decoder = self.decoder.clone();
        let decoded = tokio::task::spawn_blocking(move || decoder.decode(&block))
            .await
            .unwrap_or_else(|e| vec![format!("crash addresses not decoded: {e}")]);
        for line in &decoded {
            self.logs.event(line);
        }
        decoded
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

    /// Logs the outcome and records the case (its log ends with that line).
    pub(super) fn close_case(
        &self,
        case: &TestCase,
        case_row: i64,
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
        // Its last lines go to the database now, not at the shipper's next round.
        self.logs.ship_now();
        self.cases.push(CaseUpdate::Finished {
            case_id: case_row,
            at: testarena_store::now_ms(),
            result: outcome.result(),
            log_to: Some(self.logs.position()),
        })?;
        let stopped = outcome.status == CaseStatus::Error && self.ctl.cancel.is_cancelled();
        if self.logs_failed() || stopped {
            // The rest is recorded by the queue's close-out, with the stop reason.
            return Err(Failure::Stopped);
        }
        Ok(())
    }
}
