//! The end of a transfer: its admission given back, and what it tells the counters, the
//! observer (machine timelines) and the log, in exactly one structured event.

use std::sync::atomic::Ordering;

use bootherd_tftp::{Outcome, TransferId, TransferReport};
use tracing::{info, warn};

use super::worker::Worker;
use crate::tftp::lock;

impl Worker {
    /// Reports a finished transfer; dropping its slot closes the socket (which also takes it
    /// out of the epoll set) unless it is kept idle for another transfer.
    pub(super) fn finish(&mut self, id: TransferId, outcome: Outcome) {
        let Some(mut slot) = self.transfers.remove(&id) else {
            return;
        };
        let shared = &self.shared;
        let counters = &shared.service.counters;
        shared.service.active.remove(slot.active_id);
        counters.active.fetch_sub(1, Ordering::Relaxed);
        lock(&shared.endpoint).finished(id);

        let transfer = &slot.transfer;
        let stats = *transfer.stats();
        let params = transfer.params();
        counters.bytes.fetch_add(stats.bytes, Ordering::Relaxed);
        counters
            .retransmits
            .fetch_add(stats.retransmits, Ordering::Relaxed);
        let success = outcome.is_success();
        let counter = if success {
            &counters.completed
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        counters.outcomes.add(outcome.kind());
        let duration = slot.started.elapsed();
        let client = slot.client;
        if let Some(observer) = &shared.service.observer {
            observer.transfer_finished(&TransferReport {
                client,
                file: &params.filename,
                write: transfer.is_write(),
                outcome: &outcome,
                bytes: stats.bytes,
                duration,
            });
        }
        let duration_ms = duration.as_millis() as u64;
        let direction = if transfer.is_write() { "write" } else { "read" };
        let options = params.describe_options();
        macro_rules! transfer_event {
            ($level:ident) => {
                $level!(
                    %client,
                    file = %params.filename,
                    direction,
                    mode = %params.mode,
                    options = %options,
                    // Only asked of the kernel when this event is logged.
                    local_port = slot.local_port(shared.local),
                    bytes = stats.bytes,
                    size = ?params.size,
                    packets = stats.packets,
                    retransmits = stats.retransmits,
                    duration_ms,
                    outcome = %outcome,
                    "TFTP transfer finished"
                )
            };
        }
        if success {
            transfer_event!(info);
        } else {
            transfer_event!(warn);
        }
        if let Some(socket) = slot.socket.take() {
            self.idle.keep(&self.epoll, socket, client);
        }
    }
}
