//! The JSON Schema of what [`crate::validate`] accepts, for the OpenAPI document: the patterns,
//! lengths and counts of a queue request's fields, written to refuse what the checks refuse.
//! Where a rule cannot be a pattern (a local path must be under an allowed root, a host on
//! the allow-list), the pattern admits the shape and the description says the rest; the
//! server then answers `422 invalid_input`.

use crate::limits::{MAX_LABELS, MAX_LABEL_LEN, MAX_SCENARIOS};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// A repository: an `http(s)://`, `ssh://` or `git://` URL with a host, a `user@host:path`
/// URL, or an absolute local path (`file://` optional). Visible ASCII only, not starting
/// with `-` ([`crate::validate::check_repo`]).
pub const REPO_PATTERN: &str = concat!(
    r"^(?:",
    r"(?:https?|ssh|git)://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]*@)?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:[/?#][!-~]*)?",
    r"|(?:file://)?/[!-~]*",
    r"|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?:[!-~]+",
    r")$"
);

/// Longest repository, in bytes.
pub const REPO_MAX_LEN: usize = 2048;

/// A branch name as `git check-ref-format --branch` accepts it ([`crate::validate::check_branch`]):
/// not `-…` or `@`, no `..`, `@{`, `//`, leading or trailing `/`, trailing `.`, component
/// starting with `.` or ending with `.lock`, no space, control character or `~^:?*[\`.
pub const BRANCH_PATTERN: &str = concat!(
    r"^(?!-)(?!@$)(?!.*\.\.)(?!.*@\{)(?!.*//)(?!/)(?!.*/$)(?!.*\.$)(?!(?:.*/)?\.)",
    r"(?!.*\.lock(?:/|$))[^\x00-\x20\x7f~^:?*\[\\]+$"
);

/// Longest branch name, in bytes.
pub const BRANCH_MAX_LEN: usize = 255;

/// A scenario path ([`crate::validate::check_scenario_path`]): relative, no `..` component,
/// no control character, ending in `.xml`.
pub const SCENARIO_PATTERN: &str =
    r"^(?![/\\])(?!(?:.*[/\\])?\.\.(?:[/\\]|$))[^\x00-\x1f\x7f-\x9f]*\.xml$";

/// Longest scenario path, in bytes.
pub const SCENARIO_MAX_LEN: usize = 1024;

/// A worker label ([`crate::validate::check_label`]).
pub const LABEL_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]*$";

/// A queue name: no control characters (it is trimmed first; at most 200 characters after).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A full commit SHA.
pub const COMMIT_PATTERN: &str = r"^[0-9a-fA-F]{40}$";

/// The schema of `NewQueue.repo`.
pub fn repo() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(REPO_MAX_LEN))
        .pattern(Some(REPO_PATTERN))
        .description(Some(
            "Git URL (`https://`, `http://`, `ssh://`, `git://` with a host, or `user@host:path`; \
             the scheme in any case) or an absolute local path (`file://` optional), at most \
             2048 bytes. Refused with 422: a host not in the server's `allowed_hosts` (when \
             set), a link-local or cloud metadata host, and a local path unless it is under a \
             directory the server was started with `--allow-local-repos` for.",
        ))
}

/// The schema of `NewQueue.branch`.
pub fn branch() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(BRANCH_MAX_LEN))
        .pattern(Some(BRANCH_PATTERN))
        .description(Some(
            "Branch to test, as `git check-ref-format --branch` accepts it; at most 255 bytes.",
        ))
}

/// The schema of `NewQueue.scenarios`.
pub fn scenarios() -> impl Into<RefOr<Schema>> {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(SCENARIO_MAX_LEN))
        .pattern(Some(SCENARIO_PATTERN));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(item)
        .min_items(Some(1))
        .max_items(Some(MAX_SCENARIOS))
        .description(Some(
            "Scenario files, relative to the repository root (no `..`, `.xml`, at most 1024 \
             bytes each); null or absent runs the repository's default set.",
        ))
}

