//! bootherd-boot: the brain. Decides what each machine boots, from the store, and answers the
//! three protocols from that one decision: the DHCP boot offer ([`BootPolicy`]), the files TFTP
//! serves ([`FileSource`]) and the iPXE script HTTP serves ([`Boot::script`]). Because all three
//! come from the same state, they cannot disagree.
//!
//! It does no networking and no file serving itself.

mod recent;
pub mod script;
pub mod timeline;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bootherd_files::DirSource;
use bootherd_pxe::{ArchKey, BootOffer, BootPolicy, EventSink, Firmware, PxeEvent, PxeRequest};
use bootherd_store::{Mac, Name, Profile, State, Store, UnknownMachines};
use bootherd_tftp::{
    FileContent, FileSource, SourceError, TftpPath, TransferObserver, TransferReport,
};
use recent::RecentMap;
use script::HttpBase;
use timeline::{Step, Timeline};
use tracing::warn;

/// Bootloader file names to try for an architecture, in order: the names of Debian's `ipxe`
/// package (/usr/lib/ipxe) and the usual names for the architectures Debian does not build. An
/// HTTP Boot client gets its TFTP sibling's. The one loader table: DHCP offers from it and
/// `bootherd check` checks it.
pub fn bootloader_candidates(arch: ArchKey) -> &'static [&'static str] {
    use ArchKey as K;
    match arch.without_http() {
        K::Bios => &["undionly.kpxe", "undionly.kkpxe", "ipxe.pxe"],
        K::EfiX64 => &["ipxe.efi", "snponly.efi"],
        K::EfiIa32 => &["i386/ipxe.efi", "ipxe-i386.efi"],
        K::EfiArm64 => &["arm64/ipxe.efi", "ipxe-arm64.efi", "snp-arm64.efi"],
        K::EfiArm32 => &["arm32/ipxe.efi", "ipxe-arm32.efi"],
        K::EfiRiscV64 => &["riscv64/ipxe.efi", "ipxe-riscv64.efi"],
        K::EfiLoongArch64 => &["loong64/ipxe.efi", "ipxe-loong64.efi"],
        // No iPXE build exists for these; only a bootfile profile can boot them.
        K::EfiOther | K::UBootArm32 | K::UBootArm64 | K::RpiBoot | K::OpenFirmware | K::Other => {
            &[]
        }
        // `without_http` never returns an HTTP variant.
        K::BiosHttp
        | K::EfiIa32Http
        | K::EfiX64Http
        | K::EfiArm32Http
        | K::EfiArm64Http
        | K::EfiRiscV64Http
        | K::EfiLoongArch64Http => &[],
    }
}

