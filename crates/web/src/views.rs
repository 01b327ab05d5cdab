//! What the API returns and the pages show: one view per thing, built from the store and what
//! was seen on the network, so the JSON and the HTML never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bootherd_boot::timeline::{self, Diagnosis, MachineEvent, TimelineEvent};
use bootherd_boot::{Boot, Decision, Seen};
use bootherd_store::{Image, Mac, Machine, Name, Profile, State, UnknownMachines};
use serde::Serialize;

use bootherd_telemetry::{Listener, Services};

pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// "12 s ago", for people.
pub(crate) fn ago(at: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(at)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineView {
    pub mac: String,
    pub name: String,
    /// In state.yaml (as opposed to only seen on the network).
    pub registered: bool,
    pub profile: Option<String>,
    pub once: Option<String>,
    /// What it boots next, in words.
    pub boots: String,
    pub arch: String,
    pub firmware: String,
    pub address: Option<String>,
    pub last_seen: Option<String>,
    #[serde(skip)]
    pub last_seen_ago: String,
}

fn describe_decision(state: &State, mac: &Mac) -> String {
    match Boot::decide(state, mac) {
        Decision::Profile { name, once, .. } if once => format!("{name} (once)"),
        Decision::Profile { name, .. } => name.to_string(),
        Decision::DefaultMenu => "default menu".into(),
        Decision::Ignore => "nothing (ignored)".into(),
    }
}

pub(crate) fn machine(state: &State, mac: &Mac, seen: Option<&Seen>) -> MachineView {
    let registered = state.machines.get(mac);
    let seen_default = Seen::default();
    let seen = seen.unwrap_or(&seen_default);
    MachineView {
        mac: mac.to_string(),
        name: registered.map(|m| m.name.clone()).unwrap_or_default(),
        registered: registered.is_some(),
        profile: registered.and_then(|m| m.profile.as_ref().map(Name::to_string)),
        once: registered.and_then(|m| m.once.as_ref().map(Name::to_string)),
        boots: describe_decision(state, mac),
        arch: seen.arch.clone(),
        firmware: seen.firmware.clone(),
        address: seen.address.map(|a| a.to_string()),
        last_seen: seen.last_seen.map(time),
        last_seen_ago: seen.last_seen.map(ago).unwrap_or_default(),
    }
}

/// Every registered machine and every machine seen, registered ones first by name.
pub(crate) fn machines(boot: &Boot) -> Vec<MachineView> {
    let state = boot.store().state();
    let seen: BTreeMap<Mac, Seen> = boot.seen_machines().into_iter().collect();
    let macs: BTreeSet<Mac> = state.machines.keys().chain(seen.keys()).copied().collect();
    let mut all: Vec<MachineView> = macs
        .iter()
        .map(|mac| machine(&state, mac, seen.get(mac)))
        .collect();
    all.sort_by(|a, b| {
        (!a.registered, a.name.is_empty(), &a.name, &a.mac).cmp(&(
            !b.registered,
            b.name.is_empty(),
            &b.name,
            &b.mac,
        ))
    });
    all
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventView {
    pub at: String,
    pub step: timeline::Step,
    pub label: &'static str,
    pub detail: String,
    pub problem: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

pub(crate) fn event(event: &TimelineEvent, mac: Option<&Mac>) -> EventView {
    EventView {
        at: time(event.at),
        step: event.step,
        label: event.step.label(),
        detail: event.detail.clone(),
        problem: event.step.is_problem(),
        mac: mac.map(Mac::to_string),
    }
}

pub(crate) fn machine_event(e: &MachineEvent) -> EventView {
    event(&e.event, Some(&e.mac))
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MachineDetail {
    #[serde(flatten)]
    pub machine: MachineView,
    pub diagnosis: Diagnosis,
    pub timeline: Vec<EventView>,
}

pub(crate) fn machine_detail(boot: &Boot, mac: &Mac) -> MachineDetail {
    let state = boot.store().state();
    let events = boot.timeline().events(mac);
    MachineDetail {
        machine: machine(&state, mac, boot.seen(mac).as_ref()),
        diagnosis: timeline::diagnose(&events, SystemTime::now()),
        timeline: events.iter().map(|e| event(e, None)).collect(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProfileView {
    pub name: String,
    pub kind: &'static str,
    pub description: String,
    /// Why it cannot boot now; empty when ready.
    pub problems: Vec<String>,
    pub ready: bool,
    /// Machines that boot it (assigned or once).
    pub used_by: Vec<String>,
    /// Menus listing it.
    pub in_menus: Vec<String>,
    pub profile: Profile,
}

pub(crate) fn profiles(boot: &Boot) -> Vec<ProfileView> {
    let state = boot.store().state();
    let images = boot.store().image_map().unwrap_or_default();
    state
        .profiles
        .iter()
        .map(|(name, profile)| {
            let problems =
                bootherd_store::validate::readiness(name, profile, &state, &images);
            ProfileView {
                name: name.to_string(),
                kind: profile.kind(),
                description: profile.description().to_string(),
                ready: problems.is_empty(),
                problems,
                used_by: state
                    .machines
                    .iter()
                    .filter(|(_, m)| m.profile.as_ref() == Some(name) || m.once.as_ref() == Some(name))
                    .map(|(mac, _)| mac.to_string())
                    .collect(),
                in_menus: state
                    .profiles
                    .iter()
                    .filter(|(_, p)| matches!(p, Profile::Menu { entries, .. } if entries.contains(name)))
                    .map(|(n, _)| n.to_string())
                    .collect(),
                profile: profile.clone(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImageView {
    pub name: String,
    pub size: u64,
    #[serde(skip)]
    pub size_text: String,
    pub files: Vec<ImageFileView>,
    /// Damage found by verification; empty when intact.
    pub problems: Vec<String>,
    /// Profiles that boot files of this image: while there are any, it cannot be deleted.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImageFileView {
    pub name: String,
    pub size: u64,
    #[serde(skip)]
    pub size_text: String,
    pub sha256: String,
}

pub(crate) fn image(state: &State, image: &Image) -> ImageView {
    ImageView {
        name: image.name.to_string(),
        size: image.size(),
        size_text: bytes(image.size()),
        files: image
            .files
            .iter()
            .map(|f| ImageFileView {
                name: f.name.clone(),
                size: f.size,
                size_text: bytes(f.size),
                sha256: f.sha256.clone(),
            })
            .collect(),
        problems: image.problems.clone(),
        used_by: state
            .profiles
            .iter()
            .filter(|(_, p)| p.image() == Some(&image.name))
            .map(|(n, _)| n.to_string())
            .collect(),
    }
}

pub(crate) fn images(boot: &Boot) -> Result<Vec<ImageView>, bootherd_store::StoreError> {
    let state = boot.store().state();
    Ok(boot
        .store()
        .image_map()?
        .values()
        .map(|i| image(&state, i))
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DefaultsView {
    pub unknown: String,
    pub menu_timeout: u32,
}

pub(crate) fn defaults(state: &State) -> DefaultsView {
    DefaultsView {
        unknown: match &state.defaults.unknown {
            UnknownMachines::Menu => "menu".into(),
            UnknownMachines::Profile(p) => format!("profile {p}"),
            UnknownMachines::Ignore => "ignore".into(),
        },
        menu_timeout: state.defaults.menu_timeout,
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TransferView {
    pub client: String,
    pub file: String,
    pub direction: &'static str,
    pub bytes: u64,
    pub size: Option<u64>,
    /// 0-100 when the size is known.
    pub percent: Option<u8>,
    pub elapsed_ms: u64,
    #[serde(skip)]
    pub bytes_text: String,
    #[serde(skip)]
    pub size_text: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListenerView {
    pub name: String,
    pub address: String,
    pub healthy: bool,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct InterfaceView {
    pub name: String,
    pub addresses: Vec<String>,
    pub up: bool,
    /// Where each listener is reached on this interface.
    pub listeners: Vec<ListenerView>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StatusView {
    pub version: &'static str,
    pub started: String,
    pub interfaces: Vec<InterfaceView>,
    pub listeners: Vec<ListenerView>,
    pub counters: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// The counters in the order and wording the dashboard shows them.
    #[serde(skip)]
    pub counter_groups: Vec<(&'static str, Vec<(&'static str, String)>)>,
    pub transfers: Vec<TransferView>,
    pub recent: Vec<EventView>,
}

fn listener(listener: &Listener, address: String) -> ListenerView {
    let failure = listener.state();
    ListenerView {
        name: listener.name.clone(),
        address,
        healthy: failure.is_none(),
        state: failure.unwrap_or_else(|| "listening".into()),
    }
}

pub(crate) fn status(boot: &Boot, services: &Services) -> StatusView {
    let counters = counter_values(services);
    StatusView {
        version: env!("CARGO_PKG_VERSION"),
        started: time(services.started),
        interfaces: interface_views(services),
        listeners: services
            .listeners()
            .iter()
            .map(|l| listener(l, l.address.to_string()))
            .collect(),
        counter_groups: counter_groups(&counters),
        counters,
        transfers: transfer_views(services),
        recent: boot
            .timeline()
            .recent()
            .iter()
            .take(20)
            .map(machine_event)
            .collect(),
    }
}

/// Each interface served, with the listeners that reach it.
fn interface_views(services: &Services) -> Vec<InterfaceView> {
    services
        .interfaces
        .as_ref()
        .map(|i| i.current())
        .unwrap_or_default()
        .into_iter()
        .map(|interface| {
            let reached = services
                .listeners()
                .iter()
                .filter_map(|l| {
                    let ip = match l.address.ip() {
                        std::net::IpAddr::V4(ip) => ip,
                        std::net::IpAddr::V6(_) => return None,
                    };
                    let serves = ip.is_unspecified() || interface.addresses.contains(&ip);
                    serves.then(|| {
                        let shown = if ip.is_unspecified() {
                            interface.addresses.first().copied().unwrap_or(ip)
                        } else {
                            ip
                        };
                        listener(l, format!("{shown}:{}", l.address.port()))
                    })
                })
                .collect();
            InterfaceView {
                name: interface.name,
                addresses: interface.addresses.iter().map(|a| a.to_string()).collect(),
                up: interface.up,
                listeners: reached,
            }
        })
        .collect()
}

type Counters = BTreeMap<&'static str, BTreeMap<&'static str, u64>>;

/// Every counter by protocol, for the API.
fn counter_values(services: &Services) -> Counters {
    let mut counters = BTreeMap::new();
    if let Some(d) = &services.dhcp {
        counters.insert(
            "dhcp",
            BTreeMap::from([
                ("requests", d.requests.load(Ordering::Relaxed)),
                ("offers", d.offers.load(Ordering::Relaxed)),
                ("acks", d.acks.load(Ordering::Relaxed)),
                ("declined", d.declined.load(Ordering::Relaxed)),
                ("malformed", d.malformed.load(Ordering::Relaxed)),
                ("competing", d.competing.load(Ordering::Relaxed)),
            ]),
        );
    }
    if let Some(t) = &services.tftp {
        counters.insert(
            "tftp",
            BTreeMap::from([
                ("started", t.started.load(Ordering::Relaxed)),
                ("completed", t.completed.load(Ordering::Relaxed)),
                ("failed", t.failed.load(Ordering::Relaxed)),
                ("refused", t.refused.load(Ordering::Relaxed)),
                ("bytes", t.bytes.load(Ordering::Relaxed)),
                ("retransmits", t.retransmits.load(Ordering::Relaxed)),
                ("active", t.active.load(Ordering::Relaxed)),
            ]),
        );
    }
    counters.insert(
        "http",
        BTreeMap::from([
            ("scripts", services.http.scripts.load(Ordering::Relaxed)),
            ("files", services.http.files.load(Ordering::Relaxed)),
        ]),
    );
    counters
}

/// The counters the dashboard shows, labelled, by protocol.
fn counter_groups(counters: &Counters) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let shown =
        |area: &str, names: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
            names
                .iter()
                .filter_map(|(key, label)| {
                    let value = *counters.get(area)?.get(key)?;
                    let text = if *key == "bytes" {
                        bytes(value)
                    } else {
                        value.to_string()
                    };
                    Some((*label, text))
                })
                .collect()
        };
    vec![
        (
            "ProxyDHCP",
            shown(
                "dhcp",
                &[
                    ("requests", "requests"),
                    ("offers", "offers"),
                    ("acks", "acks (port 4011)"),
                    ("declined", "not answered"),
                    ("malformed", "malformed"),
                    ("competing", "competing offers"),
                ],
            ),
        ),
        (
            "TFTP",
            shown(
                "tftp",
                &[
                    ("active", "running now"),
                    ("completed", "completed"),
                    ("failed", "failed"),
                    ("refused", "refused"),
                    ("retransmits", "retransmissions"),
                    ("bytes", "sent and received"),
                ],
            ),
        ),
        (
            "HTTP",
            shown(
                "http",
                &[
                    ("scripts", "scripts served"),
                    ("files", "image files served"),
                ],
            ),
        ),
    ]
}

/// The transfers running now.
fn transfer_views(services: &Services) -> Vec<TransferView> {
    services
        .transfers
        .as_ref()
        .map(|t| t.list())
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let done = t.bytes.load(Ordering::Relaxed);
            TransferView {
                client: t.client.to_string(),
                file: t.file.clone(),
                direction: if t.write { "upload" } else { "download" },
                bytes: done,
                size: t.size,
                percent: t
                    .size
                    .filter(|&s| s > 0)
                    .map(|s| (done.min(s) * 100 / s) as u8),
                elapsed_ms: SystemTime::now()
                    .duration_since(t.started)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                bytes_text: bytes(done),
                size_text: t.size.map(bytes).unwrap_or_default(),
            }
        })
        .collect()
}

/// A machine record as the API and forms accept it.
pub(crate) fn machine_record(
    name: &str,
    profile: Option<&str>,
    once: Option<&str>,
) -> Result<Machine, String> {
    let parse = |field: &str, value: Option<&str>| -> Result<Option<Name>, String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<Name>()
                .map(Some)
                .map_err(|e| format!("{field}: {e}")),
        }
    };
    Ok(Machine {
        name: name.trim().to_string(),
        profile: parse("profile", profile)?,
        once: parse("once", once)?,
    })
}
