//! Who is asking and what they sent: the page extractors that check the session and the CSRF
//! token before a handler runs.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::frame::*;
use crate::AppState;
use crate::access::{self, User};

/// A logged-in browser (or a token holder); anyone else is sent to the login page.
#[derive(Debug)]
pub(crate) struct PageUser(pub(crate) User);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<PageUser, Response> {
        match access::identify(parts, state) {
            Some(user) => Ok(PageUser(user)),
            None => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let next = if parts.method == axum::http::Method::GET {
                    next
                } else {
                    "/"
                };
                Err(Redirect::to(&format!("/login?next={}", encode_query(next))).into_response())
            }
        }
    }
}

/// A form posted by a logged-in user, its CSRF field already checked against the session: a
/// handler taking this cannot forget the check.
#[derive(Debug)]
pub(crate) struct PageForm<T>(pub(crate) User, pub(crate) T);

/// Forms that carry the session's CSRF token.
pub(crate) trait CsrfField {
    fn csrf(&self) -> &str;
}

/// A form with nothing but the CSRF token (sign out, deletions, verification).
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

impl CsrfField for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl<T> FromRequest<AppState> for PageForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let PageUser(user) = PageUser::from_request_parts(&mut parts, state).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !user.form_allowed(form.csrf()) {
            return Err(csrf_refused().into_response());
        }
        Ok(PageForm(user, form))
    }
}

pub(super) fn csrf_refused() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "The form's security token did not match your session (the page was probably open from before a restart or a new login). Go back, reload the page and try again.",
    )
}
