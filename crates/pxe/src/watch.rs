//! Spotting another PXE server on the segment. Two servers answering the same PXE client is the
//! most common cause of "it boots the wrong thing" (and of iPXE chainload loops), so bootherd
//! watches the offers other servers broadcast and says so.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType, Opcode, OptionCode};

use crate::request::MacAddr;

/// Another server's offer that carries boot information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignBootOffer {
    pub server: Ipv4Addr,
    pub client: MacAddr,
    /// The boot file it offers, if any.
    pub bootfile: Option<String>,
    /// It answers as a PXE server (option 60 "PXEClient").
    pub pxe: bool,
}

/// Looks at a DHCP reply seen on the client port. Returns `Some` when a server other than us
/// offers something to boot: a PXE offer or a boot file name.
pub fn foreign_boot_offer(datagram: &[u8], ours: &[Ipv4Addr]) -> Option<ForeignBootOffer> {
    let message = crate::request::decode_keeping(datagram, &[53, 54, 60, 67]).ok()?;
    if message.opcode() != Opcode::BootReply {
        return None;
    }
    let opts = message.opts();
    if !matches!(opts.msg_type(), Some(MessageType::Offer | MessageType::Ack)) {
        return None;
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => message.siaddr(),
    };
    if ours.contains(&server) || server.is_unspecified() {
        return None;
    }
    let pxe = matches!(opts.get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient"));
    let bootfile = match opts.get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(name)) => Some(
            String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string(),
        ),
        _ => message.fname().map(|f| {
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string()
        }),
    }
    .filter(|name| !name.is_empty());
    if !pxe && bootfile.is_none() {
        return None;
    }
    let chaddr = message.chaddr();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(chaddr.get(..6)?);
    Some(ForeignBootOffer {
        server,
        client: MacAddr(mac),
        bootfile,
        pxe,
    })
}
