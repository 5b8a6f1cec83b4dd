//! The SQLite backend.

use crate::rows::{
    CaseCaps, CaseRow, NewCase, QueueDetail, QueueRow, StaleGroup, TaskRow, WorkerRow,
};
use crate::{CaseResult, Result, StoreError, StoreOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::collections::HashMap;
use std::str::FromStr;
use testarena_core::api::Summary;
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, Phase, QueueStatus};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const QUEUE_COLUMNS: &str =
    "id, name, repo, branch, requested_commit, commit_sha, scenarios, status, phase, priority, \
     created_at, started_at, finished_at, error, abort_requested, worker_id, attempts, case_filter, rev, origin";

/// Condition that the queue `queues.id` is running and held by worker `$W`.
const HELD: &str = "status = 'running' AND worker_id = ";

#[derive(Clone, Debug)]
pub(crate) struct Sqlite {
    pool: SqlitePool,
}

fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Reads a nullable JSON column.
fn json_column<T: serde::de::DeserializeOwned>(r: &SqliteRow, column: &str) -> Result<Option<T>> {
    match r.try_get::<Option<String>, _>(column)? {
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))),
        None => Ok(None),
    }
}

/// Writes a nullable JSON column.
fn to_json<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value
        .map(|v| serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

fn queue_row(r: &SqliteRow) -> Result<QueueRow> {
    let phase: Option<String> = r.try_get("phase")?;
    Ok(QueueRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        repo: r.try_get("repo")?,
        branch: r.try_get("branch")?,
        requested_commit: r.try_get("requested_commit")?,
        commit: r.try_get("commit_sha")?,
        scenarios: json_column(r, "scenarios")?,
        status: parse(r.try_get::<&str, _>("status")?)?,
        phase: phase.as_deref().map(parse::<Phase>).transpose()?,
        priority: r.try_get("priority")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        error: r.try_get("error")?,
        abort_requested: r.try_get::<i64, _>("abort_requested")? != 0,
        worker_id: r.try_get("worker_id")?,
        attempts: r.try_get("attempts")?,
        case_filter: json_column(r, "case_filter")?,
        rev: r.try_get("rev")?,
        origin: json_column(r, "origin")?,
    })
}

fn task_row(r: &SqliteRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        queue_id: r.try_get("queue_id")?,
        position: r.try_get("position")?,
        scenario: r.try_get("scenario")?,
        status: parse(r.try_get::<&str, _>("status")?)?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        error: r.try_get("error")?,
    })
}

fn case_row(r: &SqliteRow) -> Result<CaseRow> {
    Ok(CaseRow {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        position: r.try_get("position")?,
        key: r.try_get("case_key")?,
        name: r.try_get("name")?,
        status: parse(r.try_get::<&str, _>("status")?)?,
        duration_ms: r.try_get("duration_ms")?,
        message: r.try_get("message")?,
    })
}

fn worker_row(r: &SqliteRow) -> Result<WorkerRow> {
    Ok(WorkerRow {
        id: r.try_get("id")?,
        hostname: r.try_get("hostname")?,
        pid: r.try_get("pid")?,
        started_at: r.try_get("started_at")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
        concurrency: r.try_get("concurrency")?,
        boot_id: r.try_get("boot_id")?,
    })
}

