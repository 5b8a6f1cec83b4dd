//! The queue endpoints. Each checks its input, calls the store, and shapes the answer.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idempotency;
use crate::path::{QueueId, TaskId};
use crate::state::AppState;
use crate::view::{self, DETAIL_CAPS, LIST_CAPS};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use testarena_core::api::ErrorBody;
use testarena_core::api::{CaseList, Queue, QueueList, Rerun};
use testarena_core::limits::WORKER_ALIVE_MS;
use testarena_core::validate::ValidQueue;
use testarena_core::CaseStatus;
use testarena_core::ValidationError;
use testarena_core::{parse_id, NewQueue, QueueStatus};
use testarena_store::StoreError;

/// Largest page of `GET /api/v1/queues/{id}/tasks/{task}/cases`.
const MAX_CASE_PAGE: u32 = 1000;
/// Page size of `GET /api/v1/queues/{id}/tasks/{task}/cases` when none is asked for.
const DEFAULT_CASE_PAGE: u32 = 500;

#[utoipa::path(post, path = "/api/v1/queues", tag = "queues", request_body = NewQueue,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
            description = "Makes a retry safe: a request with a key seen before (from the same caller, the same body) answers the first one's queue instead of making another")),
    responses((status = 201, description = "Queue created; Location header names it", body = Queue,
               headers(("Location" = String, description = "The queue's path, /api/v1/queues/{id}"))),
              (status = 400, description = "Malformed JSON (`malformed_json`), or an Idempotency-Key that is not 1..=255 visible ASCII characters (`bad_idempotency_key`)", body = ErrorBody),
              (status = 408, description = "The body did not arrive in time", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 415, description = "Not application/json", body = ErrorBody),
              (status = 422, description = "A field is missing, unknown, wrong or refused (`invalid_input`; the message names it: also a host outside `allowed_hosts` or a local path outside `--allow-local-repos`)", body = ErrorBody),
              (status = 409, description = "An Idempotency-Key sent before with another body (`idempotency_key_reused`)", body = ErrorBody),
              (status = 503, description = "Database busy or disk full; Retry-After says when to try again", body = ErrorBody)))]
pub(crate) async fn create_queue(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<NewQueue>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    let key = idempotency::submit_key(&headers, || {
        idempotency::digest("create", &serde_json::to_vec(&new).unwrap_or_default())
    })?;
    let valid = new.validate(&s.config.allowed_roots)?;
    check_host(&s, &valid.repo)?;
    check_real_location(&valid.repo, &s.config.allowed_roots)?;
    idempotency::submit(&s, &valid, key, caller.name.as_deref()).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    worse: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    params(("status" = Option<QueueStatus>, Query, description = "Only queues of this status"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 1..=500, default 50"),
           ("before" = Option<i64>, Query, minimum = 1, maximum = 999_999_999_999_999_999_i64, description = "Cursor: only queues with a smaller id (the `next` of the previous page)"),
           ("worse" = Option<bool>, Query, description = "`true`: only queues with a case that got worse than in the previous run of their repository and branch (`regressions` above 0)")),
    responses((status = 200, description = "Newest first; each queue lists at most 50 cases per task and 100 in all", body = QueueList),
              (status = 400, description = "Bad query parameter (`bad_query`)", body = ErrorBody)))]
pub(crate) async fn list_queues(
    State(s): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let bad = |message: String| ApiError::BadRequest {
        code: "bad_query",
        message,
    };
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            raw.parse::<QueueStatus>()
                .map_err(|e| bad(format!("status: {e}")))?,
        ),
        None => None,
    };
    let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: must be a number from 1 to 500, got '{raw}'"
                )))
            }
        },
        None => 50,
    };
    let before = match p.before.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            parse_id(raw).ok_or_else(|| bad(format!("before: must be a queue id, got '{raw}'")))?,
        ),
        None => None,
    };
    let worse = match p.worse.as_deref().filter(|s| !s.is_empty()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(raw) => return Err(bad(format!("worse: must be true or false, got '{raw}'"))),
    };
    // Each queue's JSON as the database built it, kept by its `rev` (`testarena_store::page`).
    let (page, next) = s
        .store
        .list_queues_json_where(status, worse, limit, before, LIST_CAPS, WORKER_ALIVE_MS)
        .await?;
    Ok(json_response(view::queue_list_json(page, next)?))
}

