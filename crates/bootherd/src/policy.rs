//! The built-in boot policy of `bootherd serve` until the image store and its policy exist:
//! a bootloader by architecture, and an iPXE script for iPXE clients, all looked up in the same
//! file source the TFTP server serves, so DHCP never offers a file TFTP cannot deliver.

use std::sync::Arc;

use bootherd_pxe::{BootOffer, BootPolicy, Firmware, Platform, PxeRequest};
use bootherd_tftp::{FileSource, TftpPath};

/// Bootloader file names to try, by architecture name, in order. These are the names of
/// Debian's `ipxe` package (undionly.kpxe, ipxe.efi, snponly.efi in /usr/lib/ipxe) and the
/// usual names for the architectures Debian does not build.
fn bootloaders(arch: &str) -> &'static [&'static str] {
    match arch {
        "bios" => &["undionly.kpxe", "undionly.kkpxe", "ipxe.pxe"],
        "efi-x64" => &["ipxe.efi", "snponly.efi"],
        "efi-ia32" => &["i386/ipxe.efi", "ipxe-i386.efi"],
        "efi-arm64" => &["arm64/ipxe.efi", "ipxe-arm64.efi", "snp-arm64.efi"],
        "efi-arm32" => &["arm32/ipxe.efi", "ipxe-arm32.efi"],
        "efi-riscv64" => &["riscv64/ipxe.efi", "ipxe-riscv64.efi"],
        "efi-loongarch64" => &["loong64/ipxe.efi", "ipxe-loong64.efi"],
        _ => &[],
    }
}

#[derive(Debug)]
pub(crate) struct DirPolicy {
    pub(crate) files: Arc<dyn FileSource>,
    /// Script offered to clients that already run iPXE, e.g. `boot.ipxe`.
    pub(crate) ipxe_script: String,
}

impl DirPolicy {
    fn first_present(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find(|name| TftpPath::parse(name).is_ok_and(|path| self.files.contains(&path)))
            .map(|name| name.to_string())
    }
}

impl BootPolicy for DirPolicy {
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, String> {
        match request.firmware {
            // Offering a bootloader to iPXE would chainload iPXE into itself forever (ipxe#908),
            // so iPXE gets the script or nothing.
            Firmware::Ipxe => self
                .first_present(&[self.ipxe_script.as_str()])
                .map(|filename| BootOffer::Tftp { filename })
                .ok_or_else(|| {
                    format!(
                        "client runs iPXE, but there is no iPXE script '{}' in the TFTP root; add one (or pass --ipxe-script NAME)",
                        self.ipxe_script
                    )
                }),
            Firmware::UefiHttp => Err(
                "UEFI HTTP Boot needs bootherd's HTTP boot server, which this build does not have yet; boot the machine by PXE instead".into(),
            ),
            Firmware::Pxe => {
                let arch = request.arch.name();
                let candidates = bootloaders(arch);
                if candidates.is_empty() {
                    let kind = if request.arch.platform == Platform::Other { "unknown" } else { "unsupported" };
                    return Err(format!("{kind} architecture {} has no bootloader", request.arch));
                }
                self.first_present(candidates)
                    .map(|filename| BootOffer::Tftp { filename })
                    .ok_or_else(|| {
                        format!(
                            "no bootloader for {} in the TFTP root or bootloader directory (looked for {}); install Debian's ipxe package or copy one there",
                            request.arch,
                            candidates.join(", ")
                        )
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootherd_pxe::{Arch, Arrival, ClientClass, MacAddr, ServerPort};
    use bootherd_tftp::DirSource;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn request(firmware: Firmware, arch: u16) -> PxeRequest {
        PxeRequest {
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
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
                local_ip: Ipv4Addr::new(10, 0, 0, 1),
                ifindex: Some(2),
                port: ServerPort::Dhcp,
            },
        }
    }

    #[test]
    fn offers_only_files_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snponly.efi"), b"efi").unwrap();
        let policy = DirPolicy {
            files: Arc::new(DirSource::new(dir.path()).unwrap()),
            ipxe_script: "boot.ipxe".into(),
        };
        assert_eq!(
            policy.boot_offer(&request(Firmware::Pxe, 7)),
            Ok(BootOffer::Tftp {
                filename: "snponly.efi".into()
            })
        );
        let err = policy.boot_offer(&request(Firmware::Pxe, 0)).unwrap_err();
        assert!(
            err.contains("undionly.kpxe") && err.contains("bios"),
            "{err}"
        );
        let err = policy.boot_offer(&request(Firmware::Ipxe, 0)).unwrap_err();
        assert!(err.contains("boot.ipxe"), "{err}");
        std::fs::write(dir.path().join("boot.ipxe"), b"#!ipxe\n").unwrap();
        assert_eq!(
            policy.boot_offer(&request(Firmware::Ipxe, 7)),
            Ok(BootOffer::Tftp {
                filename: "boot.ipxe".into()
            })
        );
        assert!(policy.boot_offer(&request(Firmware::Pxe, 3)).is_err());
    }
}
