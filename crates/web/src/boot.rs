//! The endpoints machines fetch while booting: unauthenticated by design (firmware cannot log
//! in), and exposing nothing but boot material.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bootherd_boot::script::HttpBase;
use bootherd_boot::timeline::Step;
use bootherd_store::Mac;
use bootherd_tftp::{SourceError, TftpPath};
use tracing::info;

use crate::access::ClientAddr;
use crate::{AppState, files};

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The base URL for scripts: the Host the client used, which it can evidently reach. Only
/// host-name characters are accepted, since the value ends up inside a script.
pub(crate) fn base_from(headers: &HeaderMap) -> Option<HttpBase> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'));
    valid.then(|| HttpBase(format!("http://{host}")))
}

pub(crate) async fn boot_script(
    State(state): State<AppState>,
    Path(script): Path<String>,
    request: Request,
) -> Response {
    let Some(mac) = script
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<Mac>().ok())
    else {
        state
            .services
            .http
            .not_found
            .fetch_add(1, Ordering::Relaxed);
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no such script: '{script}' (scripts are /boot/<mac>.ipxe, e.g. /boot/52:54:00:12:34:56.ipxe)\n"
            ),
        );
    };
    let Some(base) = base_from(request.headers()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a valid Host header is required\n".into(),
        );
    };
    // HEAD is a look, not a boot: it uses up nothing and is no boot step. A GET is the
    // machine's boot only if it comes from the address its DHCP exchange took (see
    // `Boot::script`); the requester's address is never taken as the machine's, so no host can
    // claim another's MAC.
    if request.method() == axum::http::Method::HEAD {
        return text(StatusCode::OK, state.boot.preview_script(&mac, &base));
    }
    let requester = ClientAddr::of(request.extensions()).v4();
    let body = state.boot.script(&mac, &base, requester);
    let http = &state.services.http;
    http.scripts.fetch_add(1, Ordering::Relaxed);
    http.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    info!(%mac, requester = ?requester, "iPXE script served");
    text(StatusCode::OK, body)
}

pub(crate) async fn image_file(
    State(state): State<AppState>,
    Path((image, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    let content = match state.boot.open_image_file(&image, &file) {
        Ok(content) => content,
        Err(e) => return refused(&state, &e),
    };
    if let Some(mac) = ClientAddr::of(request.extensions())
        .v4()
        .and_then(|ip| state.boot.machine_at(ip))
    {
        let range = request
            .headers()
            .get(header::RANGE)
            .and_then(|r| r.to_str().ok())
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        state.boot.timeline().record(
            mac,
            Step::FileFetched,
            format!("{image}/{file} over HTTP{range}"),
        );
    }
    sent(
        &state,
        files::respond(content, request.method(), request.headers()),
    )
}

pub(crate) async fn bootloader(
    State(state): State<AppState>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let content = TftpPath::parse(&path)
        .map_err(|e| SourceError::AccessDenied {
            path: path.clone(),
            reason: e.to_string(),
        })
        .and_then(|parsed| state.boot.open_bootloader(&parsed));
    match content {
        Ok(content) => sent(
            &state,
            files::respond(content, request.method(), request.headers()),
        ),
        Err(e) => refused(&state, &e),
    }
}

/// A file bootherd will not serve, with the reason the TFTP refusal would give.
fn refused(state: &AppState, error: &SourceError) -> Response {
    let status = match error {
        SourceError::NotFound { .. } => StatusCode::NOT_FOUND,
        SourceError::AccessDenied { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    state
        .services
        .http
        .not_found
        .fetch_add(1, Ordering::Relaxed);
    info!(%error, "HTTP file refused");
    text(status, format!("{error}\n"))
}

/// Counts a file answer as sent when it starts: Content-Length is what a whole (or ranged)
/// response carries; a client hanging up early is rare enough.
fn sent(state: &AppState, response: Response) -> Response {
    if response.status().is_success() {
        let http = &state.services.http;
        http.files.fetch_add(1, Ordering::Relaxed);
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        http.bytes.fetch_add(length, Ordering::Relaxed);
    }
    response
}
