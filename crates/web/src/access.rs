//! Who is asking: an API token (`Authorization: Bearer bh_...`) or a browser session cookie.
//! Requests that change something with a cookie must also carry the session's CSRF token, in
//! the `X-CSRF-Token` header (scripts) or the `csrf` form field (forms), so another site cannot
//! make a logged-in browser change things.

use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::AppState;
use crate::auth::{SESSION_COOKIE, SessionInfo, csrf_matches};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) enum User {
    Session {
        cookie: String,
        session: SessionInfo,
    },
    Token {
        name: String,
    },
}

impl User {
    pub(crate) fn csrf(&self) -> &str {
        match self {
            User::Session { session, .. } => &session.csrf,
            User::Token { .. } => "",
        }
    }

    /// Whether a form's CSRF field is right (tokens need none: browsers do not send them
    /// on their own).
    pub(crate) fn form_allowed(&self, sent: &str) -> bool {
        match self {
            User::Session { session, .. } => csrf_matches(session, sent),
            User::Token { .. } => true,
        }
    }

    pub(crate) fn who(&self) -> String {
        match self {
            User::Session { .. } => "admin".into(),
            User::Token { name } => format!("token {name}"),
        }
    }
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What a request authenticates with, kept by long-lived responses (event streams) to check
/// again later: a revoked token or a closed session ends them.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    Token(String),
    Session(String),
}

impl Credential {
    pub(crate) fn of(headers: &HeaderMap) -> Option<Credential> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let token = auth.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            return Some(Credential::Token(token.to_string()));
        }
        cookie(headers, SESSION_COOKIE).map(|c| Credential::Session(c.to_string()))
    }

    pub(crate) fn user(&self, state: &AppState) -> Option<User> {
        match self {
            Credential::Token(token) => state
                .auth
                .tokens
                .check(token)
                .map(|name| User::Token { name }),
            Credential::Session(cookie) => {
                state.auth.session(cookie).map(|session| User::Session {
                    cookie: cookie.clone(),
                    session,
                })
            }
        }
    }
}

pub(crate) fn identify(parts: &Parts, state: &AppState) -> Option<User> {
    Credential::of(&parts.headers)?.user(state)
}

/// For script requests: a cookie-authenticated change needs the CSRF header.
pub(crate) fn header_allowed(user: &User, parts: &Parts) -> bool {
    if matches!(parts.method, Method::GET | Method::HEAD) {
        return true;
    }
    match user {
        User::Token { .. } => true,
        User::Session { session, .. } => parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|sent| csrf_matches(session, sent)),
    }
}

/// The client's address, when the server runs with connection info (our listener adds it;
/// router tests without a socket have none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) Option<std::net::IpAddr>);

impl ClientAddr {
    pub(crate) fn of(extensions: &axum::http::Extensions) -> ClientAddr {
        ClientAddr(
            extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        )
    }

    /// The address, when it is IPv4 (machines boot over IPv4).
    pub(crate) fn v4(self) -> Option<std::net::Ipv4Addr> {
        match self.0 {
            Some(std::net::IpAddr::V4(ip)) => Some(ip),
            _ => None,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<ClientAddr, Self::Rejection> {
        Ok(ClientAddr::of(&parts.extensions))
    }
}
