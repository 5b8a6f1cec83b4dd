//! The HTTP side of the client: one `Api` value per command, errors sorted by what the user
//! can do about them.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::fmt;
use std::time::Duration;
use testarena_core::api::ErrorBody;

/// Why a call to the server did not give what was asked for.
#[derive(Debug)]
pub enum CallError {
    /// The server could not be reached, or the connection broke mid-answer.
    Unreachable(String),
    /// The server answered with an error status.
    Api {
        /// HTTP status code.
        status: u16,
        /// The API's machine-readable code (`not_found`, `invalid_input`, ...).
        code: String,
        /// The API's message for people.
        message: String,
    },
    /// The answer was not what this client understands (another version, a proxy page...).
    Unexpected(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Unexpected(m) => f.write_str(m),
            CallError::Api {
                status,
                code,
                message,
            } => write!(f, "{message} ({code}, HTTP {status})"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// True for a 404 answer.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api { status: 404, .. })
    }
}

/// One chunk of a queue log.
#[derive(Debug)]
pub struct LogChunk {
    /// The bytes from the asked-for offset.
    pub data: Vec<u8>,
    /// Where the next chunk starts.
    pub next: u64,
    /// Whether the queue had finished when the chunk was read (from `x-queue-status`).
    pub finished: bool,
}

/// Largest chunk the server sends per log request; a full one means more is waiting.
pub const LOG_CHUNK: usize = 1024 * 1024;

/// A connection to one TestArena server.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Normalises what the user typed as the server address: adds `http://` when no scheme is
/// given, drops trailing slashes, and refuses anything that is not an http(s) URL.
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

/// The innermost cause of an error: usually the one that says what really happened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Api {
    /// A client for `base` (already normalised), sending `token` as a bearer token if set.
    pub fn new(base: String, token: Option<String>) -> Result<Api, CallError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("testarena-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Unexpected(format!("cannot set up HTTP client: {e}")))?;
        Ok(Api {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The dashboard page of one queue.
    pub fn dashboard_url(&self, id: i64) -> String {
        format!("{}/#/queues/{id}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> CallError {
        let why = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            root_cause(e)
        };
        CallError::Unreachable(format!("cannot reach TestArena at {}: {why}", self.base))
    }

    /// Sends a request; any answer but 2xx becomes an error carrying the API's message.
    async fn send(&self, rb: RequestBuilder) -> Result<Response, CallError> {
        let resp = rb.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => CallError::Api {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => CallError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: plain_error(status, &body),
            },
        })
    }

    async fn text(&self, resp: Response) -> Result<String, CallError> {
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CallError::Unexpected("the server's answer is not UTF-8".into()))
    }

    /// `GET path`, the body as text.
    pub async fn get_text(&self, path: &str) -> Result<String, CallError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        self.text(resp).await
    }

    /// `GET path`, the body as bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, CallError> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok(bytes.to_vec())
    }

    /// `POST path` with a JSON body (or none), the answer as text.
    pub async fn post_text(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, CallError> {
        let rb = self.request(Method::POST, path);
        let rb = match body {
            Some(b) => rb.json(b),
            None => rb,
        };
        let resp = self.send(rb).await?;
        self.text(resp).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<(), CallError> {
        self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }

    /// `GET /queues/{id}/log?offset=N`.
    pub async fn log(&self, id: i64, offset: u64) -> Result<LogChunk, CallError> {
        let resp = self
            .send(self.request(Method::GET, &format!("/queues/{id}/log?offset={offset}")))
            .await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("x-next-offset").and_then(|v| v.parse::<u64>().ok());
        let finished = header("x-queue-status")
            .and_then(|s| s.parse::<testarena_core::QueueStatus>().ok())
            .is_some_and(|s| s.is_finished());
        let data = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_vec();
        let next = next.unwrap_or(offset + data.len() as u64);
        Ok(LogChunk {
            data,
            next,
            finished,
        })
    }
}

/// A message for an error answer that is not the API's JSON (a proxy's page, say).
fn plain_error(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let first: String = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('<'))
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if first.is_empty() {
        format!("the server answered HTTP {status}")
    } else {
        format!("the server answered HTTP {status}: {first}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn plain_errors_skip_markup() {
        let m = plain_error(
            StatusCode::BAD_GATEWAY,
            b"<html>\n<h1>x</h1>\nupstream down\n",
        );
        assert!(m.contains("502") && m.contains("upstream down"), "{m}");
        assert!(plain_error(StatusCode::BAD_GATEWAY, b"").ends_with("Gateway"));
    }
}
