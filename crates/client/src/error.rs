//! What can go wrong in a call, sorted by what the caller can do about it.

use reqwest::StatusCode;
use testarena_core::api::ErrorBody;

/// Why a call to the server did not give what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not an http(s) URL with a host (the message says what is wrong).
    #[error("{0}")]
    InvalidUrl(String),
    /// The HTTP client could not be set up (e.g. no TLS backend).
    #[error("cannot set up HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// The server could not be reached, did not answer in time, or the connection broke
    /// mid-answer.
    #[error("cannot reach TestArena at {base}: {}", transport_reason(.source))]
    Transport {
        /// The server's base URL.
        base: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status; `code` and `message` come from the API's
    /// `{"error": {"code", "message"}}` body (or, when a proxy answered, from its status and
    /// the first line of its page).
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The API's machine-readable code (`not_found`, `invalid_input`, ...).
        code: String,
        /// The API's message for people.
        message: String,
    },
    /// The answer is not the JSON this client expects (another version, a proxy's page...).
    #[error("the server's answer is not {what} this client understands: {source}")]
    Decode {
        /// What was expected (`a queue`, `a queue list`, ...).
        what: &'static str,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// A text answer (a report, a page) is not UTF-8.
    #[error("the server's answer is not UTF-8")]
    NotUtf8,
}

impl ClientError {
    /// The HTTP status of an API refusal; `None` for any other error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API's error code (`not_found`, `invalid_input`, ...) of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The API's message of a refusal (it names the field at fault for input errors).
    pub fn api_message(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// True for a 404 answer (no such queue, case or report).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether trying again later may help: the server is away, or it (or its proxy) says it
    /// is in trouble (5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The error for an answer with a non-success `status` and `body`.
    pub(crate) fn from_answer(status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => ClientError::Api {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: plain_error(status, body),
            },
        }
    }
}

/// Why a request failed, in a few words: the innermost cause is usually the one that says what
/// really happened (`Connection refused`, `dns error`, ...).
fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
    fn api_errors_carry_code_and_message() {
        let e = ClientError::from_answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":{"code":"invalid_input","message":"branch: must not contain '..'"}}"#,
        );
        assert_eq!(e.status(), Some(422));
        assert_eq!(e.code(), Some("invalid_input"));
        assert_eq!(e.api_message(), Some("branch: must not contain '..'"));
        assert_eq!(
            e.to_string(),
            "branch: must not contain '..' (invalid_input, HTTP 422)"
        );
        assert!(!e.is_transient() && !e.is_not_found());
    }

    #[test]
    fn plain_errors_skip_markup() {
        let e = ClientError::from_answer(
            StatusCode::BAD_GATEWAY,
            b"<html>\n<h1>x</h1>\nupstream down\n",
        );
        assert_eq!(e.code(), Some("http_502"));
        let m = e.api_message().unwrap_or_default();
        assert!(m.contains("502") && m.contains("upstream down"), "{m}");
        assert!(e.is_transient());
        assert!(plain_error(StatusCode::BAD_GATEWAY, b"").ends_with("Gateway"));
    }
}
