//! Running git: one operation's limits, and a runner that watches git's progress (every byte counts, progress frames included) and kills a stalled fetch.

use super::*;

/// Where output lines go.
pub(super) type LineSink<'a> = dyn FnMut(&[u8]) + Send + 'a;

/// Limits shared by the git commands of one operation.
pub(super) struct Ctx<'a> {
    /// When the whole operation must be done.
    pub(super) deadline: Instant,
    /// The operation's time limit, for the error message.
    pub(super) timeout: Duration,
    /// Abort or shutdown.
    pub(super) cancel: &'a CancellationToken,
}

impl Ctx<'_> {
    /// Runs `git args`, forwarding its output (redacted) to `on_line`; returns the last output
    /// lines (redacted), or an error naming `what` with git's last lines if it failed.
    pub(super) async fn git(
        &self,
        what: &str,
        args: Vec<String>,
        on_line: Option<&mut LineSink<'_>>,
    ) -> Result<Vec<String>, GitError> {
        self.git_with(what, args, &[], None, on_line).await
    }

    /// [`Ctx::git`] with extra environment variables, and with a stall timeout if `stall` is
    /// set: git is killed when it prints nothing (progress counts, also a `\r` frame) for
    /// that long.
    pub(super) async fn git_with(
        &self,
        what: &str,
        args: Vec<String>,
        env: &[(String, String)],
        stall: Option<Duration>,
        mut on_line: Option<&mut LineSink<'_>>,
    ) -> Result<Vec<String>, GitError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GitError::TimedOut {
                what: what.to_string(),
                after: self.timeout,
            });
        }
        if let Some(f) = on_line.as_mut() {
            f(format!("$ git {}", redact(&args.join(" "))).as_bytes());
        }
        let mut spec = Spec::new("git", args)
            // No prompt may ever wait for an answer: fail instead.
            .with_env("GIT_TERMINAL_PROMPT", "0")
            .with_env("GCM_INTERACTIVE", "never")
            .with_stdin(false);
        for (key, value) in env {
            spec = spec.with_env(key.as_str(), value.as_str());
        }
        let mut kept: VecDeque<String> = VecDeque::with_capacity(KEPT_LINES);
        let mut cb = |line: &[u8]| {
            let line = redact_bytes(line);
            if let Some(f) = on_line.as_mut() {
                f(&line);
            }
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            let end = line.len().min(KEPT_LINE_LEN);
            kept.push_back(String::from_utf8_lossy(&line[..end]).into_owned());
        };
        let ended = match stall {
            None => match process::run(&spec, remaining, self.cancel, &mut cb, GIT_GRACE).await? {
                Outcome::Exited(code) => Ended::Exited(code),
                Outcome::TimedOut(_) => Ended::TimedOut,
                Outcome::Cancelled => Ended::Cancelled,
            },
            Some(stall) => run_watched(&spec, remaining, stall, self.cancel, &mut cb).await?,
        };
        match ended {
            Ended::Exited(0) => Ok(kept.into()),
            Ended::Exited(code) => {
                let detail: Vec<&str> = kept
                    .iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty())
                    .collect();
                let detail = if detail.is_empty() {
                    "no output".to_string()
                } else {
                    detail.join("\n")
                };
                Err(GitError::Command {
                    what: what.to_string(),
                    code,
                    detail,
                })
            }
            Ended::TimedOut => Err(GitError::TimedOut {
                what: what.to_string(),
                after: self.timeout,
            }),
            Ended::Cancelled => Err(GitError::Cancelled {
                what: what.to_string(),
            }),
            Ended::Stalled(after) => Err(GitError::Stalled {
                what: what.to_string(),
                after,
            }),
        }
    }
}

/// How a git command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// It exited by itself with this code (128 + signal number if a signal killed it).
    Exited(i32),
    /// The operation's deadline passed; the group was killed.
    TimedOut,
    /// Abort or shutdown; the group was killed.
    Cancelled,
    /// Nothing was printed for this long; the group was killed.
    Stalled(Duration),
}

