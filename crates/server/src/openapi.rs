//! The OpenAPI 3.1 document, generated from the handlers' annotations and the API types, and
//! the interactive viewer (Swagger UI, vendored from npm's swagger-ui-dist) at `/api/docs`.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// How to get credentials, and what each route needs: `info.description`.
const DESCRIPTION: &str = "Build firmware from a git branch, boot it in an emulator, drive its \
console through XML scenarios.

**Authentication.** Send a token as `Authorization: Bearer <token>` (security scheme \
`bearerAuth`); the dashboard instead signs in once with `POST /api/v1/session {\"token\": …}` \
and is then known by the `testarena_session` cookie (`sessionCookie`). Create a token on the \
server host with `testarena token create --name NAME --scope submit` (scopes: `read`, `submit`, \
`admin`); it is printed once.

Reading (`GET` under `/api/v1`) needs scope `read`, and is open to anonymous callers unless \
the server is configured to require a token; submitting and re-running need `submit`; \
aborting needs `submit` for one's own queue (or bisect), else `admin`; deleting needs `admin`. \
Starting a bisect (`POST /api/v1/bisects`) needs `submit`. Always \
open: `/api/v1/health`, `/api/openapi.json`, `/api/docs`, `/api/v1/session`, and the Gitea \
webhook (`/api/v1/hooks/gitea`, authenticated by its HMAC signature instead). A missing or \
unknown token is `401 unauthorized`; a token without the scope, or a cookie-authenticated \
write without the cross-site request check, is `403 forbidden` (`csrf`). On loopback the \
server runs without authentication by default.

**Errors.** Every error answer, whichever layer makes it, is `{\"error\": {\"code\", \
\"message\"}}`; `code` is for programs, `message` for people. A path that exists without the \
method asked is `405 method_not_allowed` with an `Allow` header; an unknown path is `404 \
not_found`.";

/// The document; every routed path is listed in `paths`.
#[derive(OpenApi)]
#[openapi(
    info(title = "TestArena API", description = DESCRIPTION),
    paths(
        crate::system::health,
        crate::handlers::create_queue,
        crate::handlers::list_queues,
        crate::handlers::get_queue,
        crate::handlers::task_cases,
        crate::handlers::abort_queue,
        crate::handlers::delete_queue,
        crate::handlers::rerun_queue,
        crate::system::workers,
        crate::files::queue_log,
        crate::files::queue_log_stream,
        crate::files::case_log_text,
        crate::files::case_log_html,
        crate::files::junit,
        crate::archive::archive,
        crate::repro::repro,
        crate::history::case_history,
        crate::history::queue_history,
        crate::history::compare,
        crate::history::compare_previous,
        crate::events::events,
        crate::gitea::webhook::hook,
        crate::system::metrics,
        crate::session::sign_in,
        crate::session::session,
        crate::session::sign_out,
        crate::bisects::create_bisect,
        crate::bisects::list_bisects,
        crate::bisects::get_bisect,
        crate::bisects::abort_bisect,
    ),
    components(schemas(
        testarena_core::api::Queue, testarena_core::api::Build, testarena_core::api::Summary, testarena_core::api::Task, testarena_core::api::Case,
        testarena_core::api::QueueList, testarena_core::api::CaseList, testarena_core::api::Health, testarena_core::api::ErrorBody,
        testarena_core::api::ErrorDetail, testarena_core::api::WorkerList, testarena_core::api::Worker,
        testarena_core::api::Rerun, testarena_core::NewQueue, testarena_core::QueueStatus, testarena_core::Phase,
        testarena_core::CaseStatus, testarena_core::auth::SignIn, testarena_core::auth::SignedIn,
        testarena_core::auth::SessionInfo, testarena_core::auth::Scope,
        testarena_core::bisect::NewBisect, testarena_core::bisect::Bisect, testarena_core::bisect::BisectStep,
        testarena_core::bisect::BisectCommit, testarena_core::bisect::BisectList, testarena_core::bisect::BisectStatus,
        testarena_core::bisect::StepVerdict,
        testarena_core::history::CaseHistory, testarena_core::history::HistoryResult,
        testarena_core::history::HistoryStats, testarena_core::history::HistoryCounts,
        testarena_core::history::ChangePoint, testarena_core::history::ResultStatus,
        testarena_core::history::QueueHistory, testarena_core::history::CaseStrip,
        testarena_core::history::Comparison, testarena_core::history::ComparedQueue,
        testarena_core::history::ComparedCase, testarena_core::history::CompareCounts,
    )),
    tags((name = "queues"), (name = "logs"), (name = "system"), (name = "integrations"), (name = "session"), (name = "bisects"), (name = "history")),
    modifiers(&ErrorResponses, &Access, &OptionalBodies)
)]
pub struct ApiDoc;

