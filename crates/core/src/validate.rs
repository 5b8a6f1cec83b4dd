//! Checks on what a client submits. Every rejection names the field it is about.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Most characters a queue name may have.
pub const MAX_NAME_CHARS: usize = 200;
/// Default priority of a queue (0..=9, higher runs first).
pub const DEFAULT_PRIORITY: i64 = 5;
pub use crate::limits::{MAX_LABELS, MAX_LABEL_LEN, MAX_RETRIES, MAX_SCENARIOS};
pub use pattern::{
    check_pattern, compile_pattern, CheckedPattern, PatternError, PATTERN_LINE_BYTES,
    PATTERN_SIZE_LIMIT, PATTERN_TIME_LIMIT,
};

mod pattern;

/// A rejected input: which field, and why, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The JSON field the problem is in.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A rejection of `field` with `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of `POST /api/v1/queues`, as sent.
// Its OpenAPI schema (the attributes, and `crate::schema`) states the checks of `validate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    /// Git URL or an allowed local path.
    #[schema(schema_with = crate::schema::repo)]
    pub repo: String,
    /// Branch to test.
    #[schema(schema_with = crate::schema::branch)]
    pub branch: String,
    /// Scenario files in the repository; `None` means the repository's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::scenarios)]
    pub scenarios: Option<Vec<String>>,
    /// Display name; defaults to `branch`. Trimmed; at most 200 characters, no control
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub name: Option<String>,
    /// 0..=9, higher runs first; 5 when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral"
    )]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
    /// Exact commit to test instead of the branch head: a full 40-character SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-fA-F]{40}$")]
    pub commit: Option<String>,
    /// Labels a worker must all have to run the queue (e.g. `esp32`); at most 16, each
    /// `[a-z0-9][a-z0-9._-]*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Option<Vec<String>>,
    /// Build even when the worker holds a cached build of the same commit, build command and
    /// build configuration (and refresh that cache entry). Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// How many times a failed test case is tried again, 0..=5, for the cases whose scenario
    /// does not say (`<testcase retries>` and `<scenario retries>` win). Default: 0.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integral"
    )]
    #[schema(minimum = 0, maximum = 5)]
    pub retries: Option<i64>,
}

/// An optional integer that may also be written as a number with no fraction (`6.0`): JSON
/// has one number type, and JSON Schema's `integer` admits both spellings.
pub(crate) fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error, Unexpected};
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if let Some(u) = n.as_u64() {
        return Err(D::Error::invalid_value(
            Unexpected::Unsigned(u),
            &"an integer of at most 2^63-1",
        ));
    }
    // Within ±2^53 every integer is exact as a float, and the range check uses no rounding.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Ok(Some(f as i64)),
        Some(f) => Err(D::Error::invalid_value(Unexpected::Float(f), &"an integer")),
        None => Err(D::Error::invalid_type(
            Unexpected::Other("number"),
            &"an integer",
        )),
    }
}

/// A queue request that passed every check, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidQueue {
    pub repo: String,
    pub branch: String,
    pub scenarios: Option<Vec<String>>,
    pub name: String,
    pub priority: i64,
    pub commit: Option<String>,
    /// Only these cases of these scenarios run (a re-run of failed cases); `None` runs all.
    pub case_filter: Option<BTreeMap<String, Vec<String>>>,
    /// Where the queue came from (a Gitea push), for reporting back.
    pub origin: Option<crate::origin::Origin>,
    /// Labels a worker must all have to claim it (sorted, no duplicates); empty: any worker.
    pub labels: Vec<String>,
    /// Build even when the worker's build cache holds this build.
    pub no_cache: bool,
    /// How many times a failed case is tried again when its scenario does not say.
    pub retries: u8,
}

impl NewQueue {
    /// A request for `branch` of `repo` with every optional field left to its default.
    pub fn new(repo: impl Into<String>, branch: impl Into<String>) -> Self {
        Self {
            repo: repo.into(),
            branch: branch.into(),
            ..Self::default()
        }
    }

