//! PostgreSQL: API tokens, in the portable SQL of `crate::tokens`.

use super::Postgres;

crate::tokens::tokens_impl!(Postgres);
