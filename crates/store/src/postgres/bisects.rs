//! PostgreSQL: bisects (the portable SQL of `crate::portable`, and the driver's claim with
//! `FOR UPDATE SKIP LOCKED`).

use super::Postgres;

crate::portable::bisects_impl!(Postgres, sqlx::PgConnection);

impl Postgres {
    /// Claims the oldest bisect that needs a decision, in this dialect.
    async fn claim_next_bisect(
        &self,
        driver: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<BisectClaim>> {
        // A short transaction: lock the next bisect (skipping one another driver is claiming
        // right now, instead of waiting for it), then take it.
        let mut tx = self.pool.begin().await?;
        let next: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM bisects WHERE {} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            Postgres::needs_decision("$1")
        ))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = next else { return Ok(None) };
        let row = sqlx::query(&format!(
            "UPDATE bisects SET driver = $1, claimed_until = $3, claims = claims + 1 \
             WHERE id = $4 AND {} RETURNING {BISECT_COLUMNS}, commits, driver, claims",
            Postgres::needs_decision("$2")
        ))
        .bind(driver)
        .bind(now)
        .bind(until)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let claim = match row {
            Some(row) => Some(Postgres::claimed(&mut tx, &row).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(claim)
    }
}
