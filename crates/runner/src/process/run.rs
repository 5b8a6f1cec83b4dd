//! Running a command to completion: its output streamed line by line, its whole group stopped
//! on timeout or cancellation and whatever it left behind cleared.

use super::lines::LineSplitter;
use super::*;

/// How a process run through [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The leader exited by itself: its exit code, or 128 + signal number if a signal killed it.
    Exited(i32),
    /// The timeout (given here) ran out and the group was killed.
    TimedOut(Duration),
    /// The cancellation token fired and the group was killed.
    Cancelled,
}

/// Runs to completion, streaming each output line (stdout and stderr merged, in arrival order,
/// raw bytes without the line ending) to `on_line` as it arrives; kills the whole group on
/// timeout or cancellation, and any members left behind when the leader exits.
pub async fn run(
    spec: &Spec,
    timeout: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
    grace: Duration,
) -> Result<Outcome, ProcessError> {
    let io_err = |source| ProcessError::Io {
        program: spec.program.clone(),
        source,
    };
    let (mut group, output) = spawn_merged(spec)?;
    let mut output = Some(output);
    let mut lines = LineSplitter::default();
    let mut buf = vec![0u8; READ_CHUNK];

    let deadline = Instant::now() + timeout;
    let mut reason: Option<Outcome> = None;
    let mut status: Option<ExitStatus> = None;
    let mut phase = Phase::Running;

    loop {
        if status.is_some() && output.is_none() {
            break;
        }
        let kill_at = match phase {
            Phase::Terminating { kill_at } => Some(kill_at),
            _ => None,
        };
        let give_up_at = match phase {
            Phase::Draining { give_up_at } => Some(give_up_at),
            _ => None,
        };
        let active = reason.is_none() && status.is_none();
        tokio::select! {
            _ = cancel.cancelled(), if active => {
                reason = Some(Outcome::Cancelled);
                phase = phase.start_term(group.pgid, grace);
            }
            _ = tokio::time::sleep_until(deadline), if active => {
                reason = Some(Outcome::TimedOut(timeout));
                phase = phase.start_term(group.pgid, grace);
            }
            r = read_some(&mut output, &mut buf), if output.is_some() => {
                match r {
                    Ok(0) | Err(_) => {
                        lines.finish(on_line);
                        output = None;
                    }
                    Ok(n) => lines.push(&buf[..n], on_line),
                }
            }
            r = group.wait(), if status.is_none() => {
                status = Some(r.map_err(io_err)?);
                phase = phase.after_leader_exit(group.pgid, grace);
            }
            _ = sleep_until_opt(kill_at) => {
                signal_group(group.pgid, Signal::SIGKILL);
                phase = Phase::Draining { give_up_at: Instant::now() + DRAIN_AFTER_KILL };
            }
            _ = sleep_until_opt(give_up_at) => {
                // Whatever still holds the pipes is not in the group any more; stop reading.
                lines.finish(on_line);
                break;
            }
        }
    }

    if status.is_none() {
        // Only reached after KILL plus the drain time, so the leader is dead or stuck in the
        // kernel; the bound keeps a stuck one from hanging us (Drop KILLs again).
        if let Ok(r) = tokio::time::timeout(KILL_SETTLE, group.wait()).await {
            status = Some(r.map_err(io_err)?);
        }
    }
    if status.is_some() {
        clear_group(&mut group, phase, grace).await;
    }

    match (reason, status) {
        (Some(r), _) => Ok(r),
        (None, Some(s)) => Ok(Outcome::Exited(exit_code(s))),
        // Not expected: without a timeout or cancel the group is only KILLed after the leader
        // exited, so its status is known.
        (None, None) => Err(io_err(io::Error::other("lost track of the child's exit"))),
    }
}

/// Starts `spec` with stdout and stderr on one pipe, as `2>&1` does: the child's writes reach us
/// in exactly the order it made them, which two pipes polled side by side cannot promise.
fn spawn_merged(spec: &Spec) -> Result<(Group, pipe::Receiver), ProcessError> {
    let io_err = |source| ProcessError::Io {
        program: spec.program.clone(),
        source,
    };
    let (read_end, write_end) = cloexec_pipe().map_err(io_err)?;
    let write_dup = write_end.try_clone().map_err(io_err)?;
    let mut group = spawn_with(
        spec,
        stdin_of(spec),
        Stdio::from(write_end),
        Stdio::from(write_dup),
    )?;
    // `spawn_with` has dropped its Command, so the child now holds the only write ends and we
    // see EOF once it (and everything it passed them on to) is gone.
    let output = pipe::Receiver::from_owned_fd(read_end).map_err(io_err)?;
    // Nobody writes to stdin here; closing it gives the child EOF instead of a hang.
    drop(group.stdin.take());
    Ok((group, output))
}

/// Makes sure nothing of a group whose leader has exited survives, whatever the phase `run`
/// stopped in.
async fn clear_group(group: &mut Group, phase: Phase, grace: Duration) {
    let kill_at = match phase {
        Phase::Running => {
            reap_group(group.pgid);
            if group_alive(group.pgid) {
                signal_group(group.pgid, Signal::SIGTERM);
            }
            Instant::now() + grace
        }
        Phase::Terminating { kill_at } => kill_at,
        Phase::Draining { .. } => Instant::now(),
    };
    if wait_group_gone(group.pgid, kill_at).await {
        group.gone = true;
    } else {
        signal_group(group.pgid, Signal::SIGKILL);
        group.gone = wait_group_gone(group.pgid, Instant::now() + KILL_SETTLE).await;
    }
}

/// Where `run` is in stopping the group.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Nothing sent yet.
    Running,
    /// TERM sent; KILL follows at `kill_at`.
    Terminating { kill_at: Instant },
    /// KILL sent, or the leader exited with no group left: output is read until `give_up_at`
    /// at most, since whatever still holds the pipes then is outside the group.
    Draining { give_up_at: Instant },
}

impl Phase {
    /// Sends TERM to the group unless a stop is already under way.
    fn start_term(self, pgid: i32, grace: Duration) -> Phase {
        match self {
            Phase::Running => {
                signal_group(pgid, Signal::SIGTERM);
                Phase::Terminating {
                    kill_at: Instant::now() + grace,
                }
            }
            other => other,
        }
    }

    /// After the leader exited: anything still in the group was left behind by it (a
    /// background job, a daemon) and would hold our pipes open and outlive the run, so it is
    /// stopped; with the group gone, what is left in the pipes is read, but not for ever (a
    /// process that left the group with its own setsid may hold them open).
    fn after_leader_exit(self, pgid: i32, grace: Duration) -> Phase {
        reap_group(pgid);
        if group_alive(pgid) {
            self.start_term(pgid, grace)
        } else if matches!(self, Phase::Running) {
            Phase::Draining {
                give_up_at: Instant::now() + DRAIN_AFTER_KILL,
            }
        } else {
            self
        }
    }
}

/// Exit code of a status, 128 + signal number for a signal death (as shells report it).
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}
