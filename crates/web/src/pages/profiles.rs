//! Profiles: the list, the profile form for every kind, saving and deleting.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bootherd_store::{Name, Profile};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::info;

use super::extract::*;
use super::frame::*;
use crate::access::User;
use crate::{AppState, api, views};

#[derive(Template)]
#[template(path = "profiles.html")]
pub(super) struct ProfilesPage {
    layout: Layout,
    profiles: Vec<views::ProfileView>,
}

pub(super) async fn profiles(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
) -> Response {
    let page = ProfilesPage {
        layout: layout("Profiles", "profiles", &user, &headers),
        profiles: views::profiles(&state.boot),
    };
    clear_flash(render(&page), &headers)
}

/// The profile form's fields: every kind's, only the chosen kind's are used.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ProfileForm {
    csrf: String,
    editing: String,
    name: String,
    kind: String,
    description: String,
    image: String,
    kernel: String,
    initrd: String,
    cmdline: String,
    title: String,
    entries: String,
    default: String,
    timeout: String,
    url: String,
    files: String,
}

pub(super) const KINDS: [(&str, &str); 5] = [
    ("linux", "Linux: kernel + initrd from an image"),
    ("menu", "Menu of other profiles"),
    ("local-disk", "Boot the local disk"),
    ("chain", "Chain to another iPXE script (netboot.xyz)"),
    (
        "bootfile",
        "Raw boot file per architecture (pxelinux, GRUB)",
    ),
];

pub(super) fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| Value::String(l.to_string()))
        .collect()
}

impl ProfileForm {
    fn from_profile(name: &Name, profile: &Profile) -> ProfileForm {
        let mut form = ProfileForm {
            name: name.to_string(),
            kind: profile.kind().to_string(),
            description: profile.description().to_string(),
            editing: "1".into(),
            ..ProfileForm::default()
        };
        match profile {
            Profile::Linux {
                image,
                kernel,
                initrd,
                cmdline,
                ..
            } => {
                form.image = image.to_string();
                form.kernel = kernel.clone();
                form.initrd = initrd.join("\n");
                form.cmdline = cmdline.clone();
            }
            Profile::Menu {
                title,
                entries,
                default,
                timeout,
                ..
            } => {
                form.title = title.clone();
                form.entries = entries
                    .iter()
                    .map(Name::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                form.default = default.as_ref().map(Name::to_string).unwrap_or_default();
                form.timeout = timeout.map(|t| t.to_string()).unwrap_or_default();
            }
            Profile::Chain { url, .. } => form.url = url.clone(),
            Profile::Bootfile { image, files, .. } => {
                form.image = image.to_string();
                form.files = files
                    .iter()
                    .map(|(arch, file)| format!("{arch} = {file}"))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            Profile::LocalDisk { .. } => {}
        }
        form
    }

    /// Builds the profile through the same deserializer as the API and state.yaml, so the
    /// form cannot make a profile the file format would not accept.
    fn to_profile(&self) -> Result<(Name, Profile), String> {
        let name: Name = self.name.trim().parse().map_err(|e| format!("name: {e}"))?;
        let mut fields = Map::new();
        fields.insert("kind".into(), self.kind.clone().into());
        let put = |fields: &mut Map<String, Value>, key: &str, value: &str| {
            if !value.trim().is_empty() {
                fields.insert(key.into(), value.trim().into());
            }
        };
        put(&mut fields, "description", &self.description);
        match self.kind.as_str() {
            "linux" => {
                put(&mut fields, "image", &self.image);
                put(&mut fields, "kernel", &self.kernel);
                fields.insert("initrd".into(), Value::Array(lines(&self.initrd)));
                put(&mut fields, "cmdline", &self.cmdline);
            }
            "menu" => {
                put(&mut fields, "title", &self.title);
                fields.insert("entries".into(), Value::Array(lines(&self.entries)));
                put(&mut fields, "default", &self.default);
                if !self.timeout.trim().is_empty() {
                    let seconds: u32 = self.timeout.trim().parse().map_err(|_| {
                        format!(
                            "timeout: '{}' is not a number of seconds",
                            self.timeout.trim()
                        )
                    })?;
                    fields.insert("timeout".into(), seconds.into());
                }
            }
            "chain" => put(&mut fields, "url", &self.url),
            "bootfile" => {
                put(&mut fields, "image", &self.image);
                let mut files = Map::new();
                for line in self.files.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let (arch, file) = line.split_once('=').ok_or_else(|| {
                        format!("boot files: '{line}' should look like 'bios = pxelinux.0'")
                    })?;
                    files.insert(arch.trim().into(), file.trim().into());
                }
                fields.insert("files".into(), Value::Object(files));
            }
            _ => {}
        }
        let profile: Profile = serde_json::from_value(Value::Object(fields)).map_err(|e| {
            let text = e.to_string();
            match text.strip_prefix("missing field ") {
                Some(field) => format!(
                    "{} is required for a {} profile",
                    field.trim_matches('`'),
                    self.kind
                ),
                None => text,
            }
        })?;
        Ok((name, profile))
    }
}

/// Which form field a refusal of the profile form is about, when it is about one.
pub(super) fn field_of(message: &str) -> Option<&'static str> {
    const FIELDS: [&str; 11] = [
        "name", "kind", "image", "kernel", "initrd", "cmdline", "entries", "default", "timeout",
        "url", "files",
    ];
    let first = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| !w.is_empty())?;
    FIELDS.into_iter().find(|f| *f == first).or_else(|| {
        if message.starts_with("boot files") {
            Some("files")
        } else if message.contains("unknown variant") {
            Some("kind")
        } else if message.contains("menu entry") {
            Some("entries")
        } else if message.contains("already exists") {
            Some("name")
        } else {
            None
        }
    })
}

