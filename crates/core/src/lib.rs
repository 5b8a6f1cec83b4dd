//! Shared types of TestArena: ids, statuses and their allowed transitions, input validation and
//! configuration types. No I/O and no async: every other crate depends on this one.

pub mod api;
pub mod auth;
pub mod bisect;
pub mod history;
pub mod limits;
pub mod origin;
pub mod paths;
pub mod redact;
pub mod repo_config;
pub mod repo_url;
pub mod repro;
pub mod schema;
pub mod state;
pub mod validate;

pub use state::{CaseStatus, Phase, QueueStatus};
pub use validate::{NewQueue, ValidationError};

/// Parses a queue id as it appears in a URL path; anything that is not a positive decimal
/// number is `None`, so handlers answer 404 instead of asking the database.
pub fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty()
        || raw.len() > 18
        || !raw.bytes().all(|b| b.is_ascii_digit())
        || raw.starts_with('0')
    {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_positive_decimals() {
        assert_eq!(parse_id("42"), Some(42));
        for bad in [
            "",
            "0",
            "01",
            "-1",
            "1e3",
            "abc",
            "1;drop",
            "9999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
