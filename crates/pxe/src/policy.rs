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

/// Why the policy does not answer a request: what kind of reason (for counting and for the
/// fix to suggest) and the reason in words, naming the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Decline {
    pub cause: DeclineCause,
    pub message: String,
}

/// The kinds of reasons not to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeclineCause {
    /// The machine is not one to answer (the defaults ignore unknown machines).
    Ignored,
    /// Nothing to offer this architecture: no bootloader for it, or the machine's profile has
    /// no boot file for it.
    NothingForArch,
    /// The file the machine's profile names is not in the image store.
    FileMissing,
}

impl DeclineCause {
    /// A short stable name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DeclineCause::Ignored => "ignored",
            DeclineCause::NothingForArch => "nothing_for_arch",
            DeclineCause::FileMissing => "file_missing",
        }
    }
}

impl Decline {
    pub fn new(cause: DeclineCause, message: impl Into<String>) -> Decline {
        Decline {
            cause,
            message: message.into(),
        }
    }
}

/// Decides what each machine boots. The responder never looks past this trait: which
/// bootloader, which script, which machines to ignore are all the policy's business.
pub trait BootPolicy: Send + Sync + std::fmt::Debug {
    /// `Err(decline)` means: do not answer this client at all (so another PXE server on the
    /// LAN can), and record why.
    fn boot_offer(&self, request: &PxeRequest) -> Result<BootOffer, Decline>;
}