#[derive(Template)]
#[template(path = "profile_form.html")]
pub(super) struct ProfilePage {
    layout: Layout,
    form: ProfileForm,
    editing: bool,
    kinds: [(&'static str, &'static str); 5],
    images: Vec<String>,
    arches: String,
    problems: Vec<String>,
    /// The field a refusal is about, to show it next to that field; empty: not one field.
    error_field: String,
    error_message: String,
}

pub(super) fn profile_page(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
    form: ProfileForm,
) -> ProfilePage {
    let editing = !form.editing.is_empty();
    let problems = if editing {
        views::profiles(&state.boot)
            .into_iter()
            .find(|p| p.name == form.name)
            .map(|p| p.problems)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    ProfilePage {
        layout: layout(
            if editing {
                "Edit profile"
            } else {
                "New profile"
            },
            "profiles",
            user,
            headers,
        ),
        editing,
        kinds: KINDS,
        images: state
            .boot
            .store()
            .image_map()
            .unwrap_or_default()
            .keys()
            .map(Name::to_string)
            .collect(),
        arches: bootherd_store::validate::ARCH_NAMES.join(", "),
        problems,
        form,
        error_field: String::new(),
        error_message: String::new(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct KindQuery {
    #[serde(default)]
    kind: Option<String>,
}

pub(super) async fn new_profile(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Query(q): Query<KindQuery>,
    headers: HeaderMap,
) -> Response {
    let form = ProfileForm {
        kind: q.kind.unwrap_or_else(|| "linux".into()),
        ..ProfileForm::default()
    };
    render(&profile_page(&state, &user, &headers, form))
}

pub(super) async fn edit_profile(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let current = state.boot.store().state();
    let found = name
        .parse::<Name>()
        .ok()
        .and_then(|n| current.profiles.get(&n).map(|p| (n, p.clone())));
    let Some((name, profile)) = found else {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("There is no profile named '{name}'."),
        ));
    };
    let form = ProfileForm::from_profile(&name, &profile);
    Ok(clear_flash(
        render(&profile_page(&state, &user, &headers, form)),
        &headers,
    ))
}

pub(super) async fn save_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(user, form): PageForm<ProfileForm>,
) -> Result<Response, PageError> {
    let editing = !form.editing.is_empty();
    let result = form.to_profile().and_then(|(name, profile)| {
        if !editing && state.boot.store().state().profiles.contains_key(&name) {
            return Err(format!(
                "a profile named '{name}' already exists: pick another name or edit that one"
            ));
        }
        api::save_profile(&state, name.clone(), profile)
            .map(|()| name)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(name) => {
            info!(profile = %name, by = %user.who(), "profile saved");
            Ok(with_flash(
                &format!("/profiles/{name}"),
                &format!("Profile {name} saved."),
            ))
        }
        Err(message) => {
            let mut page = profile_page(&state, &user, &headers, form);
            match field_of(&message) {
                Some(field) => {
                    page.layout.error = Some("The profile was not saved; see below.".into());
                    page.error_field = field.to_string();
                    page.error_message = message;
                }
                None => page.layout.error = Some(message),
            }
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

pub(super) async fn delete_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let name = parse_name(&name)?;
    match api::remove_profile(&state, &name) {
        Ok(_) => {
            info!(profile = %name, by = %user.who(), "profile removed");
            Ok(with_flash("/profiles", &format!("Profile {name} deleted.")))
        }
        Err(e) => Ok(with_flash("/profiles", &format!("Not deleted: {e}"))),
    }
}

impl CsrfField for ProfileForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}