/// Architectures most machines are, whose missing bootloader `bootherd check` reports as a
/// problem; for the others it is a note.
pub const COMMON_ARCHES: [ArchKey; 2] = [ArchKey::Bios, ArchKey::EfiX64];

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

    /// The iPXE script for `mac`, with URLs on `base`, fetched from `requester`. A boot-once
    /// profile is used up only by the machine itself: a request from the address its DHCP
    /// exchange took. Anyone else (another host, or any host before the exchange was seen)
    /// gets the assigned profile's script and the boot-once profile waits, so a stray fetch
    /// can neither use it up nor start an installer somewhere it was not meant for.
    pub fn script(&self, mac: &Mac, base: &HttpBase, requester: Option<Ipv4Addr>) -> String {
        let known = self.seen(mac).and_then(|s| s.address);
        let is_the_machine = requester.is_some() && requester == known;
        let has_once = self
            .store
            .state()
            .machines
            .get(mac)
            .is_some_and(|m| m.once.is_some());
        if has_once && !is_the_machine {
            let asked_from =
                requester.map_or("an unknown address".to_string(), |ip| ip.to_string());
            let expected = known.map_or(
                "no DHCP exchange of this machine has been seen yet".to_string(),
                |ip| format!("its DHCP exchange took {ip}"),
            );
            self.timeline.record(
                *mac,
                Step::BootOnceKept,
                format!(
                    "boot-once profile kept: the script was fetched from {asked_from}, and {expected}; only the machine itself uses it up"
                ),
            );
            warn!(%mac, requester = %asked_from, known = ?known, "boot-once profile not used: the script request did not come from the machine's own address");
        }
        let script = self.render_script(
            mac,
            base,
            Purpose::Boot {
                use_once: is_the_machine,
            },
        );
        if let Some(from) = requester {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let entry = seen.touch(*mac);
            entry.script_from = Some(from);
            entry.last_seen = Some(SystemTime::now());
        }
        script
    }

    /// The script `mac` would get now, for people to look at (and for HEAD): uses up nothing
    /// and is not a boot step.
    pub fn preview_script(&self, mac: &Mac, base: &HttpBase) -> String {
        self.render_script(mac, base, Purpose::Preview)
    }

    fn render_script(&self, mac: &Mac, base: &HttpBase, purpose: Purpose) -> String {
        let state = self.store.state();
        let (booting, use_once) = match purpose {
            Purpose::Preview => (false, true),
            Purpose::Boot { use_once } => (true, use_once),
        };
        match Self::decide_with(&state, mac, use_once) {
            Decision::Profile {
                name,
                profile,
                once,
            } => {
                let text = match &profile {
                    Profile::Menu {
                        title,
                        entries,
                        default,
                        timeout,
                        ..
                    } => script::menu(
                        title,
                        &script::menu_entries(&state, entries),
                        default.as_ref().map(Name::as_str),
                        *timeout,
                        base,
                    ),
                    _ => script::single(&name, &profile, base),
                };
                if !booting {
                    return text;
                }
                if once {
                    let mac = *mac;
                    let used = name.clone();
                    let cleared = self.store.update(|state| {
                        if let Some(machine) = state.machines.get_mut(&mac) {
                            if machine.once.as_ref() == Some(&used) {
                                machine.once = None;
                            }
                        }
                        Ok(())
                    });
                    match cleared {
                        Ok(()) => self.timeline.record(
                            mac,
                            Step::BootOnceUsed,
                            format!("'{name}' booted once; next boot uses the assigned profile"),
                        ),
                        Err(e) => warn!(%mac, error = %e, "could not clear the boot-once profile"),
                    }
                }
                self.timeline.record(
                    *mac,
                    Step::ScriptFetched,
                    format!("profile '{name}' ({})", profile.kind()),
                );
                text
            }
            Decision::DefaultMenu => {
                let images = self.store.image_map().unwrap_or_default();
                let ready: Vec<(&Name, &Profile)> = state
                    .profiles
                    .iter()
                    .filter(|(name, profile)| {
                        !matches!(profile, Profile::Menu { .. })
                            && bootherd_store::validate::readiness(name, profile, &state, &images)
                                .is_empty()
                    })
                    .collect();
                if booting {
                    self.timeline.record(
                        *mac,
                        Step::ScriptFetched,
                        format!("default menu ({} profiles)", ready.len()),
                    );
                }
                script::menu(
                    "bootherd",
                    &ready,
                    None,
                    Some(state.defaults.menu_timeout),
                    base,
                )
            }
            Decision::Ignore => {
                if booting {
                    self.timeline.record(
                        *mac,
                        Step::ScriptFetched,
                        "machine is ignored by the defaults: told to exit".to_string(),
                    );
                }
                "#!ipxe\necho bootherd: this machine has no profile and unknown machines are ignored\nexit\n".to_string()
            }
        }
    }

    fn bootloader(&self, arch: ArchKey) -> Option<String> {
        bootloader_candidates(arch)
            .iter()
            .find(|name| TftpPath::parse(name).is_ok_and(|p| self.bootloaders.contains(&p)))
            .map(|name| name.to_string())
    }
}

