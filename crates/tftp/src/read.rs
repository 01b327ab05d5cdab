//! The sending side of a read request (RRQ): OACK, then DATA in windows (RFC 7440).
//!
//! Block numbers are counted in 64 bits internally and only folded to 16 bits on the wire, so
//! files past 65535 blocks roll over to 0 (the de-facto default of tftp-hpa, iPXE and dnsmasq)
//! without a special case anywhere else.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::netascii::EncodeCursor;
use crate::packet::{self, ErrorCode, Mode, Packet};
use crate::source::FileContent;
use crate::timer::{Expiry, Retransmit};
use crate::transfer::{Outcome, Params, Stats};

#[derive(Debug)]
enum Phase {
    /// OACK sent; waiting for ACK 0.
    Negotiating,
    Sending,
    Done(Outcome),
}

/// Where block data comes from. Octet blocks are addressed directly; netascii blocks depend on
/// everything before them, so the encoder's position at the start of every block still in the
/// window is kept (at most `windowsize` small cursors) to resend from any of them.
#[derive(Debug)]
enum Blocks {
    Octet,
    Netascii {
        /// Cursor at the start of block `first + i`.
        starts: VecDeque<EncodeCursor>,
        first: u64,
    },
}

/// One read transfer. Feed it packets and timeouts, collect datagrams from [`poll_transmit`].
///
/// [`poll_transmit`]: ReadTransfer::poll_transmit
#[derive(Debug)]
pub struct ReadTransfer {
    file: Arc<dyn FileContent>,
    /// File contents read ahead of the blocks being sent (files read from disk only).
    read_ahead: ReadAhead,
    /// The next DATA datagram, read while the client was busy with the previous one (see
    /// [`prepare_next`](ReadTransfer::prepare_next)); its buffer is also the spare that the
    /// datagram it replaces goes back into.
    prepared: Vec<u8>,
    prepared_block: Option<u64>,
    params: Params,
    blocks: Blocks,
    phase: Phase,
    /// OACK waiting to be (re)sent.
    oack_due: bool,
    /// First block not yet acknowledged.
    window_start: u64,
    /// Next block to put on the wire.
    next_send: u64,
    /// Highest block ever sent, to tell retransmissions from first sends.
    highest_sent: u64,
    /// The final block, once known (immediately in octet mode), and its length once sent.
    last_block: Option<u64>,
    last_len: u16,
    /// Whether any ACK came back: until then the client's address is unproven.
    peer_acked: bool,
    /// Whether an ACK of a DATA block came back. Until then a timeout resends one block, not
    /// the window: ACK 0 is easily guessed, so a spoofer must not get a window per timeout.
    data_acked: bool,
    /// A timeout came before any DATA was acknowledged: this one block (the last one sent) is
    /// resent instead of the window. A client that has everything re-ACKs the final block; one
    /// that misses some ACKs the gap at once (EDK2, iPXE), so either way it answers.
    probe: Option<u64>,
    /// Send time of the most recent packet, for RTT samples.
    last_send_at: Option<Instant>,
    /// Window start at which a duplicate ACK already caused a rewind; see `handle_ack`.
    rewound_at: Option<u64>,
    timer: Retransmit,
    error_due: Option<(ErrorCode, String)>,
    stats: Stats,
}

