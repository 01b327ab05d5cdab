//! What may enter the image store over HTTP, and how much: uploads and imports from a path on
//! the server. An import publishes a file to every host on the LAN, so it is taken only from
//! the import directories, by the same serving rule as everything else (`beneath`: a regular
//! file, no symlink leading out); uploads and imports are limited in size, and an upload that
//! stops sending is given up rather than holding its connection and temporary file forever.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bootherd_files::beneath::{Beneath, BeneathError, Symlinks};
use futures_util::{Stream, StreamExt};

use crate::HttpLimits;

/// Why a path cannot be imported; the text names the directories and the setting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    #[error(
        "'{path}' is not in an import directory ({dirs}); put the file there, or start bootherd with --import-dir DIR (http.import_dirs in bootherd.yaml)"
    )]
    Outside { path: String, dirs: String },
    #[error("'{path}' cannot be imported: {reason}")]
    Refused { path: String, reason: String },
    #[error("'{path}': no such file in the import directory")]
    NotFound { path: String },
    #[error(
        "'{path}' is {size} bytes, more than the {limit} bytes an image file may have (raise --max-image-file-bytes, http.max_image_file_bytes)"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
}

impl HttpLimits {
    /// Every import directory, DATA/import first.
    fn import_dirs(&self, data: &Path) -> Vec<PathBuf> {
        let mut dirs = vec![data.join("import")];
        dirs.extend(self.import_dirs.iter().cloned());
        dirs
    }

    /// Opens `requested` for import: an absolute path inside one of the import directories,
    /// naming a regular file no larger than the limit. Returns the file and its size.
    pub(crate) fn open_import(
        &self,
        data: &Path,
        requested: &str,
    ) -> Result<(File, u64), ImportError> {
        let dirs = self.import_dirs(data);
        let outside = || ImportError::Outside {
            path: requested.to_string(),
            dirs: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let path = Path::new(requested);
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(outside());
        }
        let (dir, relative) = dirs
            .iter()
            .find_map(|dir| {
                let canonical = std::fs::canonicalize(dir).ok();
                [Some(dir.clone()), canonical]
                    .into_iter()
                    .flatten()
                    .find_map(|d| {
                        path.strip_prefix(&d)
                            .ok()
                            .map(|r| (d.clone(), r.to_path_buf()))
                    })
            })
            .ok_or_else(outside)?;
        let relative =
            relative
                .to_str()
                .filter(|r| !r.is_empty())
                .ok_or_else(|| ImportError::Refused {
                    path: requested.to_string(),
                    reason: "it names a directory, not a file".into(),
                })?;
        let beneath = Beneath::open(&dir, Symlinks::StayInside).map_err(|_| outside())?;
        let file = beneath.open_file(relative).map_err(|e| match e {
            BeneathError::Io(e) if e.kind() == io::ErrorKind::NotFound => ImportError::NotFound {
                path: requested.to_string(),
            },
            other => ImportError::Refused {
                path: requested.to_string(),
                reason: other.to_string(),
            },
        })?;
        let size = file
            .metadata()
            .map_err(|e| ImportError::Refused {
                path: requested.to_string(),
                reason: e.to_string(),
            })?
            .len();
        if size > self.max_image_file_bytes {
            return Err(ImportError::TooLarge {
                path: requested.to_string(),
                size,
                limit: self.max_image_file_bytes,
            });
        }
        Ok((file, size))
    }
}

/// A reader that fails once more than `limit` bytes came through, so a body or a file that
/// grows past the limit aborts its import (which then leaves nothing behind).
#[derive(Debug)]
pub(crate) struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Limited<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Limited<R> {
        Limited {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "more than the {} bytes an image file may have (raise --max-image-file-bytes, http.max_image_file_bytes)",
                    self.limit
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Ends `body` with an error when it yields nothing for `stall`: a client that stops sending
/// mid-upload is given up instead of holding a connection and a temporary file.
pub(crate) fn with_stall_timeout<S, T>(
    body: S,
    stall: Duration,
) -> impl Stream<Item = io::Result<T>> + Send
where
    S: Stream<Item = io::Result<T>> + Send + Unpin,
{
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(stall, body.next()).await {
            Ok(Some(item)) => Some((item, Some(body))),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nothing arrived for {} s (--upload-stall-secs, http.upload_stall_secs)",
                        stall.as_secs()
                    ),
                )),
                None,
            )),
        }
    })
}
