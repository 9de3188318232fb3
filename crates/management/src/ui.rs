//! The web UI: plain HTML, CSS and JavaScript modules embedded in the binary (no build step),
//! served at `/` (the page) and `/ui/{file}` (its assets) on the API's port, as RabbitMQ serves
//! its UI next to `/api`. The pages log in with a form and call the API with basic auth;
//! the server knows nothing of them beyond these files.
//!
//! Every answer carries an `ETag` (a hash of the file, computed at compile time) and
//! `Cache-Control: no-cache`, so a browser revalidates and gets `304` until the binary
//! changes; the page has a `Content-Security-Policy` allowing only its own scripts and styles.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiRef;
use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of `body`.
    hash: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../ui/", $name)),
            hash: fnv1a(include_bytes!(concat!("../ui/", $name))),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("table.js", JS),
    asset!("form.js", JS),
    asset!("page-overview.js", JS),
    asset!("page-lists.js", JS),
    asset!("page-queue.js", JS),
    asset!("page-exchange.js", JS),
    asset!("page-channel.js", JS),
    asset!("page-admin.js", JS),
];

/// What the page may load and call: only its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/ui/{file}", get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }))
}

/// The file `name`, or 304 if the browser's copy (`If-None-Match`) is current, or 404.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else { return ApiError::NotFound.into_response() };
    let etag = format!("\"{:016x}\"", asset.hash);
    let current = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if current { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    if name == "index.html" {
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[test]
    fn serves_each_asset_with_its_type_and_revalidates_by_etag() {
        let page = serve("index.html", &HeaderMap::new());
        assert_eq!(page.status(), StatusCode::OK);
        assert!(header_of(&page, header::CONTENT_TYPE).starts_with("text/html"));
        assert!(header_of(&page, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let script = serve("app.js", &HeaderMap::new());
        assert_eq!(header_of(&script, header::CONTENT_TYPE), JS);
        let etag = header_of(&script, header::ETAG).to_owned();
        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).expect("etag"));
        assert_eq!(serve("app.js", &conditional).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("style.css", &conditional).status(), StatusCode::OK);
        assert_eq!(serve("../lib.rs", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("missing.js", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js") || a.name.ends_with(".html")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for (i, _) in text.match_indices("/ui/") {
                let rest = &text[i + 4..];
                let end = rest.find(['\'', '"', '`', ')']).unwrap_or(rest.len());
                assert!(
                    names.contains(&&rest[..end]),
                    "{} refers to /ui/{} which is not embedded",
                    asset.name,
                    &rest[..end]
                );
            }
        }
    }
}
