//! API tokens: made and revoked by `testarena token`, checked by the server on every request.
//! A token's text is `ta_<id>_<secret>` (see `testarena_core::auth`); the database keeps only
//! the SHA-256 of the secret, found by the id and compared in constant time. Nothing is cached:
//! a revoked (deleted) or expired token is refused at the next request on every replica.

use crate::rows::{TokenRow, VerifiedToken};
use crate::{now_ms, Result, Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use testarena_core::auth::{self, Scope};

/// A token made now: its row, and its text, which exists nowhere else.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub row: TokenRow,
    /// `ta_<id>_<secret>`: show it once.
    pub text: String,
}

/// SHA-256 of a token's secret, lower-case hex. A fast hash is enough: the secret is 256
/// random bits, nothing a dictionary could guess.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret from the operating system's random generator, in lower-case hex.
fn new_secret() -> Result<String> {
    let mut bytes = [0u8; auth::SECRET_BYTES];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Internal(format!("no random numbers from the OS: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The SQL of the `Tokens` side of a backend, in what both dialects speak, expanded once per
/// backend module (with its `all` and pool in scope).
macro_rules! tokens_impl {
    ($backend:ident) => {
        use super::all;
        use crate::backend::{Fut, Tokens};
        use crate::rows::{token_row, token_with_hash, TokenRow, VerifiedToken, TOKEN_COLUMNS};

        impl Tokens for $backend {
            fn insert_token<'a>(
                &'a self,
                name: &'a str,
                scope: &'a str,
                hash: &'a str,
                now: i64,
                expires_at: Option<i64>,
            ) -> Fut<'a, Option<i64>> {
                Box::pin(async move {
                    Ok(sqlx::query_scalar(
                        "INSERT INTO tokens (name, scope, hash, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id",
                    )
                    .bind(name)
                    .bind(scope)
                    .bind(hash)
                    .bind(now)
                    .bind(expires_at)
                    .fetch_optional(&self.pool)
                    .await?)
                })
            }

            fn tokens(&self) -> Fut<'_, Vec<TokenRow>> {
                Box::pin(async move {
                    let rows =
                        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
                            .fetch_all(&self.pool)
                            .await?;
                    all(&rows, token_row)
                })
            }

            fn token(&self, id: i64) -> Fut<'_, Option<VerifiedToken>> {
                Box::pin(async move {
                    let row =
                        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"))
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                    row.as_ref().map(token_with_hash).transpose()
                })
            }

            fn delete_token<'a>(
                &'a self,
                id: Option<i64>,
                name: &'a str,
            ) -> Fut<'a, Option<TokenRow>> {
                Box::pin(async move {
                    let row = sqlx::query(&format!(
                        "DELETE FROM tokens WHERE id = $1 OR name = $2 RETURNING {TOKEN_COLUMNS}"
                    ))
                    .bind(id)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(token_row).transpose()
                })
            }

            fn touch_token(&self, id: i64, now: i64) -> Fut<'_, ()> {
                Box::pin(async move {
                    sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }
        }
    };
}
pub(crate) use tokens_impl;

impl Store {
    /// Makes a token `name` with `scope`, expiring at `expires_at` (milliseconds; `None`:
    /// never). Its text is returned here once and kept nowhere. `Conflict` if the name is
    /// taken; `Invalid` for a bad name.
    pub async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        expires_at: Option<i64>,
    ) -> Result<NewToken> {
        auth::check_token_name(name).map_err(StoreError::Invalid)?;
        let secret = new_secret()?;
        let hash = secret_hash(&secret);
        let now = now_ms();
        let id = self
            .retry(|| {
                self.backend
                    .insert_token(name, scope.as_str(), &hash, now, expires_at)
            })
            .await?
            .ok_or_else(|| {
                StoreError::Conflict(format!("a token named '{name}' exists already"))
            })?;
        let row = TokenRow {
            id,
            name: name.to_string(),
            scope,
            created_at: now,
            last_used_at: None,
            expires_at,
        };
        Ok(NewToken {
            row,
            text: auth::format_token(id, &secret),
        })
    }

    /// Every token, oldest first (never their secrets: the database has none).
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.retry(|| self.backend.tokens()).await
    }

    /// Revokes (deletes) the token with id or name `which`; returns what it was.
    /// `TokenNotFound` if there is none.
    pub async fn revoke_token(&self, which: &str) -> Result<TokenRow> {
        let id = testarena_core::parse_id(which);
        self.retry(|| self.backend.delete_token(id, which))
            .await?
            .ok_or_else(|| StoreError::TokenNotFound(which.to_string()))
    }

    /// The token a request presents, if it is one: well-formed, its row still there, the
    /// secret's hash equal (compared in constant time) and not expired. `None` otherwise,
    /// whatever the reason, so a caller learns nothing from how it failed.
    pub async fn verify_token(&self, text: &str) -> Result<Option<VerifiedToken>> {
        let Some((id, secret)) = auth::parse_token(text) else {
            return Ok(None);
        };
        let Some(found) = self.retry(|| self.backend.token(id)).await? else {
            return Ok(None);
        };
        let presented = secret_hash(secret);
        let same: bool = presented.as_bytes().ct_eq(found.hash.as_bytes()).into();
        if !same || found.row.expired_at(now_ms()) {
            return Ok(None);
        }
        Ok(Some(found))
    }

    /// Records that token `id` was used now.
    pub async fn touch_token(&self, id: i64) -> Result<()> {
        let now = now_ms();
        self.retry(|| self.backend.touch_token(id, now)).await
    }
}
