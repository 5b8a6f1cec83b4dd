//! The portable SQL of the `Reports` side of a backend.

/// The `Reports` methods of a backend, in SQL both dialects speak (`IS DISTINCT FROM`: SQLite 3.39+ and PostgreSQL), written once.
macro_rules! reports_impl {
    ($backend:ident) => {
        use super::all;
        use crate::backend::{Fut, Reports};
        use crate::reports::{report_claim, ReportClaim, ReportDue};
        use sqlx::Row;

        impl Reports for $backend {
            fn due_reports(&self, now: i64, limit: u32) -> Fut<'_, Vec<ReportDue>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT queue_id FROM status_reports WHERE posted IS DISTINCT FROM wanted \
                         AND (claimed_until IS NULL OR claimed_until <= $1) ORDER BY queue_id LIMIT $2",
                    )
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    all(&rows, |r| Ok(r.try_get("queue_id")?))
                })
            }

            fn claim_report<'a>(
                &'a self,
                queue_id: i64,
                by: &'a str,
                now: i64,
                until: i64,
            ) -> Fut<'a, Option<ReportClaim>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE status_reports SET claimed_by = $2, claimed_until = $4 \
                         WHERE queue_id = $1 AND posted IS DISTINCT FROM wanted \
                         AND (claimed_until IS NULL OR claimed_until <= $3) \
                         RETURNING queue_id, wanted, posted, rounds",
                    )
                    .bind(queue_id)
                    .bind(by)
                    .bind(now)
                    .bind(until)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(report_claim).transpose()
                })
            }

            fn report_posted<'a>(&'a self, queue_id: i64, by: &'a str, state: &'a str) -> Fut<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE status_reports SET posted = $3, claimed_by = NULL, claimed_until = NULL, rounds = 0 \
                         WHERE queue_id = $1 AND claimed_by = $2",
                    )
                    .bind(queue_id)
                    .bind(by)
                    .bind(state)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn report_retry<'a>(&'a self, queue_id: i64, by: &'a str, retry_at: i64) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE status_reports SET claimed_until = $3, rounds = rounds + 1 \
                         WHERE queue_id = $1 AND claimed_by = $2",
                    )
                    .bind(queue_id)
                    .bind(by)
                    .bind(retry_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }
        }
    };
}
pub(crate) use reports_impl;
