//! Retries (issue 16): a case that fails is tried again, up to its `retries` (the case's, else
//! the scenario's, else the queue's), and one that fails and then passes is `flaky`.
//!
//! A try runs on the same boot unless the scenario boots per case or the failure broke the
//! emulator (it exited, its console closed, a `<reboot/>` failed, the firmware crashed): then
//! the emulator is stopped and booted again (with `<setup>`) first. Only a `failed` try is
//! tried again: an `error` is the queue's or the scenario's end (abort, timeout, shutdown),
//! and trying again would only be cut short too. Every try's lines stay in the case's log,
//! between `case X try N of M` markers, and the case's duration covers all of them.

use super::case::{CaseOutcome, TryOutcome};
use super::failure::Failure;
use super::Run;
use crate::console::{Console, EmulatorSpec};
use std::time::Instant;
use testarena_core::CaseStatus;
use testarena_scenario::{BootMode, Scenario, TestCase};
use tokio_util::sync::CancellationToken;

/// Longest reason of a failed try quoted in the case's message (its first line, cut).
const REASON_CHARS: usize = 200;

/// A case run with its tries: its outcome, and why the emulator could not be booted again for
/// a try, if so (the rest of the task cannot run then: that is the task's error).
pub(super) struct CaseRun {
    pub outcome: CaseOutcome,
    pub boot_error: Option<String>,
}

/// A failed try of a case that was tried more than once, as JUnit reports it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FailedTry {
    /// 1-based.
    pub number: u32,
    pub outcome: TryOutcome,
}

impl Run<'_> {
    /// Runs a case on the booted emulator in `console`, and again while it fails and has
    /// retries left (on a fresh boot when needed: `console` is then replaced, or left `None`
    /// when the emulator could not be booted again); records its outcome. `Err` when the queue
    /// was stopped meanwhile (its close-out records the rest).
    pub(super) async fn run_case(
        &self,
        scenario: &Scenario,
        case: &TestCase,
        case_row: i64,
        console: &mut Option<Console>,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<CaseRun, Failure> {
        let tries = 1 + u32::from(scenario.retries_for(case, self.queue.retries));
        self.start_case(case, case_row, tries)?;
        let started = Instant::now();
        let mut done: Vec<TryOutcome> = Vec::new();
        let mut boot_error = None;
        while let Some(n) = next_try(&done, tries, cancel) {
            if tries > 1 {
                self.logs
                    .event(&try_marker(&case.id, n, tries, done.last(), scenario.boot));
            }
            if let Some(last) = done.last() {
                if needs_fresh_boot(last, scenario.boot) {
                    let broken = last.broke_emulator;
                    if let Err(m) = self
                        .boot_again(scenario, console, spec, cancel, broken)
                        .await
                    {
                        self.logs
                            .event(&format!("case {} not tried again: {m}", case.id));
                        boot_error = Some(m);
                        break;
                    }
                }
            }
            let Some(c) = console.as_mut() else { break };
            let t = self.run_try(scenario, case, c, spec, cancel).await;
            if t.status == CaseStatus::Failed && n < tries {
                self.logs.event(&format!(
                    "case {} try {n} of {tries} failed in {} ms: {}",
                    case.id,
                    t.duration_ms,
                    first_line(t.message.as_deref())
                ));
            }
            done.push(t);
        }
        let (status, message) = verdict(&done, tries, boot_error.as_deref());
        let outcome = CaseOutcome {
            status,
            message,
            duration_ms: Some(started.elapsed().as_millis() as u64),
        };
        if done.len() > 1 {
            self.keep_failed_tries(case_row, &done);
        }
        self.close_case(case, case_row, &outcome)?;
        Ok(CaseRun {
            outcome,
            boot_error,
        })
    }

    /// Stops the emulator (with `<teardown>` unless it is broken) and boots a fresh one with
    /// `<setup>`; `Err` with why it could not be booted (then `console` is `None`).
    async fn boot_again(
        &self,
        scenario: &Scenario,
        console: &mut Option<Console>,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
        broken: bool,
    ) -> Result<(), String> {
        if let Some(mut c) = console.take() {
            if broken {
                self.shutdown_console(&c).await;
            } else {
                self.teardown_and_stop(scenario, &mut c, spec, cancel).await;
            }
        }
        *console = Some(self.boot_and_setup(scenario, spec, cancel).await?);
        Ok(())
    }

    /// Keeps the failed tries of a case tried more than once, for its JUnit `<flakyFailure>`
    /// or `<rerunFailure>` elements.
    fn keep_failed_tries(&self, case_row: i64, done: &[TryOutcome]) {
        let failed: Vec<FailedTry> = (1u32..)
            .zip(done)
            .filter(|(_, t)| t.status == CaseStatus::Failed)
            .map(|(number, t)| FailedTry {
                number,
                outcome: t.clone(),
            })
            .collect();
        self.failed_tries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(case_row, failed);
    }
}