#[utoipa::path(get, path = "/api/v1/queues/{id}", tag = "queues", params(crate::path::QueueIdParam),
    responses((status = 200, description = "The queue; each task lists at most 500 cases (2000 in all), `cases_next` pages on", body = Queue), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn get_queue(
    State(s): State<AppState>,
    QueueId(id): QueueId,
) -> Result<Response, ApiError> {
    // The JSON the database built, kept by the queue's `rev` (`testarena_store::page`).
    let q = s.store.queue_json(id, DETAIL_CAPS, WORKER_ALIVE_MS).await?;
    Ok(json_response(view::queue_json(q)?))
}

/// A 200 answer whose body is JSON text made already.
fn json_response(body: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct CasePageParams {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/queues/{id}/tasks/{task}/cases?after=N&limit=M`: a page of a task's cases.
#[utoipa::path(get, path = "/api/v1/queues/{id}/tasks/{task}/cases", tag = "queues",
    params(crate::path::QueueIdParam, ("task" = i64, Path, minimum = 1, maximum = 999_999_999_999_999_999_i64, description = "Task id (a positive number of at most 18 digits; anything else is 404)"),
           ("after" = Option<i64>, Query, minimum = 0, description = "Cursor: only cases after this position (the `next` of the previous page)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1..=1000, default 500")),
    responses((status = 200, description = "Cases in file order", body = CaseList),
              (status = 400, description = "Bad query parameter (`bad_query`)", body = ErrorBody),
              (status = 404, description = "No such queue or task", body = ErrorBody)))]
pub(crate) async fn task_cases(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    TaskId(task): TaskId,
    params: Result<Query<CasePageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CaseList>, ApiError> {
    let no_task = || ApiError::NotFound(format!("queue {id} has no task '{task}'"));
    let Query(p) = params?;
    let bad = |message: String| ApiError::BadRequest {
        code: "bad_query",
        message,
    };
    let after = match p.after.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return Err(bad(format!("after: must be a case position, got '{raw}'"))),
        },
        None => None,
    };
    let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_CASE_PAGE).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: must be a number from 1 to {MAX_CASE_PAGE}, got '{raw}'"
                )))
            }
        },
        None => DEFAULT_CASE_PAGE,
    };
    s.store.queue_row(id).await?;
    let (mut cases, total) = match s.store.task_cases(id, task, after, limit + 1).await {
        Err(StoreError::NotFound(_)) => return Err(no_task()),
        other => other?,
    };
    let next = if cases.len() > limit as usize {
        cases.truncate(limit as usize);
        cases.last().map(|c| c.position)
    } else {
        None
    };
    Ok(Json(CaseList {
        cases: cases.iter().map(|c| view::case(c, id)).collect(),
        total,
        next,
    }))
}

#[utoipa::path(post, path = "/api/v1/queues/{id}/abort", tag = "queues", params(crate::path::QueueIdParam),
    responses((status = 200, description = "Aborted (waiting) or marked for abort (running)", body = Queue), (status = 404, description = "No such queue", body = ErrorBody),
              (status = 409, description = "Already finished", body = ErrorBody)))]
pub(crate) async fn abort_queue(
    State(s): State<AppState>,
    caller: Caller,
    QueueId(id): QueueId,
) -> Result<Json<Queue>, ApiError> {
    let row = s.store.queue_row(id).await?;
    if !caller.may_abort(row.submitted_by.as_deref()) {
        return Err(crate::auth::abort_refused(&caller));
    }
    let by = caller.name.as_deref();
    let q = view::queue(&s.store.abort_queue_by(id, by, DETAIL_CAPS).await?);
    tracing::info!(queue = id, token = by.unwrap_or("-"), "queue aborted");
    s.changed(false);
    Ok(Json(q))
}

#[utoipa::path(delete, path = "/api/v1/queues/{id}", tag = "queues", params(crate::path::QueueIdParam),
    responses((status = 204, description = "Deleted with its files (a running queue is aborted first)"), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn delete_queue(
    State(s): State<AppState>,
    caller: Caller,
    QueueId(id): QueueId,
) -> Result<StatusCode, ApiError> {
    s.store.delete_queue(id).await?;
    let by = caller.name.as_deref().unwrap_or("-");
    tracing::info!(queue = id, token = by, "queue deleted");
    s.changed(false);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/queues/{id}/rerun` `{"only_failed": bool}`: a new queue with the same repo,
/// branch and scenarios (only the failed cases' scenarios and cases if asked).
#[utoipa::path(post, path = "/api/v1/queues/{id}/rerun", tag = "queues", request_body(content = Rerun, description = "Optional (no body or only whitespace: only_failed = false; `null` is refused); the Content-Type is not looked at"),
    params(crate::path::QueueIdParam,
           ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
            description = "Makes a retry safe: a request with a key seen before (from the same caller, the same body) answers the first one's queue instead of making another")),
    responses((status = 201, description = "The new queue; Location header names it", body = Queue,
               headers(("Location" = String, description = "The new queue's path, /api/v1/queues/{id}"))),
              (status = 404, description = "No such queue", body = ErrorBody),
              (status = 400, description = "The body is not valid JSON (`malformed_json`), broke off (`bad_request`), or an Idempotency-Key that is not 1..=255 visible ASCII characters (`bad_idempotency_key`)", body = ErrorBody),
              (status = 422, description = "Valid JSON but not the body's shape, e.g. an unknown field or `null` (`invalid_input`)", body = ErrorBody),
              (status = 408, description = "The body did not arrive in time", body = ErrorBody),
              (status = 409, description = "only_failed, but nothing failed (`conflict`), or an Idempotency-Key sent before with another body (`idempotency_key_reused`)", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 503, description = "Database busy or disk full; Retry-After says when to try again", body = ErrorBody)))]
