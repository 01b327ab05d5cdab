//! Writers of one file in several processes (a server and the CLI beside it, or two CLI runs)
//! take turns: each holds an exclusive `flock` on `.<file>.lock` across its whole
//! read-modify-write, so no writer replaces the file from a copy read before another's write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// An exclusive lock on a file's writers, released when dropped.
#[derive(Debug)]
pub struct WriteLock {
    _held: Flock<File>,
}

/// The lock file beside `path`: hidden, like the temporary files of a write.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".lock");
    path.with_file_name(name)
}

impl WriteLock {
    /// Waits until no other writer of `path` holds the lock, then holds it.
    pub fn acquire(path: &Path) -> io::Result<WriteLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path(path))?;
        let held = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(WriteLock { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Each holder sees nobody else inside; the lock is per open file, so threads with a
    /// lock each exclude each other as processes do.
    #[test]
    fn holders_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        let inside = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let _lock = WriteLock::acquire(&path).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(lock_path(&path).ends_with(".state.yaml.lock"));
    }
}