/// The number of the next try, if there is one: the first, or another after a failed one while
/// tries are left and nothing stopped the task.
fn next_try(done: &[TryOutcome], tries: u32, cancel: &CancellationToken) -> Option<u32> {
    let n = u32::try_from(done.len()).ok()? + 1;
    let again = match done.last() {
        None => true,
        Some(last) => last.status == CaseStatus::Failed && !cancel.is_cancelled(),
    };
    (again && n <= tries).then_some(n)
}

/// Whether try after `last` needs a fresh emulator.
fn needs_fresh_boot(last: &TryOutcome, boot: BootMode) -> bool {
    boot == BootMode::PerCase || last.broke_emulator
}

/// The log line that starts try `n` of `tries` (and says on which boot it runs).
fn try_marker(id: &str, n: u32, tries: u32, last: Option<&TryOutcome>, boot: BootMode) -> String {
    let on = match last {
        None => String::new(),
        Some(l) if l.broke_emulator => format!(" (fresh boot: {})", broken_by(l.kind)),
        Some(_) if boot == BootMode::PerCase => " (fresh boot: boot=\"per-case\")".into(),
        Some(_) => " (same boot)".into(),
    };
    format!("case {id} try {n} of {tries}{on}")
}

/// What broke the emulator, from the kind of the try's end.
fn broken_by(kind: &str) -> &'static str {
    match kind {
        "fail-pattern" => "the firmware crashed",
        "reboot-failed" => "a reboot failed",
        _ => "the emulator exited",
    }
}