/// Runs `spec` like [`process::run`] (own process group, killed as a whole on timeout or
/// cancel), but watching for progress: every byte git prints counts, including the
/// `\r`-terminated progress frames that `process::run` would only hand over as one line at the
/// end. No byte for `stall` kills the group. Lines go to `on_line` as a terminal would leave
/// them: of a line redrawn with `\r`, only its final state.
pub(super) async fn run_watched(
    spec: &Spec,
    timeout: Duration,
    stall: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Ended, GitError> {
    let io_err = |source| {
        GitError::Process(process::ProcessError::Io {
            program: spec.program.clone(),
            source,
        })
    };
    let mut group = process::spawn(spec)?;
    let mut stdout = group.stdout.take();
    let mut stderr = group.stderr.take();
    let (mut out_lines, mut err_lines) = (Frames::default(), Frames::default());
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let deadline = Instant::now() + timeout;
    let mut last_byte = Instant::now();
    let mut status = None;
    // Once git has exited, whatever still holds its pipes (a leftover of its group) gets this
    // long before we stop reading.
    let mut drain_until: Option<Instant> = None;
    let stopped = loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break None;
        }
        let running = status.is_none();
        tokio::select! {
            _ = cancel.cancelled(), if running => break Some(Ended::Cancelled),
            _ = tokio::time::sleep_until(deadline), if running => break Some(Ended::TimedOut),
            _ = tokio::time::sleep_until(last_byte + stall), if running => {
                break Some(Ended::Stalled(stall));
            }
            _ = crate::process::sleep_until_opt(drain_until) => break None,
            r = crate::process::read_some(&mut stdout, &mut out_buf), if stdout.is_some() => match r {
                Ok(n) if n > 0 => {
                    last_byte = Instant::now();
                    out_lines.push(&out_buf[..n], on_line);
                }
                _ => {
                    out_lines.finish(on_line);
                    stdout = None;
                }
            },
            r = crate::process::read_some(&mut stderr, &mut err_buf), if stderr.is_some() => match r {
                Ok(n) if n > 0 => {
                    last_byte = Instant::now();
                    err_lines.push(&err_buf[..n], on_line);
                }
                _ => {
                    err_lines.finish(on_line);
                    stderr = None;
                }
            },
            r = group.wait(), if running => {
                status = Some(r.map_err(io_err)?);
                drain_until = Some(Instant::now() + GIT_GRACE);
            }
        }
    };
    // Also after a normal exit: kills what the leader left in its group and marks it gone.
    let grace = if stopped.is_some() {
        GIT_GRACE
    } else {
        Duration::ZERO
    };
    group.terminate(grace).await;
    out_lines.finish(on_line);
    err_lines.finish(on_line);
    Ok(match (stopped, status) {
        (Some(reason), _) => reason,
        (None, Some(s)) => Ended::Exited(match (s.code(), s.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        }),
        (None, None) => unreachable!("the loop ends without a reason only after the exit"),
    })
}

/// Splits output into lines as a terminal would show them: `\n` ends a line, `\r` (not
/// followed by `\n`) starts it over, so a progress bar redrawn a thousand times is one line
/// with its final state. Lines are cut at [`process::MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// The line being built.
    pub(super) line: Vec<u8>,
    /// A `\r` was seen: the next byte decides between a line end and a redraw.
    pub(super) after_cr: bool,
}

impl Frames {
    /// Feeds one chunk, handing every finished line to `emit`.
    pub(super) fn push(&mut self, chunk: &[u8], emit: &mut (dyn FnMut(&[u8]) + Send)) {
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b != b'\n' {
                    self.line.clear();
                }
            }
            match b {
                b'\n' => {
                    emit(&self.line);
                    self.line.clear();
                }
                b'\r' => self.after_cr = true,
                _ => {
                    if self.line.len() >= process::MAX_LINE {
                        emit(&self.line);
                        self.line.clear();
                    }
                    self.line.push(b);
                }
            }
        }
    }

    /// Hands over a last line that had no newline.
    pub(super) fn finish(&mut self, emit: &mut (dyn FnMut(&[u8]) + Send)) {
        if !self.line.is_empty() {
            emit(&self.line);
            self.line.clear();
        }
        self.after_cr = false;
    }
}
