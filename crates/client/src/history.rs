//! The history calls of [`Client`]: a case's last results, a queue's cases with theirs, and
//! the comparison of two queues (issue 16; `docs/api.md`, "Case history").

use crate::{Answer, Client, ClientError};
use reqwest::Method;
use serde::Serialize;
use testarena_core::history::{CaseHistory, Comparison, QueueHistory};

/// The query of `GET /api/v1/history`: which case, and how many of its results.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The repository, as submitted or as the API shows it.
    pub repo: String,
    /// The scenario file (`scenarios/smoke.xml`).
    pub scenario: String,
    /// The case id in that file.
    pub case: String,
    /// Only results of this branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// How many results (1..=500; 50 when left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The query of `GET /api/v1/queues/{id}/history`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct QueueHistoryQuery {
    /// Results per case (1..=100; 30 when left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Cases per page (1..=1000; 500 when left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases: Option<u32>,
    /// Only cases after this one: the `next` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

impl Client {
    /// `GET /api/v1/history`: the last results of one case, newest first, with its pass and
    /// flaky rates and the commits where its verdict changed.
    pub async fn case_history(&self, query: &HistoryQuery) -> Result<CaseHistory, ClientError> {
        Ok(self.case_history_answer(query).await?.value)
    }

    /// [`Client::case_history`], with the answer's text.
    pub async fn case_history_answer(
        &self,
        query: &HistoryQuery,
    ) -> Result<Answer<CaseHistory>, ClientError> {
        let rb = self.request(Method::GET, "/api/v1/history").query(query);
        self.answer(rb, "a case history").await
    }

    /// `GET /api/v1/queues/{id}/history`: a page of a queue's cases, each with its last
    /// results on the queue's repository and branch.
    pub async fn queue_history(
        &self,
        id: i64,
        query: &QueueHistoryQuery,
    ) -> Result<QueueHistory, ClientError> {
        let rb = self
            .request(Method::GET, &format!("/api/v1/queues/{id}/history"))
            .query(query);
        Ok(self.answer(rb, "a queue's history").await?.value)
    }

    /// `GET /api/v1/queues/{base}/compare/{head}`: how the cases of `head` fared against
    /// those of `base`.
    pub async fn compare(&self, base: i64, head: i64) -> Result<Comparison, ClientError> {
        Ok(self.compare_answer(base, head).await?.value)
    }

    /// [`Client::compare`], with the answer's text.
    pub async fn compare_answer(
        &self,
        base: i64,
        head: i64,
    ) -> Result<Answer<Comparison>, ClientError> {
        let rb = self.request(
            Method::GET,
            &format!("/api/v1/queues/{base}/compare/{head}"),
        );
        self.answer(rb, "a comparison").await
    }

    /// `GET /api/v1/queues/{id}/compare/previous`: queue `id` against the previous finished
    /// run of its repository and branch (`404 not_found` when there is none).
    pub async fn compare_previous(&self, id: i64) -> Result<Answer<Comparison>, ClientError> {
        let rb = self.request(
            Method::GET,
            &format!("/api/v1/queues/{id}/compare/previous"),
        );
        self.answer(rb, "a comparison").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query string `query` makes.
    fn query_of(query: &impl Serialize) -> String {
        let req = reqwest::Client::new()
            .get("http://h/")
            .query(query)
            .build()
            .unwrap();
        req.url().query().unwrap_or_default().to_string()
    }

    #[test]
    fn queries_leave_out_what_is_not_given() {
        let q = HistoryQuery {
            repo: "https://h/fw.git".into(),
            scenario: "scenarios/s.xml".into(),
            case: "TC 1".into(),
            ..Default::default()
        };
        assert_eq!(
            query_of(&q),
            "repo=https%3A%2F%2Fh%2Ffw.git&scenario=scenarios%2Fs.xml&case=TC+1"
        );
        let page = QueueHistoryQuery {
            after: Some(499),
            ..Default::default()
        };
        assert_eq!(query_of(&page), "after=499");
    }
}
