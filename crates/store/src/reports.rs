//! Commit statuses to report for queues with an origin: the database keeps, per queue, the
//! status it should show and the one last posted; a sender (the server's Gitea reporter) claims
//! a report that is behind, posts it, and records what it posted.

use crate::rows::Columns;
use crate::{now_ms, Result, Store, StoreError};
use testarena_core::QueueStatus;

/// A report claimed by a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportClaim {
    pub queue_id: i64,
    /// The status the commit should show now: `running`, or the queue's verdict.
    pub wanted: QueueStatus,
    /// The status last posted (or given up on); `None` before the first.
    pub posted: Option<QueueStatus>,
    /// How many rounds of sending failed since the last success.
    pub rounds: i64,
}

/// A report that is behind: the id of its queue.
pub(crate) type ReportDue = i64;

pub(crate) fn report_claim(r: &impl Columns) -> Result<ReportClaim> {
    let posted = r.opt_text("posted")?;
    Ok(ReportClaim {
        queue_id: r.int("queue_id")?,
        wanted: r.parsed("wanted")?,
        posted: posted
            .as_deref()
            .map(|p| p.parse().map_err(StoreError::Corrupt))
            .transpose()?,
        rounds: r.int("rounds")?,
    })
}

impl Store {
    /// Ids of queues whose report is behind and free to claim now (at most `limit`).
    pub async fn due_reports(&self, limit: u32) -> Result<Vec<i64>> {
        let now = now_ms();
        self.retry(|| self.backend.due_reports(now, limit)).await
    }

    /// Claims the report of `queue_id` for `by` for `lease_ms`, if it is behind and free.
    pub async fn claim_report(
        &self,
        queue_id: i64,
        by: &str,
        lease_ms: i64,
    ) -> Result<Option<ReportClaim>> {
        let now = now_ms();
        self.retry(|| self.backend.claim_report(queue_id, by, now, now + lease_ms))
            .await
    }

    /// Records that `status` was posted (or given up on) for a report `by` holds, and
    /// releases it; false if `by` no longer held it.
    pub async fn report_posted(
        &self,
        queue_id: i64,
        by: &str,
        status: QueueStatus,
    ) -> Result<bool> {
        self.retry(|| self.backend.report_posted(queue_id, by, status.as_str()))
            .await
    }

