//! What sits between a socket and the router: request counting, body deadlines, and the
//! socket wrapper that notices slow clients and makes hyper's own error answers JSON.

use super::registry::{Conn, Registry};
use crate::error::{error_json, BodyTimedOut};
use axum::http::StatusCode;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Largest request head (request line and headers) accepted, in bytes; hyper answers 431
/// past it.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers one request may have; hyper answers 431 past it.
pub const MAX_HEADERS: usize = 100;
/// Counts a request from its head until its answer is completely sent.
pub(super) struct InFlight {
    pub(super) conn: Arc<Conn>,
    pub(super) registry: Arc<Registry>,
}

impl InFlight {
    pub(super) fn start(conn: Arc<Conn>, registry: Arc<Registry>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_started.store(0, Ordering::Release);
        InFlight { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since
                .store(self.registry.now(), Ordering::Release);
        }
    }
}

/// An answer's body that keeps its request counted until it is sent (or dropped).
pub(super) struct GuardedBody<B> {
    pub(super) inner: B,
    pub(super) _guard: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passed.
pub(super) struct DeadlineBody<B> {
    pub(super) inner: B,
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: notes when a request head starts arriving and when the client
/// stops reading, and replaces hyper's bodiless error answers with JSON ones.
pub(super) struct WatchedIo {
    pub(super) inner: TcpStream,
    pub(super) conn: Arc<Conn>,
    pub(super) registry: Arc<Registry>,
    /// Bytes of a replacement answer still to send.
    pub(super) pending: Vec<u8>,
}

impl WatchedIo {
    /// Sends what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let r = Pin::new(&mut self.inner).poll_write(cx, &self.pending);
            self.note_write(&r);
            let n = ready!(r)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Notes whether the client reads what is written to it.
    fn note_write<T>(&self, r: &Poll<io::Result<T>>) {
        let blocked = &self.conn.write_blocked_since;
        if r.is_pending() {
            if blocked.load(Ordering::Acquire) == 0 {
                blocked.store(self.registry.now(), Ordering::Release);
            }
        } else {
            blocked.store(0, Ordering::Release);
        }
    }
}

/// The JSON answer standing in for hyper's own answer that starts `head`, if it is one: hyper
/// answers 400, 414 or 431 without a body, before any request reached the router, when it
/// cannot parse a request head.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = std::str::from_utf8(rest.get(..3)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let (status, message) = match status {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1".to_string(),
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "the request target is longer than the server accepts".to_string(),
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is larger than {} KiB or has more than {MAX_HEADERS} headers",
                MAX_HEAD / 1024
            ),
        ),
        _ => return None,
    };
    let body = error_json(status, &message);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            let c = &self.conn;
            if c.in_flight.load(Ordering::Acquire) == 0
                && c.head_started.load(Ordering::Acquire) == 0
            {
                c.head_started.store(self.registry.now(), Ordering::Release);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper's own answer: no request reached the router since the head began arriving.
        let c = &self.conn;
        if c.in_flight.load(Ordering::Acquire) == 0 && c.head_started.load(Ordering::Acquire) != 0 {
            if let Some(replacement) = replacement_for(buf) {
                self.pending = replacement;
                // The connection closes after this answer: hyper writes nothing more.
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json() {
        let out = replacement_for(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("content-type: application/json\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert!(replacement_for(b"HTTP/1.1 404 Not Found\r\n").is_none());
        assert!(replacement_for(b"0\r\n\r\n").is_none());
        assert!(replacement_for(b"HTTP/1.1 414 URI Too Long\r\n").is_some());
        assert!(replacement_for(b"HTTP/1.1 400 Bad Request\r\n").is_some());
    }
}
