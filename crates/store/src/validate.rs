//! Consistency of the state with itself and with the images: the checks that make the classic
//! "DHCP offers a file TFTP does not have" mismatch impossible. Errors reject a change (or a
//! hand edit, keeping the last good state); readiness problems only mark a profile as not
//! bootable, and such a profile cannot be assigned.

use std::collections::BTreeMap;

use crate::images::Image;
use crate::model::{Name, Profile, State, UnknownMachines};

/// A problem, with where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What it concerns: `profile 'x'`, `machine 52:54:...`, `defaults`.
    pub subject: String,
    /// The field of the profile, machine or defaults it is about, when it is about one
    /// (`entries`, `url`, `files`, `profile`, ...), so a form can show it there.
    pub field: Option<&'static str>,
    pub message: String,
    /// Text to look for in `state.yaml` to find the line (see [`locate`]).
    pub needle: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// Architecture names a `bootfile` profile may use: `bootherd_pxe::ArchKey`'s TFTP names (a
/// test in bootherd-boot keeps the two equal; the store knows no protocol).
pub const ARCH_NAMES: &[&str] = &[
    "bios",
    "efi-ia32",
    "efi-x64",
    "efi-arm32",
    "efi-arm64",
    "efi-riscv64",
    "efi-loongarch64",
    "uboot-arm32",
    "uboot-arm64",
    "rpiboot",
];

/// Why a profile cannot boot right now, or nothing if it can.
pub fn readiness(
    name: &Name,
    profile: &Profile,
    state: &State,
    images: &BTreeMap<Name, Image>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(image_name) = profile.image() {
        match images.get(image_name) {
            None => problems.push(format!(
                "image '{image_name}' does not exist (import it: bootherd image add {image_name} FILE...)"
            )),
            Some(image) => {
                for problem in &image.problems {
                    problems.push(format!("image '{image_name}' failed verification: {problem}"));
                }
                for file in profile.required_files() {
                    if image.file(file).is_none() {
                        problems.push(format!(
                            "image '{image_name}' has no file '{file}' (add it: bootherd image add {image_name} PATH/{file})"
                        ));
                    }
                }
            }
        }
    }
    if let Profile::Menu { entries, .. } = profile {
        for entry in entries {
            if let Some(target) = state.profiles.get(entry) {
                if !readiness(entry, target, state, images).is_empty() && entry != name {
                    problems.push(format!("menu entry '{entry}' is not ready"));
                }
            }
        }
    }
    problems
}

/// What is wrong with one profile on its own terms (its references are checked against
/// `state`).
fn profile_errors(name: &Name, profile: &Profile, state: &State) -> Vec<Problem> {
    let mut problems = Vec::new();
    let subject = format!("profile '{name}'");
    match profile {
        Profile::Menu {
            entries, default, ..
        } => {
            if entries.is_empty() {
                problems.push(Problem {
                    subject: subject.clone(),
                    field: Some("entries"),
                    message: "a menu needs at least one entry".into(),
                    needle: format!("{name}:"),
                });
            }
            for entry in entries {
                match state.profiles.get(entry) {
                    None => problems.push(Problem {
                        subject: subject.clone(),
                        field: Some("entries"),
                        message: format!("menu entry '{entry}' is not a profile (define it, or remove it from the menu)"),
                        needle: entry.to_string(),
                    }),
                    Some(Profile::Menu { .. }) => problems.push(Problem {
                        subject: subject.clone(),
                        field: Some("entries"),
                        message: format!("menu entry '{entry}' is itself a menu; menus cannot be nested"),
                        needle: entry.to_string(),
                    }),
                    Some(_) => {}
                }
            }
            if let Some(default) = default {
                if !entries.contains(default) {
                    problems.push(Problem {
                        subject: subject.clone(),
                        field: Some("default"),
                        message: format!("default '{default}' is not one of the menu's entries"),
                        needle: format!("default: {default}"),
                    });
                }
            }
        }
        Profile::Chain { url, .. } => {
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("tftp://"))
            {
                problems.push(Problem {
                    subject: subject.clone(),
                    field: Some("url"),
                    message: format!(
                        "chain URL {url:?} must start with http://, https:// or tftp://"
                    ),
                    needle: url.clone(),
                });
            }
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(Problem {
                    subject: subject.clone(),
                    field: Some("url"),
                    message: "chain URL contains spaces or control characters".into(),
                    needle: url.clone(),
                });
            }
        }
        Profile::Bootfile { files, .. } => {
            if files.is_empty() {
                problems.push(Problem {
                    subject: subject.clone(),
                    field: Some("files"),
                    message: "a bootfile profile needs at least one architecture: file entry"
                        .into(),
                    needle: format!("{name}:"),
                });
            }
            for arch in files.keys() {
                if !ARCH_NAMES.contains(&arch.as_str()) {
                    problems.push(Problem {
                        subject: subject.clone(),
                        field: Some("files"),
                        message: format!(
                            "unknown architecture '{arch}' (use one of: {})",
                            ARCH_NAMES.join(", ")
                        ),
                        needle: format!("{arch}:"),
                    });
                }
            }
        }
        Profile::Linux { cmdline, .. } => {
            if cmdline.chars().any(|c| c.is_control()) {
                problems.push(Problem {
                    subject: subject.clone(),
                    field: Some("cmdline"),
                    message: "cmdline contains control characters".into(),
                    needle: format!("{name}:"),
                });
            }
        }
        Profile::LocalDisk { .. } => {}
    }
    problems
}

/// Errors that make a state unusable. Empty means the state may be saved and used.
pub fn errors(state: &State) -> Vec<Problem> {
    let mut problems = Vec::new();
    let known = |name: &Name| state.profiles.contains_key(name);
    for (name, profile) in &state.profiles {
        problems.extend(profile_errors(name, profile, state));
    }
    for (mac, machine) in &state.machines {
        for (field, value) in [("profile", &machine.profile), ("once", &machine.once)] {
            if let Some(profile) = value {
                if !known(profile) {
                    problems.push(Problem {
                        subject: format!("machine {mac}"),
                        field: Some(field),
                        message: format!("{field} '{profile}' is not a profile (define it, or assign an existing one)"),
                        needle: format!("{field}: {profile}"),
                    });
                }
            }
        }
    }
    if let UnknownMachines::Profile(profile) = &state.defaults.unknown {
        if !known(profile) {
            problems.push(Problem {
                subject: "defaults".into(),
                field: Some("unknown"),
                message: format!("unknown machines boot '{profile}', which is not a profile"),
                needle: format!("profile: {profile}"),
            });
        }
    }
    problems
}

/// The 1-based line of the first occurrence of `needle` in `text`.
pub fn locate(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|i| i + 1)
}
