//! iPXE scripts. Every URL in them is absolute and names bootherd's own address: inside iPXE
//! `${next-server}` is whatever the LAN's DHCP server put there (usually the router), not us.

use std::fmt::Write as _;

use bootherd_store::{Name, Profile, State};

/// Where scripts point clients: bootherd's HTTP address as the client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase(pub String);

impl HttpBase {
    pub fn image_file(&self, image: &Name, file: &str) -> String {
        format!("{}/images/{image}/{file}", self.0)
    }
}

/// iPXE command-line words must not contain characters the script parser treats specially.
fn ipxe_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '$' | '{' | '}' | '#' | '"' | '\'' | '\\') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The commands that boot one profile (no header).
pub fn profile_commands(out: &mut String, name: &Name, profile: &Profile, base: &HttpBase) {
    let _ = writeln!(out, "echo bootherd: booting {name}");
    match profile {
        Profile::Linux {
            image,
            kernel,
            initrd,
            cmdline,
            ..
        } => {
            // Under UEFI, iPXE's EFI stub loads initrds named on the command line (initrd=NAME);
            // under BIOS the extra words are harmless.
            let mut args = String::new();
            for file in initrd {
                let _ = write!(args, " initrd={file}");
            }
            if !cmdline.is_empty() {
                let _ = write!(args, " {}", ipxe_text(cmdline));
            }
            let _ = writeln!(
                out,
                "kernel {}{args} || goto failed",
                base.image_file(image, kernel)
            );
            for file in initrd {
                let _ = writeln!(
                    out,
                    "initrd {} || goto failed",
                    base.image_file(image, file)
                );
            }
            let _ = writeln!(out, "boot || goto failed");
        }
        Profile::LocalDisk { .. } => {
            // Returning to the firmware makes it try the next boot device: the local disk.
            let _ = writeln!(out, "exit");
        }
        Profile::Chain { url, .. } => {
            let _ = writeln!(out, "chain --autofree {} || goto failed", ipxe_text(url));
        }
        Profile::Bootfile { image, files, .. } => {
            let file = files
                .get("efi-x64")
                .or_else(|| files.get("bios"))
                .or_else(|| files.values().next());
            match file {
                Some(file) => {
                    let _ = writeln!(
                        out,
                        "chain --autofree {} || goto failed",
                        base.image_file(image, file)
                    );
                }
                None => {
                    let _ = writeln!(out, "goto failed");
                }
            }
        }
        // Menus are rendered by `menu`; a menu profile never reaches here.
        Profile::Menu { .. } => {
            let _ = writeln!(out, "goto failed");
        }
    }
}

fn header(out: &mut String) {
    out.push_str("#!ipxe\n");
}

fn footer(out: &mut String) {
    out.push_str(":failed\necho bootherd: boot failed; dropping to the iPXE shell in 10 seconds (type exit to boot from disk)\nsleep 10\nshell\n");
}

/// A script that boots one profile.
pub fn single(name: &Name, profile: &Profile, base: &HttpBase) -> String {
    let mut out = String::new();
    header(&mut out);
    profile_commands(&mut out, name, profile, base);
    footer(&mut out);
    out
}

/// A menu: the given entries (each followed by its own commands), then local disk, reboot and
/// the iPXE shell. `default` is selected after `timeout` seconds.
pub fn menu(
    title: &str,
    entries: &[(&Name, &Profile)],
    default: Option<&str>,
    timeout: Option<u32>,
    base: &HttpBase,
) -> String {
    let mut out = String::new();
    header(&mut out);
    let _ = writeln!(out, ":menu");
    let _ = writeln!(
        out,
        "menu {}",
        ipxe_text(if title.is_empty() { "bootherd" } else { title })
    );
    for (name, profile) in entries {
        let label = if profile.description().is_empty() {
            name.to_string()
        } else {
            format!("{name} - {}", ipxe_text(profile.description()))
        };
        let _ = writeln!(out, "item p-{name} {label}");
    }
    let _ = writeln!(out, "item --gap");
    let _ = writeln!(out, "item local Boot from local disk");
    let _ = writeln!(out, "item reboot Reboot");
    let _ = writeln!(out, "item shell iPXE shell");
    let default_label = match default {
        Some(name) if entries.iter().any(|(n, _)| n.as_str() == name) => format!("p-{name}"),
        _ => "local".to_string(),
    };
    let timeout = timeout
        .map(|s| format!(" --timeout {}", u64::from(s) * 1000))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "choose --default {default_label}{timeout} selected || goto local"
    );
    let _ = writeln!(out, "goto ${{selected}}");
    for (name, profile) in entries {
        let _ = writeln!(out, ":p-{name}");
        profile_commands(&mut out, name, profile, base);
    }
    out.push_str(":local\necho bootherd: booting from local disk\nexit\n:reboot\nreboot\n:shell\nshell\ngoto menu\n");
    footer(&mut out);
    out
}

/// The entries of a menu profile, in order, skipping any that are missing.
pub fn menu_entries<'a>(state: &'a State, entries: &'a [Name]) -> Vec<(&'a Name, &'a Profile)> {
    entries
        .iter()
        .filter_map(|name| state.profiles.get_key_value(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    #[test]
    fn linux_script_has_absolute_urls_and_initrd_names() {
        let profile = Profile::Linux {
            image: name("debian"),
            kernel: "linux".into(),
            initrd: vec!["initrd.gz".into()],
            cmdline: "console=ttyS0 marker=${evil}".into(),
            description: String::new(),
        };
        let script = single(
            &name("inst"),
            &profile,
            &HttpBase("http://10.0.0.2:8080".into()),
        );
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains("kernel http://10.0.0.2:8080/images/debian/linux initrd=initrd.gz console=ttyS0 marker=__evil_ || goto failed"), "{script}");
        assert!(script.contains("initrd http://10.0.0.2:8080/images/debian/initrd.gz"));
        assert!(script.contains("boot || goto failed"));
    }

    #[test]
    fn menu_defaults_to_local_disk_and_lists_every_entry() {
        let disk = Profile::LocalDisk {
            description: String::new(),
        };
        let chain = Profile::Chain {
            url: "https://boot.netboot.xyz".into(),
            description: "netboot.xyz".into(),
        };
        let (a, b) = (name("disk"), name("netbootxyz"));
        let script = menu(
            "Boot",
            &[(&a, &disk), (&b, &chain)],
            None,
            Some(10),
            &HttpBase("http://h".into()),
        );
        assert!(script.contains("item p-netbootxyz netbootxyz - netboot.xyz"));
        assert!(script.contains("choose --default local --timeout 10000 selected"));
        assert!(script.contains(":p-netbootxyz\necho bootherd: booting netbootxyz\nchain --autofree https://boot.netboot.xyz"));
        let script = menu(
            "Boot",
            &[(&a, &disk)],
            Some("disk"),
            None,
            &HttpBase("http://h".into()),
        );
        assert!(script.contains("choose --default p-disk selected"));
    }
}
