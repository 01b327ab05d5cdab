//! What the transfers read from and write to: the [`FileSource`] and [`UploadTarget`] traits
//! and what travels through them (a normalised [`TftpPath`], open [`FileContent`], an
//! [`UploadSink`], a [`SourceError`] that knows its TFTP error code).
//!
//! Nothing here touches the file system: the directory implementations are in
//! `bootherd-files`, and the boot crate implements [`FileSource`] over the image store. Both
//! are called synchronously, so the network driver calls them where blocking briefly is fine.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::packet::ErrorCode;

/// A requested file name, normalised into a relative path that cannot leave its root.
///
/// PXE configurations are full of Windows-style names (`\boot\pxelinux.0`) and absolute ones
/// (`/pxelinux.0`); both are mapped into the root, as tftpd-hpa users expect. `..` is refused
/// outright rather than resolved: no legitimate boot file name needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TftpPath(String);

/// Why a file name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("it contains a NUL or control character")]
    ControlCharacter,
    #[error("it contains '..', which would leave the TFTP root")]
    ParentComponent,
    #[error("it names the root directory, not a file")]
    Empty,
}

impl TftpPath {
    pub fn parse(requested: &str) -> Result<TftpPath, PathError> {
        if requested.chars().any(|c| c.is_control()) {
            return Err(PathError::ControlCharacter);
        }
        let mut parts = Vec::new();
        for part in requested.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::ParentComponent),
                other => parts.push(other),
            }
        }
        if parts.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(TftpPath(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TftpPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bytes of one file being served. Shared by every transfer of that file.
pub trait FileContent: Send + Sync + fmt::Debug {
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills as much of `buf` as the file has from `offset`; returns the number of bytes read,
    /// short only at the end of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Whether reads are memory copies. Transfers read files that are not a few blocks ahead,
    /// so a 100 MiB image is not one system call per 512-byte block.
    fn in_memory(&self) -> bool {
        false
    }
}

impl FileContent for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }

    fn in_memory(&self) -> bool {
        true
    }
}

impl FileContent for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }

    fn in_memory(&self) -> bool {
        true
    }
}

/// Why a file cannot be served or stored. Each variant maps to the RFC 1350 error code the peer
/// receives, and its text (sent to the peer and logged) names the file, the reason and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error(
        "file not found: '{path}' does not exist in the {area}; put it there or fix the name the client asks for"
    )]
    NotFound { path: String, area: &'static str },
    #[error("access violation: '{path}' is refused because {reason}")]
    AccessDenied { path: String, reason: String },
    #[error(
        "file already exists: '{path}' is already in the upload directory and overwriting is disabled (allow it with --allow-overwrite, tftp.allow_overwrite, or pick another name)"
    )]
    AlreadyExists { path: String },
    #[error(
        "upload too large: '{path}' is {size} bytes, the limit is {limit} bytes (raise --max-upload-bytes, tftp.max_upload_bytes)"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("I/O error on '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl SourceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SourceError::NotFound { .. } => ErrorCode::FileNotFound,
            SourceError::AccessDenied { .. } => ErrorCode::AccessViolation,
            SourceError::AlreadyExists { .. } => ErrorCode::FileExists,
            SourceError::TooLarge { .. } => ErrorCode::DiskFull,
            SourceError::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorCode::DiskFull,
                io::ErrorKind::PermissionDenied => ErrorCode::AccessViolation,
                _ => ErrorCode::NotDefined,
            },
        }
    }

    /// The error for a file system failure on `path` in the directory called `area`.
    pub fn from_io(path: &TftpPath, area: &'static str, error: io::Error) -> SourceError {
        match error.kind() {
            io::ErrorKind::NotFound => SourceError::NotFound {
                path: path.to_string(),
                area,
            },
            io::ErrorKind::PermissionDenied => SourceError::AccessDenied {
                path: path.to_string(),
                reason: "the server process may not read it (check its permissions)".into(),
            },
            _ => SourceError::Io {
                path: path.to_string(),
                source: error,
            },
        }
    }
}

/// Answers read requests. Implemented by `bootherd_files::DirSource` and by the boot policy.
///
/// `open` is called on the network task for every request, so it must be cheap: resolve and
/// open, never read a whole file. Data is read block by block through [`FileContent`].
pub trait FileSource: Send + Sync + fmt::Debug {
    fn open(&self, path: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError>;

    /// Whether `open` would serve `path`. DHCP asks this before offering a boot file, so an
    /// offered file is one the TFTP server can deliver.
    fn contains(&self, path: &TftpPath) -> bool {
        self.open(path).is_ok()
    }
}

/// Several sources searched in order; the first that has the file serves it (none at all: a
/// source that has nothing, which `bootherd serve` uses when there is no bootloader
/// directory). A file that exists but is refused (outside its root, unreadable) is reported,
/// not skipped.
#[derive(Debug)]
pub struct FirstOf(pub Vec<Arc<dyn FileSource>>);

impl FileSource for FirstOf {
    fn open(&self, path: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
        let mut last = None;
        for source in &self.0 {
            match source.open(path) {
                Err(e @ SourceError::NotFound { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| SourceError::NotFound {
            path: path.to_string(),
            area: "TFTP root",
        }))
    }

    fn contains(&self, path: &TftpPath) -> bool {
        self.0.iter().any(|source| source.contains(path))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_into_the_root() {
        assert_eq!(
            TftpPath::parse("/pxelinux.0").unwrap().as_str(),
            "pxelinux.0"
        );
        assert_eq!(
            TftpPath::parse("\\boot\\x64\\wdsnbp.com").unwrap().as_str(),
            "boot/x64/wdsnbp.com"
        );
        assert_eq!(TftpPath::parse("a//b/./c").unwrap().as_str(), "a/b/c");
        assert_eq!(
            TftpPath::parse("../etc/passwd"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(
            TftpPath::parse("a\\..\\..\\x"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(TftpPath::parse("a\u{1}b"), Err(PathError::ControlCharacter));
        assert_eq!(TftpPath::parse("/"), Err(PathError::Empty));
        assert_eq!(TftpPath::parse("..."), Ok(TftpPath("...".into())));
    }
}
