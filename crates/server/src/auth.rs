//! Who is calling, and may they: the middleware that resolves the caller from an
//! `Authorization: Bearer …` header or the dashboard's session cookie, checks the scope each
//! route needs, and leaves a [`Caller`] for the handlers.
//!
//! Every request with a token looks the token up in the database (nothing is cached), so a
//! revoked or expired token is refused at once by every replica. Routes and what they need:
//! GET/HEAD of `/api/v1/**` and `/metrics` need `read` (none when anonymous reading is on);
//! submitting, re-running and starting a bisect need `submit`; aborting needs `submit` for the
//! caller's own queue or bisect (the handler checks the owner) and `admin` for another's; deleting, and any other write,
//! needs `admin`. The health check, the dashboard and its assets, the API docs, the Gitea
//! webhook (it has its HMAC) and the session routes are open.

pub use crate::access::AuthConfig;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use testarena_core::auth::forbidden_message;
pub use testarena_core::auth::{AuthMode, Scope};
use testarena_store::VerifiedToken;

/// The dashboard's session cookie: it holds the token itself, so any replica accepts it.
pub const SESSION_COOKIE: &str = "testarena_session";

/// The header a write authenticated by the session cookie carries (the session's `csrf`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who made a request: the token's name (`None`: no token) and what it may do. With auth
/// off the scope is `Admin` (nothing is checked). Handlers take it as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Option<String>,
    pub scope: Scope,
}

impl Caller {
    /// A caller without a token, who may do `scope`.
    fn anonymous(scope: Scope) -> Caller {
        Caller { name: None, scope }
    }

    /// Whether this caller may abort a queue `submitted_by` submitted: an admin any, a
    /// submitter its own.
    pub fn may_abort(&self, submitted_by: Option<&str>) -> bool {
        self.scope >= Scope::Admin
            || (self.scope >= Scope::Submit
                && self.name.is_some()
                && self.name.as_deref() == submitted_by)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    /// The caller the middleware found; without the middleware, an anonymous reader (so a
    /// router built without it allows nothing more).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller::anonymous(Scope::Read)))
    }
}

/// The valid token a request carried, for the session routes.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub token: VerifiedToken,
}

/// Marks a request whose session cookie names no valid token (revoked, expired), so the
/// session route can clear it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaleCookie;

/// The CSRF value of a session on the token with stored hash `hash`: derived, so every
/// replica computes the same one without storing anything.
pub(crate) fn csrf_of(hash: &str) -> String {
    hex::encode(Sha256::digest(format!("csrf:{hash}").as_bytes()))
}

/// What a route needs, and what to call it in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Open to everybody.
    Nothing,
    /// At least `scope`.
    Scope(Scope, &'static str),
}

/// What the request `method path` needs. Paths are matched as the router sees them (raw);
/// anything not named here that writes needs `admin`.
fn need_of(method: &Method, path: &str) -> Need {
    let open = path == "/"
        || path.starts_with("/assets/")
        || path == "/api/openapi.json"
        || path == "/api/docs"
        || path.starts_with("/api/docs/")
        || path == "/api/v1/health"
        || path == "/api/v1/hooks/gitea"
        || path == "/api/v1/session";
    if open {
        return Need::Nothing;
    }
    if method == Method::GET || method == Method::HEAD {
        return Need::Scope(Scope::Read, "reading");
    }
    const ADMIN: Need = Need::Scope(Scope::Admin, "this request");
    if let Some(rest) = path.strip_prefix("/api/v1/bisects") {
        let segments: Vec<&str> = rest.split('/').collect();
        return match (method, segments.as_slice()) {
            (&Method::POST, [""]) => Need::Scope(Scope::Submit, "starting a bisect"),
            // Submit for one's own bisect; the handler asks for admin for another's.
            (&Method::POST, ["", _, "abort"]) => Need::Scope(Scope::Submit, "aborting a bisect"),
            _ => ADMIN,
        };
    }
    let Some(rest) = path.strip_prefix("/api/v1/queues") else {
        return ADMIN;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, [""]) => Need::Scope(Scope::Submit, "submitting a queue"),
        (&Method::POST, ["", _, "rerun"]) => Need::Scope(Scope::Submit, "re-running a queue"),
        // Submit for one's own queue; the handler asks for admin for another's.
        (&Method::POST, ["", _, "abort"]) => Need::Scope(Scope::Submit, "aborting a queue"),
        (&Method::DELETE, ["", _]) => Need::Scope(Scope::Admin, "deleting a queue"),
        _ => ADMIN,
    }
}

