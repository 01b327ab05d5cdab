//! Classification and replies for requests captured from real firmware (QEMU: iPXE NIC ROM,
//! OVMF/EDK2, ipxe.efi), compared field by field with what a proxy that booted them answered.

use std::net::{Ipv4Addr, SocketAddrV4};

use bootherd_testkit::capture::{Datagram, udp_datagrams};
use dhcproto::v4::{self, DhcpOption, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use proptest::prelude::*;

use crate::*;

const REQUESTS: &[u8] = include_bytes!("../testdata/firmware-dhcp-requests.pcap");
const UEFI_EXCHANGE: &[u8] = include_bytes!("../testdata/pxe-uefi-dhcp.pcap");
const BIOS_EXCHANGE: &[u8] = include_bytes!("../testdata/pxe-bios-dhcp.pcap");
const PROXY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xb4, 0xe2, 0xe0]);

/// Boots BIOS into undionly.kpxe, x64 UEFI into ipxe.efi, iPXE and HTTP clients into a URL,
/// and declines everything else.
#[derive(Debug)]
struct TestPolicy;

impl BootPolicy for TestPolicy {
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, Decline> {
        let url = || BootOffer::Http {
            url: format!(
                "http://{}/boot/{}.ipxe",
                request.arrival.local_ip, request.mac
            ),
        };
        match (request.firmware, request.arch.name()) {
            (Firmware::Ipxe | Firmware::UefiHttp, _) => Ok(url()),
            (Firmware::Pxe, "bios") => Ok(BootOffer::Tftp {
                filename: "undionly.kpxe".into(),
            }),
            (Firmware::Pxe, "efi-x64") => Ok(BootOffer::Tftp {
                filename: "ipxe.efi".into(),
            }),
            (Firmware::Pxe, "efi-arm64") => Ok(BootOffer::Tftp {
                filename: "arm64/ipxe.efi".into(),
            }),
            (_, other) => Err(Decline::new(
                DeclineCause::NothingForArch,
                format!("no bootloader for {other}"),
            )),
        }
    }
}

fn arrival(d: &Datagram) -> Arrival {
    Arrival {
        source: d.source,
        local_ip: PROXY,
        ifindex: Some(2),
        port: if d.destination.port() == 4011 {
            ServerPort::ProxyDhcp
        } else {
            ServerPort::Dhcp
        },
    }
}

fn requests() -> Vec<Datagram> {
    let frames = udp_datagrams(REQUESTS);
    assert_eq!(frames.len(), 9);
    frames
}

fn decode_reply(reply: &Reply) -> v4::Message {
    v4::Message::decode(&mut Decoder::new(&reply.bytes)).expect("our reply must decode")
}

/// The `file` field without its NUL padding.
fn file(message: &v4::Message) -> &[u8] {
    let name = message.fname().unwrap_or_default();
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    &name[..end]
}

fn option(message: &v4::Message, code: u8) -> Option<&DhcpOption> {
    message.opts().get(OptionCode::from(code))
}

#[test]
fn classifies_every_captured_firmware_request() {
    let frames = requests();
    let expect = [
        // (firmware, arch, outcome on port 67 REQUESTs)
        (Firmware::Ipxe, "bios"),
        (Firmware::Ipxe, "bios"),
        (Firmware::Ipxe, "bios"),
        (Firmware::Pxe, "efi-x64"),
        (Firmware::Pxe, "efi-x64"),
        (Firmware::Pxe, "efi-x64"),
        (Firmware::Ipxe, "efi-x64"),
        (Firmware::Ipxe, "efi-x64"),
        (Firmware::Ipxe, "efi-x64"),
    ];
    for (i, (frame, (firmware, arch))) in frames.iter().zip(expect).enumerate() {
        let message = decode_message(&frame.payload).unwrap();
        match classify(&message, arrival(frame)) {
            Ok(request) => {
                assert_eq!(request.mac, MAC, "frame {i}");
                assert_eq!(request.firmware, firmware, "frame {i}");
                assert_eq!(request.arch.name(), arch, "frame {i}");
                assert_eq!(request.class, ClientClass::Pxe);
                assert_eq!(request.guid.as_ref().map(Vec::len), Some(17), "frame {i}");
                assert!(request.relay.is_none());
            }
            // The REQUESTs on port 67 (frames 2, 5, 8) accept the LAN server's address offer.
            // They name the address the client takes, which ties its later transfers to it.
            Err(Ignored::OtherServer {
                server,
                mac,
                address,
            }) => {
                assert!([1, 4, 7].contains(&i), "frame {i} ignored");
                assert_eq!(server, Ipv4Addr::new(10, 77, 0, 1));
                assert_eq!(mac, MAC, "frame {i}");
                let address = address.unwrap_or_else(|| panic!("frame {i}: no address"));
                assert_eq!(address.octets()[..3], [10, 77, 0], "frame {i}: {address}");
            }
            Err(other) => panic!("frame {i}: {other}"),
        }
    }
    // The iPXE ROM's 4011 request carries a boot item; EDK2 sends its 4011 request from 4011.
    let rom_4011 = classify(
        &decode_message(&frames[2].payload).unwrap(),
        arrival(&frames[2]),
    )
    .unwrap();
    assert_eq!(rom_4011.boot_item.as_deref(), Some(&[0x80, 0x03, 0, 0][..]));
    assert_eq!(rom_4011.xid, 0);
    assert_eq!(frames[5].source.port(), 4011);
}

