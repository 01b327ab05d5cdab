//! Turning a datagram into a [`PxeRequest`], or into the reason it is none of our business.
//!
//! The steps follow pixiecore's ProxyDHCP loop: each has its own reason to ignore a packet, so
//! a log line (and the machine's timeline) says exactly why a machine got no answer.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};

use crate::arch::{self, Arch};

/// A client's hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Which of our ports a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerPort {
    /// 67: DHCP broadcast (or relayed) DISCOVER.
    Dhcp,
    /// 4011: the PXE boot-server exchange, unicast to us.
    ProxyDhcp,
}

impl ServerPort {
    pub fn name(self) -> &'static str {
        match self {
            ServerPort::Dhcp => "67",
            ServerPort::ProxyDhcp => "4011",
        }
    }
}

/// Where and how a datagram reached us; filled in by the network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Sender's address and port (EDK2 sends its 4011 request from port 4011).
    pub source: SocketAddrV4,
    /// Our own address on the interface the request arrived on: the next-server we announce.
    pub local_ip: Ipv4Addr,
    /// Interface the request arrived on, so a broadcast answer leaves through the same one.
    pub ifindex: Option<u32>,
    pub port: ServerPort,
}

/// The client's firmware class according to option 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// `PXEClient...`: loads a file over TFTP.
    Pxe,
    /// `HTTPClient...`: UEFI HTTP Boot, loads a URL.
    Http,
}

impl ClientClass {
    pub fn vendor_class(self) -> &'static str {
        match self {
            ClientClass::Pxe => "PXEClient",
            ClientClass::Http => "HTTPClient",
        }
    }
}

/// What kind of loader is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// A PXE ROM or EDK2's native PXE client: needs a bootloader over TFTP.
    Pxe,
    /// iPXE (a NIC ROM or a chainloaded binary): can take an HTTP URL, e.g. its script.
    Ipxe,
    /// UEFI HTTP Boot.
    UefiHttp,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Pxe => "pxe",
            Firmware::Ipxe => "ipxe",
            Firmware::UefiHttp => "uefi-http",
        }
    }
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    #[error("malformed DHCP packet: {0}")]
    Malformed(String),
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("DHCP message type {0} is not DISCOVER or REQUEST")]
    MessageType(String),
    #[error("not a PXE or HTTP boot client (option 60 is {0:?})")]
    NotPxeClient(String),
    /// A PXE client taking another server's offer: for the LAN's DHCP server that is the
    /// client's address (option 50), which ties the machine's later TFTP and HTTP requests to
    /// its MAC.
    #[error("REQUEST addressed to another server ({server}), not to us")]
    OtherServer {
        server: Ipv4Addr,
        mac: MacAddr,
        address: Option<Ipv4Addr>,
    },
    #[error("REQUEST without a server identifier (a lease renewal or reboot), not for a proxy")]
    Renewal,
    #[error("hardware type {0} is not Ethernet")]
    Hardware(u8),
    #[error("declined by boot policy: {reason}")]
    Declined {
        request: Box<PxeRequest>,
        reason: crate::policy::Decline,
    },
}

/// A classified boot request: everything the policy and the reply need, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeRequest {
    pub mac: MacAddr,
    pub xid: u32,
    pub message_type: MessageType,
    pub class: ClientClass,
    pub firmware: Firmware,
    pub arch: Arch,
    /// Raw option 60.
    pub vendor_class: String,
    /// Raw option 97 (type byte + UUID), mirrored in replies only when sent (some Intel ROMs
    /// omit it, pixiecore#21, and a reply must not invent one).
    pub guid: Option<Vec<u8>>,
    /// Relay agent address (giaddr), when the request came through a relay.
    pub relay: Option<Ipv4Addr>,
    pub ciaddr: Ipv4Addr,
    pub broadcast_flag: bool,
    /// Option 54 of a REQUEST: the server the client addresses.
    pub server_id: Option<Ipv4Addr>,
    /// PXE boot item (option 43, sub-option 71) of a boot-server request, echoed in the reply.
    pub boot_item: Option<Vec<u8>>,
    /// Option 82, echoed to the relay (RFC 3046 §2.2).
    pub relay_agent_info: Option<Vec<u8>>,
    /// Option 57, when the client limits reply size.
    pub max_message_size: Option<u16>,
    pub arrival: Arrival,
}

