//! The only module that knows the state file is YAML. Writes are atomic and durable
//! (`bootherd_files::landing`): a crash at any point leaves either the old file or the new
//! one, never a mix.

use std::io;
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

/// Replaces `path` with `contents` atomically, keeping the file's permissions (a new file gets
/// the process's default).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    bootherd_files::write_atomic(path, contents).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` with `contents` atomically, readable by the owner only from the first byte
/// (the admin password hash, API token hashes).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    bootherd_files::write_private(path, contents).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
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
