//! The TFTP wire format (RFC 1350 §5, RFC 2347 for OACK).
//!
//! Decoding borrows from the datagram, so a parsed packet costs no allocation beyond the option
//! list. Every length is checked before it is read: the classic TFTP server bugs (atftp
//! CVE-2019-11365, CVE-2021-46671) came from reading a field whose terminating NUL was missing.

use std::borrow::Cow;
use std::fmt;

/// Largest block size RFC 2348 allows.
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// The RFC 1350 block size, used when no `blksize` option was agreed.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Our ERROR messages are cut to this many bytes: long enough to name a path and a fix, short
/// enough to fit any block size a client could have asked for.
pub const MAX_ERROR_MESSAGE: usize = 400;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Transfer mode of a request (RFC 1350 §5; names are case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    /// Obsolete; RFC 1123 4.2.2.1 says servers should not support it. Parsed so that it can be
    /// refused with a clear message instead of "malformed".
    Mail,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        if text.eq_ignore_ascii_case("octet") {
            Some(Mode::Octet)
        } else if text.eq_ignore_ascii_case("netascii") {
            Some(Mode::Netascii)
        } else if text.eq_ignore_ascii_case("mail") {
            Some(Mode::Mail)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error codes exactly as RFC 1350 (0-7) and RFC 2347 (8) define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    OptionNegotiation,
    /// A code outside the RFCs, kept so that a peer's ERROR can be logged faithfully.
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            other => ErrorCode::Other(other),
        }
    }

    /// A short stable name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotDefined => "not_defined",
            ErrorCode::FileNotFound => "file_not_found",
            ErrorCode::AccessViolation => "access_violation",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::IllegalOperation => "illegal_operation",
            ErrorCode::UnknownTransferId => "unknown_transfer_id",
            ErrorCode::FileExists => "file_exists",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::OptionNegotiation => "option_negotiation",
            ErrorCode::Other(_) => "other",
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorCode::NotDefined => "not defined",
            ErrorCode::FileNotFound => "file not found",
            ErrorCode::AccessViolation => "access violation",
            ErrorCode::DiskFull => "disk full or allocation exceeded",
            ErrorCode::IllegalOperation => "illegal TFTP operation",
            ErrorCode::UnknownTransferId => "unknown transfer ID",
            ErrorCode::FileExists => "file already exists",
            ErrorCode::NoSuchUser => "no such user",
            ErrorCode::OptionNegotiation => "option negotiation failed",
            ErrorCode::Other(_) => "non-standard error",
        };
        write!(f, "{} ({text})", self.as_u16())
    }
}

/// A read or write request as it came off the wire. Options are raw name/value pairs in the
/// order the client sent them; [`crate::options::RequestedOptions`] interprets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a str,
    pub mode: Mode,
    pub options: Vec<(&'a str, &'a str)>,
}

/// One decoded TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: Cow<'a, str>,
    },
    Oack {
        options: Vec<(&'a str, &'a str)>,
    },
}

impl Packet<'_> {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Rrq(_) => "RRQ",
            Packet::Wrq(_) => "WRQ",
            Packet::Data { .. } => "DATA",
            Packet::Ack { .. } => "ACK",
            Packet::Error { .. } => "ERROR",
            Packet::Oack { .. } => "OACK",
        }
    }
}

/// Why a datagram is not a TFTP packet. The display text is sent back to the peer in an
/// ERROR 4, so it says what was wrong in the peer's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("packet of {0} bytes is too short to be TFTP")]
    TooShort(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("the {0} field is not terminated by a NUL byte")]
    MissingNul(&'static str),
    #[error("the {0} field is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("the file name is empty")]
    EmptyFilename,
    #[error("unknown transfer mode {0:?} (expected octet or netascii)")]
    UnknownMode(String),
}

