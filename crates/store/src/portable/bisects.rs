//! The portable SQL of the `Bisects` side of a backend.

/// The `Bisects` methods of a backend (the claim excepted: each dialect has its own
/// `claim_next_bisect`), in SQL both dialects speak, written once.
macro_rules! bisects_impl {
    ($backend:ident, $conn:ty) => {
        use super::all;
        use crate::backend::{Bisects, Fut};
        use crate::bisects::{
            bisect_row, step_row, with_steps, BisectClaim, BisectDetail, BisectRow, Decision,
            Move, StepRow, BISECT_COLUMNS, STEP_COLUMNS,
        };
        use crate::guards::{b, q, queue_unfinished};
        use crate::rows::{to_json, Columns, Holder};
        use crate::{Result, StoreError};
        use testarena_core::bisect::{BisectStatus, ValidBisect};
        use testarena_core::validate::ValidQueue;
        use testarena_core::QueueStatus;

        impl $backend {
            /// The steps of the bisects with ids from `from` to `to`, in order.
            async fn steps_between(
                conn: &mut $conn,
                from: i64,
                to: i64,
            ) -> Result<Vec<(i64, StepRow)>> {
                let rows = sqlx::query(&format!(
                    "SELECT {STEP_COLUMNS} FROM bisect_steps WHERE bisect_id >= $1 AND bisect_id <= $2 \
                     ORDER BY bisect_id, position"
                ))
                .bind(from)
                .bind(to)
                .fetch_all(&mut *conn)
                .await?;
                all(&rows, step_row)
            }

            /// `rows` (ids in one contiguous run of the table's order) with their steps.
            async fn details_of(conn: &mut $conn, rows: Vec<BisectRow>) -> Result<Vec<BisectDetail>> {
                let (Some(from), Some(to)) = (
                    rows.iter().map(|r| r.id).min(),
                    rows.iter().map(|r| r.id).max(),
                ) else {
                    return Ok(Vec::new());
                };
                let steps = $backend::steps_between(conn, from, to).await?;
                Ok(with_steps(rows, steps))
            }

            /// The condition that a bisect needs a decision and nobody holds it at the time bound
            /// as `now` (a placeholder): it runs, and it is new or the step queue it waits for
            /// ended (or is gone).
            fn needs_decision(now: &str) -> String {
                format!(
                    "status = {} AND (claimed_until IS NULL OR claimed_until < {now}) \
                     AND (current_queue IS NULL OR NOT EXISTS (SELECT 1 FROM queues \
                     WHERE queues.id = bisects.current_queue AND queues.{}))",
                    b(BisectStatus::Running),
                    queue_unfinished()
                )
            }

            /// The condition that the bisect `$1` runs and the holder whose token is `$2`
            /// holds it.
            fn bisect_held() -> String {
                format!(
                    "id = $1 AND status = {} AND driver || '#' || claims = $2",
                    b(BisectStatus::Running)
                )
            }

            /// A claimed bisect, read from the row the claim returned, with its steps.
            async fn claimed(conn: &mut $conn, row: &impl Columns) -> Result<BisectClaim> {
                let bisect = bisect_row(row)?;
                let holder = Holder::new(row.text("driver")?, row.int("claims")?);
                let commits = row.json("commits")?;
                let mut details = $backend::details_of(conn, vec![bisect]).await?;
                let detail = details
                    .pop()
                    .ok_or_else(|| StoreError::Internal("a claimed bisect vanished".into()))?;
                Ok(BisectClaim {
                    detail,
                    commits,
                    holder,
                })
            }

            /// Stores a waiting step queue (and its tasks) in `tx`; returns its id.
            async fn insert_step_queue(
                tx: &mut $conn,
                queue: &ValidQueue,
                submitted_by: Option<&str>,
                now: i64,
            ) -> Result<i64> {
                let scenarios = to_json(queue.scenarios.as_ref())?;
                let labels = to_json(Some(&queue.labels).filter(|l| !l.is_empty()))?;
                let id: i64 = sqlx::query_scalar(&format!(
                    "INSERT INTO queues (name, repo, branch, requested_commit, scenarios, status, priority, \
                     created_at, labels, submitted_by) VALUES ($1, $2, $3, $4, $5, {}, $6, $7, $8, $9) RETURNING id",
                    q(QueueStatus::INITIAL)
                ))
                .bind(&queue.name)
                .bind(&queue.repo)
                .bind(&queue.branch)
                .bind(&queue.commit)
                .bind(&scenarios)
                .bind(queue.priority)
                .bind(now)
                .bind(&labels)
                .bind(submitted_by)
                .fetch_one(&mut *tx)
                .await?;
                Self::insert_tasks(tx, id, queue.scenarios.as_deref().unwrap_or_default()).await?;
                Ok(id)
            }

            /// Carries out `next` for bisect `id` in `tx`; returns the new step queue's id.
            async fn make_move(
                tx: &mut $conn,
                id: i64,
                next: &Move,
                now: i64,
            ) -> Result<Option<i64>> {
                let last_step = "(SELECT MAX(position) FROM bisect_steps WHERE bisect_id = $1)";
                let submitted_by: Option<String> =
                    sqlx::query_scalar("SELECT submitted_by FROM bisects WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                let queue_id = match next {
                    Move::Step { index, commit, queue } => {
                        let queue_id =
                            $backend::insert_step_queue(tx, queue, submitted_by.as_deref(), now).await?;
                        sqlx::query(
                            "INSERT INTO bisect_steps (bisect_id, position, commit_index, commit_sha, subject, author, queue_id) \
                             VALUES ($1, (SELECT COALESCE(MAX(position), 0) + 1 FROM bisect_steps WHERE bisect_id = $1), \
                             $2, $3, $4, $5, $6)",
                        )
                        .bind(id)
                        .bind(*index as i64)
                        .bind(&commit.commit)
                        .bind(&commit.subject)
                        .bind(&commit.author)
                        .bind(queue_id)
                        .execute(&mut *tx)
                        .await?;
                        queue_id
                    }
                    Move::Rerun { queue } => {
                        let queue_id =
                            $backend::insert_step_queue(tx, queue, submitted_by.as_deref(), now).await?;
                        let done = sqlx::query(&format!(
                            "UPDATE bisect_steps SET rerun_queue_id = $2 WHERE bisect_id = $1 AND position = {last_step}"
                        ))
                        .bind(id)
                        .bind(queue_id)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 0 {
                            return Err(StoreError::Conflict(format!("bisect {id} has no step to run again")));
                        }
                        queue_id
                    }
                    Move::Finish { status, message, result_index } => {
                        sqlx::query(
                            "UPDATE bisects SET status = $2, message = $3, result_index = $4, finished_at = $5, \
                             current_queue = NULL WHERE id = $1",
                        )
                        .bind(id)
                        .bind(status.as_str())
                        .bind(message.as_deref())
                        .bind(result_index.map(|i| i as i64))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        return Ok(None);
                    }
                };
                sqlx::query("UPDATE bisects SET current_queue = $2 WHERE id = $1")
                    .bind(id)
                    .bind(queue_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(Some(queue_id))
            }
        }

        impl Bisects for $backend {
            fn insert_bisect<'a>(
                &'a self,
                bisect: &'a ValidBisect,
                submitted_by: Option<&'a str>,
                now: i64,
            ) -> Fut<'a, i64> {
                Box::pin(async move {
                    let scenarios = to_json(bisect.scenarios.as_ref())?;
                    let labels = to_json(Some(&bisect.labels).filter(|l| !l.is_empty()))?;
                    Ok(sqlx::query_scalar(&format!(
                        "INSERT INTO bisects (repo, good, bad, scenarios, case_key, priority, labels, submitted_by, \
                         status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {}, $9) RETURNING id",
                        b(BisectStatus::INITIAL)
                    ))
                    .bind(&bisect.repo)
                    .bind(&bisect.good)
                    .bind(&bisect.bad)
                    .bind(&scenarios)
                    .bind(&bisect.case)
                    .bind(bisect.priority)
                    .bind(&labels)
                    .bind(submitted_by)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?)
                })
            }

            fn bisect(&self, id: i64) -> Fut<'_, Option<BisectDetail>> {
                Box::pin(async move {
                    let mut conn = self.pool.acquire().await?;
                    let row = sqlx::query(&format!("SELECT {BISECT_COLUMNS} FROM bisects WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    let Some(row) = row else { return Ok(None) };
                    let rows = vec![bisect_row(&row)?];
                    Ok($backend::details_of(&mut conn, rows).await?.pop())
                })
            }

            fn list_bisects(&self, limit: u32, before: Option<i64>) -> Fut<'_, Vec<BisectDetail>> {
                Box::pin(async move {
                    let mut conn = self.pool.acquire().await?;
                    let rows = sqlx::query(&format!(
                        "SELECT {BISECT_COLUMNS} FROM bisects WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2"
                    ))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?;
                    let rows = all(&rows, bisect_row)?;
                    $backend::details_of(&mut conn, rows).await
                })
            }

            fn claim_bisect<'a>(
                &'a self,
                driver: &'a str,
                now: i64,
                until: i64,
            ) -> Fut<'a, Option<BisectClaim>> {
                Box::pin(self.claim_next_bisect(driver, now, until))
            }

            fn renew_bisect<'a>(&'a self, id: i64, holder: &'a Holder, until: i64) -> Fut<'a, bool> {
                Box::pin(async move {
                    let done = sqlx::query(&format!(
                        "UPDATE bisects SET claimed_until = $3 WHERE {}",
                        $backend::bisect_held()
                    ))
                    .bind(id)
                    .bind(holder.token())
                    .bind(until)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release_bisect<'a>(&'a self, id: i64, holder: &'a Holder, retry_at: i64) -> Fut<'a, bool> {
                // Holding it until then is letting it go then.
                self.renew_bisect(id, holder, retry_at)
            }

            fn decide_bisect<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                decision: &'a Decision,
                now: i64,
            ) -> Fut<'a, Option<i64>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    // A write first: it takes SQLite's write lock, and PostgreSQL's lock of the
                    // row (an abort waits for this transaction, then finds what it made).
                    let held = sqlx::query(&format!(
                        "UPDATE bisects SET claimed_until = NULL WHERE {}",
                        $backend::bisect_held()
                    ))
                    .bind(id)
                    .bind(holder.token())
                    .execute(&mut *tx)
                    .await?;
                    if held.rows_affected() == 0 {
                        return Err(StoreError::ClaimLost(id));
                    }
                    if let Some(range) = &decision.range {
                        let commits = to_json(Some(&range.commits))?;
                        sqlx::query(
                            "UPDATE bisects SET good_sha = $2, bad_sha = $3, commits = $4, range_size = $5 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(&range.good_sha)
                        .bind(&range.bad_sha)
                        .bind(&commits)
                        .bind(range.commits.len().saturating_sub(1) as i64)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if let Some((verdict, note)) = &decision.verdict {
                        sqlx::query(
                            "UPDATE bisect_steps SET verdict = $2, note = $3 WHERE bisect_id = $1 \
                             AND position = (SELECT MAX(position) FROM bisect_steps WHERE bisect_id = $1)",
                        )
                        .bind(id)
                        .bind(verdict.as_str())
                        .bind(note.as_deref())
                        .execute(&mut *tx)
                        .await?;
                    }
                    let queue = $backend::make_move(&mut tx, id, &decision.next, now).await?;
                    tx.commit().await?;
                    Ok(queue)
                })
            }

            fn abort_bisect<'a>(&'a self, id: i64, message: &'a str, now: i64) -> Fut<'a, Option<BisectRow>> {
                Box::pin(async move {
                    let (from, to) = (BisectStatus::Running, BisectStatus::Aborted);
                    debug_assert!(from.can_become(to));
                    let row = sqlx::query(&format!(
                        "UPDATE bisects SET status = {}, message = $2, finished_at = $3, claimed_until = NULL \
                         WHERE id = $1 AND status = {} RETURNING {BISECT_COLUMNS}",
                        b(to),
                        b(from)
                    ))
                    .bind(id)
                    .bind(message)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(bisect_row).transpose()
                })
            }
        }
    };
}
pub(crate) use bisects_impl;
