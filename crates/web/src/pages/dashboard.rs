//! The dashboard: listeners, counters and transfers.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};

use super::LiveQuery;
use super::extract::*;
use super::frame::*;
use crate::{AppState, views};

#[derive(Template)]
#[template(path = "dashboard.html")]
pub(super) struct DashboardPage {
    layout: Layout,
    live: String,
}

#[derive(Template)]
#[template(path = "dashboard_live.html")]
pub(super) struct DashboardLive {
    status: views::StatusView,
}

pub(super) async fn dashboard(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let live = render_fragment(&DashboardLive {
        status: views::status(&state.boot, &state.services),
    });
    if q.live.is_some() {
        return Html(live).into_response();
    }
    let page = DashboardPage {
        layout: layout("Dashboard", "dashboard", &user, &headers),
        live,
    };
    clear_flash(render(&page), &headers)
}
