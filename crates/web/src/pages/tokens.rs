//! API tokens: the list, creating and revoking.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::info;

use super::extract::*;
use super::frame::*;
use crate::access::User;
use crate::{AppState, views};

#[derive(Template)]
#[template(path = "tokens.html")]
pub(super) struct TokensPage {
    layout: Layout,
    tokens: Vec<(String, String)>,
    created: Option<(String, String)>,
}

pub(super) fn tokens_page(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
) -> Result<TokensPage, PageError> {
    let tokens = state
        .auth
        .tokens
        .list()
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(TokensPage {
        layout: layout("API tokens", "tokens", user, headers),
        tokens: tokens
            .into_iter()
            .map(|t| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.created);
                (t.name, views::time(at))
            })
            .collect(),
        created: None,
    })
}

pub(super) async fn tokens(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    Ok(clear_flash(
        render(&tokens_page(&state, &user, &headers)?),
        &headers,
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(user, form): PageForm<TokenForm>,
) -> Result<Response, PageError> {
    let name = form.name.trim();
    match state.auth.tokens.create(name) {
        Ok(token) => {
            info!(token = %name, by = %user.who(), "API token created");
            // Shown on this response only, never stored in a cookie or the URL.
            let mut page = tokens_page(&state, &user, &headers)?;
            page.created = Some((name.to_string(), token));
            let mut response = render(&page);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(e) => {
            let mut page = tokens_page(&state, &user, &headers)?;
            page.layout.error = Some(e.to_string());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

pub(super) async fn delete_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let removed = state
        .auth
        .tokens
        .remove(&name)
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let message = if removed {
        info!(token = %name, by = %user.who(), "API token removed");
        format!("Token {name} revoked.")
    } else {
        format!("There is no token named {name}.")
    };
    Ok(with_flash("/tokens", &message))
}

impl CsrfField for TokenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
