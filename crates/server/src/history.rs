//! A case's history across queues and the comparison of two queues (issue 16): `GET
//! /api/v1/history`, `GET /api/v1/queues/{id}/history` (every case of a queue with its last
//! results, for the dashboard's strips), `GET /api/v1/queues/{id}/compare/{other}` and
//! `.../compare/previous`. The store keeps the results (`testarena_store`'s `history`); the
//! rules (rates, change points, what counts as worse) are `testarena_core::history`'s.

use crate::error::ApiError;
use crate::path::{raw_param, QueueId};
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use testarena_core::api::ErrorBody;
use testarena_core::history::{CaseHistory, Comparison, QueueHistory};

/// Results `GET /api/v1/history` answers at most, and when none is asked for.
const MAX_RESULTS: u32 = 500;
const DEFAULT_RESULTS: u32 = 50;
/// Results per case of `GET /api/v1/queues/{id}/history`: at most, and when none is asked for.
const MAX_STRIP: u32 = 100;
const DEFAULT_STRIP: u32 = 30;
/// Cases per page of `GET /api/v1/queues/{id}/history`: at most, and when none is asked for.
const MAX_CASES: u32 = 1000;
const DEFAULT_CASES: u32 = 500;

/// A `400 bad_query` about parameter `name`.
fn bad(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "bad_query",
        message: format!("{name}: {message}"),
    }
}

/// A text parameter: `None` when left out or empty; control characters (a NUL byte cannot
/// even be stored) refused.
fn text<'a>(name: &str, value: &'a Option<String>) -> Result<Option<&'a str>, ApiError> {
    match value.as_deref().filter(|v| !v.is_empty()) {
        Some(v) if v.chars().any(char::is_control) => {
            Err(bad(name, "must not contain control characters"))
        }
        other => Ok(other),
    }
}

/// A parameter that must be given.
fn required<'a>(name: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    text(name, value)?.ok_or_else(|| bad(name, "is required"))
}

