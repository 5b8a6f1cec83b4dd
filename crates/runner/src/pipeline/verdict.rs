//! The end of a queue: its status and error (stop reasons and failures first, otherwise its
//! cases decide), unfinished cases closed, junit.xml written, the verdict recorded.

use super::failure::{Failure, InfraError, StopReason};
use super::Run;
use crate::ship::QUEUE_LOG;
use std::path::Path;
use std::time::Instant;
use testarena_core::limits::MAX_QUEUE_ATTEMPTS;
use testarena_core::paths::{case_log, task_dir};
use testarena_core::state::queue_verdict;
use testarena_core::{CaseStatus, Phase, QueueStatus};
use testarena_report::{self as report, CaseLog, JunitCase, JunitSuite, JunitTry};
use testarena_store::{CaseRow, QueueDetail};

impl Run<'_> {
    /// Records the verdict and writes junit.xml; a queue whose claim was lost records nothing.
    pub(super) async fn finish(mut self, outcome: Result<(), Failure>, started: Instant) {
        let id = self.queue.id;
        let worker = self.holder();
        self.logs.set_current(None);
        // Every case start and verdict in the store before the close-out reads them.
        if let Err(e) = self.cases.flush().await {
            tracing::warn!(error = %e, "cannot record the queue's last cases");
        }
        if self.ctl.reason() == Some(StopReason::ClaimLost) {
            self.give_up_claim().await;
            return;
        }
        if self.ctl.reason() == Some(StopReason::Shutdown) {
            self.hand_back(
                "the worker is stopping: the queue is handed back, to wait for a worker to start it over",
            )
            .await;
            return;
        }
        if let Some(why) = hand_back_after(&outcome, self.queue.attempts) {
            self.hand_back(&why).await;
            return;
        }
        let _ = self
            .store
            .set_phase(id, &worker, Some(Phase::Reporting))
            .await;
        let (status, error) = self.status_and_error(&outcome).await;
        let running_message = error.clone().unwrap_or_else(|| "stopped".into());
        if let Err(e) = self
            .store
            .close_unfinished(id, &worker, &running_message)
            .await
        {
            tracing::warn!(error = %e, "cannot close unfinished cases");
        }
        if !self.logs_failed() {
            self.write_junit().await;
        }
        if !self.logs_failed() {
            let repro = self.keep_repro().await;
            if let Some(shipping) = &self.shipping {
                // Shipped whole, outside the budget of what builds leave: it has its own bound.
                shipping.ship_now(&repro).await;
            }
        }
        let said = error.as_deref().map(|e| format!(": {e}"));
        let secs = started.elapsed().as_secs_f64();
        self.logs.event(&format!(
            "queue {id} {status} in {secs:.1}s{}",
            said.unwrap_or_default()
        ));
        // Every line and file in the database before the verdict: a reader who sees the queue
        // end finds all of it. Unless the disk (or the database) is full: what space is left
        // goes to the verdict.
        if self.logs_failed() {
            if let Some(shipping) = self.shipping.take() {
                shipping.abandon().await;
            }
            // What filled the disk is in the scratch directory, and none of it will be
            // shipped now: its space goes to the verdict.
            self.remove_scratch();
        } else {
            self.finish_shipping().await;
        }
        if let Err(e) = self
            .store
            .finish_queue(id, &worker, status, error.as_deref())
            .await
        {
            tracing::warn!(error = %e, "cannot record the queue's verdict");
        }
        self.remove_scratch();
    }

    /// Ships the rest of the queue's files (the shipping task stops).
    async fn finish_shipping(&mut self) {
        self.logs.lock().flush();
        if let Some(shipping) = self.shipping.take() {
            shipping.finish().await;
        }
    }

    /// Removes the attempt's scratch directory (its checkout and the files shipped), and the
    /// queue's when no other attempt uses it: the database holds what the queue left.
    fn remove_scratch(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot remove the queue's scratch directory");
            }
        }
        if let Some(parent) = self.dir.parent() {
            // Only when empty.
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// After a shutdown or a passing database failure cut the queue short: it waits again,
    /// for this or another worker to start it over (its processes are gone already), and the
    /// queue log says `why`. If the hand-back fails, the lease runs out and the queue is taken
    /// back all the same.
    async fn hand_back(&mut self, why: &str) {
        let Some(holder) = self.queue.holder() else {
            return;
        };
        self.logs.event(why);
        self.finish_shipping().await;
        match self.store.hand_back(self.queue.id, &holder).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the worker is stopping; it no longer held the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the queue back; its lease will run out");
            }
        }
        self.remove_scratch();
    }

    /// After a lost claim: the attempt that took the queue over (elsewhere, or in a scratch
    /// directory of its own) starts its files over; nothing of this one is shipped any more.
    async fn give_up_claim(&self) {
        self.logs
            .event("this worker lost its claim on the queue (deleted or taken back); stopping");
        tracing::warn!("lost the claim on the queue (deleted, or taken back after the lease ran out); recorded nothing");
        self.remove_scratch();
    }

    /// The queue's status and error: a full disk, a stop reason or a failure first, otherwise
    /// what its cases say.
    async fn status_and_error(
        &self,
        outcome: &Result<(), Failure>,
    ) -> (QueueStatus, Option<String>) {
        let reason = self.ctl.reason();
        let write_error = self
            .write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (Some(message), None) = (write_error, &reason) {
            let e = InfraError::Logs {
                dir: self.dir.clone(),
                message,
            };
            return (QueueStatus::Error, Some(e.to_string()));
        }
        if let Some(r) = &reason {
            let status = match r {
                StopReason::Aborted => QueueStatus::Aborted,
                _ => QueueStatus::Error,
            };
            return (status, r.queue_error(self.phase));
        }
        match outcome {
            Err(Failure::Infra(e)) => (QueueStatus::Error, Some(e.to_string())),
            Err(Failure::Store(e)) => (QueueStatus::Error, Some(format!("database error: {e}"))),
            Err(Failure::Stopped) | Ok(()) => {
                let detail = self.store.queue(self.queue.id).await;
                (queue_verdict(case_verdicts(detail.as_ref().ok())), None)
            }
        }
    }

    /// Writes junit.xml from what the database holds (it has every case, run or not).
    async fn write_junit(&mut self) {
        let Ok(detail) = self.store.queue(self.queue.id).await else {
            return;
        };
        let suites: Vec<JunitSuite> = detail
            .tasks
            .iter()
            .map(|(t, cases)| {
                let tdir = task_dir(&self.dir, t.position, &t.scenario);
                let known = self.suites.iter().find(|s| s.file == t.scenario);
                JunitSuite {
                    name: known
                        .map(|s| s.name.clone())
                        .unwrap_or_else(|| t.scenario.clone()),
                    file: t.scenario.clone(),
                    error: cases.is_empty().then(|| t.error.clone()).flatten(),
                    cases: cases
                        .iter()
                        .map(|c| JunitCase {
                            id: c.key.clone(),
                            name: c.name.clone(),
                            status: c.status,
                            duration_ms: c.duration_ms.unwrap_or(0).max(0) as u64,
                            message: c.message.clone(),
                            log: self.case_log(&tdir, c),
                            tries: self.junit_tries(&tdir, c),
                        })
                        .collect(),
                }
            })
            .collect();
        let path = self.dir.join("junit.xml");
        if let Err(e) = report::write_junit(&path, &self.queue.name, &suites) {
            tracing::warn!(error = %e, "cannot write junit.xml");
        }
    }
}

