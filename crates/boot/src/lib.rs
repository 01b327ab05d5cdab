//! bootherd-boot: the brain. Decides what each machine boots, from the store, and answers the
//! three protocols from that one decision: the DHCP boot offer
//! ([`BootPolicy`](bootherd_pxe::BootPolicy)), the files TFTP serves ([`FileSource`]) and the
//! iPXE script HTTP serves ([`Boot::script`]). Because all three come from the same state, they
//! cannot disagree.
//!
//! It does no networking and no file serving itself.

mod fetch;
mod files;
mod offer;
mod recent;
pub mod script;
pub mod timeline;

pub use offer::{COMMON_ARCHES, bootloader_candidates};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bootherd_files::DirSource;
use bootherd_pxe::{EventSink, PxeEvent};
use bootherd_store::{Mac, Name, Profile, State, Store, UnknownMachines};
use bootherd_tftp::{FileSource, SourceError, TransferObserver, TransferReport};
use recent::RecentMap;
use script::HttpBase;
use timeline::{Step, Timeline};

/// What the state says a machine boots right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A profile; `once` when it is the machine's boot-once profile.
    Profile {
        name: Name,
        profile: Profile,
        once: bool,
    },
    /// The generated menu of every ready profile.
    DefaultMenu,
    /// No answer.
    Ignore,
}

/// What was last seen of a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub arch: String,
    pub firmware: String,
    pub vendor_class: String,
    pub guid: String,
    /// The address its DHCP exchange took (or the ciaddr it sent): the machine's own, which
    /// alone may use up its boot-once profile.
    pub address: Option<Ipv4Addr>,
    /// Where its script was last fetched from. Anyone may fetch any script, so this only ties
    /// later HTTP and TFTP fetches from there to this machine's timeline when no DHCP exchange
    /// says otherwise (iPXE chained from elsewhere); it never counts for boot-once.
    pub script_from: Option<Ipv4Addr>,
    pub last_seen: Option<SystemTime>,
}

/// Longest vendor class or GUID kept per seen machine (real ones are 32 and 34 characters).
const SEEN_FIELD_MAX: usize = 128;

#[derive(Debug)]
pub struct Boot {
    store: Arc<Store>,
    images: DirSource,
    bootloaders: Arc<dyn FileSource>,
    http_port: u16,
    timeline: Timeline,
    seen: Mutex<RecentMap<Mac, Seen>>,
}

fn mac_of(mac: bootherd_pxe::MacAddr) -> Mac {
    Mac(mac.0)
}

