//! `bootherd check` (is the data directory consistent, can every offered bootloader be
//! served) and `bootherd health` (is a running server answering).

use std::path::Path;

use anyhow::{Context, bail};
use bootherd_boot::{COMMON_ARCHES, bootloader_candidates};
use bootherd_files::DirSource;
use bootherd_pxe::ArchKey;
use bootherd_store::{Store, validate};
use bootherd_tftp::{FileSource, TftpPath};
use serde::Serialize;

use super::{DataDir, print_json};

/// `bootherd check`: every profile's readiness and every problem, each with its fix. Fails
/// (exit status 1) when anything would keep a machine from booting.
pub(crate) fn check(dir: &DataDir, bootloaders: &Path) -> anyhow::Result<()> {
    let mut problems: Vec<String> = Vec::new();
    // What does not keep most machines from booting but an operator should know.
    let mut notes: Vec<String> = Vec::new();
    let store = match Store::open(&dir.data) {
        Ok(store) => store,
        Err(e) => bail!(
            "state file is invalid: {e} (fix the file; a running server keeps its last good state)"
        ),
    };
    let state = store.state();
    for image in store.images().list()? {
        for problem in store.verify_image(&image.name)? {
            problems.push(format!("image '{}': {problem}", image.name));
        }
    }
    let images = store.image_map()?;
    let mut report = Vec::new();
    for (name, profile) in &state.profiles {
        let readiness = validate::readiness(name, profile, &state, &images);
        report.push((name.to_string(), profile.kind(), readiness.clone()));
        for problem in readiness {
            problems.push(format!("profile '{name}' is not ready: {problem}"));
        }
    }
    match DirSource::new(bootloaders) {
        Ok(source) => {
            for arch in ArchKey::ALL.into_iter().filter(|arch| !arch.http()) {
                let names = bootloader_candidates(arch);
                if names.is_empty()
                    || names
                        .iter()
                        .any(|n| TftpPath::parse(n).is_ok_and(|p| source.contains(&p)))
                {
                    continue;
                }
                let missing = format!(
                    "no {arch} bootloader in {} (looked for {})",
                    bootloaders.display(),
                    names.join(", ")
                );
                if COMMON_ARCHES.contains(&arch) {
                    problems.push(format!(
                        "{missing}: install Debian's ipxe package or pass --bootloaders DIR"
                    ));
                } else {
                    notes.push(format!(
                        "{missing}: such machines boot only bootfile profiles until one is added to the bootloader directory"
                    ));
                }
            }
        }
        Err(e) => problems.push(format!(
            "bootloader directory {}: {e}; install Debian's ipxe package or pass --bootloaders DIR",
            bootloaders.display()
        )),
    }
    if dir.json {
        #[derive(Serialize)]
        struct Report<'a> {
            profiles: Vec<serde_json::Value>,
            problems: &'a [String],
            notes: &'a [String],
        }
        let profiles = report
            .iter()
            .map(|(name, kind, readiness)| serde_json::json!({"name": name, "kind": kind, "ready": readiness.is_empty(), "problems": readiness}))
            .collect();
        print_json(&Report {
            profiles,
            problems: &problems,
            notes: &notes,
        })?;
    } else {
        println!(
            "state: {} ({} profiles, {} machines)",
            store.state_path().display(),
            state.profiles.len(),
            state.machines.len()
        );
        for (name, kind, readiness) in &report {
            let status = if readiness.is_empty() {
                "ready".to_string()
            } else {
                "NOT READY".to_string()
            };
            println!("  profile {name:<20} {kind:<11} {status}");
        }
        for problem in &problems {
            println!("problem: {problem}");
        }
        for note in &notes {
            println!("note: {note}");
        }
        if problems.is_empty() {
            println!("no problems found");
        }
    }
    if !problems.is_empty() {
        bail!("{} problem(s) found", problems.len());
    }
    Ok(())
}

/// A plain HTTP/1.1 GET of the health endpoint with short timeouts: the container's
/// HEALTHCHECK runs this binary rather than shipping curl in the image.
pub(crate) fn health(url: Option<&str>) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let default_url;
    let url = match url {
        Some(url) => url,
        None => {
            let port = std::env::var("BOOTHERD_HTTP_PORT").unwrap_or_else(|_| "8080".into());
            default_url = format!("http://127.0.0.1:{port}/healthz");
            &default_url
        }
    };
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} has no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connecting to {target}: is bootherd serve running?"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer from {url}"))?;
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{url} answered '{status}'");
    }
    println!("healthy: {url}");
    Ok(())
}
