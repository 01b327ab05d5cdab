//! Building the answer: a ProxyDHCP OFFER (port 67) or ACK (port 4011) that hands out no
//! address, only where to boot from.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};

use crate::arch::Platform;
use crate::policy::{BootOffer, BootPolicy};
use crate::request::{self, Arrival, ClientClass, Firmware, Ignored, PxeRequest, ServerPort};
use crate::vendor;

/// RFC 1542 §3.4: BOOTP messages are at least 300 bytes; some PXE ROMs drop shorter replies.
const MIN_REPLY_LEN: usize = 300;
const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub addr: SocketAddrV4,
    /// Sent to the limited broadcast address: the driver must send it out of `ifindex`.
    pub broadcast: bool,
    pub ifindex: Option<u32>,
    /// Our address on the client's segment: the reply's source address.
    pub source_ip: Ipv4Addr,
}

/// An encoded reply and what it says, for the log and the machine's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub destination: Destination,
    pub message_type: MessageType,
    pub offer: BootOffer,
    /// Whether option 43 was included, and why not when it was not.
    pub vendor_options: bool,
}

/// The whole responder step: decode, classify, ask the policy, build the reply.
pub fn handle(
    datagram: &[u8],
    arrival: Arrival,
    policy: &dyn BootPolicy,
) -> Result<(PxeRequest, Reply), Ignored> {
    let message = request::decode_message(datagram)?;
    let request = request::classify(&message, arrival)?;
    let reply = respond(&request, policy)?;
    Ok((request, reply))
}

/// Builds the reply for a classified request, or says why there is none.
pub fn respond(request: &PxeRequest, policy: &dyn BootPolicy) -> Result<Reply, Ignored> {
    let offer = policy
        .boot_offer(request)
        .map_err(|reason| Ignored::Declined {
            request: Box::new(request.clone()),
            reason,
        })?;
    let server_ip = request.arrival.local_ip;
    let message_type = match (request.arrival.port, request.message_type) {
        (ServerPort::Dhcp, MessageType::Discover) => MessageType::Offer,
        _ => MessageType::Ack,
    };

    let mut reply = v4::Message::new_with_id(
        request.xid,
        request.ciaddr,
        // Never an address: the LAN's DHCP server owns those.
        Ipv4Addr::UNSPECIFIED,
        server_ip,
        request.relay.unwrap_or(Ipv4Addr::UNSPECIFIED),
        &request.mac.0,
    );
    reply.set_opcode(Opcode::BootReply);
    if request.broadcast_flag {
        reply.set_flags(v4::Flags::default().set_broadcast());
    }
    let bootfile = offer.bootfile();
    // The fixed `file` field holds 127 characters plus NUL; longer names (URLs) travel in
    // option 67 only.
    if bootfile.len() < 128 {
        reply.set_fname_str(bootfile);
    }
    if matches!(offer, BootOffer::Tftp { .. }) {
        // A working capture (dnsmasq, EDK2 booting) names the server here too, and some ROMs
        // take the TFTP server from sname rather than siaddr.
        reply.set_sname_str(server_ip.to_string());
    }

    let opts = reply.opts_mut();
    opts.insert(DhcpOption::MessageType(message_type));
    // Always set: EDK2 uses it to address its port-4011 request when siaddr is empty, and
    // some ROMs ignore offers without it.
    opts.insert(DhcpOption::ServerIdentifier(server_ip));
    opts.insert(DhcpOption::ClassIdentifier(
        request.class.vendor_class().as_bytes().to_vec(),
    ));
    if let Some(guid) = &request.guid {
        opts.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
    }
    if matches!(offer, BootOffer::Tftp { .. }) {
        opts.insert(DhcpOption::TFTPServerName(
            server_ip.to_string().into_bytes(),
        ));
    }
    opts.insert(DhcpOption::BootfileName(bootfile.as_bytes().to_vec()));
    let vendor_options = vendor_options(request);
    let has_vendor_options = vendor_options.is_some();
    if let Some(bytes) = vendor_options {
        opts.insert(DhcpOption::VendorExtensions(bytes));
    }
    if let (Some(_), Some(info)) = (request.relay, &request.relay_agent_info) {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(82u8),
            info.clone(),
        )));
    }

    let mut bytes = Vec::with_capacity(MIN_REPLY_LEN + 64);
    reply
        .encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| Ignored::Malformed(format!("cannot encode the reply: {e}")))?;
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    Ok(Reply {
        bytes,
        destination: destination(request),
        message_type,
        offer,
        vendor_options: has_vendor_options,
    })
}

/// Option 43, per firmware. Which variant boots is a matter of what real firmware does, not of
/// the spec:
/// - BIOS PXE ROMs and iPXE: discovery control "boot from the file name" (bit 3), so the ROM
///   downloads our file straight from this offer (pixiecore does the same).
/// - UEFI's own PXE client (EDK2): no option 43 on port 67. EDK2 classifies a proxy offer with
///   "PXEClient" and no discovery options as "ProxyBinl" and then always asks port 4011 for
///   the boot file (PxeBcDhcp4.c, PxeBcRetryBinlOffer); some UEFI firmware ignores proxy
///   offers that try to bypass discovery (pixiecore's comments, danderson/netboot#43). dnsmasq
///   answers UEFI that way too and the captured OVMF boot in shared/testdata succeeded with it.
/// - Port 4011 replies echo the client's boot item (sub-option 71), as dnsmasq does, because a
///   ROM doing boot-server discovery matches its reply by it.
/// - UEFI HTTP Boot: no option 43.
fn vendor_options(request: &PxeRequest) -> Option<Vec<u8>> {
    if let Some(item) = &request.boot_item {
        return Some(vendor::encode(&[(vendor::PXE_BOOT_ITEM, item)]));
    }
    let native_uefi = request.firmware == Firmware::Pxe && request.arch.platform == Platform::Uefi;
    if request.class == ClientClass::Http || native_uefi {
        return None;
    }
    Some(vendor::encode(&[(
        vendor::PXE_DISCOVERY_CONTROL,
        &[vendor::BOOT_FROM_FILENAME],
    )]))
}

/// RFC 2131 §4.1 and PXE 2.1 §2.2: port-4011 requests are answered to the sender's own
/// address and port (EDK2 sends from 4011, iPXE from 68); relayed requests go back through the
/// relay; a client that already has an address gets a unicast; anything else is broadcast on
/// the arrival interface, since the client has no address to unicast to and we do not write
/// ARP entries.
fn destination(request: &PxeRequest) -> Destination {
    let arrival = request.arrival;
    let unicast = |addr| Destination {
        addr,
        broadcast: false,
        ifindex: arrival.ifindex,
        source_ip: arrival.local_ip,
    };
    if arrival.port == ServerPort::ProxyDhcp {
        return unicast(arrival.source);
    }
    if let Some(relay) = request.relay {
        return unicast(SocketAddrV4::new(relay, DHCP_SERVER_PORT));
    }
    if !request.ciaddr.is_unspecified() {
        return unicast(SocketAddrV4::new(request.ciaddr, DHCP_CLIENT_PORT));
    }
    Destination {
        addr: SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
        broadcast: true,
        ifindex: arrival.ifindex,
        source_ip: arrival.local_ip,
    }
}
