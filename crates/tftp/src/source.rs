//! Where files come from and where uploads go.
//!
//! The transfer state machines only see the [`FileContent`] and [`UploadSink`] traits; the
//! directory-backed implementations here are the ones `bootherd tftp` uses, and the boot crate
//! implements [`FileSource`] over the image store. These are the only parts of the crate that
//! touch the file system, and they do it synchronously: the network driver calls them from a
//! blocking-capable context.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::beneath::{Beneath, BeneathError, Symlinks};
use crate::packet::ErrorCode;

mod uploads;
pub use uploads::{DirUploads, UploadSink, UploadTarget};

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

    fn from_io(path: &TftpPath, area: &'static str, error: io::Error) -> SourceError {
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

/// Answers read requests. Implemented by [`DirSource`] and, later, by the boot policy.
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

/// Several sources searched in order; the first that has the file serves it. `bootherd serve`
/// layers the TFTP root over the bootloader directory this way. A file that exists but is
/// refused (outside its root, unreadable) is reported, not skipped.
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

/// Serves the regular files below one directory.
///
/// Transfers of the same file share one open file: a boot storm of 1000 clients fetching one
/// bootloader holds one file descriptor and no per-client copy. Small files (bootloaders are
/// 70 KiB to a few MiB) are read into memory once when opened, within a fixed budget, so each
/// block is a memory copy instead of a `pread` system call; larger files, and anything past
/// the budget, are read block by block with `pread` from the page cache. The handle map holds
/// only weak references, so a file is open (and in memory) exactly as long as some transfer is
/// sending it, and an edited file (new inode, size or mtime) gets a fresh handle.
#[derive(Debug)]
pub struct DirSource {
    root: Beneath,
    /// What the directory is called in refusals ("TFTP root", "bootloader directory").
    area: &'static str,
    open_files: Mutex<HashMap<PathBuf, OpenFile>>,
    /// Files served lately, held open a moment past their last transfer: machines ask for
    /// the same bootloader one after another as often as all at once, and reopening cost an
    /// open, two stats, a read and a close per request.
    warm: Mutex<VecDeque<(Instant, Arc<DiskFile>)>>,
    /// Bytes of file contents held in memory right now, across all open files.
    in_memory: Arc<AtomicU64>,
}

/// How long a file stays open after it was last served, and how many stay so.
const KEEP_WARM: Duration = Duration::from_secs(2);
const WARM_FILES: usize = 16;

/// Files up to this size are held in memory while they are being sent.
const IN_MEMORY_FILE_MAX: u64 = 4 << 20;
/// At most this much file content is held in memory at once (the rest is read with pread), so
/// requests for many different files cannot grow memory without bound.
const IN_MEMORY_BUDGET: u64 = 32 << 20;

#[derive(Debug)]
struct OpenFile {
    stamp: FileStamp,
    file: Weak<DiskFile>,
}

/// Identifies one version of a file, so an edited file is never served from a stale handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

#[derive(Debug)]
struct DiskFile {
    file: File,
    len: u64,
    /// The whole file, when it is small and the budget allowed it.
    memory: Option<Box<[u8]>>,
    in_memory: Arc<AtomicU64>,
}

impl DiskFile {
    fn new(file: File, len: u64, in_memory: Arc<AtomicU64>) -> DiskFile {
        let mut disk = DiskFile {
            file,
            len,
            memory: None,
            in_memory,
        };
        if len <= IN_MEMORY_FILE_MAX && disk.reserve(len) {
            let mut contents = vec![0u8; len as usize];
            match disk.file.read_exact_at(&mut contents, 0) {
                Ok(()) => disk.memory = Some(contents.into_boxed_slice()),
                // Shrunk or unreadable: give the budget back and serve it with pread, which
                // copes with (and reports) both.
                Err(_) => {
                    disk.in_memory.fetch_sub(len, Ordering::Relaxed);
                }
            }
        }
        disk
    }

    fn reserve(&self, len: u64) -> bool {
        self.in_memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + len <= IN_MEMORY_BUDGET).then_some(used + len)
            })
            .is_ok()
    }
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        if self.memory.is_some() {
            self.in_memory.fetch_sub(self.len, Ordering::Relaxed);
        }
    }
}

