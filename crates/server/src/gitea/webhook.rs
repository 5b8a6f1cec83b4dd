//! `POST /api/v1/hooks/gitea`: a Gitea push webhook. The `X-Gitea-Signature` header must be the
//! hex HMAC-SHA256 of the raw body under the configured secret (checked in constant time); a
//! push to a branch a configured rule matches becomes a queue of the repository's default
//! scenarios at the pushed commit. A delivery replayed (same `X-Gitea-Delivery`) makes no
//! second queue: it is answered `200 OK` with the queue the first one made.

use super::GiteaRule;
use crate::error::{error_response, ApiError};
use crate::handlers::check_host;
use crate::idempotency::{queue_answer, queue_created};
use crate::state::AppState;
use crate::view::{self, DETAIL_CAPS};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use testarena_core::api::{ErrorBody, Queue};
use testarena_core::origin::Origin;
use testarena_core::validate::{check_branch, check_repo, ValidQueue, DEFAULT_PRIORITY};
use testarena_core::ValidationError;

#[derive(Debug, Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    clone_url: String,
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `body` under `secret`, compared in constant time.
pub fn signature_valid(secret: &str, body: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn ignored(reason: String) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "ignored": reason })),
    )
        .into_response()
}

/// The webhook handler.
#[utoipa::path(post, path = "/api/v1/hooks/gitea", tag = "integrations",
    params(("X-Gitea-Signature" = String, Header, description = "Hex HMAC-SHA256 of the body under the configured secret"),
           ("X-Gitea-Event" = Option<String>, Header, nullable = false, description = "Only `push` is acted on"),
           ("X-Gitea-Delivery" = Option<String>, Header, nullable = false, max_length = 128, pattern = r"^[!-~]*$", description = "Delivery id, at most 128 visible ASCII characters: a replay of the same delivery makes no second queue")),
    request_body(content = Object, description = "Gitea push event payload", content_type = "application/json"),
    responses((status = 201, description = "A rule matched: the queue", body = Queue),
              (status = 200, description = "A replayed delivery: the queue the first one made", body = Queue),
              (status = 202, description = "Ignored, with the reason", body = Object),
              (status = 400, description = "Malformed JSON (`malformed_json`), or an X-Gitea-Delivery over 128 characters or not visible ASCII (`invalid_input`)", body = ErrorBody),
              (status = 401, description = "Missing or wrong signature", body = ErrorBody),
              (status = 404, description = "Webhook not configured", body = ErrorBody),
              (status = 408, description = "The body did not arrive in time", body = ErrorBody),
              (status = 413, description = "Body over 256 KiB", body = ErrorBody),
              (status = 422, description = "The payload is not a push event, its branch or commit is malformed, or its clone URL is refused (`invalid_input`)", body = ErrorBody),
              (status = 503, description = "Database busy or disk full; Retry-After says when to try again", body = ErrorBody)))]
pub(crate) async fn hook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let Some(gitea) = s.config.gitea.as_ref() else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "the Gitea webhook is not configured on this server".into(),
        ));
    };
    let Some(secret) = gitea.secret.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "the Gitea webhook has no secret configured".into(),
        ));
    };
    let signature = headers
        .get("x-gitea-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = body?;
    if signature.is_empty() || !signature_valid(secret, &body, signature) {
        return Ok(error_response(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong X-Gitea-Signature".into(),
        ));
    }
    let delivery = delivery_id(&headers)?;
    let event = headers
        .get("x-gitea-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    if event != "push" {
        return Ok(ignored(format!("event '{event}' is not a push")));
    }
    let push: PushEvent =
        serde_json::from_slice(&body).map_err(|e| ApiError::from_json_error("push payload", &e))?;
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!("'{}' is not a branch", push.git_ref)));
    };
    if push.after.bytes().all(|b| b == b'0') {
        return Ok(ignored(format!("branch '{branch}' was deleted")));
    }
    let Some(rule) = gitea
        .rules
        .iter()
        .find(|r| r.matches(&push.repository.full_name, branch))
    else {
        return Ok(ignored(format!(
            "no rule matches {} branch '{branch}'",
            push.repository.full_name
        )));
    };
    let queue = queue_of(&s, &push, branch, rule)?;
    let Some(delivery) = delivery else {
        return queue_created(&s, &queue, None).await;
    };
    let (detail, created) = s
        .store
        .create_queue_once(&queue, &delivery, DETAIL_CAPS)
        .await?;
    if !created {
        tracing::info!(queue = detail.queue.id, %delivery, "replayed Gitea delivery; no new queue");
        return Ok(queue_answer(StatusCode::OK, view::queue(&detail)));
    }
    s.changed(true);
    Ok(queue_answer(StatusCode::CREATED, view::queue(&detail)))
}

/// The queue a push of `branch` that `rule` matched asks for: the repository's default
/// scenarios at the pushed commit, with the push as its origin.
fn queue_of(
    s: &AppState,
    push: &PushEvent,
    branch: &str,
    rule: &GiteaRule,
) -> Result<ValidQueue, ApiError> {
    check_branch(branch).map_err(|m| ValidationError::new("ref", m))?;
    let repo = check_repo(
        rule.clone_url
            .as_deref()
            .unwrap_or(&push.repository.clone_url),
        &s.config.allowed_roots,
    )?;
    check_host(s, &repo)?;
    if push.after.len() != 40 || !push.after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ValidationError::new("after", "must be a 40-character commit SHA").into());
    }
    Ok(ValidQueue {
        repo,
        branch: branch.to_string(),
        scenarios: None,
        name: format!("{} {branch}", push.repository.full_name),
        priority: rule.priority.unwrap_or(DEFAULT_PRIORITY).clamp(0, 9),
        commit: Some(push.after.to_ascii_lowercase()),
        case_filter: None,
        labels: Vec::new(),
        origin: Some(Origin {
            gitea_repo: push.repository.full_name.clone(),
            context: rule.context(),
        }),
        no_cache: false,
        retries: 0,
    })
}

/// Longest `X-Gitea-Delivery` accepted (Gitea sends a 36-character UUID).
const MAX_DELIVERY: usize = 128;

/// The `X-Gitea-Delivery` header, if any: printable ASCII, at most [`MAX_DELIVERY`] bytes.
fn delivery_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("x-gitea-delivery") else {
        return Ok(None);
    };
    let value = raw.as_bytes().trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_DELIVERY || !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest {
            code: "invalid_input",
            message: format!(
                "X-Gitea-Delivery: must be at most {MAX_DELIVERY} printable ASCII characters"
            ),
        });
    }
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::signature_valid;

    #[test]
    fn signatures() {
        let body = br#"{"a":1}"#;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(signature_valid("secret", body, &good));
        assert!(!signature_valid("other", body, &good));
        assert!(!signature_valid("secret", b"{}", &good));
        assert!(!signature_valid("secret", body, "zz"));
        assert!(!signature_valid("secret", body, ""));
    }
}
