//! The only module that knows the state file is YAML. Writes are atomic and durable: a
//! temporary file in the same directory, fsync, rename over the old file, fsync of the
//! directory. A crash at any point leaves either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Replaces `path` with `contents` atomically, keeping the file's permissions (a new file gets
/// the process's default).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let mode = fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    replace(path, contents, mode)
}

/// Replaces `path` with `contents` atomically, readable by the owner only from the first byte
/// (the admin password hash, API token hashes).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    replace(path, contents, Some(0o600))
}

/// Marks bootherd's temporary files: `.<name>.tmp-<pid>-<n>`; the pid lets a later start tell
/// a crashed writer's leftovers from a live writer's work.
const TEMP_MARKERS: [&str; 2] = [".tmp-", ".import-"];

pub(crate) fn temp_name(file_name: &str, marker: &str) -> String {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{file_name}{marker}{}-{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    )
}

fn replace(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), StoreError> {
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
    // Unique per write, not per process: threads of one process write the same file at once.
    let temp = dir.join(temp_name(&file_name, TEMP_MARKERS[0]));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut file = options.open(&temp)?;
        if let Some(mode) = mode {
            // The umask may have taken bits away; the old file's mode is what the user chose.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
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

/// Removes the temporary files a crashed writer left in `dir`: those whose writer process is
/// gone, or is this process (nothing of ours is in flight before the store is open; in a
/// container a restarted bootherd is pid 1 again). A live writer's files are left alone.
pub(crate) fn remove_stale_temps(dir: &Path) {
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
        let Some(pid) = TEMP_MARKERS.iter().find_map(|marker| {
            let (_, tail) = name.rsplit_once(marker)?;
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

/// Quotes MACs that stand alone as a key or a value: YAML 1.1 readers (PyYAML, Ansible) read
/// `52:54:00:12:34:56` as a base-60 integer. The emitter only quotes what YAML 1.2 would
/// misread, so this is done on its output; a MAC is hex digits and colons, so quoting it in
/// single quotes needs no escaping.
pub(crate) fn quote_macs(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + 64);
    for line in yaml.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let indent = body.len() - body.trim_start_matches([' ', '-']).len();
        let (head, rest) = body.split_at(indent);
        out.push_str(head);
        match rest
            .get(..17)
            .filter(|m| is_mac(m))
            .map(|m| (m, &rest[17..]))
        {
            Some((mac, tail)) if tail.is_empty() || tail.starts_with(':') => {
                out.push('\'');
                out.push_str(mac);
                out.push('\'');
                out.push_str(&quote_value(tail));
            }
            _ => out.push_str(&quote_value(rest)),
        }
        out.push_str(newline);
    }
    out
}

/// `key: 52:54:00:12:34:56` -> `key: '52:54:00:12:34:56'`.
fn quote_value(text: &str) -> String {
    match text.rsplit_once(": ") {
        Some((key, value)) if is_mac(value) => format!("{key}: '{value}'"),
        _ => text.to_string(),
    }
}

fn is_mac(text: &str) -> bool {
    text.len() == 17
        && text.bytes().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                b == b':'
            } else {
                b.is_ascii_hexdigit()
            }
        })
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