impl FileContent for DiskFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn in_memory(&self) -> bool {
        self.memory.is_some()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(memory) = &self.memory {
            return <[u8] as FileContent>::read_at(memory, offset, buf);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.len.saturating_sub(offset)).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < want {
            match self
                .file
                .read_at(&mut buf[filled..want], offset + filled as u64)
            {
                // The file shrank under us; serve what exists rather than loop forever.
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

const AREA_ROOT: &str = "TFTP root";

impl DirSource {
    /// Fails if `root` does not exist or is not a directory, so a typo in the configuration is
    /// reported at start-up rather than as "file not found" on every request.
    ///
    /// Symlinks are followed while they stay inside `root`.
    pub fn new(root: impl AsRef<Path>) -> io::Result<DirSource> {
        DirSource::with_symlinks(root.as_ref(), Symlinks::StayInside)
    }

    /// A directory bootherd manages itself (the image store): no symlink in it is followed.
    pub fn managed(root: impl AsRef<Path>) -> io::Result<DirSource> {
        DirSource::with_symlinks(root.as_ref(), Symlinks::Refuse)
    }

    fn with_symlinks(root: &Path, symlinks: Symlinks) -> io::Result<DirSource> {
        if !fs::metadata(root)
            .map_err(|e| io::Error::new(e.kind(), format!("TFTP root {}: {e}", root.display())))?
            .is_dir()
        {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("TFTP root {} is not a directory", root.display()),
            ));
        }
        let root = Beneath::open(root, symlinks)
            .map_err(|e| io::Error::new(e.kind(), format!("TFTP root {}: {e}", root.display())))?;
        Ok(DirSource {
            root,
            area: AREA_ROOT,
            open_files: Mutex::new(HashMap::new()),
            warm: Mutex::new(VecDeque::new()),
            in_memory: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Names the directory in refusals, so a user reads which directory to look in.
    pub fn named(mut self, area: &'static str) -> DirSource {
        self.area = area;
        self
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Marks `file` as just served. Files not served for [`KEEP_WARM`] are let go (at the
    /// next request, so an idle server holds at most [`WARM_FILES`] of them).
    fn keep_warm(&self, file: &Arc<DiskFile>) {
        let now = Instant::now();
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        warm.retain(|(at, _)| now.duration_since(*at) < KEEP_WARM);
        if let Some(entry) = warm.iter_mut().find(|(_, kept)| Arc::ptr_eq(kept, file)) {
            entry.0 = now;
            return;
        }
        if warm.len() >= WARM_FILES {
            warm.pop_front();
        }
        warm.push_back((now, file.clone()));
    }
}

impl FileSource for DirSource {
    fn open(&self, path: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
        // Resolved and opened in one step (see `beneath`); everything after works on the open
        // file, so what is served is what was checked.
        let file = self.root.open_file(path.as_str()).map_err(|e| match e {
            BeneathError::Io(e) => SourceError::from_io(path, self.area, e),
            refused => SourceError::AccessDenied {
                path: path.to_string(),
                reason: match refused {
                    BeneathError::Outside => {
                        format!("it is a symbolic link that leads outside the {}", self.area)
                    }
                    other => other.to_string(),
                },
            },
        })?;
        let meta = file
            .metadata()
            .map_err(|e| SourceError::from_io(path, self.area, e))?;
        let stamp = FileStamp::of(&meta);
        let key = PathBuf::from(path.as_str());
        // A poisoned lock only means another thread panicked while holding it; the map is still
        // a valid set of weak pointers.
        let mut open_files = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = open_files.get(&key) {
            if entry.stamp == stamp {
                if let Some(shared) = entry.file.upgrade() {
                    drop(open_files);
                    self.keep_warm(&shared);
                    return Ok(shared);
                }
            }
        }
        let shared = Arc::new(DiskFile::new(file, stamp.len, self.in_memory.clone()));
        if open_files.len() >= 1024 {
            open_files.retain(|_, entry| entry.file.strong_count() > 0);
        }
        open_files.insert(
            key,
            OpenFile {
                stamp,
                file: Arc::downgrade(&shared),
            },
        );
        drop(open_files);
        self.keep_warm(&shared);
        Ok(shared)
    }
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

    /// Small files are served from memory within the budget, the rest with pread; both give
    /// the same bytes, and the budget comes back when the last transfer lets go.
    #[test]
    fn small_files_in_memory_within_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        let small: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let large: Vec<u8> = (0..(IN_MEMORY_FILE_MAX as u32 + 10))
            .map(|i| (i % 7) as u8)
            .collect();
        fs::write(dir.path().join("small"), &small).unwrap();
        fs::write(dir.path().join("large"), &large).unwrap();
        let source = DirSource::new(dir.path()).unwrap();
        let read_all = |content: &Arc<dyn FileContent>| {
            let mut out = Vec::new();
            let mut block = vec![0u8; 1432];
            loop {
                let n = content.read_at(out.len() as u64, &mut block).unwrap();
                out.extend_from_slice(&block[..n]);
                if n < block.len() {
                    return out;
                }
            }
        };
        let a = source.open(&TftpPath::parse("small").unwrap()).unwrap();
        let b = source.open(&TftpPath::parse("small").unwrap()).unwrap();
        assert_eq!(
            source.in_memory.load(Ordering::Relaxed),
            300_000,
            "shared, held once"
        );
        let big = source.open(&TftpPath::parse("large").unwrap()).unwrap();
        assert_eq!(
            source.in_memory.load(Ordering::Relaxed),
            300_000,
            "too large for memory"
        );
        assert!(read_all(&a) == small && read_all(&b) == small);
        assert!(read_all(&big) == large);
        let first = Arc::as_ptr(&a);
        drop((a, b, big));
        // Kept warm a moment after its last transfer: the next request finds it open.
        assert_eq!(source.in_memory.load(Ordering::Relaxed), 300_000);
        let again = source.open(&TftpPath::parse("small").unwrap()).unwrap();
        assert!(std::ptr::addr_eq(Arc::as_ptr(&again), first));
        drop(again);
        // Once it has cooled down, the memory goes back to the budget.
        source.warm.lock().unwrap().clear();
        assert_eq!(source.in_memory.load(Ordering::Relaxed), 0);

        // Past the budget, files are still served, with pread.
        source
            .in_memory
            .store(IN_MEMORY_BUDGET - 1000, Ordering::Relaxed);
        let c = source.open(&TftpPath::parse("small").unwrap()).unwrap();
        assert_eq!(
            source.in_memory.load(Ordering::Relaxed),
            IN_MEMORY_BUDGET - 1000
        );
        assert!(read_all(&c) == small);
    }

    #[test]
    fn dir_source_serves_shares_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("boot.bin"), b"hello").unwrap();
        fs::write(outside.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("boot.bin", dir.path().join("inside-link")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let source = DirSource::new(dir.path()).unwrap();

        let a = source.open(&TftpPath::parse("boot.bin").unwrap()).unwrap();
        let b = source.open(&TftpPath::parse("/boot.bin").unwrap()).unwrap();
        assert_eq!(a.len(), 5);
        // Same handle: concurrent transfers share one open file.
        assert!(std::ptr::addr_eq(Arc::as_ptr(&a), Arc::as_ptr(&b)));
        let mut buf = [0u8; 8];
        assert_eq!(a.read_at(1, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ello");

        let err = source.open(&TftpPath::parse("link").unwrap()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessViolation);
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(
            source
                .open(&TftpPath::parse("inside-link").unwrap())
                .is_ok()
        );
        // Symlinked directories on the way: followed inside the root, refused out of it.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("outdir")).unwrap();
        fs::write(dir.path().join("sub/deep.bin"), b"deep").unwrap();
        std::os::unix::fs::symlink("sub", dir.path().join("sublink")).unwrap();
        let err = source
            .open(&TftpPath::parse("outdir/secret").unwrap())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessViolation, "{err}");
        assert_eq!(
            source
                .open(&TftpPath::parse("sublink/deep.bin").unwrap())
                .unwrap()
                .len(),
            4
        );
        assert!(source.contains(&TftpPath::parse("sub/deep.bin").unwrap()));
        assert!(!source.contains(&TftpPath::parse("outdir/secret").unwrap()));
        assert!(!source.contains(&TftpPath::parse("sub").unwrap()));
        let err = source
            .open(&TftpPath::parse("missing").unwrap())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::FileNotFound);
        assert!(err.to_string().contains("'missing'"), "{err}");
        let err = source.open(&TftpPath::parse("sub").unwrap()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessViolation);
        for (name, servable) in [
            ("boot.bin", true),
            ("inside-link", true),
            ("link", false),
            ("sub", false),
            ("missing", false),
        ] {
            assert_eq!(
                source.contains(&TftpPath::parse(name).unwrap()),
                servable,
                "{name}"
            );
        }
    }

    #[test]
    fn first_of_searches_in_order() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        fs::write(top.path().join("a"), b"top").unwrap();
        fs::write(bottom.path().join("a"), b"bottom").unwrap();
        fs::write(bottom.path().join("b"), b"b").unwrap();
        let layered = FirstOf(vec![
            Arc::new(DirSource::new(top.path()).unwrap()),
            Arc::new(DirSource::new(bottom.path()).unwrap()),
        ]);
        assert_eq!(
            layered.open(&TftpPath::parse("a").unwrap()).unwrap().len(),
            3
        );
        assert_eq!(
            layered.open(&TftpPath::parse("b").unwrap()).unwrap().len(),
            1
        );
        assert!(layered.contains(&TftpPath::parse("b").unwrap()));
        let err = layered.open(&TftpPath::parse("c").unwrap()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FileNotFound);
    }

    #[test]
    fn edited_file_is_not_served_stale() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"one").unwrap();
        let source = DirSource::new(dir.path()).unwrap();
        let first = source.open(&TftpPath::parse("f").unwrap()).unwrap();
        fs::write(dir.path().join("f"), b"two!").unwrap();
        let second = source.open(&TftpPath::parse("f").unwrap()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(second.read_at(0, &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"two!");
        assert_eq!(first.len(), 3);
        let mut buf = [0u8; 16];
        assert_eq!(second.read_at(2, &mut buf).unwrap(), 2);
        assert_eq!(second.read_at(4, &mut buf).unwrap(), 0);
    }
}
