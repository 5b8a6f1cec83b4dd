//! The bisect endpoints (issue 16): start a bisect, read one or the list, abort one. The
//! search itself runs in the workers' bisect drivers (they have the repository); the server
//! only stores the request and shows what the drivers recorded.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use testarena_core::api::ErrorBody;
use testarena_core::auth::{forbidden_message, Scope};
use testarena_core::bisect::{Bisect, BisectCommit, BisectList, BisectStep, NewBisect};
use testarena_core::parse_id;
use testarena_store::{rfc3339, BisectDetail, StoreError};

/// Largest page of `GET /api/v1/bisects`.
const MAX_PAGE: u32 = 100;
/// Page size of `GET /api/v1/bisects` when none is asked for.
const DEFAULT_PAGE: u32 = 20;

/// The `{id}` of a bisect route: a positive decimal number, else `404 not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BisectId(pub i64);

/// The `{id}` of a bisect route, as the OpenAPI document states it (the extractor is
/// [`BisectId`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct BisectIdParam {
    /// Bisect id: a positive decimal number of at most 18 digits without leading zeros;
    /// anything else is `404 not_found`.
    #[param(minimum = 1, maximum = 999_999_999_999_999_999_i64)]
    id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for BisectId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = crate::path::raw_param(parts, state, "id").await?;
        parse_id(&raw).map(BisectId).ok_or_else(|| {
            ApiError::NotFound(format!(
                "bisect '{raw}' not found (ids are positive numbers)"
            ))
            .into_response()
        })
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("bisect {id} not found"))
}

/// A bisect as the API shows it.
pub(crate) fn view(d: &BisectDetail) -> Bisect {
    let b = &d.bisect;
    let running = !b.status.is_finished();
    Bisect {
        id: b.id,
        repo: b.repo.clone(),
        good: b.good.clone(),
        bad: b.bad.clone(),
        good_commit: b.good_sha.clone(),
        bad_commit: b.bad_sha.clone(),
        scenarios: b.scenarios.clone(),
        case: b.case.clone(),
        priority: b.priority,
        labels: b.labels.clone(),
        submitted_by: b.submitted_by.clone(),
        status: b.status,
        message: b.message.clone(),
        range_size: b.range_size.and_then(|n| u64::try_from(n).ok()),
        current_queue: b.current_queue.filter(|_| running),
        steps: d
            .steps
            .iter()
            .map(|s| BisectStep {
                index: u64::try_from(s.commit_index).unwrap_or(0),
                commit: s.commit.commit.clone(),
                subject: s.commit.subject.clone(),
                author: s.commit.author.clone(),
                queue_id: s.queue_id,
                rerun_queue_id: s.rerun_queue_id,
                verdict: s.verdict,
                note: s.note.clone(),
            })
            .collect(),
        result: d.result().map(|s| BisectCommit {
            commit: s.commit.commit.clone(),
            subject: s.commit.subject.clone(),
            author: s.commit.author.clone(),
        }),
        created_at: rfc3339(b.created_at),
        finished_at: b.finished_at.map(rfc3339),
    }
}

/// `POST /api/v1/bisects`: stores the bisect; a worker's driver reads the range and submits the
/// step queues.
#[utoipa::path(post, path = "/api/v1/bisects", tag = "bisects", request_body = NewBisect,
    responses((status = 201, description = "Bisect started; Location header names it. Its range is read by a worker: `good` or `bad` that name no commit, a `good` that is no ancestor of `bad`, or a range over 10,000 commits end it (`error` or `undecided`, with the reason in `message`)", body = Bisect,
               headers(("Location" = String, description = "The bisect's path, /api/v1/bisects/{id}"))),
              (status = 400, description = "Malformed JSON (`malformed_json`)", body = ErrorBody),
              (status = 408, description = "The body did not arrive in time", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 415, description = "Not application/json", body = ErrorBody),
              (status = 422, description = "A field is missing, unknown, wrong or refused (`invalid_input`; the message names it: also a host outside `allowed_hosts` or a local path outside `--allow-local-repos`)", body = ErrorBody),
              (status = 503, description = "Database busy or disk full; Retry-After says when to try again", body = ErrorBody)))]
