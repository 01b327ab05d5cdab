//! [`DirUploads`]: TFTP uploads into one directory, each landing whole or not at all
//! (see [`crate::landing`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bootherd_tftp::{SourceError, TftpPath, UploadSink, UploadTarget};

use crate::landing::{Landing, Purpose, Replace};

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
                // The parent of a valid path is itself valid.
                let parent_path =
                    TftpPath::parse(parent).map_err(|e| SourceError::AccessDenied {
                        path: path.to_string(),
                        reason: e.to_string(),
                    })?;
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
        let landing = Landing::start(&target, Purpose::Upload, None)
            .map_err(|e| SourceError::from_io(path, AREA_UPLOADS, e))?;
        Ok(Box::new(DirUpload {
            display: path.to_string(),
            landing,
            written: 0,
            max_bytes: self.max_bytes,
            replace: if self.overwrite {
                Replace::Allowed
            } else {
                Replace::Never
            },
        }))
    }
}

/// One upload in progress; dropped without `commit`, its temporary file goes with it.
#[derive(Debug)]
struct DirUpload {
    display: String,
    landing: Landing,
    written: u64,
    max_bytes: u64,
    replace: Replace,
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
        if let Err(e) = self.landing.file().and_then(|file| file.write_all(data)) {
            return Err(self.io_error(e));
        }
        self.written = size;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), SourceError> {
        let DirUpload {
            display,
            landing,
            replace,
            ..
        } = *self;
        landing.land(replace).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                SourceError::AlreadyExists { path: display }
            } else {
                SourceError::Io {
                    path: display,
                    source,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootherd_tftp::ErrorCode;

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