impl Run<'_> {
    /// Where case `c`'s log is in this attempt's local queue log, if it ran in this attempt.
    fn case_log(&self, tdir: &Path, c: &CaseRow) -> Option<CaseLog> {
        let base = self.logs.base();
        let local = |o: Option<i64>| u64::try_from(o?).ok()?.checked_sub(base);
        let from = local(c.log_from)?;
        let to = local(c.log_to).unwrap_or_else(|| self.logs.position() - base);
        self.log_range(tdir, &c.key, from, to)
    }

    /// The range `from..to` of this attempt's local queue log as case `key`'s log.
    fn log_range(&self, tdir: &Path, key: &str, from: u64, to: u64) -> Option<CaseLog> {
        let name = case_log(tdir, key);
        Some(CaseLog {
            file: self.dir.join(QUEUE_LOG),
            from,
            to: to.max(from),
            name: name.file_name()?.to_string_lossy().into_owned(),
        })
    }

    /// The failed tries of case `c` when it was tried more than once (retries), each with its
    /// part of the log.
    fn junit_tries(&self, tdir: &Path, c: &CaseRow) -> Vec<JunitTry> {
        let kept = self.failed_tries.lock().unwrap_or_else(|p| p.into_inner());
        let base = self.logs.base();
        kept.get(&c.id)
            .into_iter()
            .flatten()
            .map(|t| {
                let o = &t.outcome;
                let log = match (o.log_from.checked_sub(base), o.log_to.checked_sub(base)) {
                    (Some(from), Some(to)) => self.log_range(tdir, &c.key, from, to),
                    _ => None,
                };
                JunitTry {
                    number: t.number,
                    kind: o.kind.to_string(),
                    message: o.message.clone().unwrap_or_default(),
                    duration_ms: o.duration_ms,
                    log,
                }
            })
            .collect()
    }
}

