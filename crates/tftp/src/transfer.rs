//! Admission of requests and the transfer type the network driver holds.
//!
//! [`accept`] turns a decoded RRQ/WRQ into a running [`Transfer`] or a [`Refusal`] (the ERROR
//! to send, with a message that names the file, the reason and the fix). Both directions share
//! the same verbs, so a driver needs no knowledge of which one it runs:
//! `handle_packet`, `handle_timeout`, `poll_transmit`, `poll_timeout`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::options::{self, NegotiationLimits, RequestedOptions};
use crate::packet::{ErrorCode, Mode, Packet, Request};
use crate::read::ReadTransfer;
use crate::source::{FileSource, TftpPath, UploadTarget};
use crate::timer::TimerConfig;
use crate::write::WriteTransfer;

/// Server-wide policy for transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferConfig {
    pub limits: NegotiationLimits,
    pub timer: TimerConfig,
}

/// What was agreed for one transfer.
#[derive(Debug, Clone)]
pub struct Params {
    /// The normalised path, for logs and messages.
    pub filename: String,
    pub mode: Mode,
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Option<u8>,
    pub requested: RequestedOptions,
    pub oack: Vec<(&'static str, String)>,
    pub timer: TimerConfig,
    /// File size (reads) or announced size (writes), when known.
    pub size: Option<u64>,
}

impl Params {
    /// The agreed options as `name=value` text, for logs.
    pub fn describe_options(&self) -> String {
        options::describe(&self.oack)
    }
}

/// Counters for the per-transfer log event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes acknowledged by the client (reads) or received (writes).
    pub bytes: u64,
    /// Datagrams we sent.
    pub packets: u64,
    /// Of those, resent ones.
    pub retransmits: u64,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    Completed,
    /// Everything was sent and acknowledged except the final block, whose ACK never came. Some
    /// clients never send it; the file almost certainly arrived.
    FinalAckMissing,
    /// The client asked for the size (tsize), read our OACK and stopped: EDK2's "GetInfo".
    SizeProbe,
    ClientAborted {
        code: ErrorCode,
        message: String,
    },
    TimedOut {
        retries: u32,
    },
    ReadError(String),
    StoreError(String),
    ProtocolViolation(String),
    /// The driver ended the transfer (server shutdown).
    Cancelled,
    /// A new request from the same client address and port replaced this transfer (the
    /// client restarted, or its port was reused by a new client).
    Superseded,
}

impl Outcome {
    /// A short stable name, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::FinalAckMissing => "final_ack_missing",
            Outcome::SizeProbe => "size_probe",
            Outcome::ClientAborted { .. } => "client_aborted",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::ReadError(_) => "read_error",
            Outcome::StoreError(_) => "store_error",
            Outcome::ProtocolViolation(_) => "protocol_violation",
            Outcome::Cancelled => "cancelled",
            Outcome::Superseded => "superseded",
        }
    }

    /// Whether the client got what it asked for (or, for a probe, what it wanted to know).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Completed | Outcome::FinalAckMissing | Outcome::SizeProbe
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed => f.write_str("completed"),
            Outcome::FinalAckMissing => f.write_str("completed (final ACK never arrived)"),
            Outcome::SizeProbe => {
                f.write_str("size probe (client read the size and stopped, as UEFI does)")
            }
            Outcome::ClientAborted { code, message } => {
                write!(f, "aborted by client: error {code}: {message:?}")
            }
            Outcome::TimedOut { retries } => write!(
                f,
                "timed out after {retries} retries: the client stopped answering (network loss, a firewall dropping our replies, or the client gave up)"
            ),
            Outcome::ReadError(e) => write!(f, "read error: {e}"),
            Outcome::StoreError(e) => write!(f, "upload not stored: {e}"),
            Outcome::ProtocolViolation(e) => write!(f, "protocol violation by client: {e}"),
            Outcome::Cancelled => f.write_str("cancelled by server shutdown"),
            Outcome::Superseded => {
                f.write_str("superseded by a new request from the same client address and port")
            }
        }
    }
}

/// A request we will not serve, and the ERROR that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A running transfer in either direction.
#[derive(Debug)]
pub enum Transfer {
    Read(ReadTransfer),
    Write(WriteTransfer),
}

macro_rules! both {
    ($self:expr, $t:ident => $body:expr) => {
        match $self {
            Transfer::Read($t) => $body,
            Transfer::Write($t) => $body,
        }
    };
}

impl Transfer {
    pub fn is_write(&self) -> bool {
        matches!(self, Transfer::Write(_))
    }

    pub fn params(&self) -> &Params {
        both!(self, t => t.params())
    }

    pub fn stats(&self) -> &Stats {
        both!(self, t => t.stats())
    }

    /// Whether the client answered our first reply. After that, the same request again from
    /// the same address and port is a new transfer (a restarted client, or a reused port), not
    /// a retransmission.
    pub fn client_confirmed(&self) -> bool {
        both!(self, t => t.client_confirmed())
    }