#[test]
fn uefi_gets_a_bare_offer_then_the_file_on_4011_like_the_proxy_that_booted_it() {
    let exchange = udp_datagrams(UEFI_EXCHANGE);
    // The working proxy's replies, keyed by what they answered.
    let proxy_replies: Vec<&Datagram> = exchange
        .iter()
        .filter(|d| d.source.ip() == &PROXY)
        .collect();
    let client_requests: Vec<&Datagram> = exchange
        .iter()
        .filter(|d| d.source.port() != 67 && d.destination.port() != 68 && d.source.ip() != &PROXY)
        .collect();

    // EDK2 DISCOVER -> OFFER: no address, our next-server, PXEClient, GUID mirrored, and no
    // option 43, so EDK2 goes on to ask port 4011.
    let discover = client_requests[0];
    let (request, reply) = handle(&discover.payload, arrival(discover), &TestPolicy).unwrap();
    assert_eq!(request.firmware, Firmware::Pxe);
    assert!(request.broadcast_flag);
    let ours = decode_reply(&reply);
    let theirs = v4::Message::decode(&mut Decoder::new(&proxy_replies[0].payload)).unwrap();
    assert_eq!(reply.message_type, MessageType::Offer);
    for message in [&ours, &theirs] {
        assert_eq!(message.opcode(), Opcode::BootReply);
        assert_eq!(message.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(message.siaddr(), PROXY);
        assert_eq!(message.xid(), 0xc09e84a1);
        assert!(message.flags().broadcast());
        assert!(
            option(message, 43).is_none(),
            "option 43 would make EDK2 skip port 4011"
        );
    }
    for code in [54, 60, 97] {
        assert_eq!(option(&ours, code), option(&theirs, code), "option {code}");
    }
    assert_eq!(
        reply.destination.addr,
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
        "no address yet: broadcast"
    );
    assert!(reply.destination.broadcast);
    assert_eq!(reply.destination.ifindex, Some(2));

    // EDK2 4011 REQUEST (from port 4011) -> ACK with the boot file, back to port 4011.
    let request_4011 = client_requests
        .iter()
        .find(|d| d.destination.port() == 4011)
        .unwrap();
    let (_, reply) = handle(&request_4011.payload, arrival(request_4011), &TestPolicy).unwrap();
    let ours = decode_reply(&reply);
    let theirs_4011 = proxy_replies
        .iter()
        .find(|d| d.source.port() == 4011)
        .unwrap();
    let theirs = v4::Message::decode(&mut Decoder::new(&theirs_4011.payload)).unwrap();
    assert_eq!(reply.message_type, MessageType::Ack);
    assert_eq!(
        reply.destination.addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 191), 4011)
    );
    assert!(!reply.destination.broadcast);
    assert_eq!(
        file(&ours),
        file(&theirs),
        "same bootloader as the working capture"
    );
    assert_eq!(file(&ours), b"ipxe.efi");
    assert_eq!(ours.sname(), theirs.sname());
    assert_eq!(ours.xid(), theirs.xid());
    assert_eq!(ours.ciaddr(), theirs.ciaddr());
    assert_eq!(ours.yiaddr(), Ipv4Addr::UNSPECIFIED);
    for code in [54, 60, 97] {
        assert_eq!(option(&ours, code), option(&theirs, code), "option {code}");
    }
    assert_eq!(
        option(&ours, 67),
        Some(&DhcpOption::BootfileName(b"ipxe.efi".to_vec()))
    );
    assert!(reply.bytes.len() >= 300);
}