/// Decodes one datagram. Never panics, whatever the bytes.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if datagram.len() < 2 {
        return Err(DecodeError::TooShort(datagram.len()));
    }
    let opcode = u16::from_be_bytes([datagram[0], datagram[1]]);
    let body = &datagram[2..];
    match opcode {
        OP_RRQ => decode_request(body).map(Packet::Rrq),
        OP_WRQ => decode_request(body).map(Packet::Wrq),
        OP_DATA => {
            let (block, data) = split_block(datagram)?;
            Ok(Packet::Data { block, data })
        }
        OP_ACK => {
            let (block, rest) = split_block(datagram)?;
            // Some embedded clients pad ACKs; the extra bytes carry nothing, so accept them.
            let _ = rest;
            Ok(Packet::Ack { block })
        }
        OP_ERROR => {
            let (code, rest) = split_block(datagram)?;
            // A missing NUL is tolerated here: an ERROR ends the transfer whatever its text, and
            // refusing it would keep a transfer alive that the peer has abandoned.
            let text = match rest.iter().position(|&b| b == 0) {
                Some(end) => &rest[..end],
                None => rest,
            };
            Ok(Packet::Error {
                code: ErrorCode::from_u16(code),
                message: String::from_utf8_lossy(text),
            })
        }
        OP_OACK => {
            let mut fields = Fields::new(body);
            let options = decode_options(&mut fields)?;
            Ok(Packet::Oack { options })
        }
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn split_block(datagram: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    if datagram.len() < 4 {
        return Err(DecodeError::TooShort(datagram.len()));
    }
    Ok((
        u16::from_be_bytes([datagram[2], datagram[3]]),
        &datagram[4..],
    ))
}

/// Iterates over NUL-terminated fields; a final field without its NUL is an error, never read.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Fields { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next(&mut self, name: &'static str) -> Result<&'a str, DecodeError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::MissingNul(name))?;
        let field =
            std::str::from_utf8(&self.rest[..end]).map_err(|_| DecodeError::NotUtf8(name))?;
        self.rest = &self.rest[end + 1..];
        Ok(field)
    }
}

fn decode_request(body: &[u8]) -> Result<Request<'_>, DecodeError> {
    let mut fields = Fields::new(body);
    let filename = fields.next("file name")?;
    if filename.is_empty() {
        return Err(DecodeError::EmptyFilename);
    }
    let mode_text = fields.next("mode")?;
    let mode = Mode::parse(mode_text).ok_or_else(|| DecodeError::UnknownMode(mode_text.into()))?;
    let options = decode_options(&mut fields)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn decode_options<'a>(fields: &mut Fields<'a>) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
    let mut options = Vec::new();
    while !fields.is_empty() {
        // Some PXE ROMs pad requests with NUL bytes; an empty option name is padding.
        if fields.rest.iter().all(|&b| b == 0) {
            break;
        }
        let name = fields.next("option name")?;
        if name.is_empty() {
            continue;
        }
        let value = fields.next("option value")?;
        options.push((name, value));
    }
    Ok(options)
}

fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn push_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

/// Appends an RRQ or WRQ (client side; used by tests and tools).
pub fn encode_request(out: &mut Vec<u8>, write: bool, request: &Request<'_>) {
    push_u16(out, if write { OP_WRQ } else { OP_RRQ });
    push_str(out, request.filename);
    push_str(out, request.mode.as_str());
    for (name, value) in &request.options {
        push_str(out, name);
        push_str(out, value);
    }
}

/// Appends the 4-byte DATA header; the caller appends the block's bytes.
pub fn encode_data_header(out: &mut Vec<u8>, block: u16) {
    push_u16(out, OP_DATA);
    push_u16(out, block);
}

/// The four header bytes of DATA `block`, for writing over a reused buffer.
pub fn data_header(block: u16) -> [u8; 4] {
    let [op_hi, op_lo] = OP_DATA.to_be_bytes();
    let [hi, lo] = block.to_be_bytes();
    [op_hi, op_lo, hi, lo]
}

pub fn encode_ack(out: &mut Vec<u8>, block: u16) {
    push_u16(out, OP_ACK);
    push_u16(out, block);
}

/// Appends an ERROR. The message is cut to [`MAX_ERROR_MESSAGE`] bytes on a character boundary
/// and NUL bytes in it are replaced, so the packet is always well formed.
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    push_u16(out, OP_ERROR);
    push_u16(out, code.as_u16());
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.extend(
        message[..end]
            .bytes()
            .map(|b| if b == 0 { b'?' } else { b }),
    );
    out.push(0);
}

