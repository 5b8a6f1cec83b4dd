//! Sqlite: copying a history in (the portable SQL of `crate::copy`) and what the dialect adds.

use super::Sqlite;

crate::copy::copy_impl!(Sqlite);

impl Sqlite {
    /// SQLite's AUTOINCREMENT follows the largest id inserted by itself: nothing to do.
    async fn after_copy(_conn: &mut sqlx::SqliteConnection) -> crate::Result<()> {
        Ok(())
    }
}
