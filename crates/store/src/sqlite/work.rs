//! SQLite: the worker's side (the portable SQL of `crate::portable`, and the claim).

use super::Sqlite;

crate::portable::work_impl!(Sqlite, sqlx::SqliteConnection);

impl Sqlite {
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
