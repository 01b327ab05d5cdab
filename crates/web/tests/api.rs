//! The REST API and the pages' forms, driven through the router without a socket: what a
//! caller may do, what is refused (with a clear 4xx and the state left as it was), and that
//! the API and what machines boot agree.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bootherd_boot::Boot;
use bootherd_boot::timeline::Step;
use bootherd_store::Mac;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{PASSWORD, Site, send, test_limits};

const MAC: &str = "52:54:00:aa:bb:01";
const MACHINE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 50);

struct App {
    dir: tempfile::TempDir,
    router: Router,
    boot: Arc<Boot>,
    token: String,
}

fn app() -> App {
    let site = Site::new(|_, _| {});
    let token = site.tokens.create("tests").unwrap();
    let (router, _) = site.router(Some(PASSWORD), test_limits());
    App {
        dir: site.dir,
        router,
        boot: site.boot,
        token,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl App {
    async fn send(&self, request: Request<Body>) -> Reply {
        let (status, headers, body) = send(&self.router, request).await;
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn api(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "10.0.0.2:8080")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(body.into())
            .unwrap();
        self.send(request).await
    }

    async fn put_json(&self, uri: &str, value: Value) -> Reply {
        self.api(Method::PUT, uri, value.to_string()).await
    }

    fn state_file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/state.yaml")).unwrap_or_default()
    }

    /// The script as the machine fetches it, after its DHCP exchange told bootherd its address:
    /// the only fetch that may use up a boot-once profile.
    async fn machine_script(&self, mac: &str) -> String {
        let parsed: Mac = mac.parse().unwrap();
        bootherd_pxe::EventSink::record(
            &*self.boot,
            bootherd_pxe::PxeEvent::AddressAccepted {
                mac: bootherd_pxe::MacAddr(parsed.0),
                address: MACHINE_IP,
                server: std::net::Ipv4Addr::new(10, 0, 0, 1),
            },
        );
        let request = Request::get(format!("/boot/{mac}.ipxe"))
            .header(header::HOST, "10.0.0.2:8080")
            .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                MACHINE_IP, 40000,
            ))))
            .body(Body::empty())
            .unwrap();
        self.send(request).await.text()
    }

    /// The script, fetched without connection information (from nobody in particular).
    async fn script(&self, mac: &str) -> String {
        let request = Request::get(format!("/boot/{mac}.ipxe"))
            .header(header::HOST, "10.0.0.2:8080")
            .body(Body::empty())
            .unwrap();
        self.send(request).await.text()
    }

    /// Uploads a kernel and makes a ready Linux profile `inst` booting it.
    async fn with_profile(&self) {
        let reply = self
            .api(
                Method::PUT,
                "/api/v1/images/debian/files/vmlinuz",
                vec![7u8; 5000],
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        let reply = self
            .put_json(
                "/api/v1/profiles/inst",
                json!({"kind": "linux", "image": "debian", "kernel": "vmlinuz", "cmdline": "marker=inst"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }

    /// Logs in like a browser; returns the cookie header value and the CSRF token.
    async fn login(&self) -> (String, String) {
        let request = Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(
                "password=correct+horse+battery&next=%2Fmachines",
            ))
            .unwrap();
        let reply = self.send(request).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
        assert_eq!(reply.headers[header::LOCATION], "/machines");
        let set_cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let page = self
            .send(
                Request::get("/machines")
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let html = page.text();
        let csrf = html
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        assert_eq!(csrf.len(), 64);
        (cookie, csrf)
    }
}

#[tokio::test]
async fn everything_but_boot_material_needs_authentication() {
    let app = app();
    for (method, uri) in [
        (Method::GET, "/api/v1/machines"),
        (Method::PUT, "/api/v1/machines/52:54:00:aa:bb:01"),
        (Method::GET, "/api/v1/status"),
        (Method::DELETE, "/api/v1/images/x"),
        (Method::GET, "/api/v1/events"),
    ] {
        let reply = app
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(uri)
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(
            reply.error().contains("Authorization: Bearer"),
            "{}",
            reply.text()
        );
    }
    let wrong = app
        .send(
            Request::get("/api/v1/machines")
                .header(header::AUTHORIZATION, "Bearer bh_0000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Pages send people to the login page, remembering where they were going.
    let page = app
        .send(Request::get("/profiles").body(Body::empty()).unwrap())
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/login?next=/profiles");
    // Machines and API readers need no login for these.
    for uri in [
        "/boot/52:54:00:aa:bb:01.ipxe",
        "/healthz",
        "/api/v1/openapi.json",
        "/login",
        "/static/app.js",
    ] {
        let reply = app
            .send(
                Request::get(uri)
                    .header(header::HOST, "h")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn machines_are_validated_and_bad_input_changes_nothing() {
    let app = app();
    app.with_profile().await;
    let uri = format!("/api/v1/machines/{MAC}");
    let reply = app
        .put_json(&uri, json!({"name": "node1", "profile": "inst"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["boots"], "inst");
    assert_eq!(reply.json()["diagnosis"]["verdict"], "never-seen");
    assert!(app.script(MAC).await.contains("marker=inst"));
    let good = app.state_file();
    assert!(good.contains("node1"));

    let refused = [
        (
            json!({"profile": "nosuch"}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "nosuch",
        ),
        (
            json!({"profile": "Bad Name"}).to_string(),
            StatusCode::BAD_REQUEST,
            "profile",
        ),
        (
            json!({"colour": "red"}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "{\"name\": \"x\",\n \"profile\": }".to_string(),
            StatusCode::BAD_REQUEST,
            "line 2 column",
        ),
    ];
    for (body, status, says) in refused {
        let reply = app.api(Method::PUT, &uri, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.error().contains(says), "{body}: {}", reply.error());
        assert_eq!(app.state_file(), good, "{body} changed the state");
    }
    let reply = app
        .put_json("/api/v1/machines/52:54:00:zz:00:01", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error().contains("52:54:00:12:34:56"),
        "{}",
        reply.error()
    );

    // A profile that cannot boot (its kernel is missing) cannot be assigned.
    app.put_json(
        "/api/v1/profiles/broken",
        json!({"kind": "linux", "image": "debian", "kernel": "nosuch"}),
    )
    .await;
    let reply = app.put_json(&uri, json!({"profile": "broken"})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("nosuch"), "{}", reply.error());

    let list = app
        .api(Method::GET, "/api/v1/machines", Body::empty())
        .await
        .json();
    assert_eq!(list[0]["mac"], MAC);
    assert_eq!(list[0]["registered"], true);

    let reply = app.api(Method::DELETE, &uri, Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = app.api(Method::DELETE, &uri, Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error().contains("not registered"));
    let reply = app.api(Method::GET, &uri, Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn profiles_report_readiness_and_deletion_respects_users() {
    let app = app();
    app.with_profile().await;
    let reply = app
        .put_json(
            "/api/v1/profiles/menu",
            json!({"kind": "menu", "entries": ["inst"], "timeout": 5}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = app
        .put_json(
            "/api/v1/profiles/net",
            json!({"kind": "linux", "image": "nosuch", "kernel": "k"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["ready"], false);
    assert!(
        reply.json()["problems"][0]
            .as_str()
            .unwrap()
            .contains("nosuch")
    );

    let before = app.state_file();
    for (body, says) in [
        (json!({"kind": "floppy"}), "unknown variant `floppy`"),
        (
            json!({"kind": "linux", "image": "debian"}),
            "missing field `kernel`",
        ),
        (json!({"kind": "menu", "entries": ["menu"]}), "nested"),
    ] {
        let reply = app.put_json("/api/v1/profiles/x", body.clone()).await;
        assert!(reply.status.is_client_error(), "{body}");
        assert!(reply.error().contains(says), "{body}: {}", reply.error());
    }
    // In use by the menu: refused, with the reason.
    let reply = app
        .api(Method::DELETE, "/api/v1/profiles/inst", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("menu"), "{}", reply.error());
    assert_eq!(app.state_file(), before);

    let reply = app
        .api(Method::GET, "/api/v1/profiles/inst", Body::empty())
        .await
        .json();
    assert_eq!(reply["ready"], true);
    assert_eq!(reply["in_menus"], json!(["menu"]));
    assert_eq!(reply["profile"]["cmdline"], "marker=inst");
}

#[tokio::test]
async fn images_upload_whole_or_not_at_all() {
    let app = app();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let reply = app
        .api(
            Method::PUT,
            "/api/v1/images/debian/files/initrd.gz",
            data.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let image = reply.json();
    assert_eq!(image["files"][0]["size"], 300_000);
    let sha = image["files"][0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    // An upload that breaks off leaves no file and no image.
    let broken = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![1u8; 100_000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let reply = app
        .api(
            Method::PUT,
            "/api/v1/images/half/files/big.iso",
            Body::from_stream(broken),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply.error().contains("nothing was stored"),
        "{}",
        reply.error()
    );
    let list = app
        .api(Method::GET, "/api/v1/images", Body::empty())
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let leftovers: Vec<_> = walk(&app.dir.path().join("data/images"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("import"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    for (uri, status) in [
        (
            "/api/v1/images/debian/files/.hidden",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/images/debian/files/manifest.yaml",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/api/v1/images/Bad%20Name/files/x", StatusCode::BAD_REQUEST),
    ] {
        let reply = app.api(Method::PUT, uri, vec![0u8; 10]).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
    }

    // Import a file already on the server, from the import directory.
    std::fs::create_dir_all(app.dir.path().join("data/import")).unwrap();
    let source = app.dir.path().join("data/import/vmlinuz");
    std::fs::write(&source, b"kernel bytes").unwrap();
    let reply = app
        .api(
            Method::POST,
            "/api/v1/images/debian/import",
            json!({"path": source, "as": "linux"}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let reply = app
        .api(
            Method::POST,
            "/api/v1/images/debian/import",
            json!({"path": app.dir.path().join("data/import/nonexistent")}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("no such file"), "{}", reply.error());

    // Verification notices damage; a used image cannot be deleted.
    std::fs::write(
        app.dir.path().join("data/images/debian/linux"),
        b"kernel bytez",
    )
    .unwrap();
    let reply = app
        .api(Method::POST, "/api/v1/images/debian/verify", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.json()["problems"][0]
            .as_str()
            .unwrap()
            .contains("linux"),
        "{}",
        reply.text()
    );
    app.put_json(
        "/api/v1/profiles/p",
        json!({"kind": "linux", "image": "debian", "kernel": "initrd.gz"}),
    )
    .await;
    let reply = app
        .api(Method::DELETE, "/api/v1/images/debian", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("profile p"), "{}", reply.error());
    app.api(Method::DELETE, "/api/v1/profiles/p", Body::empty())
        .await;
    let reply = app
        .api(Method::DELETE, "/api/v1/images/debian", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = app
        .api(Method::GET, "/api/v1/images/debian", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

#[tokio::test]
async fn sessions_need_the_csrf_token_to_change_anything() {
    let app = app();
    app.with_profile().await;
    let (cookie, csrf) = app.login().await;
    let with_cookie = |method: Method, uri: &str, body: &str, csrf: Option<&str>| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, &cookie);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.body(Body::from(body.to_string())).unwrap()
    };
    let reply = app
        .send(with_cookie(Method::GET, "/api/v1/machines", "", None))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let uri = format!("/api/v1/machines/{MAC}");
    let body = json!({"profile": "inst"}).to_string();
    let reply = app.send(with_cookie(Method::PUT, &uri, &body, None)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.error().contains("X-CSRF-Token"));
    let reply = app
        .send(with_cookie(Method::PUT, &uri, &body, Some("0000")))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(!app.state_file().contains("aa:bb:01"));
    let reply = app
        .send(with_cookie(Method::PUT, &uri, &body, Some(&csrf)))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Forms carry the token as a field.
    let form = |fields: String| {
        Request::post("/machines")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(fields))
            .unwrap()
    };
    let reply = app
        .send(form(
            "mac=52:54:00:aa:bb:02&name=n2&profile=inst&csrf=bad".into(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text().contains("security token"));
    assert!(!app.state_file().contains("aa:bb:02"));
    let reply = app
        .send(form(format!(
            "mac=52:54:00:aa:bb:02&name=n2&profile=inst&csrf={csrf}"
        )))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert!(app.state_file().contains("52:54:00:aa:bb:02"));
    // A bad MAC is shown on the page, with what was typed kept.
    let reply = app
        .send(form(format!(
            "mac=nonsense&name=keepme&profile=&csrf={csrf}"
        )))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.text().contains("is not a MAC address") && reply.text().contains("keepme"));

    // Logging out ends the session.
    let reply = app
        .send(
            Request::post("/logout")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("csrf={csrf}")))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let reply = app
        .send(with_cookie(Method::GET, "/api/v1/machines", "", None))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_failures_are_clear_and_next_stays_local() {
    let app = app();
    let login = |body: &'static str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let reply = app.send(login("password=wrong&next=%2F")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.text().contains("Wrong password"));
    assert!(!reply.headers.contains_key(header::SET_COOKIE));
    let reply = app
        .send(login(
            "password=correct+horse+battery&next=https%3A%2F%2Fevil.example%2F",
        ))
        .await;
    assert_eq!(reply.headers[header::LOCATION], "/");
    let reply = app
        .send(login(
            "password=correct+horse+battery&next=%2F%2Fevil.example",
        ))
        .await;
    assert_eq!(reply.headers[header::LOCATION], "/");
    // Browsers drop tabs and newlines from a URL, so "/<TAB>/evil.example" is "//evil.example",
    // another site; so is a backslash after the slash.
    for sneaky in [
        "%2F%09%2Fevil.example",
        "%2F%0A%2Fevil.example",
        "%2F%0D%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F+%2Fevil.example",
    ] {
        let reply = app
            .send(login(Box::leak(
                format!("password=correct+horse+battery&next={sneaky}").into_boxed_str(),
            )))
            .await;
        assert_eq!(reply.headers[header::LOCATION], "/", "{sneaky}");
    }
    let reply = app
        .send(login(
            "password=correct+horse+battery&next=%2Fmachines%2F52%3A54%3A00%3Aaa%3Abb%3A01%3Ftab%3Dtimeline",
        ))
        .await;
    assert_eq!(
        reply.headers[header::LOCATION],
        "/machines/52:54:00:aa:bb:01?tab=timeline"
    );
}

#[tokio::test]
async fn every_page_renders_and_escapes_what_users_typed() {
    let app = app();
    app.with_profile().await;
    let hostile = "<script>alert(1)</script>";
    app.put_json(
        &format!("/api/v1/machines/{MAC}"),
        json!({"name": hostile, "profile": "inst"}),
    )
    .await;
    app.put_json(
        "/api/v1/profiles/quoted",
        json!({"kind": "chain", "url": "http://x/\"><b>", "description": hostile}),
    )
    .await;
    let mac: Mac = MAC.parse().unwrap();
    app.boot
        .timeline()
        .record(mac, Step::TftpFailed, format!("{hostile}: timed out"));
    let (cookie, _) = app.login().await;
    for uri in [
        "/",
        "/?live=1",
        "/machines",
        "/machines?live=1",
        &format!("/machines/{MAC}"),
        "/profiles",
        "/profiles/new",
        "/profiles/new?kind=menu",
        "/profiles/inst",
        "/profiles/quoted",
        "/images",
        "/tokens",
    ] {
        let reply = app
            .send(
                Request::get(uri)
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        let html = reply.text();
        assert!(!html.contains(hostile), "{uri} shows raw markup");
        assert!(!html.contains("\"><b>"), "{uri} shows raw markup");
        if !uri.contains("live") {
            assert!(
                reply.headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
        }
    }
    let page = app
        .send(
            Request::get(format!("/machines/{MAC}"))
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    assert!(
        page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("--single-port"),
        "the diagnosis names the fix: {page}"
    );
}

#[tokio::test]
async fn assigning_a_profile_changes_the_script_and_preview_uses_nothing_up() {
    let app = app();
    app.with_profile().await;
    app.put_json("/api/v1/profiles/disk", json!({"kind": "local-disk"}))
        .await;
    assert!(
        app.script(MAC).await.contains("choose"),
        "unknown machines get the menu"
    );
    let uri = format!("/api/v1/machines/{MAC}");
    app.put_json(&uri, json!({"profile": "disk", "once": "inst"}))
        .await;
    let (cookie, _) = app.login().await;
    let preview = || {
        Request::get(format!("/machines/{MAC}/script"))
            .header(header::COOKIE, &cookie)
            .header(header::HOST, "10.0.0.2:8080")
            .body(Body::empty())
            .unwrap()
    };
    // Looking at the script twice does not use up the boot-once profile, nor does HEAD or a
    // GET from another host...
    assert!(app.send(preview()).await.text().contains("marker=inst"));
    assert!(app.send(preview()).await.text().contains("marker=inst"));
    let head = Request::head(format!("/boot/{MAC}.ipxe"))
        .header(header::HOST, "10.0.0.2:8080")
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            MACHINE_IP, 40000,
        ))))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(head).await.status, StatusCode::OK);
    let stranger = Request::get(format!("/boot/{MAC}.ipxe"))
        .header(header::HOST, "10.0.0.2:8080")
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [10, 0, 0, 66],
            40000,
        ))))
        .body(Body::empty())
        .unwrap();
    assert!(!app.send(stranger).await.text().contains("marker=inst"));
    assert_eq!(
        app.api(Method::GET, &uri, Body::empty()).await.json()["once"],
        "inst"
    );
    // ...booting does.
    assert!(app.machine_script(MAC).await.contains("marker=inst"));
    let next = app.script(MAC).await;
    assert!(
        next.contains("exit") && !next.contains("marker=inst"),
        "{next}"
    );
    let detail = app.api(Method::GET, &uri, Body::empty()).await.json();
    assert_eq!(detail["once"], Value::Null);
    let steps: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    // The menu before registration, then the boot-once profile (used up), then the disk.
    assert_eq!(
        steps,
        [
            "script-fetched",
            "boot-once-kept",
            "script-fetched",
            "boot-once-used",
            "script-fetched",
            "script-fetched"
        ]
    );
    assert_eq!(detail["diagnosis"]["verdict"], "booted");
}

#[tokio::test]
async fn boot_steps_stream_as_server_sent_events() {
    let app = app();
    let reply = app
        .router
        .clone()
        .oneshot(
            Request::get("/api/v1/events")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = reply.into_body();
    let mac: Mac = MAC.parse().unwrap();
    app.boot.timeline().record(
        mac,
        Step::OfferSent,
        "OFFER with boot file 'undionly.kpxe'".into(),
    );
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: step\n"), "{text}");
    assert!(
        text.contains("\"step\":\"offer-sent\"") && text.contains(MAC),
        "{text}"
    );
}

#[tokio::test]
async fn tokens_are_managed_over_the_api() {
    let app = app();
    let reply = app
        .api(
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "ansible"}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let token = reply.json()["token"].as_str().unwrap().to_string();
    let list = app
        .api(Method::GET, "/api/v1/tokens", Body::empty())
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&token));
    let reply = app
        .api(
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "ansible"}).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("already exists"));
    let reply = app
        .api(Method::DELETE, "/api/v1/tokens/ansible", Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = app
        .send(
            Request::get("/api/v1/status")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// Every path and method in the OpenAPI document exists (none answers 404 from the router or
/// 405), so the document cannot describe an API that is not there.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = app();
    let reply = app
        .api(Method::GET, "/api/v1/openapi.json", Body::empty())
        .await;
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12);
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            if path == "/events" {
                continue; // endless stream: checked by its own test
            }
            let uri = format!(
                "/api/v1{}",
                path.replace("{mac}", "52:54:00:00:00:99")
                    .replace("{name}", "nosuch")
                    .replace("{file}", "f")
            );
            let method: Method = method.to_uppercase().parse().unwrap();
            let reply = app.api(method.clone(), &uri, "{}").await;
            assert_ne!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}"
            );
            if reply.status == StatusCode::NOT_FOUND {
                // Our own 404s explain themselves; the router's are empty.
                assert!(!reply.error().is_empty(), "{method} {uri} is not routed");
            }
        }
    }
}

/// `/metrics` is valid Prometheus text, needs no login, counts what happened and names no
/// machine.
#[tokio::test]
async fn metrics_count_without_naming_machines() {
    let app = app();
    app.with_profile().await;
    app.put_json(
        &format!("/api/v1/machines/{MAC}"),
        json!({"profile": "inst"}),
    )
    .await;
    app.script(MAC).await;
    app.script("nonsense").await;
    let fetch = |uri: &str| {
        Request::get(uri)
            .header(header::HOST, "10.0.0.2:8080")
            .body(Body::empty())
            .unwrap()
    };
    let kernel = app.send(fetch("/images/debian/vmlinuz")).await;
    assert_eq!(kernel.body.len(), 5000);
    app.send(fetch("/images/debian/nosuch")).await;

    let reply = app.send(fetch("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = reply.text();
    let mut samples = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains(name), "{name} has no TYPE line");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        value
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value.to_string());
    }
    let sample = |series: &str| samples.get(series).map(String::as_str);
    assert_eq!(
        sample(r#"bootherd_transfers_total{protocol="http",outcome="script"}"#),
        Some("1")
    );
    assert_eq!(
        sample(r#"bootherd_transfers_total{protocol="http",outcome="file"}"#),
        Some("1")
    );
    assert_eq!(
        sample(r#"bootherd_failures_total{protocol="http",reason="not_found"}"#),
        Some("2")
    );
    let script_len = app.script(MAC).await.len() as u64;
    assert!(
        sample(r#"bootherd_bytes_total{protocol="http"}"#)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 5000 + script_len - 10
    );
    assert_eq!(sample(r#"bootherd_profiles{ready="true"}"#), Some("1"));
    assert_eq!(sample("bootherd_machines_registered"), Some("1"));
    assert!(!text.contains(MAC) && !text.contains("inst"), "{text}");
}

/// Import publishes a file the service can read to every host on the LAN, so it takes only
/// regular files from the import directories (DATA/import, or --import-dir), within the size
/// limit. Before, /etc/shadow, /proc/self/environ, the password hash and /dev/zero went in.
#[tokio::test]
async fn import_takes_only_regular_files_from_the_import_directories() {
    let app = app();
    let import = app.dir.path().join("data/import");
    std::fs::create_dir_all(&import).unwrap();
    std::fs::write(import.join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(
        app.dir.path().join("data/admin-password"),
        b"$argon2id$secret",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", import.join("passwd")).unwrap();
    let import_of = |path: String| json!({"path": path}).to_string();
    let reply = app
        .api(
            Method::POST,
            "/api/v1/images/ok/import",
            import_of(import.join("vmlinuz").display().to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    for refused in [
        "/etc/passwd".to_string(),
        "/proc/self/environ".to_string(),
        "/dev/zero".to_string(),
        app.dir
            .path()
            .join("data/admin-password")
            .display()
            .to_string(),
        app.dir
            .path()
            .join("data/api-tokens.yaml")
            .display()
            .to_string(),
        import.join("passwd").display().to_string(),
        format!("{}/../admin-password", import.display()),
        import.display().to_string(),
    ] {
        let reply = app
            .api(
                Method::POST,
                "/api/v1/images/leak/import",
                import_of(refused.clone()),
            )
            .await;
        assert!(
            reply.status.is_client_error(),
            "{refused}: {} {}",
            reply.status,
            reply.text()
        );
        assert!(
            reply.error().contains("import"),
            "{refused}: the refusal says where imports come from: {}",
            reply.error()
        );
    }
    let images = app
        .api(Method::GET, "/api/v1/images", Body::empty())
        .await
        .json();
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
}

/// Uploads have a size limit (announced or not) and a stall timeout, and a failed upload
/// leaves nothing. Before, any size was taken and a client that stopped sending held its
/// connection and temporary file forever.
#[tokio::test]
async fn uploads_are_limited_in_size_and_given_up_when_they_stall() {
    use futures_util::StreamExt;
    let app = app();
    let too_big = vec![7u8; (1 << 20) + 1];
    let reply = app
        .api(
            Method::PUT,
            "/api/v1/images/big/files/initrd",
            too_big.clone(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert!(
        reply.error().contains("max-image-file-bytes"),
        "{}",
        reply.error()
    );
    // Without a Content-Length, the limit holds while the body streams.
    let chunks: Vec<Result<_, std::io::Error>> = too_big
        .chunks(64 << 10)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    let reply = app
        .api(
            Method::PUT,
            "/api/v1/images/big/files/initrd",
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    // A body that sends a little and then nothing.
    let stalled = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        axum::body::Bytes::from(vec![1u8; 1000]),
    )])
    .chain(futures_util::stream::pending());
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.api(
            Method::PUT,
            "/api/v1/images/slow/files/initrd",
            Body::from_stream(stalled),
        ),
    )
    .await
    .expect("a stalled upload is given up");
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(
        reply.error().contains("nothing arrived"),
        "{}",
        reply.error()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let images = app
        .api(Method::GET, "/api/v1/images", Body::empty())
        .await
        .json();
    assert_eq!(images.as_array().unwrap().len(), 0, "{images}");
    let leftovers: Vec<_> = walk(&app.dir.path().join("data/images"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A live event stream lasts only as long as the credential it was opened with: revoking the
/// token (or logging out) ends it. Before, a revoked token kept receiving every boot step.
#[tokio::test]
async fn event_streams_end_when_their_token_is_revoked() {
    let app = app();
    let created = app
        .api(
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "watcher"}).to_string(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let token = created.json()["token"].as_str().unwrap().to_string();
    let request = Request::get("/api/v1/events")
        .header(header::HOST, "10.0.0.2:8080")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply = app
        .api(Method::DELETE, "/api/v1/tokens/watcher", Body::empty())
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        response.into_body().collect(),
    )
    .await;
    assert!(ended.is_ok(), "the stream outlived its revoked token");
}
