//! Who is calling, and their JSON, MACs and names parsed with errors that say where.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use bootherd_store::{Mac, Name};
use serde::de::DeserializeOwned;

use super::error::*;
use crate::AppState;
use crate::access::{self, User};

/// An authenticated API caller; cookie sessions must send `X-CSRF-Token` on changes.
#[derive(Debug)]
pub(crate) struct ApiUser(pub(crate) User);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<ApiUser> {
        let Some(user) = access::identify(parts, state) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: send 'Authorization: Bearer <token>' (create one with `bootherd token add NAME` or on the Tokens page) or log in to the web UI",
            ));
        };
        if !access::header_allowed(&user, parts) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header: a change made with a session cookie must send the token shown in the page's <meta name=\"csrf-token\">",
            ));
        }
        Ok(ApiUser(user))
    }
}

/// Parses a JSON body ourselves, to say exactly where it is wrong.
pub(super) fn parse_json<T: DeserializeOwned>(body: &Bytes, what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid {what} at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

pub(super) fn parse_mac(mac: &str) -> ApiResult<Mac> {
    mac.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "'{mac}' is not a MAC address ({e}); write it like 52:54:00:12:34:56"
        ))
    })
}

pub(super) fn parse_name(name: &str, what: &str) -> ApiResult<Name> {
    name.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid {what} name '{name}': {e}")))
}
