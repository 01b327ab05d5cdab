//! The web UI in real headless Chromium (Debian's chromium driven by playwright-core from npm;
//! the script is tests/browser/ui.mjs). bootherd runs in a network namespace with a LAN
//! interface, so the dashboard shows real listeners; the browser runs in the same namespace.
//! Screenshots of every page are kept in test-artifacts/browser/.
//! Also checks the admin commands the UI depends on: `bootherd password` and `bootherd token`.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bootherd_testkit::netns::{self, Lan, Netns};
use bootherd_testkit::{Daemon, RawClient, pattern, require_program, run_with_timeout};
use bootherd_tftp::packet::{self, ErrorCode, Mode};

const BIN: &str = env!("CARGO_BIN_EXE_bootherd");
const PASSWORD: &str = "browser test password";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// playwright-core from the lock file, installed once (npm's own browser download is not
/// used: it fails without internet, and Debian's chromium is the browser under test).
fn playwright(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return;
    }
    let output = run_with_timeout(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(dir),
        Duration::from_secs(300),
    );
    assert!(
        output.status.success(),
        "npm ci in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn bootherd(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "bootherd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn operator_assigns_a_profile_in_the_browser() {
    if !netns::available() {
        return;
    }
    require_program("node", "nodejs");
    require_program("chromium", "chromium");
    let scripts = workspace().join("crates/bootherd/tests/browser");
    playwright(&scripts);

    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("data");
    let data_arg = data.to_str().unwrap();
    let set = bootherd(&["password", "--data", data_arg], &format!("{PASSWORD}\n"));
    assert!(String::from_utf8_lossy(&set.stdout).contains("admin password set"));
    let hash = std::fs::read_to_string(data.join("admin-password")).unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));
    let printed = bootherd(&["password", "--print"], &format!("{PASSWORD}\n"));
    assert!(String::from_utf8_lossy(&printed.stdout).starts_with("$argon2id$"));
    let token = bootherd(&["token", "add", "cli", "--data", data_arg], "");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("bh_"), "{token}");

    let lan = Lan::create();
    let ns = Netns::create("ui");
    let interface = lan.attach(&ns, Some("10.79.0.2/24"));
    std::fs::create_dir(files.path().join("bootloaders")).unwrap();
    std::fs::write(
        files.path().join("bootloaders/undionly.kpxe"),
        pattern(64 * 1024),
    )
    .unwrap();
    let server = Daemon::spawn(
        Path::new(BIN),
        &[
            "serve",
            "--data",
            data_arg,
            "--bootloaders",
            files.path().join("bootloaders").to_str().unwrap(),
            "--interface",
            &interface,
        ],
        &files.path().join("bootherd.log"),
        Some(ns.name()),
    );
    server.wait_for_log(&["web UI listening"], Duration::from_secs(10));

    // The token made by the CLI works against the running server.
    let api_status = || {
        let api = run_with_timeout(
            ns.command("curl").args([
                "-sS",
                "-H",
                &format!("Authorization: Bearer {token}"),
                "http://10.79.0.2:8080/api/v1/status",
            ]),
            Duration::from_secs(20),
        );
        serde_json::from_slice::<serde_json::Value>(&api.stdout).unwrap()
    };
    let status = api_status().to_string();
    assert!(
        status.contains(&format!("\"name\":\"{interface}\"")),
        "{status}"
    );
    assert!(status.contains("10.79.0.2:69"), "{status}");

    // A TFTP transfer held half-way shows up as in progress, with its progress.
    let client = ns.run(|| {
        RawClient::bound(
            "10.79.0.2:0".parse().unwrap(),
            "10.79.0.2:69".parse().unwrap(),
        )
    });
    // RFC 2349's timeout fixes the retransmission interval at 10 s without backoff, so the
    // server holds the transfer for minutes; left adaptive, a fast link's small round trip
    // made it give up after about 6 s, before a slow browser reached the dashboard.
    client.request(
        false,
        "undionly.kpxe",
        Mode::Octet,
        &[("tsize", "0"), ("timeout", "10")],
    );
    let oack = client.expect_recv();
    client.ack(oack.from, 0);
    client.expect_recv();
    client.ack(oack.from, 1);
    let transfers = || api_status()["transfers"].clone();
    let mut running = transfers();
    for _ in 0..20 {
        if running[0]["bytes"] == 512 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        running = transfers();
    }
    assert_eq!(running[0]["file"], "undionly.kpxe", "{running}");
    assert_eq!(running[0]["size"], 65536, "{running}");
    assert_eq!(running[0]["bytes"], 512, "{running}");
    assert_eq!(running[0]["percent"], 0, "{running}");
    // Still held (see the timeout above): the dashboard shows it below.

    let artifacts = workspace().join("test-artifacts/browser");
    let run = run_with_timeout(
        ns.command("node")
            .arg(scripts.join("ui.mjs"))
            .env("BASE_URL", "http://10.79.0.2:8080")
            .env("PASSWORD", PASSWORD)
            .env("OUT_DIR", &artifacts)
            // Chromium wants a writable home for its profile.
            .env("HOME", files.path()),
        Duration::from_secs(240),
    );
    let mut abort = Vec::new();
    packet::encode_error(&mut abort, ErrorCode::NotDefined, "test client gives up");
    client.send_raw(oack.from, &abort);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success() && stdout.contains("browser test passed"),
        "browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- bootherd log (tail)\n{}",
        server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for page in [
        "login",
        "dashboard",
        "images",
        "profiles",
        "machine",
        "machines",
        "tokens",
    ] {
        let shot = artifacts.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
            "missing screenshot {}",
            shot.display()
        );
    }
    let log = server.log();
    assert!(
        log.contains("admin logged in") && log.contains("file uploaded"),
        "{log}"
    );
    server.terminate();
}