    /// `Some` once the transfer is over and everything it had to send was taken.
    pub fn outcome(&self) -> Option<&Outcome> {
        both!(self, t => t.outcome())
    }

    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        both!(self, t => t.handle_packet(now, packet))
    }

    pub fn handle_repeated_request(&mut self) {
        both!(self, t => t.handle_repeated_request())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        both!(self, t => t.handle_timeout(now))
    }

    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        both!(self, t => t.poll_transmit(now, out))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        both!(self, t => t.poll_timeout())
    }

    /// Work ahead while waiting for the client: a read transfer reads its next block (see
    /// [`ReadTransfer::prepare_next`]); a write transfer has nothing to prepare.
    pub fn prepare_next(&mut self) {
        if let Transfer::Read(t) = self {
            t.prepare_next();
        }
    }

    /// Largest datagram this transfer can receive from its client.
    pub fn max_incoming(&self) -> usize {
        match self {
            // ACKs and ERRORs; room for a long client error message.
            Transfer::Read(_) => 1024,
            Transfer::Write(t) => usize::from(t.params().blksize) + 4,
        }
    }
}

/// Where uploads go, if anywhere.
#[derive(Debug, Clone, Copy)]
pub enum Uploads<'a> {
    Disabled,
    Enabled(&'a dyn UploadTarget),
}

/// Decides a request: opens the file (or the upload), negotiates options, and returns the
/// transfer ready for its first `poll_transmit`.
pub fn accept(
    now: Instant,
    request: &Request<'_>,
    write: bool,
    config: &TransferConfig,
    source: &dyn FileSource,
    uploads: Uploads<'_>,
) -> Result<Transfer, Refusal> {
    let shown = request.filename;
    if request.mode == Mode::Mail {
        return Err(Refusal::new(
            ErrorCode::IllegalOperation,
            format!("'{shown}': mail mode is not supported (RFC 1123); use octet"),
        ));
    }
    let path = TftpPath::parse(request.filename).map_err(|e| {
        Refusal::new(
            ErrorCode::AccessViolation,
            format!("'{shown}' is refused because {e}"),
        )
    })?;
    let requested = RequestedOptions::parse(&request.options);
    let make_params = |size: Option<u64>, tsize_answer: Option<u64>| {
        let negotiated = options::negotiate(&requested, &config.limits, tsize_answer);
        Params {
            filename: path.to_string(),
            mode: request.mode,
            blksize: negotiated.blksize,
            windowsize: negotiated.windowsize,
            timeout: negotiated.timeout,
            requested,
            oack: negotiated.oack,
            timer: config.timer,
            size,
        }
    };
    if write {
        let Uploads::Enabled(target) = uploads else {
            // Access violation, as tftp-hpa and dnsmasq answer a write to a read-only server.
            return Err(Refusal::new(
                ErrorCode::AccessViolation,
                format!(
                    "'{path}': uploads (write requests) are disabled on this server; enable them with --upload-dir DIR (tftp.upload_dir)"
                ),
            ));
        };
        let sink = target
            .create(&path, requested.tsize)
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        // RFC 2349: on a WRQ the server echoes the client's tsize.
        let params = make_params(requested.tsize, requested.tsize);
        return Ok(Transfer::Write(WriteTransfer::new(sink, params, now)));
    }
    let file = source
        .open(&path)
        .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
    let size = file.len();
    // In netascii the size on the wire is unknown until encoded, so tsize is left out (as
    // tftp-hpa and dnsmasq do). An empty file is answered "tsize 0", as RFC 2349 asks and
    // tftp-hpa and dnsmasq do: UEFI's size probe needs the OACK. curl refuses that OACK
    // (its own check); `curl --tftp-no-options` fetches an empty file.
    let tsize_answer = (request.mode == Mode::Octet).then_some(size);
    let params = make_params(Some(size), tsize_answer);
    Ok(Transfer::Read(ReadTransfer::new(file, params, now)))
}

/// Token bucket for ERROR replies to strangers (unknown transfer IDs, junk on the port): a
/// reply to a spoofed source is a reflection, so they are capped, while a real confused client
/// still hears about its mistake.
#[derive(Debug, Clone)]
pub struct ErrorRateLimiter {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Option<Instant>,
}

impl ErrorRateLimiter {
    pub fn new(per_second: u32, burst: u32) -> ErrorRateLimiter {
        ErrorRateLimiter {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last: None,
        }
    }

    /// Takes a token if one is available.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for ErrorRateLimiter {
    fn default() -> Self {
        ErrorRateLimiter::new(20, 20)
    }
}

/// A finished transfer, as observers see it.
#[derive(Debug, Clone, Copy)]
pub struct TransferReport<'a> {
    pub client: SocketAddr,
    pub file: &'a str,
    pub write: bool,
    pub outcome: &'a Outcome,
    pub bytes: u64,
    pub duration: Duration,
}

/// Told about every transfer and refusal (the boot crate puts them on machine timelines). Must
/// not block: it runs on the network task.
pub trait TransferObserver: Send + Sync + fmt::Debug {
    fn transfer_finished(&self, report: &TransferReport<'_>);

    fn request_refused(&self, _client: SocketAddr, _file: &str, _refusal: &Refusal) {}
}
