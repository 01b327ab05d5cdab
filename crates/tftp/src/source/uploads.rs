//! Where uploads go: the [`UploadTarget`] and [`UploadSink`] traits, and [`DirUploads`], which
//! lands each upload whole or not at all in one directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{SourceError, TftpPath};

/// Resolves `path` under `root` and refuses anything that ends up outside it once symlinks are
/// followed. `root` must already be canonical. Used for the upload directory's folders; files
/// that are served go through `beneath`, which resolves and opens in one step.
fn resolve_inside(
    root: &Path,
    path: &TftpPath,
    area: &'static str,
) -> Result<PathBuf, SourceError> {
    let joined = root.join(path.as_str());
    let resolved = fs::canonicalize(&joined).map_err(|e| SourceError::from_io(path, area, e))?;
    if !resolved.starts_with(root) {
        return Err(SourceError::AccessDenied {
            path: path.to_string(),
            reason: format!("it is a symbolic link that leads outside the {area}"),
        });
    }
    Ok(resolved)
}

/// Receives one upload. Dropping a sink without [`UploadSink::commit`] discards everything it
/// received: an upload lands whole or not at all.
pub trait UploadSink: Send + fmt::Debug {
    fn write(&mut self, data: &[u8]) -> Result<(), SourceError>;
    /// Makes the upload visible under its final name, atomically.
    fn commit(self: Box<Self>) -> Result<(), SourceError>;
}

/// Accepts write requests.
pub trait UploadTarget: Send + Sync + fmt::Debug {
    /// `announced_size` is the client's `tsize`, when it sent one, so an oversized upload can be
    /// refused before any data moves.
    fn create(
        &self,
        path: &TftpPath,
        announced_size: Option<u64>,
    ) -> Result<Box<dyn UploadSink>, SourceError>;
}

/// Stores uploads in one directory: each lands in a hidden temporary file, is flushed to disk,
/// then appears under its name in one atomic step. A reader never sees half a file, and a
/// crash leaves at most a temporary file behind.
#[derive(Debug)]
pub struct DirUploads {
    dir: PathBuf,
    max_bytes: u64,
    overwrite: bool,
}

const AREA_UPLOADS: &str = "upload directory";

impl DirUploads {
    pub fn new(dir: impl AsRef<Path>, max_bytes: u64, overwrite: bool) -> io::Result<DirUploads> {
        let dir = fs::canonicalize(dir.as_ref()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("upload directory {}: {e}", dir.as_ref().display()),
            )
        })?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("upload directory {} is not a directory", dir.display()),
            ));
        }
        Ok(DirUploads {
            dir,
            max_bytes,
            overwrite,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl UploadTarget for DirUploads {
    fn create(
        &self,
        path: &TftpPath,
        announced_size: Option<u64>,
    ) -> Result<Box<dyn UploadSink>, SourceError> {
        if let Some(size) = announced_size.filter(|&s| s > self.max_bytes) {
            return Err(SourceError::TooLarge {
                path: path.to_string(),
                size,
                limit: self.max_bytes,
            });
        }
        // The parent must exist and stay inside the directory; the file itself need not exist.
        let (parent_rel, name) = match path.as_str().rsplit_once('/') {
            Some((parent, name)) => (Some(parent), name),
            None => (None, path.as_str()),
        };
        let parent = match parent_rel {
            Some(parent) => {
                let parent_path = TftpPath(parent.to_string());
                resolve_inside(&self.dir, &parent_path, AREA_UPLOADS).map_err(|e| match e {
                    SourceError::NotFound { .. } => SourceError::AccessDenied {
                        path: path.to_string(),
                        reason: format!("its folder '{parent}' does not exist in the upload directory (create it first)"),
                    },
                    other => other,
                })?
            }
            None => self.dir.clone(),
        };
        let target = parent.join(name);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() || !meta.is_file() => {
                return Err(SourceError::AccessDenied {
                    path: path.to_string(),
                    reason: "it exists and is not a regular file".into(),
                });
            }
            Ok(_) if !self.overwrite => {
                return Err(SourceError::AlreadyExists {
                    path: path.to_string(),
                });
            }
            _ => {}
        }
        let (temp_path, file) =
            create_temp(&parent, name).map_err(|e| SourceError::from_io(path, AREA_UPLOADS, e))?;
        Ok(Box::new(DirUpload {
            display: path.to_string(),
            temp_path,
            target,
            file: Some(file),
            written: 0,
            max_bytes: self.max_bytes,
            overwrite: self.overwrite,
        }))
    }
}

fn create_temp(parent: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    loop {
        let candidate = parent.join(format!(".{name}.upload-{:016x}", random_u64()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Enough randomness for temporary-file names, without a dependency: the hasher's per-process
/// random keys mixed with the time and a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

#[derive(Debug)]
struct DirUpload {
    display: String,
    temp_path: PathBuf,
    target: PathBuf,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
    overwrite: bool,
}

impl DirUpload {
    fn io_error(&self, source: io::Error) -> SourceError {
        SourceError::Io {
            path: self.display.clone(),
            source,
        }
    }
}

impl UploadSink for DirUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), SourceError> {
        let size = self.written + data.len() as u64;
        if size > self.max_bytes {
            return Err(SourceError::TooLarge {
                path: self.display.clone(),
                size,
                limit: self.max_bytes,
            });
        }
        let file = self.file.as_mut().ok_or_else(|| SourceError::Io {
            path: self.display.clone(),
            source: io::Error::other("upload already finished"),
        })?;
        if let Err(e) = file.write_all(data) {
            return Err(self.io_error(e));
        }
        self.written = size;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), SourceError> {
        let Some(file) = self.file.take() else {
            return Err(self.io_error(io::Error::other("upload already finished")));
        };
        file.sync_all().map_err(|e| self.io_error(e))?;
        drop(file);
        if self.overwrite {
            fs::rename(&self.temp_path, &self.target).map_err(|e| self.io_error(e))?;
        } else {
            // A hard link fails if the name was taken while the upload ran, where a rename would
            // silently replace the other file.
            match fs::hard_link(&self.temp_path, &self.target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.temp_path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(SourceError::AlreadyExists {
                        path: self.display.clone(),
                    });
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
        // The rename is durable only once the directory entry is on disk.
        if let Some(parent) = self.target.parent() {
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        // Also runs after a successful commit, when the temporary name is already gone.
        let _ = fs::remove_file(&self.temp_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ErrorCode;

    #[test]
    fn uploads_land_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = DirUploads::new(dir.path(), 10, false).unwrap();
        let path = TftpPath::parse("log.txt").unwrap();

        let mut sink = uploads.create(&path, None).unwrap();
        sink.write(b"12345").unwrap();
        assert!(!dir.path().join("log.txt").exists());
        drop(sink);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "aborted upload left a file"
        );

        let mut sink = uploads.create(&path, Some(5)).unwrap();
        sink.write(b"12345").unwrap();
        sink.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("log.txt")).unwrap(), b"12345");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let err = uploads.create(&path, None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FileExists);
        let err = uploads
            .create(&TftpPath::parse("big").unwrap(), Some(11))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DiskFull);
        let mut sink = uploads
            .create(&TftpPath::parse("big").unwrap(), None)
            .unwrap();
        assert_eq!(
            sink.write(&[0; 11]).unwrap_err().code(),
            ErrorCode::DiskFull
        );
        let err = uploads
            .create(&TftpPath::parse("nodir/x").unwrap(), None)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessViolation);
    }
}
