//! Booting a task's emulator: its sandbox (a loopback-only network namespace shared with the
//! task's `<run>` steps), start and record its process group, setup and teardown, stop.

use super::failure::Failure;
use super::Run;
use crate::console::{Console, EmulatorSpec};
use crate::profile::Profile;
use crate::sandbox::{NetNs, Network, Sandbox, SandboxMode};
use std::path::Path;
use std::sync::Arc;
use testarena_scenario::Scenario;
use testarena_store::StaleGroup;
use tokio_util::sync::CancellationToken;

impl Run<'_> {
    /// The sandbox shared by the emulator and the `<run>` steps of one task: a loopback-only
    /// network namespace of their own unless the repository asks for the host's network.
    pub(super) fn task_sandbox(&self, profile: &Profile, tdir: &Path) -> Result<Sandbox, Failure> {
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

    /// Starts the emulator and records its process group (for clean-up after a crash).
    pub(super) async fn boot(
        &self,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<Console, String> {
        let c = Console::start(spec, self.logs.clone(), cancel)
            .await
            .map_err(|e| e.to_string())?;
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

    /// Stops the emulator and forgets its process group.
    pub(super) async fn shutdown_console(&self, console: &Console) {
        let pgid = console.pgid().await;
        let code = console.stop().await;
        self.logs.event(&format!(
            "emulator stopped{}",
            code.map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        ));
        let _ = self.store.forget_group(&self.cfg.hostname, pgid).await;
    }

    /// Boots and runs the scenario's setup; a failure is the task's error.
    pub(super) async fn boot_and_setup(
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

    /// Runs the scenario's teardown (failures are logged only) and stops the emulator.
    pub(super) async fn teardown_and_stop(
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
}
