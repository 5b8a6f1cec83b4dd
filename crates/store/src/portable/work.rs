//! The portable SQL of the `Work` side of a backend.

/// The `Work` methods of a backend (claims excepted: each dialect has its own `claim_next`),
/// in SQL both dialects speak, written once.
macro_rules! work_impl {
    ($backend:ident, $conn:ty) => {
        use super::all;
        use crate::backend::{Fut, TaskUpdate, Work};
        use crate::guards::{
            c, cut_short, held, q, queue_may_become, queue_moves, running_for, unfinished,
        };
        use crate::rows::{
            queue_row, stale_group, task_row, to_json, worker_row, Holder, NewCase, QueueRow, StaleGroup,
            TaskRow, WorkerRow, QUEUE_COLUMNS, TASK_COLUMNS,
        };
        use crate::{CaseUpdate, Result, StoreError};
        use testarena_core::{CaseStatus, Phase, QueueStatus};

        impl $backend {
            /// Whether `holder` holds queue `id` now, inside a transaction.
            async fn holds(conn: &mut $conn, id: i64, holder: &Holder) -> Result<()> {
                let held: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT id FROM queues WHERE id = $1 AND {} $2",
                    held()
                ))
                .bind(id)
                .bind(holder.token())
                .fetch_optional(&mut *conn)
                .await?;
                held.map(|_| ()).ok_or(StoreError::ClaimLost(id))
            }

            /// Ends queues whose lease ran out and that are not to be run again: those whose
            /// abort was asked for (`aborted`: the worker was lost before it could stop) and those
            /// lost `max_attempts` times (`error`). Their unfinished cases and tasks are cut short.
            async fn give_up(
                tx: &mut $conn,
                now: i64,
                max_attempts: i64,
            ) -> Result<Vec<i64>> {
                let from = QueueStatus::Running;
                let mut given_up: Vec<i64> = Vec::new();
                for (to, error, which) in [
                    (
                        QueueStatus::Aborted,
                        "'aborted on request (its worker was lost before it could stop)'",
                        "abort_requested = 1",
                    ),
                    (
                        QueueStatus::Error,
                        "'worker lost (lease expired) ' || attempts || ' times; giving up'",
                        "attempts >= $2",
                    ),
                ] {
                    let sql = format!(
                        "UPDATE queues SET status = {}, phase = NULL, finished_at = $1, lease_expires_at = NULL, \
                         error = {error} WHERE {} AND lease_expires_at < $1 AND {which} RETURNING id",
                        q(to),
                        queue_moves(from, to)
                    );
                    let query = sqlx::query_scalar::<_, i64>(&sql).bind(now);
                    // Only the second condition has a parameter of its own.
                    let query = if which.contains("$2") { query.bind(max_attempts) } else { query };
                    given_up.extend(query.fetch_all(&mut *tx).await?);
                }
                let (cases, tasks) = (
                    format!(
                        "UPDATE cases SET status = {}, message = COALESCE(message, 'worker lost') WHERE queue_id = $1 AND {}",
                        cut_short(),
                        unfinished()
                    ),
                    format!(
                        "UPDATE tasks SET status = {} WHERE queue_id = $1 AND {}",
                        cut_short(),
                        unfinished()
                    ),
                );
                for id in &given_up {
                    sqlx::query(&cases).bind(id).execute(&mut *tx).await?;
                    sqlx::query(&tasks).bind(id).execute(&mut *tx).await?;
                }
                Ok(given_up)
            }

            /// Takes back queues whose lease ran out: they wait again and start over.
            async fn take_back(
                tx: &mut $conn,
                now: i64,
                max_attempts: i64,
            ) -> Result<Vec<i64>> {
                let to = QueueStatus::Waiting;
                let taken_back: Vec<i64> = sqlx::query_scalar(&format!(
                    "UPDATE queues SET status = {}, phase = NULL, worker_id = NULL, lease_expires_at = NULL \
                     WHERE {} AND lease_expires_at < $1 AND attempts < $2 RETURNING id",
                    q(to),
                    queue_may_become(to)
                ))
                .bind(now)
                .bind(max_attempts)
                .fetch_all(&mut *tx)
                .await?;
                for id in &taken_back {
                    $backend::start_over(tx, *id).await?;
                }
                Ok(taken_back)
            }

            /// Start over: results of the lost attempt are dropped, tasks made from the repository's
            /// default set are made again after the next checkout, the others are new.
            async fn start_over(tx: &mut $conn, id: i64) -> Result<()> {
                let reset = format!(
                    "UPDATE tasks SET status = {}, started_at = NULL, finished_at = NULL, error = NULL WHERE queue_id = $1",
                    c(CaseStatus::INITIAL)
                );
                sqlx::query("DELETE FROM cases WHERE queue_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM tasks WHERE queue_id = $1 AND (SELECT scenarios FROM queues WHERE id = $1) IS NULL")
                    .bind(id).execute(&mut *tx).await?;
                sqlx::query(&reset).bind(id).execute(&mut *tx).await?;
                Ok(())
            }
        }

        impl Work for $backend {
            fn register_worker<'a>(&'a self, w: &'a WorkerRow) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at, concurrency, boot_id, version, labels) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                    )
                    .bind(&w.id)
                    .bind(&w.hostname)
                    .bind(w.pid)
                    .bind(w.started_at)
                    .bind(w.heartbeat_at)
                    .bind(w.concurrency)
                    .bind(&w.boot_id)
                    .bind(&w.version)
                    .bind(to_json(Some(&w.labels))?)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn workers_on<'a>(&'a self, hostname: &'a str) -> Fut<'a, Vec<WorkerRow>> {
                Box::pin(async move {
                    let rows = sqlx::query("SELECT * FROM workers WHERE hostname = $1")
                        .bind(hostname)
                        .fetch_all(&self.pool)
                        .await?;
                    all(&rows, worker_row)
                })
            }

            fn expire_worker<'a>(&'a self, id: &'a str) -> Fut<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query(&format!(
                        "UPDATE queues SET lease_expires_at = 0 WHERE {} $1",
                        running_for()
                    ))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM workers WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn worker_heartbeat<'a>(&'a self, id: &'a str, now: i64) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query("UPDATE workers SET heartbeat_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn unregister_worker<'a>(&'a self, id: &'a str) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM workers WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn workers(&self, since: i64) -> Fut<'_, Vec<WorkerRow>> {
                Box::pin(async move {
                    let rows =
                        sqlx::query("SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY started_at")
                            .bind(since)
                            .fetch_all(&self.pool)
                            .await?;
                    all(&rows, worker_row)
                })
            }

            fn claim<'a>(
                &'a self,
                worker: &'a str,
                labels: &'a [String],
                now: i64,
                lease_ms: i64,
            ) -> Fut<'a, Option<QueueRow>> {
                Box::pin(self.claim_next(worker, labels, now, lease_ms))
            }

            fn hand_back<'a>(&'a self, id: i64, holder: &'a Holder) -> Fut<'a, bool> {
                Box::pin(async move {
                    let to = QueueStatus::Waiting;
                    let mut tx = self.pool.begin().await?;
                    // `attempts` stays: it counts claims and fences the attempt that ends here.
                    let done = sqlx::query(&format!(
                        "UPDATE queues SET status = {}, phase = NULL, worker_id = NULL, lease_expires_at = NULL \
                         WHERE id = $1 AND {} $2",
                        q(to),
                        held()
                    ))
                    .bind(id)
                    .bind(holder.token())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    $backend::start_over(&mut tx, id).await?;
                    tx.commit().await?;
                    Ok(true)
                })
            }

            fn reclaim_expired(&self, now: i64, max_attempts: i64) -> Fut<'_, (Vec<i64>, Vec<i64>)> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let given_up = $backend::give_up(&mut tx, now, max_attempts).await?;
                    let taken_back = $backend::take_back(&mut tx, now, max_attempts).await?;
                    tx.commit().await?;
                    Ok((taken_back, given_up))
                })
            }

            fn renew_lease<'a>(&'a self, id: i64, holder: &'a Holder, until: i64) -> Fut<'a, Option<bool>> {
                Box::pin(async move {
                    let abort: Option<i64> = sqlx::query_scalar(&format!(
                        "UPDATE queues SET lease_expires_at = $3 WHERE id = $1 AND {} $2 RETURNING abort_requested",
                        held()
                    ))
                    .bind(id)
                    .bind(holder.token())
                    .bind(until)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(abort.map(|a| a != 0))
                })
            }

            fn set_phase<'a>(&'a self, id: i64, holder: &'a Holder, phase: Option<Phase>) -> Fut<'a, ()> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE queues SET phase = $3 WHERE id = $1 AND {} $2",
                        held()
                    );
                    let query = sqlx::query(&sql)
                        .bind(id)
                        .bind(holder.token())
                        .bind(phase.map(|p| p.as_str()));
                    self.held_update(id, query).await
                })
            }

            fn set_commit<'a>(&'a self, id: i64, holder: &'a Holder, sha: &'a str) -> Fut<'a, ()> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE queues SET commit_sha = $3 WHERE id = $1 AND {} $2",
                        held()
                    );
                    self.held_update(
                        id,
                        sqlx::query(&sql).bind(id).bind(holder.token()).bind(sha),
                    )
                    .await
                })
            }

            fn set_build_cached_from<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                from: Option<i64>,
            ) -> Fut<'a, ()> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE queues SET build_cached_from = $3 WHERE id = $1 AND {} $2",
                        held()
                    );
                    self.held_update(
                        id,
                        sqlx::query(&sql).bind(id).bind(holder.token()).bind(from),
                    )
                    .await
                })
            }

            fn create_tasks<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                scenarios: &'a [String],
            ) -> Fut<'a, Vec<TaskRow>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    $backend::holds(&mut tx, id, holder).await?;
                    let sql = format!(
                        "INSERT INTO tasks (queue_id, position, scenario, status) VALUES ($1, $2, $3, {}) \
                         RETURNING {TASK_COLUMNS}",
                        c(CaseStatus::INITIAL)
                    );
                    let mut out = Vec::new();
                    for (pos, s) in scenarios.iter().enumerate() {
                        let r = sqlx::query(&sql)
                            .bind(id)
                            .bind(pos as i64)
                            .bind(s)
                            .fetch_one(&mut *tx)
                            .await?;
                        out.push(task_row(&r)?);
                    }
                    tx.commit().await?;
                    Ok(out)
                })
            }

            fn set_task<'a>(&'a self, task: TaskUpdate<'a>, holder: &'a Holder) -> Fut<'a, ()> {
                Box::pin(async move {
                    let sql = format!(
                        "UPDATE tasks SET status = $3, error = COALESCE($4, error), \
                         started_at = COALESCE($5, started_at), finished_at = COALESCE($6, finished_at) \
                         WHERE id = $1 AND EXISTS (SELECT 1 FROM queues WHERE queues.id = tasks.queue_id AND {} $2)",
                        held()
                    );
                    let query = sqlx::query(&sql)
                        .bind(task.id)
                        .bind(holder.token())
                        .bind(task.status.as_str())
                        .bind(task.error)
                        .bind(task.started_at)
                        .bind(task.finished_at);
                    self.held_update(task.id, query).await
                })
            }

            fn create_cases<'a>(
                &'a self,
                task_id: i64,
                holder: &'a Holder,
                cases: &'a [NewCase],
            ) -> Fut<'a, Vec<i64>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let queue_id: Option<i64> = sqlx::query_scalar(&format!(
                        "SELECT tasks.queue_id FROM tasks JOIN queues ON queues.id = tasks.queue_id \
                         WHERE tasks.id = $1 AND queues.{} $2",
                        held()
                    ))
                    .bind(task_id)
                    .bind(holder.token())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(queue_id) = queue_id else {
                        return Err(StoreError::ClaimLost(task_id));
                    };
                    sqlx::query("DELETE FROM cases WHERE task_id = $1")
                        .bind(task_id)
                        .execute(&mut *tx)
                        .await?;
                    let ids = Self::insert_cases(&mut tx, task_id, queue_id, cases).await?;
                    tx.commit().await?;
                    Ok(ids)
                })
            }

            fn record_cases<'a>(&'a self, holder: &'a Holder, updates: &'a [CaseUpdate]) -> Fut<'a, ()> {
                Box::pin(async move {
                    let writes = crate::case_writes(updates);
                    let mut tx = self.pool.begin().await?;
                    Self::write_cases(&mut tx, holder, &writes).await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn close_unfinished<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                running_message: &'a str,
                now: i64,
            ) -> Fut<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    $backend::holds(&mut tx, id, holder).await?;
                    let running = c(CaseStatus::Running);
                    for (table, text) in [("cases", "message"), ("tasks", "error")] {
                        sqlx::query(&format!(
                            "UPDATE {table} SET status = {}, \
                             {text} = CASE WHEN status = {running} THEN COALESCE({text}, $2) ELSE {text} END, finished_at = $3 \
                             WHERE queue_id = $1 AND {}",
                            cut_short(),
                            unfinished()
                        ))
                        .bind(id)
                        .bind(running_message)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn finish_queue<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                status: QueueStatus,
                error: Option<&'a str>,
                now: i64,
            ) -> Fut<'a, ()> {
                Box::pin(async move {
                    use crate::rows::Columns;
                    let sql = format!(
                        "UPDATE queues SET status = $3, error = $4, phase = NULL, finished_at = $5, lease_expires_at = NULL \
                         WHERE id = $1 AND {} $2 RETURNING repo, branch, commit_sha",
                        held()
                    );
                    let mut tx = self.pool.begin().await?;
                    let row = sqlx::query(&sql)
                        .bind(id)
                        .bind(holder.token())
                        .bind(status.as_str())
                        .bind(error)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(row) = row else {
                        return Err(StoreError::ClaimLost(id));
                    };
                    let (repo, branch) = (row.text("repo")?, row.text("branch")?);
                    let commit = row.opt_text("commit_sha")?;
                    // The run's history goes in with its verdict (`crate::history`).
                    let run = crate::history::Run {
                        id,
                        status,
                        repo: &repo,
                        branch: &branch,
                        commit: commit.as_deref(),
                        finished_at: now,
                    };
                    $backend::record_run(&mut tx, run).await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn record_group<'a>(&'a self, g: &'a StaleGroup) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO process_groups (pgid, worker_id, hostname, boot_id, queue_id, command) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (hostname, pgid) DO UPDATE SET worker_id = excluded.worker_id, boot_id = excluded.boot_id, \
                         queue_id = excluded.queue_id, command = excluded.command",
                    )
                    .bind(g.pgid)
                    .bind(&g.worker_id)
                    .bind(&g.hostname)
                    .bind(&g.boot_id)
                    .bind(g.queue_id)
                    .bind(&g.command)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn forget_group<'a>(&'a self, hostname: &'a str, pgid: i32) -> Fut<'a, ()> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM process_groups WHERE hostname = $1 AND pgid = $2")
                        .bind(hostname)
                        .bind(pgid)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn take_stale_groups<'a>(
                &'a self,
                hostname: &'a str,
                alive_since: i64,
            ) -> Fut<'a, Vec<StaleGroup>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "DELETE FROM process_groups WHERE hostname = $1 AND worker_id NOT IN \
                         (SELECT id FROM workers WHERE heartbeat_at >= $2) \
                         RETURNING pgid, worker_id, hostname, boot_id, queue_id, command",
                    )
                    .bind(hostname)
                    .bind(alive_since)
                    .fetch_all(&self.pool)
                    .await?;
                    all(&rows, stale_group)
                })
            }
        }
    };
}
pub(crate) use work_impl;
