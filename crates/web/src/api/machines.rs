//! `/api/v1/machines`: which machine boots which profile.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bootherd_store::{Mac, Machine, StoreError};
use serde::Deserialize;
use tracing::info;

use super::error::*;
use super::extract::*;
use crate::{AppState, views};

pub(super) async fn list_machines(
    State(state): State<AppState>,
    _user: ApiUser,
) -> Json<Vec<views::MachineView>> {
    Json(views::machines(&state.boot))
}

pub(super) async fn get_machine(
    State(state): State<AppState>,
    _user: ApiUser,
    Path(mac): Path<String>,
) -> ApiResult<Json<views::MachineDetail>> {
    let mac = parse_mac(&mac)?;
    let known =
        state.boot.store().state().machines.contains_key(&mac) || state.boot.seen(&mac).is_some();
    if !known {
        return Err(ApiError::not_found(format!(
            "machine {mac} is neither registered nor seen; register it with PUT /api/v1/machines/{mac}"
        )));
    }
    Ok(Json(views::machine_detail(&state.boot, &mac)))
}

/// Body of PUT /machines/{mac}: the whole record; missing fields are cleared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MachineBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    once: Option<String>,
}

pub(crate) fn save_machine(state: &AppState, mac: Mac, machine: Machine) -> Result<(), StoreError> {
    state.boot.store().update(|s| {
        s.machines.insert(mac, machine);
        Ok(())
    })
}

pub(super) async fn put_machine(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
    body: Bytes,
) -> ApiResult<Json<views::MachineDetail>> {
    let mac = parse_mac(&mac)?;
    let body: MachineBody = parse_json(&body, "machine")?;
    let machine = views::machine_record(&body.name, body.profile.as_deref(), body.once.as_deref())
        .map_err(ApiError::bad_request)?;
    save_machine(&state, mac, machine)?;
    info!(%mac, by = %user.who(), "machine saved");
    Ok(Json(views::machine_detail(&state.boot, &mac)))
}

pub(super) async fn delete_machine(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(mac): Path<String>,
) -> ApiResult<StatusCode> {
    let mac = parse_mac(&mac)?;
    let removed = state
        .boot
        .store()
        .update(|s| Ok(s.machines.remove(&mac).is_some()))?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "machine {mac} is not registered"
        )));
    }
    info!(%mac, by = %user.who(), "machine removed");
    Ok(StatusCode::NO_CONTENT)
}
