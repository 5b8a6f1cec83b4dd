//! The bisect calls (`/api/v1/bisects`, issue 16): start a bisect, read one or a page of them,
//! abort one.

use super::{Answer, Client, ClientError};
use reqwest::Method;
pub use testarena_core::bisect::{
    Bisect, BisectCommit, BisectList, BisectStatus, BisectStep, NewBisect, StepVerdict,
};

impl Client {
    /// `POST /api/v1/bisects`: starts a bisect; the answer is the new bisect (a worker reads
    /// its range and submits the step queues). Unlike a queue submit it is not sent again
    /// after a lost answer (the server keeps no `Idempotency-Key` for bisects): an error that is
    /// not the server's refusal may hide a bisect that did start.
    pub async fn create_bisect(&self, new: &NewBisect) -> Result<Bisect, ClientError> {
        Ok(self.create_bisect_answer(new).await?.value)
    }

    /// [`Client::create_bisect`], with the answer's text.
    pub async fn create_bisect_answer(
        &self,
        new: &NewBisect,
    ) -> Result<Answer<Bisect>, ClientError> {
        let rb = self.request(Method::POST, "/api/v1/bisects").json(new);
        self.answer(rb, "a bisect").await
    }

    /// `GET /api/v1/bisects/{id}`: one bisect with its steps.
    pub async fn bisect(&self, id: i64) -> Result<Bisect, ClientError> {
        Ok(self.bisect_answer(id).await?.value)
    }

    /// [`Client::bisect`], with the answer's text.
    pub async fn bisect_answer(&self, id: i64) -> Result<Answer<Bisect>, ClientError> {
        let rb = self.request(Method::GET, &format!("/api/v1/bisects/{id}"));
        self.answer(rb, "a bisect").await
    }

    /// `GET /api/v1/bisects`: a page of bisects, newest first (at most `limit`, 1..=100; with
    /// ids below `before`).
    pub async fn bisects(
        &self,
        limit: Option<u32>,
        before: Option<i64>,
    ) -> Result<BisectList, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let rb = self.request(Method::GET, "/api/v1/bisects").query(&query);
        Ok(self.answer(rb, "a bisect list").await?.value)
    }

    /// `POST /api/v1/bisects/{id}/abort`: ends the bisect as aborted (and aborts its step
    /// queue); the answer is the bisect.
    pub async fn abort_bisect(&self, id: i64) -> Result<Bisect, ClientError> {
        let rb = self.request(Method::POST, &format!("/api/v1/bisects/{id}/abort"));
        Ok(self.answer(rb, "a bisect").await?.value)
    }

    /// The dashboard page of one bisect.
    pub fn bisect_dashboard_url(&self, id: i64) -> String {
        format!("{}/#/bisects/{id}", self.base())
    }
}
