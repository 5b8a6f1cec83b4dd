//! One step of a case: send, expect, expect-not, sleep, reboot, or a `<run>` host command in
//! the task's sandbox.

use super::Run;
use crate::console::{Console, EmulatorSpec, StepFailure};
use crate::process::{self, Outcome, Spec};
use std::time::Duration;
use testarena_scenario::{Action, Step};
use tokio_util::sync::CancellationToken;

/// Grace between TERM and KILL for a `<run>` command that is stopped.
const RUN_GRACE: Duration = Duration::from_secs(3);

impl Run<'_> {
    /// Runs `step` against the console (which a reboot replaces).
    pub(super) async fn run_step(
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
            Action::Reboot => self.reboot(console, spec, cancel).await,
            Action::Run {
                command,
                timeout,
                exit_code,
            } => {
                self.run_command(command, *timeout, *exit_code, console, spec, cancel)
                    .await
            }
        }
    }

    /// Stops the emulator and boots a fresh one with the same fail pattern; a crash seen before
    /// the reboot still fails the case.
    async fn reboot(
        &self,
        console: &mut Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<(), StepFailure> {
        self.logs.event("reboot");
        let fail = console.fail_hit();
        let pattern = console.fail_pattern();
        self.shutdown_console(console).await;
        let fresh = self.boot(spec, cancel).await.map_err(StepFailure::Reboot)?;
        fresh.set_fail_pattern(pattern);
        *console = fresh;
        match fail {
            Some(seq) => Err(StepFailure::FailPattern(seq)),
            None => Ok(()),
        }
    }

    /// Runs a `<run>` command in the task's sandbox with the console's bridge; a crash on the
    /// console ends it at once, whatever the command does.
    async fn run_command(
        &self,
        command: &str,
        timeout: Duration,
        exit_code: i32,
        console: &Console,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<(), StepFailure> {
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
        let step_cancel = cancel.child_token();
        let run = process::run(&s, timeout, &step_cancel, &mut on_line, RUN_GRACE);
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
            Ok(Outcome::Exited(code)) if code == exit_code => Ok(()),
            Ok(Outcome::Exited(code)) => Err(StepFailure::ExitCode {
                code,
                expected: exit_code,
            }),
            Ok(Outcome::TimedOut(d)) => Err(StepFailure::RunTimedOut(d)),
            Ok(Outcome::Cancelled) => Err(StepFailure::Cancelled),
            Err(e) => Err(StepFailure::RunNotStarted(e.to_string())),
        }
    }
}
