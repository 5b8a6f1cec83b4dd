//! SQLite: a queue's files as chunks (the portable SQL of `crate::portable`).

use super::Sqlite;

crate::portable::files_impl!(Sqlite, sqlx::SqliteConnection, "");
