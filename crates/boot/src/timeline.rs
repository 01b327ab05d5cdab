//! Each machine's recent boot steps, newest last, bounded so a machine that boots in a loop
//! cannot grow memory without limit. Kept in memory: it explains the current boot, not history.
//! [`diagnose`] turns a machine's steps into a plain-language account of where a boot stopped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bootherd_store::Mac;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::recent::RecentMap;

/// Steps kept per machine.
pub const PER_MACHINE: usize = 200;
/// Machines kept. A flood of DHCP requests with made-up MAC addresses must not grow memory
/// without bound: past this, the machine heard from least recently is forgotten.
pub const MACHINES: usize = 4096;
/// Longest detail kept, in bytes: details carry what LAN hosts sent (a Range header, a file
/// name), which must not decide how much memory a step takes.
pub const DETAIL_MAX: usize = 256;
/// Steps kept across all machines: with [`DETAIL_MAX`] that bounds every timeline together to
/// about 20 MiB (65,536 steps of at most 256 + 48 bytes), whatever a flood of made-up MACs does.
pub const TOTAL_EVENTS: usize = 65_536;
/// Steps of all machines kept for the dashboard's "recent boots".
pub const RECENT: usize = 100;

/// One step of a network boot, in the order firmware takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// A DHCP DISCOVER/REQUEST on port 67 or 4011 reached us.
    DhcpRequest,
    /// We answered with a boot file.
    OfferSent,
    /// We chose not to answer (the detail says why).
    NotAnswered,
    /// Another server answered the same machine with boot information.
    CompetingServer,
    /// A TFTP transfer (bootloader or image file) completed.
    TftpTransfer,
    /// A TFTP transfer started but did not complete.
    TftpFailed,
    /// A TFTP request was refused (missing file, bad request).
    TftpRefused,
    /// iPXE fetched its script.
    ScriptFetched,
    /// The boot-once profile was used and cleared.
    BootOnceUsed,
    /// A script was fetched from an address that is not the machine's own, so its boot-once
    /// profile was kept (the detail says from where).
    BootOnceKept,
    /// A file of an image (kernel, initrd) was fetched over HTTP.
    FileFetched,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::DhcpRequest => "DHCP request",
            Step::OfferSent => "boot offer sent",
            Step::NotAnswered => "not answered",
            Step::CompetingServer => "competing server",
            Step::TftpTransfer => "TFTP transfer",
            Step::TftpFailed => "TFTP transfer failed",
            Step::TftpRefused => "TFTP request refused",
            Step::ScriptFetched => "script fetched",
            Step::BootOnceUsed => "boot-once used",
            Step::BootOnceKept => "boot-once kept",
            Step::FileFetched => "file fetched",
        }
    }

    /// Whether the step means something went wrong.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Step::NotAnswered
                | Step::CompetingServer
                | Step::TftpFailed
                | Step::TftpRefused
                | Step::BootOnceKept
        )
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    pub at: SystemTime,
    pub step: Step,
    pub detail: String,
}

/// A step of some machine, as the dashboard and live updates see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEvent {
    pub mac: Mac,
    pub event: TimelineEvent,
}

/// Every machine's steps, and how many there are in all.
#[derive(Debug)]
struct Machines {
    steps: RecentMap<Mac, VecDeque<TimelineEvent>>,
    total: usize,
}

/// `detail` cut to [`DETAIL_MAX`] bytes at a character boundary, marked with an ellipsis.
fn bounded(detail: String) -> String {
    clip(detail, DETAIL_MAX)
}

/// `text` cut to at most `max` bytes at a character boundary, marked with an ellipsis.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text.shrink_to_fit();
    text
}

#[derive(Debug)]
pub struct Timeline {
    machines: Mutex<Machines>,
    recent: Mutex<VecDeque<MachineEvent>>,
    live: broadcast::Sender<MachineEvent>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            machines: Mutex::new(Machines {
                steps: RecentMap::new(MACHINES),
                total: 0,
            }),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            // Subscribers that fall this far behind miss steps (and are told so): a slow
            // browser must not hold memory for a boot storm's worth of events.
            live: broadcast::channel(256).0,
        }
    }
}

