//! bootherd-pxe: a sans-IO ProxyDHCP responder.
//!
//! What it does: decodes DHCP requests (on dhcproto), classifies PXE and HTTP boot clients into
//! a [`PxeRequest`] (MAC, architecture, firmware, GUID, relay), asks a [`BootPolicy`] what the
//! machine should boot, and builds the reply that real firmware accepts: no address (yiaddr
//! 0), our own address as next-server, option 43 where the firmware needs it, and the right
//! destination (broadcast, unicast, relay, or back to port 4011). It also recognises other
//! servers' boot offers ([`watch`]).
//!
//! What it does not do: open sockets, pick interfaces or decide what to boot. The network
//! driver supplies the arrival address and interface and sends the bytes; the policy decides.

pub mod arch;
pub mod events;
pub mod policy;
pub mod reply;
pub mod request;
pub mod vendor;
pub mod watch;

#[cfg(test)]
mod tests;

pub use arch::{Arch, ArchKey, Cpu, Platform};
pub use events::{EventSink, NoEvents, PxeEvent};
pub use policy::{BootOffer, BootPolicy, Decline, DeclineCause};
pub use reply::{Destination, Reply, handle, respond};
pub use request::{
    Arrival, ClientClass, Firmware, Ignored, MacAddr, PxeRequest, ServerPort, classify,
    decode_message,
};
pub use watch::{ForeignBootOffer, foreign_boot_offer};
