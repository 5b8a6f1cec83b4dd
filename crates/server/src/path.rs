//! Typed path parameters: a queue id (and a task id) parsed once, with the API's JSON 404 for
//! anything that is not one, so no handler parses its own.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use testarena_core::parse_id;

/// The raw (percent-decoded) value of the path parameter `name`; a parameter that is not valid
/// UTF-8 is `400 bad_request` ("Invalid URL: Invalid UTF-8 in `id`", as axum's `Path` says).
pub(crate) async fn raw_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, Response> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|rejection| {
            ApiError::BadRequest {
                code: "bad_request",
                message: format!("Invalid URL: {}", rejection.body_text()),
            }
            .into_response()
        })?;
    let value = params.iter().find(|(key, _)| *key == name).map(|(_, v)| v);
    value
        .map(str::to_string)
        .ok_or_else(|| ApiError::Internal(format!("route has no {{{name}}}")).into_response())
}

/// The `{id}` of a queue route: a positive decimal number, else `404 not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueId(pub i64);

/// The `{id}` of a queue route, as the OpenAPI document states it (the extractor is
/// [`QueueId`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct QueueIdParam {
    /// Queue id: a positive decimal number of at most 18 digits without leading zeros;
    /// anything else is `404 not_found`.
    #[param(minimum = 1, maximum = 999_999_999_999_999_999_i64)]
    id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for QueueId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = raw_param(parts, state, "id").await?;
        parse_id(&raw).map(QueueId).ok_or_else(|| {
            ApiError::NotFound(format!(
                "queue '{raw}' not found (ids are positive numbers)"
            ))
            .into_response()
        })
    }
}

/// The `{task}` of a task route: a positive decimal number, else `404 not_found` naming the
/// queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let QueueId(queue) = QueueId::from_request_parts(parts, state).await?;
        let raw = raw_param(parts, state, "task").await?;
        parse_id(&raw).map(TaskId).ok_or_else(|| {
            ApiError::NotFound(format!("queue {queue} has no task '{raw}'")).into_response()
        })
    }
}

/// The `{case}` of a case route: any text (a case id of the scenario).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CaseKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        raw_param(parts, state, "case").await.map(CaseKey)
    }
}
