//! The API's view of the store's rows: the JSON shapes of `core::api`, with the links (case
//! logs, the next page of cases) the server routes. `GET /api/v1/queues` and `GET
//! /api/v1/queues/{id}` send the JSON the store builds in SQL instead (`testarena_store::page`,
//! the same links); `tests/page.rs` checks that both say the same.

use crate::error::ApiError;
use testarena_core::api;
use testarena_store::{rfc3339, CaseCaps, CaseRow, QueueDetail, QueueJson};

/// Cases a queue's detail (and its live events) lists: the first 500 of each task, 2000 in
/// all; the rest are paged through `GET /api/v1/queues/{id}/tasks/{task}/cases`.
pub(crate) const DETAIL_CAPS: CaseCaps = CaseCaps {
    per_task: 500,
    per_queue: 2000,
};

/// Cases each queue of a list shows: the first 50 of each task, 100 in all.
pub(crate) const LIST_CAPS: CaseCaps = CaseCaps {
    per_task: 50,
    per_queue: 100,
};

/// `/api/v1/queues/{id}`: where a queue is.
pub(crate) fn queue_url(id: i64) -> String {
    format!("/api/v1/queues/{id}")
}

/// The page of a task's cases after `after` (from the start without it).
fn cases_page_url(queue: i64, task: i64, after: Option<i64>) -> String {
    let base = format!("{}/tasks/{task}/cases", queue_url(queue));
    match after {
        Some(position) => format!("{base}?after={position}"),
        None => base,
    }
}

/// A case's log (`.log`, or its HTML page with `.html`) of task `task`.
fn case_log_url(queue: i64, key: &str, suffix: &str, task: i64) -> String {
    format!(
        "{}/cases/{}/log{suffix}?task={task}",
        queue_url(queue),
        urlencode(key)
    )
}

/// The labels of each live worker, to say why a waiting queue waits; `None` when they
/// cannot be read (then nothing is said).
pub(crate) async fn live_labels(store: &testarena_store::Store) -> Option<Vec<Vec<String>>> {
    match store.workers(testarena_core::limits::WORKER_ALIVE_MS).await {
        Ok(ws) => Some(ws.into_iter().map(|w| w.labels).collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the live workers");
            None
        }
    }
}

/// The API's view of a queue, with its `waiting_reason` when it waits and none of the `live`
/// workers (their labels) can take it.
pub(crate) fn queue_live(detail: &QueueDetail, live: Option<&[Vec<String>]>) -> api::Queue {
    let mut q = queue(detail);
    if q.status == testarena_core::QueueStatus::Waiting {
        q.waiting_reason = live.and_then(|live| api::waiting_reason(&q.labels, live));
    }
    q
}

/// The API's view of a queue (as `GET /api/v1/queues/{id}` shows it).
pub fn queue(detail: &QueueDetail) -> api::Queue {
    let q = &detail.queue;
    let tasks = detail
        .tasks
        .iter()
        .map(|(t, cases)| {
            let counts = detail.task_counts(t, cases);
            let cases_next = (counts.total > cases.len() as u64)
                .then(|| cases_page_url(q.id, t.id, cases.last().map(|c| c.position)));
            api::Task {
                id: t.id,
                scenario: t.scenario.clone(),
                status: t.status,
                started_at: t.started_at.map(rfc3339),
                finished_at: t.finished_at.map(rfc3339),
                error: t.error.clone(),
                cases: cases.iter().map(|c| case(c, q.id)).collect(),
                cases_total: counts.total,
                cases_next,
            }
        })
        .collect();
    api::Queue {
        id: q.id,
        name: q.name.clone(),
        // The clone URL may carry a token: the API never shows it.
        repo: testarena_core::redact::redact(&q.repo),
        branch: q.branch.clone(),
        commit: q.commit.clone(),
        status: q.status,
        phase: q.phase,
        priority: q.priority,
        created_at: rfc3339(q.created_at),
        started_at: q.started_at.map(rfc3339),
        finished_at: q.finished_at.map(rfc3339),
        error: q.error.clone(),
        scenarios: q.scenarios.clone(),
        abort_requested: q.abort_requested && !q.status.is_finished(),
        worker: q.worker_id.clone(),
        attempts: q.attempts,
        labels: q.labels.clone(),
        submitted_by: q.submitted_by.clone(),
        waiting_reason: None,
        no_cache: q.no_cache,
        retries: q.retries,
        build: api::Build {
            cached_from: q.build_cached_from,
        },
        previous_id: q.previous_id,
        regressions: q.regressions.map(|n| n.max(0) as u64),
        summary: detail.summary(),
        tasks,
    }
}

