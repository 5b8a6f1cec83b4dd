//! Rate limits: submits per caller, and anonymous archive downloads per client address, each a
//! keyed GCRA limiter (`governor`): a sustained rate with a burst. A request over its limit is
//! answered `429 rate_limited` with `Retry-After` (whole seconds, at least 1) and does nothing.
//!
//! - Submits (`POST /api/v1/queues`, `POST /api/v1/queues/{id}/rerun`) count per caller key
//!   (the digest of the caller's token); anonymous submits (possible only with auth off) are
//!   not limited.
//! - `GET /api/v1/queues/{id}/archive` and `GET /api/v1/queues/{id}/cases/{case}/repro` (each
//!   builds a tar.gz) without a token count per client IP, in one budget:
//!   the TCP peer's address. Behind a reverse proxy every request comes from the proxy's
//!   address, so they share one budget; `X-Forwarded-For` is not trusted.
//! - Nothing else is limited: the list, detail and log routes are cheap and hot.
//!
//! Memory stays bounded: every [`SWEEP_EVERY`] the limiters forget keys whose budget is full
//! again (they would start afresh anyway).

use crate::caller_key::caller_key;
use crate::error::error_response;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rate limit: `per_second` requests sustained, up to `burst` at once; `per_second` 0 = no
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained; 0 = no limit.
    pub per_second: u32,
    /// Requests allowed at once (the bucket's size); 0 = the same as `per_second`.
    pub burst: u32,
}

impl Rate {
    /// No limit at all.
    pub const OFF: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    /// The limiter's quota; `None` for no limit.
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// Submits per caller unless configured otherwise: 10 a second, 200 at once.
pub const DEFAULT_SUBMIT_RATE: Rate = Rate {
    per_second: 10,
    burst: 200,
};
/// Anonymous archive downloads per client address unless configured otherwise: 2 a second,
/// 20 at once.
pub const DEFAULT_ARCHIVE_RATE: Rate = Rate {
    per_second: 2,
    burst: 20,
};

/// How often keys with a full budget are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The route patterns limited (as axum's `MatchedPath` gives them).
const SUBMIT_ROUTE: &str = "/api/v1/queues";
const RERUN_ROUTE: &str = "/api/v1/queues/{id}/rerun";
const ARCHIVE_ROUTE: &str = "/api/v1/queues/{id}/archive";
/// A repro bundle is a tar.gz too: it counts with the archives.
const REPRO_ROUTE: &str = "/api/v1/queues/{id}/cases/{case}/repro";

/// The server's limiters.
pub(crate) struct RateLimits {
    submits: Option<DefaultKeyedRateLimiter<String>>,
    archives: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Start of the clock of `swept`.
    epoch: Instant,
    /// When (ms after `epoch`) idle keys were last forgotten.
    swept: AtomicU64,
}

impl RateLimits {
    /// Limiters for submits per caller and anonymous archives per address.
    pub(crate) fn new(submits: Rate, archives: Rate) -> RateLimits {
        RateLimits {
            submits: submits.quota().map(DefaultKeyedRateLimiter::dashmap),
            archives: archives.quota().map(DefaultKeyedRateLimiter::dashmap),
            epoch: Instant::now(),
            swept: AtomicU64::new(0),
        }
    }

    /// How long `req` must wait if it is over its limit; `None` if it may go on (and then it
    /// counts).
    fn check(&self, req: &Request) -> Option<Duration> {
        let route = req.extensions().get::<MatchedPath>()?.as_str();
        let method = req.method();
        let wait = if *method == Method::POST && (route == SUBMIT_ROUTE || route == RERUN_ROUTE) {
            let key = caller_key(req.headers())?;
            over(self.submits.as_ref()?, &key)
        } else if *method == Method::GET && (route == ARCHIVE_ROUTE || route == REPRO_ROUTE) {
            if caller_key(req.headers()).is_some() {
                return None;
            }
            // Always there when served by `conn::serve`; a router called in-process without
            // it has no client address to count by.
            let ConnectInfo(peer) = req.extensions().get::<ConnectInfo<SocketAddr>>()?;
            over(self.archives.as_ref()?, &peer.ip())
        } else {
            return None;
        };
        self.sweep_now_and_then();
        wait
    }

    /// Forgets the keys whose budget is full again, at most once per [`SWEEP_EVERY`].
    fn sweep_now_and_then(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.swept.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64 {
            return;
        }
        if self
            .swept
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another request sweeps
        }
        if let Some(l) = &self.submits {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.archives {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys kept now (for tests of the sweep).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.submits.as_ref().map_or(0, |l| l.len()) + self.archives.as_ref().map_or(0, |l| l.len())
    }
}

/// How long `key` must wait under `limiter`; `None` if it may go on now (counted).
fn over<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Option<Duration> {
    use governor::clock::Clock;
    match limiter.check_key(key) {
        Ok(()) => None,
        Err(not_until) => Some(not_until.wait_time_from(limiter.clock().now())),
    }
}

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Middleware: answers `429 rate_limited` with `Retry-After` to a request over its limit.
pub(crate) async fn limit(
    State(limits): State<Arc<RateLimits>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(wait) = limits.check(&req) else {
        return next.run(req).await;
    };
    let secs = retry_after_secs(wait);
    let mut resp = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; try again in {secs} s"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn a_zero_rate_is_no_limit_and_a_zero_burst_is_the_rate() {
        assert!(Rate::OFF.quota().is_none());
        let q = Rate {
            per_second: 5,
            burst: 0,
        }
        .quota()
        .unwrap();
        assert_eq!(q.burst_size().get(), 5);
        assert_eq!(DEFAULT_SUBMIT_RATE.quota().unwrap().burst_size().get(), 200);
    }

    #[test]
    fn keys_with_a_full_budget_are_forgotten() {
        let limits = RateLimits::new(
            Rate {
                per_second: 1000,
                burst: 1,
            },
            Rate::OFF,
        );
        let submits = limits.submits.as_ref().unwrap();
        for i in 0..100 {
            assert_eq!(over(submits, &format!("caller-{i}")), None);
        }
        assert_eq!(limits.keys(), 100);
        std::thread::sleep(Duration::from_millis(20));
        // Not yet time to sweep.
        limits.sweep_now_and_then();
        assert_eq!(limits.keys(), 100);
        limits.swept.store(0, Ordering::Relaxed);
        let long_ago = limits.epoch.elapsed() + SWEEP_EVERY;
        let limits = RateLimits {
            epoch: Instant::now() - long_ago,
            ..limits
        };
        limits.sweep_now_and_then();
        assert_eq!(limits.keys(), 0);
    }
}
