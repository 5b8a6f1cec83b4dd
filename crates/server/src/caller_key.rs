//! Who is calling, as a key for per-caller state (rate limits, idempotency keys): a digest of
//! the credential the request carries, never the credential itself.
//!
//! One place on purpose: when the token middleware's `Caller` extension is there, this is the
//! function to switch over to it.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The cookie the dashboard's session token travels in.
pub(crate) const SESSION_COOKIE: &str = "testarena_session";

/// The caller key of a request: the SHA-256 (hex) of its bearer token, else of its
/// `testarena_session` cookie, else `None` (an anonymous caller).
pub(crate) fn caller_key(headers: &HeaderMap) -> Option<String> {
    let token = bearer_token(headers).or_else(|| session_cookie(headers))?;
    Some(hex::encode(Sha256::digest(token.as_bytes())))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of the `testarena_session` cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn the_key_is_a_digest_of_the_token_then_the_cookie() {
        let digest = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer ta_1_secret")]);
        assert_eq!(caller_key(&bearer), Some(digest("ta_1_secret")));
        assert!(!caller_key(&bearer).unwrap().contains("secret"));
        let lower = headers(&[(header::AUTHORIZATION, "bearer  ta_1_secret ")]);
        assert_eq!(caller_key(&lower), Some(digest("ta_1_secret")));
        let cookie = headers(&[(header::COOKIE, "theme=dark; testarena_session=ta_2_s")]);
        assert_eq!(caller_key(&cookie), Some(digest("ta_2_s")));
        // The bearer token wins over the cookie.
        let both = headers(&[
            (header::COOKIE, "testarena_session=ta_2_s"),
            (header::AUTHORIZATION, "Bearer ta_1_secret"),
        ]);
        assert_eq!(caller_key(&both), Some(digest("ta_1_secret")));
        for anonymous in [
            headers(&[]),
            headers(&[(header::AUTHORIZATION, "Basic dXNlcjpwdw==")]),
            headers(&[(header::AUTHORIZATION, "Bearer ")]),
            headers(&[(header::COOKIE, "testarena_session=; other=x")]),
            headers(&[(header::COOKIE, "not_testarena_session=x")]),
        ] {
            assert_eq!(caller_key(&anonymous), None, "{anonymous:?}");
        }
    }
}
