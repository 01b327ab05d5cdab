//! A machine fetching its iPXE script. Rendering is pure (`render`: what the state says, as
//! text); using up a boot-once profile is an explicit step of `script`, taken only for the
//! machine itself, and so is recording the fetch on its timeline.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use bootherd_store::{Mac, Name, Profile, State};
use tracing::warn;

use crate::script::{self, HttpBase};
use crate::timeline::Step;
use crate::{Boot, Decision};

/// What a rendered script boots, for the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Served {
    Profile {
        name: Name,
        once: bool,
        kind: &'static str,
    },
    DefaultMenu {
        profiles: usize,
    },
    Ignored,
}

impl Boot {
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
        let state = self.store.state();
        let decision = Self::decide_with(&state, mac, is_the_machine);
        let (script, served) = self.render(&state, &decision, base);
        drop(state);
        if let Served::Profile {
            name, once: true, ..
        } = &served
        {
            self.use_up_boot_once(mac, name);
        }
        self.timeline
            .record(*mac, Step::ScriptFetched, served.describe());
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
        let state = self.store.state();
        self.render(&state, &Self::decide_with(&state, mac, true), base)
            .0
    }

    /// The script `decision` gives, and what it boots. Changes nothing.
    fn render(&self, state: &State, decision: &Decision, base: &HttpBase) -> (String, Served) {
        match decision {
            Decision::Profile {
                name,
                profile,
                once,
            } => {
                let text = match profile {
                    Profile::Menu {
                        title,
                        entries,
                        default,
                        timeout,
                        ..
                    } => script::menu(
                        title,
                        &script::menu_entries(state, entries),
                        default.as_ref().map(Name::as_str),
                        *timeout,
                        base,
                    ),
                    _ => script::single(name, profile, base),
                };
                let served = Served::Profile {
                    name: name.clone(),
                    once: *once,
                    kind: profile.kind(),
                };
                (text, served)
            }
            Decision::DefaultMenu => {
                let images = self.store.image_map().unwrap_or_default();
                let ready: Vec<(&Name, &Profile)> = state
                    .profiles
                    .iter()
                    .filter(|(name, profile)| {
                        !matches!(profile, Profile::Menu { .. })
                            && bootherd_store::validate::readiness(name, profile, state, &images)
                                .is_empty()
                    })
                    .collect();
                let text = script::menu(
                    "bootherd",
                    &ready,
                    None,
                    Some(state.defaults.menu_timeout),
                    base,
                );
                (text, Served::DefaultMenu {
                    profiles: ready.len(),
                })
            }
            Decision::Ignore => (
                "#!ipxe\necho bootherd: this machine has no profile and unknown machines are ignored\nexit\n".to_string(),
                Served::Ignored,
            ),
        }
    }

    /// Clears `mac`'s boot-once profile, if it is still `used` (an edit meanwhile wins), and
    /// says so on its timeline.
    fn use_up_boot_once(&self, mac: &Mac, used: &Name) {
        let mac = *mac;
        let cleared = self.store.update(|state| {
            if let Some(machine) = state.machines.get_mut(&mac) {
                if machine.once.as_ref() == Some(used) {
                    machine.once = None;
                }
            }
            Ok(())
        });
        match cleared {
            Ok(()) => self.timeline.record(
                mac,
                Step::BootOnceUsed,
                format!("'{used}' booted once; next boot uses the assigned profile"),
            ),
            Err(e) => warn!(%mac, error = %e, "could not clear the boot-once profile"),
        }
    }
}

impl Served {
    fn describe(&self) -> String {
        match self {
            Served::Profile { name, kind, .. } => format!("profile '{name}' ({kind})"),
            Served::DefaultMenu { profiles } => format!("default menu ({profiles} profiles)"),
            Served::Ignored => "machine is ignored by the defaults: told to exit".to_string(),
        }
    }
}
