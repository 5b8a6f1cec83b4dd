//! Postgres: copying a history in (the portable SQL of `crate::copy`) and what the dialect adds.

use super::Postgres;

crate::copy::copy_impl!(Postgres);

impl Postgres {
    /// Advances every id sequence past the ids copied, so new rows never collide with them.
    async fn after_copy(conn: &mut sqlx::PgConnection) -> crate::Result<()> {
        for table in ["queues", "tasks", "cases", "tokens", "bisects"] {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