impl BootPolicy for Boot {
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, String> {
        let mac = mac_of(request.mac);
        let state = self.store.state();
        let decision = Self::decide(&state, &mac);
        if decision == Decision::Ignore {
            return Err("unknown machine, and the defaults say to ignore unknown machines".into());
        }
        let arch = request.arch.key();
        match request.firmware {
            Firmware::Ipxe => Ok(BootOffer::Http {
                url: format!(
                    "{}/boot/{mac}.ipxe",
                    self.http_base(request.arrival.local_ip).0
                ),
            }),
            Firmware::UefiHttp => self
                .bootloader(arch)
                .map(|file| BootOffer::Http {
                    url: format!(
                        "{}/bootloaders/{file}",
                        self.http_base(request.arrival.local_ip).0
                    ),
                })
                .ok_or_else(|| {
                    format!("no iPXE bootloader for {} to send over HTTP", request.arch)
                }),
            Firmware::Pxe => {
                if let Decision::Profile {
                    name,
                    profile: Profile::Bootfile { image, files, .. },
                    ..
                } = &decision
                {
                    let file = files.get(arch.name()).ok_or_else(|| {
                        format!("profile '{name}' has no boot file for {}", request.arch)
                    })?;
                    let path = format!("images/{image}/{file}");
                    return match TftpPath::parse(&path) {
                        Ok(p) if self.contains(&p) => Ok(BootOffer::Tftp { filename: path }),
                        _ => Err(format!(
                            "profile '{name}': '{path}' is not in the image store"
                        )),
                    };
                }
                self.bootloader(arch)
                    .map(|filename| BootOffer::Tftp { filename })
                    .ok_or_else(|| {
                        format!(
                            "no bootloader for {} (looked for {}); install Debian's ipxe package or add one to the bootloader directory",
                            request.arch,
                            bootloader_candidates(arch).join(", ")
                        )
                    })
            }
        }
    }
}

impl Boot {
    /// A file of an image, if its manifest lists it (so neither the manifest nor a
    /// half-imported file is ever served). The one rule for image files, asked by TFTP and HTTP.
    pub fn open_image_file(
        &self,
        image: &str,
        file: &str,
    ) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        let not_found = || SourceError::NotFound {
            path: format!("images/{image}/{file}"),
            area: "image store",
        };
        let image: Name = image.parse().map_err(|_| not_found())?;
        let listed = self
            .store
            .images()
            .get(&image)
            .ok()
            .flatten()
            .is_some_and(|i| i.file(file).is_some());
        if !listed {
            return Err(not_found());
        }
        let inner = TftpPath::parse(&format!("{image}/{file}")).map_err(|_| not_found())?;
        self.images.open(&inner)
    }

    /// A file of the bootloader directory, by the same rule over TFTP and HTTP.
    pub fn open_bootloader(
        &self,
        path: &TftpPath,
    ) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        self.bootloaders.open(path)
    }
}

/// Why a script is rendered.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// For a person to look at: shows what the machine would boot, changes nothing.
    Preview,
    /// For the machine booting: a boot step, and the boot-once profile is used up when
    /// `use_once` (the request came from the machine itself).
    Boot { use_once: bool },
}

impl FileSource for Boot {
    /// `images/<image>/<file>` serves a file of an image; anything else is a bootloader.
    fn open(&self, path: &TftpPath) -> Result<std::sync::Arc<dyn FileContent>, SourceError> {
        let text = path.as_str();
        if let Some(rest) = text.strip_prefix("images/") {
            let Some((image, file)) = rest.split_once('/') else {
                return Err(SourceError::NotFound {
                    path: text.to_string(),
                    area: "image store",
                });
            };
            return self.open_image_file(image, file);
        }
        self.open_bootloader(path)
    }

    fn contains(&self, path: &TftpPath) -> bool {
        self.open(path).is_ok()
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
                self.timeline.record(mac_of(mac), Step::NotAnswered, reason)
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
