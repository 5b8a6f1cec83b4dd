//! PostgreSQL: the API's answers built by the database (`crate::page`).

use super::Postgres;
use crate::dialect::Dialect;
use crate::StoreError;

/// The ids of a request as PostgreSQL binds them: an array.
fn ids_param(ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    Ok(ids.to_vec())
}

crate::portable::pages_impl!(Postgres, Dialect::Postgres, ids_param);
