//! The domain model as it appears in `state.yaml`: profiles, machines and the defaults for
//! unknown machines. Types parse their input once (names, MAC addresses, URLs), so a value of
//! these types is always well formed; references between them are checked by `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A profile or image name: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit. Names
/// appear in URLs, file names and iPXE scripts, so nothing else is allowed in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = String;

    fn from_str(text: &str) -> Result<Name, String> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if valid {
            Ok(Name(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is not a valid name: use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
            ))
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine's Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    /// Accepts `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` and `aabbccddeeff`, any case.
    fn from_str(text: &str) -> Result<Mac, String> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        let bad = || {
            format!("{text:?} is not a MAC address (expected six hex bytes like 52:54:00:12:34:56)")
        };
        if hex.len() != 12 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

macro_rules! string_serde {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(Name);
string_serde!(Mac);

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Profile {
    /// A kernel and initrds from an image, with a command line.
    Linux {
        image: Name,
        kernel: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        initrd: Vec<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        cmdline: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
    /// A menu of other profiles.
    Menu {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        title: String,
        entries: Vec<Name>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<Name>,
        /// Seconds before the default is booted; none waits forever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u32>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
    /// Boot from the machine's own disk.
    LocalDisk {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
    /// Hand over to another iPXE script, e.g. netboot.xyz.
    Chain {
        url: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
    /// A raw boot file per architecture for loaders that are not iPXE (pxelinux, GRUB), served
    /// from an image's files. Keys are architecture names: `bios`, `efi-x64`, `efi-arm64`, ...
    Bootfile {
        image: Name,
        files: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
    },
}

impl Profile {
    pub fn kind(&self) -> &'static str {
        match self {
            Profile::Linux { .. } => "linux",
            Profile::Menu { .. } => "menu",
            Profile::LocalDisk { .. } => "local-disk",
            Profile::Chain { .. } => "chain",
            Profile::Bootfile { .. } => "bootfile",
        }
    }

    pub fn description(&self) -> &str {
        match self {
            Profile::Linux { description, .. }
            | Profile::Menu { description, .. }
            | Profile::LocalDisk { description }
            | Profile::Chain { description, .. }
            | Profile::Bootfile { description, .. } => description,
        }
    }

    /// The image whose files this profile boots, if any.
    pub fn image(&self) -> Option<&Name> {
        match self {
            Profile::Linux { image, .. } | Profile::Bootfile { image, .. } => Some(image),
            _ => None,
        }
    }

    /// Files of its image that the profile needs.
    pub fn required_files(&self) -> Vec<&str> {
        match self {
            Profile::Linux { kernel, initrd, .. } => std::iter::once(kernel.as_str())
                .chain(initrd.iter().map(String::as_str))
                .collect(),
            Profile::Bootfile { files, .. } => files.values().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// A machine known by its MAC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What it boots; none means the defaults for unknown machines apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Name>,
    /// Booted once, then cleared, after which `profile` applies again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<Name>,
}

/// What machines without a profile get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownMachines {
    /// A menu of every ready profile (plus local disk, reboot and an iPXE shell).
    #[default]
    Menu,
    /// This profile.
    Profile(Name),
    /// No answer at all, so another PXE server on the LAN can serve them.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub unknown: UnknownMachines,
    /// Seconds the generated menu waits before booting its default (local disk).
    #[serde(default = "default_menu_timeout")]
    pub menu_timeout: u32,
}

fn default_menu_timeout() -> u32 {
    10
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            unknown: UnknownMachines::Menu,
            menu_timeout: default_menu_timeout(),
        }
    }
}

/// Everything in `state.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub profiles: BTreeMap<Name, Profile>,
    #[serde(default)]
    pub machines: BTreeMap<Mac, Machine>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_parse_once() {
        assert!("debian-12".parse::<Name>().is_ok());
        assert!("Debian".parse::<Name>().is_err());
        assert!("-x".parse::<Name>().is_err());
        assert!("a/b".parse::<Name>().is_err());
        assert!("".parse::<Name>().is_err());
        assert_eq!(
            "52-54-00-AB-cd-01".parse::<Mac>().unwrap().to_string(),
            "52:54:00:ab:cd:01"
        );
        assert!("52:54:00:ab:cd".parse::<Mac>().is_err());
        assert!("zz:54:00:ab:cd:01".parse::<Mac>().is_err());
        assert!("é2:54:00:ab:cd:0".parse::<Mac>().is_err());
    }
}
