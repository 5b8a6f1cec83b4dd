//! Commit statuses on Gitea for queues that came from a Gitea push: `pending` once a worker
//! took the queue, the verdict once it ended. The database records what each queue should show
//! and what was posted (see the store's `status_reports`): the reporter wakes on every change
//! the change poller sees, claims a report that is behind (so a second server never posts it
//! too), posts it with retries and backoff, and records it (so a restart misses nothing and
//! posts nothing twice).

use crate::view::DETAIL_CAPS;
use std::sync::Arc;
use std::time::Duration;
use testarena_core::origin::Origin;
use testarena_core::QueueStatus;
use testarena_store::{QueueDetail, ReportClaim, Store, StoreError};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::GiteaConfig;

/// Tries per status and round before the round counts as failed.
const ATTEMPTS: u32 = 5;
/// First retry delay within a round; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Timeout of one request to Gitea.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim on a report lasts: longer than a whole round of tries.
const LEASE: Duration = Duration::from_secs(120);
/// Pause before a report whose round failed is tried again (by any server).
const NEXT_ROUND: Duration = Duration::from_secs(60);
/// Rounds before a report is given up.
const MAX_ROUNDS: i64 = 5;
/// How often the reporter looks for due reports without a change (retries, expired claims).
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Reports posted at once.
const PARALLEL: usize = 8;
/// Reports looked at per wake-up.
const BATCH: u32 = 64;
/// The status description Gitea shows while a queue runs.
const RUNNING_DESCRIPTION: &str = "TestArena is testing this commit";

/// The Gitea state for a queue status (Gitea knows pending, success, error, failure, warning).
pub fn gitea_state(status: QueueStatus) -> &'static str {
    match status {
        QueueStatus::Waiting | QueueStatus::Running => "pending",
        QueueStatus::Passed => "success",
        QueueStatus::Failed => "failure",
        QueueStatus::Error | QueueStatus::Aborted => "error",
    }
}

/// The description of a queue's verdict: its error's first line, or its case counts.
pub fn verdict_description(detail: &QueueDetail) -> String {
    let q = &detail.queue;
    match &q.error {
        Some(e) => format!("{}: {}", q.status, e.lines().next().unwrap_or("")),
        None => {
            let s = detail.summary();
            let flaky = match s.flaky {
                0 => String::new(),
                n => format!(", {n} flaky"),
            };
            format!(
                "{}: {} passed{flaky}, {} failed, {} error of {}",
                q.status, s.passed, s.failed, s.error, s.total
            )
        }
    }
}

/// How one try of posting a report ended.
#[derive(Debug, PartialEq, Eq)]
enum Posted {
    /// Gitea has it (or there was nothing to post): recorded as posted.
    Done,
    /// Gitea refused it for good (a 4xx): recorded as posted, and logged.
    Refused,
    /// Every try failed: another round later.
    Failed,
}

/// Posts the commit statuses of one Gitea server.
#[derive(Clone, Debug)]
pub struct Reporter {
    store: Store,
    client: reqwest::Client,
    url: String,
    token: String,
    public_url: String,
    /// Who claims reports: this process.
    sender: String,
}

impl Reporter {
    /// A reporter when `[gitea]` has a URL and a token; `None` otherwise.
    pub fn from_config(cfg: &GiteaConfig, store: Store) -> Option<Reporter> {
        let url = cfg.url.as_deref()?.trim_end_matches('/').to_string();
        let token = cfg.token.clone().filter(|t| !t.is_empty())?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .ok()?;
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_string();
        Some(Reporter {
            store,
            client,
            url,
            token,
            public_url,
            sender: sender_id(),
        })
    }