/// A number parameter in `range`, `default` when left out or empty.
fn number(
    name: &str,
    value: &Option<String>,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, ApiError> {
    match value.as_deref().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(bad(
                name,
                format!(
                    "must be a number from {} to {}, got '{raw}'",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// The query of `GET /api/v1/history`, as text (checked here, so a bad one is `bad_query`).
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    repo: Option<String>,
    scenario: Option<String>,
    case: Option<String>,
    branch: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/history?repo=&scenario=&case=[&branch=][&limit=N]`.
#[utoipa::path(get, path = "/api/v1/history", tag = "history",
    params(("repo" = String, Query, min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "The repository, as submitted or as the API shows it (credentials are hidden before it is looked up)"),
           ("scenario" = String, Query, min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "The scenario file, as the queue's task names it (`scenarios/smoke.xml`)"),
           ("case" = String, Query, min_length = 1, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "The case id in that file"),
           ("branch" = Option<String>, Query, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", description = "Only results of this branch (default: every branch)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "How many results, newest first: 1..=500, default 50")),
    responses((status = 200, description = "The case's last results (of finished runs), newest first, with its pass and flaky rates and the commits where its verdict changed", body = CaseHistory),
              (status = 400, description = "A parameter is missing or malformed (`bad_query`)", body = ErrorBody)))]
pub(crate) async fn case_history(
    State(s): State<AppState>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<CaseHistory>, ApiError> {
    let Query(p) = params?;
    let repo = required("repo", &p.repo)?;
    let scenario = required("scenario", &p.scenario)?;
    let case = required("case", &p.case)?;
    let branch = text("branch", &p.branch)?;
    let limit = number("limit", &p.limit, 1..=MAX_RESULTS, DEFAULT_RESULTS)?;
    let history = s
        .store
        .case_history(repo, scenario, case, branch, limit)
        .await?;
    Ok(Json(history))
}

/// The query of `GET /api/v1/queues/{id}/history`.
#[derive(Debug, Deserialize)]
pub(crate) struct StripParams {
    limit: Option<String>,
    cases: Option<String>,
    after: Option<String>,
}

/// `GET /api/v1/queues/{id}/history?limit=30&cases=500&after=N`.
#[utoipa::path(get, path = "/api/v1/queues/{id}/history", tag = "history",
    params(crate::path::QueueIdParam,
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Results per case: 1..=100, default 30"),
           ("cases" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Cases per page: 1..=1000, default 500"),
           ("after" = Option<u64>, Query, minimum = 0, maximum = 999_999_999_999_u64, description = "Cursor: only cases after this one (0-based, in run order: the `next` of the previous page)")),
    responses((status = 200, description = "A page of the queue's cases in run order, each with its last results on the queue's repository and branch up to this queue (newest first)", body = QueueHistory),
              (status = 400, description = "A parameter is malformed (`bad_query`)", body = ErrorBody),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_history(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    params: Result<Query<StripParams>, QueryRejection>,
) -> Result<Json<QueueHistory>, ApiError> {
    let Query(p) = params?;
    let limit = number("limit", &p.limit, 1..=MAX_STRIP, DEFAULT_STRIP)?;
    let cases = number("cases", &p.cases, 1..=MAX_CASES, DEFAULT_CASES)?;
    let after = match p.after.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n <= 999_999_999_999 => Some(n),
            _ => return Err(bad("after", format!("must be a case's place, got '{raw}'"))),
        },
    };
    Ok(Json(s.store.queue_history(id, limit, after, cases).await?))
}

/// The `{other}` of a compare route: a queue id, else `404 not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OtherId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for OtherId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = raw_param(parts, state, "other").await?;
        testarena_core::parse_id(&raw).map(OtherId).ok_or_else(|| {
            ApiError::NotFound(format!(
                "queue '{raw}' not found (ids are positive numbers)"
            ))
            .into_response()
        })
    }
}

/// `GET /api/v1/queues/{id}/compare/{other}`: queue `other` (head) against `id` (base).
#[utoipa::path(get, path = "/api/v1/queues/{id}/compare/{other}", tag = "history",
    params(crate::path::QueueIdParam,
           ("other" = i64, Path, minimum = 1, maximum = 999_999_999_999_999_999_i64, description = "The queue to compare with `id` (the newer one, usually): a positive number, else 404")),
    responses((status = 200, description = "The cases of `other` (head) against those of `id` (base), by scenario and case id: newly failing, newly passing, still failing, new and removed", body = Comparison),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn compare(
    State(s): State<AppState>,
    QueueId(base): QueueId,
    OtherId(head): OtherId,
) -> Result<Json<Comparison>, ApiError> {
    Ok(Json(s.store.compare(base, head).await?))
}

/// `GET /api/v1/queues/{id}/compare/previous`: the previous run of its branch against it.
#[utoipa::path(get, path = "/api/v1/queues/{id}/compare/previous", tag = "history",
    params(crate::path::QueueIdParam),
    responses((status = 200, description = "The queue (head) against the previous finished run of its repository and branch (base): the one recorded when it finished (`previous_id`), else the latest run finished before it", body = Comparison),
              (status = 404, description = "No such queue, or no earlier finished run of its repository and branch", body = ErrorBody)))]
pub(crate) async fn compare_previous(
    State(s): State<AppState>,
    QueueId(id): QueueId,
) -> Result<Json<Comparison>, ApiError> {
    let Some(base) = s.store.previous_run(id).await? else {
        return Err(ApiError::NotFound(format!(
            "queue {id} has no earlier finished run of its repository and branch to compare with"
        )));
    };
    Ok(Json(s.store.compare(base, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_with_their_names() {
        let some = |v: &str| Some(v.to_string());
        assert_eq!(text("repo", &some("")).unwrap(), None);
        assert_eq!(
            text("repo", &some("/srv/git/fw")).unwrap(),
            Some("/srv/git/fw")
        );
        let nul = text("case", &some("a\0b")).unwrap_err().to_string();
        assert_eq!(nul, "case: must not contain control characters");
        assert_eq!(
            required("scenario", &None).unwrap_err().to_string(),
            "scenario: is required"
        );
        assert_eq!(number("limit", &None, 1..=500, 50).unwrap(), 50);
        assert_eq!(number("limit", &some("500"), 1..=500, 50).unwrap(), 500);
        for raw in ["0", "501", "x", "-1"] {
            let e = number("limit", &some(raw), 1..=500, 50).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("limit: must be a number from 1 to 500"),
                "{e}"
            );
        }
    }
}
