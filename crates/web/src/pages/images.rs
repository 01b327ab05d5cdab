//! Images: the list, importing from an import directory, verifying, deleting.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bootherd_store::Name;
use serde::Deserialize;
use tracing::info;

use super::extract::*;
use super::frame::*;
use crate::{AppState, api, views};

#[derive(Template)]
#[template(path = "images.html")]
pub(super) struct ImagesPage {
    layout: Layout,
    images: Vec<views::ImageView>,
}

pub(super) async fn images(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let page = ImagesPage {
        layout: layout("Images", "images", &user, &headers),
        images: views::images(&state.boot)?,
    };
    Ok(clear_flash(render(&page), &headers))
}

#[derive(Debug, Deserialize)]
pub(super) struct ImportForm {
    #[serde(default)]
    csrf: String,
    image: String,
    path: String,
    #[serde(default, rename = "as")]
    as_name: String,
}

pub(super) async fn import_image(
    State(state): State<AppState>,
    PageForm(user, form): PageForm<ImportForm>,
) -> Result<Response, PageError> {
    let image: Name = match form.image.trim().parse() {
        Ok(image) => image,
        Err(e) => {
            return Ok(with_flash(
                "/images",
                &format!("Not imported: image name: {e}"),
            ));
        }
    };
    let as_name = Some(form.as_name.trim().to_string()).filter(|a| !a.is_empty());
    match api::import(&state, image.clone(), form.path.trim().to_string(), as_name).await {
        Ok(file) => {
            info!(%image, file = %file.name, by = %user.who(), "file imported");
            Ok(with_flash(
                "/images",
                &format!(
                    "Imported {} into {image} (sha256 {}).",
                    file.name, file.sha256
                ),
            ))
        }
        Err(e) => Ok(with_flash(
            "/images",
            &format!("Not imported: {}", e.message()),
        )),
    }
}

pub(super) async fn verify_image(
    State(state): State<AppState>,
    Path(name): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let image = parse_name(&name)?;
    let store = state.boot.store().clone();
    let checked = image.clone();
    let problems = tokio::task::spawn_blocking(move || store.verify_image(&checked))
        .await
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    info!(%image, by = %user.who(), problems = problems.len(), "image verified");
    let message = if problems.is_empty() {
        format!("{image}: every file matches its checksum.")
    } else {
        format!("{image} is damaged: {}", problems.join("; "))
    };
    Ok(with_flash("/images", &message))
}

pub(super) async fn delete_image(
    State(state): State<AppState>,
    Path(name): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let image = parse_name(&name)?;
    match state.boot.store().remove_image(&image) {
        Ok(()) => {
            info!(%image, by = %user.who(), "image deleted");
            Ok(with_flash("/images", &format!("Image {image} deleted.")))
        }
        Err(e) => Ok(with_flash("/images", &format!("Not deleted: {e}"))),
    }
}

impl CsrfField for ImportForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
