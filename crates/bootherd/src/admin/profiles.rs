//! `bootherd profile`: boot profiles from the command line.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use bootherd_store::{Name, Profile, Store, StoreError, validate};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{DataDir, open, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Create or replace a profile. Give --image with --kernel (Linux) or --bootfile (raw boot
    /// files); or --menu, --local-disk or --chain.
    Add(Box<ProfileSpec>),
    /// List profiles with their readiness.
    List,
    /// Show one profile.
    Show {
        /// Profile name.
        name: Name,
    },
    /// Delete a profile (refused while a machine, a menu or the defaults use it).
    Remove {
        /// Profile name.
        name: Name,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ProfileSpec {
    /// Profile name: lowercase letters, digits, '.', '_' and '-'.
    name: Name,
    /// Image whose files the profile boots (with --kernel or --bootfile).
    #[arg(long)]
    image: Option<Name>,
    /// Kernel file of the image.
    #[arg(long, requires = "image")]
    kernel: Option<String>,
    /// Initrd file of the image (repeatable, in order).
    #[arg(long, requires = "kernel")]
    initrd: Vec<String>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// A menu of these profiles (repeatable).
    #[arg(long = "menu", value_name = "PROFILE")]
    menu: Vec<Name>,
    /// The menu's default entry.
    #[arg(long, requires = "menu")]
    default: Option<Name>,
    /// Seconds before the menu boots its default.
    #[arg(long, requires = "menu")]
    timeout: Option<u32>,
    /// Menu title.
    #[arg(long, default_value = "")]
    title: String,
    /// Boot from the local disk.
    #[arg(long)]
    local_disk: bool,
    /// Chain to this iPXE script URL, e.g. `https://boot.netboot.xyz`.
    #[arg(long, value_name = "URL")]
    chain: Option<String>,
    /// A raw boot file for an architecture, ARCH=FILE (repeatable), e.g. bios=pxelinux.0.
    #[arg(long, value_name = "ARCH=FILE", requires = "image")]
    bootfile: Vec<String>,
    /// What the profile is for, shown in menus and the web UI.
    #[arg(long, default_value = "")]
    description: String,
}

pub(super) fn build_profile(spec: &ProfileSpec) -> anyhow::Result<Profile> {
    let kinds = [
        spec.kernel.is_some(),
        !spec.menu.is_empty(),
        spec.local_disk,
        spec.chain.is_some(),
        !spec.bootfile.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        bail!(
            "say what the profile boots, exactly one of: --image with --kernel, --menu, --local-disk, --chain URL, --image with --bootfile ARCH=FILE"
        );
    }
    let description = spec.description.clone();
    Ok(
        if let (Some(image), Some(kernel)) = (&spec.image, &spec.kernel) {
            Profile::Linux {
                image: image.clone(),
                kernel: kernel.clone(),
                initrd: spec.initrd.clone(),
                cmdline: spec.cmdline.clone(),
                description,
            }
        } else if !spec.menu.is_empty() {
            Profile::Menu {
                title: spec.title.clone(),
                entries: spec.menu.clone(),
                default: spec.default.clone(),
                timeout: spec.timeout,
                description,
            }
        } else if spec.local_disk {
            Profile::LocalDisk { description }
        } else if let Some(url) = &spec.chain {
            Profile::Chain {
                url: url.clone(),
                description,
            }
        } else {
            let image = spec.image.clone().context("--bootfile needs --image")?;
            let mut files = BTreeMap::new();
            for pair in &spec.bootfile {
                let (arch, file) = pair.split_once('=').with_context(|| {
                    format!("--bootfile {pair:?} must look like ARCH=FILE, e.g. bios=pxelinux.0")
                })?;
                files.insert(arch.to_string(), file.to_string());
            }
            Profile::Bootfile {
                image,
                files,
                description,
            }
        },
    )
}

#[derive(Serialize)]
pub(super) struct ProfileView<'a> {
    name: &'a Name,
    #[serde(flatten)]
    profile: &'a Profile,
    ready: bool,
    problems: Vec<String>,
}

pub(crate) fn profile(command: ProfileCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        ProfileCommand::Add(spec) => {
            let profile = build_profile(&spec)?;
            let name = spec.name.clone();
            store.update(|state| {
                state.profiles.insert(name.clone(), profile);
                Ok(())
            })?;
            let problems = store.readiness(&name)?;
            if !dir.json {
                if problems.is_empty() {
                    println!("profile {name} saved; ready to boot");
                } else {
                    println!(
                        "profile {name} saved, but not ready yet: {}",
                        problems.join("; ")
                    );
                }
            } else {
                show_profile(&store, &name, true)?;
            }
        }
        ProfileCommand::List => {
            let state = store.state();
            let images = store.image_map()?;
            let views: Vec<ProfileView<'_>> = state
                .profiles
                .iter()
                .map(|(name, profile)| {
                    let problems = validate::readiness(name, profile, &state, &images);
                    ProfileView {
                        name,
                        profile,
                        ready: problems.is_empty(),
                        problems,
                    }
                })
                .collect();
            if dir.json {
                print_json(&views)?;
            } else if views.is_empty() {
                println!("no profiles (add one: bootherd profile add NAME ...)");
            } else {
                for v in views {
                    let status = if v.ready {
                        "ready".to_string()
                    } else {
                        format!("NOT READY: {}", v.problems.join("; "))
                    };
                    println!("{:<20} {:<11} {status}", v.name.as_str(), v.profile.kind());
                }
            }
        }
        ProfileCommand::Show { name } => show_profile(&store, &name, dir.json)?,
        ProfileCommand::Remove { name } => {
            store.update(|state| {
                if state.profiles.remove(&name).is_none() {
                    return Err(StoreError::rejected(format!(
                        "profile '{name}' does not exist"
                    )));
                }
                Ok(())
            })?;
            if !dir.json {
                println!("removed profile {name}");
            }
        }
    }
    Ok(())
}

pub(super) fn show_profile(store: &Store, name: &Name, json: bool) -> anyhow::Result<()> {
    let state = store.state();
    let Some(profile) = state.profiles.get(name) else {
        bail!("profile '{name}' does not exist");
    };
    let problems = store.readiness(name)?;
    let view = ProfileView {
        name,
        profile,
        ready: problems.is_empty(),
        problems,
    };
    if json {
        return print_json(&view);
    }
    print!("{}", serde_yaml_ng::to_string(&view)?);
    Ok(())
}
