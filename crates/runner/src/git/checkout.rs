//! From a mirror to a workspace: resolving the commit to test, checking it out, and its
//! submodules (each fetched under the same policy as the repository).

use super::*;

impl MirrorCache {
    /// Resolves the SHA to test: `commit` if given (it must exist in the mirror), else the head
    /// of `branch`. Returns the full SHA.
    pub async fn resolve(
        &self,
        mirror: &Path,
        branch: &str,
        commit: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<String, GitError> {
        let url = std::fs::read_to_string(mirror.join(URL_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| mirror.display().to_string());
        let ctx = Ctx {
            deadline: Instant::now() + RESOLVE_TIMEOUT,
            timeout: RESOLVE_TIMEOUT,
            cancel,
        };
        let git_dir = format!("--git-dir={}", path_arg(mirror)?);
        // The revision is built from checked input only, so it can be neither an option nor
        // revision syntax (`main~3`, `@{1}`) that would pick some other commit.
        let (rev, not_found) = match commit {
            Some(c) => {
                if !is_hex(c, 4, 64) {
                    return Err(GitError::Invalid(format!(
                        "commit '{}' is not a hexadecimal SHA",
                        shorten(c)
                    )));
                }
                let nf = GitError::CommitNotFound {
                    commit: c.to_string(),
                    url,
                };
                (format!("{c}^{{commit}}"), nf)
            }
            None => {
                if !is_plain_branch(branch) {
                    return Err(GitError::Invalid(format!(
                        "invalid branch name '{}'",
                        shorten(branch)
                    )));
                }
                let nf = GitError::BranchNotFound {
                    branch: branch.to_string(),
                    url,
                };
                (format!("refs/heads/{branch}^{{commit}}"), nf)
            }
        };
        let args = vec![
            git_dir,
            "rev-parse".into(),
            "--verify".into(),
            "--quiet".into(),
            rev,
        ];
        match ctx.git("resolving the commit", args, None).await {
            Ok(lines) => lines
                .iter()
                .map(|l| l.trim())
                .find(|l| is_hex(l, 40, 64))
                .map(str::to_string)
                .ok_or(not_found),
            Err(GitError::Command { .. }) => Err(not_found),
            Err(e) => Err(e),
        }
    }

    /// Checks out exactly `sha` into `dest` (absent or empty): a `clone --shared` of the
    /// mirror (objects borrowed, nothing copied), a detached checkout, and submodules if the
    /// repository has any (best effort, reported through `on_line`). On failure `dest` is left
    /// as it is for the caller to remove with the rest of the workspace.
    pub async fn checkout(
        &self,
        mirror: &Path,
        sha: &str,
        dest: &Path,
        timeout: Duration,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), GitError> {
        if !is_hex(sha, 40, 64) {
            return Err(GitError::Invalid(format!(
                "'{}' is not a full commit SHA",
                shorten(sha)
            )));
        }
        match std::fs::read_dir(dest) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(GitError::Invalid(format!(
                        "checkout destination {} is not empty",
                        dest.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GitError::Io {
                    what: format!("cannot read {}", dest.display()),
                    source,
                })
            }
        }
        let ctx = Ctx {
            deadline: Instant::now() + timeout,
            timeout,
            cancel,
        };
        let dest_arg = path_arg(dest)?;
        let short = &sha[..12];
        ctx.git(
            &format!("cloning the mirror into {}", dest.display()),
            vec![
                "clone".into(),
                "--shared".into(),
                "--no-checkout".into(),
                "--quiet".into(),
                "--".into(),
                path_arg(mirror)?,
                dest_arg.clone(),
            ],
            Some(on_line),
        )
        .await?;
        ctx.git(
            &format!("checking out {short}"),
            vec![
                "-C".into(),
                dest_arg.clone(),
                "checkout".into(),
                "--quiet".into(),
                "--detach".into(),
                sha.to_string(),
                // Nothing after this is a path: the SHA cannot be mistaken for a file name.
                "--".into(),
            ],
            Some(on_line),
        )
        .await?;
        if dest.join(".gitmodules").exists() {
            match self.update_submodules(&ctx, dest, on_line).await {
                Ok(()) => {}
                // Stopping is never best effort.
                Err(e @ (GitError::Cancelled { .. } | GitError::TimedOut { .. })) => return Err(e),
                // Like any other submodule failure (a stalled one included): best effort.
                Err(e) => on_line(format!("warning: {e}; continuing without them").as_bytes()),
            }
        }
        Ok(())
    }

    /// Initialises and fetches the submodules of `top`, level by level (nested ones too), each
    /// level's URLs checked against the policy first: a remote host must be allowed, and local
    /// URLs (`file` protocol, relative URLs resolved against the local mirror) are refused.
    async fn update_submodules(
        &self,
        ctx: &Ctx<'_>,
        top: &Path,
        on_line: &mut LineSink<'_>,
    ) -> Result<(), GitError> {
        /// Nesting beyond this is not followed.
        const MAX_DEPTH: usize = 8;
        let env = [(
            "GIT_ALLOW_PROTOCOL".to_string(),
            SUBMODULE_PROTOCOLS.to_string(),
        )];
        // Only directories really inside the checkout are entered: a `.gitmodules` path may
        // name a committed symlink.
        let real_top = std::fs::canonicalize(top).map_err(|source| GitError::Io {
            what: format!("cannot resolve {}", top.display()),
            source,
        })?;
        let mut pending = vec![(real_top.clone(), 0)];
        while let Some((dir, depth)) = pending.pop() {
            if depth > MAX_DEPTH || !dir.join(".gitmodules").is_file() {
                continue;
            }
            let dir_arg = path_arg(&dir)?;
            let entries = gitmodules(ctx, &dir_arg).await?;
            for (key, value) in &entries {
                if !key.ends_with(".url") || value.starts_with("./") || value.starts_with("../") {
                    continue;
                }
                match repo_url::parse(value) {
                    Ok(RepoTarget::Remote(r)) => {
                        repo_url::check_host(r.host, &self.policy.allowed_hosts)
                            .map_err(|m| GitError::Refused(format!("submodule {key}: {m}")))?;
                    }
                    Ok(RepoTarget::Local(_)) => {
                        return Err(GitError::Refused(format!(
                            "submodule {key}: local URL '{}' refused",
                            shorten(value)
                        )));
                    }
                    Err(m) => return Err(GitError::Refused(format!("submodule {key}: {m}"))),
                }
            }
            ctx.git_with(
                "updating submodules",
                vec![
                    "-c".into(),
                    "http.followRedirects=false".into(),
                    "-C".into(),
                    dir_arg,
                    "submodule".into(),
                    "update".into(),
                    "--init".into(),
                    "--quiet".into(),
                    "--progress".into(),
                ],
                &env,
                self.stall(),
                Some(&mut *on_line),
            )
            .await?;
            for (key, value) in &entries {
                let rel = Path::new(value);
                let inside = rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !key.ends_with(".path") || !inside {
                    continue;
                }
                if let Ok(sub) = std::fs::canonicalize(dir.join(rel)) {
                    if sub.starts_with(&real_top) && sub != dir {
                        pending.push((sub, depth + 1));
                    }
                }
            }
        }
        Ok(())
    }
}
