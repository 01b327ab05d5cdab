//! Client system architecture (DHCP option 93, RFC 4578 §2.1 and the IANA "Processor
//! Architecture Types" registry).
//!
//! The registry mixes two questions: which CPU (which kernel and bootloader binary) and which
//! firmware (which loader format, PXE or HTTP). Both are kept, as separate fields, so the boot
//! policy can choose a bootloader by firmware and a kernel by CPU (pixiecore's lesson).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cpu {
    X86,
    X86_64,
    Itanium,
    /// EFI byte code: in practice sent by x86-64 firmware (RFC 4578 errata swapped 7 and 9,
    /// and firmware in the field sends both for x86-64).
    Ebc,
    Arm32,
    Arm64,
    RiscV32,
    RiscV64,
    RiscV128,
    LoongArch32,
    LoongArch64,
    Mips32,
    Mips64,
    Sunway32,
    Sunway64,
    PowerPc,
    S390,
    Other,
}

/// The boot environment the client runs in, which decides the bootloader format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Platform {
    Bios,
    Uefi,
    UBoot,
    OpenFirmware,
    /// Raspberry Pi boot ROM (arch 41).
    RpiBoot,
    Other,
}

/// A decoded option 93 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch {
    pub code: u16,
    pub cpu: Cpu,
    pub platform: Platform,
    /// An "HTTP boot" variant (15-20, 23, 24, ...): the client loads a URL, not a TFTP file.
    pub http: bool,
}

impl Arch {
    pub fn from_code(code: u16) -> Arch {
        use Cpu as C;
        use Platform as P;
        let (cpu, platform, http) = match code {
            0 => (C::X86, P::Bios, false),
            1 => (C::X86, P::Bios, false), // NEC/PC98
            2 => (C::Itanium, P::Uefi, false),
            3 => (C::Other, P::Other, false), // DEC Alpha
            4 => (C::X86, P::Other, false),   // Arc x86
            5 => (C::X86, P::Other, false),   // Intel Lean Client
            6 => (C::X86, P::Uefi, false),
            7 => (C::X86_64, P::Uefi, false),
            8 => (C::Other, P::Uefi, false), // EFI Xscale
            9 => (C::Ebc, P::Uefi, false),
            10 => (C::Arm32, P::Uefi, false),
            11 => (C::Arm64, P::Uefi, false),
            12 => (C::PowerPc, P::OpenFirmware, false),
            13 => (C::PowerPc, P::Other, false), // ePAPR
            14 => (C::PowerPc, P::Other, false), // OPAL v3
            15 => (C::X86, P::Uefi, true),
            16 => (C::X86_64, P::Uefi, true),
            17 => (C::Ebc, P::Uefi, true),
            18 => (C::Arm32, P::Uefi, true),
            19 => (C::Arm64, P::Uefi, true),
            20 => (C::X86, P::Bios, true),
            21 => (C::Arm32, P::UBoot, false),
            22 => (C::Arm64, P::UBoot, false),
            23 => (C::Arm32, P::UBoot, true),
            24 => (C::Arm64, P::UBoot, true),
            25 => (C::RiscV32, P::Uefi, false),
            26 => (C::RiscV32, P::Uefi, true),
            27 => (C::RiscV64, P::Uefi, false),
            28 => (C::RiscV64, P::Uefi, true),
            29 => (C::RiscV128, P::Uefi, false),
            30 => (C::RiscV128, P::Uefi, true),
            31 | 32 => (C::S390, P::Other, false),
            33 => (C::Mips32, P::Uefi, false),
            34 => (C::Mips64, P::Uefi, false),
            35 => (C::Sunway32, P::Uefi, false),
            36 => (C::Sunway64, P::Uefi, false),
            37 => (C::LoongArch32, P::Uefi, false),
            38 => (C::LoongArch32, P::Uefi, true),
            39 => (C::LoongArch64, P::Uefi, false),
            40 => (C::LoongArch64, P::Uefi, true),
            41 => (C::Arm32, P::RpiBoot, false),
            _ => (C::Other, P::Other, false),
        };
        Arch {
            code,
            cpu,
            platform,
            http,
        }
    }

