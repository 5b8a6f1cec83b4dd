//! SQLite: the worker's side (the portable SQL of `crate::portable`, and the claim).

use super::Sqlite;

crate::portable::work_impl!(Sqlite, sqlx::SqliteConnection);

impl Sqlite {
    /// Inserts the cases of task `task_id` (of queue `queue_id`), in order; their ids.
    async fn insert_cases(
        tx: &mut sqlx::SqliteConnection,
        task_id: i64,
        queue_id: i64,
        cases: &[NewCase],
    ) -> Result<Vec<i64>> {
        let sql = format!(
            "INSERT INTO cases (task_id, queue_id, position, case_key, name, status) \
             VALUES ($1, $2, $3, $4, $5, {}) RETURNING id",
            c(CaseStatus::INITIAL)
        );
        let mut ids = Vec::with_capacity(cases.len());
        for (pos, case) in cases.iter().enumerate() {
            let id: i64 = sqlx::query_scalar(&sql)
                .bind(task_id)
                .bind(queue_id)
                .bind(pos as i64)
                .bind(&case.key)
                .bind(&case.name)
                .fetch_one(&mut *tx)
                .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Writes a batch's cases (one row each, see `crate::case_writes`); `ClaimLost` (with the
    /// case) at the first whose queue is not held by `holder` (the caller's transaction then
    /// writes nothing).
    async fn write_cases(
        tx: &mut sqlx::SqliteConnection,
        holder: &Holder,
        writes: &[crate::CaseWrite],
    ) -> Result<()> {
        let sql = format!(
            "UPDATE cases SET status = $3, \
             started_at = CASE WHEN $4 THEN $5 ELSE started_at END, \
             log_from = CASE WHEN $4 THEN $6 ELSE log_from END, \
             duration_ms = CASE WHEN $7 THEN $8 ELSE duration_ms END, \
             message = CASE WHEN $7 THEN $9 ELSE message END, \
             finished_at = CASE WHEN $7 THEN $10 ELSE finished_at END, \
             log_to = CASE WHEN $7 THEN $11 ELSE log_to END \
             WHERE id = $1 AND EXISTS (SELECT 1 FROM queues WHERE queues.id = cases.queue_id AND {} $2)",
            held()
        );
        for w in writes {
            let end = w.finished.as_ref();
            let written = sqlx::query(&sql)
                .bind(w.case_id)
                .bind(holder.token())
                .bind(w.status.as_str())
                .bind(w.started.is_some())
                .bind(w.started.map(|s| s.0))
                .bind(w.started.and_then(|s| s.1))
                .bind(w.finished.is_some())
                .bind(end.and_then(|e| e.duration_ms))
                .bind(end.and_then(|e| e.message.as_deref()))
                .bind(end.map(|e| e.finished_at))
                .bind(end.and_then(|e| e.log_to))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if written == 0 {
                return Err(StoreError::ClaimLost(w.case_id));
            }
        }
        Ok(())
    }

    /// Claims the next queue this worker may take, in this dialect.
    async fn claim_next(
        &self,
        worker: &str,
        labels: &[String],
        now: i64,
        lease_ms: i64,
    ) -> Result<Option<QueueRow>> {
        let to = QueueStatus::Running;
        let from = queue_may_become(to);
        let labels = to_json(Some(&labels))?;
        // Only a queue none of whose labels the worker lacks (NULL labels: none).
        let fits = "NOT EXISTS (SELECT 1 FROM json_each(queues.labels) AS wanted \
                    WHERE wanted.value NOT IN (SELECT value FROM json_each($4)))";
        // One statement: SQLite runs it under its write lock, so two workers never claim
        // one queue.
        let row = sqlx::query(&format!(
            "UPDATE queues SET status = {}, worker_id = $1, lease_expires_at = $2, \
             started_at = COALESCE(started_at, $3), attempts = attempts + 1, abort_requested = 0 \
             WHERE id = (SELECT id FROM queues WHERE {from} AND {fits} ORDER BY priority DESC, id ASC LIMIT 1) \
             AND {from} RETURNING {QUEUE_COLUMNS}",
            q(to)
        ))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .bind(labels)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(queue_row).transpose()
    }
}