/// The token of an `Authorization` header: `Some(Ok(token))` for `Bearer <token>`,
/// `Some(Err(()))` for any other value (an unusable credential), `None` without the header.
fn bearer(headers: &HeaderMap) -> Option<Result<String, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = value.to_str().map_err(|_| ()).map(str::trim);
    Some(text.and_then(|t| {
        let (scheme, token) = t.split_once(' ').ok_or(())?;
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            Ok(token.trim().to_string())
        } else {
            Err(())
        }
    }))
}

/// The value of the session cookie, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// Whether the request carries the CSRF value of the session on `token`.
fn csrf_matches(headers: &HeaderMap, token: &VerifiedToken) -> bool {
    let expected = csrf_of(&token.hash);
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected.as_bytes())))
}

/// A method that changes nothing, so needs no CSRF value.
fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The `401` of a request that needs a token it did not carry (or carried a bad one).
fn unauthorized(bad_token: bool, what: &str) -> ApiError {
    ApiError::Unauthorized(if bad_token {
        "the API token is not valid (unknown, revoked or expired)".to_string()
    } else {
        format!("{what} needs an API token: send it as 'Authorization: Bearer <token>'")
    })
}

/// Middleware: resolves the caller, refuses what its scope does not allow (`401`, `403`),
/// and leaves a [`Caller`] (and, for the session routes, the token) in the request.
pub(crate) async fn authenticate(
    State(s): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match resolve(&s, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The credential a request presents: the bearer token (first) or the session cookie.
struct Presented {
    /// `None`: an `Authorization` header that is not `Bearer <token>`.
    text: Option<String>,
    via_cookie: bool,
}

fn presented(headers: &HeaderMap) -> Option<Presented> {
    match bearer(headers) {
        Some(b) => Some(Presented {
            text: b.ok(),
            via_cookie: false,
        }),
        None => session_cookie(headers).map(|c| Presented {
            text: Some(c),
            via_cookie: true,
        }),
    }
}

async fn resolve(s: &AppState, req: &mut Request) -> Result<(), ApiError> {
    let need = need_of(req.method(), req.uri().path());
    let is_session = req.uri().path() == "/api/v1/session";
    let off = s.config.auth.mode == AuthMode::Off;
    // Open routes other than the session's need nothing of the token: no database lookup.
    if need == Need::Nothing && !is_session {
        let scope = if off { Scope::Admin } else { Scope::Read };
        req.extensions_mut().insert(Caller::anonymous(scope));
        return Ok(());
    }
    let presented = presented(req.headers());
    let token = match presented.as_ref().and_then(|p| p.text.as_deref()) {
        Some(text) => s.store.verify_token(text).await?,
        None => None,
    };
    if let Some(t) = &token {
        if s.last_used.due(t.row.id) {
            let (store, id) = (s.store.clone(), t.row.id);
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(id).await {
                    tracing::debug!(error = %e, token = id, "cannot record the token's use");
                }
            });
        }
    }
    let via_cookie = presented.as_ref().is_some_and(|p| p.via_cookie);
    if via_cookie && token.is_none() {
        req.extensions_mut().insert(StaleCookie);
    }
    // A write by the session cookie must prove it comes from the dashboard's page.
    let csrf_missing = via_cookie
        && !is_safe(req.method())
        && need != Need::Nothing
        && token
            .as_ref()
            .is_some_and(|t| !csrf_matches(req.headers(), t));
    if off {
        // Nothing is checked; a token (with its CSRF value, by cookie) names the caller.
        let name = token
            .as_ref()
            .filter(|_| !csrf_missing)
            .map(|t| t.row.name.clone());
        if let Some(t) = token {
            req.extensions_mut().insert(Signed { token: t });
        }
        req.extensions_mut().insert(Caller {
            name,
            scope: Scope::Admin,
        });
        return Ok(());
    }
    let bad_bearer = presented.as_ref().is_some_and(|p| !p.via_cookie) && token.is_none();
    if let Need::Scope(needed, what) = need {
        if bad_bearer {
            return Err(unauthorized(true, what));
        }
        if csrf_missing {
            return Err(ApiError::Csrf(format!(
                "{what} with the session cookie needs the header X-CSRF-Token (the csrf of the session)"
            )));
        }
        match &token {
            None if needed == Scope::Read && s.config.auth.anonymous_read => {}
            None => return Err(unauthorized(false, what)),
            Some(t) if t.row.scope < needed => {
                return Err(ApiError::Forbidden(forbidden_message(
                    what,
                    needed,
                    &t.row.name,
                    t.row.scope,
                )))
            }
            Some(_) => {}
        }
    }
    let caller = match &token {
        Some(t) => Caller {
            name: Some(t.row.name.clone()),
            scope: t.row.scope,
        },
        None => Caller::anonymous(Scope::Read),
    };
    if let Some(t) = token {
        req.extensions_mut().insert(Signed { token: t });
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

/// The `403` of a submitter aborting a queue another token (or nobody) submitted.
pub(crate) fn abort_refused(caller: &Caller) -> ApiError {
    ApiError::Forbidden(forbidden_message(
        "aborting a queue another token submitted",
        Scope::Admin,
        caller.name.as_deref().unwrap_or("-"),
        caller.scope,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_the_contract_says() {
        let need = |m: Method, p: &str| match need_of(&m, p) {
            Need::Nothing => None,
            Need::Scope(s, _) => Some(s),
        };
        for open in [
            "/",
            "/assets/app.js",
            "/api/openapi.json",
            "/api/docs",
            "/api/docs/swagger-ui.css",
            "/api/v1/health",
            "/api/v1/hooks/gitea",
            "/api/v1/session",
        ] {
            assert_eq!(need(Method::GET, open), None, "{open}");
            assert_eq!(need(Method::POST, open), None, "{open}");
        }
        assert_eq!(need(Method::GET, "/metrics"), Some(Scope::Read));
        for read in [
            "/api/v1/history",
            "/api/v1/queues/7/history",
            "/api/v1/queues/7/compare/6",
            "/api/v1/queues/7/compare/previous",
        ] {
            assert_eq!(need(Method::GET, read), Some(Scope::Read), "{read}");
            assert_eq!(need(Method::POST, read), Some(Scope::Admin), "{read}");
        }
        assert_eq!(
            need(Method::HEAD, "/api/v1/queues/1/log"),
            Some(Scope::Read)
        );
        assert_eq!(need(Method::POST, "/api/v1/queues"), Some(Scope::Submit));
        assert_eq!(
            need(Method::POST, "/api/v1/queues/7/rerun"),
            Some(Scope::Submit)
        );
        assert_eq!(
            need(Method::POST, "/api/v1/queues/7/abort"),
            Some(Scope::Submit)
        );
        assert_eq!(need(Method::DELETE, "/api/v1/queues/7"), Some(Scope::Admin));
        assert_eq!(need(Method::POST, "/api/v1/bisects"), Some(Scope::Submit));
        assert_eq!(
            need(Method::POST, "/api/v1/bisects/3/abort"),
            Some(Scope::Submit)
        );
        assert_eq!(need(Method::GET, "/api/v1/bisects/3"), Some(Scope::Read));
        assert_eq!(need(Method::POST, "/api/v1/bisectsx"), Some(Scope::Admin));
        assert_eq!(
            need(Method::DELETE, "/api/v1/bisects/3"),
            Some(Scope::Admin)
        );
        // Anything else that writes, or a path the router does not know, needs admin.
        for (m, p) in [
            (Method::POST, "/api/v1/queues/"),
            (Method::POST, "/api/v1/queues/7/abort/x"),
            (Method::PUT, "/api/v1/queues/7"),
            (Method::DELETE, "/api/v1/queues"),
            (Method::POST, "/api/v1/queuesx"),
            (Method::POST, "/api/v1/health/x"),
            (Method::POST, "/api/v1/workers"),
            (Method::POST, "/metrics"),
            (Method::OPTIONS, "/api/v1/queues"),
        ] {
            assert_eq!(need(m.clone(), p), Some(Scope::Admin), "{m} {p}");
        }
    }

    #[test]
    fn credentials_are_read_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer ta_1_x".parse().unwrap());
        assert_eq!(bearer(&h), Some(Ok("ta_1_x".to_string())));
        h.insert(header::AUTHORIZATION, "bearer  ta_1_x ".parse().unwrap());
        assert_eq!(bearer(&h), Some(Ok("ta_1_x".to_string())));
        h.insert(header::AUTHORIZATION, "Basic dTpw".parse().unwrap());
        assert_eq!(bearer(&h), Some(Err(())));
        let mut c = HeaderMap::new();
        c.insert(
            header::COOKIE,
            "theme=dark; testarena_session=ta_2_y".parse().unwrap(),
        );
        assert_eq!(session_cookie(&c).as_deref(), Some("ta_2_y"));
        c.insert(header::COOKIE, "testarena_sessionx=1".parse().unwrap());
        assert_eq!(session_cookie(&c), None);
    }

    #[test]
    fn owners_and_admins_may_abort() {
        let submit = Caller {
            name: Some("ci".into()),
            scope: Scope::Submit,
        };
        assert!(submit.may_abort(Some("ci")));
        assert!(!submit.may_abort(Some("other")));
        assert!(!submit.may_abort(None));
        let read = Caller {
            name: Some("ci".into()),
            scope: Scope::Read,
        };
        assert!(!read.may_abort(Some("ci")));
        assert!(Caller::anonymous(Scope::Admin).may_abort(None));
    }
}
