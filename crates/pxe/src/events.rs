//! What the responder saw and did, as data. The network driver reports every step here; the
//! boot crate turns them into each machine's timeline, where "offer sent, bootloader never
//! requested" points at a firewall rather than at bootherd.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::arch::Arch;
use crate::request::{Firmware, MacAddr, ServerPort};
use crate::watch::ForeignBootOffer;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PxeEvent {
    /// A PXE or HTTP boot request was classified.
    Request {
        mac: MacAddr,
        port: ServerPort,
        message_type: String,
        arch: Arch,
        firmware: Firmware,
        vendor_class: String,
        guid: Option<Vec<u8>>,
        relay: Option<Ipv4Addr>,
        local_ip: Ipv4Addr,
        /// The client's own address when it already has one (ciaddr, e.g. in the port-4011
        /// request), so later TFTP and HTTP requests can be matched to the machine.
        client_ip: Option<Ipv4Addr>,
    },
    /// We answered it.
    Replied {
        mac: MacAddr,
        port: ServerPort,
        message_type: String,
        bootfile: String,
        destination: SocketAddrV4,
    },
    /// A PXE client took `address` from the LAN's DHCP server (its REQUEST to that server, seen
    /// because it is broadcast): its later TFTP and HTTP requests come from there.
    AddressAccepted {
        mac: MacAddr,
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    /// The policy chose not to answer this machine.
    Declined {
        mac: MacAddr,
        reason: crate::policy::Decline,
    },
    /// Another server on the segment offered something to boot.
    CompetingServer(ForeignBootOffer),
}

/// Receives events; implemented by the boot crate's timeline. Must not block.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: PxeEvent);
}

/// Discards events (the log has them too); for `bootherd serve` before the store exists, and
/// for tests that do not look at timelines.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn record(&self, _: PxeEvent) {}
}
