//! `GET /api/v1/queues/{id}/cases/{case}/repro`: a failed or errored case's repro bundle, a
//! tar.gz made on request from what the worker kept under `repro/` of the queue's files (the
//! firmware images, `testarena.toml`, the scenario files, `manifest.json` with the repository,
//! commit and emulator command), plus `case.json` (which case to replay) and the case's
//! transcript from the queue log. Kept, and deleted, with the queue's other files.

use crate::archive::{self, Entry};
use crate::case_logs::Located;
use crate::error::ApiError;
use crate::files::{find_case, CaseParams};
use crate::path::{CaseKey, QueueId};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Serialize;
use testarena_core::api::ErrorBody;
use testarena_core::paths::file_safe;
use testarena_core::repro::{self, MANIFEST, REPRO_DIR, TRANSCRIPT};
use testarena_core::CaseStatus;

/// `case.json` of a bundle: the case it is of.
#[derive(Debug, Serialize)]
struct CaseFile<'a> {
    queue: i64,
    task: i64,
    scenario: &'a str,
    case: &'a str,
    name: &'a str,
    status: CaseStatus,
    message: Option<&'a str>,
}

/// `GET /api/v1/queues/{id}/cases/{case}/repro[?task=T]`.
#[utoipa::path(get, path = "/api/v1/queues/{id}/cases/{case}/repro", tag = "logs",
    params(crate::path::QueueIdParam, ("case" = String, Path, min_length = 1, description = "Test case id"), ("task" = Option<i64>, Query, description = "Task id, when two scenarios share a case id (not a number: 400 `bad_query`)")),
    responses((status = 200, description = "tar.gz `repro-<queue>-<case>/`: `manifest.json` (repo, branch, commit, emulator command, images, what was left out over the size bound), `files/` (testarena.toml, the scenario file, the firmware images at their paths in the checkout), `case.json`, `transcript.log`; replay it with `testarena repro QUEUE CASE`", content_type = "application/gzip", body = Vec<u8>),
              (status = 404, description = "No such queue, case or task; the case did not fail (only failed or errored cases have a bundle); or the queue has no bundle (it ran on an older worker, failed before booting, or was deleted by retention)", body = ErrorBody),
              (status = 503, description = "No space left for the bundle", body = ErrorBody)))]
pub(crate) async fn repro(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    CaseKey(case): CaseKey,
    params: Result<Query<CaseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let (found, at) = find_case(&s, id, &case, p.task).await?;
    let c = &found.case;
    if !matches!(c.status, CaseStatus::Failed | CaseStatus::Error) {
        return Err(ApiError::NotFound(format!(
            "case '{case}' of queue {id} is {}: only a failed or errored case has a repro bundle",
            c.status.as_str()
        )));
    }
    let files = s.store.files(id).await?;
    let prefix = format!("{REPRO_DIR}/");
    let Some(manifest_len) = files.iter().find(|(n, _)| n == MANIFEST).map(|f| f.1) else {
        return Err(ApiError::NotFound(format!(
            "queue {id} has no repro bundle (its worker kept none: an older version, a failure before the boot, or the bundle was deleted with its logs)"
        )));
    };
    let manifest = s.store.read_file(id, MANIFEST, 0, manifest_len).await?;
    let manifest: repro::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| ApiError::Internal(format!("queue {id}'s repro manifest: {e}")))?;
    // The bundle holds every failed scenario of the queue; a case's has only its own.
    let others: Vec<String> = manifest
        .scenarios
        .iter()
        .filter(|sc| **sc != found.scenario)
        .map(|sc| format!("files/{sc}"))
        .collect();
    let about = CaseFile {
        queue: id,
        task: c.task_id,
        scenario: &found.scenario,
        case: &c.key,
        name: &c.name,
        status: c.status,
        message: c.message.as_deref(),
    };
    let about = serde_json::to_vec_pretty(&about).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut entries: Vec<Entry> = files
        .into_iter()
        .filter_map(|(name, len)| {
            let inner = name.strip_prefix(&prefix)?.to_string();
            let keep = !others.contains(&inner) && repro::is_plain_path(&inner);
            keep.then_some(Entry::Stored {
                name: inner,
                at: Located {
                    file: name,
                    range: 0..len,
                },
            })
        })
        .collect();
    entries.push(Entry::Bytes {
        name: "case.json".into(),
        data: about,
    });
    entries.push(Entry::Stored {
        name: TRANSCRIPT.into(),
        at,
    });
    let folder = format!("repro-{id}-{}", file_safe(&case));
    let (store, rt, tar_folder) = (
        s.store.clone(),
        tokio::runtime::Handle::current(),
        folder.clone(),
    );
    let file = tokio::task::spawn_blocking(move || {
        archive::build_archive(&store, &rt, id, &entries, &tar_folder)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::io("cannot build the repro bundle", e))?;
    Ok(archive::gzip_response(file, &format!("{folder}.tar.gz")))
}
