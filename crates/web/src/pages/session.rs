//! Signing in and out.

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::{info, warn};

use super::extract::*;
use super::frame::*;
use crate::AppState;
use crate::access::User;
use crate::auth::{LoginError, SESSION_COOKIE, SESSION_IDLE};

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    layout: Layout,
    has_password: bool,
    next: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<NextQuery>,
) -> Response {
    render(&LoginPage {
        layout: Layout {
            title: "Log in".into(),
            version: env!("CARGO_PKG_VERSION"),
            ..Layout::default()
        },
        has_password: state.auth.has_password(),
        next: safe_next(q.next.as_deref().unwrap_or("/")).to_string(),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    password: String,
    #[serde(default)]
    next: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    crate::access::ClientAddr(client): crate::access::ClientAddr,
    Form(form): Form<LoginForm>,
) -> Response {
    // Checking a password is deliberately slow (argon2): off the async workers, so boots
    // going on meanwhile are not held up. Without connection info (tests without a socket)
    // every attempt counts against one unknown source.
    let source = client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let auth = state.auth.clone();
    let password = form.password.clone();
    let checked = tokio::task::spawn_blocking(move || auth.login(&password, source))
        .await
        .unwrap_or(Err(LoginError::WrongPassword));
    match checked {
        Ok((cookie, _)) => {
            info!("admin logged in");
            let mut response = Redirect::to(safe_next(&form.next)).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_IDLE.as_secs()
            )) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => {
            let (status, message) = match e {
                LoginError::WrongPassword => (StatusCode::UNAUTHORIZED, "Wrong password."),
                LoginError::TooManyAttempts => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many wrong passwords from this address in the last minute; wait a minute and try again.",
                ),
                LoginError::Busy => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many logins are being checked right now; try again in a moment.",
                ),
                LoginError::NoPassword => (
                    StatusCode::UNAUTHORIZED,
                    "No admin password is set; see below how to set one.",
                ),
            };
            warn!(reason = message, client = %source, "login refused");
            let page = LoginPage {
                layout: Layout {
                    title: "Log in".into(),
                    error: Some(message.into()),
                    version: env!("CARGO_PKG_VERSION"),
                    ..Layout::default()
                },
                has_password: state.auth.has_password(),
                next: safe_next(&form.next).to_string(),
            };
            (status, render(&page)).into_response()
        }
    }
}

pub(super) async fn logout(
    State(state): State<AppState>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    if let User::Session { cookie, .. } = &user {
        state.auth.logout(cookie);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("bootherd_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    Ok(response)
}
