//! SQLite: bisects (the portable SQL of `crate::portable`, and the driver's claim).

use super::Sqlite;

crate::portable::bisects_impl!(Sqlite, sqlx::SqliteConnection);

impl Sqlite {
    /// Claims the oldest bisect that needs a decision, in this dialect.
    async fn claim_next_bisect(
        &self,
        driver: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<BisectClaim>> {
        let needs = Sqlite::needs_decision("$2");
        // One statement: SQLite runs it under its write lock, so two drivers never claim one
        // bisect.
        let row = sqlx::query(&format!(
            "UPDATE bisects SET driver = $1, claimed_until = $3, claims = claims + 1 \
             WHERE id = (SELECT id FROM bisects WHERE {needs} ORDER BY id LIMIT 1) AND {needs} \
             RETURNING {BISECT_COLUMNS}, commits, driver, claims"
        ))
        .bind(driver)
        .bind(now)
        .bind(until)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut conn = self.pool.acquire().await?;
        Ok(Some(Sqlite::claimed(&mut conn, &row).await?))
    }
}
