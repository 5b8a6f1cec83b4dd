//! Gitea settings: the `[gitea]` table of the config file (webhook secret, API access for
//! commit statuses, and which pushes make queues).

use serde::{Deserialize, Serialize};

/// `[gitea]`: webhook secret, API access for commit statuses, and which pushes make queues.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GiteaConfig {
    /// Shared secret of the webhook; `X-Gitea-Signature` is its HMAC-SHA256 of the body.
    #[serde(default)]
    pub secret: Option<String>,
    /// Base URL of the Gitea server, e.g. `https://gitea.example.com`.
    #[serde(default)]
    pub url: Option<String>,
    /// API token used to set commit statuses (`Authorization: token …`).
    #[serde(default)]
    pub token: Option<String>,
    /// This TestArena's public URL, for the status's link to the queue page.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Which pushes create queues.
    #[serde(default)]
    pub rules: Vec<GiteaRule>,
}

/// One rule: pushes to matching branches of this repository create a queue.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GiteaRule {
    /// Repository full name, `owner/name`.
    pub repo: String,
    /// Branch patterns (`*` matches any run of characters); default: every branch.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Scenario set name for the status context `testarena/<set>`; default `default`.
    #[serde(default)]
    pub set: Option<String>,
    /// Queue priority, 0..=9; default 5.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Clone from here instead of the payload's `clone_url` (e.g. an internal mirror).
    #[serde(default)]
    pub clone_url: Option<String>,
}

impl GiteaRule {
    /// Whether a push of `branch` to `repo` matches this rule.
    pub fn matches(&self, repo: &str, branch: &str) -> bool {
        self.repo.eq_ignore_ascii_case(repo)
            && (self.branches.is_empty() || self.branches.iter().any(|p| glob_match(p, branch)))
    }

    /// The status context of queues this rule makes.
    pub fn context(&self) -> String {
        format!("testarena/{}", self.set.as_deref().unwrap_or("default"))
    }
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainx"));
        assert!(glob_match("release/*", "release/1.2"));
        assert!(glob_match("*", "anything/at/all"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn rules() {
        let r = GiteaRule {
            repo: "Org/FW".into(),
            branches: vec!["main".into()],
            set: None,
            priority: None,
            clone_url: None,
        };
        assert!(r.matches("org/fw", "main"));
        assert!(!r.matches("org/fw", "dev"));
        assert_eq!(r.context(), "testarena/default");
    }
}
