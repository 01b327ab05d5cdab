//! `/api/v1/images`: listing, verifying, removing, importing and uploading image files.

use std::io;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use bootherd_store::{Name, StoreError};
use futures_util::TryStreamExt;
use serde::Deserialize;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{info, warn};

use super::error::*;
use super::extract::*;
use crate::intake::{self, Limited};
use crate::{AppState, views};

pub(super) async fn list_images(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<Vec<views::ImageView>>> {
    Ok(Json(views::images(&state.boot)?))
}

pub(super) fn find_image(state: &AppState, name: &str) -> ApiResult<views::ImageView> {
    views::images(&state.boot)?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no image named '{name}'")))
}

pub(super) async fn get_image(
    State(state): State<AppState>,
    _user: ApiUser,
    Path(name): Path<String>,
) -> ApiResult<Json<views::ImageView>> {
    find_image(&state, &name).map(Json)
}

pub(super) async fn delete_image(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let image = parse_name(&name, "image")?;
    find_image(&state, &name)?;
    state.boot.store().remove_image(&image)?;
    info!(%image, by = %user.who(), "image deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn verify_image(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<Json<views::ImageView>> {
    let image = parse_name(&name, "image")?;
    find_image(&state, &name)?;
    let store = state.boot.store().clone();
    let problems = tokio::task::spawn_blocking(move || store.verify_image(&image))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    info!(image = %name, by = %user.who(), problems = problems.len(), "image verified");
    find_image(&state, &name).map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportBody {
    /// A file on the server.
    path: String,
    /// The name in the image; the file's own name by default.
    #[serde(default, rename = "as")]
    as_name: Option<String>,
}

pub(crate) async fn import(
    state: &AppState,
    image: Name,
    path: String,
    as_name: Option<String>,
) -> Result<bootherd_store::ImageFile, ApiError> {
    let store = state.boot.store().clone();
    let limits = state.limits.clone();
    let result = tokio::task::spawn_blocking(move || {
        let (file, _) = limits
            .open_import(store.data_dir(), &path)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let as_name = match as_name {
            Some(name) => name,
            None => std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        // The file may grow after it was measured; the limit holds while it is copied too.
        let reader = Limited::new(file, limits.max_image_file_bytes);
        store
            .images()
            .import_reader(&image, &as_name, reader)
            .map_err(|e| match e {
                StoreError::Io { path, source } => {
                    ApiError::bad_request(format!("{}: {source}", path.display()))
                }
                other => other.into(),
            })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = &result {
        warn!(error = %e.message(), "import refused or failed");
    }
    result
}

pub(super) async fn import_image(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<views::ImageView>)> {
    let image = parse_name(&name, "image")?;
    let body: ImportBody = parse_json(&body, "import request")?;
    let file = import(&state, image, body.path.clone(), body.as_name).await?;
    info!(image = %name, file = %file.name, from = %body.path, by = %user.who(), "file imported");
    Ok((StatusCode::CREATED, Json(find_image(&state, &name)?)))
}

/// Streams the request body into the image store: hashed while written, visible only when
/// complete, so an interrupted upload leaves nothing behind.
pub(super) async fn upload_file(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((name, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<views::ImageView>)> {
    let image = parse_name(&name, "image")?;
    bootherd_store::images::check_file_name(&file)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = state.limits.max_image_file_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = announced.filter(|&size| size > limit) {
        warn!(image = %name, file = %file, bytes = size, limit, by = %user.who(), "upload refused: too large");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{name}/{file} is {size} bytes, more than the {limit} bytes an image file may have (raise --max-image-file-bytes, http.max_image_file_bytes)"
            ),
        ));
    }
    let stream = intake::with_stall_timeout(
        body.into_data_stream().map_err(io::Error::other),
        state.limits.upload_stall,
    );
    let reader = Limited::new(
        SyncIoBridge::new(StreamReader::new(Box::pin(stream))),
        limit,
    );
    let store = state.boot.store().clone();
    let target = file.clone();
    let started = std::time::Instant::now();
    let entry = tokio::task::spawn_blocking(move || {
        store.images().import_reader(&image, &target, reader)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        let error = match e {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::FileTooLarge => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("upload of {name}/{file} stopped: {source}; nothing was stored"),
                )
            }
            StoreError::Io { source, .. } if source.kind() != io::ErrorKind::StorageFull => {
                ApiError::bad_request(format!(
                    "upload of {name}/{file} did not complete ({source}); nothing was stored, send it again"
                ))
            }
            other => other.into(),
        };
        warn!(image = %name, file = %file, error = %error.message(), by = %user.who(), "upload failed");
        error
    })?;
    info!(image = %name, file = %file, bytes = entry.size, sha256 = %entry.sha256, duration_ms = started.elapsed().as_millis() as u64, by = %user.who(), "file uploaded");
    Ok((StatusCode::CREATED, Json(find_image(&state, &name)?)))
}
