//! Counters per protocol. Each is bumped where its event happens (one relaxed add); labelled
//! counts are touched once per transfer or offer, not per packet.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::lock;

/// Counters by a label from a small fixed set (outcome, error code, architecture); touched
/// once per transfer or offer, not per packet, so a lock is cheap enough.
#[derive(Debug, Default)]
pub struct LabelCounts(Mutex<BTreeMap<&'static str, u64>>);

impl LabelCounts {
    pub fn add(&self, label: &'static str) {
        *lock(&self.0).entry(label).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.0).clone()
    }
}

/// ProxyDHCP responder counters.
#[derive(Debug, Default)]
pub struct DhcpCounters {
    pub requests: AtomicU64,
    pub offers: AtomicU64,
    pub acks: AtomicU64,
    pub declined: AtomicU64,
    pub malformed: AtomicU64,
    pub competing: AtomicU64,
    /// Offers and ACKs sent, by client architecture (`Arch::name`).
    pub by_arch: LabelCounts,
}

/// TFTP server counters.
#[derive(Debug, Default)]
pub struct TftpCounters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    pub bytes: AtomicU64,
    pub retransmits: AtomicU64,
    pub active: AtomicU64,
    /// Finished transfers by outcome (`Outcome::kind`).
    pub outcomes: LabelCounts,
    /// Refused requests by TFTP error code (`ErrorCode::name`).
    pub refusals: LabelCounts,
}

/// HTTP boot endpoint counters.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub scripts: AtomicU64,
    pub files: AtomicU64,
    /// Body bytes of scripts and image files served.
    pub bytes: AtomicU64,
    /// Requests for scripts or files that do not exist.
    pub not_found: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counts_add_up_per_label() {
        let counts = LabelCounts::default();
        counts.add("completed");
        counts.add("timed_out");
        counts.add("completed");
        let snapshot = counts.snapshot();
        assert_eq!(snapshot.get("completed"), Some(&2));
        assert_eq!(snapshot.get("timed_out"), Some(&1));
        assert_eq!(snapshot.len(), 2);
    }
}
