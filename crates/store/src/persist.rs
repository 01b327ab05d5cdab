//! The only module that knows the state file is YAML. Writes are atomic and durable: a
//! temporary file in the same directory, fsync, rename over the old file, fsync of the
//! directory. A crash at any point leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// Parses YAML text; errors carry the line and column the parser stopped at.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, StoreError> {
    serde_yaml_ng::from_str(text).map_err(|e| {
        let location = e.location();
        let message = e.to_string();
        let mut line = location.as_ref().map(|l| l.line());
        let mut column = location.as_ref().map(|l| l.column());
        // Inside a tagged profile the parser only knows where the profile starts; when the
        // message names the offending word, point at the line that has it.
        if let Some(word) = quoted_word(&message) {
            let from = line.unwrap_or(1).saturating_sub(1);
            if let Some(found) = text.lines().skip(from).position(|l| l.contains(word)) {
                line = Some(from + found + 1);
                column = None;
            }
        }
        StoreError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// The word in backquotes in "unknown field `kernal`" or "unknown variant `floppy`".
fn quoted_word(message: &str) -> Option<&str> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    rest.split_once('`').map(|(word, _)| word)
}

pub(crate) fn to_yaml<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_yaml_ng::to_string(value).map_err(|e| StoreError::Io {
        path: PathBuf::new(),
        source: io::Error::other(e.to_string()),
    })
}

/// Replaces `path` with `contents` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let io_error = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(io::Error::other("no file name")))?
        .to_string_lossy();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mechanism behind crash safety: the file is replaced by a rename (a new inode), never
    /// rewritten in place, so a reader or a crash sees the old bytes or the new ones.
    #[test]
    fn the_file_is_replaced_not_rewritten() {
        use std::os::unix::fs::MetadataExt;
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
}
