//! `/metrics` in the Prometheus text format (version 0.0.4). Unauthenticated like the boot
//! endpoints, and like them it names no machine: only counts, by architecture, protocol,
//! outcome and reason, so scraping it reveals nothing about who booted what.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bootherd_telemetry::Services;

use crate::AppState;

/// One metric family: help, type, and samples with their labels.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = render(&state);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub(crate) fn render(state: &AppState) -> String {
    let services = &state.services;
    let mut out = String::new();
    process_families(&mut out, services);
    // failures by protocol and reason, gathered while going through each protocol
    let mut failures: Vec<(&'static str, String, u64)> = Vec::new();
    dhcp_families(&mut out, services, &mut failures);
    transfer_families(&mut out, services, &mut failures);
    failure_family(&mut out, services, failures);
    state_families(&mut out, state);
    out
}

/// Which bootherd runs, since when.
fn process_families(out: &mut String, services: &Services) {
    Family::start(
        out,
        "bootherd_build_info",
        "gauge",
        "Version of the running bootherd.",
    )
    .sample(
        "bootherd_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let started = services
        .started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Family::start(
        out,
        "bootherd_start_time_seconds",
        "gauge",
        "When bootherd started, in seconds since the Unix epoch.",
    )
    .sample("bootherd_start_time_seconds", &[], started);
}

/// What the ProxyDHCP responder answered.
fn dhcp_families(
    out: &mut String,
    services: &Services,
    failures: &mut Vec<(&'static str, String, u64)>,
) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    if let Some(dhcp) = &services.dhcp {
        Family::start(
            out,
            "bootherd_dhcp_requests_total",
            "counter",
            "PXE requests bootherd answered (DISCOVER/REQUEST on ports 67 and 4011).",
        )
        .sample("bootherd_dhcp_requests_total", &[], load(&dhcp.requests));
        Family::start(
            out,
            "bootherd_dhcp_replies_total",
            "counter",
            "Boot offers (port 67) and ACKs (port 4011) sent.",
        )
        .sample(
            "bootherd_dhcp_replies_total",
            &[("type", "offer")],
            load(&dhcp.offers),
        )
        .sample(
            "bootherd_dhcp_replies_total",
            &[("type", "ack")],
            load(&dhcp.acks),
        );
        let mut by_arch = Family::start(
            out,
            "bootherd_dhcp_offers_by_arch_total",
            "counter",
            "Boot offers and ACKs sent, by client architecture (DHCP option 93).",
        );
        for (arch, count) in dhcp.by_arch.snapshot() {
            by_arch.sample(
                "bootherd_dhcp_offers_by_arch_total",
                &[("arch", arch)],
                count,
            );
        }
        Family::start(
            out,
            "bootherd_dhcp_competing_offers_total",
            "counter",
            "Boot offers seen from other servers on the network.",
        )
        .sample(
            "bootherd_dhcp_competing_offers_total",
            &[],
            load(&dhcp.competing),
        );
        failures.push(("dhcp", "declined".into(), load(&dhcp.declined)));
        failures.push(("dhcp", "malformed".into(), load(&dhcp.malformed)));
    }
}

/// TFTP and HTTP transfers, bytes and what is running now.
fn transfer_families(
    out: &mut String,
    services: &Services,
    failures: &mut Vec<(&'static str, String, u64)>,
) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let http = &services.http;
    let mut transfers = Family::start(
        out,
        "bootherd_transfers_total",
        "counter",
        "Finished transfers by protocol and outcome (TFTP: how the transfer ended; HTTP: scripts and image files served).",
    );
    if let Some(tftp) = &services.tftp {
        for (outcome, count) in tftp.outcomes.snapshot() {
            transfers.sample(
                "bootherd_transfers_total",
                &[("protocol", "tftp"), ("outcome", outcome)],
                count,
            );
        }
    }
    transfers
        .sample(
            "bootherd_transfers_total",
            &[("protocol", "http"), ("outcome", "script")],
            load(&http.scripts),
        )
        .sample(
            "bootherd_transfers_total",
            &[("protocol", "http"), ("outcome", "file")],
            load(&http.files),
        );
    let mut bytes = Family::start(
        out,
        "bootherd_bytes_total",
        "counter",
        "Payload bytes sent and received, by protocol.",
    );
    if let Some(tftp) = &services.tftp {
        bytes.sample(
            "bootherd_bytes_total",
            &[("protocol", "tftp")],
            load(&tftp.bytes),
        );
    }
    bytes.sample(
        "bootherd_bytes_total",
        &[("protocol", "http")],
        load(&http.bytes),
    );
    if let Some(tftp) = &services.tftp {
        Family::start(
            out,
            "bootherd_active_transfers",
            "gauge",
            "Transfers running now.",
        )
        .sample(
            "bootherd_active_transfers",
            &[("protocol", "tftp")],
            load(&tftp.active),
        );
        Family::start(
            out,
            "bootherd_tftp_retransmissions_total",
            "counter",
            "TFTP packets sent again because no answer came in time (loss, slow clients).",
        )
        .sample(
            "bootherd_tftp_retransmissions_total",
            &[],
            load(&tftp.retransmits),
        );
        for (outcome, count) in tftp.outcomes.snapshot() {
            if !matches!(outcome, "completed" | "final_ack_missing" | "size_probe") {
                failures.push(("tftp", outcome.to_string(), count));
            }
        }
        for (code, count) in tftp.refusals.snapshot() {
            failures.push(("tftp", format!("refused_{code}"), count));
        }
    }
}

/// Everything that went wrong, by protocol and reason.
fn failure_family(
    out: &mut String,
    services: &Services,
    mut failures: Vec<(&'static str, String, u64)>,
) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let http = &services.http;
    failures.push(("http", "not_found".into(), load(&http.not_found)));
    let mut failed = Family::start(
        out,
        "bootherd_failures_total",
        "counter",
        "Things that went wrong, by protocol and reason (DHCP: requests declined or malformed; TFTP: transfers that did not complete and refused requests by error code; HTTP: scripts or files that do not exist).",
    );
    for (protocol, reason, count) in &failures {
        failed.sample(
            "bootherd_failures_total",
            &[("protocol", protocol), ("reason", reason)],
            *count,
        );
    }
}

/// Profiles, machines and images in the store.
fn state_families(out: &mut String, state: &AppState) {
    let store = state.boot.store();
    let current = store.state();
    let images = store.image_map().unwrap_or_default();
    let (mut ready, mut unready) = (0u64, 0u64);
    for (name, profile) in &current.profiles {
        if bootherd_store::validate::readiness(name, profile, &current, &images).is_empty() {
            ready += 1;
        } else {
            unready += 1;
        }
    }
    Family::start(
        out,
        "bootherd_profiles",
        "gauge",
        "Profiles, by whether they can boot now.",
    )
    .sample("bootherd_profiles", &[("ready", "true")], ready)
    .sample("bootherd_profiles", &[("ready", "false")], unready);
    Family::start(
        out,
        "bootherd_machines_registered",
        "gauge",
        "Machines in state.yaml.",
    )
    .sample(
        "bootherd_machines_registered",
        &[],
        current.machines.len() as u64,
    );
    let damaged = images.values().filter(|i| !i.problems.is_empty()).count() as u64;
    Family::start(
        out,
        "bootherd_images",
        "gauge",
        "Images in the store, by whether verification found damage.",
    )
    .sample(
        "bootherd_images",
        &[("damaged", "false")],
        images.len() as u64 - damaged,
    )
    .sample("bootherd_images", &[("damaged", "true")], damaged);
}