/// What every case (and every task that could not run) of the queue ended as; a queue that
/// cannot be read counts as an error.
fn case_verdicts(detail: Option<&QueueDetail>) -> Vec<CaseStatus> {
    let Some(d) = detail else {
        return vec![CaseStatus::Error];
    };
    d.tasks
        .iter()
        .flat_map(|(t, cases)| {
            let task_error = std::iter::once(t.status).filter(|s| *s == CaseStatus::Error);
            if cases.is_empty() {
                vec![t.status]
            } else {
                cases.iter().map(|c| c.status).chain(task_error).collect()
            }
        })
        .collect()
}

/// Whether a queue that ended with `outcome` on its `attempts`-th claim is handed back to be
/// tried again rather than given a verdict, and what its log says then: when the database
/// refused a write for a passing reason (busy, overloaded, full) the queue itself did nothing
/// wrong, so it waits again, up to [`MAX_QUEUE_ATTEMPTS`] claims in all; after that it ends
/// `error` with the database's message.
fn hand_back_after(outcome: &Result<(), Failure>, attempts: i64) -> Option<String> {
    let Err(Failure::Store(e)) = outcome else {
        return None;
    };
    (e.is_transient() && attempts < MAX_QUEUE_ATTEMPTS).then(|| {
        format!(
            "database error: {e}; the queue is handed back to be started over (claim {attempts} of at most {MAX_QUEUE_ATTEMPTS})"
        )
    })
}

#[cfg(test)]
mod hand_back_tests {
    use super::*;
    use testarena_store::StoreError;

    #[test]
    fn a_passing_database_failure_hands_the_queue_back_a_bounded_number_of_times() {
        let busy = || {
            Err(Failure::Store(StoreError::Busy(
                "database is locked".into(),
            )))
        };
        let why = hand_back_after(&busy(), 1).expect("handed back");
        assert!(
            why.contains("database is locked") && why.contains("claim 1 of at most 3"),
            "{why}"
        );
        assert!(hand_back_after(&busy(), MAX_QUEUE_ATTEMPTS - 1).is_some());
        // The last claim gets its verdict (error, with the database's message).
        assert!(hand_back_after(&busy(), MAX_QUEUE_ATTEMPTS).is_none());
        let full = Err(Failure::Store(StoreError::DiskFull("no space".into())));
        assert!(hand_back_after(&full, 1).is_some());
    }

    #[test]
    fn other_endings_get_their_verdict() {
        assert!(hand_back_after(&Ok(()), 1).is_none());
        assert!(hand_back_after(&Err(Failure::Stopped), 1).is_none());
        let lost = Err(Failure::Store(StoreError::ClaimLost(7)));
        assert!(hand_back_after(&lost, 1).is_none());
        let infra = Err(Failure::Infra(InfraError::NoEmulator));
        assert!(hand_back_after(&infra, 1).is_none());
    }
}
