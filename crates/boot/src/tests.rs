use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use bootherd_files::DirSource;
use bootherd_pxe::{
    Arch, Arrival, BootOffer, BootPolicy, ClientClass, Firmware, MacAddr, PxeRequest, ServerPort,
};
use bootherd_store::{Machine, Store};
use bootherd_tftp::{FileSource, TftpPath};

use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0, 0, 1];

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    boot: Boot,
}

fn fixture() -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let loaders = tempfile::tempdir().unwrap();
    std::fs::write(loaders.path().join("undionly.kpxe"), b"bios").unwrap();
    std::fs::write(loaders.path().join("ipxe.efi"), b"efi").unwrap();
    let store = Arc::new(Store::open(data.path()).unwrap());
    let debian = name("debian");
    store
        .images()
        .import_reader(&debian, "linux", &b"kernel"[..])
        .unwrap();
    store
        .images()
        .import_reader(&debian, "initrd.gz", &b"initrd"[..])
        .unwrap();
    store
        .images()
        .import_reader(&name("syslinux"), "pxelinux.0", &b"pxe"[..])
        .unwrap();
    store
        .update(|state| {
            state.profiles.insert(
                name("installer"),
                Profile::Linux {
                    image: debian.clone(),
                    kernel: "linux".into(),
                    initrd: vec!["initrd.gz".into()],
                    cmdline: "marker=installer".into(),
                    description: String::new(),
                },
            );
            state.profiles.insert(
                name("disk"),
                Profile::LocalDisk {
                    description: String::new(),
                },
            );
            state.profiles.insert(
                name("legacy"),
                Profile::Bootfile {
                    image: name("syslinux"),
                    files: BTreeMap::from([("bios".to_string(), "pxelinux.0".to_string())]),
                    description: String::new(),
                },
            );
            Ok(())
        })
        .unwrap();
    let bootloaders: Arc<dyn FileSource> = Arc::new(DirSource::new(loaders.path()).unwrap());
    let boot = Boot::new(store, bootloaders, 8080).unwrap();
    Fixture {
        _dirs: (data, loaders),
        boot,
    }
}

fn request(firmware: Firmware, arch: u16) -> PxeRequest {
    PxeRequest {
        mac: MacAddr(MAC),
        xid: 1,
        message_type: dhcproto::v4::MessageType::Discover,
        class: ClientClass::Pxe,
        firmware,
        arch: Arch::from_code(arch),
        vendor_class: "PXEClient".into(),
        guid: None,
        relay: None,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        broadcast_flag: false,
        server_id: None,
        boot_item: None,
        relay_agent_info: None,
        max_message_size: None,
        arrival: Arrival {
            source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            local_ip: Ipv4Addr::new(10, 0, 0, 2),
            ifindex: Some(2),
            port: ServerPort::Dhcp,
        },
    }
}