    /// Whether the client runs x86-64 code (7 and 9 both mean that in the field).
    pub fn is_x86_64_uefi(&self) -> bool {
        self.platform == Platform::Uefi && matches!(self.cpu, Cpu::X86_64 | Cpu::Ebc)
    }

    /// The key bootherd knows this architecture by (profiles, bootloaders, metrics).
    pub fn key(&self) -> ArchKey {
        use ArchKey as K;
        match (self.platform, self.cpu, self.http) {
            (Platform::Bios, _, false) => K::Bios,
            (Platform::Bios, _, true) => K::BiosHttp,
            (Platform::Uefi, Cpu::X86, false) => K::EfiIa32,
            (Platform::Uefi, Cpu::X86, true) => K::EfiIa32Http,
            (Platform::Uefi, Cpu::X86_64 | Cpu::Ebc, false) => K::EfiX64,
            (Platform::Uefi, Cpu::X86_64 | Cpu::Ebc, true) => K::EfiX64Http,
            (Platform::Uefi, Cpu::Arm32, false) => K::EfiArm32,
            (Platform::Uefi, Cpu::Arm32, true) => K::EfiArm32Http,
            (Platform::Uefi, Cpu::Arm64, false) => K::EfiArm64,
            (Platform::Uefi, Cpu::Arm64, true) => K::EfiArm64Http,
            (Platform::Uefi, Cpu::RiscV64, false) => K::EfiRiscV64,
            (Platform::Uefi, Cpu::RiscV64, true) => K::EfiRiscV64Http,
            (Platform::Uefi, Cpu::LoongArch64, false) => K::EfiLoongArch64,
            (Platform::Uefi, Cpu::LoongArch64, true) => K::EfiLoongArch64Http,
            (Platform::Uefi, _, _) => K::EfiOther,
            (Platform::UBoot, Cpu::Arm64, _) => K::UBootArm64,
            (Platform::UBoot, _, _) => K::UBootArm32,
            (Platform::RpiBoot, _, _) => K::RpiBoot,
            (Platform::OpenFirmware, _, _) => K::OpenFirmware,
            (Platform::Other, _, _) => K::Other,
        }
    }

    /// Short stable name for logs, metrics and file-name patterns (`ArchKey::name`).
    pub fn name(&self) -> &'static str {
        self.key().name()
    }
}

/// The architectures bootherd tells apart: one key per kind of boot program a machine can
/// run. The one table of their names; profiles, the bootloader table, `bootherd check` and the
/// metrics all use these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArchKey {
    Bios,
    BiosHttp,
    EfiIa32,
    EfiIa32Http,
    EfiX64,
    EfiX64Http,
    EfiArm32,
    EfiArm32Http,
    EfiArm64,
    EfiArm64Http,
    EfiRiscV64,
    EfiRiscV64Http,
    EfiLoongArch64,
    EfiLoongArch64Http,
    EfiOther,
    UBootArm32,
    UBootArm64,
    RpiBoot,
    OpenFirmware,
    Other,
}

impl ArchKey {
    pub const ALL: [ArchKey; 20] = {
        use ArchKey as K;
        [
            K::Bios,
            K::BiosHttp,
            K::EfiIa32,
            K::EfiIa32Http,
            K::EfiX64,
            K::EfiX64Http,
            K::EfiArm32,
            K::EfiArm32Http,
            K::EfiArm64,
            K::EfiArm64Http,
            K::EfiRiscV64,
            K::EfiRiscV64Http,
            K::EfiLoongArch64,
            K::EfiLoongArch64Http,
            K::EfiOther,
            K::UBootArm32,
            K::UBootArm64,
            K::RpiBoot,
            K::OpenFirmware,
            K::Other,
        ]
    };

