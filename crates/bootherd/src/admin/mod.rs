//! Commands that change or inspect the data directory directly (`image`, `profile`,
//! `machine`, `check`), for scripts, automation and `docker exec`. A running server picks the
//! change up within a second. They go through the store's validation, the same as the API.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bootherd_store::Store;
use clap::Args;
use serde::Serialize;

mod access;
mod check;
mod images;
mod machines;
mod profiles;

pub(crate) use access::{PASSWORD_FILE, TOKEN_FILE, TokenCommand, password, token};
pub(crate) use check::{check, health};
pub(crate) use images::{ImageCommand, image};
pub(crate) use machines::{MachineCommand, machine};
pub(crate) use profiles::{ProfileCommand, profile};

#[derive(Debug, Args)]
pub(crate) struct DataDir {
    /// Data directory: state.yaml and images/.
    #[arg(long, default_value = ".", env = "BOOTHERD_DATA", global = true)]
    pub(crate) data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

pub(super) fn open(data: &Path) -> anyhow::Result<Store> {
    Store::open(data).with_context(|| format!("opening the data directory {}", data.display()))
}

pub(super) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
