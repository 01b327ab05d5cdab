//! The management UI: server-rendered askama pages (escaped by default), plain HTML forms with
//! a CSRF field, and a little script (static/app.js) for live updates and upload progress.
//! Every change goes through the same store functions as the API.

use askama::Template;
use axum::Router;
use axum::extract::{Form, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bootherd_store::{Mac, Name, Profile, StoreError};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::access::{self, User};
use crate::auth::{LoginError, SESSION_COOKIE, SESSION_IDLE};
use crate::{AppState, api, views};

const FLASH_COOKIE: &str = "bootherd_flash";

/// What every page's frame shows.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    title: String,
    active: &'static str,
    csrf: String,
    logged_in: bool,
    notice: Option<String>,
    error: Option<String>,
    version: &'static str,
}

fn layout(title: &str, active: &'static str, user: &User, headers: &HeaderMap) -> Layout {
    Layout {
        title: title.to_string(),
        active,
        csrf: user.csrf().to_string(),
        logged_in: true,
        notice: flash(headers),
        error: None,
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// A failed page request, shown as a page.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        let status = match e {
            StoreError::Rejected(_) | StoreError::Invalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError::new(status, e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
    back: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            layout: Layout {
                title: "Error".into(),
                logged_in: true,
                version: env!("CARGO_PKG_VERSION"),
                ..Layout::default()
            },
            heading: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            message: self.message,
            back: "/".into(),
        };
        (self.status, render(&page)).into_response()
    }
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            warn!(error = %e, "page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("page could not be rendered: {e}"),
            )
                .into_response()
        }
    }
}

fn render_fragment(template: &impl Template) -> String {
    template.render().unwrap_or_else(|e| {
        warn!(error = %e, "page fragment could not be rendered");
        format!("<p class=\"error\">could not be rendered: {e}</p>")
    })
}

/// A logged-in browser (or a token holder); anyone else is sent to the login page.
#[derive(Debug)]
pub(crate) struct PageUser(User);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<PageUser, Response> {
        match access::identify(parts, state) {
            Some(user) => Ok(PageUser(user)),
            None => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let next = if parts.method == axum::http::Method::GET {
                    next
                } else {
                    "/"
                };
                Err(Redirect::to(&format!("/login?next={}", encode_query(next))).into_response())
            }
        }
    }
}

/// A form posted by a logged-in user, its CSRF field already checked against the session: a
/// handler taking this cannot forget the check.
#[derive(Debug)]
pub(crate) struct PageForm<T>(User, T);

/// Forms that carry the session's CSRF token.
pub(crate) trait CsrfField {
    fn csrf(&self) -> &str;
}

macro_rules! csrf_field {
    ($($form:ty),*) => {
        $(impl CsrfField for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}

csrf_field!(CsrfForm, MachineForm, ProfileForm, ImportForm, TokenForm);

impl<T> FromRequest<AppState> for PageForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let PageUser(user) = PageUser::from_request_parts(&mut parts, state).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !user.form_allowed(form.csrf()) {
            return Err(csrf_refused().into_response());
        }
        Ok(PageForm(user, form))
    }
}

fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only local paths: `next` must not send a freshly logged-in browser to another site. Browsers
/// drop tabs and newlines inside a URL and read `\` as `/`, so `/<TAB>/evil.example` is
/// `//evil.example`: only visible ASCII is accepted, and the second character may not make it
/// a network path.
fn safe_next(next: &str) -> &str {
    let visible = next.bytes().all(|b| b.is_ascii_graphic());
    if visible && next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

/// A one-time message for the page after a redirect, hex-encoded (cookie values cannot hold
/// spaces or semicolons).
fn with_flash(to: &str, message: &str) -> Response {
    let hex: String = message.bytes().map(|b| format!("{b:02x}")).collect();
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={hex}; Path=/; Max-Age=30; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn flash(headers: &HeaderMap) -> Option<String> {
    let hex = access::cookie(headers, FLASH_COOKIE)?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok().filter(|m| !m.is_empty())
}

/// Pages that read the flash clear it, so it shows once.
fn clear_flash(mut response: Response, headers: &HeaderMap) -> Response {
    if access::cookie(headers, FLASH_COOKIE).is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "bootherd_flash=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
            ),
        );
    }
    response
}

