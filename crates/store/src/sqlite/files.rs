//! SQLite: a queue's files as chunks (the portable SQL of `crate::portable`).

use super::Sqlite;

crate::portable::files_impl!(Sqlite, sqlx::SqliteConnection, "");

impl Sqlite {
    /// Inserts `chunks` of queue `id` if `holder` holds it (one transaction).
    async fn put_held(&self, id: i64, holder: &Holder, chunks: &[Chunk]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::holds_for_files(&mut tx, id, holder).await?;
        Self::insert_chunks(&mut tx, id, chunks).await?;
        tx.commit().await?;
        Ok(())
    }
}
