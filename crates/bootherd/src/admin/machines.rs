//! `bootherd machine`: which machine boots which profile.

use anyhow::bail;
use bootherd_store::{Mac, Machine, Name, Store, StoreError};
use clap::Subcommand;
use serde::Serialize;

use super::{DataDir, open, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum MachineCommand {
    /// Register a machine or change it: its profile, boot-once profile and name.
    Set {
        /// MAC address, e.g. 52:54:00:12:34:56 (dashes work too).
        mac: Mac,
        /// What it boots from now on.
        #[arg(long)]
        profile: Option<Name>,
        /// Boot this profile once, then fall back to --profile.
        #[arg(long)]
        once: Option<Name>,
        /// A name for people (hostname, rack position).
        #[arg(long)]
        name: Option<String>,
        /// Remove the assigned profile (the defaults apply again).
        #[arg(long, conflicts_with = "profile")]
        clear_profile: bool,
    },
    /// List machines.
    List,
    /// Show one machine.
    Show {
        /// MAC address.
        mac: Mac,
    },
    /// Forget a machine (it then boots like an unknown machine).
    Remove {
        /// MAC address.
        mac: Mac,
    },
}

#[derive(Serialize)]
pub(super) struct MachineView<'a> {
    mac: String,
    #[serde(flatten)]
    machine: &'a Machine,
}

pub(crate) fn machine(command: MachineCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        MachineCommand::Set {
            mac,
            profile,
            once,
            name,
            clear_profile,
        } => {
            store.update(|state| {
                let machine = state.machines.entry(mac).or_default();
                if let Some(profile) = profile {
                    machine.profile = Some(profile);
                }
                if clear_profile {
                    machine.profile = None;
                }
                if let Some(once) = once {
                    machine.once = Some(once);
                }
                if let Some(name) = name {
                    machine.name = name;
                }
                Ok(())
            })?;
            show_machine(&store, &mac, dir.json)?;
        }
        MachineCommand::List => {
            let state = store.state();
            let views: Vec<MachineView<'_>> = state
                .machines
                .iter()
                .map(|(mac, machine)| MachineView {
                    mac: mac.to_string(),
                    machine,
                })
                .collect();
            if dir.json {
                print_json(&views)?;
            } else if views.is_empty() {
                println!("no machines registered (bootherd machine set MAC --profile NAME)");
            } else {
                for v in views {
                    println!(
                        "{}  {:<16} profile={} once={}",
                        v.mac,
                        v.machine.name,
                        v.machine
                            .profile
                            .as_ref()
                            .map_or("(defaults)", Name::as_str),
                        v.machine.once.as_ref().map_or("-", Name::as_str)
                    );
                }
            }
        }
        MachineCommand::Show { mac } => show_machine(&store, &mac, dir.json)?,
        MachineCommand::Remove { mac } => {
            store.update(|state| {
                if state.machines.remove(&mac).is_none() {
                    return Err(StoreError::rejected(format!(
                        "machine {mac} is not registered"
                    )));
                }
                Ok(())
            })?;
            if !dir.json {
                println!("removed machine {mac}");
            }
        }
    }
    Ok(())
}

pub(super) fn show_machine(store: &Store, mac: &Mac, json: bool) -> anyhow::Result<()> {
    let state = store.state();
    let Some(machine) = state.machines.get(mac) else {
        bail!("machine {mac} is not registered");
    };
    let view = MachineView {
        mac: mac.to_string(),
        machine,
    };
    if json {
        return print_json(&view);
    }
    print!("{}", serde_yaml_ng::to_string(&view)?);
    Ok(())
}
