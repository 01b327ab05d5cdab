//! The ways bootherd is deployed: the container image (built with buildah, no Docker engine),
//! the compose file, and the systemd unit. Each is checked, so none goes stale.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootherd_testkit::run_with_timeout;

const BIN: &str = env!("CARGO_BIN_EXE_bootherd");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// docker/check-image.sh builds the Dockerfile and checks the image (see docker/README.md).
#[test]
fn container_image_builds_and_runs_confined() {
    for program in ["buildah", "podman", "debootstrap", "getcap"] {
        if !installed(program) {
            eprintln!(
                "SKIPPED: the container image is not checked because {program} is not installed (apt-get install buildah podman debootstrap libcap2-bin; ./.ci/test does)"
            );
            return;
        }
    }
    let output = run_with_timeout(
        Command::new("bash").arg(workspace().join("docker/check-image.sh")),
        Duration::from_secs(40 * 60),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("image checks passed"),
        "docker/check-image.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for check in [
        "ok: bootherd ",
        "ok: bootloaders in /usr/lib/ipxe",
        "ok: runs as bootherd",
        "ok: only capability cap_net_bind_service",
        "healthcheck",
    ] {
        assert!(stdout.contains(check), "missing '{check}' in\n{stdout}");
    }
}

#[test]
fn compose_file_uses_host_networking_and_one_capability() {
    let text = std::fs::read_to_string(workspace().join("docker/compose.yaml")).unwrap();
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let service = &compose["services"]["bootherd"];
    assert_eq!(service["network_mode"], "host", "PXE needs broadcasts");
    assert_eq!(service["cap_drop"][0], "ALL");
    assert_eq!(service["cap_add"].as_sequence().unwrap().len(), 1);
    assert_eq!(service["cap_add"][0], "NET_BIND_SERVICE");
    assert_eq!(service["build"]["context"], "..");
    assert!(workspace().join("Dockerfile").is_file());
    let volumes = service["volumes"].as_sequence().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.as_str().unwrap().ends_with(":/var/lib/bootherd"))
    );
    // The command must be one bootherd accepts.
    let command: Vec<String> = service["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("${BOOTHERD_INTERFACE:-eth0}", "eth0")
        })
        .collect();
    let mut args = command.clone();
    args.push("--help".into());
    let output = Command::new(BIN).args(&args).output().unwrap();
    assert!(output.status.success(), "bootherd {command:?} is not valid");
}

/// The unit is valid for systemd and its sandbox keeps the exposure score low (systemd's own
/// measure; 0 is fully confined, 10 unconfined). systemd cannot run services in this test
/// environment, so this is a static check.
#[test]
fn systemd_unit_is_valid_and_confined() {
    if !installed("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let unit = std::fs::read_to_string(workspace().join("dist/bootherd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/bootherd serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootherd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/bootherd", BIN)).unwrap();
    let verify = run_with_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        Duration::from_secs(60),
    );
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains(path.to_str().unwrap()),
        "systemd-analyze verify: {complaints}"
    );
    let security = run_with_timeout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(&path),
        Duration::from_secs(60),
    );
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
    for line in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "StateDirectory=bootherd",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}
