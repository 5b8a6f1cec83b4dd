//! Checks on what a client submits. Every rejection names the field it is about.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Most characters a queue name may have.
pub const MAX_NAME_CHARS: usize = 200;
/// Most scenario files one queue may name.
pub const MAX_SCENARIOS: usize = 1000;
/// Default priority of a queue (0..=9, higher runs first).
pub const DEFAULT_PRIORITY: i64 = 5;

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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    /// Git URL or an allowed local path.
    pub repo: String,
    /// Branch to test.
    pub branch: String,
    /// Scenario files in the repository; `None` means the repository's default set.
    #[serde(default)]
    pub scenarios: Option<Vec<String>>,
    /// Display name; defaults to `branch`.
    #[serde(default)]
    pub name: Option<String>,
    /// 0..=9, higher runs first.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
    /// Exact commit to test instead of the branch head.
    #[serde(default)]
    pub commit: Option<String>,
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
    pub origin: Option<crate::gitea::Origin>,
}

impl NewQueue {
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
        })
    }
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
mod tests {
    use super::*;

    fn q(repo: &str, branch: &str) -> NewQueue {
        NewQueue {
            repo: repo.into(),
            branch: branch.into(),
            scenarios: None,
            name: None,
            priority: None,
            commit: None,
        }
    }

    #[test]
    fn good_branches_pass() {
        for b in ["main", "feature/x-1", "release/v1.2", "a@b", "user/ünïcode"] {
            assert_eq!(check_branch(b), Ok(()), "{b}");
        }
    }

    #[test]
    fn git_refused_branches_fail() {
        for b in [
            "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "@",
            "a/", "/a", "a//b", ".a", "a/.b", "a.lock", "a.", "a\tb",
        ] {
            assert!(check_branch(b).is_err(), "{b:?}");
        }
    }

    #[test]
    fn scenario_paths() {
        assert!(check_scenario_path("scenarios/smoke.xml").is_ok());
        for p in [
            "/etc/x.xml",
            "../x.xml",
            "a/../../x.xml",
            "a\0.xml",
            "a.txt",
            "",
            "a/b",
        ] {
            assert!(check_scenario_path(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn repos() {
        let roots = vec![PathBuf::from("/srv/git")];
        for r in [
            "https://example.com/a.git",
            "http://h/a",
            "ssh://git@h/a",
            "git://h/a",
            "git@github.com:o/r.git",
        ] {
            assert!(check_repo(r, &roots).is_ok(), "{r}");
        }
        assert_eq!(
            check_repo("file:///srv/git/a", &roots).unwrap(),
            "/srv/git/a"
        );
        assert_eq!(check_repo("/srv/git/a/", &roots).unwrap(), "/srv/git/a");
        for r in [
            "",
            "ftp://h/a",
            "relative/path",
            "/etc/passwd",
            "/srv/git/../etc",
            "file:///tmp/x",
            "-uhttps://x",
            "https://",
            "a b",
        ] {
            assert!(check_repo(r, &roots).is_err(), "{r:?}");
        }
        assert!(check_repo("/srv/git/a", &[])
            .unwrap_err()
            .message
            .contains("--allow-local-repos"));
        // "/srv/gitx" must not pass as being under "/srv/git".
        assert!(check_repo("/srv/gitx/a", &roots).is_err());
    }

    #[test]
    fn whole_queue() {
        let v = q("https://h/r.git", "main").validate(&[]).unwrap();
        assert_eq!((v.priority, v.name.as_str()), (5, "main"));
        let mut bad = q("https://h/r.git", "main");
        bad.scenarios = Some(vec![]);
        assert_eq!(bad.validate(&[]).unwrap_err().field, "scenarios");
        let mut bad = q("https://h/r.git", "main");
        bad.priority = Some(10);
        assert_eq!(bad.validate(&[]).unwrap_err().field, "priority");
        let mut bad = q("https://h/r.git", "main");
        bad.commit = Some("abc".into());
        assert_eq!(bad.validate(&[]).unwrap_err().field, "commit");
        let mut bad = q("https://h/r.git", "main");
        bad.name = Some("x".repeat(201));
        assert_eq!(bad.validate(&[]).unwrap_err().field, "name");
        let mut bad = q("https://h/r.git", "main");
        bad.scenarios = Some(vec!["ok.xml".into(), "../x.xml".into()]);
        assert_eq!(bad.validate(&[]).unwrap_err().field, "scenarios[1]");
    }
}
