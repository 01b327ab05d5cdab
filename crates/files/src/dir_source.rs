//! The directory file source: serves the regular files below one directory, through the
//! serving rule in [`crate::beneath`]. `bootherd tftp` serves a directory with it, and the boot
//! crate serves the bootloader directory and the image store.
//!
//! Opening must be cheap (the TFTP engine opens on its network thread): a file is resolved and
//! opened, never read whole, except small files read once into memory within a budget.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bootherd_tftp::{FileContent, FileSource, SourceError, TftpPath};

use crate::beneath::{Beneath, BeneathError, Symlinks};

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
    use bootherd_tftp::{ErrorCode, FirstOf};

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

    /// A name swapped between a regular file and a symlink leading out of the root, while the
    /// source serves it: no open may ever return what lies outside (the check and the open used
    /// to be two steps, and the swap landed between them 4 times in 3000 requests).
    #[test]
    fn a_file_swapped_for_a_symlink_is_never_served_from_outside_the_root() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"outside the root").unwrap();
        std::fs::write(root.join("boot.bin"), b"inside").unwrap();
        let source = DirSource::new(&root).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (root, secret, stop) = (root.clone(), secret.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A fresh inode each time, so the source cannot answer from a handle it holds.
                    let staged = root.join(format!(".staged-{round}"));
                    std::fs::write(&staged, b"inside").unwrap();
                    std::fs::rename(&staged, root.join("boot.bin")).unwrap();
                    let link = root.join(format!(".link-{round}"));
                    std::os::unix::fs::symlink(&secret, &link).unwrap();
                    std::fs::rename(&link, root.join("boot.bin")).unwrap();
                    round += 1;
                }
            })
        };
        let path = TftpPath::parse("boot.bin").unwrap();
        let started = Instant::now();
        let mut leaked = 0;
        let mut opens = 0;
        while opens < 20_000 && started.elapsed() < Duration::from_secs(10) {
            if let Ok(file) = source.open(&path) {
                let mut buf = [0u8; 32];
                let n = file.read_at(0, &mut buf).unwrap();
                if &buf[..n] == b"outside the root" {
                    leaked += 1;
                }
            }
            opens += 1;
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            leaked, 0,
            "served the file outside the root {leaked} times in {opens} opens"
        );
    }
}
