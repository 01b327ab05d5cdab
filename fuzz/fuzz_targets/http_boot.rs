//! The HTTP endpoints machines fetch, through the real router over a real store: any method,
//! path and headers. Nothing may panic, a boot-once profile is only ever used up by the
//! machine's own address (never by these requests, which come from elsewhere), and no file
//! outside the served directories is ever returned.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use bootherd_web::{AppState, Auth, HttpLimits, Services, TokenFile, router};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let boot = bootherd_fuzz::boot("http_boot").clone();
        let tokens = TokenFile::new("target/fuzz-fixture/http_boot/data/api-tokens.yaml");
        let auth = Auth::new(None, tokens).expect("auth");
        let router = router(AppState {
            boot,
            auth: Arc::new(auth),
            services: Arc::new(Services::default()),
            limits: Arc::new(HttpLimits::default()),
            shutdown: CancellationToken::new(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture { runtime, router }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let Some((&method, rest)) = data.split_first() else {
        return;
    };
    let method = match method {
        b'H' => Method::HEAD,
        b'P' => Method::POST,
        _ => Method::GET,
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\0');
    let path = lines.next().unwrap_or("/");
    let mut request = Request::builder().method(method).uri(path);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = request
        .extension(ConnectInfo(SocketAddr::from(([10, 0, 0, 66], 40000))))
        .body(Body::empty())
    else {
        return;
    };
    let body = fixture.runtime.block_on(async {
        let response = fixture
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        response.into_body().collect().await.map(|b| b.to_bytes())
    });
    let secret = bootherd_fuzz::SECRET;
    let asked_for_it = rest.windows(secret.len()).any(|w| w == secret);
    if let (Ok(body), false) = (body, asked_for_it) {
        // Error messages echo what was asked; the secret can only come from the file itself.
        assert!(
            !body.windows(secret.len()).any(|w| w == secret),
            "served a file from outside the served directories"
        );
    }
    let state = bootherd_fuzz::boot("http_boot").store().state();
    let machine = &state.machines[&bootherd_store::Mac(bootherd_fuzz::MAC)];
    assert!(
        machine.once.is_some(),
        "a request from another host used up the boot-once profile"
    );
});
