//! ProxyDHCP load: PXE DISCOVERs at a fixed concurrency from one network namespace to a server
//! in another, over a veth pair. Each DISCOVER carries ciaddr so every server answers it by
//! unicast to the load generator (no broadcast storms on the test link).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);

#[derive(Debug, Clone)]
pub(crate) struct DhcpResult {
    pub(crate) answered: u64,
    pub(crate) lost: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

fn discover(xid: u32) -> Vec<u8> {
    let mac = [
        0x02,
        0x00,
        (xid >> 24) as u8,
        (xid >> 16) as u8,
        (xid >> 8) as u8,
        xid as u8,
    ];
    let mut m = v4::Message::new_with_id(
        xid,
        CLIENT_IP,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    opts.insert(DhcpOption::ClientSystemArchitecture(0u16.into()));
    opts.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
    let mut bytes = Vec::new();
    // Encoding a message we built ourselves cannot fail.
    let _ = m.encode(&mut Encoder::new(&mut bytes));
    bytes
}

/// Runs inside the client namespace.
pub(crate) fn run(total: u64, concurrency: usize) -> std::io::Result<DhcpResult> {
    // The wildcard address: dnsmasq answers a proxy DISCOVER by broadcast even when ciaddr is set.
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let server = SocketAddr::from((SERVER_IP, 67));
    let started = Instant::now();
    let mut outstanding: HashMap<u32, Instant> = HashMap::new();
    let mut next_xid: u32 = 1;
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut lost = 0u64;
    let mut latencies = Vec::with_capacity(total as usize);
    let mut buf = [0u8; 1500];
    let hard_deadline = started + Duration::from_secs(120);
    while (answered + lost < total) && Instant::now() < hard_deadline {
        while outstanding.len() < concurrency && sent < total {
            socket.send_to(&discover(next_xid), server)?;
            outstanding.insert(next_xid, Instant::now());
            next_xid += 1;
            sent += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => {
                let Ok(reply) = v4::Message::decode(&mut Decoder::new(&buf[..len])) else {
                    continue;
                };
                if reply.opcode() != Opcode::BootReply {
                    continue;
                }
                if let Some(at) = outstanding.remove(&reply.xid()) {
                    latencies.push(at.elapsed());
                    answered += 1;
                }
            }
            Err(_) => {
                // Anything unanswered for a second is lost; its slot is reused.
                let now = Instant::now();
                let before = outstanding.len();
                outstanding.retain(|_, at| now.duration_since(*at) < Duration::from_secs(1));
                lost += (before - outstanding.len()) as u64;
            }
        }
    }
    lost += outstanding.len() as u64;
    Ok(DhcpResult {
        answered,
        lost,
        elapsed: started.elapsed(),
        latencies,
    })
}
