//! The server's one error type and its mapping to HTTP: `{"error":{"code","message"}}`, and
//! the middleware that gives every other error answer (axum's rejections, unknown routes) the
//! same shape.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use testarena_core::api::{ErrorBody, ErrorDetail};
use testarena_core::ValidationError;
use testarena_store::StoreError;

/// The error of a request body that did not arrive in time.
#[derive(Debug)]
pub struct BodyTimedOut(pub std::time::Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI: usize = 8 * 1024;

/// Seconds a client should wait before trying again after `database_busy`.
const RETRY_BUSY_SECS: u32 = 1;
/// Seconds a client should wait before trying again after `disk_full`.
const RETRY_DISK_FULL_SECS: u32 = 60;

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A request that contradicts an earlier one, with a code of its own (409): e.g. an
    /// `Idempotency-Key` sent before with another request.
    #[error("{message}")]
    ConflictWith { code: &'static str, message: String },
    #[error("{0}")]
    Json(#[from] JsonRejection),
    #[error("{0}")]
    Body(#[from] BytesRejection),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// No token, or one that is not valid, where one is needed: `401` with
    /// `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's scope is too small: `403 forbidden` (the message names both scopes).
    #[error("{0}")]
    Forbidden(String),
    /// A write by the session cookie without the session's `X-CSRF-Token`: `403 csrf`.
    #[error("{0}")]
    Csrf(String),
    #[error("{0}")]
    Store(StoreError),
    /// Writing a file failed because the disk is full.
    #[error("no space left on device: {0}")]
    DiskFull(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound(format!("queue {id} not found")),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Store(other),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest {
            code: "bad_query",
            message: e.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::NotFound(e.body_text())
    }
}

impl ApiError {
    /// A JSON body that could not be read: 400 `malformed_json` for bad syntax, 422
    /// `invalid_input` for well-formed JSON of the wrong shape (as for `POST /api/v1/queues`).
    pub fn from_json_error(what: &str, e: &serde_json::Error) -> ApiError {
        let message = format!("{what}: {e}");
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest {
                code: "malformed_json",
                message,
            }
        } else {
            ApiError::Invalid(ValidationError::new(what, e.to_string()))
        }
    }

    /// An I/O error of the server's own files: `disk_full` for ENOSPC, else internal.
    pub fn io(context: &str, e: std::io::Error) -> ApiError {
        if testarena_store::is_enospc(&e) {
            ApiError::DiskFull(format!("{context}: {e}"))
        } else {
            ApiError::Internal(format!("{context}: {e}"))
        }
    }

    /// The HTTP status and the machine-readable code of this error.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::ConflictWith { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Json(r) => match r {
                JsonRejection::MissingJsonContentType(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
                JsonRejection::JsonDataError(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
                }
                JsonRejection::BytesRejection(b) => body_status(b),
                other => (other.status(), "bad_request"),
            },
            ApiError::Body(b) => body_status(b),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Csrf(_) => (StatusCode::FORBIDDEN, "csrf"),
            ApiError::Store(StoreError::Busy(_) | StoreError::Overloaded(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_busy")
            }
            ApiError::Store(StoreError::DiskFull(_)) | ApiError::DiskFull(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "disk_full")
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Json(JsonRejection::BytesRejection(b)) | ApiError::Body(b) => body_message(b),
            ApiError::Json(r) => r.body_text().replace(
                "Failed to deserialize the JSON body into the target type: ",
                "",
            ),
            ApiError::Store(StoreError::Busy(_) | StoreError::Overloaded(_)) => {
                "the database is busy; try again in a moment".to_string()
            }
            ApiError::Store(StoreError::DiskFull(_)) | ApiError::DiskFull(_) => {
                "no space left on device: the server cannot store anything until disk space is freed"
                    .to_string()
            }
            ApiError::Store(_) | ApiError::Internal(_) => {
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        }
    }

    /// Seconds to put in `Retry-After`, for errors that go away by themselves.
    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Store(StoreError::Busy(_) | StoreError::Overloaded(_)) => {
                Some(RETRY_BUSY_SECS)
            }
            ApiError::Store(StoreError::DiskFull(_)) | ApiError::DiskFull(_) => {
                Some(RETRY_DISK_FULL_SECS)
            }
            _ => None,
        }
    }
}

/// Whether `e` or an error it was caused by is a request body that timed out.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that could not be read: too large, too slow, or broken off.
fn body_status(b: &BytesRejection) -> (StatusCode, &'static str) {
    if b.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    } else if timed_out(b) {
        (StatusCode::REQUEST_TIMEOUT, "request_timeout")
    } else {
        (StatusCode::BAD_REQUEST, "bad_request")
    }
}

fn body_message(b: &BytesRejection) -> String {
    match body_status(b).0 {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "request body is larger than the server accepts (256 KiB)".to_string()
        }
        StatusCode::REQUEST_TIMEOUT => "the request body did not arrive in time".to_string(),
        _ => b.body_text(),
    }
}

/// The machine-readable code of an error answer with `status` that has none of its own.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::GONE => "gone",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::EXPECTATION_FAILED => "expectation_failed",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The error body for `status` with its derived code, as bytes.
pub fn error_json(status: StatusCode, message: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code_for(status).to_string(),
            message: message.to_string(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Builds an error response from a status, code and message.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = error_response(status, code, self.message());
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Middleware: a request target longer than [`MAX_URI`] is answered `414 uri_too_long`.
pub async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {len} bytes; at most {MAX_URI} are accepted"),
        );
    }
    next.run(req).await
}

/// Most bytes of a plain-text error answer kept as the message.
const MAX_MESSAGE: usize = 2048;

/// Middleware: every 4xx/5xx answer that is not JSON (axum's extractor rejections, bodiless
/// answers of other layers) becomes `{"error":{"code","message"}}`, with the code derived from
/// the status and the message from its text (or the status's reason). Its other headers
/// (`Allow`, `Retry-After`) are kept.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE * 2).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let mut message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let body = error_json(status, &message);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn transient_store_errors_are_503_with_retry_after() {
        for (err, code, mentions, secs) in [
            (
                StoreError::Busy("database is locked".into()),
                "database_busy",
                "busy",
                "1",
            ),
            (
                StoreError::Overloaded("timed out".into()),
                "database_busy",
                "busy",
                "1",
            ),
            (
                StoreError::DiskFull("database or disk is full".into()),
                "disk_full",
                "no space left on device",
                "60",
            ),
        ] {
            let resp = ApiError::from(err).into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], secs);
            let body = body_of(resp).await;
            assert_eq!(body["error"]["code"], code);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(mentions),
                "{body}"
            );
        }
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let resp = ApiError::io("writing the archive", io).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_of(resp).await["error"]["code"], "disk_full");
    }

    #[tokio::test]
    async fn plain_error_answers_become_json() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad").into_response();
        let resp = json_errors(plain).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = body_of(resp).await;
        assert_eq!(body["error"]["code"], "bad_request");
        assert_eq!(body["error"]["message"], "Invalid URL: bad");
        let mut empty = StatusCode::METHOD_NOT_ALLOWED.into_response();
        empty
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let resp = json_errors(empty).await;
        assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD");
        let body = body_of(resp).await;
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["message"], "method not allowed");
        let ok = (StatusCode::OK, "fine").into_response();
        assert_eq!(
            json_errors(ok).await.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
