//! The portable SQL of the `Queues` side of a backend.

/// The `Queues` methods of a backend, in SQL both dialects speak: expanded once per backend module (with its `all`, `details_on` and pool in scope), written once.
macro_rules! queues_impl {
    ($backend:ident, $conn:ty) => {
        use super::{all, details::details_on};
        use crate::backend::{Fut, Queues};
        use crate::guards::{c, cut_short, q, queue_moves, unfinished};
        use crate::once::Once;
        use crate::rows::{
            case_row, queue_row, to_json, CaseCaps, CaseRow, FoundCase, QueueDetail, QueueRow, CASE_COLUMNS,
            QUEUE_COLUMNS,
        };
        use crate::Result;
        use sqlx::Row;
        use testarena_core::validate::ValidQueue;
        use testarena_core::{CaseStatus, QueueStatus};

        impl $backend {
            async fn details(&self, queues: Vec<QueueRow>, caps: CaseCaps) -> Result<Vec<QueueDetail>> {
                let mut conn = self.pool.acquire().await?;
                details_on(&mut conn, queues, Some(caps)).await
            }

            /// Stores the pending tasks of new queue `id`, one per scenario, in order (a
            /// submitted queue, and a bisect's step queue).
            pub(super) async fn insert_tasks(tx: &mut $conn, id: i64, scenarios: &[String]) -> Result<()> {
                let sql = format!(
                    "INSERT INTO tasks (queue_id, position, scenario, status) VALUES ($1, $2, $3, {})",
                    c(CaseStatus::INITIAL)
                );
                for (pos, s) in scenarios.iter().enumerate() {
                    sqlx::query(&sql)
                        .bind(id)
                        .bind(pos as i64)
                        .bind(s)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            }
        }

        impl Queues for $backend {
            fn insert_queue<'a>(
                &'a self,
                queue: &'a ValidQueue,
                once: Option<Once<'a>>,
                submitted_by: Option<&'a str>,
                now: i64,
            ) -> Fut<'a, Option<i64>> {
                Box::pin(async move {
                    let scenarios = to_json(queue.scenarios.as_ref())?;
                    let case_filter = to_json(queue.case_filter.as_ref())?;
                    let origin = to_json(queue.origin.as_ref())?;
                    let labels = to_json(Some(&queue.labels).filter(|l| !l.is_empty()))?;
                    let (delivery, key) = match once {
                        Some(Once::Delivery(d)) => (Some(d), None),
                        Some(Once::Key(k)) => (None, Some(k)),
                        None => (None, None),
                    };
                    // A second insert with the same delivery or key stores nothing (the unique
                    // index decides, so two at the same time make one queue).
                    let on_conflict = match once {
                        Some(Once::Delivery(_)) => {
                            "ON CONFLICT (delivery) WHERE delivery IS NOT NULL DO NOTHING"
                        }
                        Some(Once::Key(_)) => {
                            "ON CONFLICT (idem_caller, idem_key) WHERE idem_key IS NOT NULL DO NOTHING"
                        }
                        None => "",
                    };
                    let mut tx = self.pool.begin().await?;
                    // The INSERT comes first, so the transaction takes the write lock at once.
                    let id: Option<i64> = sqlx::query_scalar(&format!(
                        "INSERT INTO queues (name, repo, branch, requested_commit, scenarios, status, priority, created_at, case_filter, origin, delivery, labels, \
                         idem_caller, idem_key, idem_request, submitted_by, no_cache, retries) \
                         VALUES ($1, $2, $3, $4, $5, {}, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                         {on_conflict} RETURNING id",
                        q(QueueStatus::INITIAL)
                    ))
                    .bind(&queue.name)
                    .bind(&queue.repo)
                    .bind(&queue.branch)
                    .bind(&queue.commit)
                    .bind(&scenarios)
                    .bind(queue.priority)
                    .bind(now)
                    .bind(&case_filter)
                    .bind(&origin)
                    .bind(delivery)
                    .bind(&labels)
                    .bind(key.map(|k| k.caller.as_str()))
                    .bind(key.map(|k| k.key.as_str()))
                    .bind(key.map(|k| k.request.as_str()))
                    .bind(submitted_by)
                    .bind(i64::from(queue.no_cache))
                    .bind(i64::from(queue.retries))
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(id) = id else {
                        return Ok(None);
                    };
                    Self::insert_tasks(&mut tx, id, queue.scenarios.as_deref().unwrap_or_default()).await?;
                    tx.commit().await?;
                    Ok(Some(id))
                })
            }

            fn queue_of<'a>(&'a self, once: Once<'a>) -> Fut<'a, Option<(i64, Option<String>)>> {
                Box::pin(async move {
                    let row = match once {
                        Once::Delivery(d) => {
                            sqlx::query("SELECT id, idem_request FROM queues WHERE delivery = $1")
                                .bind(d)
                                .fetch_optional(&self.pool)
                                .await?
                        }
                        Once::Key(k) => {
                            sqlx::query(
                                "SELECT id, idem_request FROM queues WHERE idem_caller = $1 AND idem_key = $2",
                            )
                            .bind(&k.caller)
                            .bind(&k.key)
                            .fetch_optional(&self.pool)
                            .await?
                        }
                    };
                    row.map(|r| Ok((r.try_get("id")?, r.try_get("idem_request")?)))
                        .transpose()
                })
            }

            fn queue(&self, id: i64, caps: Option<CaseCaps>) -> Fut<'_, Option<QueueDetail>> {
                Box::pin(async move {
                    // One connection for the reads: this is the API's hottest path.
                    let mut conn = self.pool.acquire().await?;
                    let row = sqlx::query(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    match row {
                        Some(r) => Ok(details_on(&mut conn, vec![queue_row(&r)?], caps)
                            .await?
                            .pop()),
                        None => Ok(None),
                    }
                })
            }

            fn queue_row(&self, id: i64) -> Fut<'_, Option<QueueRow>> {
                Box::pin(async move {
                    let row = sqlx::query(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(queue_row).transpose()
                })
            }

            fn task_cases(
                &self,
                queue_id: i64,
                task_id: i64,
                after: Option<i64>,
                limit: u32,
            ) -> Fut<'_, Option<(Vec<CaseRow>, u64)>> {
                Box::pin(async move {
                    let mut conn = self.pool.acquire().await?;
                    let task: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM tasks WHERE id = $1 AND queue_id = $2")
                            .bind(task_id)
                            .bind(queue_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if task.is_none() {
                        return Ok(None);
                    }
                    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cases WHERE task_id = $1")
                        .bind(task_id)
                        .fetch_one(&mut *conn)
                        .await?;
                    let rows = sqlx::query(&format!(
                        "SELECT {CASE_COLUMNS} FROM cases \
                         WHERE task_id = $1 AND position > $2 ORDER BY position LIMIT $3"
                    ))
                    .bind(task_id)
                    .bind(after.unwrap_or(-1))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?;
                    Ok(Some((all(&rows, case_row)?, total.max(0) as u64)))
                })
            }

            fn case_task<'a>(
                &'a self,
                queue_id: i64,
                key: &'a str,
                task: Option<i64>,
            ) -> Fut<'a, Option<FoundCase>> {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "SELECT tasks.position AS task_position, tasks.scenario, {} \
                         FROM cases JOIN tasks ON tasks.id = cases.task_id \
                         WHERE cases.queue_id = $1 AND cases.case_key = $2 AND ($3 IS NULL OR cases.task_id = $3) \
                         ORDER BY tasks.position LIMIT 1",
                        CASE_COLUMNS
                            .split(", ")
                            .map(|c| format!("cases.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .bind(queue_id)
                    .bind(key)
                    .bind(task)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| {
                        Ok(FoundCase {
                            task_position: r.try_get("task_position")?,
                            scenario: r.try_get("scenario")?,
                            case: case_row(&r)?,
                        })
                    })
                    .transpose()
                })
            }

            fn list_queues(
                &self,
                status: Option<QueueStatus>,
                limit: u32,
                before: Option<i64>,
                caps: CaseCaps,
            ) -> Fut<'_, Vec<QueueDetail>> {
                Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "SELECT {QUEUE_COLUMNS} FROM queues WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id < $2) \
                         ORDER BY id DESC LIMIT $3"
                    ))
                    .bind(status.map(|s| s.as_str()))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    self.details(all(&rows, queue_row)?, caps).await
                })
            }

            fn current_rev(&self) -> Fut<'_, i64> {
                Box::pin(async move {
                    Ok(
                        sqlx::query_scalar("SELECT value FROM change_seq WHERE id = 1")
                            .fetch_one(&self.pool)
                            .await?,
                    )
                })
            }

            fn changes_since(&self, rev: i64, caps: CaseCaps) -> Fut<'_, (Vec<QueueDetail>, Vec<i64>)> {
                Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "SELECT {QUEUE_COLUMNS} FROM queues WHERE rev > $1 ORDER BY id LIMIT 500"
                    ))
                    .bind(rev)
                    .fetch_all(&self.pool)
                    .await?;
                    let queues = all(&rows, queue_row)?;
                    let deleted: Vec<i64> =
                        sqlx::query_scalar("SELECT id FROM deleted_queues WHERE rev > $1 ORDER BY rev")
                            .bind(rev)
                            .fetch_all(&self.pool)
                            .await?;
                    Ok((self.details(queues, caps).await?, deleted))
                })
            }

            fn count_by_status(&self) -> Fut<'_, Vec<(String, i64)>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM queues GROUP BY status")
                        .fetch_all(&self.pool)
                        .await?;
                    all(&rows, |r| Ok((r.try_get("status")?, r.try_get("n")?)))
                })
            }

            fn running_by_worker(&self) -> Fut<'_, Vec<(String, i64)>> {
                Box::pin(async move {
                    let rows = sqlx::query(&format!(
                        "SELECT worker_id, id FROM queues WHERE status = {} AND worker_id IS NOT NULL ORDER BY id",
                        q(QueueStatus::Running)
                    ))
                    .fetch_all(&self.pool)
                    .await?;
                    all(&rows, |r| Ok((r.try_get("worker_id")?, r.try_get("id")?)))
                })
            }

            fn abort_waiting<'a>(&'a self, id: i64, reason: &'a str, now: i64) -> Fut<'a, bool> {
                Box::pin(async move {
                    let (from, to) = (QueueStatus::Waiting, QueueStatus::Aborted);
                    let done = sqlx::query(&format!(
                        "UPDATE queues SET status = {}, finished_at = $2, error = $3 \
                         WHERE id = $1 AND {}",
                        q(to),
                        queue_moves(from, to)
                    ))
                    .bind(id)
                    .bind(now)
                    .bind(reason)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 1 {
                        sqlx::query(&format!(
                            "UPDATE tasks SET status = {} WHERE queue_id = $1 AND {}",
                            cut_short(),
                            unfinished()
                        ))
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    }
                    Ok(done.rows_affected() == 1)
                })
            }

            fn request_abort(&self, id: i64) -> Fut<'_, ()> {
                Box::pin(async move {
                    sqlx::query(&format!(
                        "UPDATE queues SET abort_requested = 1 WHERE id = $1 AND status = {}",
                        q(QueueStatus::Running)
                    ))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn delete_queue(&self, id: i64) -> Fut<'_, bool> {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM queues WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() == 1)
                })
            }
        }
    };
}
pub(crate) use queues_impl;
