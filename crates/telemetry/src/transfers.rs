//! The transfers running right now, as the dashboard shows them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::lock;

/// A transfer in progress.
#[derive(Debug)]
pub struct TransferProgress {
    pub client: SocketAddr,
    pub file: String,
    pub write: bool,
    /// The file's size when known (reads, and writes that sent tsize).
    pub size: Option<u64>,
    pub started: SystemTime,
    /// Bytes acknowledged (read) or received (write) so far.
    pub bytes: AtomicU64,
}

/// Each transfer updates its own counter (one relaxed store per packet); the map itself is
/// touched only at the start and end of a transfer.
#[derive(Debug, Default)]
pub struct ActiveTransfers {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<TransferProgress>>>,
}

impl ActiveTransfers {
    pub fn list(&self) -> Vec<Arc<TransferProgress>> {
        lock(&self.running).values().cloned().collect()
    }

    /// Lists a transfer until `remove` is called with the returned id.
    pub fn add(&self, progress: TransferProgress) -> (u64, Arc<TransferProgress>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(progress);
        lock(&self.running).insert(id, progress.clone());
        (id, progress)
    }

    pub fn remove(&self, id: u64) {
        lock(&self.running).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_listed_from_add_to_remove() {
        let active = ActiveTransfers::default();
        let (id, progress) = active.add(TransferProgress {
            client: SocketAddr::from(([10, 0, 0, 5], 2000)),
            file: "pxelinux.0".into(),
            write: false,
            size: Some(42),
            started: SystemTime::UNIX_EPOCH,
            bytes: AtomicU64::new(0),
        });
        progress.bytes.store(21, Ordering::Relaxed);
        let listed = active.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].bytes.load(Ordering::Relaxed), 21);
        active.remove(id);
        assert!(active.list().is_empty());
    }
}
