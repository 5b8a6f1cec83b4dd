//! The calls on queues: health, submit, read, list, abort, re-run, delete.

use crate::{
    new_idempotency_key, Answer, CaseList, CasePageQuery, Client, ClientError, Health, NewQueue,
    Queue, QueueList, QueueListQuery, Rerun,
};
use reqwest::{Method, StatusCode};

impl Client {
    /// `GET /api/v1/health`. A server whose database is unreachable answers 503 with a
    /// `degraded` report: that is returned as a report too, not as an error.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let resp = self
            .request(Method::GET, "/api/v1/health")
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(h) = serde_json::from_slice::<Health>(&body) {
                return Ok(h);
            }
        }
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
                what: "a health report",
                source,
            });
        }
        Err(ClientError::from_answer(status, &body))
    }

    /// `POST /api/v1/queues`: submits a queue, exactly once (a fresh `Idempotency-Key`, tried
    /// again as the crate's documentation says); the answer is the new queue.
    pub async fn create_queue(&self, new: &NewQueue) -> Result<Queue, ClientError> {
        Ok(self.create_queue_answer(new).await?.value)
    }

    /// [`Client::create_queue`], with the answer's text.
    pub async fn create_queue_answer(&self, new: &NewQueue) -> Result<Answer<Queue>, ClientError> {
        self.create_queue_keyed(new, &new_idempotency_key()).await
    }

    /// [`Client::create_queue_answer`] with `key` as the `Idempotency-Key`: a call with the key
    /// of an earlier one (and the same queue) answers the queue that one made. A key is 1 to
    /// 255 visible ASCII characters; [`new_idempotency_key`] makes one.
    pub async fn create_queue_keyed(
        &self,
        new: &NewQueue,
        key: &str,
    ) -> Result<Answer<Queue>, ClientError> {
        let rb = self.request(Method::POST, "/api/v1/queues").json(new);
        self.submit(rb, key).await
    }

    /// `GET /api/v1/queues/{id}`: one queue (each task lists its first 500 cases).
    pub async fn queue(&self, id: i64) -> Result<Queue, ClientError> {
        Ok(self.queue_answer(id).await?.value)
    }

    /// [`Client::queue`], with the answer's text.
    pub async fn queue_answer(&self, id: i64) -> Result<Answer<Queue>, ClientError> {
        let rb = self.request(Method::GET, &format!("/api/v1/queues/{id}"));
        self.answer(rb, "a queue").await
    }

    /// `GET /api/v1/queues`: a page of queues, newest first.
    pub async fn queues(&self, query: &QueueListQuery) -> Result<QueueList, ClientError> {
        Ok(self.queues_answer(query).await?.value)
    }

    /// [`Client::queues`], with the answer's text.
    pub async fn queues_answer(
        &self,
        query: &QueueListQuery,
    ) -> Result<Answer<QueueList>, ClientError> {
        let rb = self.request(Method::GET, "/api/v1/queues").query(query);
        self.answer(rb, "a queue list").await
    }

    /// `GET /api/v1/queues/{id}/tasks/{task}/cases`: a page of one task's cases.
    pub async fn task_cases(
        &self,
        id: i64,
        task: i64,
        query: &CasePageQuery,
    ) -> Result<CaseList, ClientError> {
        let rb = self
            .request(
                Method::GET,
                &format!("/api/v1/queues/{id}/tasks/{task}/cases"),
            )
            .query(query);
        Ok(self.answer(rb, "a case list").await?.value)
    }

    /// `POST /api/v1/queues/{id}/abort`: the queue as it is now (aborted, or with
    /// `abort_requested` while its worker stops it).
    pub async fn abort(&self, id: i64) -> Result<Queue, ClientError> {
        Ok(self.abort_answer(id).await?.value)
    }

    /// [`Client::abort`], with the answer's text.
    pub async fn abort_answer(&self, id: i64) -> Result<Answer<Queue>, ClientError> {
        let rb = self.request(Method::POST, &format!("/api/v1/queues/{id}/abort"));
        self.answer(rb, "a queue").await
    }

    /// `POST /api/v1/queues/{id}/rerun`: a new queue like this one (only its failed cases with
    /// `only_failed`), made exactly once as [`Client::create_queue`] is.
    pub async fn rerun(&self, id: i64, rerun: &Rerun) -> Result<Queue, ClientError> {
        Ok(self.rerun_answer(id, rerun).await?.value)
    }

    /// [`Client::rerun`], with the answer's text.
    pub async fn rerun_answer(&self, id: i64, rerun: &Rerun) -> Result<Answer<Queue>, ClientError> {
        self.rerun_keyed(id, rerun, &new_idempotency_key()).await
    }

    /// [`Client::rerun_answer`] with `key` as the `Idempotency-Key` (as
    /// [`Client::create_queue_keyed`]).
    pub async fn rerun_keyed(
        &self,
        id: i64,
        rerun: &Rerun,
        key: &str,
    ) -> Result<Answer<Queue>, ClientError> {
        let rb = self
            .request(Method::POST, &format!("/api/v1/queues/{id}/rerun"))
            .json(rerun);
        self.submit(rb, key).await
    }

    /// `DELETE /api/v1/queues/{id}`: deletes the queue and its files.
    pub async fn delete(&self, id: i64) -> Result<(), ClientError> {
        let resp = self
            .send(self.request(Method::DELETE, &format!("/api/v1/queues/{id}")))
            .await?;
        self.bytes(resp).await?;
        Ok(())
    }
}
