//! The portable SQL of the `Files` side of a backend.

/// The `Files` methods of a backend, in SQL both dialects speak, written once. `$lock` is
/// what the fencing read of the queue row adds in the dialect (PostgreSQL: `FOR SHARE`, so a
/// lease taken back cannot commit between the check and the write; SQLite writes one at a
/// time anyway).
macro_rules! files_impl {
    ($backend:ident, $conn:ty, $lock:literal) => {
        use super::all;
        use crate::backend::{Files, Fut};
        use crate::rows::Chunk;
        use crate::guards::held;
        use crate::rows::Holder;
        use crate::{Result, StoreError};
        use sqlx::Row;

        impl $backend {
            /// Whether `holder` holds queue `id` now, inside a transaction, keeping it held
            /// until the transaction ends.
            async fn holds_for_files(conn: &mut $conn, id: i64, holder: &Holder) -> Result<()> {
                let held: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT id FROM queues WHERE id = $1 AND {} $2 {}",
                    held(),
                    $lock
                ))
                .bind(id)
                .bind(holder.token())
                .fetch_optional(&mut *conn)
                .await?;
                held.map(|_| ()).ok_or(StoreError::ClaimLost(id))
            }

            /// Inserts `chunks` of queue `id`, leaving any already there as they are.
            async fn insert_chunks(conn: &mut $conn, id: i64, chunks: &[Chunk]) -> Result<()> {
                for chunk in chunks {
                    sqlx::query(
                        "INSERT INTO queue_files (queue_id, name, start, data) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(id)
                    .bind(&chunk.name)
                    .bind(chunk.start)
                    .bind(&chunk.data)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }
        }

        impl Files for $backend {
            fn put_chunks<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                chunks: &'a [Chunk],
            ) -> Fut<'a, ()> {
                Box::pin(self.put_held(id, holder, chunks))
            }

            fn import_chunks<'a>(&'a self, id: i64, chunks: &'a [Chunk]) -> Fut<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    Self::insert_chunks(&mut tx, id, chunks).await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn restart_files<'a>(
                &'a self,
                id: i64,
                holder: &'a Holder,
                keep: &'a str,
            ) -> Fut<'a, i64> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    Self::holds_for_files(&mut tx, id, holder).await?;
                    sqlx::query("DELETE FROM queue_files WHERE queue_id = $1 AND name <> $2")
                        .bind(id)
                        .bind(keep)
                        .execute(&mut *tx)
                        .await?;
                    let len: Option<i64> = sqlx::query_scalar(
                        "SELECT start + length(data) FROM queue_files WHERE queue_id = $1 AND name = $2 \
                         ORDER BY start DESC LIMIT 1",
                    )
                    .bind(id)
                    .bind(keep)
                    .fetch_optional(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(len.unwrap_or(0))
                })
            }

            fn remove_file<'a>(&'a self, id: i64, holder: &'a Holder, name: &'a str) -> Fut<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    Self::holds_for_files(&mut tx, id, holder).await?;
                    sqlx::query("DELETE FROM queue_files WHERE queue_id = $1 AND name = $2")
                        .bind(id)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn chunks<'a>(
                &'a self,
                id: i64,
                name: &'a str,
                offset: i64,
                end: i64,
            ) -> Fut<'a, Vec<Chunk>> {
                Box::pin(async move {
                    // From the chunk that holds `offset` (the last one starting at or before
                    // it): the primary key's order, no scan of the file's earlier chunks.
                    let rows = sqlx::query(
                        "SELECT start, data FROM queue_files WHERE queue_id = $1 AND name = $2 \
                         AND start >= COALESCE((SELECT MAX(start) FROM queue_files \
                             WHERE queue_id = $1 AND name = $2 AND start <= $3), 0) \
                         AND start < $4 ORDER BY start",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(offset)
                    .bind(end)
                    .fetch_all(&self.pool)
                    .await?;
                    all(&rows, |r| {
                        Ok(Chunk {
                            name: name.to_string(),
                            start: r.try_get("start")?,
                            data: r.try_get("data")?,
                        })
                    })
                })
            }

            fn files(&self, id: i64) -> Fut<'_, Vec<(String, i64)>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT name, MAX(start + length(data)) AS len FROM queue_files \
                         WHERE queue_id = $1 GROUP BY name ORDER BY name",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                    all(&rows, |r| Ok((r.try_get("name")?, r.try_get("len")?)))
                })
            }

            fn file_len<'a>(&'a self, id: i64, name: &'a str) -> Fut<'a, Option<i64>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar(
                        "SELECT start + length(data) FROM queue_files WHERE queue_id = $1 AND name = $2 \
                         ORDER BY start DESC LIMIT 1",
                    )
                    .bind(id)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
                })
            }
        }
    };
}
pub(crate) use files_impl;
