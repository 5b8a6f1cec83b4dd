//! SQLite: the API's answers built by the database (`crate::page`).

use super::Sqlite;
use crate::dialect::Dialect;
use crate::StoreError;

/// The ids of a request as SQLite binds them: a JSON array, read back with `json_each`.
fn ids_param(ids: &[i64]) -> Result<String, StoreError> {
    serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string()))
}

crate::portable::pages_impl!(Sqlite, Dialect::Sqlite, ids_param);
