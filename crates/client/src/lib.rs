//! Typed client of the TestArena REST API (`docs/api.md`).
//!
//! Requests and answers are the very types the server uses (`testarena_core::api` and
//! [`NewQueue`]), so the two cannot drift apart. The `testarena` CLI, the integration tests and
//! anyone scripting a test farm from Rust use it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testarena_client::ClientError> {
//! use testarena_client::{Client, NewQueue};
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let created = client
//!     .create_queue(&NewQueue::new("https://git.example.com/fw.git", "main"))
//!     .await?;
//! let queue = client.queue(created.id).await?;
//! println!("queue {} is {}", queue.id, queue.status);
//! # Ok(())
//! # }
//! ```
//!
//! ## Submits are exactly-once
//!
//! Every submit ([`Client::create_queue`], [`Client::rerun`]) carries a fresh random
//! `Idempotency-Key`, and is sent again with that same key when the answer does not come (the
//! connection failed or broke, the call timed out) or the server (or its proxy) says it is in
//! trouble for now (502, 503, 504): the server makes one queue per key, and answers a repeat
//! with the queue the first try made (`Idempotent-Replayed: true`, [`Answer::replayed`]). So a
//! submit whose first answer was lost still makes exactly one queue. The tries are bounded
//! ([`ClientBuilder::retries`], default [`DEFAULT_RETRIES`]) with a doubling pause (from
//! [`FIRST_PAUSE`] to [`MAX_PAUSE`]), or the server's `Retry-After`. To retry a submit
//! across processes or clients, pass your own key ([`Client::create_queue_keyed`]).
//!
//! Any call refused with `429 rate_limited` waits the `Retry-After` the server gives (at most
//! [`MAX_RETRY_AFTER`]) and goes again, within the same bound: a refused request did nothing.
//! [`ClientBuilder::on_retry`] is told of every wait (the CLI prints it).

mod bisect;
mod error;
mod files;
mod history;
mod queues;
mod retry;
mod transport;

pub use bisect::{
    Bisect, BisectCommit, BisectList, BisectStatus, BisectStep, NewBisect, StepVerdict,
};

pub use error::ClientError;
pub use history::{HistoryQuery, QueueHistoryQuery};
use retry::RetryHook;
pub use retry::{RetryNotice, DEFAULT_RETRIES, FIRST_PAUSE, MAX_PAUSE, MAX_RETRY_AFTER};
pub use testarena_core::api::{
    Case, CaseList, CasePageQuery, Health, Queue, QueueList, QueueListQuery, Rerun, Summary, Task,
    Worker, WorkerList,
};
pub use testarena_core::history::{
    CaseHistory, CaseStrip, ChangePoint, CompareCounts, ComparedCase, ComparedQueue, Comparison,
    HistoryResult, HistoryStats, QueueHistory, ResultStatus,
};
pub use testarena_core::{CaseStatus, NewQueue, Phase, QueueStatus};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Largest chunk of a queue log the server sends per request (`testarena_core::limits::LOG_CHUNK`,
/// 1 MiB): a chunk this big means more is waiting.
pub const MAX_LOG_CHUNK: usize = testarena_core::limits::LOG_CHUNK as usize;
/// How long connecting may take unless the builder says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole call may take unless the builder says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The request header that makes a submit happen once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header of a submit the server had seen before (`true`).
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A fresh `Idempotency-Key` for one submit: a random (v4) UUID.
pub fn new_idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A JSON answer with what came with it: the typed value, the text exactly as the server sent
/// it (for a program that prints the API's own JSON), its status and its `Location`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The answer, parsed.
    pub value: T,
    /// The answer's body as sent.
    pub text: String,
    /// The HTTP status (a success: `200`, or `201` for a new queue).
    pub status: u16,
    /// The `Location` header: the path of a new queue.
    pub location: Option<String>,
    /// Whether the server had seen this submit's `Idempotency-Key` before, so the queue is the
    /// one an earlier try made (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// One chunk of a queue log (`GET /api/v1/queues/{id}/log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The bytes from the asked-for offset (at most [`MAX_LOG_CHUNK`]; may end mid-line).
    pub data: Vec<u8>,
    /// The offset to ask for next (`X-Next-Offset`).
    pub next: u64,
    /// The queue's status when the chunk was read (`X-Queue-Status`), if the server said.
    pub status: Option<QueueStatus>,
}