pub(crate) async fn rerun_queue(
    State(s): State<AppState>,
    caller: Caller,
    QueueId(id): QueueId,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    // The body is optional: no body means {"only_failed": false}.
    let opts: Rerun = if body.iter().all(u8::is_ascii_whitespace) {
        Rerun::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::from_json_error("rerun body", &e))?
    };
    let key = idempotency::submit_key(&headers, || {
        idempotency::digest("rerun", format!("{id} {}", opts.only_failed).as_bytes())
    })?;
    // A retry finds its queue even if the queue it re-ran is gone by now.
    if let Some(replay) = idempotency::replay(&s, key.as_ref()).await? {
        return Ok(replay);
    }
    let old = s.store.queue(id).await?;
    let q = &old.queue;
    let mut again = ValidQueue {
        repo: q.repo.clone(),
        branch: q.branch.clone(),
        scenarios: q.scenarios.clone(),
        name: q.name.clone(),
        priority: q.priority,
        commit: q.requested_commit.clone(),
        case_filter: None,
        origin: q.origin.clone(),
        labels: q.labels.clone(),
        no_cache: q.no_cache,
        retries: q.retries,
    };
    if opts.only_failed {
        let mut scenarios = Vec::new();
        let mut filter = std::collections::BTreeMap::new();
        for (t, cases) in &old.tasks {
            let bad: Vec<String> = cases
                .iter()
                .filter(|c| matches!(c.status, CaseStatus::Failed | CaseStatus::Error))
                .map(|c| c.key.clone())
                .collect();
            if !bad.is_empty() {
                scenarios.push(t.scenario.clone());
                filter.insert(t.scenario.clone(), bad);
            } else if cases.is_empty() && matches!(t.status, CaseStatus::Failed | CaseStatus::Error)
            {
                // The whole scenario could not run: run all of it again.
                scenarios.push(t.scenario.clone());
            }
        }
        if scenarios.is_empty() {
            return Err(ApiError::Conflict(format!(
                "queue {id} has no failed cases to re-run"
            )));
        }
        again.scenarios = Some(scenarios);
        again.case_filter = Some(filter);
    }
    idempotency::submit(&s, &again, key, caller.name.as_deref()).await
}

/// A local repository must really be under an allowed root: a symlink inside a root that points
/// elsewhere is refused. (Paths that do not exist yet are left to the clone to report.)
pub(crate) fn check_real_location(
    repo: &str,
    roots: &[std::path::PathBuf],
) -> Result<(), ApiError> {
    if !repo.starts_with('/') {
        return Ok(());
    }
    match std::fs::canonicalize(repo) {
        Ok(real) if !roots.iter().any(|r| real.starts_with(r)) => Err(ValidationError::new(
            "repo",
            format!(
                "local path '{repo}' resolves to '{}', which is not under an allowed root",
                real.display()
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Refuses a repository on a host outside `allowed_hosts` (the worker checks again).
pub(crate) fn check_host(s: &AppState, repo: &str) -> Result<(), ValidationError> {
    testarena_core::repo_url::check_repo_host(repo, &s.config.allowed_hosts)
        .map_err(|m| ValidationError::new("repo", m))
}