impl ReadTransfer {
    pub(crate) fn new(file: Arc<dyn FileContent>, params: Params, now: Instant) -> ReadTransfer {
        let blksize = u64::from(params.blksize);
        let (blocks, last_block) = match params.mode {
            Mode::Netascii => (
                Blocks::Netascii {
                    starts: VecDeque::from([EncodeCursor::default()]),
                    first: 1,
                },
                None,
            ),
            _ => (Blocks::Octet, Some(file.len() / blksize + 1)),
        };
        let negotiating = !params.oack.is_empty();
        ReadTransfer {
            timer: Retransmit::new(params.timer, params.timeout, now),
            file,
            read_ahead: ReadAhead::default(),
            prepared: Vec::new(),
            prepared_block: None,
            blocks,
            phase: if negotiating {
                Phase::Negotiating
            } else {
                Phase::Sending
            },
            oack_due: negotiating,
            window_start: 1,
            next_send: 1,
            highest_sent: 0,
            last_block,
            last_len: 0,
            peer_acked: false,
            data_acked: false,
            probe: None,
            last_send_at: None,
            rewound_at: None,
            error_due: None,
            stats: Stats::default(),
            params,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the client has acknowledged anything, i.e. received our first reply.
    pub fn client_confirmed(&self) -> bool {
        self.peer_acked
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done(outcome) if self.error_due.is_none() => Some(outcome),
            _ => None,
        }
    }

    /// Earliest time at which [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done(_) => None,
            _ => self.timer.deadline(),
        }
    }

    /// The client repeated its request from the same address and port: our first reply was
    /// lost. Resend it instead of starting a second transfer. The retransmission deadline is
    /// left alone, so a client hammering RRQs cannot postpone our own timer either.
    pub fn handle_repeated_request(&mut self) {
        match self.phase {
            Phase::Negotiating => self.oack_due = true,
            Phase::Sending if self.window_start == 1 && self.highest_sent <= 1 => {
                self.next_send = 1;
            }
            _ => {}
        }
    }

    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        match (&self.phase, packet) {
            (Phase::Done(_), _) => {}
            (Phase::Negotiating, Packet::Ack { block: 0 }) => {
                self.phase = Phase::Sending;
                self.peer_acked = true;
                self.oack_due = false;
                self.timer.on_progress(now, self.last_send_at);
            }
            (Phase::Negotiating, Packet::Error { code, message }) => {
                // EDK2's "GetInfo" asks for tsize, reads the OACK and aborts: that is how UEFI
                // learns a file's size before fetching it, not a failure.
                let outcome = if self.params.requested.tsize.is_some() {
                    Outcome::SizeProbe
                } else {
                    Outcome::ClientAborted {
                        code: *code,
                        message: message.to_string(),
                    }
                };
                self.phase = Phase::Done(outcome);
            }
            (Phase::Sending, Packet::Ack { block }) => self.handle_ack(now, *block),
            (Phase::Sending, Packet::Error { code, message }) => {
                self.phase = Phase::Done(Outcome::ClientAborted {
                    code: *code,
                    message: message.to_string(),
                });
            }
            // Anything else from the client (DATA, stray ACK numbers during negotiation) means
            // nothing to a sender; RFC 1350 lets us ignore it.
            _ => {}
        }
    }

    fn handle_ack(&mut self, now: Instant, wire: u16) {
        // The only blocks an ACK can sensibly name are the one before the window (a duplicate)
        // through the highest one sent. A window never exceeds 65535 blocks, so at most one
        // block in that range has this wire number; anything else is stale or bogus.
        let lowest = self.window_start - 1;
        let acked = lowest + u64::from(wire.wrapping_sub(lowest as u16));
        if acked == lowest {
            if self.probe.take().is_some() {
                // The client is there and still lacks the window (EDK2 re-sends its last ACK
                // when its own timer fires): a datagram from it buys one whole window.
                self.rewind_to(self.window_start);
                return;
            }
            // Duplicate ACK. With lockstep this must be ignored: retransmitting on it is the
            // Sorcerer's Apprentice bug (RFC 1123 4.2.3.1); the timer alone retransmits. Inside
            // a window it says the first block of the window was lost (EDK2 ACKs expected-1 on
            // every out-of-order block), so rewind, but once per window: copies of the same
            // ACK must not each restart the window.
            if self.params.windowsize > 1
                && self.next_send > self.window_start
                && self.rewound_at != Some(self.window_start)
            {
                self.rewound_at = Some(self.window_start);
                self.rewind_to(self.window_start);
            }
            return;
        }
        if acked > self.highest_sent {
            // ACK of a block never sent: ignore (dnsmasq, tftpd32 do the same).
            return;
        }
        self.peer_acked = true;
        self.data_acked = true;
        self.probe = None;
        let sample = (acked + 1 == self.next_send)
            .then_some(self.last_send_at)
            .flatten();
        self.stats.bytes = self.bytes_through(acked);
        self.window_start = acked + 1;
        self.timer.on_progress(now, sample);
        if let Blocks::Netascii { starts, first } = &mut self.blocks {
            while *first < self.window_start && starts.len() > 1 {
                starts.pop_front();
                *first += 1;
            }
        }
        if self.last_block == Some(acked) {
            self.phase = Phase::Done(Outcome::Completed);
            return;
        }
        if self.next_send < self.window_start {
            self.next_send = self.window_start;
        } else if self.next_send > self.window_start {
            // A partial ACK: the client is missing the block after `acked` (RFC 7440 §4).
            self.rewind_to(self.window_start);
        }
    }

    fn rewind_to(&mut self, block: u64) {
        // Netascii starts of later blocks stay: at most a window's worth, dropped as ACKs come.
        self.next_send = block;
    }

    /// Bytes on the wire up to and including `block`.
    fn bytes_through(&self, block: u64) -> u64 {
        let blksize = u64::from(self.params.blksize);
        if self.last_block == Some(block) {
            (block - 1) * blksize + self.last_len as u64
        } else {
            block * blksize
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Done(_)) {
            return;
        }
        match self.timer.on_timeout(now) {
            Expiry::NotYet => {}
            Expiry::Retransmit => match self.phase {
                Phase::Negotiating => self.oack_due = true,
                _ if !self.data_acked && self.peer_acked => {
                    let last = self.highest_sent.max(self.window_start);
                    self.probe = Some(last);
                    self.rewind_to(last);
                }
                _ => self.rewind_to(self.window_start),
            },
            Expiry::GiveUp => {
                // Some clients never ACK the final block (dnsmasq notes this); if only that ACK
                // is missing, the client has everything.
                let outcome = if self.last_block == Some(self.window_start)
                    && self.highest_sent >= self.window_start
                {
                    Outcome::FinalAckMissing
                } else {
                    Outcome::TimedOut {
                        retries: self.timer.retries(),
                    }
                };
                self.phase = Phase::Done(outcome);
            }
        }
    }

    /// Writes the next datagram to send into `out`, replacing what it held. Returns false when
    /// there is nothing to send now. Call until it returns false after every input.
    ///
    /// Octet DATA is written over the previous datagram in place rather than into a cleared
    /// buffer: growing a cleared `Vec` zero-fills it first, a memset of up to 64 KiB per packet.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if let Some((code, message)) = self.error_due.take() {
            out.clear();
            packet::encode_error(out, code, &message);
            return true;
        }
        match self.phase {
            Phase::Done(_) => false,
            Phase::Negotiating => {
                if !std::mem::take(&mut self.oack_due) {
                    return false;
                }
                out.clear();
                packet::encode_oack(out, self.params.oack.iter().map(|(n, v)| (*n, v.clone())));
                self.record_send(now, 0);
                true
            }
            Phase::Sending => {
                // Before the client's first ACK the window is one block: an RRQ with a forged
                // source address must not make us send a window's worth to a victim. After it
                // the first window goes out whole (EDK2 and U-Boot ACK only full windows, so
                // a smaller one would stall them), but until a DATA block is acknowledged a
                // timeout resends a single block: a guessed ACK 0 buys one window, not one
                // per retransmission.
                let end = match self.probe {
                    Some(block) => block + 1,
                    None if self.peer_acked => {
                        self.window_start + u64::from(self.params.windowsize)
                    }
                    None => self.window_start + 1,
                };
                let block = self.next_send;
                if block >= end || self.last_block.is_some_and(|last| block > last) {
                    return false;
                }
                if let Err(e) = self.fill_data(block, out) {
                    self.fail(
                        ErrorCode::NotDefined,
                        format!(
                            "read error on '{}': {e}; check the disk",
                            self.params.filename
                        ),
                        Outcome::ReadError(e.to_string()),
                    );
                    out.clear();
                    if let Some((code, message)) = self.error_due.take() {
                        packet::encode_error(out, code, &message);
                    }
                    return true;
                }
                let len = out.len() - 4;
                if len < usize::from(self.params.blksize) {
                    self.last_block = Some(block);
                    self.last_len = len as u16;
                }
                self.next_send += 1;
                self.record_send(now, block);
                true
            }
        }
    }

    fn record_send(&mut self, now: Instant, block: u64) {
        if block <= self.highest_sent && !(block == 0 && self.stats.packets == 0) {
            self.stats.retransmits += 1;
        }
        self.highest_sent = self.highest_sent.max(block);
        self.stats.packets += 1;
        self.last_send_at = Some(now);
        self.timer.on_send(now);
    }

    /// Reads the block the client will ask for next, while it is still receiving the last
    /// one. Call it when there is nothing to send. In a lock-step transfer the disk read then
    /// no longer sits between the client's ACK and our next DATA, which is the round trip that
    /// bounds the transfer's speed (tftp-hpa reads ahead the same way). Files held in memory
    /// need no read and netascii blocks depend on the previous one, so both are left alone;
    /// each transfer holds at most one prepared datagram.
    pub fn prepare_next(&mut self) {
        let block = self.next_send;
        if !matches!(self.phase, Phase::Negotiating | Phase::Sending)
            || !matches!(self.blocks, Blocks::Octet)
            || self.file.in_memory()
            || self.prepared_block == Some(block)
            || self.last_block.is_none_or(|last| block > last)
        {
            return;
        }
        let mut datagram = std::mem::take(&mut self.prepared);
        self.prepared_block = match self.read_octet(block, &mut datagram) {
            Ok(()) => Some(block),
            // The real send reads again and reports the error then.
            Err(_) => None,
        };
        self.prepared = datagram;
    }

    /// Writes octet DATA `block` (header and contents) into `out`.
    fn read_octet(&mut self, block: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
        let blksize = usize::from(self.params.blksize);
        let offset = (block - 1) * blksize as u64;
        let len = (self.file.len().saturating_sub(offset)).min(blksize as u64) as usize;
        // Zero-fills only past the previous datagram's length, which is usually the same.
        out.resize(4 + len, 0);
        out[..4].copy_from_slice(&packet::data_header(block as u16));
        read_block(
            self.file.as_ref(),
            &mut self.read_ahead,
            blksize,
            offset,
            &mut out[4..],
        )
    }

    /// Writes DATA `block` (header and contents) into `out`.
    fn fill_data(&mut self, block: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
        if self.prepared_block == Some(block) {
            // The datagram `out` held (already sent) becomes the spare buffer.
            std::mem::swap(out, &mut self.prepared);
            self.prepared_block = None;
            return Ok(());
        }
        let blksize = usize::from(self.params.blksize);
        match &mut self.blocks {
            Blocks::Octet => self.read_octet(block, out),
            Blocks::Netascii { starts, first } => {
                out.clear();
                packet::encode_data_header(out, block as u16);
                let index = (block - *first) as usize;
                let mut cursor = starts.get(index).copied().ok_or_else(|| {
                    std::io::Error::other("netascii position of a resent block was not kept")
                })?;
                cursor.fill(self.file.as_ref(), out, blksize)?;
                // A resent block's successor start is known already (the same bytes encode the
                // same way); it is kept, since the client may acknowledge past the resend.
                if starts.len() == index + 1 {
                    starts.push_back(cursor);
                }
                Ok(())
            }
        }
    }

    fn fail(&mut self, code: ErrorCode, message: String, outcome: Outcome) {
        self.error_due = Some((code, message));
        self.phase = Phase::Done(outcome);
    }
}