impl LogChunk {
    /// Whether the queue had finished when the chunk was read: an empty chunk then means the
    /// log is complete.
    pub fn finished(&self) -> bool {
        self.status.is_some_and(|s| s.is_finished())
    }
}

/// Settings of a [`Client`] before it is made.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    server: String,
    token: Option<String>,
    user_agent: String,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    retries: u32,
    on_retry: Option<RetryHook>,
}

impl ClientBuilder {
    /// How often a call is tried again after a failure it may be retried after (default
    /// [`DEFAULT_RETRIES`]; 0: never).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Calls `hook` before every retry, with what is retried, why and how long the wait is.
    pub fn on_retry(mut self, hook: impl Fn(&RetryNotice) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(RetryHook(Arc::new(hook)));
        self
    }

    /// Sends `token` as `Authorization: Bearer <token>` (an empty token sends none).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// The `User-Agent` header (default `testarena-client/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// How long connecting may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole call may take, answer included (default [`DEFAULT_TIMEOUT`]); `None`
    /// for no limit (e.g. to download a very large archive).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the server address and makes the client.
    pub fn build(self) -> Result<Client, ClientError> {
        let base = normalize_base(&self.server).map_err(ClientError::InvalidUrl)?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent);
        if let Some(t) = self.timeout {
            http = http.timeout(t);
        }
        let http = http.build().map_err(ClientError::Setup)?;
        Ok(Client {
            base,
            token: self.token,
            http,
            retries: self.retries,
            on_retry: self.on_retry,
        })
    }
}

/// A connection to one TestArena server: its base URL, an optional bearer token, and a pooled
/// HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    retries: u32,
    on_retry: Option<RetryHook>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// Normalises a server address as a user types it: adds `http://` when no scheme is given,
/// drops trailing slashes, and refuses anything that is not an http(s) URL with a host.
pub fn normalize_base(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the server URL is empty".into());
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| format!("invalid server URL '{raw}': {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid server URL '{raw}': the scheme must be http or https"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("invalid server URL '{raw}': no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "invalid server URL '{raw}': no query or fragment allowed"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Percent-encodes one path segment or query value (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the server at `server` (`http://host:port`, `host:port`, or a URL with a
    /// path prefix behind a proxy) with the default settings.
    pub fn new(server: &str) -> Result<Client, ClientError> {
        Client::builder(server).build()
    }

    /// Settings for a client of the server at `server`.
    pub fn builder(server: &str) -> ClientBuilder {
        ClientBuilder {
            server: server.to_string(),
            token: None,
            user_agent: concat!("testarena-client/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: Some(DEFAULT_TIMEOUT),
            retries: DEFAULT_RETRIES,
            on_retry: None,
        }
    }

    /// The server's base URL, normalised (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path` (from the server's root, e.g. `/api/v1/health`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The dashboard page of one queue.
    pub fn dashboard_url(&self, id: i64) -> String {
        format!("{}/#/queues/{id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_fresh_uuids() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(a.bytes().all(|c| c.is_ascii_graphic()));
    }

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            normalize_base("http://h:8080/").as_deref(),
            Ok("http://h:8080")
        );
        assert_eq!(normalize_base("h:8080").as_deref(), Ok("http://h:8080"));
        assert_eq!(
            normalize_base("https://ci.example.com/arena/").as_deref(),
            Ok("https://ci.example.com/arena")
        );
        for bad in ["", "ftp://h", "http://", "http://h/?x=1"] {
            assert!(normalize_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("TC_PING-1.a~"), "TC_PING-1.a~");
        assert_eq!(encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(
            Client::case_path(3, "TC 1", "log.html", Some(2)),
            "/api/v1/queues/3/cases/TC%201/log.html?task=2"
        );
        assert_eq!(
            Client::case_path(3, "TC", "log", None),
            "/api/v1/queues/3/cases/TC/log"
        );
    }

    #[test]
    fn the_token_is_not_shown() {
        let c = Client::builder("h:1").token("s3cret").build().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.base(), "http://h:1");
        assert_eq!(c.dashboard_url(4), "http://h:1/#/queues/4");
    }

    #[test]
    fn a_finished_chunk_says_so() {
        let chunk = |status| LogChunk {
            data: Vec::new(),
            next: 0,
            status,
        };
        assert!(chunk(Some(QueueStatus::Passed)).finished());
        assert!(!chunk(Some(QueueStatus::Running)).finished());
        assert!(!chunk(None).finished());
    }
}
