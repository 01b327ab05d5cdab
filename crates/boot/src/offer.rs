//! What DHCP offers: the boot file or URL for a machine's firmware, from the one loader table
//! (`bootloader_candidates`). An offered file is always one the file source can serve.

use bootherd_pxe::{ArchKey, BootOffer, BootPolicy, Decline, DeclineCause, Firmware, PxeRequest};
use bootherd_store::Profile;
use bootherd_tftp::{FileSource, TftpPath};

use crate::{Boot, Decision, mac_of};

/// Bootloader file names to try for an architecture, in order: the names of Debian's `ipxe`
/// package (/usr/lib/ipxe) and the usual names for the architectures Debian does not build. An
/// HTTP Boot client gets its TFTP sibling's. The one loader table: DHCP offers from it and
/// `bootherd check` checks it.
pub fn bootloader_candidates(arch: ArchKey) -> &'static [&'static str] {
    use ArchKey as K;
    match arch.without_http() {
        K::Bios => &["undionly.kpxe", "undionly.kkpxe", "ipxe.pxe"],
        K::EfiX64 => &["ipxe.efi", "snponly.efi"],
        K::EfiIa32 => &["i386/ipxe.efi", "ipxe-i386.efi"],
        K::EfiArm64 => &["arm64/ipxe.efi", "ipxe-arm64.efi", "snp-arm64.efi"],
        K::EfiArm32 => &["arm32/ipxe.efi", "ipxe-arm32.efi"],
        K::EfiRiscV64 => &["riscv64/ipxe.efi", "ipxe-riscv64.efi"],
        K::EfiLoongArch64 => &["loong64/ipxe.efi", "ipxe-loong64.efi"],
        // No iPXE build exists for these; only a bootfile profile can boot them.
        K::EfiOther | K::UBootArm32 | K::UBootArm64 | K::RpiBoot | K::OpenFirmware | K::Other => {
            &[]
        }
        // `without_http` never returns an HTTP variant.
        K::BiosHttp
        | K::EfiIa32Http
        | K::EfiX64Http
        | K::EfiArm32Http
        | K::EfiArm64Http
        | K::EfiRiscV64Http
        | K::EfiLoongArch64Http => &[],
    }
}

/// Architectures most machines are, whose missing bootloader `bootherd check` reports as a
/// problem; for the others it is a note.
pub const COMMON_ARCHES: [ArchKey; 2] = [ArchKey::Bios, ArchKey::EfiX64];

impl Boot {
    fn bootloader(&self, arch: ArchKey) -> Option<String> {
        bootloader_candidates(arch)
            .iter()
            .find(|name| TftpPath::parse(name).is_ok_and(|p| self.bootloaders.contains(&p)))
            .map(|name| name.to_string())
    }
}

impl BootPolicy for Boot {
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, Decline> {
        let mac = mac_of(request.mac);
        let state = self.store.state();
        let decision = Self::decide(&state, &mac);
        if decision == Decision::Ignore {
            return Err(Decline::new(
                DeclineCause::Ignored,
                "unknown machine, and the defaults say to ignore unknown machines (assign it a profile, or change what unknown machines boot in the defaults)",
            ));
        }
        let arch = request.arch.key();
        match request.firmware {
            Firmware::Ipxe => Ok(BootOffer::Http {
                url: format!(
                    "{}/boot/{mac}.ipxe",
                    self.http_base(request.arrival.local_ip).0
                ),
            }),
            Firmware::UefiHttp => self
                .bootloader(arch)
                .map(|file| BootOffer::Http {
                    url: format!(
                        "{}/bootloaders/{file}",
                        self.http_base(request.arrival.local_ip).0
                    ),
                })
                .ok_or_else(|| {
                    Decline::new(
                        DeclineCause::NothingForArch,
                        format!(
                            "no iPXE bootloader for {} to send over HTTP (looked for {}); add one to the bootloader directory (--bootloaders DIR)",
                            request.arch,
                            bootloader_candidates(arch).join(", ")
                        ),
                    )
                }),
            Firmware::Pxe => {
                if let Decision::Profile {
                    name,
                    profile: Profile::Bootfile { image, files, .. },
                    ..
                } = &decision
                {
                    let file = files.get(arch.name()).ok_or_else(|| {
                        Decline::new(
                            DeclineCause::NothingForArch,
                            format!(
                                "profile '{name}' has no boot file for {} (add '{}: FILE' to its files)",
                                request.arch,
                                arch.name()
                            ),
                        )
                    })?;
                    let path = format!("images/{image}/{file}");
                    return match TftpPath::parse(&path) {
                        Ok(p) if self.contains(&p) => Ok(BootOffer::Tftp { filename: path }),
                        _ => Err(Decline::new(
                            DeclineCause::FileMissing,
                            format!(
                                "profile '{name}': '{path}' is not in the image store (add it with bootherd image add {image} FILE)"
                            ),
                        )),
                    };
                }
                self.bootloader(arch)
                    .map(|filename| BootOffer::Tftp { filename })
                    .ok_or_else(|| {
                        Decline::new(
                            DeclineCause::NothingForArch,
                            format!(
                                "no bootloader for {} (looked for {}); install Debian's ipxe package or add one to the bootloader directory (--bootloaders DIR)",
                                request.arch,
                                bootloader_candidates(arch).join(", ")
                            ),
                        )
                    })
            }
        }
    }
}
