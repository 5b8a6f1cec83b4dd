//! SQLite: API tokens, in the portable SQL of `crate::tokens`.

use super::Sqlite;

crate::tokens::tokens_impl!(Sqlite);
