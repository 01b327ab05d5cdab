//! bootherd-telemetry: what the running services report about themselves, and the dashboard,
//! the API and `/metrics` read: counters per protocol, the transfers running now, the sockets
//! listened on and the interfaces served.
//!
//! It sits below the drivers (which write it) and the web crate (which reads it), so the web
//! crate needs nothing from the drivers. Plain atomics and short-held locks, nothing async:
//! a counter is touched per request or per transfer, never awaited.

mod counters;
mod services;
mod transfers;

pub use counters::{DhcpCounters, HttpCounters, LabelCounts, TftpCounters};
pub use services::{InterfaceList, InterfaceState, Listener, Services};
pub use transfers::{ActiveTransfers, TransferProgress};

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holds these locks across a panic-prone section; recover rather than cascade.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
