//! The REST API under `/api/v1`: JSON in and out, the same validation as the UI (both go
//! through `Store::update`), errors as `{"error": "..."}` with a 4xx status that says whose
//! fault it is. Described by `/api/v1/openapi.json`.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bootherd_store::{Mac, Machine, Name, Profile, StoreError};
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::{info, warn};

use crate::access::{self, User};
use crate::intake::{self, Limited};
use crate::{AppState, views};

/// An API failure: the status says whose fault, the message what to do.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// The input field the refusal is about, when the store says.
    field: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            // The change is well-formed but the store refuses it (dangling reference, unready
            // profile, image in use): 422, with the store's explanation.
            StoreError::Rejected(rejection) => ApiError {
                field: rejection.field,
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, rejection.message)
            },
            StoreError::Invalid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> ApiError {
        match e {
            crate::auth::AuthError::Token(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"bootherd\""),
            );
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// An authenticated API caller; cookie sessions must send `X-CSRF-Token` on changes.
#[derive(Debug)]
pub(crate) struct ApiUser(User);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<ApiUser> {
        let Some(user) = access::identify(parts, state) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: send 'Authorization: Bearer <token>' (create one with `bootherd token add NAME` or on the Tokens page) or log in to the web UI",
            ));
        };
        if !access::header_allowed(&user, parts) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header: a change made with a session cookie must send the token shown in the page's <meta name=\"csrf-token\">",
            ));
        }
        Ok(ApiUser(user))
    }
}

/// Parses a JSON body ourselves, to say exactly where it is wrong.
fn parse_json<T: DeserializeOwned>(body: &Bytes, what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid {what} at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

fn parse_mac(mac: &str) -> ApiResult<Mac> {
    mac.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "'{mac}' is not a MAC address ({e}); write it like 52:54:00:12:34:56"
        ))
    })
}

fn parse_name(name: &str, what: &str) -> ApiResult<Name> {
    name.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid {what} name '{name}': {e}")))
}

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

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn status(State(state): State<AppState>, _user: ApiUser) -> Json<views::StatusView> {
    Json(views::status(&state.boot, &state.services))
}

async fn list_machines(
    State(state): State<AppState>,
    _user: ApiUser,
) -> Json<Vec<views::MachineView>> {
    Json(views::machines(&state.boot))
}

async fn get_machine(
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
struct MachineBody {
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

async fn put_machine(
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

async fn delete_machine(
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

async fn list_profiles(
    State(state): State<AppState>,
    _user: ApiUser,
) -> Json<Vec<views::ProfileView>> {
    Json(views::profiles(&state.boot))
}

fn find_profile(state: &AppState, name: &str) -> ApiResult<views::ProfileView> {
    views::profiles(&state.boot)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no profile named '{name}'")))
}

async fn get_profile(
    State(state): State<AppState>,
    _user: ApiUser,
    Path(name): Path<String>,
) -> ApiResult<Json<views::ProfileView>> {
    find_profile(&state, &name).map(Json)
}

pub(crate) fn save_profile(
    state: &AppState,
    name: Name,
    profile: Profile,
) -> Result<(), StoreError> {
    state.boot.store().update(|s| {
        s.profiles.insert(name, profile);
        Ok(())
    })
}

pub(crate) fn remove_profile(state: &AppState, name: &Name) -> Result<bool, StoreError> {
    state
        .boot
        .store()
        .update(|s| Ok(s.profiles.remove(name).is_some()))
}

async fn put_profile(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<views::ProfileView>> {
    let name = parse_name(&name, "profile")?;
    let profile: Profile = parse_json(&body, "profile")?;
    save_profile(&state, name.clone(), profile)?;
    info!(profile = %name, by = %user.who(), "profile saved");
    find_profile(&state, name.as_str()).map(Json)
}

async fn delete_profile(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let name = parse_name(&name, "profile")?;
    if !remove_profile(&state, &name)? {
        return Err(ApiError::not_found(format!("no profile named '{name}'")));
    }
    info!(profile = %name, by = %user.who(), "profile removed");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_images(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<Vec<views::ImageView>>> {
    Ok(Json(views::images(&state.boot)?))
}

fn find_image(state: &AppState, name: &str) -> ApiResult<views::ImageView> {
    views::images(&state.boot)?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no image named '{name}'")))
}

async fn get_image(
    State(state): State<AppState>,
    _user: ApiUser,
    Path(name): Path<String>,
) -> ApiResult<Json<views::ImageView>> {
    find_image(&state, &name).map(Json)
}

async fn delete_image(
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

async fn verify_image(
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
struct ImportBody {
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

async fn import_image(
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
async fn upload_file(
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

async fn list_tokens(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<serde_json::Value>> {
    let tokens = state.auth.tokens.list()?;
    Ok(Json(json!(
        tokens
            .iter()
            .map(|t| json!({"name": t.name, "created": t.created}))
            .collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let body: TokenBody = parse_json(&body, "token request")?;
    let token = state.auth.tokens.create(&body.name)?;
    info!(token = %body.name, by = %user.who(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": body.name, "token": token, "note": "shown only now: store it safely"})),
    ))
}

async fn delete_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.auth.tokens.remove(&name)? {
        return Err(ApiError::not_found(format!("no token named '{name}'")));
    }
    info!(token = %name, by = %user.who(), "API token removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Server-sent events: every boot step as it happens (`event: step`), and a `lagged` event
/// when this client fell too far behind and missed some.
async fn events(
    State(state): State<AppState>,
    _user: ApiUser,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let credential = access::Credential::of(&headers);
    Sse::new(live_steps(&state, credential))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// How often a live stream checks that its credential still holds.
const RECHECK: Duration = Duration::from_secs(1);

/// Every boot step as it happens, while `credential` stays valid (a revoked token or a logged
/// out session ends the stream within [`RECHECK`]) and until shutdown.
pub(crate) fn live_steps(
    state: &AppState,
    credential: Option<access::Credential>,
) -> impl Stream<Item = Result<Event, Infallible>> + use<> {
    let receiver = state.boot.timeline().subscribe();
    let shutdown = state.shutdown.clone();
    let state = state.clone();
    futures_util::stream::unfold(receiver, move |mut receiver| {
        let (state, credential) = (state.clone(), credential.clone());
        async move {
            let event = loop {
                if credential.as_ref().is_none_or(|c| c.user(&state).is_none()) {
                    return None;
                }
                match tokio::time::timeout(RECHECK, receiver.recv()).await {
                    Err(_) => continue,
                    Ok(Ok(step)) => {
                        break Event::default()
                            .event("step")
                            .json_data(views::machine_event(&step))
                            .unwrap_or_else(|_| Event::default().event("step"));
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(missed))) => {
                        break Event::default().event("lagged").data(missed.to_string());
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            };
            Some((Ok(event), receiver))
        }
    })
    .take_until(async move { shutdown.cancelled().await })
}