/// Adds the error answers every operation can give (with the error body) where an operation
/// does not list them itself.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let common = [
            (
                "400",
                "The request is not valid HTTP, or a path segment is not valid UTF-8 once \
                 percent-decoded (`bad_request`); a query parameter of the wrong type \
                 (`bad_query`)",
            ),
            ("414", "The request target is over 8 KiB (`uri_too_long`)"),
            (
                "431",
                "The request head is over 64 KiB or has more than 100 headers \
                 (`headers_too_large`)",
            ),
            (
                "500",
                "Internal error (`internal`); the details are in the server log",
            ),
            (
                "503",
                "Database busy (`database_busy`) or disk full (`disk_full`); Retry-After says \
                 when to try again",
            ),
        ];
        for (_, _, op) in operations(openapi) {
            for (code, description) in common {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| error_response(description, false));
            }
        }
    }
}

/// Every operation of the document with its method and path.
fn operations(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&'static str, String, &mut Operation)> {
    openapi.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ]
        .into_iter()
        .filter_map(move |(method, op)| op.as_mut().map(|op| (method, path.clone(), op)))
    })
}

/// Operations whose body may be left out.
const OPTIONAL_BODIES: [(&str, &str); 1] = [("post", "/api/v1/queues/{id}/rerun")];

/// Marks the bodies of [`OPTIONAL_BODIES`] as not required. (utoipa makes a body optional only
/// when its type is an `Option`, which would also admit a `null` body: the server refuses that.)
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (method, path, op) in operations(openapi) {
            if OPTIONAL_BODIES.contains(&(method, path.as_str())) {
                if let Some(body) = op.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
        }
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Nothing: health, the webhook (its own HMAC), metrics, the document itself.
    Open,
    /// Scope `read`, or nothing when anonymous reading is allowed (the default).
    Read,
    /// Scope `submit`.
    Submit,
    /// Scope `submit` for one's own queue, else `admin`.
    SubmitOwnOrAdmin,
    /// Scope `admin`.
    Admin,
}

/// The access rule of `method path`, as the server's auth layer applies it.
fn need(method: &str, path: &str) -> Need {
    let open = ["/api/v1/health", "/api/v1/hooks/gitea", "/api/v1/session"];
    if open.contains(&path) || !path.starts_with("/api/v1/") {
        return Need::Open;
    }
    match (method, path) {
        ("get", _) => Need::Read,
        ("post", "/api/v1/queues" | "/api/v1/queues/{id}/rerun") => Need::Submit,
        ("post", "/api/v1/queues/{id}/abort") => Need::SubmitOwnOrAdmin,
        ("post", "/api/v1/bisects") => Need::Submit,
        ("post", "/api/v1/bisects/{id}/abort") => Need::SubmitOwnOrAdmin,
        _ => Need::Admin,
    }
}

/// Routes that are rate limited per caller (`429 rate_limited`).
fn rate_limited(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("post", "/api/v1/queues")
            | ("post", "/api/v1/queues/{id}/rerun")
            | ("get", "/api/v1/queues/{id}/archive")
            | ("get", "/api/v1/queues/{id}/cases/{case}/repro")
    )
}

/// The security schemes, each operation's requirement, and the 401, 403 and 429 answers of
/// the routes that have them.
struct Access;

impl Modify for Access {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `testarena token create --name NAME --scope SCOPE`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "testarena_session",
                "The dashboard's session, set by `POST /api/v1/session`; writes made with it \
                 must pass the cross-site request check",
            ))),
        );
        for (method, path, op) in operations(openapi) {
            let need = need(method, &path);
            if need != Need::Open {
                secure(op, need);
            }
            if rate_limited(method, &path) {
                op.responses.responses.insert(
                    "429".to_string(),
                    error_response(
                        "Too many requests from this caller (`rate_limited`); Retry-After says \
                         when to try again",
                        true,
                    ),
                );
            }
        }
    }
}