    /// Posts due reports until `stop`: at once when `rev` (the change counter) moves, and
    /// every few seconds for retries and claims another server let expire.
    pub async fn run(self, mut rev: watch::Receiver<i64>, stop: CancellationToken) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(PARALLEL));
        loop {
            match this.store.due_reports(BATCH).await {
                Ok(due) => {
                    for id in due {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let this = this.clone();
                        tokio::spawn(async move {
                            this.report(id).await;
                            drop(slot);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the commit statuses to post"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = rev.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// Claims the report of queue `id` and posts it, as long as it is behind.
    async fn report(&self, id: i64) {
        loop {
            let claim = match self.store.claim_report(id, &self.sender, lease_ms()).await {
                Ok(Some(claim)) => claim,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(queue = id, error = %e, "cannot claim a commit status");
                    return;
                }
            };
            let posted = self.post(&claim).await;
            let recorded = match posted {
                Posted::Done | Posted::Refused => self.done(&claim).await,
                Posted::Failed if claim.rounds + 1 >= MAX_ROUNDS => {
                    tracing::error!(queue = id, state = %claim.wanted, "gave up setting the Gitea commit status");
                    self.done(&claim).await
                }
                Posted::Failed => {
                    let delay = NEXT_ROUND.as_millis() as i64;
                    if let Err(e) = self.store.report_retry(id, &self.sender, delay).await {
                        tracing::warn!(queue = id, error = %e, "cannot record a failed commit status");
                    }
                    false
                }
            };
            if !recorded {
                return;
            }
        }
    }

    /// Records a claimed report as posted; whether it was still ours.
    async fn done(&self, claim: &ReportClaim) -> bool {
        match self
            .store
            .report_posted(claim.queue_id, &self.sender, claim.wanted)
            .await
        {
            Ok(ours) => ours,
            Err(e) => {
                tracing::warn!(queue = claim.queue_id, error = %e, "cannot record a posted commit status");
                false
            }
        }
    }

    /// Posts what a claimed report wants, with retries.
    async fn post(&self, claim: &ReportClaim) -> Posted {
        let detail = match self.store.queue_capped(claim.queue_id, DETAIL_CAPS).await {
            Ok(d) => d,
            // Deleted: its report went with it.
            Err(StoreError::NotFound(_)) => return Posted::Done,
            Err(e) => {
                tracing::warn!(queue = claim.queue_id, error = %e, "cannot read a queue to report");
                return Posted::Failed;
            }
        };
        let q = &detail.queue;
        let (sha, description) = if claim.wanted.is_finished() {
            (
                q.commit.clone().or_else(|| q.requested_commit.clone()),
                verdict_description(&detail),
            )
        } else {
            (q.requested_commit.clone(), RUNNING_DESCRIPTION.to_string())
        };
        let (Some(origin), Some(sha)) = (&q.origin, sha) else {
            return Posted::Done;
        };
        self.send(origin, &sha, q.id, claim.wanted, &description)
            .await
    }

    /// Sets the status of `sha`: up to [`ATTEMPTS`] tries with a doubling pause between them.
    async fn send(
        &self,
        origin: &Origin,
        sha: &str,
        queue_id: i64,
        status: QueueStatus,
        description: &str,
    ) -> Posted {
        let path = format!(
            "{}/api/v1/repos/{}/statuses/{}",
            self.url, origin.gitea_repo, sha
        );
        let body = serde_json::json!({
            "state": gitea_state(status),
            "target_url": format!("{}/#/queues/{queue_id}", self.public_url),
            "description": description.chars().take(140).collect::<String>(),
            "context": origin.context,
        });
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&path)
                .header("Authorization", format!("token {}", self.token))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Posted::Done,
                // A 4xx other than rate limiting will not get better by retrying.
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    tracing::warn!(queue = queue_id, status = %r.status(), "Gitea refused the commit status");
                    return Posted::Refused;
                }
                Ok(r) => {
                    tracing::warn!(queue = queue_id, attempt, status = %r.status(), "Gitea status failed; retrying")
                }
                Err(e) => {
                    tracing::warn!(queue = queue_id, attempt, error = %e, "Gitea unreachable; retrying")
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Posted::Failed
    }
}

fn lease_ms() -> i64 {
    LEASE.as_millis() as i64
}

/// This process, as the claimant of reports: host name, process id and start time.
fn sender_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let started = testarena_store::now_ms();
    format!("{host}-{}-{started}", std::process::id())
}
