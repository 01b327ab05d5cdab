//! bootherd-net: every socket bootherd opens lives here.
//!
//! The protocol crates decide what to send; this crate decides how: socket options
//! (IP_PKTINFO for replying from the right address, broadcast reception, transfer port
//! policy) and the loops that run the state machines: tokio tasks for DHCP, epoll threads for
//! TFTP transfers (`tftp::engine`). Servers take sockets that are already bound plus a
//! cancellation token, so tests bind 127.0.0.1:0 and only the binary binds privileged ports.

pub mod dhcp;
pub mod interfaces;
pub mod tftp;
pub mod udp;

pub use dhcp::{DhcpService, serve as serve_dhcp, watch_competitors};
pub use interfaces::{Interfaces, Selection};
pub use tftp::{TftpConfig, TftpService, TransferPorts, serve as serve_tftp};
