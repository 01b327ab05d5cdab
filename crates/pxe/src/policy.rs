//! The question the responder asks about every request, answered elsewhere.

use crate::request::PxeRequest;

/// What to tell a client to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOffer {
    /// A file on our TFTP server. The policy must only offer files the TFTP server can serve.
    Tftp { filename: String },
    /// A URL, for iPXE and UEFI HTTP Boot clients.
    Http { url: String },
}

impl BootOffer {
    /// What goes in the `file` field and option 67.
    pub fn bootfile(&self) -> &str {
        match self {
            BootOffer::Tftp { filename } => filename,
            BootOffer::Http { url } => url,
        }
    }
}

/// Decides what each machine boots. The responder never looks past this trait: which
/// bootloader, which script, which machines to ignore are all the policy's business.
pub trait BootPolicy: Send + Sync + std::fmt::Debug {
    /// `Err(reason)` means: do not answer this client at all (so another PXE server on the LAN
    /// can), and record why.
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, String>;
}
