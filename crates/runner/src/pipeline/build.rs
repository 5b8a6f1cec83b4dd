//! Phase 2: the repository's build command, once per queue, in its sandbox; and the jails
//! (writable and readable places, environment) of every command of a queue.

use super::failure::{Failure, InfraError};
use super::Run;
use crate::build_cache::{BuildCache, BuildKey, KeyLock};
use crate::logs::LogFile;
use crate::process::{self, Outcome, Spec};
use crate::profile::Profile;
use crate::sandbox::{Jail, Network, Sandbox};
use std::collections::VecDeque;
use std::io;
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
        if self.queue.build_cached_from.is_some() {
            // An earlier attempt reused a build; this one says for itself.
            self.store
                .set_build_cached_from(self.queue.id, &self.holder(), None)
                .await?;
        }
        let build_log = LogFile::create(&self.dir.join("build.log"), self.cfg.log_cap).ok();
        self.logs.set_current(build_log);
        let result = match self.cache_key(profile, command) {
            Some((cache, key)) => self.build_with_cache(profile, command, cache, key).await,
            None => self.build_now(profile, command).await,
        };
        if let Err(Failure::Infra(e)) = &result {
            self.logs.event(&e.to_string());
        }
        self.logs.set_current(None);
        result
    }

    /// The host's build cache and this build's key, when the cache may serve this queue.
    fn cache_key(&self, profile: &Profile, command: &str) -> Option<(BuildCache, String)> {
        let cache = self.cfg.build_cache.clone()?;
        let commit = self.queue.commit.as_deref()?;
        let key = BuildKey {
            repo: &self.queue.repo,
            commit,
            command,
            outputs: &profile.build_outputs,
            env: &profile.env,
            network: profile.build_network,
        }
        .digest();
        Some((cache, key))
    }

    /// Reuses the cached build of this key, or builds and stores it. The key's lock is held
    /// throughout, so a second queue of the same build waits for this one and then reuses it.
    /// A cache that cannot be used (disk full, unreadable) never fails the queue: it builds.
    async fn build_with_cache(
        &self,
        profile: &Profile,
        command: &str,
        cache: BuildCache,
        key: String,
    ) -> Result<(), Failure> {
        let waited = Instant::now();
        let lock = match cache
            .lock(&key, profile.build_timeout, &self.ctl.cancel)
            .await
        {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(Failure::Stopped),
            Err(e) => {
                self.logs
                    .event(&format!("build cache unusable ({e}): building without it"));
                return self.build_now(profile, command).await;
            }
        };
        if waited.elapsed() > Duration::from_millis(500) {
            self.logs.event(&format!(
                "build cache: waited {:.1}s for another queue with the same build",
                waited.elapsed().as_secs_f64()
            ));
        }
        if self.queue.no_cache {
            self.logs
                .event("build cache: not used (no_cache): building, then refreshing it");
        } else if let Some(entry) = cache.lookup(&lock) {
            let (cache2, work) = (cache.clone(), self.work.clone());
            let restored = blocking(move || {
                let r = cache2.restore(&lock, &work);
                (lock, r)
            })
            .await;
            match restored {
                Ok((_lock, Ok(()))) => {
                    self.logs
                        .event(&format!("build: cached from queue #{}", entry.queue));
                    self.store
                        .set_build_cached_from(self.queue.id, &self.holder(), Some(entry.queue))
                        .await?;
                    return Ok(());
                }
                Ok((lock, Err(e))) => {
                    self.logs.event(&format!(
                        "build cache: cannot restore the build of queue #{} ({e}): building",
                        entry.queue
                    ));
                    return self.build_and_store(profile, command, cache, lock).await;
                }
                Err(e) => {
                    self.logs
                        .event(&format!("build cache unusable ({e}): building without it"));
                    return self.build_now(profile, command).await;
                }
            }
        }
        self.build_and_store(profile, command, cache, lock).await
    }

    /// Builds, and on success keeps the outputs in the cache under the held lock.
    async fn build_and_store(
        &self,
        profile: &Profile,
        command: &str,
        cache: BuildCache,
        lock: KeyLock,
    ) -> Result<(), Failure> {
        self.build_now(profile, command).await?;
        let (work, outputs, queue) = (
            self.work.clone(),
            profile.build_outputs.clone(),
            self.queue.id,
        );
        let stored = blocking(move || cache.store(&lock, &work, &outputs, queue))
            .await
            .and_then(|r| r);
        match stored {
            Ok(Some(e)) => self.logs.event(&format!(
                "build cache: kept this build ({:.1} MiB)",
                e.bytes as f64 / (1 << 20) as f64
            )),
            Ok(None) => self
                .logs
                .event("build cache: this build is larger than the whole cache: not kept"),
            Err(e) => self
                .logs
                .event(&format!("build cache: cannot keep this build: {e}")),
        }
        Ok(())
    }

    /// Runs the build command now (no cache).
    async fn build_now(&self, profile: &Profile, command: &str) -> Result<(), Failure> {
        self.logs.event(&format!(
            "build: {command} (timeout {})",
            humantime::format_duration(profile.build_timeout)
        ));
        self.run_build(profile, command).await
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

/// Runs file copying off the async threads; a panic in it comes back as an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)
}
