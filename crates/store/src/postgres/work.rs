//! PostgreSQL: the worker's side (the portable SQL of `crate::portable`, and the claim with
//! `FOR UPDATE SKIP LOCKED`).

use super::Postgres;

crate::portable::work_impl!(Postgres, sqlx::PgConnection);

impl Postgres {
    /// Inserts the cases of task `task_id` (of queue `queue_id`) in one statement, the columns
    /// as arrays; their ids, in order.
    async fn insert_cases(
        tx: &mut sqlx::PgConnection,
        task_id: i64,
        queue_id: i64,
        cases: &[NewCase],
    ) -> Result<Vec<i64>> {
        let sql = format!(
            "INSERT INTO cases (task_id, queue_id, position, case_key, name, status) \
             SELECT $1, $2, u.position, u.case_key, u.name, {} \
             FROM unnest($3::bigint[], $4::text[], $5::text[]) AS u(position, case_key, name) \
             RETURNING id, position",
            c(CaseStatus::INITIAL)
        );
        let mut rows: Vec<(i64, i64)> = sqlx::query_as(&sql)
            .bind(task_id)
            .bind(queue_id)
            .bind((0..cases.len() as i64).collect::<Vec<i64>>())
            .bind(cases.iter().map(|c| c.key.as_str()).collect::<Vec<&str>>())
            .bind(cases.iter().map(|c| c.name.as_str()).collect::<Vec<&str>>())
            .fetch_all(&mut *tx)
            .await?;
        rows.sort_by_key(|r| r.1);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Writes a batch's cases (one row each, see `crate::case_writes`) in one statement, the
    /// columns as arrays; `ClaimLost` (with the first such case) if a case's queue is not held
    /// by `holder` (the caller's transaction then writes nothing).
    async fn write_cases(
        tx: &mut sqlx::PgConnection,
        holder: &Holder,
        writes: &[crate::CaseWrite],
    ) -> Result<()> {
        let sql = format!(
            "UPDATE cases AS c SET status = u.status, \
             started_at = CASE WHEN u.started THEN u.started_at ELSE c.started_at END, \
             log_from = CASE WHEN u.started THEN u.log_from ELSE c.log_from END, \
             duration_ms = CASE WHEN u.finished THEN u.duration_ms ELSE c.duration_ms END, \
             message = CASE WHEN u.finished THEN u.message ELSE c.message END, \
             finished_at = CASE WHEN u.finished THEN u.finished_at ELSE c.finished_at END, \
             log_to = CASE WHEN u.finished THEN u.log_to ELSE c.log_to END \
             FROM unnest($2::bigint[], $3::text[], $4::bool[], $5::bigint[], $6::bigint[], \
                         $7::bool[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[]) \
                  AS u(id, status, started, started_at, log_from, \
                       finished, duration_ms, message, finished_at, log_to) \
             WHERE c.id = u.id AND EXISTS (SELECT 1 FROM queues WHERE queues.id = c.queue_id AND {} $1) \
             RETURNING c.id",
            held()
        );
        let column = |f: &dyn Fn(&crate::CaseWrite) -> Option<i64>| -> Vec<Option<i64>> {
            writes.iter().map(f).collect()
        };
        let done: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(holder.token())
            .bind(writes.iter().map(|w| w.case_id).collect::<Vec<i64>>())
            .bind(
                writes
                    .iter()
                    .map(|w| w.status.as_str())
                    .collect::<Vec<&str>>(),
            )
            .bind(
                writes
                    .iter()
                    .map(|w| w.started.is_some())
                    .collect::<Vec<bool>>(),
            )
            .bind(column(&|w| w.started.map(|s| s.0)))
            .bind(column(&|w| w.started.and_then(|s| s.1)))
            .bind(
                writes
                    .iter()
                    .map(|w| w.finished.is_some())
                    .collect::<Vec<bool>>(),
            )
            .bind(column(&|w| w.finished.as_ref().and_then(|f| f.duration_ms)))
            .bind(
                writes
                    .iter()
                    .map(|w| w.finished.as_ref().and_then(|f| f.message.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(column(&|w| w.finished.as_ref().map(|f| f.finished_at)))
            .bind(column(&|w| w.finished.as_ref().and_then(|f| f.log_to)))
            .fetch_all(&mut *tx)
            .await?;
        match writes.iter().find(|w| !done.contains(&w.case_id)) {
            Some(w) => Err(StoreError::ClaimLost(w.case_id)),
            None => Ok(()),
        }
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
        // Only a queue none of whose labels the worker lacks (NULL labels: none).
        let fits = "NOT EXISTS (SELECT 1 FROM json_array_elements_text(queues.labels::json) AS wanted (label) \
                    WHERE wanted.label <> ALL ($1))";
        // A short transaction: lock the next queue (skipping those another worker is
        // claiming right now, instead of waiting for them), then take it.
        let mut tx = self.pool.begin().await?;
        let next: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM queues WHERE {from} AND {fits} ORDER BY priority DESC, id ASC \
             LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(labels)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = next else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "UPDATE queues SET status = {}, worker_id = $1, lease_expires_at = $2, \
             started_at = COALESCE(started_at, $3), attempts = attempts + 1, abort_requested = 0 \
             WHERE id = $4 AND {from} RETURNING {QUEUE_COLUMNS}",
            q(to)
        ))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(queue_row).transpose()
    }
}