/// Sets `op`'s security requirement for `need` and documents its 401 and 403.
fn secure(op: &mut Operation, need: Need) {
    let scopes: &[&str] = match need {
        Need::Open => return,
        Need::Read => &["read"],
        Need::Submit => &["submit"],
        Need::SubmitOwnOrAdmin => &["submit", "admin"],
        Need::Admin => &["admin"],
    };
    let mut requirements = Vec::new();
    for scope in scopes {
        for scheme in ["bearerAuth", "sessionCookie"] {
            requirements.push(SecurityRequirement::new(scheme, [*scope]));
        }
    }
    if need == Need::Read {
        // Anonymous reading, unless the server requires a token for it.
        requirements.push(SecurityRequirement::default());
    }
    op.security = Some(requirements);
    let (unauthorized, forbidden) = match need {
        Need::Read => (
            "No valid credentials where the server requires them for reading, or an unknown, \
             expired or revoked token (`unauthorized`)",
            "The token lacks scope `read` (`forbidden`)",
        ),
        Need::Submit => (
            "No credentials, or an unknown, expired or revoked token (`unauthorized`)",
            "The token lacks scope `submit` (`forbidden`), or a write authenticated by the \
             session cookie failed the cross-site request check (`csrf`)",
        ),
        Need::SubmitOwnOrAdmin => (
            "No credentials, or an unknown, expired or revoked token (`unauthorized`)",
            "Neither scope `submit` on one's own queue nor `admin` (`forbidden`), or a write \
             authenticated by the session cookie failed the cross-site request check (`csrf`)",
        ),
        Need::Admin | Need::Open => (
            "No credentials, or an unknown, expired or revoked token (`unauthorized`)",
            "The token lacks scope `admin` (`forbidden`), or a write authenticated by the \
             session cookie failed the cross-site request check (`csrf`)",
        ),
    };
    op.responses
        .responses
        .insert("401".to_string(), error_response(unauthorized, false));
    op.responses
        .responses
        .insert("403".to_string(), error_response(forbidden, false));
}

/// An error answer with the error body, and a `Retry-After` header if `retry_after`.
fn error_response(description: &str, retry_after: bool) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// `GET /api/openapi.json`.
pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TestArena API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/api/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true });</script>
</body></html>"##;

/// `GET /api/docs`: the interactive viewer.
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

fn vendored(bytes: &'static [u8], ctype: &'static str) -> Response {
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    resp
}