fn csrf_refused() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "The form's security token did not match your session (the page was probably open from before a restart or a new login). Go back, reload the page and try again.",
    )
}

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
struct LiveQuery {
    #[serde(default)]
    live: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    has_password: bool,
    next: String,
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn login_page(State(state): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    render(&LoginPage {
        layout: Layout {
            title: "Log in".into(),
            version: env!("CARGO_PKG_VERSION"),
            ..Layout::default()
        },
        has_password: state.auth.has_password(),
        next: safe_next(q.next.as_deref().unwrap_or("/")).to_string(),
    })
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<AppState>,
    crate::access::ClientAddr(client): crate::access::ClientAddr,
    Form(form): Form<LoginForm>,
) -> Response {
    // Checking a password is deliberately slow (argon2): off the async workers, so boots
    // going on meanwhile are not held up. Without connection info (tests without a socket)
    // every attempt counts against one unknown source.
    let source = client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let auth = state.auth.clone();
    let password = form.password.clone();
    let checked = tokio::task::spawn_blocking(move || auth.login(&password, source))
        .await
        .unwrap_or(Err(LoginError::WrongPassword));
    match checked {
        Ok((cookie, _)) => {
            info!("admin logged in");
            let mut response = Redirect::to(safe_next(&form.next)).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                SESSION_IDLE.as_secs()
            )) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Err(e) => {
            let (status, message) = match e {
                LoginError::WrongPassword => (StatusCode::UNAUTHORIZED, "Wrong password."),
                LoginError::TooManyAttempts => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many wrong passwords from this address in the last minute; wait a minute and try again.",
                ),
                LoginError::Busy => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many logins are being checked right now; try again in a moment.",
                ),
                LoginError::NoPassword => (
                    StatusCode::UNAUTHORIZED,
                    "No admin password is set; see below how to set one.",
                ),
            };
            warn!(reason = message, client = %source, "login refused");
            let page = LoginPage {
                layout: Layout {
                    title: "Log in".into(),
                    error: Some(message.into()),
                    version: env!("CARGO_PKG_VERSION"),
                    ..Layout::default()
                },
                has_password: state.auth.has_password(),
                next: safe_next(&form.next).to_string(),
            };
            (status, render(&page)).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    if let User::Session { cookie, .. } = &user {
        state.auth.logout(cookie);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("bootherd_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    Ok(response)
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    live: String,
}

#[derive(Template)]
#[template(path = "dashboard_live.html")]
struct DashboardLive {
    status: views::StatusView,
}

async fn dashboard(
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

#[derive(Template)]
#[template(path = "machines.html")]
struct MachinesPage {
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
struct MachinesLive {
    machines: Vec<views::MachineView>,
    profiles: Vec<views::ProfileView>,
    csrf: String,
}

fn machines_page(state: &AppState, user: &User, headers: &HeaderMap) -> MachinesPage {
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

async fn machines(
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
struct MachineForm {
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

async fn add_machine(
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
struct MachinePage {
    layout: Layout,
    m: views::MachineView,
    profiles: Vec<views::ProfileView>,
    defaults: views::DefaultsView,
    live: String,
}

#[derive(Template)]
#[template(path = "machine_live.html")]
struct MachineLive {
    diagnosis: bootherd_boot::timeline::Diagnosis,
    verdict_text: &'static str,
    verdict_class: &'static str,
    timeline: Vec<views::EventView>,
}

fn machine_live(detail: &views::MachineDetail) -> String {
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

fn parse_mac(mac: &str) -> Result<Mac, PageError> {
    mac.parse().map_err(|e| {
        PageError::new(
            StatusCode::NOT_FOUND,
            format!("'{mac}' is not a MAC address ({e})"),
        )
    })
}

fn parse_name(name: &str) -> Result<Name, PageError> {
    name.parse()
        .map_err(|e: String| PageError::new(StatusCode::NOT_FOUND, e))
}

fn machine_page(state: &AppState, user: &User, headers: &HeaderMap, mac: &Mac) -> MachinePage {
    let detail = views::machine_detail(&state.boot, mac);
    MachinePage {
        layout: layout(&format!("Machine {mac}"), "machines", user, headers),
        live: machine_live(&detail),
        m: detail.machine,
        profiles: views::profiles(&state.boot),
        defaults: views::defaults(&state.boot.store().state()),
    }
}

async fn machine(
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
async fn machine_script(
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

async fn save_machine(
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

async fn delete_machine(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let mac = parse_mac(&mac)?;
    state.boot.store().update(|s| Ok(s.machines.remove(&mac)))?;
    info!(%mac, by = %user.who(), "machine removed");
    Ok(with_flash("/machines", &format!("Removed {mac}.")))
}

#[derive(Template)]
#[template(path = "profiles.html")]
struct ProfilesPage {
    layout: Layout,
    profiles: Vec<views::ProfileView>,
}

async fn profiles(
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
struct ProfileForm {
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

const KINDS: [(&str, &str); 5] = [
    ("linux", "Linux: kernel + initrd from an image"),
    ("menu", "Menu of other profiles"),
    ("local-disk", "Boot the local disk"),
    ("chain", "Chain to another iPXE script (netboot.xyz)"),
    (
        "bootfile",
        "Raw boot file per architecture (pxelinux, GRUB)",
    ),
];

fn lines(text: &str) -> Vec<Value> {
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
fn field_of(message: &str) -> Option<&'static str> {
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
struct ProfilePage {
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

fn profile_page(
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
struct KindQuery {
    #[serde(default)]
    kind: Option<String>,
}

async fn new_profile(
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

async fn edit_profile(
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

async fn save_profile(
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

async fn delete_profile(
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

#[derive(Template)]
#[template(path = "images.html")]
struct ImagesPage {
    layout: Layout,
    images: Vec<views::ImageView>,
}

async fn images(
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
struct ImportForm {
    #[serde(default)]
    csrf: String,
    image: String,
    path: String,
    #[serde(default, rename = "as")]
    as_name: String,
}

async fn import_image(
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

async fn verify_image(
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

async fn delete_image(
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

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<(String, String)>,
    created: Option<(String, String)>,
}

fn tokens_page(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
) -> Result<TokensPage, PageError> {
    let tokens = state
        .auth
        .tokens
        .list()
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(TokensPage {
        layout: layout("API tokens", "tokens", user, headers),
        tokens: tokens
            .into_iter()
            .map(|t| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.created);
                (t.name, views::time(at))
            })
            .collect(),
        created: None,
    })
}

async fn tokens(
    State(state): State<AppState>,
    PageUser(user): PageUser,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    Ok(clear_flash(
        render(&tokens_page(&state, &user, &headers)?),
        &headers,
    ))
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(user, form): PageForm<TokenForm>,
) -> Result<Response, PageError> {
    let name = form.name.trim();
    match state.auth.tokens.create(name) {
        Ok(token) => {
            info!(token = %name, by = %user.who(), "API token created");
            // Shown on this response only, never stored in a cookie or the URL.
            let mut page = tokens_page(&state, &user, &headers)?;
            page.created = Some((name.to_string(), token));
            let mut response = render(&page);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(e) => {
            let mut page = tokens_page(&state, &user, &headers)?;
            page.layout.error = Some(e.to_string());
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
    }
}

async fn delete_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
    PageForm(user, _): PageForm<CsrfForm>,
) -> Result<Response, PageError> {
    let removed = state
        .auth
        .tokens
        .remove(&name)
        .map_err(|e| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let message = if removed {
        info!(token = %name, by = %user.who(), "API token removed");
        format!("Token {name} revoked.")
    } else {
        format!("There is no token named {name}.")
    };
    Ok(with_flash("/tokens", &message))
}