    /// Checks every field; `allowed_roots` are the directories local repositories may live under.
    pub fn validate(self, allowed_roots: &[PathBuf]) -> Result<ValidQueue, ValidationError> {
        let repo = check_repo(&self.repo, allowed_roots)?;
        check_branch(&self.branch).map_err(|m| ValidationError::new("branch", m))?;
        let scenarios = match self.scenarios {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(ValidationError::new(
                        "scenarios",
                        "must not be an empty list (omit it to run the repository's default scenarios)",
                    ));
                }
                if list.len() > MAX_SCENARIOS {
                    return Err(ValidationError::new(
                        "scenarios",
                        format!("at most {MAX_SCENARIOS} files"),
                    ));
                }
                for (i, s) in list.iter().enumerate() {
                    check_scenario_path(s)
                        .map_err(|m| ValidationError::new(format!("scenarios[{i}]"), m))?;
                }
                Some(list)
            }
        };
        let name = match self.name {
            Some(n) => {
                let n = n.trim().to_string();
                if n.chars().count() > MAX_NAME_CHARS {
                    return Err(ValidationError::new(
                        "name",
                        format!("must be at most {MAX_NAME_CHARS} characters"),
                    ));
                }
                if n.chars().any(char::is_control) {
                    return Err(ValidationError::new(
                        "name",
                        "must not contain control characters",
                    ));
                }
                if n.is_empty() {
                    self.branch.clone()
                } else {
                    n
                }
            }
            None => self.branch.clone(),
        };
        let priority = self.priority.unwrap_or(DEFAULT_PRIORITY);
        if !(0..=9).contains(&priority) {
            return Err(ValidationError::new(
                "priority",
                format!("must be between 0 and 9, got {priority}"),
            ));
        }
        let commit = match self.commit {
            Some(c) => {
                if c.len() != 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ValidationError::new(
                        "commit",
                        "must be a full 40-character hexadecimal commit SHA",
                    ));
                }
                Some(c.to_ascii_lowercase())
            }
            None => None,
        };
        Ok(ValidQueue {
            repo,
            branch: self.branch,
            scenarios,
            name,
            priority,
            commit,
            case_filter: None,
            origin: None,
            labels: check_labels(self.labels.unwrap_or_default())?,
            no_cache: self.no_cache,
            retries: check_retries(self.retries)?,
        })
    }
}

/// Checks a queue's `retries` (0..=[`MAX_RETRIES`]; absent: 0).
pub fn check_retries(retries: Option<i64>) -> Result<u8, ValidationError> {
    let n = retries.unwrap_or(0);
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_RETRIES)
        .ok_or_else(|| {
            ValidationError::new(
                "retries",
                format!(
                    "must be between 0 and {MAX_RETRIES} (how many times a failed case is tried again), got {n}"
                ),
            )
        })
}

/// Checks a queue's labels; returns them sorted without duplicates.
pub fn check_labels(labels: Vec<String>) -> Result<Vec<String>, ValidationError> {
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::new(
            "labels",
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        check_label(l).map_err(|m| ValidationError::new(format!("labels[{i}]"), m))?;
    }
    let mut labels = labels;
    labels.sort();
    labels.dedup();
    Ok(labels)
}