/// Options we read. Everything else is dropped before the codec sees it: the responder never
/// looks at it, and a malformed option we do not use must not cost a client its answer.
const KEPT_OPTIONS: &[u8] = &[43, 50, 53, 54, 57, 60, 61, 77, 82, 93, 94, 97, 175];
const DHCP_MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header plus the magic cookie.
const HEADER_LEN: usize = 240;
/// Largest datagram we process; a real DHCP request is a few hundred bytes.
pub const MAX_REQUEST_LEN: usize = 1500;

/// Decodes a DHCP request, keeping only the options the responder reads and checking every
/// option's length before the codec sees it.
pub fn decode_message(datagram: &[u8]) -> Result<v4::Message, Ignored> {
    decode_keeping(datagram, KEPT_OPTIONS)
}

/// Decodes a DHCP message with only the options in `kept`, validated first: the codec has
/// debug assertions and slicing on lengths that a peer controls.
pub(crate) fn decode_keeping(datagram: &[u8], kept: &[u8]) -> Result<v4::Message, Ignored> {
    if datagram.len() > MAX_REQUEST_LEN {
        return Err(Ignored::Malformed(format!(
            "{} bytes, more than the {MAX_REQUEST_LEN} a DHCP request can have",
            datagram.len()
        )));
    }
    if datagram.len() < HEADER_LEN {
        return Err(Ignored::Malformed(format!(
            "{} bytes, shorter than a DHCP header ({HEADER_LEN})",
            datagram.len()
        )));
    }
    // dhcproto slices chaddr by hlen and panics past 16 bytes; refuse such headers here.
    if datagram[2] > 16 {
        return Err(Ignored::Malformed(format!(
            "hardware address length {} exceeds 16",
            datagram[2]
        )));
    }
    if datagram[236..240] != DHCP_MAGIC {
        return Err(Ignored::Malformed(
            "no DHCP magic cookie (plain BOOTP)".into(),
        ));
    }
    // The codec joins every occurrence of an option into one value before decoding it (RFC
    // 3396), so lengths are checked on the joined value, exactly as the codec will see it.
    let mut joined: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut rest = &datagram[HEADER_LEN..];
    loop {
        match rest {
            [] | [255, ..] => break,
            [0, tail @ ..] => rest = tail,
            [code, len, tail @ ..] if usize::from(*len) <= tail.len() => {
                let (value, tail) = tail.split_at(usize::from(*len));
                if kept.contains(code) {
                    match joined.iter_mut().find(|(seen, _)| seen == code) {
                        Some((_, so_far)) => so_far.extend_from_slice(value),
                        None => joined.push((*code, value.to_vec())),
                    }
                }
                rest = tail;
            }
            [code, ..] => {
                return Err(Ignored::Malformed(format!(
                    "option {code} runs past the end of the packet"
                )));
            }
        }
    }
    let mut clean = Vec::with_capacity(datagram.len() + 1);
    clean.extend_from_slice(&datagram[..HEADER_LEN]);
    for (code, value) in &joined {
        // A joined value longer than one option could carry is dropped too: nothing we read
        // is that long in a real request, and re-splitting it would only feed the codec more.
        if let Ok(len) = u8::try_from(value.len())
            && option_length_ok(*code, value.len())
        {
            clean.push(*code);
            clean.push(len);
            clean.extend_from_slice(value);
        }
    }
    clean.push(255);
    v4::Message::decode(&mut Decoder::new(&clean)).map_err(|e| Ignored::Malformed(e.to_string()))
}

/// Lengths the codec relies on. A wrong length drops the option, not the packet.
fn option_length_ok(code: u8, len: usize) -> bool {
    match code {
        53 => len == 1,
        50 | 54 => len == 4,
        57 | 93 => len >= 2,
        67 => len >= 1,
        94 => len == 3,
        _ => true,
    }
}