impl Timeline {
    pub fn record(&self, mac: Mac, step: Step, detail: String) {
        let event = TimelineEvent {
            at: SystemTime::now(),
            step,
            detail: bounded(detail),
        };
        {
            let mut machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
            let Machines { steps, total } = &mut *machines;
            let events = steps.touch_evicting(mac, |forgotten| *total -= forgotten.len());
            if events.len() == PER_MACHINE {
                events.pop_front();
                *total -= 1;
            }
            events.push_back(event.clone());
            *total += 1;
            // Over the budget for all machines: the machine heard from least recently gives
            // up its oldest steps first (the one just touched is the most recent).
            while *total > TOTAL_EVENTS {
                let Some(oldest) = steps.oldest_mut() else {
                    break;
                };
                if oldest.pop_front().is_some() {
                    *total -= 1;
                }
                if oldest.is_empty() {
                    steps.pop_oldest();
                }
            }
        }
        let event = MachineEvent { mac, event };
        // No subscriber is the normal case when nobody has the UI open: no copy then.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event.clone());
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event);
    }

    pub fn events(&self, mac: &Mac) -> Vec<TimelineEvent> {
        let machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        machines
            .steps
            .get(mac)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The latest steps of all machines, newest first.
    pub fn recent(&self) -> Vec<MachineEvent> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    /// Steps kept across all machines, and the bytes of their details.
    pub fn footprint(&self) -> (usize, usize) {
        let machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        machines
            .steps
            .iter()
            .fold((0, 0), |(events, bytes), (_, steps)| {
                (
                    events + steps.len(),
                    bytes + steps.iter().map(|e| e.detail.len()).sum::<usize>(),
                )
            })
    }

    /// Every step recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineEvent> {
        self.live.subscribe()
    }
}

/// How a machine's last boot attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing from this machine has reached bootherd (since it started).
    NeverSeen,
    /// The boot got as far as bootherd can see: the kernel or the hand-over was served.
    Booted,
    /// Steps are still arriving; too early to call.
    InProgress,
    /// The boot stopped before the end.
    Stopped,
}

/// Where a machine's last boot attempt stopped, and what usually causes that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    /// What happened, in one sentence.
    pub summary: String,
    /// What usually causes it and what to check; empty when all went well.
    pub advice: String,
}

/// How long a boot may go quiet between two steps before it counts as stopped. Firmware
/// retries DHCP for about a minute and TFTP for tens of seconds before giving up.
pub const QUIET: Duration = Duration::from_secs(90);

/// Reads the steps of the machine's last boot attempt (from its last DHCP request that
/// followed other steps) and says where it stopped.
pub fn diagnose(events: &[TimelineEvent], now: SystemTime) -> Diagnosis {
    let Some(last) = events.last() else {
        return Diagnosis {
            verdict: Verdict::NeverSeen,
            summary: "No DHCP request from this machine has reached bootherd.".into(),
            advice: "Check that the machine is set to boot from the network (first in the boot order, PXE/network stack enabled in the firmware), that it is on a network bootherd listens on (see the dashboard's interfaces), and that a router between them relays DHCP to bootherd's address (ip helper-address / dhcp-relay).".into(),
        };
    };
    let attempt = Attempt {
        steps: &events[attempt_start(events)..],
        quiet: now.duration_since(last.at).unwrap_or_default() >= QUIET,
    };
    let competing = attempt
        .last_of(Step::CompetingServer)
        .map(|e| format!(" Another server answered this machine too ({}); firmware often takes the first or the most complete offer.", e.detail))
        .unwrap_or_default();
    attempt
        .fetched()
        .or_else(|| attempt.tftp(&competing))
        .unwrap_or_else(|| attempt.before_tftp(&competing))
}

/// Where the last attempt starts. One attempt holds several DHCP exchanges (the firmware's,
/// then iPXE's after the bootloader transfer), so only a request after a script or file fetch
/// starts a new one.
fn attempt_start(events: &[TimelineEvent]) -> usize {
    events
        .iter()
        .rposition(|e| e.step == Step::DhcpRequest)
        .map(|last_request| {
            let mut start = last_request;
            while start > 0 {
                let previous = &events[start - 1];
                if matches!(
                    previous.step,
                    Step::ScriptFetched | Step::FileFetched | Step::BootOnceUsed
                ) {
                    break;
                }
                start -= 1;
            }
            start
        })
        .unwrap_or(0)
}

/// The steps of one boot attempt, and whether the machine has gone quiet.
struct Attempt<'a> {
    steps: &'a [TimelineEvent],
    quiet: bool,
}

