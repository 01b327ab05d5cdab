//! `bootherd image`: import, list, show, verify and remove images in the store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bootherd_store::{Name, Store};
use clap::Subcommand;
use serde::Serialize;

use super::{DataDir, open, print_json};

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Import files into an image (created if it does not exist); each is hashed while copied.
    Add {
        /// Image name: lowercase letters, digits, '.', '_' and '-' (e.g. debian-12).
        name: Name,
        /// Files to import; each keeps its file name inside the image.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List images.
    List,
    /// Show an image's files, sizes and sha256.
    Show {
        /// Image name.
        name: Name,
    },
    /// Re-hash an image's files against its manifest.
    Verify {
        /// Image name.
        name: Name,
    },
    /// Delete an image (refused while a profile uses it).
    Remove {
        /// Image name.
        name: Name,
    },
}

#[derive(Serialize)]
pub(super) struct ImageView {
    name: String,
    size: u64,
    files: Vec<bootherd_store::ImageFile>,
    problems: Vec<String>,
}

pub(crate) fn image(command: ImageCommand, dir: &DataDir) -> anyhow::Result<()> {
    let store = open(&dir.data)?;
    match command {
        ImageCommand::Add { name, files } => {
            for file in &files {
                let entry = store
                    .images()
                    .import_path(&name, file, None)
                    .with_context(|| format!("importing {}", file.display()))?;
                if !dir.json {
                    println!(
                        "{name}/{}: {} bytes, sha256 {}",
                        entry.name, entry.size, entry.sha256
                    );
                }
            }
            if dir.json {
                show_image(&store, &name, true)?;
            }
        }
        ImageCommand::List => {
            let images: Vec<ImageView> = store
                .image_map()?
                .into_values()
                .map(|i| ImageView {
                    name: i.name.to_string(),
                    size: i.size(),
                    problems: i.problems.clone(),
                    files: i.files,
                })
                .collect();
            if dir.json {
                print_json(&images)?;
            } else if images.is_empty() {
                println!("no images (add one: bootherd image add NAME FILE...)");
            } else {
                for image in images {
                    println!(
                        "{}  {} files  {} bytes",
                        image.name,
                        image.files.len(),
                        image.size
                    );
                }
            }
        }
        ImageCommand::Show { name } => show_image(&store, &name, dir.json)?,
        ImageCommand::Verify { name } => {
            let problems = store.verify_image(&name)?;
            if dir.json {
                print_json(&problems)?;
            } else if problems.is_empty() {
                println!("{name}: every file matches its sha256");
            }
            if !problems.is_empty() {
                bail!("image '{name}' is damaged: {}", problems.join("; "));
            }
        }
        ImageCommand::Remove { name } => {
            store.remove_image(&name)?;
            if !dir.json {
                println!("removed image {name}");
            }
        }
    }
    Ok(())
}

pub(super) fn show_image(store: &Store, name: &Name, json: bool) -> anyhow::Result<()> {
    let Some(image) = store.image_map()?.remove(name) else {
        bail!("image '{name}' does not exist");
    };
    if json {
        return print_json(&ImageView {
            name: image.name.to_string(),
            size: image.size(),
            problems: image.problems.clone(),
            files: image.files,
        });
    }
    for file in &image.files {
        println!("{:<24} {:>12}  {}", file.name, file.size, file.sha256);
    }
    Ok(())
}
