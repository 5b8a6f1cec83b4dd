//! The dashboard's sign-in session: `POST /api/v1/session` checks a token and keeps it in an
//! HttpOnly, SameSite=Strict cookie (never where the page's scripts can read it);
//! `GET /api/v1/session` says how the server checks callers and who this one is;
//! `DELETE /api/v1/session` signs out. Stateless: the cookie holds the token, and the CSRF
//! value is derived from the token's stored hash, so every replica accepts the session and a
//! revoked token ends it everywhere at once.

use crate::auth::{csrf_of, session_cookie, AuthMode, Scope, Signed, StaleCookie, SESSION_COOKIE};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use testarena_core::api::ErrorBody;
use testarena_core::auth::{SessionInfo, SignIn, SignedIn};
use testarena_store::{now_ms, rfc3339};

/// Whether the request reached the proxy over HTTPS (nginx sets `X-Forwarded-Proto`), so the
/// cookie is marked `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session on `token`, living until `expires_at` (ms) if set
/// (else as long as the browser session).
fn session_cookie_value(token: &str, expires_at: Option<i64>, secure: bool) -> String {
    let mut cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(at) = expires_at {
        let secs = (at - now_ms()).max(0) / 1000;
        cookie.push_str(&format!("; Max-Age={secs}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The `Set-Cookie` value that removes the session cookie.
fn cleared_cookie(secure: bool) -> String {
    let mut cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Adds `Set-Cookie: value` to `resp`.
fn set_cookie(resp: &mut Response, value: &str) -> Result<(), ApiError> {
    let v = HeaderValue::from_str(value)
        .map_err(|e| ApiError::Internal(format!("session cookie: {e}")))?;
    resp.headers_mut().append(header::SET_COOKIE, v);
    Ok(())
}

/// `POST /api/v1/session` `{"token": "ta_…"}`: signs in.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = SignIn,
    responses((status = 200, description = "Signed in; Set-Cookie carries the session (HttpOnly, SameSite=Strict)", body = SignedIn),
              (status = 401, description = "The token is not valid (unknown, revoked or expired)", body = ErrorBody),
              (status = 415, description = "Not application/json", body = ErrorBody),
              (status = 422, description = "No token in the body", body = ErrorBody)))]
pub(crate) async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { token }) = body?;
    let token = token.trim();
    let Some(found) = s.store.verify_token(token).await? else {
        return Err(ApiError::Unauthorized(
            "the API token is not valid (unknown, revoked or expired)".into(),
        ));
    };
    let row = &found.row;
    tracing::info!(token = %row.name, scope = %row.scope, "signed in to the dashboard");
    let answer = SignedIn {
        name: row.name.clone(),
        scope: row.scope,
        expires_at: row.expires_at.map(rfc3339),
        csrf: csrf_of(&found.hash),
    };
    let mut resp = Json(answer).into_response();
    let cookie = session_cookie_value(token, row.expires_at, over_https(&headers));
    set_cookie(&mut resp, &cookie)?;
    Ok(resp)
}

/// `GET /api/v1/session`: how the server checks callers, and who this one is.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, description = "The auth mode and the caller (a stale session cookie is cleared)", body = SessionInfo)))]
pub(crate) async fn session(
    State(s): State<AppState>,
    headers: HeaderMap,
    signed: Option<Extension<Signed>>,
    stale: Option<Extension<StaleCookie>>,
) -> Result<Response, ApiError> {
    let auth = &s.config.auth;
    let off = auth.mode == AuthMode::Off;
    let token = signed.map(|Extension(s)| s.token);
    let scope = match (&token, off) {
        // Nothing is checked: everybody may do everything.
        (_, true) => Some(Scope::Admin),
        (Some(t), false) => Some(t.row.scope),
        (None, false) => None,
    };
    let info = SessionInfo {
        auth: auth.mode,
        anonymous_read: auth.anonymous_read,
        signed_in: token.is_some(),
        name: token.as_ref().map(|t| t.row.name.clone()),
        scope,
        csrf: token.as_ref().map(|t| csrf_of(&t.hash)),
    };
    let mut resp = Json(info).into_response();
    if stale.is_some() {
        set_cookie(&mut resp, &cleared_cookie(over_https(&headers)))?;
    }
    Ok(resp)
}

/// `DELETE /api/v1/session`: signs out (clears the cookie; the token itself stays valid).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204, description = "Signed out; Set-Cookie clears the session")))]
pub(crate) async fn sign_out(
    headers: HeaderMap,
    signed: Option<Extension<Signed>>,
) -> Result<Response, ApiError> {
    if let Some(Extension(s)) = signed {
        if session_cookie(&headers).is_some() {
            tracing::info!(token = %s.token.row.name, "signed out of the dashboard");
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut resp, &cleared_cookie(over_https(&headers)))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_have_the_attributes_a_session_needs() {
        let c = session_cookie_value("ta_1_x", None, false);
        assert_eq!(
            c,
            "testarena_session=ta_1_x; HttpOnly; SameSite=Strict; Path=/"
        );
        let c = session_cookie_value("ta_1_x", Some(now_ms() + 3_600_500), true);
        assert!(
            c.contains("; Max-Age=3600") && c.ends_with("; Secure"),
            "{c}"
        );
        assert!(cleared_cookie(false).contains("Max-Age=0"));
        let mut h = HeaderMap::new();
        assert!(!over_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_https(&h));
    }
}