impl Attempt<'_> {
    fn has(&self, step: Step) -> bool {
        self.steps.iter().any(|e| e.step == step)
    }

    fn last_of(&self, step: Step) -> Option<&TimelineEvent> {
        self.steps.iter().rev().find(|e| e.step == step)
    }

    /// Not over yet; once the machine has gone quiet, stopped, with advice.
    fn pending(&self, summary: &str, advice: &str) -> Diagnosis {
        Diagnosis {
            verdict: if self.quiet {
                Verdict::Stopped
            } else {
                Verdict::InProgress
            },
            summary: summary.to_string(),
            advice: if self.quiet {
                advice.to_string()
            } else {
                String::new()
            },
        }
    }

    /// The machine reached HTTP: it fetched files, or its script.
    fn fetched(&self) -> Option<Diagnosis> {
        if let Some(file) = self.last_of(Step::FileFetched) {
            return Some(Diagnosis {
                verdict: Verdict::Booted,
                summary: format!(
                    "The machine fetched its boot files over HTTP (last: {}).",
                    file.detail
                ),
                advice: String::new(),
            });
        }
        if let Some(script) = self.last_of(Step::ScriptFetched) {
            let detail = &script.detail;
            let hands_over = detail.ends_with("(local-disk)")
                || detail.ends_with("(chain)")
                || detail.contains("told to exit");
            if hands_over {
                return Some(Diagnosis {
                    verdict: Verdict::Booted,
                    summary: format!("iPXE fetched its script and was handed over: {detail}."),
                    advice: String::new(),
                });
            }
            if detail.contains("menu") {
                return Some(self.pending(
                    &format!("iPXE showed the boot menu ({detail}); no kernel was fetched yet."),
                    "Someone may have picked local disk or the menu is waiting for a choice; an entry that fails right away usually has a kernel the machine cannot reach over HTTP (check that the HTTP port is open from the machine's network).",
                ));
            }
            return Some(self.pending(
                &format!(
                    "iPXE fetched its script ({detail}) but no kernel or initrd has been fetched."
                ),
                "The HTTP port (default 8080) is probably blocked between the machine and bootherd, or the kernel download failed in iPXE (look at the machine's console for an iPXE error code and search it at ipxe.org/err).",
            ));
        }
        None
    }

    /// The bootloader over TFTP: refused, failed, or done without a script fetched after.
    fn tftp(&self, competing: &str) -> Option<Diagnosis> {
        if let Some(refused) = self.last_of(Step::TftpRefused) {
            return Some(Diagnosis {
                verdict: Verdict::Stopped,
                summary: format!("The machine asked for a file over TFTP and it was refused: {}.", refused.detail),
                advice: "The firmware asked for a file bootherd does not serve. If it is not the file bootherd offered, another DHCP server is handing out its own next-server and boot file: remove its PXE options (dhcp-boot, option 66/67) or let bootherd answer alone.".to_string() + competing,
            });
        }
        if let Some(failed) = self.last_of(Step::TftpFailed) {
            return Some(Diagnosis {
                verdict: Verdict::Stopped,
                summary: format!("The bootloader transfer started but did not finish: {}.", failed.detail),
                advice: "A timeout after the first packet is the classic firewall/NAT problem: replies come from a new port that the firewall drops. Run with --single-port (all TFTP on port 69), or pick a transfer port range with --port-range LO:HI and open it in the firewall. On a lossy link, --max-retries N gives clients more chances.".into(),
            });
        }
        if self.has(Step::TftpTransfer) {
            return Some(self.pending(
                "The bootloader was transferred, but iPXE has not fetched its script.",
                "iPXE starts its own DHCP after loading: it must get an answer from bootherd again (ProxyDHCP on port 67 must be reachable, and the LAN's DHCP server must still hand out an address) and then reach bootherd's HTTP port. A firewall on the HTTP port or a DHCP pool without free addresses are the usual causes.",
            ));
        }
        None
    }

    /// Nothing reached TFTP or HTTP: what DHCP got.
    fn before_tftp(&self, competing: &str) -> Diagnosis {
        if let Some(offer) = self.last_of(Step::OfferSent) {
            let over_http = offer.detail.contains("http://");
            if over_http {
                return self.pending(
                    &format!(
                        "bootherd offered a boot script ({}) but it was never fetched.",
                        offer.detail
                    ),
                    &format!(
                        "The machine could not reach bootherd's HTTP port: check the firewall between them, and that the address in the offer is reachable from the machine's network.{competing}"
                    ),
                );
            }
            return self.pending(
                &format!(
                    "bootherd sent a boot offer ({}) but the bootloader was never requested.",
                    offer.detail
                ),
                &format!(
                    "Usually a firewall dropping TFTP (UDP 69) between the machine and bootherd, or a competing PXE server whose offer the firmware took instead. UEFI firmware also asks on port 4011: that port must be open too.{competing}"
                ),
            );
        }
        if let Some(declined) = self.last_of(Step::NotAnswered) {
            return Diagnosis {
                verdict: Verdict::Stopped,
                summary: format!("bootherd did not answer this machine: {}.", declined.detail),
                advice: "Fix what the reason names: assign a ready profile, add the bootloader the architecture needs, or change the defaults for unknown machines.".into(),
            };
        }
        self.pending(
            "The machine sent DHCP requests but bootherd has not answered yet.",
            &format!(
                "The request may not have been a PXE request bootherd can answer yet (firmware retries), or the reply was lost.{competing}"
            ),
        )
    }
}

#[cfg(test)]
mod tests;
