//! The metrics `GET /metrics` shows in Prometheus text format: queues by status, wait and run
//! time, case results, workers and their heartbeat age, HTTP request durations by route,
//! connections, database operations and live log viewers.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use testarena_core::api::Queue;
use testarena_core::limits::WORKER_ALIVE_MS;
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

/// The labels of an HTTP request's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
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
    serving: Serving,
    seen: Mutex<Seen>,
}

/// The metrics of the serving itself: requests, connections, database work, live logs.
struct Serving {
    http: Family<HttpLabels, Histogram>,
    connections: Gauge,
    connections_closed: Family<ReasonLabel, Counter>,
    store_operations: Gauge,
    live_logs: Gauge,
    live_log_viewers: Gauge,
}

/// What the change watcher already counted, so each queue is observed once.
#[derive(Default)]
struct Seen {
    started: HashSet<i64>,
    finished: HashSet<i64>,
    /// Each queue's case counts when last seen: the next change counts the difference.
    summaries: HashMap<i64, testarena_core::api::Summary>,
}

/// Registers `metric` under `name` with its `help`, and hands it back.
fn reg<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Serving {
    fn register(r: &mut Registry) -> Serving {
        let http = reg(
            r,
            "testarena_http_request_duration_seconds",
            "HTTP request durations by route",
            Family::<HttpLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        );
        let connections = reg(
            r,
            "testarena_http_connections",
            "HTTP connections open now",
            Gauge::default(),
        );
        let connections_closed = reg(r, "testarena_http_connections_closed", "HTTP connections the server closed on its own, by reason (evicted, header_timeout, idle_timeout, write_stalled)", Family::<ReasonLabel, Counter>::default());
        let store_operations = reg(
            r,
            "testarena_store_operations",
            "Database operations this server ran since it started (each one statement or one short transaction)",
            Gauge::default(),
        );
        let live_logs = reg(
            r,
            "testarena_live_logs",
            "Queue logs followed live (GET .../log/stream) now",
            Gauge::default(),
        );
        let live_log_viewers = reg(
            r,
            "testarena_live_log_viewers",
            "Open live log streams now",
            Gauge::default(),
        );
        Serving {
            http,
            connections,
            connections_closed,
            store_operations,
            live_logs,
            live_log_viewers,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let queues = reg(
            &mut r,
            "testarena_queues",
            "Queues in the database by status",
            Family::<StatusLabel, Gauge>::default(),
        );
        let workers = reg(
            &mut r,
            "testarena_workers",
            "Workers with a heartbeat in the last minute",
            Gauge::default(),
        );
        let heartbeat_age = reg(
            &mut r,
            "testarena_worker_heartbeat_age_seconds",
            "Age of the oldest heartbeat among live workers",
            Gauge::<f64, std::sync::atomic::AtomicU64>::default(),
        );
        let wait_seconds = reg(
            &mut r,
            "testarena_queue_wait_seconds",
            "Time from submit to claim",
            Histogram::new(exponential_buckets(0.01, 2.0, 20)),
        );
        let run_seconds = reg(
            &mut r,
            "testarena_queue_run_seconds",
            "Time from claim to verdict",
            Histogram::new(exponential_buckets(0.5, 2.0, 16)),
        );
        let cases = reg(
            &mut r,
            "testarena_case_results",
            "Finished test cases by verdict",
            Family::<StatusLabel, Counter>::default(),
        );
        let serving = Serving::register(&mut r);
        Metrics {
            registry: r,
            queues,
            workers,
            heartbeat_age,
            wait_seconds,
            run_seconds,
            cases,
            serving,
            seen: Mutex::default(),
        }
    }

    /// Counts a connection opened (`+1`) or ended (`-1`).
    pub(crate) fn connection(&self, delta: i64) {
        self.serving.connections.inc_by(delta);
    }

    /// Counts a connection the server closed on its own.
    pub(crate) fn connection_closed(&self, reason: &str) {
        self.serving
            .connections_closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Times a request to `labels.route`.
    pub(crate) fn http_request(&self, labels: HttpLabels, took: Duration) {
        self.serving
            .http
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts what a queue change shows: a claim (wait time), a verdict (run time), case results.
    pub fn observe(&self, q: &Queue) {
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
            (CaseStatus::Flaky, q.summary.flaky, before.flaky),
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

    /// Reads the figures kept elsewhere (the database's, the store's and the live logs'), then
    /// every metric in Prometheus text format.
    pub(crate) async fn export(&self, store: &Store, live_logs: (usize, usize)) -> Option<String> {
        self.refresh(store).await;
        let ops = i64::try_from(store.operations()).unwrap_or(i64::MAX);
        self.serving.store_operations.set(ops);
        self.serving.live_logs.set(live_logs.0 as i64);
        self.serving.live_log_viewers.set(live_logs.1 as i64);
        let mut body = String::new();
        encode(&mut body, &self.registry).ok()?;
        Some(body)
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
        if let Ok(ws) = store.workers(WORKER_ALIVE_MS).await {
            self.workers.set(ws.len() as i64);
            let now = testarena_store::now_ms();
            let oldest = ws.iter().map(|w| now - w.heartbeat_at).max().unwrap_or(0);
            self.heartbeat_age.set(oldest.max(0) as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_core::api::Summary;

    fn queue(id: i64, passed: u64, failed: u64) -> Queue {
        Queue {
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
            labels: Vec::new(),
            submitted_by: None,
            waiting_reason: None,
            summary: Summary {
                total: 100_000,
                passed,
                failed,
                error: 0,
                skipped: 0,
                flaky: 0,
            },
            // A big queue's event lists only its first cases: the counts come from the summary.
            tasks: vec![],
            no_cache: false,
            retries: 0,
            build: Default::default(),
            previous_id: None,
            regressions: None,
        }
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
