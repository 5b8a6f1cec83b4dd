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

/// `GET /`: index.html with `{{NAME_EXT}}` placeholders replaced by versioned asset URLs.
pub async fn index() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let Some(raw) = asset("index.html") else {
            return "<!doctype html><title>TestArena</title><p>The dashboard was not built into this binary.".into();
        };
        let mut page = String::from_utf8_lossy(raw).into_owned();
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
