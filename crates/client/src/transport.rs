//! How a request travels: the token, the transport errors, the bounded retries, and the
//! parsing of an answer. Every API call is made of these.

use crate::retry::Retrying;
use crate::{Answer, Client, ClientError, Queue, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

impl Client {
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub(crate) fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            base: self.base.clone(),
            source,
        }
    }

    /// Sends a request; any answer but 2xx becomes an error carrying the API's code and
    /// message. A `429` is waited out and tried again (bounded).
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        self.send_retrying(rb, Retrying::RateLimited).await
    }

    /// Sends a submit with `key` as its `Idempotency-Key`, tried again (same key) after a lost
    /// answer or a server in trouble; parses the new (or replayed) queue.
    pub(crate) async fn submit(
        &self,
        rb: RequestBuilder,
        key: &str,
    ) -> Result<Answer<Queue>, ClientError> {
        let rb = rb.header(IDEMPOTENCY_KEY, key);
        let resp = self.send_retrying(rb, Retrying::Keyed).await?;
        self.parse(resp, "a queue").await
    }

    pub(crate) async fn bytes(&self, resp: Response) -> Result<Vec<u8>, ClientError> {
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        Ok(bytes.to_vec())
    }

    pub(crate) async fn text(&self, resp: Response) -> Result<String, ClientError> {
        String::from_utf8(self.bytes(resp).await?).map_err(|_| ClientError::NotUtf8)
    }

    /// Sends a request and parses its JSON answer as `what`.
    pub(crate) async fn answer<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        what: &'static str,
    ) -> Result<Answer<T>, ClientError> {
        let resp = self.send(rb).await?;
        self.parse(resp, what).await
    }

    /// Parses a success's JSON answer as `what`.
    pub(crate) async fn parse<T: DeserializeOwned>(
        &self,
        resp: Response,
        what: &'static str,
    ) -> Result<Answer<T>, ClientError> {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let location = header(reqwest::header::LOCATION.as_str());
        let replayed = header(IDEMPOTENT_REPLAYED).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let text = self.text(resp).await?;
        let value =
            serde_json::from_str(&text).map_err(|source| ClientError::Decode { what, source })?;
        Ok(Answer {
            value,
            text,
            status,
            location,
            replayed,
        })
    }
}
