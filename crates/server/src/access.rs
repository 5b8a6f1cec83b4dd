//! The server's auth settings, and what a server process remembers of the tokens it saw (kept
//! apart from the middleware in `auth`, so the shared state can hold them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testarena_core::auth::AuthMode;

/// How often at most a token's `last_used_at` is written, per token and server process.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// How the server checks callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `Required`: tokens are checked; `Off`: nothing is (a valid token still names the
    /// submitter).
    pub mode: AuthMode,
    /// With `Required`: whether reading (GET/HEAD) needs no token.
    pub anonymous_read: bool,
}

impl Default for AuthConfig {
    /// Nothing checked: what a server on loopback does unless told otherwise.
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Off,
            anonymous_read: true,
        }
    }
}

/// When each token was last recorded as used by this process.
#[derive(Debug, Default)]
pub(crate) struct LastUsed(Mutex<HashMap<i64, Instant>>);

impl LastUsed {
    /// Whether token `id`'s use should be written now (and notes that it is).
    pub(crate) fn due(&self, id: i64) -> bool {
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(&id) {
            Some(at) if now.duration_since(*at) < TOUCH_EVERY => false,
            _ => {
                seen.insert(id, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_recorded_at_most_once_a_minute() {
        let l = LastUsed::default();
        assert!(l.due(1));
        assert!(!l.due(1));
        assert!(l.due(2));
    }
}