pub(crate) async fn create_bisect(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewBisect>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    let valid = new.validate(&s.config.allowed_roots)?;
    crate::handlers::check_host(&s, &valid.repo)?;
    crate::handlers::check_real_location(&valid.repo, &s.config.allowed_roots)?;
    let created = s
        .store
        .create_bisect(&valid, caller.name.as_deref())
        .await?;
    let id = created.bisect.id;
    tracing::info!(
        bisect = id,
        token = caller.name.as_deref().unwrap_or("-"),
        "bisect started"
    );
    // An in-process worker's driver wakes at once.
    s.changed(true);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/bisects/{id}"))],
        Json(view(&created)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/bisects/{id}", tag = "bisects", params(BisectIdParam),
    responses((status = 200, description = "The bisect with its steps", body = Bisect),
              (status = 404, description = "No such bisect", body = ErrorBody)))]
pub(crate) async fn get_bisect(
    State(s): State<AppState>,
    BisectId(id): BisectId,
) -> Result<Json<Bisect>, ApiError> {
    let found = s.store.bisect(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(view(&found)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    limit: Option<String>,
    before: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/bisects", tag = "bisects",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1..=100, default 20"),
           ("before" = Option<i64>, Query, minimum = 1, maximum = 999_999_999_999_999_999_i64, description = "Cursor: only bisects with a smaller id (the `next` of the previous page)")),
    responses((status = 200, description = "Newest first", body = BisectList),
              (status = 400, description = "Bad query parameter (`bad_query`)", body = ErrorBody)))]
pub(crate) async fn list_bisects(
    State(s): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BisectList>, ApiError> {
    let Query(p) = params?;
    let bad = |message: String| ApiError::BadRequest {
        code: "bad_query",
        message,
    };
    let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: must be a number from 1 to {MAX_PAGE}, got '{raw}'"
                )))
            }
        },
        None => DEFAULT_PAGE,
    };
    let before = match p.before.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            parse_id(raw)
                .ok_or_else(|| bad(format!("before: must be a bisect id, got '{raw}'")))?,
        ),
        None => None,
    };
    let (page, next) = s.store.list_bisects(limit, before).await?;
    Ok(Json(BisectList {
        bisects: page.iter().map(view).collect(),
        next,
    }))
}

/// `POST /api/v1/bisects/{id}/abort`: ends a running bisect as aborted and aborts the step
/// queue it waits for.
#[utoipa::path(post, path = "/api/v1/bisects/{id}/abort", tag = "bisects", params(BisectIdParam),
    responses((status = 200, description = "Aborted; its step queue is aborted too (a running one is stopped by its worker)", body = Bisect),
              (status = 404, description = "No such bisect", body = ErrorBody),
              (status = 409, description = "Already ended (`conflict`)", body = ErrorBody)))]
pub(crate) async fn abort_bisect(
    State(s): State<AppState>,
    caller: Caller,
    BisectId(id): BisectId,
) -> Result<Json<Bisect>, ApiError> {
    let found = s.store.bisect(id).await?.ok_or_else(|| not_found(id))?;
    if !caller.may_abort(found.bisect.submitted_by.as_deref()) {
        return Err(ApiError::Forbidden(forbidden_message(
            "aborting a bisect another token started",
            Scope::Admin,
            caller.name.as_deref().unwrap_or("-"),
            caller.scope,
        )));
    }
    let by = caller.name.as_deref();
    let message = match by {
        Some(name) => format!("aborted on request (by {name})"),
        None => "aborted on request".to_string(),
    };
    let Some(aborted) = s.store.abort_bisect(id, &message).await? else {
        return Err(ApiError::Conflict(format!(
            "bisect {id} already ended ({})",
            found.bisect.status
        )));
    };
    if let Some(queue) = aborted.current_queue {
        match s
            .store
            .abort_queue_by(queue, by, crate::view::DETAIL_CAPS)
            .await
        {
            // Its step queue ended (or was deleted) meanwhile: nothing to stop.
            Ok(_) | Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(bisect = id, token = by.unwrap_or("-"), "bisect aborted");
    s.changed(false);
    let now = s.store.bisect(id).await?.ok_or_else(|| not_found(id))?;
    Ok(Json(view(&now)))
}
