//! A submitted queue stored and answered (`201 Created` with its `Location`), and
//! `Idempotency-Key` on the submits (`POST /api/v1/queues`, `POST /api/v1/queues/{id}/rerun`),
//! as Stripe and the IETF draft "The Idempotency-Key HTTP Header Field" have it: a client that
//! sends a request again with the same key (because the first answer never came) gets the
//! queue the first try made, answered as the first time (`201`, `Location`) plus
//! `Idempotent-Replayed: true`; the same key with another request is `409
//! idempotency_key_reused` (the IETF draft says 422, but here 422 means "this input is invalid
//! in itself", which a reused key's request is not: it conflicts with the earlier one). The
//! key is kept with its queue (scoped by the caller key, with a digest of the request) and goes
//! when the queue is deleted.

use crate::caller_key::caller_key;
use crate::error::ApiError;
use crate::state::AppState;
use crate::view::{self, DETAIL_CAPS};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use testarena_core::api::Queue;
use testarena_core::validate::ValidQueue;
use testarena_store::{Keyed, SubmitKey};

/// The request header naming a submit.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The answer header of a replay.
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// The submit key of a request: its `Idempotency-Key` (1 to 255 visible ASCII characters),
/// scoped by its caller, with the digest `request` makes. `None` without the header.
pub(crate) fn submit_key(
    headers: &HeaderMap,
    request: impl FnOnce() -> String,
) -> Result<Option<SubmitKey>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    let key = value.as_bytes();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(u8::is_ascii_graphic) {
        return Err(bad_key(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces), e.g. a UUID"
        )));
    }
    Ok(Some(SubmitKey {
        caller: caller_key(headers).unwrap_or_default(),
        key: String::from_utf8_lossy(key).into_owned(),
        request: request(),
    }))
}

/// A digest of a request: what it is (`create`, `rerun`) and its content, as hex.
pub(crate) fn digest(kind: &str, content: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(content);
    hex::encode(h.finalize())
}

fn bad_key(message: String) -> ApiError {
    ApiError::BadRequest {
        code: "bad_idempotency_key",
        message,
    }
}

/// Stores `queue` (submitted by the token named `by`) and answers `201 Created`; with a `key`,
/// only if the key made no queue yet (else the answer is that queue's replay, or the refusal
/// of a reused key).
pub(crate) async fn submit(
    s: &AppState,
    queue: &ValidQueue,
    key: Option<SubmitKey>,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    let Some(key) = key else {
        return queue_created(s, queue, by).await;
    };
    match s
        .store
        .create_queue_keyed(queue, &key, by, DETAIL_CAPS)
        .await?
    {
        Keyed::Created(detail) => {
            if let Some(name) = by {
                tracing::info!(queue = detail.queue.id, token = name, "queue submitted");
            }
            s.changed(true);
            let live = view::live_labels(&s.store).await;
            Ok(queue_answer(
                StatusCode::CREATED,
                view::queue_live(&detail, live.as_deref()),
            ))
        }
        earlier => answer_earlier(s, earlier, &key).await,
    }
}

/// The answer to a request whose `key` was used before, if it was: for a request that must be
/// looked up before it can be built (a re-run, whose queue may be deleted by now).
pub(crate) async fn replay(
    s: &AppState,
    key: Option<&SubmitKey>,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match s.store.keyed_earlier(key, DETAIL_CAPS).await? {
        Some(earlier) => Ok(Some(answer_earlier(s, earlier, key).await?)),
        None => Ok(None),
    }
}

/// The answer to a key that made a queue before: that queue as a replay, or the refusal of a
/// key sent with another request.
async fn answer_earlier(
    s: &AppState,
    earlier: Keyed,
    key: &SubmitKey,
) -> Result<Response, ApiError> {
    let detail = match earlier {
        Keyed::Replayed(detail) | Keyed::Created(detail) => detail,
        Keyed::Reused(id) => {
            return Err(ApiError::ConflictWith {
                code: "idempotency_key_reused",
                message: format!(
                    "Idempotency-Key '{}' was sent before with another request (it made queue {id}); use a new key for a new request",
                    key.key
                ),
            })
        }
    };
    tracing::info!(
        queue = detail.queue.id,
        "replayed submit (same Idempotency-Key); no new queue"
    );
    let live = view::live_labels(&s.store).await;
    let mut resp = queue_answer(
        StatusCode::CREATED,
        view::queue_live(&detail, live.as_deref()),
    );
    resp.headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    Ok(resp)
}

/// Stores a new queue (submitted by the API token named `by`, if any), wakes the worker and
/// the live-update poller, and answers `201 Created` with the queue and its `Location`.
pub(crate) async fn queue_created(
    s: &AppState,
    queue: &ValidQueue,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    let detail = s.store.create_queue_by(queue, by).await?;
    if let Some(name) = by {
        tracing::info!(queue = detail.queue.id, token = name, "queue submitted");
    }
    let live = view::live_labels(&s.store).await;
    let created = view::queue_live(&detail, live.as_deref());
    s.changed(true);
    Ok(queue_answer(StatusCode::CREATED, created))
}

/// A queue as the answer, with its `Location`.
pub(crate) fn queue_answer(status: StatusCode, queue: Queue) -> Response {
    let location = view::queue_url(queue.id);
    let mut resp = (status, Json(queue)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(key: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(key).unwrap());
        h
    }

    #[test]
    fn keys_are_checked_and_scoped_by_caller() {
        let digest = || digest("create", b"{}");
        assert_eq!(submit_key(&HeaderMap::new(), digest).unwrap(), None);
        let k = submit_key(&with_key(b"8e03978e-40d5"), digest)
            .unwrap()
            .unwrap();
        assert_eq!((k.key.as_str(), k.caller.as_str()), ("8e03978e-40d5", ""));
        assert_eq!(k.request, digest());
        let mut h = with_key(&[b'k'; MAX_KEY_LEN]);
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer ta_1_x"),
        );
        let k = submit_key(&h, digest).unwrap().unwrap();
        assert_eq!(k.caller.len(), 64);
        for bad in [
            &b""[..],
            b"has space",
            b"tab\there",
            &[b'k'; MAX_KEY_LEN + 1],
            b"caf\xc3\xa9",
        ] {
            let e = submit_key(&with_key(bad), digest).unwrap_err();
            assert!(
                matches!(
                    e,
                    ApiError::BadRequest {
                        code: "bad_idempotency_key",
                        ..
                    }
                ),
                "{bad:?}: {e:?}"
            );
        }
        let mut two = with_key(b"a");
        two.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert!(submit_key(&two, digest).is_err());
    }

    #[test]
    fn digests_tell_requests_apart() {
        assert_eq!(digest("create", b"x"), digest("create", b"x"));
        assert_ne!(digest("create", b"x"), digest("rerun", b"x"));
        assert_ne!(digest("create", b"x"), digest("create", b"y"));
        assert_eq!(digest("create", b"x").len(), 64);
    }
}