    pub fn name(self) -> &'static str {
        use ArchKey as K;
        match self {
            K::Bios => "bios",
            K::BiosHttp => "bios-http",
            K::EfiIa32 => "efi-ia32",
            K::EfiIa32Http => "efi-ia32-http",
            K::EfiX64 => "efi-x64",
            K::EfiX64Http => "efi-x64-http",
            K::EfiArm32 => "efi-arm32",
            K::EfiArm32Http => "efi-arm32-http",
            K::EfiArm64 => "efi-arm64",
            K::EfiArm64Http => "efi-arm64-http",
            K::EfiRiscV64 => "efi-riscv64",
            K::EfiRiscV64Http => "efi-riscv64-http",
            K::EfiLoongArch64 => "efi-loongarch64",
            K::EfiLoongArch64Http => "efi-loongarch64-http",
            K::EfiOther => "efi-other",
            K::UBootArm32 => "uboot-arm32",
            K::UBootArm64 => "uboot-arm64",
            K::RpiBoot => "rpiboot",
            K::OpenFirmware => "openfirmware",
            K::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<ArchKey> {
        ArchKey::ALL.into_iter().find(|key| key.name() == name)
    }

    /// The firmware loads a URL (UEFI HTTP Boot), not a TFTP file.
    pub fn http(self) -> bool {
        self.name().ends_with("-http")
    }

    /// The same machine booting by TFTP: its HTTP Boot variant shares its boot programs.
    pub fn without_http(self) -> ArchKey {
        use ArchKey as K;
        match self {
            K::BiosHttp => K::Bios,
            K::EfiIa32Http => K::EfiIa32,
            K::EfiX64Http => K::EfiX64,
            K::EfiArm32Http => K::EfiArm32,
            K::EfiArm64Http => K::EfiArm64,
            K::EfiRiscV64Http => K::EfiRiscV64,
            K::EfiLoongArch64Http => K::EfiLoongArch64,
            other => other,
        }
    }
}

impl fmt::Display for ArchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code)
    }
}

/// Reads the architecture from option 60 (`PXEClient:Arch:00007:UNDI:003000`) when option 93
/// is missing, as some Intel ROMs do (pixiecore#21 is the same family of omission).
pub fn from_vendor_class(vendor_class: &str) -> Option<Arch> {
    let rest = vendor_class.split(":Arch:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Arch::from_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_codes() {
        assert_eq!(Arch::from_code(0).name(), "bios");
        assert!(Arch::from_code(7).is_x86_64_uefi());
        assert!(Arch::from_code(9).is_x86_64_uefi());
        assert_eq!(Arch::from_code(11).name(), "efi-arm64");
        assert!(Arch::from_code(16).http);
        assert_eq!(Arch::from_code(16).name(), "efi-x64-http");
        assert_eq!(Arch::from_code(41).platform, Platform::RpiBoot);
        assert_eq!(Arch::from_code(999).platform, Platform::Other);
    }

    #[test]
    fn every_registered_code_is_classified() {
        for code in 0..=41 {
            let arch = Arch::from_code(code);
            if ![3, 4, 5, 13, 14, 31, 32].contains(&code) {
                assert_ne!(arch.platform, Platform::Other, "code {code}");
            }
        }
    }

    #[test]
    fn vendor_class_fallback() {
        assert_eq!(
            from_vendor_class("PXEClient:Arch:00007:UNDI:003000").map(|a| a.code),
            Some(7)
        );
        assert_eq!(from_vendor_class("PXEClient"), None);
        assert_eq!(
            from_vendor_class("HTTPClient:Arch:00016:UNDI:003001").map(|a| a.code),
            Some(16)
        );
    }

    #[test]
    fn every_key_has_one_name_that_parses_back_and_every_code_has_a_key() {
        for key in ArchKey::ALL {
            assert_eq!(ArchKey::parse(key.name()), Some(key));
            assert_eq!(key.http(), key != key.without_http(), "{key}");
            assert!(!key.without_http().http(), "{key}");
        }
        let mut names: Vec<&str> = ArchKey::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ArchKey::ALL.len());
        for code in 0..=u16::from(u8::MAX) {
            let arch = Arch::from_code(code);
            assert_eq!(ArchKey::parse(arch.name()), Some(arch.key()), "code {code}");
        }
    }
}
