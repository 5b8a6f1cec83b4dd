//! The OpenAPI 3.1 document, generated from the handlers' annotations and the API types, and
//! the interactive viewer (Swagger UI, vendored from npm's swagger-ui-dist) at `/api/docs`.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// The document; every routed path is listed in `paths`.
#[derive(OpenApi)]
#[openapi(
    info(title = "TestArena API", description = "Build firmware from a git branch, boot it in an emulator, drive its console through XML scenarios."),
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
        crate::events::events,
        crate::gitea::webhook::hook,
        crate::system::metrics,
    ),
    components(schemas(
        testarena_core::api::Queue, testarena_core::api::Summary, testarena_core::api::Task, testarena_core::api::Case,
        testarena_core::api::QueueList, testarena_core::api::CaseList, testarena_core::api::Health, testarena_core::api::ErrorBody,
        testarena_core::api::ErrorDetail, testarena_core::api::WorkerList, testarena_core::api::Worker,
        testarena_core::api::Rerun, testarena_core::NewQueue, testarena_core::QueueStatus, testarena_core::Phase,
        testarena_core::CaseStatus,
    )),
    tags((name = "queues"), (name = "logs"), (name = "system"), (name = "integrations")),
    modifiers(&ErrorResponses)
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
                "The request is not valid HTTP, or a path segment is not valid UTF-8",
            ),
            ("414", "The request target is over 8 KiB"),
            (
                "431",
                "The request head is over 64 KiB or has more than 100 headers",
            ),
            ("500", "Internal error; the details are in the server log"),
            (
                "503",
                "Database busy or disk full; Retry-After says when to try again",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (code, description) in common {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build(),
    )
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
