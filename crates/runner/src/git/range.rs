//! What a bisect needs of a mirror: its two ends resolved to commits, whether one is an
//! ancestor of the other, and the commits between them with their subjects and authors.

use super::*;
use testarena_core::bisect::{cut, BisectCommit, MAX_COMMIT_TEXT};

/// The `git log` format of one commit: SHA, author, subject, separated by a byte no subject
/// has (the unit separator).
const COMMIT_FORMAT: &str = "--format=%H%x1f%an <%ae>%x1f%s";

impl MirrorCache {
    /// Resolves a revision as a bisect names it: a branch, else a tag, else (4 to 40 hex
    /// digits) a commit SHA or its abbreviation. Returns the full SHA; `None` when the
    /// repository has no such revision.
    pub async fn resolve_rev(
        &self,
        mirror: &Path,
        rev: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, GitError> {
        // Checked again here: the revision must be neither an option nor revision syntax.
        if !is_plain_branch(rev) || testarena_core::bisect::check_rev(rev).is_err() {
            return Err(GitError::Invalid(format!(
                "'{}' is not a revision a bisect takes",
                shorten(rev)
            )));
        }
        let mut candidates = vec![format!("refs/heads/{rev}"), format!("refs/tags/{rev}")];
        if is_hex(rev, 4, 40) {
            candidates.insert(0, rev.to_string());
        }
        let ctx = quick(cancel);
        for candidate in candidates {
            let args = vec![
                git_dir(mirror)?,
                "rev-parse".into(),
                "--verify".into(),
                "--quiet".into(),
                format!("{candidate}^{{commit}}"),
            ];
            match ctx.git("resolving a revision", args, None).await {
                Ok(lines) => {
                    if let Some(sha) = lines.iter().map(|l| l.trim()).find(|l| is_hex(l, 40, 64)) {
                        return Ok(Some(sha.to_string()));
                    }
                }
                Err(GitError::Command { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether commit `ancestor` is an ancestor of commit `of` (or the same commit).
    pub async fn is_ancestor(
        &self,
        mirror: &Path,
        ancestor: &str,
        of: &str,
        cancel: &CancellationToken,
    ) -> Result<bool, GitError> {
        full_sha(ancestor)?;
        full_sha(of)?;
        let args = vec![
            git_dir(mirror)?,
            "merge-base".into(),
            "--is-ancestor".into(),
            ancestor.to_string(),
            of.to_string(),
        ];
        match quick(cancel).git("comparing commits", args, None).await {
            Ok(_) => Ok(true),
            Err(GitError::Command { code: 1, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The commits from `good` to `bad` (both full SHAs, `good` an ancestor of `bad`), oldest
    /// first, `good` first and `bad` last: the first-parent line from `bad` back to `good`, as
    /// `git bisect --first-parent` walks it (a merge is one step), without the commits on it
    /// that do not contain `good` (when `good` came in by a merge, the line before that merge).
    /// So each commit is an ancestor of the next and a descendant of `good`. Subjects and
    /// authors are cut to [`MAX_COMMIT_TEXT`] characters. `Ok(None)` when the line has more
    /// than `max` commits after `good`.
    pub async fn commit_range(
        &self,
        mirror: &Path,
        good: &str,
        bad: &str,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<BisectCommit>>, GitError> {
        full_sha(good)?;
        full_sha(bad)?;
        let ctx = quick(cancel);
        let mut start = log(&ctx, mirror, &["-1".into(), good.to_string()]).await?;
        let Some(good_commit) = start.pop() else {
            return Err(GitError::CommitNotFound {
                commit: good.to_string(),
                url: mirror.display().to_string(),
            });
        };
        let between = format!("{good}..{bad}");
        // The newest `max + 1` only: one more than allowed says the range is too long.
        let line = log(
            &ctx,
            mirror,
            &[
                "--first-parent".into(),
                format!("--max-count={}", max.saturating_add(1)),
                between.clone(),
            ],
        )
        .await?;
        if line.len() > max {
            return Ok(None);
        }
        let descendants = descendants(&ctx, mirror, &between).await?;
        let mut commits = vec![good_commit];
        commits.extend(
            line.into_iter()
                .rev()
                .filter(|c| descendants.contains(&c.commit)),
        );
        Ok(Some(commits))
    }
}

/// Limits of the quick local commands of a bisect.
fn quick(cancel: &CancellationToken) -> Ctx<'_> {
    Ctx {
        deadline: Instant::now() + RESOLVE_TIMEOUT,
        timeout: RESOLVE_TIMEOUT,
        cancel,
    }
}

fn git_dir(mirror: &Path) -> Result<String, GitError> {
    Ok(format!("--git-dir={}", path_arg(mirror)?))
}

/// Refuses anything but a full SHA (what `is_ancestor` and `commit_range` are given).
fn full_sha(sha: &str) -> Result<(), GitError> {
    if is_hex(sha, 40, 64) {
        Ok(())
    } else {
        Err(GitError::Invalid(format!(
            "'{}' is not a full commit SHA",
            shorten(sha)
        )))
    }
}

/// `git log <args>` in [`COMMIT_FORMAT`], newest first, every line kept.
async fn log(ctx: &Ctx<'_>, mirror: &Path, args: &[String]) -> Result<Vec<BisectCommit>, GitError> {
    let mut commits = Vec::new();
    let mut collect = |l: &[u8]| {
        if let Some(c) = parse_commit(&String::from_utf8_lossy(l)) {
            commits.push(c);
        }
    };
    let mut all = vec![git_dir(mirror)?, "log".into(), COMMIT_FORMAT.into()];
    all.extend(args.iter().cloned());
    // Nothing after this is a path.
    all.push("--".into());
    ctx.git("listing commits", all, Some(&mut collect)).await?;
    Ok(commits)
}

/// The SHAs of `range` (`good..bad`) that descend from `good` (`git rev-list --ancestry-path`).
async fn descendants(
    ctx: &Ctx<'_>,
    mirror: &Path,
    range: &str,
) -> Result<HashSet<String>, GitError> {
    let mut found = HashSet::new();
    let mut collect = |l: &[u8]| {
        let line = String::from_utf8_lossy(l);
        if is_hex(line.trim(), 40, 64) {
            found.insert(line.trim().to_string());
        }
    };
    let args = vec![
        git_dir(mirror)?,
        "rev-list".into(),
        "--ancestry-path".into(),
        range.to_string(),
        "--".into(),
    ];
    ctx.git("listing commits", args, Some(&mut collect)).await?;
    Ok(found)
}

/// One line of [`COMMIT_FORMAT`]; `None` for any other line (the echo of the command).
fn parse_commit(line: &str) -> Option<BisectCommit> {
    let mut parts = line.splitn(3, '\u{1f}');
    let (sha, author, subject) = (parts.next()?, parts.next()?, parts.next()?);
    if !is_hex(sha, 40, 64) {
        return None;
    }
    Some(BisectCommit {
        commit: sha.to_string(),
        subject: cut(subject.trim(), MAX_COMMIT_TEXT),
        author: cut(author.trim(), MAX_COMMIT_TEXT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs git synchronously for test setup; returns its output, trimmed.
    fn g(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit(repo: &Path, subject: &str) -> String {
        g(repo, &["commit", "-q", "--allow-empty", "-m", subject]);
        g(repo, &["rev-parse", "HEAD"])
    }

    /// main: c0 - c1 - c2 - merge(c2, side) - c3, with side: s1 - s2 branched off c1; tag v0
    /// on c0.
    /// Returns the mirror and the SHAs by name.
    async fn repo(
        dir: &Path,
    ) -> (
        MirrorCache,
        PathBuf,
        std::collections::HashMap<&'static str, String>,
    ) {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        g(&src, &["init", "-q", "-b", "main"]);
        let mut at = std::collections::HashMap::new();
        at.insert("c0", commit(&src, "c0"));
        g(&src, &["tag", "v0"]);
        at.insert("c1", commit(&src, "c1: a subject with \u{1f} and <b>"));
        g(&src, &["checkout", "-q", "-b", "side"]);
        at.insert("s1", commit(&src, "s1"));
        at.insert("s2", commit(&src, "s2"));
        g(&src, &["checkout", "-q", "main"]);
        at.insert("c2", commit(&src, "c2"));
        g(
            &src,
            &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
        );
        at.insert("merge", g(&src, &["rev-parse", "HEAD"]));
        at.insert("c3", commit(&src, "c3"));
        let cache = MirrorCache::new(dir.join("git")).with_policy(FetchPolicy {
            allowed_roots: vec![dir.to_path_buf()],
            ..FetchPolicy::default()
        });
        let mirror = cache
            .fetch(
                &path_arg(&src).unwrap(),
                Duration::from_secs(60),
                &CancellationToken::new(),
                &mut |_: &[u8]| {},
            )
            .await
            .unwrap();
        (cache, mirror, at)
    }

    #[tokio::test]
    async fn revisions_resolve_as_branch_tag_or_sha() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, mirror, at) = repo(tmp.path()).await;
        let cancel = CancellationToken::new();
        let resolve = |rev: &'static str| {
            let (cache, mirror, cancel) = (&cache, &mirror, &cancel);
            async move { cache.resolve_rev(mirror, rev, cancel).await }
        };
        assert_eq!(resolve("main").await.unwrap().as_ref(), Some(&at["c3"]));
        assert_eq!(resolve("side").await.unwrap().as_ref(), Some(&at["s2"]));
        assert_eq!(resolve("v0").await.unwrap().as_ref(), Some(&at["c0"]));
        let short: &'static str = Box::leak(at["c1"][..10].to_string().into_boxed_str());
        assert_eq!(resolve(short).await.unwrap().as_ref(), Some(&at["c1"]));
        assert_eq!(resolve("nope").await.unwrap(), None);
        assert_eq!(resolve("deadbeef").await.unwrap(), None);
        for bad in ["main~1", "--all", "a..b", "main@{1}", ""] {
            assert!(
                matches!(resolve(bad).await, Err(GitError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_range_is_the_first_parent_line_from_bad_back_to_good() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, mirror, at) = repo(tmp.path()).await;
        let cancel = CancellationToken::new();
        assert!(cache
            .is_ancestor(&mirror, &at["c0"], &at["c3"], &cancel)
            .await
            .unwrap());
        assert!(!cache
            .is_ancestor(&mirror, &at["c3"], &at["c0"], &cancel)
            .await
            .unwrap());
        assert!(!cache
            .is_ancestor(&mirror, &at["s1"], &at["c1"], &cancel)
            .await
            .unwrap());

        let range = cache
            .commit_range(&mirror, &at["c0"], &at["c3"], 100, &cancel)
            .await
            .unwrap()
            .unwrap();
        let shas: Vec<&str> = range.iter().map(|c| c.commit.as_str()).collect();
        // The side branch's commits are not steps: the merge is.
        assert_eq!(
            shas,
            [&at["c0"], &at["c1"], &at["c2"], &at["merge"], &at["c3"]]
        );
        assert_eq!(range[1].subject, "c1: a subject with \u{1f} and <b>");
        assert_eq!(range[1].author, "Ann Author <ann@example.com>");
        assert_eq!(range[3].subject, "merge side");
        // From a side commit: the merge that brought it in onwards (c2 lacks it).
        let from_side = cache
            .commit_range(&mirror, &at["s1"], &at["c3"], 100, &cancel)
            .await
            .unwrap()
            .unwrap();
        let shas: Vec<&str> = from_side.iter().map(|c| c.commit.as_str()).collect();
        assert_eq!(shas, [&at["s1"], &at["merge"], &at["c3"]]);
        // Too long a range says so.
        assert_eq!(
            cache
                .commit_range(&mirror, &at["c0"], &at["c3"], 2, &cancel)
                .await
                .unwrap(),
            None
        );
        assert!(cache
            .commit_range(&mirror, "main", &at["c3"], 2, &cancel)
            .await
            .is_err());
    }
}
