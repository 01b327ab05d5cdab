//! Profiles: the list, the profile form for every kind, saving and deleting.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bootherd_store::{Name, Profile};
use serde::Deserialize;
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

/// The non-empty lines of a text field, trimmed.
pub(super) fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
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

    /// Builds the profile from the form's fields; a refusal names the field it is about.
    fn to_profile(&self) -> Result<(Name, Profile), FieldError> {
        let name: Name = self
            .name
            .trim()
            .parse()
            .map_err(|e| FieldError::new("name", format!("name: {e}")))?;
        let kind = self.kind.as_str();
        let required = |field: &'static str, value: &str| -> Result<String, FieldError> {
            let value = value.trim();
            if value.is_empty() {
                return Err(FieldError::new(
                    field,
                    format!("{field} is required for a {kind} profile"),
                ));
            }
            Ok(value.to_string())
        };
        let a_name = |field: &'static str, value: &str| -> Result<Name, FieldError> {
            value
                .trim()
                .parse()
                .map_err(|e| FieldError::new(field, format!("{field}: '{}': {e}", value.trim())))
        };
        let description = self.description.trim().to_string();
        let profile = match kind {
            "linux" => Profile::Linux {
                image: a_name("image", &required("image", &self.image)?)?,
                kernel: required("kernel", &self.kernel)?,
                initrd: lines(&self.initrd),
                cmdline: self.cmdline.trim().to_string(),
                description,
            },
            "menu" => self.menu(description, a_name)?,
            "local-disk" => Profile::LocalDisk { description },
            "chain" => Profile::Chain {
                url: required("url", &self.url)?,
                description,
            },
            "bootfile" => {
                let mut files = std::collections::BTreeMap::new();
                for line in lines(&self.files) {
                    let (arch, file) = line.split_once('=').ok_or_else(|| {
                        FieldError::new(
                            "files",
                            format!("boot files: '{line}' should look like 'bios = pxelinux.0'"),
                        )
                    })?;
                    files.insert(arch.trim().to_string(), file.trim().to_string());
                }
                Profile::Bootfile {
                    image: a_name("image", &required("image", &self.image)?)?,
                    files,
                    description,
                }
            }
            other => {
                let known: Vec<&str> = KINDS.iter().map(|(kind, _)| *kind).collect();
                return Err(FieldError::new(
                    "kind",
                    format!(
                        "kind: '{other}' is not a kind of profile (one of {})",
                        known.join(", ")
                    ),
                ));
            }
        };
        Ok((name, profile))
    }

    fn menu(
        &self,
        description: String,
        a_name: impl Fn(&'static str, &str) -> Result<Name, FieldError>,
    ) -> Result<Profile, FieldError> {
        let entries = lines(&self.entries)
            .iter()
            .map(|entry| a_name("entries", entry))
            .collect::<Result<Vec<Name>, FieldError>>()?;
        let default = match self.default.trim() {
            "" => None,
            text => Some(a_name("default", text)?),
        };
        let timeout = match self.timeout.trim() {
            "" => None,
            text => Some(text.parse::<u32>().map_err(|_| {
                FieldError::new(
                    "timeout",
                    format!("timeout: '{text}' is not a number of seconds"),
                )
            })?),
        };
        Ok(Profile::Menu {
            title: self.title.trim().to_string(),
            entries,
            default,
            timeout,
            description,
        })
    }
}

/// A refusal of the profile form, and the field it is about when it is about one.
#[derive(Debug)]
pub(super) struct FieldError {
    field: Option<&'static str>,
    message: String,
}

impl FieldError {
    fn new(field: &'static str, message: String) -> FieldError {
        FieldError {
            field: Some(field),
            message,
        }
    }
}

impl From<bootherd_store::StoreError> for FieldError {
    fn from(e: bootherd_store::StoreError) -> FieldError {
        match e {
            bootherd_store::StoreError::Rejected(rejection) => FieldError {
                field: rejection.field,
                message: rejection.message,
            },
            other => FieldError {
                field: None,
                message: other.to_string(),
            },
        }
    }
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
            return Err(FieldError::new(
                "name",
                format!(
                    "a profile named '{name}' already exists: pick another name or edit that one"
                ),
            ));
        }
        api::save_profile(&state, name.clone(), profile)?;
        Ok(name)
    });
    match result {
        Ok(name) => {
            info!(profile = %name, by = %user.who(), "profile saved");
            Ok(with_flash(
                &format!("/profiles/{name}"),
                &format!("Profile {name} saved."),
            ))
        }
        Err(FieldError { field, message }) => {
            let mut page = profile_page(&state, &user, &headers, form);
            match field {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<Profile> {
        let name = |text: &str| -> Name { text.parse().unwrap() };
        vec![
            Profile::Linux {
                image: name("debian"),
                kernel: "linux".into(),
                initrd: vec!["initrd.gz".into(), "firmware.cpio".into()],
                cmdline: "console=ttyS0".into(),
                description: "installer".into(),
            },
            Profile::Menu {
                title: "Pick".into(),
                entries: vec![name("a"), name("b")],
                default: Some(name("b")),
                timeout: Some(5),
                description: String::new(),
            },
            Profile::LocalDisk {
                description: String::new(),
            },
            Profile::Chain {
                url: "https://boot.netboot.xyz".into(),
                description: String::new(),
            },
            Profile::Bootfile {
                image: name("legacy"),
                files: [("bios".to_string(), "pxelinux.0".to_string())].into(),
                description: String::new(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_the_form() {
        let name: Name = "p".parse().unwrap();
        for profile in profiles() {
            let form = ProfileForm::from_profile(&name, &profile);
            let (back_name, back) = form.to_profile().unwrap();
            assert_eq!((back_name, back), (name.clone(), profile));
        }
    }

    #[test]
    fn a_refused_form_names_its_field() {
        let form = |kind: &str, edit: fn(&mut ProfileForm)| {
            let mut form = ProfileForm {
                name: "p".into(),
                kind: kind.into(),
                ..ProfileForm::default()
            };
            edit(&mut form);
            form.to_profile().unwrap_err()
        };
        let err = form("linux", |f| f.image = "debian".into());
        assert_eq!(err.field, Some("kernel"));
        assert_eq!(err.message, "kernel is required for a linux profile");
        assert_eq!(
            form("linux", |f| f.name = "Bad Name".into()).field,
            Some("name")
        );
        assert_eq!(
            form("menu", |f| f.timeout = "soon".into()).field,
            Some("timeout")
        );
        assert_eq!(
            form("menu", |f| f.entries = "ok\nNot Ok".into()).field,
            Some("entries")
        );
        assert_eq!(
            form("bootfile", |f| {
                f.image = "x".into();
                f.files = "bios pxelinux.0".into();
            })
            .field,
            Some("files")
        );
        assert_eq!(form("floppy", |_| {}).field, Some("kind"));
        // The store's refusals carry their field too.
        let rejected = FieldError::from(bootherd_store::StoreError::rejected_field(
            "entries",
            "menu entry 'x' is not a profile",
        ));
        assert_eq!(rejected.field, Some("entries"));
    }
}
