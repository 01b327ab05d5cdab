//! `/api/v1/profiles`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bootherd_store::{Name, Profile, StoreError};
use tracing::info;

use super::error::*;
use super::extract::*;
use crate::{AppState, views};

pub(super) async fn list_profiles(
    State(state): State<AppState>,
    _user: ApiUser,
) -> Json<Vec<views::ProfileView>> {
    Json(views::profiles(&state.boot))
}

pub(super) fn find_profile(state: &AppState, name: &str) -> ApiResult<views::ProfileView> {
    views::profiles(&state.boot)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no profile named '{name}'")))
}

pub(super) async fn get_profile(
    State(state): State<AppState>,
    _user: ApiUser,
    Path(name): Path<String>,
) -> ApiResult<Json<views::ProfileView>> {
    find_profile(&state, &name).map(Json)
}

pub(crate) fn save_profile(
    state: &AppState,
    name: Name,
    profile: Profile,
) -> Result<(), StoreError> {
    state.boot.store().update(|s| {
        s.profiles.insert(name, profile);
        Ok(())
    })
}

pub(crate) fn remove_profile(state: &AppState, name: &Name) -> Result<bool, StoreError> {
    state
        .boot
        .store()
        .update(|s| Ok(s.profiles.remove(name).is_some()))
}

pub(super) async fn put_profile(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<views::ProfileView>> {
    let name = parse_name(&name, "profile")?;
    let profile: Profile = parse_json(&body, "profile")?;
    save_profile(&state, name.clone(), profile)?;
    info!(profile = %name, by = %user.who(), "profile saved");
    find_profile(&state, name.as_str()).map(Json)
}

pub(super) async fn delete_profile(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let name = parse_name(&name, "profile")?;
    if !remove_profile(&state, &name)? {
        return Err(ApiError::not_found(format!("no profile named '{name}'")));
    }
    info!(profile = %name, by = %user.who(), "profile removed");
    Ok(StatusCode::NO_CONTENT)
}