/// The schema of `NewQueue.labels`.
pub fn labels() -> impl Into<RefOr<Schema>> {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_LABEL_LEN))
        .pattern(Some(LABEL_PATTERN));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(item)
        .max_items(Some(MAX_LABELS))
        .description(Some(
            "Labels a worker must all have to run the queue (e.g. `esp32`); duplicates count once.",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{check_label, check_repo};

    /// The schema of `NewQueue` carries every limit, and refuses unknown fields as the
    /// server does.
    #[test]
    fn the_queue_request_schema_states_the_checks() {
        let schema =
            serde_json::to_value(<crate::NewQueue as utoipa::PartialSchema>::schema()).unwrap();
        let props = &schema["properties"];
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["repo", "branch"]));
        assert_eq!(props["repo"]["pattern"], REPO_PATTERN);
        assert_eq!(props["repo"]["maxLength"], REPO_MAX_LEN);
        assert_eq!(props["branch"]["pattern"], BRANCH_PATTERN);
        assert_eq!(props["branch"]["maxLength"], BRANCH_MAX_LEN);
        assert_eq!(props["scenarios"]["items"]["pattern"], SCENARIO_PATTERN);
        assert_eq!(props["scenarios"]["maxItems"], MAX_SCENARIOS);
        assert_eq!(props["scenarios"]["minItems"], 1);
        assert_eq!(props["labels"]["items"]["pattern"], LABEL_PATTERN);
        assert_eq!(props["labels"]["items"]["maxLength"], MAX_LABEL_LEN);
        assert_eq!(props["labels"]["maxItems"], MAX_LABELS);
        assert_eq!(props["name"]["pattern"], NAME_PATTERN);
        assert_eq!(props["name"]["maxLength"], crate::validate::MAX_NAME_CHARS);
        assert_eq!(props["commit"]["pattern"], COMMIT_PATTERN);
        assert_eq!(props["priority"]["minimum"], 0);
        assert_eq!(props["priority"]["maximum"], 9);
        assert_eq!(props["retries"]["minimum"], 0);
        assert_eq!(props["retries"]["maximum"], crate::limits::MAX_RETRIES);
    }

    /// The parts of the patterns the `regex` crate can run (it has no look-ahead): what they
    /// admit, the checks accept.
    #[test]
    fn what_the_simple_patterns_admit_the_checks_accept() {
        let label = regex::Regex::new(LABEL_PATTERN).unwrap();
        for l in ["esp32", "0", "a.b_c-d", "qemu-system-xtensa"] {
            assert!(label.is_match(l) && check_label(l).is_ok(), "{l}");
        }
        for l in ["", "-a", "A", "a b", ".a"] {
            assert!(!label.is_match(l) && check_label(l).is_err(), "{l}");
        }
        let repo = regex::Regex::new(REPO_PATTERN).unwrap();
        for r in [
            "https://git.example.com/a/b.git",
            "http://h:8080/x",
            "ssh://git@host/x",
            "git://h",
            "git@host:owner/repo.git",
            "https://u:p@h.example/x?y#z",
        ] {
            assert!(repo.is_match(r), "{r}");
            assert!(check_repo(r, &[]).is_ok(), "{r}");
        }
        for r in [
            "",
            "-u",
            "ftp://h/x",
            "https:///x",
            "https://:80/x",
            "host:path",
            "a b",
        ] {
            assert!(!repo.is_match(r), "{r}");
            assert!(check_repo(r, &[]).is_err(), "{r}");
        }
        // A local path has the shape, and is refused unless under an allowed root.
        assert!(repo.is_match("/srv/repos/x") && repo.is_match("file:///srv/repos/x"));
        assert!(check_repo("/srv/repos/x", &["/srv/repos".into()]).is_ok());
        assert!(check_repo("/srv/repos/x", &[]).is_err());
        let commit = regex::Regex::new(COMMIT_PATTERN).unwrap();
        assert!(commit.is_match(&"aB3".repeat(13).chars().chain(['0']).collect::<String>()));
        assert!(!commit.is_match(&"a".repeat(39)));
        let name = regex::Regex::new(NAME_PATTERN).unwrap();
        assert!(name.is_match("nightly: esp32 ✓") && !name.is_match("a\u{7}b"));
        // The look-ahead patterns (branch, scenario) are checked against the server by the API
        // fuzzer (tests/api-fuzz), which sends what they admit and expects it accepted.
    }
}
