//! Limits several crates (and the dashboard) must agree on, each defined once here.

use std::time::Duration;

/// Most scenario files one queue may name (the check, and the API's schema).
pub const MAX_SCENARIOS: usize = 1000;
/// Most labels one queue may ask for.
pub const MAX_LABELS: usize = 16;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// Most times a failed test case is tried again (`retries` of a queue, a `<scenario>` or a
/// `<testcase>`): at most this many re-runs after its first try.
pub const MAX_RETRIES: u8 = 5;

/// Longest console or build output line kept whole, in bytes: a longer one is cut into pieces
/// of this size, and scenario patterns are timed against a worst-case line this long.
pub const MAX_LINE: usize = 64 * 1024;

/// Most bytes one read of a log returns (`GET /api/v1/queues/{id}/log`); the CLI and the
/// dashboard follow a log in chunks of this size.
pub const LOG_CHUNK: u64 = 1024 * 1024;

/// A worker counts as alive while its last heartbeat is younger than this: `GET
/// /api/v1/workers`, the metrics and the dashboard list it, and a worker whose heartbeat is
/// older is taken for dead (its process groups are killed).
pub const WORKER_ALIVE: Duration = Duration::from_secs(60);

/// [`WORKER_ALIVE`] in milliseconds, as the store compares heartbeats.
pub const WORKER_ALIVE_MS: i64 = WORKER_ALIVE.as_millis() as i64;

/// Claims of one queue before it is given up as `error`: a queue whose lease ran out, or that
/// was handed back after the database failed it for now, waits again only this often.
pub const MAX_QUEUE_ATTEMPTS: i64 = 3;

#[cfg(test)]
mod tests {
    #[test]
    fn the_worker_window_in_milliseconds_matches() {
        assert_eq!(super::WORKER_ALIVE_MS, 60_000);
    }
}