/// Checks one label: `[a-z0-9][a-z0-9._-]*`, at most 64 bytes.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("must not be empty".into());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!("must be at most {MAX_LABEL_LEN} bytes"));
    }
    let ok_first = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    if !ok_first(bytes[0])
        || !bytes[1..]
            .iter()
            .all(|&b| ok_first(b) || b"._-".contains(&b))
    {
        return Err(format!(
            "'{}' is not a label: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
            label.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a branch name by the rules of `git check-ref-format --branch`.
pub fn check_branch(branch: &str) -> Result<(), String> {
    if branch.is_empty() {
        return Err("must not be empty".into());
    }
    if branch.len() > 255 {
        return Err("must be at most 255 bytes".into());
    }
    if branch.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    if branch == "@" {
        return Err("must not be '@'".into());
    }
    if branch.contains("..") {
        return Err("must not contain '..'".into());
    }
    if branch.contains("@{") {
        return Err("must not contain '@{'".into());
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_ascii_control() || " ~^:?*[\\".contains(*c))
    {
        return Err(format!(
            "must not contain {c:?} (git refuses spaces, control characters and ~^:?*[\\)"
        ));
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.contains("//") {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    if branch.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    for part in branch.split('/') {
        if part.starts_with('.') {
            return Err("no path component may start with '.'".into());
        }
        if part.ends_with(".lock") {
            return Err("no path component may end with '.lock'".into());
        }
    }
    Ok(())
}

/// Checks a scenario path: relative, inside the repository, an `.xml` file.
pub fn check_scenario_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.len() > 1024 {
        return Err("must be at most 1024 bytes".into());
    }
    if path.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    if path.starts_with('/') || path.starts_with('\\') || Path::new(path).is_absolute() {
        return Err(format!(
            "must be relative to the repository root, got absolute path '{path}'"
        ));
    }
    if path.split(['/', '\\']).any(|p| p == "..") {
        return Err(format!("must not contain '..' ('{path}')"));
    }
    if !path.ends_with(".xml") {
        return Err(format!("must be an .xml file, got '{path}'"));
    }
    Ok(())
}

/// Checks a repository: a remote git URL, or a local path (or `file://` URL) under an allowed
/// root. Returns it normalised (local paths without `file://`).
pub fn check_repo(repo: &str, allowed_roots: &[PathBuf]) -> Result<String, ValidationError> {
    let err = |m: String| ValidationError::new("repo", m);
    let repo = repo.trim();
    if repo.is_empty() {
        return Err(err("must not be empty".into()));
    }
    if repo.len() > 2048 {
        return Err(err("must be at most 2048 bytes".into()));
    }
    if repo.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err("must not contain spaces or control characters".into()));
    }
    if repo.starts_with('-') {
        return Err(err("must not start with '-'".into()));
    }
    let lower = repo.to_ascii_lowercase();
    for scheme in ["http://", "https://", "ssh://", "git://"] {
        if lower.starts_with(scheme) {
            let rest = &repo[scheme.len()..];
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or("");
            if host.is_empty() || host.starts_with(':') {
                return Err(err(format!("'{repo}' has no host")));
            }
            crate::repo_url::check_repo_host(repo, &[]).map_err(err)?;
            return Ok(repo.to_string());
        }
    }
    if let Some(path) = lower.strip_prefix("file://").map(|_| &repo[7..]) {
        return check_local(path, allowed_roots).map_err(err);
    }
    if repo.starts_with('/') {
        return check_local(repo, allowed_roots).map_err(err);
    }
    // scp-like ssh syntax: user@host:path
    if let Some((userhost, path)) = repo.split_once(':') {
        if userhost.contains('@')
            && !userhost.contains('/')
            && !path.is_empty()
            && !userhost.ends_with('@')
        {
            crate::repo_url::check_repo_host(repo, &[]).map_err(err)?;
            return Ok(repo.to_string());
        }
    }
    Err(err(format!(
        "'{repo}' is neither an http(s)://, ssh://, git:// or user@host:path URL nor an absolute local path"
    )))
}

fn check_local(path: &str, allowed_roots: &[PathBuf]) -> Result<String, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("local path '{path}' must be absolute"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("local path '{path}' must not contain '..'"));
    }
    if allowed_roots.is_empty() {
        return Err(format!(
            "local repositories are disabled on this server; '{path}' refused (start it with --allow-local-repos DIR)"
        ));
    }
    if !allowed_roots.iter().any(|root| p.starts_with(root)) {
        return Err(format!(
            "local path '{path}' is not under an allowed root (see --allow-local-repos)"
        ));
    }
    let normal: PathBuf = p.components().collect();
    Ok(normal.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
