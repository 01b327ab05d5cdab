//! Reads UDP datagrams out of packet captures (pcap and pcapng; Ethernet, Linux cooked and raw
//! IP link types), so tests can replay what real firmware sent.

use std::net::{Ipv4Addr, SocketAddrV4};

/// One captured UDP/IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// Parses a capture file's bytes. Panics on a file it cannot read: test data is ours.
pub fn udp_datagrams(file: &[u8]) -> Vec<Datagram> {
    frames(file)
        .into_iter()
        .filter_map(|(link, frame)| ip_packet(link, &frame).and_then(udp))
        .collect()
}

fn u16_at(bytes: &[u8], at: usize, little: bool) -> u16 {
    let b = [bytes[at], bytes[at + 1]];
    if little {
        u16::from_le_bytes(b)
    } else {
        u16::from_be_bytes(b)
    }
}

fn u32_at(bytes: &[u8], at: usize, little: bool) -> u32 {
    let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    }
}

fn frames(file: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    match &file[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => {
            let little = file[0] != 0xa1;
            let link = u32_at(file, 20, little);
            let mut at = 24;
            while at + 16 <= file.len() {
                let len = u32_at(file, at + 8, little) as usize;
                out.push((link, file[at + 16..at + 16 + len].to_vec()));
                at += 16 + len;
            }
        }
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let little = u32_at(file, 8, true) == 0x1a2b_3c4d;
            let mut links = Vec::new();
            let mut at = 0;
            while at + 12 <= file.len() {
                let kind = u32_at(file, at, little);
                let len = u32_at(file, at + 4, little) as usize;
                let body = &file[at + 8..at + len - 4];
                match kind {
                    1 => links.push(u32::from(u16_at(body, 0, little))),
                    6 => {
                        let interface = u32_at(body, 0, little) as usize;
                        let captured = u32_at(body, 12, little) as usize;
                        out.push((links[interface], body[20..20 + captured].to_vec()));
                    }
                    _ => {}
                }
                at += len;
            }
        }
        other => panic!("not a pcap or pcapng file (magic {other:02x?})"),
    }
    out
}

fn ip_packet(link: u32, frame: &[u8]) -> Option<&[u8]> {
    let (ethertype, payload) = match link {
        1 => (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..]),
        113 => (u16::from_be_bytes([frame[14], frame[15]]), &frame[16..]),
        276 => (u16::from_be_bytes([frame[0], frame[1]]), &frame[20..]),
        101 | 228 => (0x0800, frame),
        other => panic!("unsupported link type {other}"),
    };
    (ethertype == 0x0800).then_some(payload)
}

fn udp(ip: &[u8]) -> Option<Datagram> {
    let header = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let udp = &ip[header..];
    let length = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    Some(Datagram {
        source: SocketAddrV4::new(addr(12), u16::from_be_bytes([udp[0], udp[1]])),
        destination: SocketAddrV4::new(addr(16), u16::from_be_bytes([udp[2], udp[3]])),
        payload: udp[8..length.min(udp.len())].to_vec(),
    })
}