#[test]
fn ipxe_rom_gets_its_script_url_and_boot_from_filename() {
    let frames = requests();
    let (request, reply) = handle(&frames[0].payload, arrival(&frames[0]), &TestPolicy).unwrap();
    assert_eq!(request.firmware, Firmware::Ipxe);
    let ours = decode_reply(&reply);
    let url = "http://10.77.0.2/boot/52:54:00:b4:e2:e0.ipxe";
    assert_eq!(file(&ours), url.as_bytes());
    assert_eq!(
        option(&ours, 67),
        Some(&DhcpOption::BootfileName(url.as_bytes().to_vec()))
    );
    assert_eq!(
        option(&ours, 43),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert!(
        option(&ours, 66).is_none(),
        "no TFTP server for an HTTP URL"
    );
    // iPXE sent no broadcast flag but has no address: still broadcast.
    assert!(reply.destination.broadcast);

    // Its 4011 request (from port 68, xid 0, boot item 0x8003): unicast back to 68, the boot
    // item echoed, as the proxy in the BIOS capture answered.
    let (_, reply) = handle(&frames[2].payload, arrival(&frames[2]), &TestPolicy).unwrap();
    let ours = decode_reply(&reply);
    assert_eq!(
        reply.destination.addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 191), 68)
    );
    let bios = udp_datagrams(BIOS_EXCHANGE);
    let theirs = bios.iter().rev().find(|d| d.source.port() == 4011).unwrap();
    let theirs = v4::Message::decode(&mut Decoder::new(&theirs.payload)).unwrap();
    assert_eq!(option(&ours, 43), option(&theirs, 43));
    assert_eq!(ours.xid(), 0);
}

fn discover(vendor_class: &str, arch: Option<u16>, extra: &[DhcpOption]) -> Vec<u8> {
    let mut message = v4::Message::new_with_id(
        0x1234,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC.0,
    );
    let opts = message.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    if !vendor_class.is_empty() {
        opts.insert(DhcpOption::ClassIdentifier(
            vendor_class.as_bytes().to_vec(),
        ));
    }
    if let Some(arch) = arch {
        opts.insert(DhcpOption::ClientSystemArchitecture(arch.into()));
    }
    for option in extra {
        opts.insert(option.clone());
    }
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    bytes
}

fn local_arrival() -> Arrival {
    Arrival {
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_ip: PROXY,
        ifindex: Some(2),
        port: ServerPort::Dhcp,
    }
}

