//! Commit statuses on Gitea for queues that came from a Gitea push: `pending` when a worker
//! takes the queue, the verdict when it ends. Sent in the background with retries and backoff;
//! the worker never waits for Gitea.

use std::time::Duration;
use testarena_core::gitea::{GiteaConfig, Origin};
use testarena_core::QueueStatus;

/// Tries per status before giving up.
const ATTEMPTS: u32 = 5;
/// First retry delay; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Sends commit statuses to one Gitea server.
#[derive(Clone, Debug)]
pub struct GiteaNotifier {
    client: reqwest::Client,
    url: String,
    token: String,
    public_url: String,
}

/// The Gitea state for a queue status (Gitea knows pending, success, error, failure, warning).
pub fn gitea_state(status: QueueStatus) -> &'static str {
    match status {
        QueueStatus::Waiting | QueueStatus::Running => "pending",
        QueueStatus::Passed => "success",
        QueueStatus::Failed => "failure",
        QueueStatus::Error | QueueStatus::Aborted => "error",
    }
}

impl GiteaNotifier {
    /// A notifier when `[gitea]` has a URL and a token; `None` otherwise.
    pub fn from_config(cfg: &GiteaConfig) -> Option<GiteaNotifier> {
        let url = cfg.url.as_deref()?.trim_end_matches('/').to_string();
        let token = cfg.token.clone().filter(|t| !t.is_empty())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_string();
        Some(GiteaNotifier {
            client,
            url,
            token,
            public_url,
        })
    }

    /// Sets the status of `sha` in the background; failures are logged, never returned.
    pub fn notify(
        &self,
        origin: &Origin,
        sha: &str,
        queue_id: i64,
        status: QueueStatus,
        description: &str,
    ) {
        let this = self.clone();
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
        tokio::spawn(async move {
            let mut delay = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                let sent = this
                    .client
                    .post(&path)
                    .header("Authorization", format!("token {}", this.token))
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => return,
                    // A 4xx other than rate limiting will not get better by retrying.
                    Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                        tracing::warn!(queue = queue_id, status = %r.status(), "Gitea refused the commit status");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(queue = queue_id, attempt, status = %r.status(), "Gitea status failed; retrying")
                    }
                    Err(e) => {
                        tracing::warn!(queue = queue_id, attempt, error = %e, "Gitea unreachable; retrying")
                    }
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            tracing::error!(queue = queue_id, "gave up setting the Gitea commit status");
        });
    }
}
