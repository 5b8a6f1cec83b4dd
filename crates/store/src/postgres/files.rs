//! PostgreSQL: a queue's files as chunks (the portable SQL of `crate::portable`; the fencing
//! read locks the queue row `FOR SHARE`).

use super::Postgres;

crate::portable::files_impl!(Postgres, sqlx::PgConnection, "FOR SHARE");

impl Postgres {
    /// Inserts `chunks` of queue `id` if `holder` holds it, in one statement: the queue row is
    /// locked `FOR SHARE` until it ends, so a lease taken back cannot commit in between (a round
    /// trip, not the five of a transaction with a fencing read: the shipper writes every
    /// 256 KiB of a flooding console).
    async fn put_held(&self, id: i64, holder: &Holder, chunks: &[Chunk]) -> Result<()> {
        let held: i64 = sqlx::query_scalar(&format!(
            "WITH held AS (SELECT id FROM queues WHERE id = $1 AND {} $2 FOR SHARE), \
             put AS (INSERT INTO queue_files (queue_id, name, start, data) \
                 SELECT $1, c.name, c.start, c.data \
                 FROM unnest($3::text[], $4::bigint[], $5::bytea[]) AS c(name, start, data) \
                 WHERE EXISTS (SELECT 1 FROM held) ON CONFLICT DO NOTHING) \
             SELECT count(*) FROM held",
            held()
        ))
        .bind(id)
        .bind(holder.token())
        .bind(
            chunks
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(chunks.iter().map(|c| c.start).collect::<Vec<i64>>())
        .bind(
            chunks
                .iter()
                .map(|c| c.data.as_slice())
                .collect::<Vec<&[u8]>>(),
        )
        .fetch_one(&self.pool)
        .await?;
        match held {
            0 => Err(StoreError::ClaimLost(id)),
            _ => Ok(()),
        }
    }
}
