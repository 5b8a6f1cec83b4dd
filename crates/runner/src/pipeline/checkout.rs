//! Phase 1: fetch the repository into its mirror, check out the exact commit, read its profile
//! and decide the tasks (the queue's scenarios, or the repository's default set).

use super::failure::{Failure, InfraError};
use super::Run;
use crate::git::GitError;
use crate::profile::{self, Profile};
use testarena_store::TaskRow;

impl Run<'_> {
    /// Checks out the commit under test; returns its profile and the tasks to run.
    pub(super) async fn checkout(&mut self) -> Result<(Profile, Vec<TaskRow>), Failure> {
        let cancel = self.ctl.cancel.clone();
        let mirrors = self.mirrors;
        let logs = self.logs.clone();
        let mut on_line = move |l: &[u8]| logs.output(l);
        let timeout = self.cfg.clone_timeout;
        let mirror = mirrors
            .fetch(&self.queue.repo, timeout, &cancel, &mut on_line)
            .await
            .map_err(|e| self.git_failure(e))?;
        self.mirror = Some(mirror.clone());
        let requested = self.queue.requested_commit.as_deref();
        let sha = mirrors
            .resolve(&mirror, &self.queue.branch, requested, &cancel)
            .await
            .map_err(|e| self.git_failure(e))?;
        self.logs.event(&format!("testing commit {sha}"));
        self.store
            .set_commit(self.queue.id, &self.holder(), &sha)
            .await?;
        self.queue.commit = Some(sha.clone());
        if self.work.exists() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
        mirrors
            .checkout(&mirror, &sha, &self.work, timeout, &cancel, &mut on_line)
            .await
            .map_err(|e| self.git_failure(e))?;
        let profile = profile::load(&self.work).map_err(InfraError::from)?;
        self.logs.event(&format!("profile: {}", profile.kind));
        let tasks = self.tasks(&profile).await?;
        Ok((profile, tasks))
    }

    /// The queue's own tasks, or one per scenario file of the repository's default set.
    async fn tasks(&self, profile: &Profile) -> Result<Vec<TaskRow>, Failure> {
        if self.queue.scenarios.is_some() {
            let detail = self.store.queue(self.queue.id).await?;
            return Ok(detail.tasks.into_iter().map(|(t, _)| t).collect());
        }
        let found = profile::expand_scenarios(&self.work, &profile.default_scenarios)
            .map_err(InfraError::DefaultScenarios)?;
        if found.is_empty() {
            return Err(InfraError::NoScenarios(profile.default_scenarios.clone()).into());
        }
        Ok(self
            .store
            .create_tasks(self.queue.id, &self.holder(), &found)
            .await?)
    }

    /// A git error, unless the queue was stopped meanwhile (then the stop is the cause).
    fn git_failure(&self, e: GitError) -> Failure {
        if self.ctl.cancel.is_cancelled() {
            Failure::Stopped
        } else {
            InfraError::Clone(e).into()
        }
    }
}
