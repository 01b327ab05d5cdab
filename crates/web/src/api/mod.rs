//! The REST API under `/api/v1`: JSON in and out, the same validation as the UI (both go
//! through `Store::update`), errors as `{"error": "..."}` with a 4xx status that says whose
//! fault it is. Described by `/api/v1/openapi.json`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::{AppState, views};

mod error;
mod events;
mod extract;
mod images;
mod machines;
mod profiles;
mod tokens;

use events::*;
use extract::ApiUser;
use images::*;
use machines::*;
use profiles::*;
use tokens::*;

pub(crate) use images::import;
pub(crate) use machines::save_machine;
pub(crate) use profiles::{remove_profile, save_profile};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/status", get(status))
        .route("/machines", get(list_machines))
        .route(
            "/machines/{mac}",
            get(get_machine).put(put_machine).delete(delete_machine),
        )
        .route("/profiles", get(list_profiles))
        .route(
            "/profiles/{name}",
            get(get_profile).put(put_profile).delete(delete_profile),
        )
        .route("/images", get(list_images))
        .route("/images/{name}", get(get_image).delete(delete_image))
        .route("/images/{name}/verify", post(verify_image))
        .route("/images/{name}/import", post(import_image))
        .route("/images/{name}/files/{file}", put(upload_file))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", axum::routing::delete(delete_token))
        .route("/events", get(events))
}

/// The OpenAPI description, written by hand next to the routes (a test keeps the two in step).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn status(
    State(state): State<AppState>,
    _user: ApiUser,
) -> Json<views::StatusView> {
    Json(views::status(&state.boot, &state.services))
}