impl Boot {
    pub fn new(
        store: Arc<Store>,
        bootloaders: Arc<dyn FileSource>,
        http_port: u16,
    ) -> Result<Boot, SourceError> {
        let images =
            DirSource::managed(store.images().root()).map_err(|source| SourceError::Io {
                path: store.images().root().display().to_string(),
                source,
            })?;
        Ok(Boot {
            store,
            images,
            bootloaders,
            http_port,
            timeline: Timeline::default(),
            seen: Mutex::new(RecentMap::new(timeline::MACHINES)),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn seen(&self, mac: &Mac) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(mac)
            .cloned()
    }

    /// Every machine heard from recently, most recent first.
    pub fn seen_machines(&self) -> Vec<(Mac, Seen)> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(Mac, Seen)> = seen.iter().map(|(m, s)| (*m, s.clone())).collect();
        all.sort_by_key(|(_, seen)| std::cmp::Reverse(seen.last_seen));
        all
    }

    /// The base URL clients reach bootherd's HTTP server at, through `local_ip`.
    pub fn http_base(&self, local_ip: Ipv4Addr) -> HttpBase {
        if self.http_port == 80 {
            HttpBase(format!("http://{local_ip}"))
        } else {
            HttpBase(format!("http://{local_ip}:{}", self.http_port))
        }
    }

    /// What `mac` boots according to `state`.
    pub fn decide(state: &State, mac: &Mac) -> Decision {
        Self::decide_with(state, mac, true)
    }

    /// [`Boot::decide`], with the boot-once profile considered only when `use_once`.
    fn decide_with(state: &State, mac: &Mac, use_once: bool) -> Decision {
        let machine = state.machines.get(mac);
        let assigned = machine
            .filter(|_| use_once)
            .and_then(|m| m.once.as_ref().map(|p| (p, true)))
            .or_else(|| machine.and_then(|m| m.profile.as_ref().map(|p| (p, false))));
        if let Some((name, once)) = assigned {
            if let Some(profile) = state.profiles.get(name) {
                return Decision::Profile {
                    name: name.clone(),
                    profile: profile.clone(),
                    once,
                };
            }
        }
        match &state.defaults.unknown {
            UnknownMachines::Menu => Decision::DefaultMenu,
            UnknownMachines::Ignore => Decision::Ignore,
            UnknownMachines::Profile(name) => match state.profiles.get(name) {
                Some(profile) => Decision::Profile {
                    name: name.clone(),
                    profile: profile.clone(),
                    once: false,
                },
                None => Decision::DefaultMenu,
            },
        }
    }
}

impl EventSink for Boot {
    fn record(&self, event: PxeEvent) {
        match event {
            PxeEvent::AddressAccepted { mac, address, .. } => {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let entry = seen.touch(mac_of(mac));
                entry.address = Some(address);
                entry.last_seen = Some(SystemTime::now());
            }
            PxeEvent::Request {
                mac,
                port,
                message_type,
                arch,
                firmware,
                vendor_class,
                guid,
                local_ip,
                client_ip,
                ..
            } => {
                let mac = mac_of(mac);
                {
                    let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    let entry = seen.touch(mac);
                    if client_ip.is_some() {
                        entry.address = client_ip;
                    }
                    entry.arch = arch.to_string();
                    entry.firmware = firmware.name().to_string();
                    // What a LAN host sends is kept within a fixed size per machine.
                    entry.vendor_class = timeline::clip(vendor_class, SEEN_FIELD_MAX);
                    entry.guid = timeline::clip(
                        guid.map(|g| g.iter().map(|b| format!("{b:02x}")).collect())
                            .unwrap_or_default(),
                        SEEN_FIELD_MAX,
                    );
                    entry.last_seen = Some(SystemTime::now());
                }
                self.timeline.record(
                    mac,
                    Step::DhcpRequest,
                    format!(
                        "{message_type} on port {} via {local_ip}: {arch}, {}",
                        port.name(),
                        firmware.name()
                    ),
                );
            }
            PxeEvent::Replied {
                mac,
                message_type,
                bootfile,
                destination,
                ..
            } => self.timeline.record(
                mac_of(mac),
                Step::OfferSent,
                format!("{message_type} with boot file '{bootfile}' to {destination}"),
            ),
            PxeEvent::Declined { mac, reason } => {
                self.timeline
                    .record(mac_of(mac), Step::NotAnswered, reason.message)
            }
            PxeEvent::CompetingServer(offer) => self.timeline.record(
                mac_of(offer.client),
                Step::CompetingServer,
                format!(
                    "{} also offered {}",
                    offer.server,
                    offer.bootfile.unwrap_or_else(|| "a PXE answer".into())
                ),
            ),
            _ => {}
        }
    }
}

impl Boot {
    /// The machine last seen at `address`.
    /// The machine at `address`: the one whose DHCP exchange took it, else the one whose script
    /// was last fetched from it.
    pub fn machine_at(&self, address: Ipv4Addr) -> Option<Mac> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let by = |pick: fn(&Seen) -> Option<Ipv4Addr>| {
            seen.iter()
                .filter(|(_, s)| pick(s) == Some(address))
                .max_by_key(|(_, s)| s.last_seen)
                .map(|(mac, _)| *mac)
        };
        by(|s| s.address).or_else(|| by(|s| s.script_from))
    }
}

impl TransferObserver for Boot {
    fn transfer_finished(&self, report: &TransferReport<'_>) {
        let IpAddr::V4(ip) = report.client.ip() else {
            return;
        };
        let Some(mac) = self.machine_at(ip) else {
            return;
        };
        let what = if report.outcome.is_success() {
            Step::TftpTransfer
        } else {
            Step::TftpFailed
        };
        self.timeline.record(
            mac,
            what,
            format!(
                "{}: {} ({} bytes, {} ms)",
                report.file,
                report.outcome,
                report.bytes,
                report.duration.as_millis()
            ),
        );
    }

    fn request_refused(
        &self,
        client: std::net::SocketAddr,
        file: &str,
        refusal: &bootherd_tftp::Refusal,
    ) {
        let IpAddr::V4(ip) = client.ip() else { return };
        if let Some(mac) = self.machine_at(ip) {
            self.timeline.record(
                mac,
                Step::TftpRefused,
                format!("{file}: {}", refusal.message),
            );
        }
    }
}

#[cfg(test)]
mod tests;
