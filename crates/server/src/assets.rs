//! The dashboard: files of `web/` embedded in the binary, served with cache-busting URLs.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// A short hash of all assets; changes whenever any file changes.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ASSETS.hash(&mut h);
        format!("{:x}", h.finish())
    })
}

fn asset(name: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// What the dashboard must agree on with the server, defined once in core and put into the
/// page (`<meta name="testarena-limits" content="{{LIMITS_JSON}}">`, read by web/app.js): the
/// worker window, the log chunk, the statuses. JSON, escaped for an attribute value.
pub(crate) fn limits_json() -> String {
    use testarena_core::{limits, QueueStatus};
    serde_json::json!({
        "worker_alive_seconds": limits::WORKER_ALIVE.as_secs(),
        "log_chunk": limits::LOG_CHUNK,
        "queue_statuses": QueueStatus::ALL,
        "finished_statuses": QueueStatus::ALL.iter().filter(|s| s.is_finished()).collect::<Vec<_>>(),
    })
    .to_string()
    .replace('&', "&amp;")
    .replace('"', "&quot;")
    .replace('<', "&lt;")
}

/// `GET /`: index.html with `{{NAME_EXT}}` placeholders replaced by versioned asset URLs and
/// `{{LIMITS_JSON}}` by [`limits_json`].
pub async fn index() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let Some(raw) = asset("index.html") else {
            return "<!doctype html><title>TestArena</title><p>The dashboard was not built into this binary.".into();
        };
        let mut page = String::from_utf8_lossy(raw)
            .into_owned()
            .replace("{{LIMITS_JSON}}", &limits_json());
        for (name, _) in ASSETS {
            let key = format!("{{{{{}}}}}", name.to_ascii_uppercase().replace(['.', '-'], "_"));
            page = page.replace(&key, &format!("/assets/{name}?v={}", version()));
        }
        page
    });
    let mut resp = Html(page.clone()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /assets/{name}`: one embedded file, cached for a year (URLs carry the version).
pub async fn file(Path(name): Path<String>) -> Response {
    let Some(bytes) = asset(&name) else {
        return crate::error::error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no asset '{name}'"),
        );
    };
    let ctype = match name.rsplit('.').next() {
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_page_carries_the_limits_core_defines() {
        let resp = super::index().await;
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = String::from_utf8(body.to_vec()).unwrap();
        let meta = "<meta name=\"testarena-limits\" content=\"";
        let attr = &page[page.find(meta).unwrap() + meta.len()..];
        let json = attr[..attr.find('"').unwrap()].replace("&quot;", "\"");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["worker_alive_seconds"], 60);
        assert_eq!(v["log_chunk"], testarena_core::limits::LOG_CHUNK);
        assert_eq!(
            v["finished_statuses"],
            serde_json::json!(["passed", "failed", "error", "aborted"])
        );
        assert_eq!(v["queue_statuses"][0], "waiting");
        assert!(!page.contains("{{"), "every placeholder replaced");
    }
}
