//! Who may do what: API token scopes, the server's auth modes, the text form of a token and the
//! JSON shapes of the dashboard's sign-in session. Shared by the server, the store and the CLI.

use crate::state::string_enum;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// What a token may do; each scope includes the ones before it (`read` < `submit` < `admin`).
    #[derive(PartialOrd, Ord)]
    Scope ("scope") { Read => "read", Submit => "submit", Admin => "admin" }
);

string_enum!(
    /// Whether the server checks tokens: `required` (every write, and reads unless anonymous
    /// reading is allowed, needs a token with a large enough scope) or `off` (nothing checked).
    AuthMode ("auth mode") { Required => "required", Off => "off" }
);

/// What every token's text starts with.
pub const TOKEN_PREFIX: &str = "ta_";

/// Random bytes in a token's secret (256 bits), written as twice as many hex digits.
pub const SECRET_BYTES: usize = 32;

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME: usize = 64;

/// A token's text: `ta_<id>_<secret>`, the id of its row and its secret in lower-case hex.
pub fn format_token(id: i64, secret_hex: &str) -> String {
    format!("{TOKEN_PREFIX}{id}_{secret_hex}")
}

/// Splits a token's text into its row id and its secret; `None` unless it has the shape
/// [`format_token`] gives (a positive id and [`SECRET_BYTES`] bytes of lower-case hex).
pub fn parse_token(text: &str) -> Option<(i64, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id = crate::parse_id(id)?;
    let is_hex = secret
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (secret.len() == SECRET_BYTES * 2 && is_hex).then_some((id, secret))
}

/// Checks a token name: 1 to 64 bytes of letters, digits, `.`, `_`, `@` and `-`, starting with
/// a letter or digit, and not digits alone (so `token revoke ID|NAME` is never ambiguous).
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a token name must not be empty".into());
    }
    if name.len() > MAX_TOKEN_NAME {
        return Err(format!(
            "a token name must be at most {MAX_TOKEN_NAME} bytes"
        ));
    }
    let bytes = name.as_bytes();
    let good = bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !good {
        return Err(format!(
            "'{}' is not a token name: letters, digits, '.', '_', '@' and '-', starting with a letter or digit",
            name.escape_debug()
        ));
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "'{name}' is not a token name: digits alone would read as a token id"
        ));
    }
    Ok(())
}

/// The message of a `403 forbidden` answer: what the request needs and what the token has.
/// The CLI reads the needed scope back with [`needed_scope`].
pub fn forbidden_message(what: &str, needed: Scope, name: &str, has: Scope) -> String {
    format!("{what} needs scope {needed}; token '{name}' has scope {has}")
}

/// The scope a [`forbidden_message`] says is needed.
pub fn needed_scope(message: &str) -> Option<Scope> {
    let (_, rest) = message.split_once("needs scope ")?;
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    word.parse().ok()
}

/// Body of `POST /api/v1/session`: sign in with a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The token's text (`ta_…`).
    pub token: String,
}

/// Answer of `POST /api/v1/session`: who signed in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SignedIn {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
    /// When the token (and so the session) expires; null: never.
    pub expires_at: Option<String>,
    /// What writes of the page send as `X-CSRF-Token`.
    pub csrf: String,
}

/// Answer of `GET /api/v1/session`: how the server checks callers, and who this one is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionInfo {
    /// `required` or `off`.
    pub auth: AuthMode,
    /// Whether reading (the board, logs) needs no token.
    pub anonymous_read: bool,
    /// Whether the request carried a valid token (session cookie or bearer).
    pub signed_in: bool,
    /// The token's name when signed in.
    pub name: Option<String>,
    /// What this caller may do: the token's scope; `admin` with auth off (nothing is checked);
    /// null when not signed in and auth is required.
    pub scope: Option<Scope>,
    /// What writes of the page send as `X-CSRF-Token`, when signed in.
    pub csrf: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered_and_spelled_in_lower_case() {
        assert!(Scope::Read < Scope::Submit && Scope::Submit < Scope::Admin);
        assert_eq!("submit".parse::<Scope>(), Ok(Scope::Submit));
        assert!("owner"
            .parse::<Scope>()
            .unwrap_err()
            .contains("read, submit, admin"));
        assert_eq!(serde_json::to_string(&Scope::Admin).unwrap(), "\"admin\"");
        assert_eq!("off".parse::<AuthMode>(), Ok(AuthMode::Off));
    }

    #[test]
    fn token_text_round_trips_and_odd_shapes_are_refused() {
        let secret = "0123456789abcdef".repeat(4);
        let text = format_token(42, &secret);
        assert_eq!(parse_token(&text), Some((42, secret.as_str())));
        for bad in [
            String::new(),
            "ta_42".into(),
            format!("ta_0_{secret}"),
            format!("ta_x_{secret}"),
            format!("tb_42_{secret}"),
            format!("ta_42_{}", &secret[1..]),
            format!("ta_42_{}", secret.to_uppercase()),
            format!("ta_42_{secret}0"),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad}");
        }
    }

    #[test]
    fn token_names_are_checked() {
        for good in ["ci", "alice@lab", "release-bot.2", "9lives"] {
            assert_eq!(check_token_name(good), Ok(()), "{good}");
        }
        for bad in ["", "123", "-x", "a b", "x/y", &"n".repeat(65)] {
            assert!(check_token_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_needed_scope_is_read_back_from_the_message() {
        let m = forbidden_message("deleting a queue", Scope::Admin, "ci", Scope::Submit);
        assert_eq!(
            m,
            "deleting a queue needs scope admin; token 'ci' has scope submit"
        );
        assert_eq!(needed_scope(&m), Some(Scope::Admin));
        assert_eq!(needed_scope("no scope here"), None);
    }
}