/// The first line of a message, cut to [`REASON_CHARS`] characters.
fn first_line(message: Option<&str>) -> String {
    let line = message.and_then(|m| m.lines().next()).unwrap_or("").trim();
    match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The case's status and message from its tries (`tries` allowed; `boot_error`: why it could
/// not be tried again). One try says what it said; a pass after failures is `flaky`.
fn verdict(
    done: &[TryOutcome],
    tries: u32,
    boot_error: Option<&str>,
) -> (CaseStatus, Option<String>) {
    let Some(last) = done.last() else {
        let why = boot_error.unwrap_or("the emulator is not running");
        return (CaseStatus::Error, Some(why.to_string()));
    };
    let n = done.len() as u32;
    let failures = || {
        (1u32..)
            .zip(done)
            .filter(|(_, t)| t.status == CaseStatus::Failed)
            .map(|(i, t)| format!("try {i} ({})", first_line(t.message.as_deref())))
            .collect::<Vec<_>>()
    };
    match last.status {
        CaseStatus::Passed if n > 1 => {
            let failed = failures().join(", ");
            let message = format!("flaky: failed on {failed}, passed on try {n}");
            (CaseStatus::Flaky, Some(message))
        }
        CaseStatus::Failed if n > 1 || boot_error.is_some() => {
            let last_message = last.message.as_deref().unwrap_or("case failed");
            let mut earlier = failures();
            earlier.pop();
            let head = if n == tries {
                format!("failed on all {n} tries")
            } else {
                let not_again = first_line(boot_error);
                let count = if n == 1 { "try" } else { "tries" };
                format!("failed on {n} {count} of {tries} (not tried again: {not_again})")
            };
            let message = if earlier.is_empty() {
                format!("{head}; try {n}: {last_message}")
            } else {
                format!("{head}: {}; try {n}: {last_message}", earlier.join(", "))
            };
            (CaseStatus::Failed, Some(message))
        }
        _ if n > 1 => {
            let message = last.message.as_deref().unwrap_or_default();
            (last.status, Some(format!("try {n} of {tries}: {message}")))
        }
        _ => (last.status, last.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(status: CaseStatus, message: Option<&str>) -> TryOutcome {
        TryOutcome {
            status,
            message: message.map(String::from),
            duration_ms: 5,
            kind: "expect-timeout",
            broke_emulator: false,
            log_from: 0,
            log_to: 0,
        }
    }

    #[test]
    fn one_try_says_what_it_said() {
        let passed = tried(CaseStatus::Passed, None);
        assert_eq!(verdict(&[passed], 1, None), (CaseStatus::Passed, None));
        assert_eq!(
            verdict(&[tried(CaseStatus::Passed, None)], 3, None),
            (CaseStatus::Passed, None)
        );
        let failed = tried(CaseStatus::Failed, Some("step <expect>: nope\nlast lines"));
        assert_eq!(
            verdict(std::slice::from_ref(&failed), 1, None),
            (CaseStatus::Failed, failed.message.clone())
        );
        let error = tried(CaseStatus::Error, Some("aborted during step <expect>"));
        assert_eq!(
            verdict(std::slice::from_ref(&error), 3, None),
            (CaseStatus::Error, error.message.clone())
        );
    }

    #[test]
    fn a_pass_after_failures_is_flaky_and_names_each_failure() {
        let done = [
            tried(
                CaseStatus::Failed,
                Some("step <run> \"x\" (line 3): command exited with code 1, expected 0"),
            ),
            tried(
                CaseStatus::Failed,
                Some("step <expect> (line 4): expected /ok/ within 1s; last lines seen:\n  boot"),
            ),
            tried(CaseStatus::Passed, None),
        ];
        let (status, message) = verdict(&done, 4, None);
        assert_eq!(status, CaseStatus::Flaky);
        assert_eq!(
            message.unwrap(),
            "flaky: failed on try 1 (step <run> \"x\" (line 3): command exited with code 1, expected 0), \
             try 2 (step <expect> (line 4): expected /ok/ within 1s; last lines seen:), passed on try 3"
        );
    }

    #[test]
    fn failing_every_try_says_so_with_the_last_message_whole() {
        let done = [
            tried(CaseStatus::Failed, Some("first reason")),
            tried(CaseStatus::Failed, Some("second reason\nlast lines:\n  a")),
        ];
        assert_eq!(
            verdict(&done, 2, None),
            (
                CaseStatus::Failed,
                Some("failed on all 2 tries: try 1 (first reason); try 2: second reason\nlast lines:\n  a".into())
            )
        );
        // The emulator would not boot again for a retry.
        let (status, message) = verdict(&done[..1], 3, Some("emulator did not start: boom\nmore"));
        assert_eq!(status, CaseStatus::Failed);
        assert_eq!(
            message.unwrap(),
            "failed on 1 try of 3 (not tried again: emulator did not start: boom); try 1: first reason"
        );
        // Stopped on a later try: the stop is the verdict, the try is named.
        let cut = [
            tried(CaseStatus::Failed, Some("first reason")),
            tried(CaseStatus::Error, Some("aborted during step <expect>")),
        ];
        assert_eq!(
            verdict(&cut, 3, None),
            (
                CaseStatus::Error,
                Some("try 2 of 3: aborted during step <expect>".into())
            )
        );
    }

    #[test]
    fn only_failures_are_tried_again_and_never_past_the_limit() {
        let live = CancellationToken::new();
        assert_eq!(next_try(&[], 1, &live), Some(1));
        let failed = tried(CaseStatus::Failed, Some("x"));
        assert_eq!(next_try(std::slice::from_ref(&failed), 1, &live), None);
        assert_eq!(next_try(std::slice::from_ref(&failed), 2, &live), Some(2));
        assert_eq!(next_try(&[failed.clone(), failed.clone()], 2, &live), None);
        assert_eq!(next_try(&[tried(CaseStatus::Passed, None)], 3, &live), None);
        assert_eq!(next_try(&[tried(CaseStatus::Error, None)], 3, &live), None);
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert_eq!(next_try(&[failed], 3, &stopped), None);
    }

    #[test]
    fn a_retry_boots_afresh_only_per_case_or_after_a_broken_emulator() {
        let mut last = tried(CaseStatus::Failed, Some("x"));
        assert!(!needs_fresh_boot(&last, BootMode::Once));
        assert!(needs_fresh_boot(&last, BootMode::PerCase));
        assert_eq!(
            try_marker("TC", 2, 3, Some(&last), BootMode::Once),
            "case TC try 2 of 3 (same boot)"
        );
        assert_eq!(
            try_marker("TC", 2, 3, Some(&last), BootMode::PerCase),
            "case TC try 2 of 3 (fresh boot: boot=\"per-case\")"
        );
        last.broke_emulator = true;
        last.kind = "console-closed";
        assert!(needs_fresh_boot(&last, BootMode::Once));
        assert_eq!(
            try_marker("TC", 3, 3, Some(&last), BootMode::Once),
            "case TC try 3 of 3 (fresh boot: the emulator exited)"
        );
        assert_eq!(
            try_marker("TC", 1, 3, None, BootMode::Once),
            "case TC try 1 of 3"
        );
    }
}