fn assign(boot: &Boot, profile: Option<&str>, once: Option<&str>) {
    boot.store()
        .update(|state| {
            state.machines.insert(
                Mac(MAC),
                Machine {
                    name: String::new(),
                    profile: profile.map(name),
                    once: once.map(name),
                },
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn dhcp_tftp_and_http_agree() {
    let f = fixture();
    let boot = &f.boot;
    // BIOS ROM: the bootloader, which TFTP can serve.
    let offer = boot.boot_offer(&request(Firmware::Pxe, 0)).unwrap();
    assert_eq!(
        offer,
        BootOffer::Tftp {
            filename: "undionly.kpxe".into()
        }
    );
    assert!(boot.contains(&TftpPath::parse(offer.bootfile()).unwrap()));
    // iPXE: its own script URL, on our address.
    let offer = boot.boot_offer(&request(Firmware::Ipxe, 7)).unwrap();
    assert_eq!(
        offer.bootfile(),
        "http://10.0.0.2:8080/boot/52:54:00:00:00:01.ipxe"
    );
    // Unknown machine, default menu: every ready profile, local disk by default.
    let menu = boot.script(&Mac(MAC), &boot.http_base(Ipv4Addr::new(10, 0, 0, 2)), None);
    assert!(
        menu.contains("item p-installer")
            && menu.contains("item p-disk")
            && menu.contains("choose --default local --timeout 10000"),
        "{menu}"
    );
    // Image files are served, but only those the manifest lists.
    assert!(
        boot.open(&TftpPath::parse("images/debian/linux").unwrap())
            .is_ok()
    );
    assert!(
        boot.open(&TftpPath::parse("images/debian/manifest.yaml").unwrap())
            .is_err()
    );
    assert!(
        boot.open(&TftpPath::parse("images/nosuch/linux").unwrap())
            .is_err()
    );
}

/// The address the machine took in its DHCP exchange with the LAN's server.
const MACHINE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

fn dhcp_exchange(boot: &Boot) {
    boot.record(PxeEvent::AddressAccepted {
        mac: MacAddr(MAC),
        address: MACHINE_IP,
        server: Ipv4Addr::new(10, 0, 0, 1),
    });
}

#[test]
fn boot_once_is_used_once_then_falls_back() {
    let f = fixture();
    let boot = &f.boot;
    assign(boot, Some("disk"), Some("installer"));
    dhcp_exchange(boot);
    let base = boot.http_base(Ipv4Addr::new(10, 0, 0, 2));
    let first = boot.script(&Mac(MAC), &base, Some(MACHINE_IP));
    assert!(
        first.contains(
            "kernel http://10.0.0.2:8080/images/debian/linux initrd=initrd.gz marker=installer"
        ),
        "{first}"
    );
    assert_eq!(boot.store().state().machines[&Mac(MAC)].once, None);
    let second = boot.script(&Mac(MAC), &base, Some(MACHINE_IP));
    assert!(
        second.contains("echo bootherd: booting disk\nexit"),
        "{second}"
    );
    let steps: Vec<Step> = boot
        .timeline()
        .events(&Mac(MAC))
        .into_iter()
        .map(|e| e.step)
        .collect();
    assert!(steps.contains(&Step::BootOnceUsed), "{steps:?}");
}

/// Only the machine may use up its boot-once profile: a script fetched from any other address
/// (or before the machine's DHCP exchange told bootherd its address) is the assigned profile's,
/// and the boot-once profile waits. Before, any host's GET used it up.
#[test]
fn boot_once_is_used_only_by_the_address_of_the_machines_dhcp_exchange() {
    let f = fixture();
    let boot = &f.boot;
    assign(boot, Some("disk"), Some("installer"));
    let base = boot.http_base(Ipv4Addr::new(10, 0, 0, 2));
    for requester in [None, Some(MACHINE_IP), Some(Ipv4Addr::new(10, 0, 0, 66))] {
        if requester == Some(MACHINE_IP) {
            // Not known yet: the exchange is what ties the address to the MAC.
            let early = boot.script(&Mac(MAC), &base, requester);
            assert!(early.contains("booting disk"), "{early}");
            dhcp_exchange(boot);
            continue;
        }
        let script = boot.script(&Mac(MAC), &base, requester);
        assert!(script.contains("booting disk"), "{requester:?}: {script}");
        assert_eq!(
            boot.store().state().machines[&Mac(MAC)].once,
            Some(name("installer")),
            "{requester:?} used up the boot-once profile"
        );
    }
    let explained = boot
        .timeline()
        .events(&Mac(MAC))
        .into_iter()
        .any(|e| e.detail.contains("boot-once") && e.detail.contains("10.0.0.66"));
    assert!(
        explained,
        "the timeline says why the boot-once profile waited"
    );
    assert!(
        boot.script(&Mac(MAC), &base, Some(MACHINE_IP))
            .contains("marker=installer")
    );
    assert_eq!(boot.store().state().machines[&Mac(MAC)].once, None);
}

#[test]
fn bootfile_profiles_and_ignored_machines() {
    let f = fixture();
    let boot = &f.boot;
    assign(boot, Some("legacy"), None);
    assert_eq!(
        boot.boot_offer(&request(Firmware::Pxe, 0)).unwrap(),
        BootOffer::Tftp {
            filename: "images/syslinux/pxelinux.0".into()
        }
    );
    let err = boot.boot_offer(&request(Firmware::Pxe, 7)).unwrap_err();
    assert!(err.message.contains("no boot file for efi-x64"), "{err}");
    assert_eq!(err.cause, bootherd_pxe::DeclineCause::NothingForArch);
    boot.store()
        .update(|state| {
            state.machines.clear();
            state.defaults.unknown = UnknownMachines::Ignore;
            Ok(())
        })
        .unwrap();
    assert!(boot.boot_offer(&request(Firmware::Pxe, 0)).is_err());
    assert!(boot.boot_offer(&request(Firmware::Ipxe, 0)).is_err());
}

#[test]
fn tftp_transfers_land_on_the_timeline_of_the_machine_at_that_address() {
    let f = fixture();
    let boot = &f.boot;
    let client = Ipv4Addr::new(10, 0, 0, 191);
    boot.record(PxeEvent::Request {
        mac: MacAddr(MAC),
        port: ServerPort::ProxyDhcp,
        message_type: "REQUEST".into(),
        arch: Arch::from_code(7),
        firmware: Firmware::Pxe,
        vendor_class: "PXEClient".into(),
        guid: None,
        relay: None,
        local_ip: Ipv4Addr::new(10, 0, 0, 2),
        client_ip: Some(client),
    });
    let outcome = bootherd_tftp::Outcome::Completed;
    boot.transfer_finished(&TransferReport {
        client: std::net::SocketAddr::from((client, 1234)),
        file: "snponly.efi",
        write: false,
        outcome: &outcome,
        bytes: 123,
        duration: std::time::Duration::from_millis(5),
    });
    let events = boot.timeline().events(&Mac(MAC));
    let steps: Vec<Step> = events.iter().map(|e| e.step).collect();
    assert_eq!(steps, [Step::DhcpRequest, Step::TftpTransfer]);
    assert!(events[1].detail.contains("snponly.efi") && events[1].detail.contains("completed"));
    assert_eq!(boot.seen(&Mac(MAC)).unwrap().arch, "efi-x64 (7)");
}

/// A script fetch ties later fetches from its address to the machine's timeline (iPXE chained
/// from elsewhere has no DHCP exchange here), but a DHCP exchange's address wins, and the
/// script fetch never counts as the machine's own address.
#[test]
fn script_fetches_attribute_later_fetches_but_dhcp_addresses_win() {
    let f = fixture();
    let boot = &f.boot;
    let base = boot.http_base(Ipv4Addr::new(10, 0, 0, 2));
    let elsewhere = Ipv4Addr::new(10, 0, 0, 77);
    boot.script(&Mac(MAC), &base, Some(elsewhere));
    assert_eq!(boot.machine_at(elsewhere), Some(Mac(MAC)));
    assert_eq!(boot.seen(&Mac(MAC)).unwrap().address, None);
    let other = Mac([0x52, 0x54, 0, 0, 0, 2]);
    boot.record(PxeEvent::AddressAccepted {
        mac: MacAddr(other.0),
        address: elsewhere,
        server: Ipv4Addr::new(10, 0, 0, 1),
    });
    assert_eq!(boot.machine_at(elsewhere), Some(other));
}

/// The store validates bootfile profiles against its own list of names (it knows no
/// protocol); that list must be exactly the TFTP architectures DHCP tells apart, less those
/// too vague to pick a file for.
#[test]
fn the_stores_architecture_names_are_the_dhcp_keys() {
    use bootherd_pxe::ArchKey;
    let vague = [ArchKey::EfiOther, ArchKey::OpenFirmware, ArchKey::Other];
    let keys: Vec<&str> = ArchKey::ALL
        .into_iter()
        .filter(|key| !key.http() && !vague.contains(key))
        .map(ArchKey::name)
        .collect();
    assert_eq!(bootherd_store::validate::ARCH_NAMES, keys.as_slice());
}

#[test]
fn every_architecture_with_an_ipxe_build_has_bootloader_names_and_http_shares_them() {
    use bootherd_pxe::ArchKey;
    for key in ArchKey::ALL {
        assert_eq!(
            crate::bootloader_candidates(key),
            crate::bootloader_candidates(key.without_http()),
            "{key}"
        );
    }
    for key in crate::COMMON_ARCHES {
        assert!(!crate::bootloader_candidates(key).is_empty(), "{key}");
    }
}
