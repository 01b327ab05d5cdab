//! What the router tests share: a data directory with a store, a bootloader directory and an
//! admin password, the router over them, and sending one request through it without a socket.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bootherd_boot::Boot;
use bootherd_files::DirSource;
use bootherd_store::Store;
use bootherd_web::{AppState, Auth, HttpLimits, Services, TokenFile, hash_password, router};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub(crate) const PASSWORD: &str = "correct horse battery";

/// A data directory (`data/`) and a bootloader directory (`loaders/`) in a fresh temporary
/// directory, and the `Boot` over them.
pub(crate) struct Site {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) boot: Arc<Boot>,
    pub(crate) tokens: TokenFile,
}

impl Site {
    /// `prepare` fills the store before `Boot` reads it, and may add bootloaders.
    pub(crate) fn new(prepare: impl FnOnce(&Store, &std::path::Path)) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("data")).unwrap());
        let loaders = dir.path().join("loaders");
        std::fs::create_dir(&loaders).unwrap();
        prepare(&store, &loaders);
        let boot =
            Arc::new(Boot::new(store, Arc::new(DirSource::new(&loaders).unwrap()), 8080).unwrap());
        let tokens = TokenFile::new(dir.path().join("data/api-tokens.yaml"));
        Site { dir, boot, tokens }
    }

    /// The router, with `password` as the admin password (none: no sign-in possible) and
    /// limits small enough for tests to reach.
    pub(crate) fn router(
        &self,
        password: Option<&str>,
        limits: HttpLimits,
    ) -> (Router, CancellationToken) {
        let auth = Auth::new(
            password.map(|p| hash_password(p).unwrap()),
            TokenFile::new(self.dir.path().join("data/api-tokens.yaml")),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let router = router(AppState {
            boot: self.boot.clone(),
            auth: Arc::new(auth),
            services: Arc::new(Services::default()),
            limits: Arc::new(limits),
            shutdown: shutdown.clone(),
        });
        (router, shutdown)
    }
}

/// Limits the upload tests can reach quickly.
pub(crate) fn test_limits() -> HttpLimits {
    HttpLimits {
        max_image_file_bytes: 1 << 20,
        upload_stall: std::time::Duration::from_millis(300),
        ..Default::default()
    }
}

/// Sends one request through the router; returns what came back, body whole.
pub(crate) async fn send(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}