/// The API's view of a case of queue `queue_id`.
pub(crate) fn case(c: &CaseRow, queue_id: i64) -> api::Case {
    api::Case {
        log_url: case_log_url(queue_id, &c.key, "", c.task_id),
        html_url: case_log_url(queue_id, &c.key, ".html", c.task_id),
        id: c.key.clone(),
        name: c.name.clone(),
        status: c.status,
        duration_ms: c.duration_ms.map(|d| d.max(0) as u64),
        message: c.message.clone(),
    }
}

/// A queue's answer as the database built it (`testarena_store::QueueJson`), ready to send:
/// the rare queue whose repository URL may hold credentials, or whose case ids need
/// percent-encoding in their links, is parsed and has those redone here (as [`queue`] does).
pub(crate) fn queue_json(q: QueueJson) -> Result<String, ApiError> {
    if !q.raw {
        return Ok(q.json);
    }
    let corrupt = |e: serde_json::Error| ApiError::Internal(format!("queue {}: {e}", q.id));
    let mut parsed: api::Queue = serde_json::from_str(&q.json).map_err(corrupt)?;
    parsed.repo = testarena_core::redact::redact(&parsed.repo);
    for t in &mut parsed.tasks {
        for c in &mut t.cases {
            c.log_url = case_log_url(parsed.id, &c.id, "", t.id);
            c.html_url = case_log_url(parsed.id, &c.id, ".html", t.id);
        }
    }
    serde_json::to_string(&parsed).map_err(corrupt)
}

/// A page of the queue list (`api::QueueList`) from the queues' answers as JSON.
pub(crate) fn queue_list_json(
    queues: Vec<QueueJson>,
    next: Option<i64>,
) -> Result<String, ApiError> {
    let mut out = String::from("{\"queues\":[");
    for (i, q) in queues.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&queue_json(q)?);
    }
    out.push_str("],\"next\":");
    match next {
        Some(n) => out.push_str(&n.to_string()),
        None => out.push_str("null"),
    }
    out.push('}');
    Ok(out)
}

/// Percent-encodes a path segment (case ids are `[A-Za-z0-9_.-]`, so this rarely changes anything).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_core::validate::ValidQueue;
    use testarena_core::CaseStatus;
    use testarena_store::{CaseResult, NewCase, Store};

    #[tokio::test]
    async fn capped_views_link_the_next_page_of_cases() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let valid = ValidQueue {
            repo: "https://example.com/r.git".into(),
            branch: "main".into(),
            scenarios: Some(vec!["x.xml".into(), "y.xml".into(), "z.xml".into()]),
            name: "q".into(),
            priority: 5,
            commit: None,
            case_filter: None,
            labels: Vec::new(),
            origin: None,
            no_cache: false,
            retries: 0,
        };
        let id = store.create_queue(&valid).await.unwrap().queue.id;
        store.claim("w", 30_000).await.unwrap().unwrap();
        let detail = store.queue(id).await.unwrap();
        let tasks: Vec<i64> = detail.tasks.iter().map(|t| t.0.id).collect();
        for (t, n) in tasks.iter().zip([25, 3, 10]) {
            let cases: Vec<NewCase> = (0..n)
                .map(|i| NewCase {
                    key: format!("TC {i}"),
                    name: format!("case {i}"),
                })
                .collect();
            let ids = store
                .create_cases(*t, &testarena_store::Holder::new("w", 1), &cases)
                .await
                .unwrap();
            let failed = CaseResult {
                status: CaseStatus::Failed,
                duration_ms: Some(7),
                message: None,
            };
            store
                .finish_case(ids[n - 1], &testarena_store::Holder::new("w", 1), &failed)
                .await
                .unwrap();
        }
        let caps = CaseCaps {
            per_task: 10,
            per_queue: 12,
        };
        let full = queue(&store.queue(id).await.unwrap());
        let capped = queue(&store.queue_capped(id, caps).await.unwrap());
        assert_eq!(capped.summary, full.summary);
        assert_eq!(capped.summary.failed, 3);
        assert_eq!(
            capped.tasks[0].cases_next.as_deref(),
            Some(format!("/api/v1/queues/{id}/tasks/{}/cases?after=9", tasks[0]).as_str())
        );
        assert_eq!(
            capped.tasks[2].cases_next.as_deref(),
            Some(format!("/api/v1/queues/{id}/tasks/{}/cases", tasks[2]).as_str())
        );
        assert!(full.tasks.iter().all(|t| t.cases_next.is_none()));
        assert_eq!(capped.tasks[0].cases[..], full.tasks[0].cases[..10]);
        let c = &full.tasks[1].cases[2];
        assert_eq!(
            c.log_url,
            format!("/api/v1/queues/{id}/cases/TC%202/log?task={}", tasks[1])
        );
        assert_eq!(
            c.html_url,
            format!(
                "/api/v1/queues/{id}/cases/TC%202/log.html?task={}",
                tasks[1]
            )
        );
        assert_eq!(c.duration_ms, Some(7));
    }
}