pub fn encode_oack<'a>(out: &mut Vec<u8>, options: impl IntoIterator<Item = (&'a str, String)>) {
    push_u16(out, OP_OACK);
    for (name, value) in options {
        push_str(out, name);
        push_str(out, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rrq(filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0, 1];
        push_str(&mut out, filename);
        push_str(&mut out, mode);
        for (n, v) in options {
            push_str(&mut out, n);
            push_str(&mut out, v);
        }
        out
    }

    #[test]
    fn decodes_an_ipxe_style_rrq() {
        let bytes = rrq(
            "undionly.kpxe",
            "octet",
            &[("blksize", "1432"), ("tsize", "0")],
        );
        let Packet::Rrq(request) = decode(&bytes).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(request.filename, "undionly.kpxe");
        assert_eq!(request.mode, Mode::Octet);
        assert_eq!(request.options, vec![("blksize", "1432"), ("tsize", "0")]);
    }

    #[test]
    fn mode_is_case_insensitive() {
        let bytes = rrq("a", "NetASCII", &[]);
        assert!(matches!(
            decode(&bytes),
            Ok(Packet::Rrq(Request {
                mode: Mode::Netascii,
                ..
            }))
        ));
    }

    #[test]
    fn request_without_final_nul_is_refused() {
        let mut bytes = rrq("a", "octet", &[("blksize", "1432")]);
        bytes.pop();
        assert_eq!(decode(&bytes), Err(DecodeError::MissingNul("option value")));
        let bytes = b"\x00\x01file\x00oct".to_vec();
        assert_eq!(decode(&bytes), Err(DecodeError::MissingNul("mode")));
        let bytes = b"\x00\x01file".to_vec();
        assert_eq!(decode(&bytes), Err(DecodeError::MissingNul("file name")));
    }

    #[test]
    fn nul_padding_after_a_request_is_ignored() {
        let mut bytes = rrq("a", "octet", &[("tsize", "0")]);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let Packet::Rrq(request) = decode(&bytes).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(request.options, vec![("tsize", "0")]);
    }

    #[test]
    fn unknown_mode_and_empty_name_are_refused() {
        assert!(matches!(
            decode(&rrq("a", "binary", &[])),
            Err(DecodeError::UnknownMode(_))
        ));
        assert_eq!(
            decode(&rrq("", "octet", &[])),
            Err(DecodeError::EmptyFilename)
        );
    }

    #[test]
    fn short_and_unknown_packets_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::TooShort(0)));
        assert_eq!(decode(&[0]), Err(DecodeError::TooShort(1)));
        assert_eq!(decode(&[0, 4, 0]), Err(DecodeError::TooShort(3)));
        assert_eq!(decode(&[0, 5, 0]), Err(DecodeError::TooShort(3)));
        assert_eq!(decode(&[0, 9, 0, 0]), Err(DecodeError::UnknownOpcode(9)));
    }

    #[test]
    fn error_without_nul_is_read_safely() {
        let packet = decode(b"\x00\x05\x00\x08User aborted").unwrap();
        assert_eq!(
            packet,
            Packet::Error {
                code: ErrorCode::OptionNegotiation,
                message: Cow::Borrowed("User aborted")
            }
        );
    }

    #[test]
    fn error_message_is_bounded_and_nul_free() {
        let mut out = Vec::new();
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        encode_error(&mut out, ErrorCode::FileNotFound, &long);
        assert!(out.len() <= 4 + MAX_ERROR_MESSAGE + 1);
        let Packet::Error { message, .. } = decode(&out).unwrap() else {
            panic!()
        };
        assert!(long.starts_with(message.as_ref()));
        out.clear();
        encode_error(&mut out, ErrorCode::NotDefined, "a\0b");
        assert_eq!(&out[4..], b"a?b\0");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn request_round_trips(
            filename in "[a-zA-Z0-9/._-]{1,40}",
            netascii in any::<bool>(),
            options in proptest::collection::vec(("[a-z]{1,10}", "[0-9]{1,6}"), 0..5),
        ) {
            let options: Vec<(&str, &str)> =
                options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let request = Request {
                filename: &filename,
                mode: if netascii { Mode::Netascii } else { Mode::Octet },
                options,
            };
            let mut out = Vec::new();
            encode_request(&mut out, true, &request);
            prop_assert_eq!(decode(&out), Ok(Packet::Wrq(request)));
        }

        #[test]
        fn data_ack_error_round_trip(block in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut out = Vec::new();
            encode_data_header(&mut out, block);
            out.extend_from_slice(&data);
            prop_assert_eq!(decode(&out), Ok(Packet::Data { block, data: &data }));
            out.clear();
            encode_ack(&mut out, block);
            prop_assert_eq!(decode(&out), Ok(Packet::Ack { block }));
            out.clear();
            encode_error(&mut out, ErrorCode::from_u16(block), "msg");
            let is_error = matches!(decode(&out), Ok(Packet::Error { code, .. }) if code.as_u16() == block);
            prop_assert!(is_error);
        }
    }
}
