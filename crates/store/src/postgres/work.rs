//! PostgreSQL: the worker's side (the portable SQL of `crate::portable`, and the claim with
//! `FOR UPDATE SKIP LOCKED`).

use super::Postgres;

crate::portable::work_impl!(Postgres, sqlx::PgConnection);

impl Postgres {
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
