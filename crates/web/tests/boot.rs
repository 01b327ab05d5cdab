//! The boot endpoints machines fetch, through the router without a socket: scripts on the host
//! the client used, image files and bootloaders with their ranges, and nothing else.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use bootherd_boot::Boot;
use bootherd_store::{Machine, Name, Profile};

use common::{PASSWORD, Site, send, test_limits};

fn app() -> (tempfile::TempDir, Router, Arc<Boot>) {
    let site = Site::new(|store, loaders| {
        let image: Name = "debian".parse().unwrap();
        let kernel: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        store
            .images()
            .import_reader(&image, "linux", kernel.as_slice())
            .unwrap();
        store
            .update(|state| {
                state.profiles.insert(
                    "inst".parse().unwrap(),
                    Profile::Linux {
                        image: image.clone(),
                        kernel: "linux".into(),
                        initrd: vec![],
                        cmdline: "marker=inst".into(),
                        description: String::new(),
                    },
                );
                state.machines.insert(
                    "52:54:00:00:00:07".parse().unwrap(),
                    Machine {
                        profile: Some("inst".parse().unwrap()),
                        ..Machine::default()
                    },
                );
                Ok(())
            })
            .unwrap();
        std::fs::write(loaders.join("ipxe.efi"), b"efi binary").unwrap();
    });
    let (router, _) = site.router(Some(PASSWORD), test_limits());
    (site.dir, router, site.boot)
}

async fn get(
    router: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::get(uri);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header(header::HOST, "10.0.0.2:8080");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(router, request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn scripts_use_the_host_the_client_used() {
    let (_dir, router, _) = app();
    let (status, _, body) = get(&router, "/boot/52:54:00:00:00:07.ipxe", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let script = String::from_utf8(body).unwrap();
    assert!(
        script.contains("kernel http://10.0.0.2:8080/images/debian/linux marker=inst"),
        "{script}"
    );
    // An unknown machine gets the menu; a malformed name a clear 404.
    let (status, _, body) = get(&router, "/boot/52-54-00-00-00-08.ipxe", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().contains("choose"));
    let (status, _, body) = get(&router, "/boot/not-a-mac.ipxe", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("/boot/<mac>.ipxe")
    );
    let (status, _, _) = get(
        &router,
        "/boot/52:54:00:00:00:07.ipxe",
        &[("host", "evil\" #")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn image_files_support_ranges_and_hide_everything_else() {
    let (_dir, router, _) = app();
    let (status, headers, body) = get(&router, "/images/debian/linux", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 10_000);
    assert_eq!(headers[header::CONTENT_LENGTH], "10000");
    let (status, headers, body) = get(
        &router,
        "/images/debian/linux",
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 100-199/10000");
    assert_eq!(
        body,
        (100..200u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()
    );
    for hidden in [
        "/images/debian/manifest.yaml",
        "/images/debian/..%2fstate.yaml",
        "/images/nosuch/linux",
        "/images/Debian/linux",
    ] {
        let (status, _, _) = get(&router, hidden, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
    }
    let (status, _, body) = get(&router, "/bootloaders/ipxe.efi", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"efi binary"[..])
    );
    let (status, _, _) = get(&router, "/bootloaders/../data/state.yaml", &[]).await;
    assert_ne!(status, StatusCode::OK);
}

/// HTTP serves by the same rule as TFTP: a symlink may not lead out of the bootloader
/// directory, and none is followed in an image's directory (bootherd made it, so a symlink
/// there was planted). Both used to be followed to any file the service could read.
#[tokio::test]
async fn symlinks_out_of_the_served_directories_are_refused_over_http() {
    let (dir, router, boot) = app();
    let outside = dir.path().join("secret");
    std::fs::write(&outside, b"root:x:0:0").unwrap();
    let loaders = dir.path().join("loaders");
    std::os::unix::fs::symlink(&outside, loaders.join("passwd")).unwrap();
    std::os::unix::fs::symlink("ipxe.efi", loaders.join("snponly.efi")).unwrap();
    let (status, _, body) = get(&router, "/bootloaders/passwd", &[]).await;
    assert_ne!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = get(&router, "/bootloaders/snponly.efi", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"efi binary"[..])
    );
    // The image's listed file replaced by a symlink to a file outside.
    let linux = boot
        .store()
        .images()
        .file_path(&"debian".parse().unwrap(), "linux")
        .unwrap();
    std::fs::remove_file(&linux).unwrap();
    std::os::unix::fs::symlink(&outside, &linux).unwrap();
    let (status, _, body) = get(&router, "/images/debian/linux", &[]).await;
    assert_ne!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let path = bootherd_tftp::TftpPath::parse("images/debian/linux").unwrap();
    assert!(bootherd_tftp::FileSource::open(&*boot, &path).is_err());
}