#[test]
fn bios_pxe_rom_gets_the_bootloader_with_discovery_bypassed() {
    let bytes = discover("PXEClient:Arch:00000:UNDI:002001", Some(0), &[]);
    let (request, reply) = handle(&bytes, local_arrival(), &TestPolicy).unwrap();
    assert_eq!(
        (request.firmware, request.arch.name()),
        (Firmware::Pxe, "bios")
    );
    assert!(request.guid.is_none());
    let ours = decode_reply(&reply);
    assert_eq!(file(&ours), b"undionly.kpxe");
    assert_eq!(
        option(&ours, 66),
        Some(&DhcpOption::TFTPServerName(b"10.77.0.2".to_vec()))
    );
    assert_eq!(
        option(&ours, 43),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert!(
        option(&ours, 97).is_none(),
        "GUID invented although the client sent none"
    );
}

#[test]
fn arm64_uefi_and_missing_option_93() {
    let bytes = discover("PXEClient:Arch:00011:UNDI:003000", Some(11), &[]);
    let (request, reply) = handle(&bytes, local_arrival(), &TestPolicy).unwrap();
    assert_eq!(request.arch.name(), "efi-arm64");
    assert_eq!(file(&decode_reply(&reply)), b"arm64/ipxe.efi");
    // No option 93: the architecture is read from option 60.
    let bytes = discover("PXEClient:Arch:00007:UNDI:003000", None, &[]);
    let (request, _) = handle(&bytes, local_arrival(), &TestPolicy).unwrap();
    assert_eq!(request.arch.code, 7);
}

#[test]
fn uefi_http_boot_gets_a_url_and_httpclient() {
    let bytes = discover("HTTPClient:Arch:00016:UNDI:003001", Some(16), &[]);
    let (request, reply) = handle(&bytes, local_arrival(), &TestPolicy).unwrap();
    assert_eq!(request.firmware, Firmware::UefiHttp);
    assert!(request.arch.http);
    let ours = decode_reply(&reply);
    assert_eq!(
        option(&ours, 60),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert!(option(&ours, 43).is_none());
    assert!(file(&ours).starts_with(b"http://10.77.0.2/"));
}

#[test]
fn non_pxe_clients_and_other_message_types_are_ignored() {
    let plain = discover("", None, &[]);
    assert!(matches!(
        handle(&plain, local_arrival(), &TestPolicy),
        Err(Ignored::NotPxeClient(_))
    ));
    let linux = discover("udhcp 1.35.0", None, &[]);
    assert!(matches!(
        handle(&linux, local_arrival(), &TestPolicy),
        Err(Ignored::NotPxeClient(_))
    ));
    let mut message =
        v4::Message::decode(&mut Decoder::new(&discover("PXEClient", Some(0), &[]))).unwrap();
    message
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Release));
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    assert!(matches!(
        handle(&bytes, local_arrival(), &TestPolicy),
        Err(Ignored::MessageType(_))
    ));
    // A reply (op 2) is never answered.
    message.set_opcode(Opcode::BootReply);
    message
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    bytes.clear();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    assert!(matches!(
        handle(&bytes, local_arrival(), &TestPolicy),
        Err(Ignored::NotRequest)
    ));
    // The policy may decline: no answer, with its reason.
    let riscv = discover("PXEClient:Arch:00027:UNDI:003000", Some(27), &[]);
    match handle(&riscv, local_arrival(), &TestPolicy) {
        Err(Ignored::Declined { request, reason }) => {
            assert_eq!(request.arch.name(), "efi-riscv64");
            assert!(reason.message.contains("efi-riscv64"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn relayed_requests_go_back_through_the_relay_with_option_82() {
    let mut message = v4::Message::decode(&mut Decoder::new(&discover(
        "PXEClient:Arch:00000:UNDI:002001",
        Some(0),
        &[],
    )))
    .unwrap();
    message.set_giaddr(Ipv4Addr::new(10, 9, 0, 1));
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes)).unwrap();
    // Option 82 (circuit id "eth7") appended by hand, as a relay would.
    let end = bytes.iter().rposition(|&b| b == 255).unwrap();
    bytes.truncate(end);
    bytes.extend_from_slice(&[82, 6, 1, 4, b'e', b't', b'h', b'7', 255]);
    let (request, reply) = handle(&bytes, local_arrival(), &TestPolicy).unwrap();
    assert_eq!(request.relay, Some(Ipv4Addr::new(10, 9, 0, 1)));
    assert_eq!(
        reply.destination.addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 67)
    );
    assert!(!reply.destination.broadcast);
    let ours = decode_reply(&reply);
    assert_eq!(ours.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
    let raw = &reply.bytes;
    assert!(
        raw.windows(8)
            .any(|w| w == [82, 6, 1, 4, b'e', b't', b'h', b'7']),
        "option 82 not echoed"
    );
}

#[test]
fn malformed_truncated_and_oversized_packets_are_refused_cleanly() {
    let good = &requests()[3].payload;
    for cut in [0, 1, 100, 239] {
        assert!(
            matches!(decode_message(&good[..cut]), Err(Ignored::Malformed(_))),
            "cut {cut}"
        );
    }
    let mut runs_past = good[..240].to_vec();
    runs_past.extend_from_slice(&[53, 1, 1, 60, 200, b'P']);
    assert!(
        matches!(decode_message(&runs_past), Err(Ignored::Malformed(m)) if m.contains("option 60"))
    );
    let mut no_magic = good.clone();
    no_magic[236] = 0;
    assert!(matches!(
        decode_message(&no_magic),
        Err(Ignored::Malformed(_))
    ));
    let mut oversized = good.clone();
    oversized.resize(4000, 0);
    assert!(matches!(decode_message(&oversized), Err(Ignored::Malformed(m)) if m.contains("4000")));
    // An option the codec would choke on (option 94 must be 3 bytes) is dropped, not fatal.
    let mut odd = good[..240].to_vec();
    odd.extend_from_slice(&[53, 1, 1, 94, 1, 1, 60, 9]);
    odd.extend_from_slice(b"PXEClient");
    odd.extend_from_slice(&[93, 2, 0, 0, 255]);
    let message = decode_message(&odd).unwrap();
    assert!(classify(&message, local_arrival()).is_ok());
}

proptest! {
    #[test]
    fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = handle(&bytes, local_arrival(), &TestPolicy);
    }

    #[test]
    fn never_panics_on_mutated_firmware_packets(frame in 0usize..9, edits in proptest::collection::vec((0usize..600, any::<u8>()), 1..20), cut in 0usize..700) {
        let mut bytes = requests()[frame].payload.clone();
        for (at, value) in edits {
            if let Some(byte) = bytes.get_mut(at) { *byte = value; }
        }
        bytes.truncate(cut.max(1));
        let _ = handle(&bytes, local_arrival(), &TestPolicy);
    }
}

#[test]
fn foreign_pxe_offers_are_recognised() {
    let exchange = udp_datagrams(UEFI_EXCHANGE);
    // The captured proxy at 10.77.0.2 is "another server" when we are 10.77.0.9.
    let offers: Vec<_> = exchange
        .iter()
        .filter(|d| d.destination.port() == 68)
        .filter_map(|d| foreign_boot_offer(&d.payload, &[Ipv4Addr::new(10, 77, 0, 9)]))
        .collect();
    assert!(
        offers.iter().any(|o| o.server == PROXY && o.pxe),
        "{offers:?}"
    );
    // The LAN's plain DHCP server offers nothing to boot: not a competitor.
    assert!(
        offers
            .iter()
            .all(|o| o.server != Ipv4Addr::new(10, 77, 0, 1)),
        "{offers:?}"
    );
    // Our own offers are not foreign.
    assert!(
        exchange
            .iter()
            .filter_map(|d| foreign_boot_offer(&d.payload, &[PROXY]))
            .all(|o| o.server != PROXY)
    );
}

#[test]
fn hardware_length_over_16_is_malformed_not_a_panic() {
    let mut bytes = requests()[0].payload.clone();
    bytes[2] = 43;
    assert!(matches!(decode_message(&bytes), Err(Ignored::Malformed(m)) if m.contains("43")));
    assert!(foreign_boot_offer(&bytes, &[]).is_none());
}

proptest! {
    #[test]
    fn watcher_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = foreign_boot_offer(&bytes, &[PROXY]);
    }
}

/// RFC 3396: the codec joins repeated options before it decodes them, so a length checked per
/// occurrence is not the length it sees (two 3-byte option 94s became one of 6 and tripped a
/// debug assertion that stopped every service).
#[test]
fn repeated_options_are_checked_as_the_codec_joins_them() {
    let good = &requests()[3].payload;
    for (code, value) in [
        (94u8, &[1u8, 2, 3][..]),
        (53, &[1]),
        (93, &[0, 0]),
        (54, &[1, 2, 3, 4]),
    ] {
        let mut twice = good[..240].to_vec();
        twice.extend_from_slice(&[53, 1, 1, 60, 9]);
        twice.extend_from_slice(b"PXEClient");
        if code != 53 {
            twice.extend_from_slice(&[93, 2, 0, 0]);
        }
        for _ in 0..2 {
            twice.push(code);
            twice.push(value.len() as u8);
            twice.extend_from_slice(value);
        }
        twice.push(255);
        let decoded = decode_message(&twice);
        if let Ok(message) = &decoded {
            let _ = classify(message, local_arrival());
        }
        let _ = handle(&twice, local_arrival(), &TestPolicy);
    }
    // A split option whose joined value is valid is kept, as RFC 3396 intends.
    let mut split = good[..240].to_vec();
    split.extend_from_slice(&[53, 1, 1, 60, 4]);
    split.extend_from_slice(b"PXEC");
    split.extend_from_slice(&[60, 5]);
    split.extend_from_slice(b"lient");
    split.extend_from_slice(&[93, 2, 0, 0, 255]);
    let message = decode_message(&split).unwrap();
    assert!(classify(&message, local_arrival()).is_ok());
}
