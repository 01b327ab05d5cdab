//! bootherd-tftp: a sans-IO TFTP server core.
//!
//! What it does: decodes and encodes TFTP packets (RFC 1350, 2347, 2348, 2349, 7440), decides
//! requests ([`accept`]), negotiates options the way UEFI firmware demands, and runs read and
//! write transfers as state machines with windowing, block-number rollover, netascii and
//! adaptive retransmission.
//!
//! What it does not do: open sockets, read the clock or spawn tasks. Datagrams go in as bytes
//! and come out through `poll_transmit`; time goes in as `now`; the next deadline comes out of
//! `poll_timeout`. That makes every behaviour testable without a network and without waiting
//! (see the tests in `tests.rs`), and leaves the choice of sockets, ports and runtime to the
//! driver in `bootherd-net`. Files are reached through the [`source`] traits only; the
//! directory implementations are in `bootherd-files`. `clippy.toml` forbids the clock here.

pub mod endpoint;
pub mod netascii;
pub mod options;
pub mod packet;
mod read;
pub mod source;
mod timer;
mod transfer;
mod write;

#[cfg(test)]
mod tests;

pub use endpoint::{
    Busy, Endpoint, EndpointConfig, ListenerEvent, NewRequest, PortGuard, Running, Stray,
    StrayCause, TransferId,
};
pub use options::{NegotiationLimits, RequestedOptions};
pub use packet::{DecodeError, ErrorCode, Mode, Packet, Request};
pub use read::ReadTransfer;
pub use source::{
    FileContent, FileSource, FirstOf, PathError, SourceError, TftpPath, UploadSink, UploadTarget,
};
pub use timer::TimerConfig;
pub use transfer::{
    ErrorRateLimiter, Outcome, Params, Refusal, Stats, Transfer, TransferConfig, TransferObserver,
    TransferReport, Uploads, accept,
};
pub use write::WriteTransfer;
