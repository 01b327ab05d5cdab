//! The receiving side of a write request (WRQ): ACK 0 or OACK, then DATA, acknowledged per
//! window (RFC 7440 §4), then a short linger to re-ACK a final block whose ACK was lost.

use std::time::{Duration, Instant};

use crate::netascii::Decoder;
use crate::packet::{self, ErrorCode, Mode, Packet};
use crate::source::{SourceError, UploadSink};
use crate::timer::{Expiry, Retransmit};
use crate::transfer::{Outcome, Params, Stats};

#[derive(Debug)]
enum Phase {
    Receiving,
    /// The file is stored and its final block acknowledged; until `until` a repeat of that block
    /// is acknowledged again (tftp-hpa's "dally"), since the sender cannot know our ACK arrived.
    Lingering {
        until: Instant,
    },
    Done(Outcome),
}

/// One write transfer. The file is handed to its [`UploadSink`] as it arrives and committed when
/// the final block is in; on any failure the sink is dropped, which discards the partial file.
#[derive(Debug)]
pub struct WriteTransfer {
    params: Params,
    sink: Option<Box<dyn UploadSink>>,
    decoder: Option<Decoder>,
    phase: Phase,
    /// Next block we expect.
    expected: u64,
    /// Blocks accepted since our last ACK.
    unacked: u16,
    /// Reply waiting to be sent: the OACK while negotiating, else an ACK of `expected - 1`.
    reply_due: bool,
    /// Block number for which an out-of-order packet already triggered an ACK.
    gap_acked_for: Option<u64>,
    linger: Duration,
    timer: Retransmit,
    error_due: Option<(ErrorCode, String)>,
    stats: Stats,
    scratch: Vec<u8>,
}

impl WriteTransfer {
    pub(crate) fn new(sink: Box<dyn UploadSink>, params: Params, now: Instant) -> WriteTransfer {
        let linger = params.timer.max_rto;
        WriteTransfer {
            timer: Retransmit::new(params.timer, params.timeout, now),
            decoder: (params.mode == Mode::Netascii).then(Decoder::default),
            sink: Some(sink),
            phase: Phase::Receiving,
            expected: 1,
            unacked: 0,
            reply_due: true,
            gap_acked_for: None,
            linger,
            error_due: None,
            stats: Stats::default(),
            scratch: Vec::new(),
            params,
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the client has sent data, i.e. received our first reply.
    pub fn client_confirmed(&self) -> bool {
        self.expected > 1
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done(outcome) if self.error_due.is_none() => Some(outcome),
            _ => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Receiving => self.timer.deadline(),
            Phase::Lingering { until } => Some(until),
            Phase::Done(_) => None,
        }
    }

    /// Same request again from the same client: our ACK 0 or OACK was lost.
    pub fn handle_repeated_request(&mut self) {
        if matches!(self.phase, Phase::Receiving) && self.expected == 1 {
            self.reply_due = true;
        }
    }

    pub fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        match packet {
            Packet::Data { block, data } => self.handle_data(now, *block, data),
            Packet::Error { code, message } if !matches!(self.phase, Phase::Done(_)) => {
                self.sink = None;
                let outcome = match self.phase {
                    // The file is already stored; an ERROR now changes nothing.
                    Phase::Lingering { .. } => Outcome::Completed,
                    _ => Outcome::ClientAborted {
                        code: *code,
                        message: message.to_string(),
                    },
                };
                self.phase = Phase::Done(outcome);
            }
            _ => {}
        }
    }

    fn handle_data(&mut self, now: Instant, wire: u16, data: &[u8]) {
        let expected_wire = self.expected as u16;
        match self.phase {
            Phase::Done(_) => return,
            Phase::Lingering { .. } => {
                if wire == expected_wire.wrapping_sub(1) {
                    self.reply_due = true;
                }
                return;
            }
            Phase::Receiving => {}
        }
        if wire != expected_wire {
            // A duplicate (our ACK was lost) or a gap in the window: ACK the last block we
            // have in order, which tells the sender where to restart. In lockstep that is plain
            // RFC 1350; inside a window, once per gap, or every copy would trigger an ACK.
            if self.params.windowsize == 1 || self.gap_acked_for != Some(self.expected) {
                self.gap_acked_for = Some(self.expected);
                self.reply_due = true;
            }
            return;
        }
        let blksize = usize::from(self.params.blksize);
        if data.len() > blksize {
            self.fail(
                ErrorCode::IllegalOperation,
                format!(
                    "DATA block {} for '{}' carries {} bytes, more than the agreed block size {blksize}",
                    self.expected,
                    self.params.filename,
                    data.len()
                ),
                Outcome::ProtocolViolation("oversized DATA".into()),
            );
            return;
        }
        let last = data.len() < blksize;
        if let Err(e) = self.store(data, last) {
            let code = e.code();
            let message = e.to_string();
            self.fail(code, message.clone(), Outcome::StoreError(message));
            return;
        }
        self.stats.bytes += data.len() as u64;
        self.expected += 1;
        self.unacked += 1;
        self.timer.on_progress(now, None);
        if last {
            self.phase = Phase::Lingering {
                until: now + self.linger,
            };
            self.reply_due = true;
        } else if self.unacked >= self.params.windowsize {
            self.reply_due = true;
        } else {
            // Mid-window: no ACK yet, but if the rest of the window never comes, the timer
            // re-ACKs what we have.
            self.timer.restart(now);
        }
    }

    fn store(&mut self, data: &[u8], last: bool) -> Result<(), SourceError> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        match &mut self.decoder {
            Some(decoder) => {
                self.scratch.clear();
                decoder.decode(data, &mut self.scratch);
                if last {
                    decoder.finish(&mut self.scratch);
                }
                sink.write(&self.scratch)?;
            }
            None => sink.write(data)?,
        }
        if last {
            if let Some(sink) = self.sink.take() {
                sink.commit()?;
            }
        }
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Done(_) => {}
            Phase::Lingering { until } => {
                if now >= until {
                    self.phase = Phase::Done(Outcome::Completed);
                }
            }
            Phase::Receiving => match self.timer.on_timeout(now) {
                Expiry::NotYet => {}
                Expiry::Retransmit => self.reply_due = true,
                Expiry::GiveUp => {
                    self.sink = None;
                    self.phase = Phase::Done(Outcome::TimedOut {
                        retries: self.timer.retries(),
                    });
                }
            },
        }
    }

    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        out.clear();
        if let Some((code, message)) = self.error_due.take() {
            packet::encode_error(out, code, &message);
            return true;
        }
        if matches!(self.phase, Phase::Done(_)) || !std::mem::take(&mut self.reply_due) {
            return false;
        }
        if self.expected == 1 && !self.params.oack.is_empty() {
            // RFC 2347: for a WRQ the OACK takes the place of ACK 0.
            packet::encode_oack(out, self.params.oack.iter().map(|(n, v)| (*n, v.clone())));
        } else {
            packet::encode_ack(out, (self.expected - 1) as u16);
        }
        if self.stats.packets > 0 && self.unacked == 0 {
            self.stats.retransmits += 1;
        }
        self.unacked = 0;
        self.stats.packets += 1;
        if matches!(self.phase, Phase::Receiving) {
            self.timer.restart(now);
        }
        true
    }

    fn fail(&mut self, code: ErrorCode, message: String, outcome: Outcome) {
        self.sink = None;
        self.error_due = Some((code, message));
        self.phase = Phase::Done(outcome);
    }
}
