//! Machines: the list, adding one, a machine's page, its script, saving and deleting.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use bootherd_store::{Mac, Name};
use serde::Deserialize;
use tracing::info;

use super::LiveQuery;
use super::extract::*;
use super::frame::*;
use crate::access::User;
use crate::{AppState, api, views};

#[derive(Template)]
#[template(path = "machines.html")]
pub(super) struct MachinesPage {
    layout: Layout,
    live: String,
    profiles: Vec<views::ProfileView>,
    form_mac: String,
    form_name: String,
    /// Why the MAC address typed in was refused, shown under the field.
    form_error: String,
}

#[derive(Template)]
#[template(path = "machines_live.html")]
pub(super) struct MachinesLive {
    machines: Vec<views::MachineView>,
    profiles: Vec<views::ProfileView>,
    csrf: String,
}

pub(super) fn machines_page(state: &AppState, user: &User, headers: &HeaderMap) -> MachinesPage {
    let profiles = views::profiles(&state.boot);
    MachinesPage {
        layout: layout("Machines", "machines", user, headers),
        live: render_fragment(&MachinesLive {
            machines: views::machines(&state.boot),
            profiles: profiles.clone(),
            csrf: user.csrf().to_string(),
        }),
        profiles,
        form_mac: String::new(),
        form_name: String::new(),
        form_error: String::new(),
    }
}

pub(super) async fn machines(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let page = machines_page(&state, &user, &headers);
    if q.live.is_some() {
        return Html(page.live).into_response();
    }
    clear_flash(render(&page), &headers)
}

#[derive(Debug, Deserialize)]
pub(super) struct MachineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    once: String,
    /// Set by the one-field "assign" forms of the machine list, which must not clear a
    /// boot-once profile they do not show.
    #[serde(default)]
    keep_once: String,
}

pub(super) async fn add_machine(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(user, form): PageForm<MachineForm>,
) -> Result<Response, PageError> {
    let result = form
        .mac
        .trim()
        .parse::<Mac>()
        .map_err(|e| {
            format!(
                "'{}' is not a MAC address ({e}); write it like 52:54:00:12:34:56",
                form.mac.trim()
            )
        })
        .and_then(|mac| {
            if state.boot.store().state().machines.contains_key(&mac) {
                return Err(format!(
                    "{mac} is already registered: change it on its own page"
                ));
            }
            let machine = views::machine_record(&form.name, Some(&form.profile), None)?;
            api::save_machine(&state, mac, machine)
                .map(|()| mac)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(mac) => {
            info!(%mac, by = %user.who(), "machine added");
            Ok(with_flash(
                &format!("/machines/{mac}"),
                &format!("Machine {mac} added."),
            ))
        }
        Err(message) => {
            let mut page = machines_page(&state, &user, &headers);
            page.layout.error = Some("The machine was not added; see below.".into());
            page.form_error = message;
            page.form_mac = form.mac;
            page.form_name = form.name;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "machine.html")]
pub(super) struct MachinePage {
    layout: Layout,
    m: views::MachineView,
    profiles: Vec<views::ProfileView>,
    defaults: views::DefaultsView,
    live: String,
}

#[derive(Template)]
#[template(path = "machine_live.html")]
pub(super) struct MachineLive {
    diagnosis: bootherd_boot::timeline::Diagnosis,
    verdict_text: &'static str,
    verdict_class: &'static str,
    timeline: Vec<views::EventView>,
}

pub(super) fn machine_live(detail: &views::MachineDetail) -> String {
    use bootherd_boot::timeline::Verdict;
    let (verdict_text, verdict_class) = match detail.diagnosis.verdict {
        Verdict::NeverSeen => ("never seen", "unknown"),
        Verdict::Booted => ("booted", "good"),
        Verdict::InProgress => ("in progress", "unknown"),
        Verdict::Stopped => ("stopped", "bad"),
    };
    let mut timeline = detail.timeline.clone();
    timeline.reverse();
    render_fragment(&MachineLive {
        diagnosis: detail.diagnosis.clone(),
        verdict_text,
        verdict_class,
        timeline,
    })
}

pub(super) fn machine_page(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
    mac: &Mac,
) -> MachinePage {
    let detail = views::machine_detail(&state.boot, mac);
    MachinePage {
        layout: layout(&format!("Machine {mac}"), "machines", user, headers),
        live: machine_live(&detail),
        m: detail.machine,
        profiles: views::profiles(&state.boot),
        defaults: views::defaults(&state.boot.store().state()),
    }
}

pub(super) async fn machine(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(mac): Path<String>,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let mac = parse_mac(&mac)?;
    let page = machine_page(&state, &user, &headers, &mac);
    if q.live.is_some() {
        return Ok(Html(page.live).into_response());
    }
    Ok(clear_flash(render(&page), &headers))
}

/// The script the machine would get, without using up a boot-once profile.
pub(super) async fn machine_script(
    State(state): State<AppState>,
    PageUser(_user): PageUser,
    Path(mac): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let mac = parse_mac(&mac)?;
    let base = crate::boot::base_from(&headers)
        .unwrap_or_else(|| bootherd_boot::script::HttpBase("http://bootherd".into()));
    let script = state.boot.preview_script(&mac, &base);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        script,
    )
        .into_response())
}

pub(super) async fn save_machine(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    PageForm(user, form): PageForm<MachineForm>,
) -> Result<Response, PageError> {
    let mac = parse_mac(&mac)?;
    let once = if form.keep_once.is_empty() {
        form.once.clone()
    } else {
        state
            .boot
            .store()
            .state()
            .machines
            .get(&mac)
            .and_then(|m| m.once.as_ref().map(Name::to_string))
            .unwrap_or_default()
    };
    let result = views::machine_record(&form.name, Some(&form.profile), Some(&once))
        .and_then(|machine| api::save_machine(&state, mac, machine).map_err(|e| e.to_string()));
    match result {
        Ok(()) => {
            info!(%mac, by = %user.who(), "machine saved");
            let back = if form.keep_once.is_empty() {
                format!("/machines/{mac}")
            } else {
                "/machines".to_string()
            };
            Ok(with_flash(&back, &format!("Saved {mac}.")))
        }
        Err(message) => {
            let mut page = machine_page(&state, &user, &headers, &mac);
            page.layout.error = Some(message);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

pub(super) async fn delete_machine(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let mac = parse_mac(&mac)?;
    state.boot.store().update(|s| Ok(s.machines.remove(&mac)))?;
    info!(%mac, by = %user.who(), "machine removed");
    Ok(with_flash("/machines", &format!("Removed {mac}.")))
}

impl CsrfField for MachineForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
