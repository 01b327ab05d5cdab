//! The one rule for what may be served from a directory, asked by TFTP and HTTP alike: a
//! regular file reached from the directory without leaving it, resolved and opened in one step.
//!
//! Checking a path and then opening it is two steps, and a name swapped for a symlink between
//! them was served from outside the root. Linux's `openat2` with `RESOLVE_BENEATH` resolves
//! and opens atomically, relative to an open directory. Where `openat2` is missing (kernels
//! before 5.6, container runtimes whose seccomp profile predates it), the path is resolved
//! once and then opened one component at a time with `O_NOFOLLOW`, so a symlink that appears
//! after the check makes the open fail instead of being followed.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

/// What a symlink inside the served directory may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed while they stay inside the directory (an admin's bootloader directory, where
    /// Debian links `undionly.kpxe` to `ipxe.pxe` next to it).
    StayInside,
    /// Never followed: bootherd-managed directories (the image store) hold no symlinks, so one
    /// there was put by someone else.
    Refuse,
}

/// Why [`Beneath::open_file`] refused a path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeneathError {
    #[error("it is a symbolic link that leads outside the directory")]
    Outside,
    #[error("it is a symbolic link, and this directory serves none")]
    Symlink,
    #[error("it is a directory or device, not a regular file")]
    NotRegular,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A directory files are served from, held open so every lookup starts from the same place
/// even if its name is moved or replaced.
#[derive(Debug)]
pub struct Beneath {
    dir: OwnedFd,
    path: PathBuf,
    symlinks: Symlinks,
}

impl Beneath {
    /// Opens `dir` (made absolute and canonical, so messages and the fallback name it exactly).
    pub fn open(dir: &Path, symlinks: Symlinks) -> io::Result<Beneath> {
        let path = fs::canonicalize(dir)?;
        let dir = openat(
            nix::fcntl::AT_FDCWD,
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(Beneath {
            dir,
            path,
            symlinks,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file at `relative` (components separated by `/`, none of them `..`:
    /// callers pass parsed names) for reading.
    pub fn open_file(&self, relative: &str) -> Result<File, BeneathError> {
        let file = match self.open_atomically(relative) {
            Err(BeneathError::Io(e)) if openat2_unavailable(&e) => self.open_walking(relative),
            other => other,
        }?;
        if !file.metadata()?.is_file() {
            return Err(BeneathError::NotRegular);
        }
        Ok(file)
    }

    fn open_atomically(&self, relative: &str) -> Result<File, BeneathError> {
        let resolve = match self.symlinks {
            Symlinks::StayInside => {
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
            }
            Symlinks::Refuse => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        };
        // O_NONBLOCK: opening a FIFO someone left in the directory must not hang the server;
        // it is refused as not a regular file right after.
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(resolve);
        match openat2(self.dir.as_fd(), relative, how) {
            Ok(fd) => Ok(File::from(fd)),
            // RESOLVE_BENEATH reports an escape as EXDEV; RESOLVE_NO_SYMLINKS any symlink as ELOOP.
            Err(Errno::EXDEV) => Err(BeneathError::Outside),
            Err(Errno::ELOOP) if self.symlinks == Symlinks::Refuse => Err(BeneathError::Symlink),
            Err(e) => Err(BeneathError::Io(e.into())),
        }
    }

    /// Without `openat2`: resolve the name once, check it stays inside, then open that symlink-
    /// free path component by component, refusing to follow anything. A symlink swapped in
    /// after the check fails the open (ELOOP or ENOTDIR) rather than leading elsewhere.
    fn open_walking(&self, relative: &str) -> Result<File, BeneathError> {
        let joined = self.path.join(relative);
        let resolved = fs::canonicalize(&joined)?;
        let inside = resolved
            .strip_prefix(&self.path)
            .map_err(|_| BeneathError::Outside)?;
        if self.symlinks == Symlinks::Refuse && resolved != joined {
            return Err(BeneathError::Symlink);
        }
        let components: Vec<_> = inside
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        let Some((last, parents)) = components.split_last() else {
            return Err(BeneathError::NotRegular);
        };
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut dir: Option<OwnedFd> = None;
        for name in parents {
            let at = dir.as_ref().map_or(self.dir.as_fd(), |d| d.as_fd());
            let next = openat(
                at,
                *name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | nofollow,
                Mode::empty(),
            )
            .map_err(swapped)?;
            dir = Some(next);
        }
        let at = dir.as_ref().map_or(self.dir.as_fd(), |d| d.as_fd());
        let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | nofollow;
        let fd = openat(at, *last, flags, Mode::empty()).map_err(swapped)?;
        Ok(File::from(fd))
    }
}

/// A component that was a plain directory or file when resolved and is a symlink now.
fn swapped(errno: Errno) -> BeneathError {
    match errno {
        Errno::ELOOP | Errno::ENOTDIR => BeneathError::Outside,
        other => BeneathError::Io(other.into()),
    }
}

fn openat2_unavailable(error: &io::Error) -> bool {
    // ENOSYS: the kernel lacks it; EPERM: a seccomp filter refuses system calls it does not know.
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOSYS | Errno::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/file"), b"inside").unwrap();
        fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("sub/file", root.join("near")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("far")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("absolute")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        (dir, root)
    }

    fn both_ways(beneath: &Beneath, name: &str) -> [Result<File, BeneathError>; 2] {
        [
            beneath.open_atomically(name).and_then(regular),
            beneath.open_walking(name).and_then(regular),
        ]
    }

    fn regular(file: File) -> Result<File, BeneathError> {
        if file.metadata()?.is_file() {
            Ok(file)
        } else {
            Err(BeneathError::NotRegular)
        }
    }

    #[test]
    fn symlinks_inside_are_followed_and_those_leaving_are_refused() {
        let (_dir, root) = tree();
        let beneath = Beneath::open(&root, Symlinks::StayInside).unwrap();
        for result in both_ways(&beneath, "near") {
            assert!(result.is_ok());
        }
        for name in ["far", "absolute", "etc/passwd"] {
            for result in both_ways(&beneath, name) {
                assert!(
                    matches!(result, Err(BeneathError::Outside)),
                    "{name}: {result:?}"
                );
            }
        }
        assert!(matches!(
            beneath.open_file("sub"),
            Err(BeneathError::NotRegular)
        ));
    }

    #[test]
    fn a_directory_that_serves_no_symlinks_refuses_even_those_inside() {
        let (_dir, root) = tree();
        let beneath = Beneath::open(&root, Symlinks::Refuse).unwrap();
        assert!(beneath.open_file("sub/file").is_ok());
        for name in ["near", "far", "absolute", "etc/passwd"] {
            for result in both_ways(&beneath, name) {
                assert!(
                    matches!(result, Err(BeneathError::Symlink | BeneathError::Outside)),
                    "{name}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (_dir, root) = tree();
        nix::unistd::mkfifo(&root.join("pipe"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let beneath = Beneath::open(&root, Symlinks::StayInside).unwrap();
        assert!(matches!(
            beneath.open_file("pipe"),
            Err(BeneathError::NotRegular)
        ));
    }
}
