//! Calls tried again: after a `429` (any call: the server did nothing), and for a submit with
//! an `Idempotency-Key` also after a lost answer or a server in trouble (the server makes a
//! keyed submit at most once), with the server's `Retry-After` or a doubling pause.

use crate::{Client, ClientError};
use reqwest::{RequestBuilder, Response};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How often a call is tried again (see the crate's documentation) unless the builder says
/// otherwise.
pub const DEFAULT_RETRIES: u32 = 4;
/// The pause before the first retry without a `Retry-After`; it doubles with every retry.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between retries without a `Retry-After`.
pub const MAX_PAUSE: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited for; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// A retry the client is about to make, for [`ClientBuilder::on_retry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNotice {
    /// What is tried again (`POST /api/v1/queues`).
    pub call: String,
    /// Why: what the last try met.
    pub reason: String,
    /// How long the client waits before the next try.
    pub wait: Duration,
    /// The number of the retry to come (1 for the first).
    pub retry: u32,
    /// Retries allowed in all.
    pub of: u32,
}

/// Which failures a call is tried again after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retrying {
    /// `429` only: the server did nothing, whatever the call.
    RateLimited,
    /// Also a lost answer or a server in trouble (502, 503, 504): for a submit with an
    /// `Idempotency-Key`, which the server makes at most once.
    Keyed,
}

/// What is told of every retry.
#[derive(Clone)]
pub(crate) struct RetryHook(pub(crate) Arc<dyn Fn(&RetryNotice) + Send + Sync>);

impl fmt::Debug for RetryHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryHook")
    }
}

impl Client {
    /// Sends a request, and again after the failures `retrying` allows (at most
    /// `self.retries` times), with a pause: the server's `Retry-After`, else a doubling one.
    pub(crate) async fn send_retrying(
        &self,
        rb: RequestBuilder,
        retrying: Retrying,
    ) -> Result<Response, ClientError> {
        let mut retry = 0;
        let mut rb = rb;
        loop {
            // A body that cannot be cloned (a stream) cannot be sent twice: one try only.
            let again = rb.try_clone();
            let call = again.as_ref().and_then(|r| r.try_clone()?.build().ok());
            let (error, retry_after) = match self.try_send(rb).await {
                Ok(resp) => return Ok(resp),
                Err(failure) => failure,
            };
            let wait = match (again, call) {
                (Some(next), Some(call)) if retry < self.retries => {
                    match retry_wait(&error, retry_after, retrying, retry) {
                        Some(wait) => {
                            retry += 1;
                            self.notify(&call, &error, wait, retry);
                            rb = next;
                            wait
                        }
                        None => return Err(error),
                    }
                }
                _ => return Err(error),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One try: the answer if it is a success, else the error and the server's `Retry-After`.
    async fn try_send(
        &self,
        rb: RequestBuilder,
    ) -> Result<Response, (ClientError, Option<Duration>)> {
        let resp = rb.send().await.map_err(|e| (self.transport(e), None))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.unwrap_or_default();
        Err((ClientError::from_answer(status, &body), retry_after))
    }

    /// Tells the retry hook (if any) of a retry of `call` after `error`.
    fn notify(&self, call: &reqwest::Request, error: &ClientError, wait: Duration, retry: u32) {
        if let Some(RetryHook(hook)) = &self.on_retry {
            hook(&RetryNotice {
                call: format!("{} {}", call.method(), call.url().path()),
                reason: error.to_string(),
                wait,
                retry,
                of: self.retries,
            });
        }
    }
}

/// How long to wait before retry number `retry + 1` after `error`, if `retrying` allows one:
/// the server's `Retry-After` (at most [`MAX_RETRY_AFTER`]) if it gave one, else a pause that
/// doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`].
pub(crate) fn retry_wait(
    error: &ClientError,
    retry_after: Option<Duration>,
    retrying: Retrying,
    retry: u32,
) -> Option<Duration> {
    let backoff = FIRST_PAUSE
        .saturating_mul(1u32 << retry.min(16))
        .min(MAX_PAUSE);
    let keyed = retrying == Retrying::Keyed;
    match error {
        ClientError::Api { status: 429, .. } => {}
        ClientError::Api {
            status: 502..=504, ..
        } if keyed => {}
        ClientError::Transport { .. } if keyed => {}
        _ => return None,
    }
    Some(retry_after.map_or(backoff, |w| w.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried_and_after_how_long() {
        let api = |status: u16| ClientError::Api {
            status,
            code: "x".into(),
            message: "x".into(),
        };
        let secs = Duration::from_secs;
        // 429: whatever the call, after its Retry-After (cut to a minute).
        for retrying in [Retrying::RateLimited, Retrying::Keyed] {
            assert_eq!(
                retry_wait(&api(429), Some(secs(3)), retrying, 0),
                Some(secs(3))
            );
            assert_eq!(
                retry_wait(&api(429), Some(secs(3600)), retrying, 0),
                Some(MAX_RETRY_AFTER)
            );
        }
        // A server in trouble: only a keyed submit, doubling pauses unless told.
        assert_eq!(retry_wait(&api(503), None, Retrying::RateLimited, 0), None);
        assert_eq!(
            retry_wait(&api(503), Some(secs(1)), Retrying::Keyed, 3),
            Some(secs(1))
        );
        let pauses: Vec<_> = (0..6)
            .map(|n| retry_wait(&api(502), None, Retrying::Keyed, n).unwrap())
            .collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(pauses[5], MAX_PAUSE);
        assert_eq!(
            retry_wait(&api(504), None, Retrying::Keyed, 40),
            Some(MAX_PAUSE)
        );
        // Refusals are final.
        for status in [400, 404, 409, 422, 500] {
            assert_eq!(
                retry_wait(&api(status), None, Retrying::Keyed, 0),
                None,
                "{status}"
            );
        }
    }
}
