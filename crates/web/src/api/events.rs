//! `/api/v1/events`: every boot step as it happens (server-sent events).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use super::extract::*;
use crate::access::{self};
use crate::{AppState, views};

/// Server-sent events: every boot step as it happens (`event: step`), and a `lagged` event
/// when this client fell too far behind and missed some.
pub(super) async fn events(
    State(state): State<AppState>,
    _user: ApiUser,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let credential = access::Credential::of(&headers);
    Sse::new(live_steps(&state, credential))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// How often a live stream checks that its credential still holds.
pub(super) const RECHECK: Duration = Duration::from_secs(1);

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