/// How far ahead a transfer reads a file that is not in memory: 32 blocks of 512 bytes per
/// `pread` instead of one each, and per transfer no more than this (or one block) of memory.
const READ_AHEAD: usize = 16 * 1024;

/// A window of the file, read in one go.
#[derive(Debug, Default)]
struct ReadAhead {
    data: Vec<u8>,
    offset: u64,
}

/// Fills `dst` with the file's bytes at `offset`, through `ahead` unless the file is in memory
/// or blocks are too large for reading ahead to save calls.
fn read_block(
    file: &dyn FileContent,
    ahead: &mut ReadAhead,
    blksize: usize,
    offset: u64,
    dst: &mut [u8],
) -> std::io::Result<()> {
    let len = dst.len();
    let shrunk = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file became shorter while it was being sent",
        )
    };
    let chunk = blksize * (READ_AHEAD / blksize.max(1));
    if len == 0 || file.in_memory() || chunk < 2 * blksize {
        if file.read_at(offset, dst)? < len {
            return Err(shrunk());
        }
        return Ok(());
    }
    let end = offset + len as u64;
    let held = ahead.offset..=ahead.offset + ahead.data.len() as u64;
    if !(held.contains(&offset) && held.contains(&end)) {
        let want = usize::try_from(file.len().saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(chunk)
            .max(len);
        ahead.data.resize(want, 0);
        let got = file.read_at(offset, &mut ahead.data)?;
        ahead.data.truncate(got);
        ahead.offset = offset;
        if got < len {
            return Err(shrunk());
        }
    }
    let start = (offset - ahead.offset) as usize;
    dst.copy_from_slice(&ahead.data[start..start + len]);
    Ok(())
}
