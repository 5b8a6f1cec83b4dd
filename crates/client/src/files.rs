//! Downloads: the live queue log, case logs and pages, repro bundles, reports, and other
//! documents (workers, metrics, OpenAPI) fetched by path.

use crate::{encode, Client, ClientError, LogChunk, QueueStatus, WorkerList};
use reqwest::Method;
use serde::de::DeserializeOwned;

impl Client {
    /// `GET /api/v1/queues/{id}/log?offset=N`: the queue log from byte `offset`. To follow a
    /// running queue, ask again from `next` until the chunk is empty and
    /// [`LogChunk::finished`].
    pub async fn queue_log(&self, id: i64, offset: u64) -> Result<LogChunk, ClientError> {
        let resp = self
            .send(self.request(
                Method::GET,
                &format!("/api/v1/queues/{id}/log?offset={offset}"),
            ))
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("x-next-offset").and_then(|v| v.parse::<u64>().ok());
        let status = header("x-queue-status").and_then(|s| s.parse::<QueueStatus>().ok());
        let data = self.bytes(resp).await?;
        let next = next.unwrap_or(offset.saturating_add(data.len() as u64));
        Ok(LogChunk { data, next, status })
    }

    pub(crate) fn case_path(id: i64, case: &str, file: &str, task: Option<i64>) -> String {
        let mut path = format!("/api/v1/queues/{id}/cases/{}/{file}", encode(case));
        if let Some(t) = task {
            path.push_str(&format!("?task={t}"));
        }
        path
    }

    /// `GET /api/v1/queues/{id}/cases/{case}/log[?task=T]`: one case's console log.
    pub async fn case_log(
        &self,
        id: i64,
        case: &str,
        task: Option<i64>,
    ) -> Result<Vec<u8>, ClientError> {
        self.fetch_bytes(&Self::case_path(id, case, "log", task))
            .await
    }

    /// `GET /api/v1/queues/{id}/cases/{case}/log.html[?task=T]`: one case's log as an HTML
    /// page (written when the case ends).
    pub async fn case_log_html(
        &self,
        id: i64,
        case: &str,
        task: Option<i64>,
    ) -> Result<String, ClientError> {
        self.fetch_text(&Self::case_path(id, case, "log.html", task))
            .await
    }

    /// `GET /api/v1/queues/{id}/cases/{case}/repro[?task=T]`: a failed case's repro bundle
    /// (`.tar.gz`).
    pub async fn repro(
        &self,
        id: i64,
        case: &str,
        task: Option<i64>,
    ) -> Result<Vec<u8>, ClientError> {
        self.fetch_bytes(&Self::case_path(id, case, "repro", task))
            .await
    }

    /// `GET /api/v1/queues/{id}/junit.xml`: the JUnit report (written when the queue ends).
    pub async fn junit(&self, id: i64) -> Result<String, ClientError> {
        self.fetch_text(&format!("/api/v1/queues/{id}/junit.xml"))
            .await
    }

    /// `GET /api/v1/queues/{id}/archive`: the queue's reports as a `.tar.gz`.
    pub async fn archive(&self, id: i64) -> Result<Vec<u8>, ClientError> {
        self.fetch_bytes(&format!("/api/v1/queues/{id}/archive"))
            .await
    }

    /// `GET /api/v1/workers`: the workers with a heartbeat in the last minute.
    pub async fn workers(&self) -> Result<WorkerList, ClientError> {
        self.fetch_json("/api/v1/workers", "a worker list").await
    }

    /// `GET /metrics`: the Prometheus metrics, in the text format.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.fetch_text("/metrics").await
    }

    /// `GET /api/openapi.json`: the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.fetch_json("/api/openapi.json", "an OpenAPI document")
            .await
    }

    /// `GET path` (from the server's root, as the API gives paths: a case's `log_url` or
    /// `html_url`): the body as bytes.
    pub async fn fetch_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.bytes(resp).await
    }

    /// `GET path` (as [`Client::fetch_bytes`]): the body as text.
    pub async fn fetch_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.text(resp).await
    }

    /// `GET path` (as [`Client::fetch_bytes`], e.g. a task's `cases_next`): the JSON answer as
    /// `T`; `what` names it in the error if it does not parse.
    pub async fn fetch_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<T, ClientError> {
        Ok(self
            .answer(self.request(Method::GET, path), what)
            .await?
            .value)
    }
}
