//! The management UI: server-rendered askama pages (escaped by default), plain HTML forms with
//! a CSRF field, and a little script (static/app.js) for live updates and upload progress.
//! Every change goes through the same store functions as the API.
//!
//! One module per area (`session`, `dashboard`, `machines`, `profiles`, `images`, `tokens`),
//! over the page `frame` (layout, rendering, error pages, flash messages) and the `extract`ors
//! that check the session and the CSRF token before a handler runs.

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;

mod dashboard;
mod extract;
mod frame;
mod images;
mod machines;
mod profiles;
mod session;
mod tokens;

use dashboard::*;
use images::*;
use machines::*;
use profiles::*;
use session::*;
use tokens::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/machines", get(machines).post(add_machine))
        .route("/machines/{mac}", get(machine).post(save_machine))
        .route("/machines/{mac}/script", get(machine_script))
        .route("/machines/{mac}/delete", post(delete_machine))
        .route("/profiles", get(profiles).post(save_profile))
        .route("/profiles/new", get(new_profile))
        .route("/profiles/{name}", get(edit_profile))
        .route("/profiles/{name}/delete", post(delete_profile))
        .route("/images", get(images))
        .route("/images/import", post(import_image))
        .route("/images/{name}/verify", post(verify_image))
        .route("/images/{name}/delete", post(delete_image))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{name}/delete", post(delete_token))
}

#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    #[serde(default)]
    live: Option<String>,
}
