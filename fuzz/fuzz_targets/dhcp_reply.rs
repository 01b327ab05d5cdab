//! The ProxyDHCP reply path end to end, with bootherd's real policy over a real store: decode,
//! classify, decide, respond, record. It must never panic, never hand out an address, always
//! name itself as next-server, and only offer a boot file that TFTP can serve.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use bootherd_pxe::{Arrival, BootOffer, EventSink, Ignored, PxeEvent, ServerPort, handle};
use bootherd_tftp::{FileSource, TftpPath};
use libfuzzer_sys::fuzz_target;

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fuzz_target!(|data: &[u8]| {
    let boot = bootherd_fuzz::boot("dhcp_reply");
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let arrival = Arrival {
        source: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 68),
        local_ip: LOCAL,
        ifindex: Some(2),
        port: if selector & 1 == 0 {
            ServerPort::Dhcp
        } else {
            ServerPort::ProxyDhcp
        },
    };
    match handle(datagram, arrival, boot.as_ref()) {
        Ok((request, reply)) => {
            let message = bootherd_pxe::decode_message(&reply.bytes).expect("our reply decodes");
            assert!(message.yiaddr().is_unspecified(), "handed out an address");
            assert_eq!(message.siaddr(), LOCAL, "next-server is not us");
            match &reply.offer {
                BootOffer::Tftp { filename } => {
                    let path = TftpPath::parse(filename).expect("offered name parses");
                    assert!(
                        boot.contains(&path),
                        "offered {filename}, which TFTP cannot serve"
                    );
                }
                BootOffer::Http { url } => {
                    assert!(url.starts_with("http://10.0.0.1:8080/"), "{url}")
                }
            }
            boot.record(PxeEvent::Replied {
                mac: request.mac,
                port: arrival.port,
                message_type: format!("{:?}", reply.message_type),
                bootfile: reply.offer.bootfile().to_string(),
                destination: reply.destination.addr,
            });
        }
        Err(Ignored::OtherServer {
            server,
            mac,
            address: Some(address),
        }) => {
            boot.record(PxeEvent::AddressAccepted {
                mac,
                address,
                server,
            });
        }
        Err(_) => {}
    }
});
