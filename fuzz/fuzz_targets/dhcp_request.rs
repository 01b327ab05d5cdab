//! Any datagram on port 67 or 4011 and any seen on 68: the responder and the watcher must never
//! panic, and a reply, when there is one, must decode and hand out no address.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use bootherd_pxe::{
    Arrival, BootOffer, BootPolicy, PxeRequest, ServerPort, foreign_boot_offer, handle,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Always;

impl BootPolicy for Always {
    fn boot_offer(&self, _: &PxeRequest) -> Result<BootOffer, bootherd_pxe::Decline> {
        Ok(BootOffer::Tftp {
            filename: "undionly.kpxe".into(),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let arrival = Arrival {
        source: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 68),
        local_ip: Ipv4Addr::new(10, 0, 0, 1),
        ifindex: Some(2),
        port: if selector & 1 == 0 {
            ServerPort::Dhcp
        } else {
            ServerPort::ProxyDhcp
        },
    };
    if let Ok((_, reply)) = handle(datagram, arrival, &Always) {
        let message = bootherd_pxe::decode_message(&reply.bytes).expect("our reply decodes");
        assert!(message.yiaddr().is_unspecified());
    }
    let _ = foreign_boot_offer(datagram, &[arrival.local_ip]);
});
