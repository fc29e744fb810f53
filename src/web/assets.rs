//! Static files (CSS, vendored HTMX and Alpine, our script), embedded in the binary and
//! served under content-hashed names with year-long caching.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;
use sha2::{Digest, Sha256};

#[derive(Embed)]
#[folder = "static/"]
#[exclude = "css/input.css"]
struct Files;

struct Manifest {
    /// `css/app.css` → `css/app.3f2a9c1d.css`
    hashed: HashMap<String, String>,
    /// and back.
    original: HashMap<String, String>,
}

/// Built once from the embedded files: they cannot change while the binary runs.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| {
    let mut hashed = HashMap::new();
    let mut original = HashMap::new();
    for path in Files::iter() {
        let Some(file) = Files::get(&path) else { continue };
        let digest = hex::encode(&Sha256::digest(&file.data)[..4]);
        let name = match path.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{digest}.{ext}"),
            None => format!("{path}.{digest}"),
        };
        hashed.insert(path.to_string(), name.clone());
        original.insert(name, path.to_string());
    }
    Manifest { hashed, original }
});

/// The URL of a static file, e.g. `url("css/app.css")` → `/static/css/app.3f2a9c1d.css`.
pub fn url(path: &str) -> String {
    match MANIFEST.hashed.get(path) {
        Some(name) => format!("/static/{name}"),
        None => {
            tracing::warn!(path, "unknown static file referenced");
            format!("/static/{path}")
        }
    }
}

/// `GET /static/{*path}`: hashed names are immutable; plain names revalidate. Only names
/// the manifest lists are served: in debug builds rust-embed reads from disk, and its own
/// path check can be walked around (a symlink as the last part), so a requested path is
/// never handed to it as it came.
pub async fn serve(Path(path): Path<String>) -> Response {
    let (real, immutable) = match MANIFEST.original.get_key_value(&path) {
        Some((_, real)) => (real.as_str(), true),
        None => match MANIFEST.hashed.get_key_value(&path) {
            Some((real, _)) => (real.as_str(), false),
            None => return (StatusCode::NOT_FOUND, "no such file").into_response(),
        },
    };
    let Some(file) = Files::get(real) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mime = mime_for(real);
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        file.data,
    )
        .into_response()
}

fn mime_for(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
