//! Images: named sets of files under `images/<name>/`, each listed with its size and sha256 in
//! `images/<name>/manifest.yaml`. Files are hashed while they are written and land atomically
//! (temporary name, fsync, rename); the manifest is updated afterwards, atomically too, so a
//! file is never listed before it is complete.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bootherd_files::landing::{Landing, Purpose, Replace};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Name;
use crate::{StoreError, persist};

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    files: Vec<ImageFile>,
}

/// An image as listed by its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: Name,
    pub files: Vec<ImageFile>,
    /// What the last verification found wrong (filled in by the store); empty when intact or
    /// not verified yet.
    pub problems: Vec<String>,
}

impl Image {
    pub fn file(&self, name: &str) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.name == name)
    }

    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A file name inside an image: no directories, nothing hidden, nothing a URL or an iPXE
/// script would have to escape.
pub fn check_file_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::rejected(format!(
            "{name:?} is not a valid image file name: use letters, digits, '.', '_', '-' or '+', not starting with '.'"
        )))
    }
}

/// The directory of images.
#[derive(Debug)]
pub struct Images {
    root: PathBuf,
    /// Serialises manifest updates.
    writing: Mutex<()>,
}

const MANIFEST: &str = "manifest.yaml";

impl Images {
    pub fn new(root: impl Into<PathBuf>) -> Result<Images, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Images {
            root,
            writing: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes what crashed imports and manifest writes left in each image's directory.
    pub(crate) fn remove_stale_temps(&self) {
        for entry in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                bootherd_files::landing::remove_stale_temps(&entry.path());
            }
        }
    }

    fn dir(&self, name: &Name) -> PathBuf {
        self.root.join(name.as_str())
    }

    /// Path of a file of an image (whether or not it exists).
    pub fn file_path(&self, image: &Name, file: &str) -> Result<PathBuf, StoreError> {
        check_file_name(file)?;
        Ok(self.dir(image).join(file))
    }

    fn read_manifest(&self, name: &Name) -> Result<Option<Manifest>, StoreError> {
        let path = self.dir(name).join(MANIFEST);
        match fs::read_to_string(&path) {
            Ok(text) => persist::parse(&path, &text).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub fn get(&self, name: &Name) -> Result<Option<Image>, StoreError> {
        Ok(self.read_manifest(name)?.map(|m| Image {
            name: name.clone(),
            files: m.files,
            problems: Vec::new(),
        }))
    }

    /// Every image with a manifest, by name.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let entries = fs::read_dir(&self.root).map_err(|source| StoreError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut images = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().to_string_lossy().parse::<Name>() else {
                continue;
            };
            if let Some(image) = self.get(&name)? {
                images.push(image);
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Copies a local file into an image (created if needed), as `as_name` or its own name.
    pub fn import_path(
        &self,
        image: &Name,
        source: &Path,
        as_name: Option<&str>,
    ) -> Result<ImageFile, StoreError> {
        let file_name = match as_name {
            Some(name) => name.to_string(),
            None => source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let reader = File::open(source).map_err(|e| StoreError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        self.import_reader(image, &file_name, reader)
    }

    /// Streams a file into an image, hashing it on the way. It becomes visible (on disk and in
    /// the manifest) only once complete; a failed or interrupted import leaves nothing.
    pub fn import_reader(
        &self,
        image: &Name,
        file_name: &str,
        mut reader: impl Read,
    ) -> Result<ImageFile, StoreError> {
        check_file_name(file_name)?;
        if file_name == MANIFEST {
            return Err(StoreError::rejected(format!(
                "{MANIFEST} is reserved for the image's own list of files"
            )));
        }
        let dir = self.dir(image);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let target = dir.join(file_name);
        let io_error = |source| StoreError::Io {
            path: target.clone(),
            source,
        };
        // Two uploads of one file may run at once: each lands whole, the last to finish wins.
        let mut landing = Landing::start(&target, Purpose::Import, None).map_err(io_error)?;
        let (size, sha256) =
            copy_hashing(&mut reader, landing.file().map_err(io_error)?).map_err(io_error)?;
        let _guard = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        landing.land(Replace::Allowed).map_err(io_error)?;
        let entry = ImageFile {
            name: file_name.to_string(),
            size,
            sha256,
        };
        let mut manifest = self.read_manifest(image)?.unwrap_or_default();
        manifest.files.retain(|f| f.name != file_name);
        manifest.files.push(entry.clone());
        manifest.files.sort_by(|a, b| a.name.cmp(&b.name));
        persist::write_atomic(&dir.join(MANIFEST), persist::to_yaml(&manifest)?.as_bytes())?;
        Ok(entry)
    }

    /// Re-reads every file of an image and compares it with the manifest. Returns the problems
    /// found (empty: the image is intact).
    pub fn verify(&self, image: &Name) -> Result<Vec<String>, StoreError> {
        let Some(manifest) = self.read_manifest(image)? else {
            return Ok(vec![format!("image '{image}' has no manifest")]);
        };
        let mut problems = Vec::new();
        for file in &manifest.files {
            let path = self.dir(image).join(&file.name);
            match hash_file(&path) {
                Ok((size, _)) if size != file.size => problems.push(format!(
                    "'{}' is {size} bytes, the manifest says {} (re-import it)",
                    file.name, file.size
                )),
                Ok((_, sha)) if sha != file.sha256 => problems.push(format!(
                    "'{}' does not match its sha256 (re-import it)",
                    file.name
                )),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => problems.push(format!(
                    "'{}' is missing from {} (re-import it)",
                    file.name,
                    self.dir(image).display()
                )),
                Err(e) => problems.push(format!("'{}' cannot be read: {e}", file.name)),
            }
        }
        Ok(problems)
    }

    /// Deletes an image and its files. The store checks that no profile uses it first.
    pub(crate) fn remove(&self, image: &Name) -> Result<(), StoreError> {
        let dir = self.dir(image);
        let _guard = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        fs::remove_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    copy_hashing(&mut File::open(path)?, io::sink())
}

/// Copies `reader` into `writer`, returning the size and sha256 of what passed.
fn copy_hashing(reader: &mut impl Read, mut writer: impl Write) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_hashes_lists_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(dir.path()).unwrap();
        let name: Name = "debian-12".parse().unwrap();
        let entry = images
            .import_reader(&name, "linux", &b"kernel bytes"[..])
            .unwrap();
        assert_eq!(entry.size, 12);
        assert_eq!(entry.sha256, hex(&Sha256::digest(b"kernel bytes")));
        images
            .import_reader(&name, "initrd.gz", &b"initrd"[..])
            .unwrap();
        let image = images.get(&name).unwrap().unwrap();
        assert_eq!(
            image
                .files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["initrd.gz", "linux"]
        );
        assert!(images.verify(&name).unwrap().is_empty());
        fs::write(dir.path().join("debian-12/linux"), b"kernel bytez").unwrap();
        let problems = images.verify(&name).unwrap();
        assert!(
            problems.iter().any(|p| p.contains("sha256")),
            "{problems:?}"
        );
        fs::remove_file(dir.path().join("debian-12/initrd.gz")).unwrap();
        assert_eq!(images.verify(&name).unwrap().len(), 2);
        assert_eq!(images.list().unwrap().len(), 1);
    }

    #[test]
    fn failed_import_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = 1;
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(dir.path()).unwrap();
        let name: Name = "x".parse().unwrap();
        assert!(images.import_reader(&name, "big.iso", Failing(3)).is_err());
        assert!(images.get(&name).unwrap().is_none());
        assert_eq!(fs::read_dir(dir.path().join("x")).unwrap().count(), 0);
        assert!(images.import_reader(&name, "../escape", &b""[..]).is_err());
        assert!(images.import_reader(&name, ".hidden", &b""[..]).is_err());
        assert!(
            images
                .import_reader(&name, "manifest.yaml", &b""[..])
                .is_err()
        );
    }
}