/// `GET /api/docs/swagger-ui-bundle.js`.
pub async fn docs_js() -> Response {
    vendored(
        include_bytes!("../vendor/swagger-ui/swagger-ui-bundle.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /api/docs/swagger-ui.css`.
pub async fn docs_css() -> Response {
    vendored(
        include_bytes!("../vendor/swagger-ui/swagger-ui.css"),
        "text/css; charset=utf-8",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn schemes(op: &Value) -> Vec<String> {
        op["security"]
            .as_array()
            .map(|reqs| {
                reqs.iter()
                    .map(|r| {
                        let r = r.as_object().unwrap();
                        match r.iter().next() {
                            Some((scheme, scopes)) => format!("{scheme}{scopes}"),
                            None => "anonymous".to_string(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_security_schemes_and_how_to_get_a_token_are_stated() {
        let doc = document();
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearerAuth"]["type"], "http");
        assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
        assert_eq!(schemes["sessionCookie"]["type"], "apiKey");
        assert_eq!(schemes["sessionCookie"]["in"], "cookie");
        assert_eq!(schemes["sessionCookie"]["name"], "testarena_session");
        let description = doc["info"]["description"].as_str().unwrap();
        assert!(description.contains("testarena token create --name NAME --scope submit"));
    }

    #[test]
    fn every_route_states_who_may_call_it_and_its_401_and_403() {
        let doc = document();
        let op = |method: &str, path: &str| doc["paths"][path][method].clone();
        let expect = [
            ("get", "/api/v1/queues", "read"),
            ("get", "/api/v1/queues/{id}/archive", "read"),
            ("get", "/api/v1/queues/{id}/cases/{case}/repro", "read"),
            ("get", "/api/v1/events", "read"),
            ("get", "/api/v1/history", "read"),
            ("get", "/api/v1/queues/{id}/history", "read"),
            ("get", "/api/v1/queues/{id}/compare/{other}", "read"),
            ("get", "/api/v1/queues/{id}/compare/previous", "read"),
            ("post", "/api/v1/queues", "submit"),
            ("post", "/api/v1/queues/{id}/rerun", "submit"),
            ("delete", "/api/v1/queues/{id}", "admin"),
        ];
        for (method, path, scope) in expect {
            let o = op(method, path);
            let got = schemes(&o);
            assert!(
                got.contains(&format!("bearerAuth[\"{scope}\"]"))
                    && got.contains(&format!("sessionCookie[\"{scope}\"]")),
                "{method} {path}: {got:?}"
            );
            // Reading is open to anonymous callers by default; writing never is.
            assert_eq!(
                got.contains(&"anonymous".to_string()),
                method == "get",
                "{method} {path}: {got:?}"
            );
            for code in ["401", "403"] {
                let r = &o["responses"][code];
                assert!(
                    r["content"]["application/json"].is_object(),
                    "{method} {path} {code}"
                );
            }
        }
        let abort = schemes(&op("post", "/api/v1/queues/{id}/abort"));
        assert!(
            abort.contains(&"bearerAuth[\"submit\"]".to_string()),
            "{abort:?}"
        );
        assert!(
            abort.contains(&"bearerAuth[\"admin\"]".to_string()),
            "{abort:?}"
        );
        for (method, path) in [("get", "/api/v1/health"), ("post", "/api/v1/hooks/gitea")] {
            let o = op(method, path);
            assert!(o["security"].is_null(), "{method} {path} is open");
            assert!(o["responses"]["403"].is_null(), "{method} {path}");
        }
        assert!(
            op("post", "/api/v1/queues/{id}/abort")["responses"]["403"]["description"]
                .as_str()
                .unwrap()
                .contains("csrf")
        );
    }

    #[test]
    fn rate_limits_and_idempotency_keys_are_stated() {
        let doc = document();
        for (method, path) in [
            ("post", "/api/v1/queues"),
            ("post", "/api/v1/queues/{id}/rerun"),
            ("get", "/api/v1/queues/{id}/archive"),
            ("get", "/api/v1/queues/{id}/cases/{case}/repro"),
        ] {
            let r = &doc["paths"][path][method]["responses"]["429"];
            assert!(r["headers"]["Retry-After"].is_object(), "{method} {path}");
            assert!(r["description"].as_str().unwrap().contains("rate_limited"));
        }
        assert!(doc["paths"]["/api/v1/queues"]["get"]["responses"]["429"].is_null());
        for path in ["/api/v1/queues", "/api/v1/queues/{id}/rerun"] {
            let op = &doc["paths"][path]["post"];
            let key = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "Idempotency-Key")
                .unwrap_or_else(|| panic!("{path} has no Idempotency-Key"));
            assert_eq!(key["in"], "header");
            assert_eq!(key["required"], false);
            assert_eq!(key["schema"]["maxLength"], 255);
            assert_eq!(key["schema"]["pattern"], "^[!-~]+$");
            let answers = &op["responses"];
            assert!(answers["400"]["description"]
                .as_str()
                .unwrap()
                .contains("bad_idempotency_key"));
            assert!(answers["409"]["description"]
                .as_str()
                .unwrap()
                .contains("idempotency_key_reused"));
        }
    }

    #[test]
    fn ids_and_bodies_are_stated_as_the_server_reads_them() {
        let doc = document();
        let id = doc["paths"]["/api/v1/queues/{id}"]["get"]["parameters"][0].clone();
        assert_eq!(id["in"], "path");
        assert_eq!(id["schema"]["minimum"], 1);
        assert_eq!(id["schema"]["maximum"], 999_999_999_999_999_999_i64);
        // The server's id parser agrees on both ends.
        assert_eq!(
            testarena_core::parse_id("999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        assert_eq!(testarena_core::parse_id("1000000000000000000"), None);
        let rerun = &doc["paths"]["/api/v1/queues/{id}/rerun"]["post"]["requestBody"];
        assert_eq!(rerun["required"], false);
        assert_eq!(
            rerun["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Rerun"
        );
        assert_eq!(
            doc["components"]["schemas"]["Rerun"]["additionalProperties"],
            false
        );
    }
}
