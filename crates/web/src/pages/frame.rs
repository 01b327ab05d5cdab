//! The frame every page shares: the layout, rendering, error pages, flash messages and the
//! small parsers of path segments.

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bootherd_store::{Mac, Name, StoreError};
use tracing::warn;

use crate::access::{self, User};

pub(super) const FLASH_COOKIE: &str = "bootherd_flash";

/// What every page's frame shows.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) active: &'static str,
    pub(crate) csrf: String,
    pub(crate) logged_in: bool,
    pub(crate) notice: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) version: &'static str,
}

pub(super) fn layout(
    title: &str,
    active: &'static str,
    user: &User,
    headers: &HeaderMap,
) -> Layout {
    Layout {
        title: title.to_string(),
        active,
        csrf: user.csrf().to_string(),
        logged_in: true,
        notice: flash(headers),
        error: None,
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// A failed page request, shown as a page.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        let status = match e {
            StoreError::Rejected(_) | StoreError::Invalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError::new(status, e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
    back: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            layout: Layout {
                title: "Error".into(),
                logged_in: true,
                version: env!("CARGO_PKG_VERSION"),
                ..Layout::default()
            },
            heading: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            message: self.message,
            back: "/".into(),
        };
        (self.status, render(&page)).into_response()
    }
}

pub(super) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            warn!(error = %e, "page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("page could not be rendered: {e}"),
            )
                .into_response()
        }
    }
}

pub(super) fn render_fragment(template: &impl Template) -> String {
    template.render().unwrap_or_else(|e| {
        warn!(error = %e, "page fragment could not be rendered");
        format!("<p class=\"error\">could not be rendered: {e}</p>")
    })
}

pub(super) fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only local paths: `next` must not send a freshly logged-in browser to another site. Browsers
/// drop tabs and newlines inside a URL and read `\` as `/`, so `/<TAB>/evil.example` is
/// `//evil.example`: only visible ASCII is accepted, and the second character may not make it
/// a network path.
pub(super) fn safe_next(next: &str) -> &str {
    let visible = next.bytes().all(|b| b.is_ascii_graphic());
    if visible && next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// A one-time message for the page after a redirect, hex-encoded (cookie values cannot hold
/// spaces or semicolons).
pub(super) fn with_flash(to: &str, message: &str) -> Response {
    let hex: String = message.bytes().map(|b| format!("{b:02x}")).collect();
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={hex}; Path=/; Max-Age=30; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub(super) fn flash(headers: &HeaderMap) -> Option<String> {
    let hex = access::cookie(headers, FLASH_COOKIE)?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok().filter(|m| !m.is_empty())
}

/// Pages that read the flash clear it, so it shows once.
pub(super) fn clear_flash(mut response: Response, headers: &HeaderMap) -> Response {
    if access::cookie(headers, FLASH_COOKIE).is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "bootherd_flash=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
            ),
        );
    }
    response
}

pub(super) fn parse_mac(mac: &str) -> Result<Mac, PageError> {
    mac.parse().map_err(|e| {
        PageError::new(
            StatusCode::NOT_FOUND,
            format!("'{mac}' is not a MAC address ({e})"),
        )
    })
}

pub(super) fn parse_name(name: &str) -> Result<Name, PageError> {
    name.parse()
        .map_err(|e: String| PageError::new(StatusCode::NOT_FOUND, e))
}