    /// Releases a report `by` holds after a failed round, to be claimed again after `delay_ms`.
    pub async fn report_retry(&self, queue_id: i64, by: &str, delay_ms: i64) -> Result<()> {
        let at = now_ms() + delay_ms;
        self.retry(|| self.backend.report_retry(queue_id, by, at))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{on_both, TestDb, TestDbRef};
    use testarena_core::origin::Origin;
    use testarena_core::validate::ValidQueue;

    fn from_gitea(origin: bool) -> ValidQueue {
        ValidQueue {
            repo: "https://example.com/r.git".into(),
            branch: "main".into(),
            scenarios: Some(vec!["a.xml".into()]),
            name: "q".into(),
            priority: 5,
            commit: Some("a".repeat(40)),
            case_filter: None,
            labels: Vec::new(),
            origin: origin.then(|| Origin {
                gitea_repo: "acme/fw".into(),
                context: "testarena/default".into(),
            }),
            no_cache: false,
            retries: 0,
        }
    }

    /// What the report of queue `id` wants and has posted, read directly.
    async fn report(db: &TestDb, id: i64) -> Option<(String, Option<String>)> {
        db.row(&format!(
            "SELECT wanted, posted FROM status_reports WHERE queue_id = {id}"
        ))
        .await
        .map(|r| (r[0].clone().unwrap(), r[1].clone()))
    }

    /// Sets a queue's status directly, as any writer might.
    async fn set_status(db: &TestDb, id: i64, status: QueueStatus, started: bool) {
        let started = if started { "1" } else { "NULL" };
        db.exec(&format!(
            "UPDATE queues SET status = '{status}', started_at = {started} WHERE id = {id}"
        ))
        .await;
    }

    /// The database's trigger spells statuses itself: check it against every transition core
    /// allows. A started queue wants each new status reported except `waiting` (taken back, it
    /// is still being tested); a queue that never started, or has no origin, wants nothing.
    async fn reports_follow_every_transition_core_allows(db: TestDbRef) {
        let s = db.store.clone();
        for from in QueueStatus::ALL {
            for to in QueueStatus::ALL.iter().filter(|to| from.can_become(**to)) {
                for (origin, started) in [(true, true), (true, false), (false, true)] {
                    let id = s.create_queue(&from_gitea(origin)).await.unwrap().queue.id;
                    set_status(&db, id, *from, started).await;
                    let before = report(&db, id).await;
                    set_status(&db, id, *to, started).await;
                    let after = report(&db, id).await;
                    let case = format!("{from} -> {to}, origin {origin}, started {started}");
                    if origin && started && *to != QueueStatus::Waiting {
                        assert_eq!(after.map(|r| r.0), Some(to.to_string()), "{case}");
                    } else {
                        assert_eq!(after, before, "{case}");
                    }
                }
            }
        }
    }

    async fn one_sender_at_a_time_posts_each_state_once(db: TestDbRef) {
        let s = db.store.clone();
        let id = s.create_queue(&from_gitea(true)).await.unwrap().queue.id;
        assert!(
            s.due_reports(10).await.unwrap().is_empty(),
            "not started yet"
        );
        s.claim("w", 30_000).await.unwrap().unwrap();
        assert_eq!(s.due_reports(10).await.unwrap(), vec![id]);
        let claim = s.claim_report(id, "a", 60_000).await.unwrap().unwrap();
        assert_eq!((claim.wanted, claim.posted), (QueueStatus::Running, None));
        assert!(s.claim_report(id, "b", 60_000).await.unwrap().is_none());
        assert!(s.due_reports(10).await.unwrap().is_empty(), "claimed");
        // The queue ends while `a` posts `running`: the verdict is due next.
        s.finish_queue(id, &crate::Holder::new("w", 1), QueueStatus::Passed, None)
            .await
            .unwrap();
        assert!(!s
            .report_posted(id, "b", QueueStatus::Running)
            .await
            .unwrap());
        assert!(s
            .report_posted(id, "a", QueueStatus::Running)
            .await
            .unwrap());
        let claim = s.claim_report(id, "b", 60_000).await.unwrap().unwrap();
        assert_eq!(
            (claim.wanted, claim.posted),
            (QueueStatus::Passed, Some(QueueStatus::Running))
        );
        // A failed round: nobody claims it before the delay, anyone after it.
        s.report_retry(id, "b", 60_000).await.unwrap();
        assert!(s.claim_report(id, "a", 1).await.unwrap().is_none());
        s.report_retry(id, "b", -1).await.unwrap();
        let claim = s.claim_report(id, "a", 60_000).await.unwrap().unwrap();
        assert_eq!(claim.rounds, 2);
        assert!(s.report_posted(id, "a", QueueStatus::Passed).await.unwrap());
        assert!(s.due_reports(10).await.unwrap().is_empty());
        assert!(s.claim_report(id, "c", 60_000).await.unwrap().is_none());
    }

    async fn queues_without_origin_have_nothing_to_report(db: TestDbRef) {
        let s = db.store.clone();
        let id = s.create_queue(&from_gitea(false)).await.unwrap().queue.id;
        s.claim("w", 30_000).await.unwrap().unwrap();
        s.finish_queue(id, &crate::Holder::new("w", 1), QueueStatus::Failed, None)
            .await
            .unwrap();
        assert!(s.due_reports(10).await.unwrap().is_empty());
    }

    on_both!(
        reports_follow_every_transition_core_allows,
        one_sender_at_a_time_posts_each_state_once,
        queues_without_origin_have_nothing_to_report,
    );
}
