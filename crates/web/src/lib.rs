//! bootherd-web: everything bootherd says over HTTP. `router(state)` returns an axum `Router`
//! that tests drive with `oneshot`, without a socket.
//!
//! For machines, unauthenticated by design (firmware cannot log in), exposing nothing but boot
//! material:
//! - `GET /boot/<mac>.ipxe`: the machine's iPXE script (its profile, its boot-once profile, or
//!   the menu), with every URL pointing back at the address the machine used to reach us.
//! - `GET /images/<image>/<file>`: files of the image store that the image's manifest lists,
//!   with Range and conditional requests, streamed.
//! - `GET /bootloaders/<file>`: iPXE binaries, for UEFI HTTP Boot.
//! - `GET /healthz`, and `GET /metrics` (Prometheus; counts only, no machine names).
//!
//! For people, behind a login (admin password → session cookie, or an API token):
//! - the management UI (`/`, `/machines`, `/profiles`, `/images`, `/tokens`), server-rendered
//!   from askama templates in `web/templates`, assets from `web/static` embedded in the binary;
//! - the REST API under `/api/v1`, described by `/api/v1/openapi.json`, with live boot steps
//!   as server-sent events at `/api/v1/events`.

mod access;
mod api;
mod attempts;
pub mod auth;
mod boot;
mod files;
mod intake;
mod limits;
mod metrics;
mod pages;
mod serve;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bootherd_boot::Boot;
use rust_embed::RustEmbed;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, AuthError, TokenFile, check_password_hash, hash_password};
/// What the running services report (counters, transfers, listeners); the binary fills it in.
pub use bootherd_telemetry::Services;
pub use limits::{DEFAULT_MAX_IMAGE_FILE_BYTES, HttpLimits};
pub use serve::serve;

#[derive(Debug, Clone)]
pub struct AppState {
    pub boot: Arc<Boot>,
    pub auth: Arc<Auth>,
    pub services: Arc<Services>,
    /// Sizes and timeouts of the HTTP side (uploads, imports, connections).
    pub limits: Arc<HttpLimits>,
    /// Ends live event streams, so a graceful shutdown does not wait for open browsers.
    pub shutdown: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .route("/boot/{script}", get(boot::boot_script))
        .route("/images/{image}/{file}", get(boot::image_file))
        .route("/bootloaders/{*path}", get(boot::bootloader));
    let management = pages::routes()
        .nest("/api/v1", api::routes())
        .route("/static/{*file}", get(asset))
        .layer(axum::middleware::map_response(security_headers));
    router.merge(management).with_state(state)
}

/// Headers for everything a browser renders: only our own scripts and styles, no framing,
/// no guessing of content types, no caching of pages that show tokens.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

#[derive(RustEmbed)]
#[folder = "../../web/static/"]
struct Assets;

async fn asset(Path(file): Path<String>) -> Response {
    match Assets::get(&file) {
        Some(content) => {
            let kind = match file.rsplit('.').next() {
                Some("css") => "text/css; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, kind)], content.data).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no such asset: {file}\n")).into_response(),
    }
}