impl Sqlite {
    /// Opens the database; `pragmas` are set on every connection (tests use them to make a
    /// small database "full").
    pub(crate) async fn open(
        url: &str,
        options: &StoreOptions,
        pragmas: &[(&'static str, String)],
    ) -> Result<Self> {
        let mut opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        for (key, value) in pragmas {
            opts = opts.pragma(*key, value.clone());
        }
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A local file: checking each connection before use only adds a round trip.
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Sqlite { pool })
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await
    }

    /// Stores a queue; with a `delivery` that already made one, stores nothing and returns
    /// `Ok(None)`.
    pub(crate) async fn create_queue(
        &self,
        q: &ValidQueue,
        delivery: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        self.insert_queue(q, delivery, now)
            .await?
            .ok_or_else(|| StoreError::Conflict("delivery already seen".into()))
    }

    /// The queue of `delivery`: made now (`true`), or the one an earlier delivery made.
    pub(crate) async fn create_queue_once(
        &self,
        q: &ValidQueue,
        delivery: &str,
        now: i64,
    ) -> Result<(i64, bool)> {
        if let Some(id) = self.insert_queue(q, Some(delivery), now).await? {
            return Ok((id, true));
        }
        let id: i64 = sqlx::query_scalar("SELECT id FROM queues WHERE delivery = $1")
            .bind(delivery)
            .fetch_one(&self.pool)
            .await?;
        Ok((id, false))
    }

    async fn insert_queue(
        &self,
        q: &ValidQueue,
        delivery: Option<&str>,
        now: i64,
    ) -> Result<Option<i64>> {
        let scenarios = to_json(q.scenarios.as_ref())?;
        let case_filter = to_json(q.case_filter.as_ref())?;
        let origin = to_json(q.origin.as_ref())?;
        let mut tx = self.pool.begin().await?;
        // The INSERT comes first, so the transaction takes the write lock at once.
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO queues (name, repo, branch, requested_commit, scenarios, status, priority, created_at, case_filter, origin, delivery) \
             VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $7, $8, $9, $10) \
             ON CONFLICT (delivery) WHERE delivery IS NOT NULL DO NOTHING RETURNING id",
        )
        .bind(&q.name)
        .bind(&q.repo)
        .bind(&q.branch)
        .bind(&q.commit)
        .bind(&scenarios)
        .bind(q.priority)
        .bind(now)
        .bind(&case_filter)
        .bind(&origin)
        .bind(delivery)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        for (pos, s) in q.scenarios.iter().flatten().enumerate() {
            sqlx::query("INSERT INTO tasks (queue_id, position, scenario, status) VALUES ($1, $2, $3, 'pending')")
                .bind(id)
                .bind(pos as i64)
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn details(&self, queues: Vec<QueueRow>, caps: CaseCaps) -> Result<Vec<QueueDetail>> {
        let mut conn = self.pool.acquire().await?;
        details_on(&mut conn, queues, Some(caps)).await
    }

    pub(crate) async fn queue(
        &self,
        id: i64,
        caps: Option<CaseCaps>,
    ) -> Result<Option<QueueDetail>> {
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
    }

    pub(crate) async fn queue_row(&self, id: i64) -> Result<Option<QueueRow>> {
        let row = sqlx::query(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(queue_row).transpose()
    }

    pub(crate) async fn task_cases(
        &self,
        queue_id: i64,
        task_id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<(Vec<CaseRow>, u64)>> {
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
        let rows = sqlx::query(
            "SELECT id, task_id, position, case_key, name, status, duration_ms, message FROM cases \
             WHERE task_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        )
        .bind(task_id)
        .bind(after.unwrap_or(-1))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        let cases = rows.iter().map(case_row).collect::<Result<Vec<_>>>()?;
        Ok(Some((cases, total.max(0) as u64)))
    }

    pub(crate) async fn case_task(
        &self,
        queue_id: i64,
        key: &str,
        task: Option<i64>,
    ) -> Result<Option<(i64, String)>> {
        let row = sqlx::query(
            "SELECT tasks.position, tasks.scenario FROM cases JOIN tasks ON tasks.id = cases.task_id \
             WHERE cases.queue_id = $1 AND cases.case_key = $2 AND ($3 IS NULL OR cases.task_id = $3) \
             ORDER BY tasks.position LIMIT 1",
        )
        .bind(queue_id)
        .bind(key)
        .bind(task)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("position")?, r.try_get("scenario")?)))
            .transpose()
    }

    pub(crate) async fn list_queues(
        &self,
        status: Option<QueueStatus>,
        limit: u32,
        before: Option<i64>,
        caps: CaseCaps,
    ) -> Result<Vec<QueueDetail>> {
        let rows = sqlx::query(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(status.map(|s| s.as_str()))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let queues = rows.iter().map(queue_row).collect::<Result<Vec<_>>>()?;
        self.details(queues, caps).await
    }

    pub(crate) async fn current_rev(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM change_seq WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn changes_since(
        &self,
        rev: i64,
        caps: CaseCaps,
    ) -> Result<(Vec<QueueDetail>, Vec<i64>)> {
        let rows = sqlx::query(&format!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE rev > $1 ORDER BY id LIMIT 500"
        ))
        .bind(rev)
        .fetch_all(&self.pool)
        .await?;
        let queues = rows.iter().map(queue_row).collect::<Result<Vec<_>>>()?;
        let deleted: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM deleted_queues WHERE rev > $1 ORDER BY rev")
                .bind(rev)
                .fetch_all(&self.pool)
                .await?;
        Ok((self.details(queues, caps).await?, deleted))
    }

    pub(crate) async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM queues GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    pub(crate) async fn running_by_worker(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT worker_id, id FROM queues WHERE status = 'running' AND worker_id IS NOT NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("worker_id")?, r.try_get("id")?)))
            .collect()
    }

    pub(crate) async fn abort_waiting(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE queues SET status = 'aborted', finished_at = $2, error = 'aborted before it started' \
             WHERE id = $1 AND status = 'waiting'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            sqlx::query(
                "UPDATE tasks SET status = 'skipped' WHERE queue_id = $1 AND status = 'pending'",
            )
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn request_abort(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE queues SET abort_requested = 1 WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn delete_queue(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM queues WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn register_worker(&self, w: &WorkerRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO workers (id, hostname, pid, started_at, heartbeat_at, concurrency, boot_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&w.id)
        .bind(&w.hostname)
        .bind(w.pid)
        .bind(w.started_at)
        .bind(w.heartbeat_at)
        .bind(w.concurrency)
        .bind(&w.boot_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn workers_on(&self, hostname: &str) -> Result<Vec<WorkerRow>> {
        let rows = sqlx::query("SELECT * FROM workers WHERE hostname = $1")
            .bind(hostname)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(worker_row).collect()
    }

    pub(crate) async fn expire_worker(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE queues SET lease_expires_at = 0 WHERE status = 'running' AND worker_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn worker_heartbeat(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE workers SET heartbeat_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn unregister_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn workers(&self, since: i64) -> Result<Vec<WorkerRow>> {
        let rows =
            sqlx::query("SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY started_at")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(worker_row).collect()
    }

    pub(crate) async fn claim(
        &self,
        worker: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<QueueRow>> {
        // One statement: SQLite runs it under its write lock, so two workers never claim one queue.
        let row = sqlx::query(&format!(
            "UPDATE queues SET status = 'running', worker_id = $1, lease_expires_at = $2, \
             started_at = COALESCE(started_at, $3), attempts = attempts + 1, abort_requested = 0 \
             WHERE id = (SELECT id FROM queues WHERE status = 'waiting' ORDER BY priority DESC, id ASC LIMIT 1) \
             AND status = 'waiting' RETURNING {QUEUE_COLUMNS}"
        ))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(queue_row).transpose()
    }

    pub(crate) async fn reclaim_expired(
        &self,
        now: i64,
        max_attempts: i64,
    ) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut tx = self.pool.begin().await?;
        let given_up: Vec<i64> = sqlx::query_scalar(
            "UPDATE queues SET status = 'error', phase = NULL, finished_at = $1, lease_expires_at = NULL, \
             error = 'worker lost (lease expired) ' || attempts || ' times; giving up' \
             WHERE status = 'running' AND lease_expires_at < $1 AND attempts >= $2 RETURNING id",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        for id in &given_up {
            sqlx::query("UPDATE cases SET status = CASE status WHEN 'running' THEN 'error' ELSE 'skipped' END, message = COALESCE(message, 'worker lost') WHERE queue_id = $1 AND status IN ('pending', 'running')")
                .bind(id).execute(&mut *tx).await?;
            sqlx::query("UPDATE tasks SET status = CASE status WHEN 'running' THEN 'error' ELSE 'skipped' END WHERE queue_id = $1 AND status IN ('pending', 'running')")
                .bind(id).execute(&mut *tx).await?;
        }
        let taken_back: Vec<i64> = sqlx::query_scalar(
            "UPDATE queues SET status = 'waiting', phase = NULL, worker_id = NULL, lease_expires_at = NULL \
             WHERE status = 'running' AND lease_expires_at < $1 AND attempts < $2 RETURNING id",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        for id in &taken_back {
            // Start over: results of the lost attempt are dropped, tasks made from the
            // repository's default set are made again after the next checkout.
            sqlx::query("DELETE FROM cases WHERE queue_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM tasks WHERE queue_id = $1 AND (SELECT scenarios FROM queues WHERE id = $1) IS NULL")
                .bind(id).execute(&mut *tx).await?;
            sqlx::query("UPDATE tasks SET status = 'pending', started_at = NULL, finished_at = NULL, error = NULL WHERE queue_id = $1")
                .bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok((taken_back, given_up))
    }

    pub(crate) async fn renew_lease(
        &self,
        id: i64,
        worker: &str,
        until: i64,
    ) -> Result<Option<bool>> {
        let abort: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE queues SET lease_expires_at = $3 WHERE id = $1 AND {HELD} $2 RETURNING abort_requested"
        ))
        .bind(id)
        .bind(worker)
        .bind(until)
        .fetch_optional(&self.pool)
        .await?;
        Ok(abort.map(|a| a != 0))
    }

    /// Runs an update that only applies while the worker holds the queue; `ClaimLost` otherwise.
    async fn held_update<'q>(
        &self,
        id: i64,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<()> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ClaimLost(id));
        }
        Ok(())
    }

    pub(crate) async fn set_phase(
        &self,
        id: i64,
        worker: &str,
        phase: Option<Phase>,
    ) -> Result<()> {
        let sql = format!("UPDATE queues SET phase = $3 WHERE id = $1 AND {HELD} $2");
        self.held_update(
            id,
            sqlx::query(&sql)
                .bind(id)
                .bind(worker)
                .bind(phase.map(|p| p.as_str())),
        )
        .await
    }

    pub(crate) async fn set_commit(&self, id: i64, worker: &str, sha: &str) -> Result<()> {
        let sql = format!("UPDATE queues SET commit_sha = $3 WHERE id = $1 AND {HELD} $2");
        self.held_update(id, sqlx::query(&sql).bind(id).bind(worker).bind(sha))
            .await
    }

    pub(crate) async fn create_tasks(
        &self,
        id: i64,
        worker: &str,
        scenarios: &[String],
    ) -> Result<Vec<TaskRow>> {
        let mut tx = self.pool.begin().await?;
        let held: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM queues WHERE id = $1 AND {HELD} $2"
        ))
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(StoreError::ClaimLost(id));
        }
        let mut out = Vec::new();
        for (pos, s) in scenarios.iter().enumerate() {
            let r = sqlx::query(
                "INSERT INTO tasks (queue_id, position, scenario, status) VALUES ($1, $2, $3, 'pending') \
                 RETURNING id, queue_id, position, scenario, status, started_at, finished_at, error",
            )
            .bind(id)
            .bind(pos as i64)
            .bind(s)
            .fetch_one(&mut *tx)
            .await?;
            out.push(task_row(&r)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn set_task(
        &self,
        task_id: i64,
        worker: &str,
        status: CaseStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE tasks SET status = $3, error = COALESCE($4, error), \
             started_at = CASE WHEN $3 = 'running' THEN $5 ELSE started_at END, \
             finished_at = CASE WHEN $3 IN ('passed','failed','error','skipped') THEN $5 ELSE finished_at END \
             WHERE id = $1 AND EXISTS (SELECT 1 FROM queues WHERE queues.id = tasks.queue_id AND {HELD} $2)"
        );
        self.held_update(
            task_id,
            sqlx::query(&sql)
                .bind(task_id)
                .bind(worker)
                .bind(status.as_str())
                .bind(error)
                .bind(now),
        )
        .await
    }

    pub(crate) async fn create_cases(
        &self,
        task_id: i64,
        worker: &str,
        cases: &[NewCase],
    ) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let queue_id: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT tasks.queue_id FROM tasks JOIN queues ON queues.id = tasks.queue_id \
             WHERE tasks.id = $1 AND queues.{HELD} $2"
        ))
        .bind(task_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(queue_id) = queue_id else {
            return Err(StoreError::ClaimLost(task_id));
        };
        sqlx::query("DELETE FROM cases WHERE task_id = $1")
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        let mut ids = Vec::with_capacity(cases.len());
        for (pos, c) in cases.iter().enumerate() {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO cases (task_id, queue_id, position, case_key, name, status) VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING id",
            )
            .bind(task_id)
            .bind(queue_id)
            .bind(pos as i64)
            .bind(&c.key)
            .bind(&c.name)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub(crate) async fn start_case(&self, case_id: i64, worker: &str, now: i64) -> Result<()> {
        let sql = format!(
            "UPDATE cases SET status = 'running', started_at = $3 \
             WHERE id = $1 AND EXISTS (SELECT 1 FROM queues WHERE queues.id = cases.queue_id AND {HELD} $2)"
        );
        self.held_update(
            case_id,
            sqlx::query(&sql).bind(case_id).bind(worker).bind(now),
        )
        .await
    }

    pub(crate) async fn finish_case(
        &self,
        case_id: i64,
        worker: &str,
        r: &CaseResult,
        now: i64,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE cases SET status = $3, duration_ms = $4, message = $5, finished_at = $6 \
             WHERE id = $1 AND EXISTS (SELECT 1 FROM queues WHERE queues.id = cases.queue_id AND {HELD} $2)"
        );
        let duration = r.duration_ms.map(|d| d.min(i64::MAX as u64) as i64);
        self.held_update(
            case_id,
            sqlx::query(&sql)
                .bind(case_id)
                .bind(worker)
                .bind(r.status.as_str())
                .bind(duration)
                .bind(r.message.as_deref())
                .bind(now),
        )
        .await
    }

    pub(crate) async fn close_unfinished(
        &self,
        id: i64,
        worker: &str,
        running_message: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let held: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM queues WHERE id = $1 AND {HELD} $2"
        ))
        .bind(id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(StoreError::ClaimLost(id));
        }
        sqlx::query(
            "UPDATE cases SET status = CASE status WHEN 'running' THEN 'error' ELSE 'skipped' END, \
             message = CASE status WHEN 'running' THEN COALESCE(message, $2) ELSE message END, finished_at = $3 \
             WHERE queue_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(id)
        .bind(running_message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET status = CASE status WHEN 'running' THEN 'error' ELSE 'skipped' END, \
             error = CASE status WHEN 'running' THEN COALESCE(error, $2) ELSE error END, finished_at = $3 \
             WHERE queue_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(id)
        .bind(running_message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn finish_queue(
        &self,
        id: i64,
        worker: &str,
        status: QueueStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE queues SET status = $3, error = $4, phase = NULL, finished_at = $5, lease_expires_at = NULL \
             WHERE id = $1 AND {HELD} $2"
        );
        self.held_update(
            id,
            sqlx::query(&sql)
                .bind(id)
                .bind(worker)
                .bind(status.as_str())
                .bind(error)
                .bind(now),
        )
        .await
    }

    pub(crate) async fn record_group(&self, g: &StaleGroup) -> Result<()> {
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
    }

    pub(crate) async fn forget_group(&self, hostname: &str, pgid: i32) -> Result<()> {
        sqlx::query("DELETE FROM process_groups WHERE hostname = $1 AND pgid = $2")
            .bind(hostname)
            .bind(pgid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn take_stale_groups(
        &self,
        hostname: &str,
        alive_since: i64,
    ) -> Result<Vec<StaleGroup>> {
        let rows = sqlx::query(
            "DELETE FROM process_groups WHERE hostname = $1 AND worker_id NOT IN \
             (SELECT id FROM workers WHERE heartbeat_at >= $2) \
             RETURNING pgid, worker_id, hostname, boot_id, queue_id, command",
        )
        .bind(hostname)
        .bind(alive_since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StaleGroup {
                    pgid: r.try_get("pgid")?,
                    worker_id: r.try_get("worker_id")?,
                    hostname: r.try_get("hostname")?,
                    boot_id: r.try_get("boot_id")?,
                    queue_id: r.try_get("queue_id")?,
                    command: r.try_get("command")?,
                })
            })
            .collect()
    }
}

/// Tasks and cases of `queues`, read on one connection: every case, or with `caps` only the
/// first ones (and the counts of all).
async fn details_on(
    conn: &mut sqlx::SqliteConnection,
    queues: Vec<QueueRow>,
    caps: Option<CaseCaps>,
) -> Result<Vec<QueueDetail>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    // One statement text whatever the ids (bound as a JSON array), so SQLite's prepared
    // statement is reused; one connection for every read.
    let ids = serde_json::to_string(&queues.iter().map(|q| q.id).collect::<Vec<_>>())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let tasks = sqlx::query(
        "SELECT id, queue_id, position, scenario, status, started_at, finished_at, error FROM tasks \
         WHERE queue_id IN (SELECT value FROM json_each($1)) ORDER BY queue_id, position",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts: HashMap<i64, Summary> = HashMap::new();
    let cases = match caps {
        None => {
            sqlx::query(
                "SELECT id, task_id, position, case_key, name, status, duration_ms, message FROM cases \
                 WHERE queue_id IN (SELECT value FROM json_each($1)) ORDER BY task_id, position",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(caps) => {
            let by_status = sqlx::query(
                "SELECT task_id, status, COUNT(*) AS n FROM cases \
                 WHERE queue_id IN (SELECT value FROM json_each($1)) GROUP BY task_id, status",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
            for r in &by_status {
                let status: CaseStatus = parse(r.try_get::<&str, _>("status")?)?;
                let n: i64 = r.try_get("n")?;
                let n = n.max(0) as u64;
                let c = counts.entry(r.try_get("task_id")?).or_default();
                c.total += n;
                match status {
                    CaseStatus::Passed => c.passed += n,
                    CaseStatus::Failed => c.failed += n,
                    CaseStatus::Error => c.error += n,
                    CaseStatus::Skipped => c.skipped += n,
                    CaseStatus::Pending | CaseStatus::Running => {}
                }
            }
            // The first `per_task` cases of each task, then the first `per_queue` of those in
            // task order.
            sqlx::query(
                "SELECT id, task_id, position, case_key, name, status, duration_ms, message FROM ( \
                   SELECT f.*, ROW_NUMBER() OVER (PARTITION BY f.queue_id ORDER BY f.task_position, f.position) AS qn FROM ( \
                     SELECT c.id, c.task_id, c.queue_id, c.position, c.case_key, c.name, c.status, c.duration_ms, c.message, \
                            t.position AS task_position, \
                            ROW_NUMBER() OVER (PARTITION BY c.task_id ORDER BY c.position) AS tn \
                     FROM cases c JOIN tasks t ON t.id = c.task_id \
                     WHERE c.queue_id IN (SELECT value FROM json_each($1))) f \
                   WHERE f.tn <= $2) \
                 WHERE qn <= $3 ORDER BY task_id, position",
            )
            .bind(&ids)
            .bind(i64::from(caps.per_task))
            .bind(i64::from(caps.per_queue))
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut cases_by_task: HashMap<i64, Vec<CaseRow>> = HashMap::new();
    for r in &cases {
        let c = case_row(r)?;
        cases_by_task.entry(c.task_id).or_default().push(c);
    }
    let mut tasks_by_queue: HashMap<i64, Vec<(TaskRow, Vec<CaseRow>)>> = HashMap::new();
    let mut counts_by_queue: HashMap<i64, HashMap<i64, Summary>> = HashMap::new();
    for r in &tasks {
        let t = task_row(r)?;
        let cs = cases_by_task.remove(&t.id).unwrap_or_default();
        if caps.is_some() {
            let c = counts.remove(&t.id).unwrap_or_default();
            counts_by_queue
                .entry(t.queue_id)
                .or_default()
                .insert(t.id, c);
        }
        tasks_by_queue.entry(t.queue_id).or_default().push((t, cs));
    }
    Ok(queues
        .into_iter()
        .map(|queue| {
            let tasks = tasks_by_queue.remove(&queue.id).unwrap_or_default();
            let counts = counts_by_queue.remove(&queue.id).unwrap_or_default();
            QueueDetail {
                queue,
                tasks,
                counts,
            }
        })
        .collect())
}
