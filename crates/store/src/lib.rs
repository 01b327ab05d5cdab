//! bootherd-store: the domain model (images, profiles, machines, defaults) and its persistence.
//!
//! What it does: keeps `state.yaml` in the data directory (human-editable, written atomically,
//! reloaded when edited on disk, an invalid edit reported with its line and column while the
//! last good state stays in force) and the image store under `images/` (files with size and
//! sha256, imported atomically, verified on demand). Every change, from the API, the command
//! line or a hand edit, goes through the same validation.
//!
//! What it does not do: decide what a machine boots (the boot crate does), serve files or
//! talk to the network.

pub mod images;
pub mod model;
mod persist;
pub mod validate;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

pub use images::{Image, ImageFile, Images};
pub use model::{Defaults, Mac, Machine, Name, Profile, State, UnknownMachines};
pub use persist::{write_atomic, write_private};
pub use validate::Problem;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{}{}: {message}", path.display(), location(*line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{0}")]
    Rejected(Rejection),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A change the store refuses, and the field it is about when it is about one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub field: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StoreError {
    /// A refusal about no field in particular.
    pub fn rejected(message: impl Into<String>) -> StoreError {
        StoreError::Rejected(Rejection {
            field: None,
            message: message.into(),
        })
    }

    /// A refusal about `field`.
    pub fn rejected_field(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Rejected(Rejection {
            field: Some(field),
            message: message.into(),
        })
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l} column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}

/// Identifies one version of the state file, to notice edits made on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// The state and the images of one data directory.
#[derive(Debug)]
pub struct Store {
    state_path: PathBuf,
    state: RwLock<Arc<State>>,
    /// Serialises writers and remembers which file version the state came from.
    file: Mutex<Option<Stamp>>,
    images: Images,
    /// Problems found by the last verification, per image.
    flagged: Mutex<BTreeMap<Name, Vec<String>>>,
}

pub const STATE_FILE: &str = "state.yaml";

impl Store {
    /// Opens a data directory, creating it if needed. A missing state file is an empty state
    /// (written on the first change); an invalid one is an error, since there is no last good
    /// state yet.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let dir = data_dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let state_path = dir.join(STATE_FILE);
        bootherd_files::landing::remove_stale_temps(dir);
        let images = Images::new(dir.join("images"))?;
        images.remove_stale_temps();
        let file_stamp = stamp(&state_path);
        let state = match fs::read_to_string(&state_path) {
            Ok(text) => parse_state(&state_path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: state_path,
                    source,
                });
            }
        };
        Ok(Store {
            state_path,
            state: RwLock::new(Arc::new(state)),
            file: Mutex::new(file_stamp),
            images,
            flagged: Mutex::default(),
        })
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The data directory (where state.yaml, images/ and import/ are).
    pub fn data_dir(&self) -> &Path {
        self.state_path.parent().unwrap_or(Path::new("."))
    }

    pub fn images(&self) -> &Images {
        &self.images
    }

    /// The state now. Cheap: readers share one immutable snapshot.
    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Images by name, with the problems their last verification found.
    pub fn image_map(&self) -> Result<BTreeMap<Name, Image>, StoreError> {
        let flagged = self.flagged.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self
            .images
            .list()?
            .into_iter()
            .map(|mut image| {
                image.problems = flagged.get(&image.name).cloned().unwrap_or_default();
                (image.name.clone(), image)
            })
            .collect())
    }

    /// Re-hashes one image's files; a mismatch flags the image (its profiles are no longer
    /// ready) instead of failing anything. Returns the problems (empty: intact).
    pub fn verify_image(&self, name: &Name) -> Result<Vec<String>, StoreError> {
        let problems = self.images.verify(name)?;
        let mut flagged = self.flagged.lock().unwrap_or_else(|p| p.into_inner());
        if problems.is_empty() {
            flagged.remove(name);
        } else {
            flagged.insert(name.clone(), problems.clone());
        }
        Ok(problems)
    }

    /// Why a profile cannot boot now (empty: ready).
    pub fn readiness(&self, name: &Name) -> Result<Vec<String>, StoreError> {
        let state = self.state();
        let Some(profile) = state.profiles.get(name) else {
            return Err(StoreError::rejected(format!(
                "profile '{name}' does not exist"
            )));
        };
        Ok(validate::readiness(
            name,
            profile,
            &state,
            &self.image_map()?,
        ))
    }

    /// Applies a change: `change` edits a copy, the result is validated, saved atomically and
    /// only then made visible. Assigning a profile that is not ready is refused, so a machine
    /// is never told to boot files that do not exist.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.state();
        let mut next = (*before).clone();
        let value = change(&mut next)?;
        let errors = validate::errors(&next);
        if let Some(first) = errors.first() {
            return Err(StoreError::Rejected(Rejection {
                field: first.field,
                message: first.to_string(),
            }));
        }
        let images = self.image_map()?;
        for (mac, machine) in &next.machines {
            let previous = before.machines.get(mac);
            for (field, value, old) in [
                (
                    "profile",
                    &machine.profile,
                    previous.and_then(|m| m.profile.as_ref()),
                ),
                (
                    "once",
                    &machine.once,
                    previous.and_then(|m| m.once.as_ref()),
                ),
            ] {
                let Some(profile_name) = value else { continue };
                if old == Some(profile_name) {
                    continue;
                }
                if let Some(profile) = next.profiles.get(profile_name) {
                    let problems = validate::readiness(profile_name, profile, &next, &images);
                    if let Some(problem) = problems.first() {
                        return Err(StoreError::rejected_field(
                            field,
                            format!(
                                "machine {mac}: cannot assign {field} '{profile_name}': {problem}"
                            ),
                        ));
                    }
                }
            }
        }
        let text = persist::quote_macs(&persist::to_yaml(&next)?);
        persist::write_atomic(&self.state_path, text.as_bytes())?;
        *file = stamp(&self.state_path);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(value)
    }

    /// Picks up an edit of the state file made outside bootherd. Returns `Ok(true)` when a new
    /// state was loaded, `Ok(false)` when nothing changed, and the error (with line and column)
    /// when the edited file is invalid; the last good state then stays in force.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let current = stamp(&self.state_path);
        if current == *file {
            return Ok(false);
        }
        // Remember this version even if it is invalid, so it is reported once, not every poll.
        *file = current;
        let state = match fs::read_to_string(&self.state_path) {
            Ok(text) => parse_state(&self.state_path, &text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.state_path.clone(),
                    source,
                });
            }
        };
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        Ok(true)
    }

    /// Deletes an image, unless a profile uses it.
    pub fn remove_image(&self, name: &Name) -> Result<(), StoreError> {
        let _file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state();
        let users: Vec<String> = state
            .profiles
            .iter()
            .filter(|(_, p)| p.image() == Some(name))
            .map(|(n, _)| n.to_string())
            .collect();
        if !users.is_empty() {
            return Err(StoreError::rejected(format!(
                "image '{name}' is used by profile {}; change or remove {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        if self.images.get(name)?.is_none() {
            return Err(StoreError::rejected(format!(
                "image '{name}' does not exist"
            )));
        }
        self.images.remove(name)
    }
}

/// Parses and validates a state file's text; semantic errors get the line they are on.
fn parse_state(path: &Path, text: &str) -> Result<State, StoreError> {
    let state: State = persist::parse(path, text)?;
    if let Some(problem) = validate::errors(&state).into_iter().next() {
        return Err(StoreError::Invalid {
            path: path.to_path_buf(),
            line: validate::locate(text, &problem.needle),
            column: None,
            message: problem.to_string(),
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests;
