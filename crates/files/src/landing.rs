//! Landing a file whole or not at all: the one way bootherd writes a file others read.
//!
//! The bytes go to a temporary file beside the target, are flushed to disk, and then appear
//! under the target's name in one step (a rename, or a link when an existing file must not be
//! replaced), after which the directory entry is flushed too. A reader sees the old file or
//! the new one, never a mix; a crash leaves at most a temporary file, which
//! [`remove_stale_temps`] clears at the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a temporary file is for; the marker in its name (`.<name><marker><pid>-<n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A rewrite of a file bootherd owns (state, manifests, secrets).
    Rewrite,
    /// An image file being imported into the store.
    Import,
    /// A TFTP upload.
    Upload,
}

impl Purpose {
    const ALL: [Purpose; 3] = [Purpose::Rewrite, Purpose::Import, Purpose::Upload];

    fn marker(self) -> &'static str {
        match self {
            Purpose::Rewrite => ".tmp-",
            Purpose::Import => ".import-",
            Purpose::Upload => ".upload-",
        }
    }
}

/// Whether landing may replace a file already at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    Allowed,
    /// Landing fails with `AlreadyExists` if the name was taken, even while the bytes were
    /// being written (a link, where a rename would silently replace the other file).
    Never,
}

/// A file being written under a temporary name. Dropped without [`Landing::land`], it
/// leaves nothing behind.
#[derive(Debug)]
pub struct Landing {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl Landing {
    /// Starts a file that will land at `target`. `mode`, when given, is set from the first byte
    /// (the umask cannot widen or narrow it); otherwise the process's default applies.
    pub fn start(target: &Path, purpose: Purpose, mode: Option<u32>) -> io::Result<Landing> {
        let dir = parent_of(target);
        let file_name = target
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} names no file", target.display())))?
            .to_string_lossy();
        loop {
            // Unique per write, not per process: threads of one process write one file at once.
            let temp = dir.join(temp_name(&file_name, purpose));
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            if let Some(mode) = mode {
                options.mode(mode);
            }
            let file = match options.open(&temp) {
                Ok(file) => file,
                // A crashed writer with our pid left it; take the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            let landing = Landing {
                temp,
                target: target.to_path_buf(),
                file: Some(file),
            };
            if let (Some(mode), Some(file)) = (mode, &landing.file) {
                // The umask may have taken bits away; the mode asked for is what counts.
                file.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            return Ok(landing);
        }
    }

    /// The temporary file, to write the contents into.
    pub fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the file has already landed"))
    }

    /// Flushes the contents to disk and puts them under the target's name.
    pub fn land(mut self, replace: Replace) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file has already landed"))?;
        file.sync_all()?;
        drop(file);
        match replace {
            Replace::Allowed => fs::rename(&self.temp, &self.target)?,
            Replace::Never => {
                fs::hard_link(&self.temp, &self.target)?;
                // Drop removes the temporary name.
            }
        }
        // The new name is durable only once the directory entry is on disk.
        File::open(parent_of(&self.target))?.sync_all()
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        // Also runs after landing, when a rename has already taken the temporary name away.
        let _ = fs::remove_file(&self.temp);
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `.<name><marker><pid>-<n>`: hidden, and the pid lets a later start tell a crashed writer's
/// leftovers from a live writer's work.
fn temp_name(file_name: &str, purpose: Purpose) -> String {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{file_name}{}{}-{}",
        purpose.marker(),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces `path` with `contents`, keeping the file's permissions (a new file gets the
/// process's default).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mode = fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    write_with_mode(path, contents, mode)
}

/// Replaces `path` with `contents`, readable by the owner only from the first byte (the admin
/// password hash, API token hashes).
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_with_mode(path, contents, Some(0o600))
}

fn write_with_mode(path: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut landing = Landing::start(path, Purpose::Rewrite, mode)?;
    landing.file()?.write_all(contents)?;
    landing.land(Replace::Allowed)
}

/// Removes the temporary files a crashed writer left in `dir`: those whose writer process is
/// gone, or is this process (nothing of ours is in flight before the store is open; in a
/// container a restarted bootherd is pid 1 again). A live writer's files are left alone.
pub fn remove_stale_temps(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') {
            continue;
        }
        let Some(pid) = Purpose::ALL.iter().find_map(|purpose| {
            let (_, tail) = name.rsplit_once(purpose.marker())?;
            tail.split('-').next()?.parse::<u32>().ok()
        }) else {
            continue;
        };
        let gone = !Path::new("/proc").join(pid.to_string()).exists();
        if gone || pid == std::process::id() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The mechanism behind crash safety: the file is replaced by a rename (a new inode), never
    /// rewritten in place, so a reader or a crash sees the old bytes or the new ones.
    #[test]
    fn the_file_is_replaced_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        write_atomic(&path, b"old").unwrap();
        let before = fs::metadata(&path).unwrap().ino();
        let reader = File::open(&path).unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_ne!(
            fs::metadata(&path).unwrap().ino(),
            before,
            "rewritten in place"
        );
        // A reader that opened the old version still reads it, whole.
        let mut old = String::new();
        io::Read::read_to_string(&mut &reader, &mut old).unwrap();
        assert_eq!(old, "old");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_rewrite_keeps_the_mode_and_a_private_file_is_never_wider_than_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.yaml");
        write_atomic(&path, b"one").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let secret = dir.path().join("admin-password");
        write_private(&secret, b"hash").unwrap();
        assert_eq!(fs::metadata(&secret).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_landing_dropped_leaves_nothing_and_never_replace_keeps_the_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("log.txt");
        let mut dropped = Landing::start(&target, Purpose::Upload, None).unwrap();
        dropped.file().unwrap().write_all(b"half").unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut first = Landing::start(&target, Purpose::Upload, None).unwrap();
        let mut second = Landing::start(&target, Purpose::Upload, None).unwrap();
        first.file().unwrap().write_all(b"first").unwrap();
        second.file().unwrap().write_all(b"second").unwrap();
        first.land(Replace::Never).unwrap();
        let err = second.land(Replace::Never).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_of_dead_writers_are_removed_and_real_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 2^22 + 1 is above Linux's pid_max ceiling: no live process has it.
        for purpose in Purpose::ALL {
            let stale = format!(".state.yaml{}4194305-0", purpose.marker());
            fs::write(dir.path().join(stale), b"x").unwrap();
        }
        fs::write(dir.path().join("state.yaml"), b"kept").unwrap();
        fs::write(dir.path().join(".hidden"), b"kept").unwrap();
        remove_stale_temps(dir.path());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "state.yaml"]);
    }
}
