//! `/api/v1/tokens`: API tokens.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::error::*;
use super::extract::*;
use crate::AppState;

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<serde_json::Value>> {
    let tokens = state.auth.tokens.list()?;
    Ok(Json(json!(
        tokens
            .iter()
            .map(|t| json!({"name": t.name, "created": t.created}))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    name: String,
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let body: TokenBody = parse_json(&body, "token request")?;
    let token = state.auth.tokens.create(&body.name)?;
    info!(token = %body.name, by = %user.who(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": body.name, "token": token, "note": "shown only now: store it safely"})),
    ))
}

pub(super) async fn delete_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.auth.tokens.remove(&name)? {
        return Err(ApiError::not_found(format!("no token named '{name}'")));
    }
    info!(token = %name, by = %user.who(), "API token removed");
    Ok(StatusCode::NO_CONTENT)
}