/// Classifies a decoded message that arrived as described by `arrival`.
pub fn classify(message: &v4::Message, arrival: Arrival) -> Result<PxeRequest, Ignored> {
    if message.opcode() != Opcode::BootRequest {
        return Err(Ignored::NotRequest);
    }
    let opts = message.opts();
    let message_type = opts
        .msg_type()
        .ok_or_else(|| Ignored::MessageType("missing".into()))?;
    if !matches!(message_type, MessageType::Discover | MessageType::Request) {
        return Err(Ignored::MessageType(format!("{message_type:?}")));
    }
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    let class = if vendor_class.starts_with("PXEClient") {
        ClientClass::Pxe
    } else if vendor_class.starts_with("HTTPClient") {
        ClientClass::Http
    } else {
        return Err(Ignored::NotPxeClient(vendor_class));
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let chaddr = message.chaddr();
    if u8::from(message.htype()) != 1 || message.hlen() != 6 || chaddr.len() < 6 {
        return Err(Ignored::Hardware(u8::from(message.htype())));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&chaddr[..6]);
    // A REQUEST on port 67 is the client accepting some server's address offer; it concerns
    // us only if it names us (port 4011 requests are always ours).
    if arrival.port == ServerPort::Dhcp && message_type == MessageType::Request {
        match server_id {
            Some(ip) if ip == arrival.local_ip => {}
            Some(server) => {
                let requested = match opts.get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
                    _ => None,
                };
                let address = requested
                    .or(Some(message.ciaddr()))
                    .filter(|ip| !ip.is_unspecified() && !ip.is_broadcast());
                return Err(Ignored::OtherServer {
                    server,
                    mac: MacAddr(mac),
                    address,
                });
            }
            None => return Err(Ignored::Renewal),
        }
    }

    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Arch::from_code(u16::from(*a)),
        _ => arch::from_vendor_class(&vendor_class).unwrap_or(Arch::from_code(0)),
    };
    let ipxe = is_ipxe(message);
    let firmware = match (class, ipxe) {
        (_, true) => Firmware::Ipxe,
        (ClientClass::Http, false) => Firmware::UefiHttp,
        (ClientClass::Pxe, false) => Firmware::Pxe,
    };
    let guid = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(bytes)) => Some(bytes.clone()),
        _ => None,
    };
    let boot_item = match opts.get(OptionCode::VendorExtensions) {
        Some(DhcpOption::VendorExtensions(bytes)) => {
            crate::vendor::find(bytes, crate::vendor::PXE_BOOT_ITEM).map(<[u8]>::to_vec)
        }
        _ => None,
    };
    let relay_agent_info = raw_option(message, 82);
    let max_message_size = match opts.get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(size)) => Some(*size),
        _ => None,
    };
    let giaddr = message.giaddr();
    Ok(PxeRequest {
        mac: MacAddr(mac),
        xid: message.xid(),
        message_type,
        class,
        firmware,
        arch,
        vendor_class,
        guid,
        relay: (!giaddr.is_unspecified()).then_some(giaddr),
        ciaddr: message.ciaddr(),
        broadcast_flag: message.flags().broadcast(),
        server_id,
        boot_item,
        relay_agent_info,
        max_message_size,
        arrival,
    })
}

/// iPXE identifies itself with user class "iPXE" (option 77, sent raw rather than in RFC 3004
/// form) and with its own encapsulated option 175; either is enough.
fn is_ipxe(message: &v4::Message) -> bool {
    let opts = message.opts();
    if raw_option(message, 175).is_some() {
        return true;
    }
    match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(bytes)) => {
            bytes.as_slice() == b"iPXE" || bytes.windows(4).any(|w| w == b"iPXE")
        }
        _ => false,
    }
}

fn raw_option(message: &v4::Message, code: u8) -> Option<Vec<u8>> {
    message.opts().iter().find_map(|(c, option)| {
        if u8::from(*c) != code {
            return None;
        }
        match option {
            DhcpOption::Unknown(unknown) => Some(unknown.data().to_vec()),
            other => {
                // Options the codec knows are re-encoded to get their wire bytes.
                let mut buf = Vec::new();
                let mut encoder = dhcproto::Encoder::new(&mut buf);
                dhcproto::Encodable::encode(other, &mut encoder).ok()?;
                buf.get(2..).map(<[u8]>::to_vec)
            }
        }
    })
}
