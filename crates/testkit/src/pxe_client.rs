//! A PXE client that speaks real DHCP on a test LAN, the way firmware does: it broadcasts a
//! DISCOVER with the PXE vendor class, collects the LAN server's address offer and the proxy's
//! boot offer, requests the address, and (like EDK2) can ask the proxy on port 4011.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// What firmware the client pretends to be.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub mac: [u8; 6],
    pub arch: u16,
    pub vendor_class: String,
    pub ipxe: bool,
}

/// The result of the DHCP phase.
#[derive(Debug, Clone)]
pub struct PxeLease {
    pub address: Ipv4Addr,
    pub dhcp_server: Ipv4Addr,
    /// The proxy's offer as received, and where it came from.
    pub proxy_offer: v4::Message,
    pub proxy_from: SocketAddr,
}

impl PxeLease {
    pub fn bootfile(&self) -> String {
        bootfile(&self.proxy_offer)
    }
}

pub fn bootfile(message: &v4::Message) -> String {
    match message.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(name)) => String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_string(),
        _ => String::new(),
    }
}

fn vendor_class(message: &v4::Message) -> Vec<u8> {
    match message.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.clone(),
        _ => Vec::new(),
    }
}

fn server_id(message: &v4::Message) -> Option<Ipv4Addr> {
    match message.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

impl ClientIdentity {
    fn message(&self, xid: u32, kind: MessageType, ciaddr: Ipv4Addr) -> v4::Message {
        let mut m = v4::Message::new_with_id(
            xid,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        m.set_flags(v4::Flags::default().set_broadcast());
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ClassIdentifier(
            self.vendor_class.as_bytes().to_vec(),
        ));
        opts.insert(DhcpOption::ClientSystemArchitecture(self.arch.into()));
        opts.insert(DhcpOption::ClientNetworkInterface(1, 3, 0));
        opts.insert(DhcpOption::MaxMessageSize(1472));
        let mut guid = vec![0u8];
        guid.extend_from_slice(&[0x2e, 0x5e, 0x07, 0xb0, 0, 0, 0, 0x40, 0x80, 0]);
        guid.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientMachineIdentifier(guid));
        if self.ipxe {
            opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        m
    }
}

fn encode(message: &v4::Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    message
        .encode(&mut Encoder::new(&mut bytes))
        .expect("encoding a DHCP message");
    bytes
}

/// Opens the client's DHCP socket on `interface` (must run inside the client's namespace).
pub fn dhcp_socket(interface: &str) -> UdpSocket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_broadcast(true).expect("SO_BROADCAST");
    socket
        .bind_device(Some(interface.as_bytes()))
        .expect("SO_BINDTODEVICE");
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .expect("binding port 68");
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    socket
}

/// DISCOVER, collect both offers, REQUEST the address. Panics with what was received if the
/// exchange does not complete within `timeout`.
pub fn obtain_lease(
    socket: &UdpSocket,
    identity: &ClientIdentity,
    xid: u32,
    timeout: Duration,
) -> PxeLease {
    let broadcast = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let discover = encode(&identity.message(xid, MessageType::Discover, Ipv4Addr::UNSPECIFIED));
    let deadline = Instant::now() + timeout;
    let mut address_offer: Option<v4::Message> = None;
    let mut proxy: Option<(v4::Message, SocketAddr)> = None;
    let mut seen = Vec::new();
    let mut last_discover = None::<Instant>;
    while address_offer.is_none() || proxy.is_none() {
        assert!(
            Instant::now() < deadline,
            "no complete set of offers within {timeout:?}; received: {seen:#?}"
        );
        // Firmware repeats its DISCOVER (4, 8, 16 s in EDK2); a second is plenty here.
        if last_discover.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            socket
                .send_to(&discover, broadcast)
                .expect("sending DISCOVER");
            last_discover = Some(Instant::now());
        }
        let Some((message, from)) = receive(socket, xid) else {
            continue;
        };
        seen.push(format!(
            "{from}: {:?} yiaddr={} class={:?} file={:?}",
            message.opts().msg_type(),
            message.yiaddr(),
            String::from_utf8_lossy(&vendor_class(&message)),
            bootfile(&message)
        ));
        if message.opts().msg_type() != Some(MessageType::Offer) {
            continue;
        }
        if message.yiaddr().is_unspecified() && vendor_class(&message).starts_with(b"PXEClient") {
            proxy.get_or_insert((message, from));
        } else if !message.yiaddr().is_unspecified() {
            address_offer.get_or_insert(message);
        }
    }
    let (Some(offer), Some((proxy_offer, proxy_from))) = (address_offer, proxy) else {
        unreachable!("loop exits only with both offers")
    };
    let dhcp_server = server_id(&offer).expect("address offer without server id");
    let mut request = identity.message(xid, MessageType::Request, Ipv4Addr::UNSPECIFIED);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    request
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(dhcp_server));
    let request = encode(&request);
    socket
        .send_to(&request, broadcast)
        .expect("sending REQUEST");
    loop {
        assert!(
            Instant::now() < deadline,
            "no DHCPACK from {dhcp_server}; received: {seen:#?}"
        );
        let Some((message, _)) = receive(socket, xid) else {
            socket
                .send_to(&request, broadcast)
                .expect("sending REQUEST");
            continue;
        };
        if message.opts().msg_type() == Some(MessageType::Ack)
            && server_id(&message) == Some(dhcp_server)
        {
            return PxeLease {
                address: message.yiaddr(),
                dhcp_server,
                proxy_offer,
                proxy_from,
            };
        }
    }
}

fn receive(socket: &UdpSocket, xid: u32) -> Option<(v4::Message, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let (len, from) = socket.recv_from(&mut buf).ok()?;
    let message = v4::Message::decode(&mut Decoder::new(&buf[..len])).ok()?;
    (message.opcode() == Opcode::BootReply && message.xid() == xid).then_some((message, from))
}

/// The EDK2 step after a proxy offer without boot-server options: a REQUEST unicast to the
/// proxy's port 4011, sent from port 4011 (as EDK2 does), answered with the boot file.
pub fn boot_server_request(
    identity: &ClientIdentity,
    client_ip: Ipv4Addr,
    proxy: Ipv4Addr,
    xid: u32,
) -> v4::Message {
    let socket = UdpSocket::bind((client_ip, 4011)).expect("binding port 4011");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut request = identity.message(xid, MessageType::Request, client_ip);
    request.set_flags(v4::Flags::default());
    let bytes = encode(&request);
    for _ in 0..3 {
        socket
            .send_to(&bytes, (proxy, 4011))
            .expect("sending the 4011 REQUEST");
        let mut buf = [0u8; 1500];
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            assert_eq!(
                from,
                SocketAddr::from((proxy, 4011)),
                "4011 reply from the wrong address"
            );
            let message =
                v4::Message::decode(&mut Decoder::new(&buf[..len])).expect("4011 reply decodes");
            assert_eq!(message.xid(), xid);
            return message;
        }
    }
    panic!("no answer from {proxy}:4011");
}
