//! The server's one error type and its mapping to HTTP: `{"error":{"code","message"}}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use testarena_core::api::{ErrorBody, ErrorDetail};
use testarena_core::ValidationError;
use testarena_store::StoreError;

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Json(#[from] JsonRejection),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(StoreError),
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

    /// The HTTP status and the machine-readable code of this error.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Json(r) => match r {
                JsonRejection::MissingJsonContentType(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
                JsonRejection::JsonDataError(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
                }
                JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                }
                other => (other.status(), "bad_request"),
            },
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Store(_) | ApiError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Json(JsonRejection::BytesRejection(b))
                if b.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                "request body is larger than the server accepts".to_string()
            }
            ApiError::Json(r) => r.body_text().replace(
                "Failed to deserialize the JSON body into the target type: ",
                "",
            ),
            ApiError::Store(_) | ApiError::Internal(_) => {
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        }
    }
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
        error_response(status, code, self.message())
    }
}
