//! Why a queue or a case stops early, as types; turned into text here and nowhere else.

use crate::git::GitError;
use crate::profile::ProfileError;
use std::path::PathBuf;
use std::time::Duration;
use testarena_core::Phase;
use testarena_store::StoreError;

/// Why a running queue is being stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    Aborted,
    QueueTimeout(Duration),
    Shutdown,
    ClaimLost,
}

impl StopReason {
    /// What a case cut short by this reason says (`… during step X`).
    pub fn case_text(reason: Option<&StopReason>) -> String {
        match reason {
            Some(StopReason::Aborted) => "aborted".into(),
            Some(StopReason::QueueTimeout(d)) => format!("queue timed out after {}", human(*d)),
            Some(StopReason::Shutdown) => "worker shut down".into(),
            Some(StopReason::ClaimLost) => "worker lost its claim on the queue".into(),
            None => "scenario timed out".into(),
        }
    }

    /// The queue's `error` for this reason, stopped in `phase`; `None` for a lost claim and a
    /// shutdown (the queue is handed back), which record no verdict.
    pub fn queue_error(&self, phase: Phase) -> Option<String> {
        match self {
            StopReason::Aborted => Some("aborted on request".into()),
            StopReason::QueueTimeout(d) => Some(format!(
                "queue timed out after {} in phase {phase}",
                human(*d)
            )),
            // Handed back to wait again, or no longer ours: nothing to record.
            StopReason::Shutdown | StopReason::ClaimLost => None,
        }
    }
}

/// An infrastructure failure: the queue ends with `error` and this message.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("cloning failed: {0}")]
    Clone(#[from] GitError),
    #[error("{0}")]
    Profile(#[from] ProfileError),
    #[error("{0}")]
    DefaultScenarios(String),
    #[error("no scenario files match the default set {0:?} in the repository")]
    NoScenarios(Vec<String>),
    #[error("testarena.toml has no [emulator] command")]
    NoEmulator,
    #[error("emulator.ready: {0}")]
    BadReady(#[from] regex::Error),
    #[error("build failed with exit code {code} (see build.log); last lines:\n{tail}")]
    BuildFailed { code: i32, tail: String },
    #[error("build timed out after {} and was killed", human(*.0))]
    BuildTimedOut(Duration),
    #[error("build could not run: {0}")]
    BuildNotRun(crate::process::ProcessError),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the queue's logs in {dir}: {message}")]
    Logs { dir: PathBuf, message: String },
}

/// How the pipeline of one queue ends early.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The infrastructure failed: the queue ends with `error`.
    Infra(InfraError),
    /// The queue was stopped (abort, timeout, shutdown, lost claim, full disk).
    Stopped,
    /// The database refused a write.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<InfraError> for Failure {
    fn from(e: InfraError) -> Self {
        Failure::Infra(e)
    }
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}
