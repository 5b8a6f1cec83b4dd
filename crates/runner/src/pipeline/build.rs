//! Phase 2: the repository's build command, once per queue, in its sandbox; and the jails
//! (writable and readable places, environment) of every command of a queue.

use super::failure::{Failure, InfraError};
use super::Run;
use crate::logs::LogFile;
use crate::process::{self, Outcome, Spec};
use crate::profile::Profile;
use crate::sandbox::{Jail, Network, Sandbox};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

/// Lines of the build's output quoted when it fails.
const BUILD_TAIL: usize = 15;
/// Grace between TERM and KILL for a build that is stopped.
const BUILD_GRACE: Duration = Duration::from_secs(5);

impl Run<'_> {
    /// Builds once with the repository's command; no command, no build.
    pub(super) async fn build(&mut self, profile: &Profile) -> Result<(), Failure> {
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
        let result = self.run_build(profile, command).await;
        if let Err(Failure::Infra(e)) = &result {
            self.logs.event(&e.to_string());
        }
        self.logs.set_current(None);
        result
    }

    /// Runs the build command, keeping its last lines for the error.
    async fn run_build(&self, profile: &Profile, command: &str) -> Result<(), Failure> {
        let spec = self
            .build_sandbox(profile)?
            .wrap(Spec::shell(command).with_cwd(&self.work));
        let logs = self.logs.clone();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut on_line = |l: &[u8]| {
            logs.output(l);
            if tail.len() == BUILD_TAIL {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(l).into_owned());
        };
        let started = Instant::now();
        let cancel = &self.ctl.cancel;
        let outcome = process::run(
            &spec,
            profile.build_timeout,
            cancel,
            &mut on_line,
            BUILD_GRACE,
        )
        .await;
        let tail: Vec<String> = tail.iter().map(|l| format!("  {l}")).collect();
        match outcome {
            Ok(Outcome::Exited(0)) => {
                let secs = started.elapsed().as_secs_f64();
                self.logs.event(&format!("build passed in {secs:.1}s"));
                Ok(())
            }
            Ok(Outcome::Exited(code)) => Err(InfraError::BuildFailed {
                code,
                tail: tail.join("\n"),
            }
            .into()),
            Ok(Outcome::TimedOut(d)) => Err(InfraError::BuildTimedOut(d).into()),
            Ok(Outcome::Cancelled) => Err(Failure::Stopped),
            Err(e) => Err(InfraError::BuildNotRun(e).into()),
        }
    }

    /// The jail of a command whose files directory is `<dir>/files`: the workspace and that
    /// directory writable, the mirror readable, the `TESTARENA_*` variables and `[env]` set.
    pub(super) fn jail(
        &self,
        profile: &Profile,
        dir: &Path,
        network: Network,
    ) -> Result<Jail, Failure> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files).map_err(|source| InfraError::CreateDir {
            path: files.clone(),
            source,
        })?;
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

    /// The sandbox of the build: the host's network unless the repository turns it off.
    fn build_sandbox(&self, profile: &Profile) -> Result<Sandbox, Failure> {
        let network = if profile.build_network {
            Network::Host
        } else {
            Network::None
        };
        let jail = self.jail(profile, &self.dir, network)?;
        Ok(Sandbox::new(self.cfg.sandbox.clone(), jail))
    }
}
