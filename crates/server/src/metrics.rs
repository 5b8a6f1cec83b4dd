//! `GET /metrics` in Prometheus text format: queues by status, wait and run time, case
//! results, workers and their heartbeat age, HTTP request durations by route.

use crate::events::QueueEvent;
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;
use testarena_core::{CaseStatus, QueueStatus};
use testarena_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    queues: Family<StatusLabel, Gauge>,
    workers: Gauge,
    heartbeat_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    wait_seconds: Histogram,
    run_seconds: Histogram,
    cases: Family<StatusLabel, Counter>,
    http: Family<HttpLabels, Histogram>,
    connections: Gauge,
    connections_closed: Family<ReasonLabel, Counter>,
    seen: Mutex<Seen>,
}

/// What the change watcher already counted, so each queue is observed once.
#[derive(Default)]
struct Seen {
    started: HashSet<i64>,
    finished: HashSet<i64>,
    /// Each queue's case counts when last seen: the next change counts the difference.
    summaries: HashMap<i64, testarena_core::api::Summary>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let queues = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "testarena_queues",
            "Queues in the database by status",
            queues.clone(),
        );
        let workers = Gauge::default();
        registry.register(
            "testarena_workers",
            "Workers with a heartbeat in the last minute",
            workers.clone(),
        );
        let heartbeat_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "testarena_worker_heartbeat_age_seconds",
            "Age of the oldest heartbeat among live workers",
            heartbeat_age.clone(),
        );
        let wait_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "testarena_queue_wait_seconds",
            "Time from submit to claim",
            wait_seconds.clone(),
        );
        let run_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 16));
        registry.register(
            "testarena_queue_run_seconds",
            "Time from claim to verdict",
            run_seconds.clone(),
        );
        let cases = Family::<StatusLabel, Counter>::default();
        registry.register(
            "testarena_case_results",
            "Finished test cases by verdict",
            cases.clone(),
        );
        let http = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "testarena_http_request_duration_seconds",
            "HTTP request durations by route",
            http.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "testarena_http_connections",
            "HTTP connections open now",
            connections.clone(),
        );
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "testarena_http_connections_closed",
            "HTTP connections the server closed on its own, by reason (evicted, header_timeout, idle_timeout, write_stalled)",
            connections_closed.clone(),
        );
        Metrics {
            registry,
            queues,
            workers,
            heartbeat_age,
            wait_seconds,
            run_seconds,
            cases,
            http,
            connections,
            connections_closed,
            seen: Mutex::default(),
        }
    }

    /// Counts a connection opened (`+1`) or ended (`-1`).
    pub(crate) fn connection(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// Counts a connection the server closed on its own.
    pub(crate) fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts what a queue change shows: a claim (wait time), a verdict (run time), case results.
    pub fn observe(&self, event: &QueueEvent) {
        let QueueEvent::Changed(q) = event else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let secs = |a: &Option<String>, b: &str| -> Option<f64> {
            let fmt = time::format_description::well_known::Rfc3339;
            let a = time::OffsetDateTime::parse(a.as_deref()?, &fmt).ok()?;
            let b = time::OffsetDateTime::parse(b, &fmt).ok()?;
            Some((a - b).as_seconds_f64().max(0.0))
        };
        if q.status != QueueStatus::Waiting && q.started_at.is_some() && seen.started.insert(q.id) {
            if let Some(s) = secs(&q.started_at, &q.created_at) {
                self.wait_seconds.observe(s);
            }
        }
        if q.status.is_finished() && q.started_at.is_some() && seen.finished.insert(q.id) {
            if let (Some(start), Some(_)) = (&q.started_at, &q.finished_at) {
                if let Some(s) = secs(&q.finished_at, start) {
                    self.run_seconds.observe(s);
                }
            }
        }
        // From the counts, not the cases: a big queue's event lists only its first cases.
        let before = seen
            .summaries
            .insert(q.id, q.summary.clone())
            .unwrap_or_default();
        for (status, now, was) in [
            (CaseStatus::Passed, q.summary.passed, before.passed),
            (CaseStatus::Failed, q.summary.failed, before.failed),
            (CaseStatus::Error, q.summary.error, before.error),
            (CaseStatus::Skipped, q.summary.skipped, before.skipped),
        ] {
            if now > was {
                self.cases
                    .get_or_create(&StatusLabel {
                        status: status.to_string(),
                    })
                    .inc_by(now - was);
            }
        }
        // Bounded memory: forget old entries now and then (a re-count after that is harmless).
        if seen.summaries.len() > 100_000 || seen.started.len() > 100_000 {
            *seen = Seen::default();
        }
    }

    async fn refresh(&self, store: &Store) {
        if let Ok(counts) = store.count_by_status().await {
            for s in QueueStatus::ALL {
                let n = counts.get(s).copied().unwrap_or(0);
                self.queues
                    .get_or_create(&StatusLabel {
                        status: s.to_string(),
                    })
                    .set(n);
            }
        }
        if let Ok(ws) = store.workers(60_000).await {
            self.workers.set(ws.len() as i64);
            let now = testarena_store::now_ms();
            let oldest = ws.iter().map(|w| now - w.heartbeat_at).max().unwrap_or(0);
            self.heartbeat_age.set(oldest.max(0) as f64 / 1000.0);
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.refresh(&s.store).await;
    let mut body = String::new();
    if encode(&mut body, &s.metrics.registry).is_err() {
        return crate::error::ApiError::Internal("cannot encode metrics".into()).into_response();
    }
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Middleware: times every request, labelled by its route pattern (not the raw path).
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: resp.status().as_u16(),
    };
    s.metrics
        .http
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_core::api::{Queue, Summary};

    fn queue(id: i64, passed: u64, failed: u64) -> QueueEvent {
        QueueEvent::Changed(Box::new(Queue {
            id,
            name: "q".into(),
            repo: "r".into(),
            branch: "b".into(),
            commit: None,
            status: QueueStatus::Running,
            phase: None,
            priority: 5,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: Some("2026-01-01T00:00:01.000Z".into()),
            finished_at: None,
            error: None,
            scenarios: None,
            abort_requested: false,
            worker: None,
            attempts: 1,
            summary: Summary {
                total: 100_000,
                passed,
                failed,
                error: 0,
                skipped: 0,
            },
            // A big queue's event lists only its first cases: the counts come from the summary.
            tasks: vec![],
        }))
    }

    #[test]
    fn case_results_count_every_case_of_a_big_queue() {
        let m = Metrics::new();
        m.observe(&queue(1, 600, 1));
        m.observe(&queue(1, 900, 1));
        m.observe(&queue(2, 5, 0));
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        assert!(
            text.contains("testarena_case_results_total{status=\"passed\"} 905"),
            "{text}"
        );
        assert!(
            text.contains("testarena_case_results_total{status=\"failed\"} 1"),
            "{text}"
        );
    }
}
