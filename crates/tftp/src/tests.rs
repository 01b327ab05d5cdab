//! Transfer tests over a virtual clock and a lossy in-memory link (quinn's `Pair` idea): a
//! simulated client talks to a real `Transfer`, packets are dropped or duplicated by a seeded
//! generator, and time only moves when nothing else can happen.

// A virtual clock needs some instant to start from; nothing here waits on it.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::packet::{self, ErrorCode, Mode, Packet, Request, decode};
use crate::source::{FileContent, FileSource, SourceError, TftpPath, UploadSink, UploadTarget};
use crate::{
    NegotiationLimits, Outcome, TimerConfig, Transfer, TransferConfig, Uploads, accept, netascii,
};

#[derive(Debug)]
struct MemSource(Arc<Vec<u8>>);

/// File contents that claim to come from disk, so transfers read them ahead in chunks (the
/// path a large image takes); counts the reads.
#[derive(Debug)]
struct DiskLike {
    bytes: Vec<u8>,
    reads: std::sync::atomic::AtomicU64,
}

impl DiskLike {
    fn new(bytes: Vec<u8>) -> DiskLike {
        DiskLike {
            bytes,
            reads: Default::default(),
        }
    }
}

impl FileContent for DiskLike {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bytes.as_slice().read_at(offset, buf)
    }
}

impl FileSource for MemSource {
    fn open(&self, path: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
        if path.as_str() == "file" {
            Ok(Arc::new(DiskLike::new(self.0.as_ref().clone())))
        } else {
            Err(SourceError::NotFound {
                path: path.to_string(),
                area: "test root",
            })
        }
    }
}

#[derive(Debug, Default, Clone)]
struct MemUploads {
    committed: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[derive(Debug)]
struct MemSink {
    data: Vec<u8>,
    committed: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl UploadTarget for MemUploads {
    fn create(&self, _: &TftpPath, _: Option<u64>) -> Result<Box<dyn UploadSink>, SourceError> {
        Ok(Box::new(MemSink {
            data: Vec::new(),
            committed: self.committed.clone(),
        }))
    }
}

impl UploadSink for MemSink {
    fn write(&mut self, data: &[u8]) -> Result<(), SourceError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), SourceError> {
        self.committed.lock().unwrap().push(self.data);
        Ok(())
    }
}

/// Deterministic loss and duplication.
#[derive(Debug, Clone)]
struct Link {
    state: u64,
    loss_percent: u64,
    dup_percent: u64,
}

impl Link {
    fn new(seed: u64, loss_percent: u64, dup_percent: u64) -> Link {
        Link {
            state: seed | 1,
            loss_percent,
            dup_percent,
        }
    }

    fn roll(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100
    }

    /// How many copies of a packet arrive: 0, 1 or 2.
    fn copies(&mut self) -> usize {
        if self.roll() < self.loss_percent {
            0
        } else if self.roll() < self.dup_percent {
            2
        } else {
            1
        }
    }
}

/// A client like EDK2's: ACKs every `windowsize` blocks or the last, and on an out-of-order
/// block immediately ACKs the last in-order one. It retransmits its last packet after 1 s of
/// silence.
#[derive(Debug)]
struct ReadClient {
    blksize: usize,
    windowsize: u64,
    netascii: bool,
    expected: u64,
    in_window: u64,
    received: Vec<u8>,
    done: bool,
    last_sent: Vec<u8>,
    last_heard: Instant,
    /// Send every ACK twice (provokes the Sorcerer's Apprentice bug in a broken sender).
    double_acks: bool,
}

impl ReadClient {
    fn on_packet(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        self.last_heard = now;
        match decode(bytes).expect("server sent an undecodable packet") {
            Packet::Oack { options } => {
                for (name, value) in options {
                    match name {
                        "blksize" => self.blksize = value.parse().unwrap(),
                        "windowsize" => self.windowsize = value.parse().unwrap(),
                        _ => {}
                    }
                }
                if self.expected == 1 {
                    self.ack(0, out);
                }
            }
            Packet::Data { block, data } => {
                if self.done {
                    // Final block again: our last ACK was lost.
                    if block == (self.expected - 1) as u16 {
                        self.ack(self.expected - 1, out);
                    }
                    return;
                }
                if block != self.expected as u16 {
                    self.ack(self.expected - 1, out);
                    self.in_window = 0;
                    return;
                }
                assert!(data.len() <= self.blksize, "DATA larger than blksize");
                self.received.extend_from_slice(data);
                self.expected += 1;
                self.in_window += 1;
                if data.len() < self.blksize {
                    self.done = true;
                    self.ack(self.expected - 1, out);
                } else if self.in_window >= self.windowsize {
                    self.in_window = 0;
                    self.ack(self.expected - 1, out);
                }
            }
            Packet::Error { code, message } => panic!("server error {code}: {message}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn ack(&mut self, block: u64, out: &mut Vec<Vec<u8>>) {
        let mut ack = Vec::new();
        packet::encode_ack(&mut ack, block as u16);
        self.last_sent = ack.clone();
        if self.double_acks {
            out.push(ack.clone());
        }
        out.push(ack);
    }
}

fn config(loss_tolerant: bool) -> TransferConfig {
    TransferConfig {
        limits: NegotiationLimits::default(),
        timer: TimerConfig {
            max_retries: if loss_tolerant { 40 } else { 8 },
            no_progress_limit: Duration::from_secs(600),
            ..TimerConfig::default()
        },
    }
}

fn rrq_bytes(mode: Mode, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    packet::encode_request(
        &mut out,
        false,
        &Request {
            filename: "file",
            mode,
            options: options.to_vec(),
        },
    );
    out
}

fn start_read(
    content: &[u8],
    mode: Mode,
    options: &[(&str, &str)],
    cfg: &TransferConfig,
    now: Instant,
) -> Transfer {
    let source = MemSource(Arc::new(content.to_vec()));
    let bytes = rrq_bytes(mode, options);
    let Ok(Packet::Rrq(request)) = decode(&bytes) else {
        panic!("bad RRQ")
    };
    accept(now, &request, false, cfg, &source, Uploads::Disabled).expect("refused")
}

struct RunResult {
    received: Vec<u8>,
    outcome: Outcome,
    server_packets: u64,
    server_retransmits: u64,
}

/// Runs one read transfer to its end over the simulated link.
fn run_read(
    content: &[u8],
    mode: Mode,
    options: &[(&str, &str)],
    link: &mut Link,
    double_acks: bool,
    cfg: &TransferConfig,
) -> RunResult {
    let mut now = Instant::now();
    let latency = Duration::from_millis(5);
    let mut transfer = start_read(content, mode, options, cfg, now);
    let mut client = ReadClient {
        blksize: 512,
        windowsize: 1,
        netascii: mode == Mode::Netascii,
        expected: 1,
        in_window: 0,
        received: Vec::new(),
        done: false,
        last_sent: rrq_bytes(mode, options),
        last_heard: now,
        double_acks,
    };
    // (arrival time, to_server, bytes)
    let mut wire: VecDeque<(Instant, bool, Vec<u8>)> = VecDeque::new();
    let mut buf = Vec::new();
    for _ in 0..5_000_000 {
        while transfer.poll_transmit(now, &mut buf) {
            for _ in 0..link.copies() {
                wire.push_back((now + latency, false, buf.clone()));
            }
        }
        if let Some(outcome) = transfer.outcome() {
            let outcome = outcome.clone();
            let mut received = client.received;
            if client.netascii {
                let mut decoded = Vec::new();
                let mut decoder = netascii::Decoder::default();
                decoder.decode(&received, &mut decoded);
                decoder.finish(&mut decoded);
                received = decoded;
            }
            return RunResult {
                received,
                outcome,
                server_packets: transfer.stats().packets,
                server_retransmits: transfer.stats().retransmits,
            };
        }
        let client_timer = client.last_heard + Duration::from_secs(1);
        let next_wire = wire.front().map(|w| w.0);
        let server_timer = transfer.poll_timeout();
        let next = [
            next_wire,
            server_timer,
            (!client.done).then_some(client_timer),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("nothing left to happen");
        now = now.max(next);
        if next_wire == Some(next) {
            let (_, to_server, bytes) = wire.pop_front().unwrap();
            if to_server {
                transfer.handle_packet(now, &decode(&bytes).unwrap());
            } else {
                let mut replies = Vec::new();
                client.on_packet(now, &bytes, &mut replies);
                for reply in replies {
                    for _ in 0..link.copies() {
                        wire.push_back((now + latency, true, reply.clone()));
                    }
                }
            }
        } else if server_timer == Some(next) {
            transfer.handle_timeout(now);
        } else {
            client.last_heard = now;
            if client.expected == 1 && client.last_sent.starts_with(&[0, 1]) {
                // The RRQ itself was lost: the driver maps a repeat to this call.
                if link.copies() > 0 {
                    transfer.handle_repeated_request();
                }
            } else {
                for _ in 0..link.copies() {
                    wire.push_back((now + latency, true, client.last_sent.clone()));
                }
            }
        }
    }
    panic!("simulation did not converge");
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn edge_sizes_arrive_intact() {
    for size in [0, 1, 511, 512, 513, 1024, 1_048_576] {
        for options in [
            &[][..],
            &[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")][..],
        ] {
            let content = pattern(size);
            let r = run_read(
                &content,
                Mode::Octet,
                options,
                &mut Link::new(1, 0, 0),
                false,
                &config(false),
            );
            assert_eq!(r.outcome, Outcome::Completed, "size {size} {options:?}");
            assert_eq!(r.received, content, "size {size} {options:?}");
            assert_eq!(r.server_retransmits, 0);
        }
    }
}

#[test]
fn block_numbers_roll_over_to_zero() {
    // 65536 + 3 blocks of 8 bytes: block 65536 goes out as 0.
    let content = pattern(8 * 65538 + 5);
    let r = run_read(
        &content,
        Mode::Octet,
        &[("blksize", "8"), ("windowsize", "16")],
        &mut Link::new(7, 0, 0),
        false,
        &config(false),
    );
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.received.len(), content.len());
    assert!(r.received == content);
}

#[test]
fn duplicate_acks_never_cause_retransmission() {
    let content = pattern(100_000);
    let r = run_read(
        &content,
        Mode::Octet,
        &[],
        &mut Link::new(3, 0, 0),
        true,
        &config(false),
    );
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.received, content);
    let blocks = content.len() as u64 / 512 + 1;
    assert_eq!(
        r.server_packets, blocks,
        "a duplicate ACK made the server resend"
    );
    assert_eq!(r.server_retransmits, 0);
}

#[test]
fn netascii_over_a_window_with_loss() {
    let content: Vec<u8> = b"line one\nline two\r\nbare\rcr\n".repeat(300);
    let r = run_read(
        &content,
        Mode::Netascii,
        &[("windowsize", "8"), ("blksize", "100"), ("tsize", "0")],
        &mut Link::new(11, 10, 5),
        false,
        &config(true),
    );
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(r.received, content);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn lossy_links_still_deliver_every_byte(
        size in 0usize..40_000,
        seed in any::<u64>(),
        loss in 0u64..25,
        dup in 0u64..10,
        windowsize in 1u16..12,
        blksize in prop_oneof![Just(8u16), Just(512), Just(1428), Just(4096)],
        netascii in any::<bool>(),
    ) {
        let content = if netascii { b"ab\ncd\r".repeat(size / 6) } else { pattern(size) };
        let (ws, bs) = (windowsize.to_string(), blksize.to_string());
        let mode = if netascii { Mode::Netascii } else { Mode::Octet };
        let r = run_read(&content, mode, &[("windowsize", &ws), ("blksize", &bs)], &mut Link::new(seed, loss, dup), false, &config(true));
        // The final ACK itself may be lost for good; everything before it must have arrived.
        prop_assert!(r.outcome == Outcome::Completed || r.outcome == Outcome::FinalAckMissing, "{:?}", r.outcome);
        prop_assert!(r.received == content);
    }
}

#[test]
fn first_reply_is_one_packet_and_repeated_rrq_resends_it() {
    let now = Instant::now();
    let cfg = config(false);
    let mut t = start_read(
        &pattern(10_000),
        Mode::Octet,
        &[("windowsize", "8")],
        &cfg,
        now,
    );
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf));
    let first = buf.clone();
    assert!(matches!(decode(&first), Ok(Packet::Oack { .. })));
    assert!(
        !t.poll_transmit(now, &mut buf),
        "sent more than one packet before the first ACK"
    );
    let deadline = t.poll_timeout();
    t.handle_repeated_request();
    assert!(t.poll_transmit(now + Duration::from_millis(10), &mut buf));
    assert_eq!(buf, first);
    assert_eq!(
        t.poll_timeout(),
        deadline,
        "a repeated request moved the deadline"
    );
    // Without options the first reply is DATA 1, also alone.
    let mut t = start_read(&pattern(10_000), Mode::Octet, &[], &cfg, now);
    assert!(t.poll_transmit(now, &mut buf));
    assert_eq!(&buf[..4], &[0, 3, 0, 1]);
    assert!(!t.poll_transmit(now, &mut buf));
}

#[test]
fn window_is_sent_after_ack_zero_and_partial_ack_restarts_it() {
    let now = Instant::now();
    let mut t = start_read(
        &pattern(512 * 20),
        Mode::Octet,
        &[("windowsize", "4")],
        &config(false),
        now,
    );
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf));
    t.handle_packet(now, &Packet::Ack { block: 0 });
    let mut blocks = Vec::new();
    while t.poll_transmit(now, &mut buf) {
        blocks.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    assert_eq!(blocks, [1, 2, 3, 4]);
    // The client got 1 and 2 only.
    t.handle_packet(now, &Packet::Ack { block: 2 });
    blocks.clear();
    while t.poll_transmit(now, &mut buf) {
        blocks.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    assert_eq!(blocks, [3, 4, 5, 6]);
    // Out-of-order in the new window: EDK2 ACKs 2 again, several times. One rewind only.
    for _ in 0..3 {
        t.handle_packet(now, &Packet::Ack { block: 2 });
    }
    blocks.clear();
    while t.poll_transmit(now, &mut buf) {
        blocks.push(u16::from_be_bytes([buf[2], buf[3]]));
    }
    assert_eq!(blocks, [3, 4, 5, 6]);
    t.handle_packet(now, &Packet::Ack { block: 2 });
    assert!(
        !t.poll_transmit(now, &mut buf),
        "rewound twice in one window"
    );
    // An ACK for a block never sent is ignored.
    t.handle_packet(now, &Packet::Ack { block: 9 });
    assert!(!t.poll_transmit(now, &mut buf));
}

#[test]
fn stray_packets_do_not_push_the_deadline_and_a_vanished_client_frees_the_transfer() {
    let now = Instant::now();
    let cfg = TransferConfig {
        timer: TimerConfig {
            max_retries: 3,
            ..TimerConfig::default()
        },
        ..TransferConfig::default()
    };
    let mut t = start_read(&pattern(5000), Mode::Octet, &[], &cfg, now);
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf));
    let deadline = t.poll_timeout().unwrap();
    for i in 0..50 {
        t.handle_packet(
            now + Duration::from_millis(i * 10),
            &Packet::Ack { block: 0 },
        );
        t.handle_packet(
            now + Duration::from_millis(i * 10),
            &Packet::Ack { block: 40 },
        );
    }
    assert_eq!(t.poll_timeout(), Some(deadline));
    let mut clock = deadline;
    let mut resent = 0;
    while t.outcome().is_none() {
        t.handle_timeout(clock);
        while t.poll_transmit(clock, &mut buf) {
            assert_eq!(&buf[..4], &[0, 3, 0, 1]);
            resent += 1;
        }
        match t.poll_timeout() {
            Some(next) => {
                assert!(next > clock);
                clock = next;
            }
            None => break,
        }
    }
    assert_eq!(resent, 3);
    assert_eq!(t.outcome(), Some(&Outcome::TimedOut { retries: 4 }));
    assert_eq!(t.poll_timeout(), None);
    // Backoff: 1 + 2 + 4 + 5 (cap) seconds.
    assert_eq!(clock - now, Duration::from_secs(12));
}

#[test]
fn uefi_size_probe_is_not_a_failure() {
    let now = Instant::now();
    let mut t = start_read(
        &pattern(3000),
        Mode::Octet,
        &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
        &config(false),
        now,
    );
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf));
    let Ok(Packet::Oack { options }) = decode(&buf) else {
        panic!("no OACK")
    };
    assert_eq!(
        options,
        [("blksize", "1468"), ("tsize", "3000"), ("windowsize", "4")]
    );
    t.handle_packet(
        now,
        &Packet::Error {
            code: ErrorCode::OptionNegotiation,
            message: "User aborted the transfer".into(),
        },
    );
    assert_eq!(t.outcome(), Some(&Outcome::SizeProbe));
    assert!(t.outcome().unwrap().is_success());
}

#[test]
fn refusals_name_the_file_and_reason() {
    let now = Instant::now();
    let source = MemSource(Arc::new(vec![]));
    let cfg = config(false);
    let check = |filename: &str, mode: Mode, write: bool, code: ErrorCode, needle: &str| {
        let request = Request {
            filename,
            mode,
            options: vec![],
        };
        let refusal = accept(now, &request, write, &cfg, &source, Uploads::Disabled).unwrap_err();
        assert_eq!(refusal.code, code, "{refusal}");
        assert!(refusal.message.contains(needle), "{refusal}");
    };
    check(
        "missing.efi",
        Mode::Octet,
        false,
        ErrorCode::FileNotFound,
        "'missing.efi'",
    );
    check(
        "../etc/shadow",
        Mode::Octet,
        false,
        ErrorCode::AccessViolation,
        "'..'",
    );
    check(
        "file",
        Mode::Mail,
        false,
        ErrorCode::IllegalOperation,
        "mail",
    );
    // A read-only server answers a WRQ with access violation, as classic servers do.
    check(
        "up.bin",
        Mode::Octet,
        true,
        ErrorCode::AccessViolation,
        "--upload-dir",
    );
}

/// A sender for uploads: lockstep or windowed, retransmitting the window after 1 s.
fn run_write(
    content: &[u8],
    windowsize: u16,
    blksize: u16,
    link: &mut Link,
) -> (Option<Outcome>, Vec<Vec<u8>>) {
    let t0 = Instant::now();
    let mut now = t0;
    let uploads = MemUploads::default();
    let source = MemSource(Arc::new(vec![]));
    let (ws, bs) = (windowsize.to_string(), blksize.to_string());
    let request = Request {
        filename: "up.bin",
        mode: Mode::Octet,
        options: vec![("blksize", &bs), ("windowsize", &ws)],
    };
    let mut t = accept(
        now,
        &request,
        true,
        &config(true),
        &source,
        Uploads::Enabled(&uploads),
    )
    .unwrap();
    let blksize = usize::from(blksize);
    let blocks = content.len() / blksize + 1;
    let block_data = |b: usize| &content[(b - 1) * blksize..(b * blksize).min(content.len())];
    let mut acked = 0usize; // highest block acknowledged; u64 view of 16-bit ACKs
    let mut started = false;
    let mut client_deadline = now;
    let mut wire: VecDeque<(Instant, bool, Vec<u8>)> = VecDeque::new();
    let latency = Duration::from_millis(5);
    let mut buf = Vec::new();
    let send_window = |from: usize, now: Instant, wire: &mut VecDeque<_>, link: &mut Link| {
        for b in from..(from + usize::from(windowsize)).min(blocks + 1) {
            let mut p = Vec::new();
            packet::encode_data_header(&mut p, b as u16);
            p.extend_from_slice(block_data(b));
            for _ in 0..link.copies() {
                wire.push_back((now + latency, true, p.clone()));
            }
        }
    };
    for _ in 0..2_000_000 {
        while t.poll_transmit(now, &mut buf) {
            for _ in 0..link.copies() {
                wire.push_back((now + latency, false, buf.clone()));
            }
        }
        if t.outcome().is_some() {
            break;
        }
        let next_wire = wire.front().map(|w| w.0);
        let next = [
            next_wire,
            t.poll_timeout(),
            (acked < blocks).then_some(client_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        now = now.max(next);
        if next_wire == Some(next) {
            let (_, to_server, bytes) = wire.pop_front().unwrap();
            if to_server {
                t.handle_packet(now, &decode(&bytes).unwrap());
                continue;
            }
            let ack = match decode(&bytes).unwrap() {
                Packet::Oack { .. } => 0,
                Packet::Ack { block } => block,
                other => panic!("unexpected {other:?}"),
            };
            let ack = acked + usize::from(ack.wrapping_sub(acked as u16));
            if ack > blocks || (started && ack < acked) {
                continue;
            }
            if !started || ack > acked || (ack == acked && ack < blocks) {
                started = true;
                acked = ack;
                if acked < blocks {
                    send_window(acked + 1, now, &mut wire, link);
                }
                client_deadline = now + Duration::from_secs(1);
            }
        } else if t.poll_timeout() == Some(next) {
            t.handle_timeout(now);
        } else {
            client_deadline = now + Duration::from_secs(1);
            if started {
                send_window(acked + 1, now, &mut wire, link);
            } else if link.copies() > 0 {
                t.handle_repeated_request();
            }
        }
    }
    let committed = uploads.committed.lock().unwrap().clone();
    (t.outcome().cloned(), committed)
}

#[test]
fn uploads_complete_and_commit_once() {
    for (size, ws, bs) in [
        (0, 1, 512),
        (512, 1, 512),
        (10_000, 4, 1000),
        (100_000, 8, 1468),
    ] {
        let content = pattern(size);
        let (outcome, committed) = run_write(&content, ws, bs, &mut Link::new(5, 0, 0));
        assert_eq!(outcome, Some(Outcome::Completed));
        assert_eq!(committed, vec![content]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn lossy_uploads_land_whole(size in 0usize..20_000, seed in any::<u64>(), loss in 0u64..20, ws in 1u16..6) {
        let content = pattern(size);
        let (outcome, committed) = run_write(&content, ws, 512, &mut Link::new(seed, loss, 3));
        match outcome {
            Some(Outcome::Completed) => prop_assert_eq!(committed, vec![content]),
            // A sender that stops getting ACKs may be given up on; then nothing is stored.
            Some(Outcome::TimedOut { .. }) => prop_assert!(committed.is_empty() || committed == vec![content]),
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }
}

#[test]
fn oversized_data_and_aborted_uploads_store_nothing() {
    let now = Instant::now();
    let uploads = MemUploads::default();
    let source = MemSource(Arc::new(vec![]));
    let request = Request {
        filename: "up.bin",
        mode: Mode::Octet,
        options: vec![],
    };
    let mut t = accept(
        now,
        &request,
        true,
        &config(false),
        &source,
        Uploads::Enabled(&uploads),
    )
    .unwrap();
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf));
    assert_eq!(buf, [0, 4, 0, 0]);
    t.handle_packet(
        now,
        &Packet::Data {
            block: 1,
            data: &[0; 513],
        },
    );
    assert!(t.poll_transmit(now, &mut buf));
    let Ok(Packet::Error { code, message }) = decode(&buf) else {
        panic!("no ERROR")
    };
    assert_eq!(code, ErrorCode::IllegalOperation);
    assert!(message.contains("up.bin"), "{message}");
    assert!(uploads.committed.lock().unwrap().is_empty());

    let mut t = accept(
        now,
        &request,
        true,
        &config(false),
        &source,
        Uploads::Enabled(&uploads),
    )
    .unwrap();
    t.handle_packet(
        now,
        &Packet::Data {
            block: 1,
            data: &[1; 512],
        },
    );
    t.handle_packet(
        now,
        &Packet::Error {
            code: ErrorCode::NotDefined,
            message: "bye".into(),
        },
    );
    assert!(matches!(t.outcome(), Some(Outcome::ClientAborted { .. })));
    assert!(uploads.committed.lock().unwrap().is_empty());
}

/// RFC 2349: the size is acknowledged for every file, the empty one included (UEFI's size
/// probe of an empty file would otherwise get DATA instead of the OACK it waits for).
#[test]
fn empty_file_gets_tsize_0_in_the_oack() {
    let now = Instant::now();
    for options in [
        &[("tsize", "0"), ("blksize", "1468")][..],
        &[("tsize", "0")],
    ] {
        let mut t = start_read(&[], Mode::Octet, options, &config(false), now);
        let mut buf = Vec::new();
        assert!(t.poll_transmit(now, &mut buf));
        let Ok(Packet::Oack { options: acked }) = decode(&buf) else {
            panic!("{options:?}: {buf:?} is not an OACK");
        };
        assert!(acked.contains(&("tsize", "0")), "{options:?}: {acked:?}");
    }
}

/// A file read from disk is read 16 KiB at a time, not a block at a time, also when blocks are
/// resent out of order; an in-memory file is copied block by block without reading ahead.
#[test]
fn disk_files_are_read_ahead_and_resends_reread_what_they_need() {
    let content = pattern(100 * 512 + 17);
    for in_memory in [false, true] {
        let disk = Arc::new(DiskLike::new(content.clone()));
        let file: Arc<dyn FileContent> = if in_memory {
            Arc::new(content.clone())
        } else {
            disk.clone()
        };
        let source = SharedFile(file.clone());
        let bytes = rrq_bytes(Mode::Octet, &[]);
        let Ok(Packet::Rrq(request)) = decode(&bytes) else {
            panic!("bad RRQ")
        };
        let now = Instant::now();
        let cfg = config(false);
        let mut t = accept(now, &request, false, &cfg, &source, Uploads::Disabled).unwrap();
        let mut received = Vec::new();
        let mut out = Vec::new();
        let mut block: u16 = 0;
        let mut resent_once = false;
        while t.outcome().is_none() {
            if !t.poll_transmit(now, &mut out) {
                break;
            }
            let Ok(Packet::Data { block: b, data }) = decode(&out) else {
                panic!("expected DATA, got {:?}", decode(&out));
            };
            if b == block.wrapping_add(1) {
                received.extend_from_slice(data);
                block = b;
            } else {
                assert_eq!(b, block, "only the block just sent is resent");
            }
            // Once, far into the file, pretend the ACK was lost: the resend must come from
            // the read-ahead window or a fresh read, with the same bytes.
            if block == 70 && !resent_once {
                resent_once = true;
                t.handle_timeout(now + Duration::from_secs(10));
                continue;
            }
            let mut ack = Vec::new();
            crate::packet::encode_ack(&mut ack, block);
            t.handle_packet(now, &decode(&ack).unwrap());
        }
        assert_eq!(t.outcome(), Some(&Outcome::Completed));
        assert!(received == content, "in_memory={in_memory}: wrong bytes");
        if !in_memory {
            let reads = disk.reads.load(std::sync::atomic::Ordering::Relaxed);
            // 101 blocks, 32 per read, and one more for the resend of block 70 at most.
            assert!((4..=5).contains(&reads), "{reads} reads for 101 blocks");
        }
    }
}

#[derive(Debug)]
struct SharedFile(Arc<dyn FileContent>);

impl FileSource for SharedFile {
    fn open(&self, _path: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
        Ok(self.0.clone())
    }
}

/// A file read from disk has its next block read while the client is busy with the previous
/// one, so the DATA that answers an ACK needs no read; a resend in between still sends the
/// resent block's own bytes, and nothing is read past the end.
#[test]
fn the_next_block_is_read_before_the_ack_that_asks_for_it() {
    let blksize = 16384; // too large to read ahead in chunks: one read per block
    let content = pattern(5 * blksize + 100);
    let disk = Arc::new(DiskLike::new(content.clone()));
    let source = SharedFile(disk.clone());
    let bytes = rrq_bytes(Mode::Octet, &[("blksize", "16384")]);
    let Ok(Packet::Rrq(request)) = decode(&bytes) else {
        panic!("bad RRQ")
    };
    let reads = || disk.reads.load(std::sync::atomic::Ordering::Relaxed);
    let now = Instant::now();
    let mut t = accept(
        now,
        &request,
        false,
        &config(false),
        &source,
        Uploads::Disabled,
    )
    .unwrap();
    let mut out = Vec::new();
    assert!(t.poll_transmit(now, &mut out));
    assert!(matches!(decode(&out), Ok(Packet::Oack { .. })));
    t.prepare_next();
    assert_eq!(reads(), 1, "block 1 is read while the OACK is answered");
    let mut received = Vec::new();
    let mut acked: u16 = 0;
    let mut resent = false;
    loop {
        let mut ack = Vec::new();
        crate::packet::encode_ack(&mut ack, acked);
        let reads_before = reads();
        t.handle_packet(now, &decode(&ack).unwrap());
        if t.outcome().is_some() {
            break;
        }
        assert!(t.poll_transmit(now, &mut out));
        assert_eq!(
            reads(),
            reads_before,
            "DATA after an ACK comes without a read"
        );
        let Ok(Packet::Data { block, data }) = decode(&out) else {
            panic!("expected DATA, got {:?}", decode(&out));
        };
        assert_eq!(block, acked + 1);
        received.extend_from_slice(data);
        assert!(!t.poll_transmit(now, &mut out));
        t.prepare_next();
        if block == 2 && !resent {
            // The ACK for block 2 is lost: block 2 is resent, read again, and block 3,
            // already prepared, stays prepared.
            resent = true;
            t.handle_timeout(now + Duration::from_secs(10));
            let reads_before = reads();
            assert!(t.poll_transmit(now, &mut out));
            let Ok(Packet::Data { block: 2, data }) = decode(&out) else {
                panic!("expected DATA 2 again, got {:?}", decode(&out));
            };
            assert_eq!(data, &content[blksize..2 * blksize]);
            assert_eq!(reads(), reads_before + 1);
            t.prepare_next();
            assert_eq!(reads(), reads_before + 1);
        }
        acked = block;
    }
    assert_eq!(t.outcome(), Some(&Outcome::Completed));
    assert!(received == content, "wrong bytes");
    // Six blocks (the last one short) and the resend: nothing past the end.
    assert_eq!(reads(), 7);
}

/// What a blind spoofer gets for two datagrams (an RRQ with a large window, then a guessed
/// ACK 0 on single-port mode's well-known port): the first window, then only one block per
/// retransmission until a DATA block is acknowledged. Before, the whole window was resent on
/// every timeout: 64 × 1468 bytes, nine times (0.85 MB for 47 bytes).
#[test]
fn a_client_that_never_acknowledges_data_gets_one_window_and_single_block_retries() {
    let mut now = Instant::now();
    let cfg = config(false);
    let mut t = start_read(
        &pattern(1 << 20),
        Mode::Octet,
        &[("blksize", "1468"), ("windowsize", "64")],
        &cfg,
        now,
    );
    let mut buf = Vec::new();
    assert!(t.poll_transmit(now, &mut buf), "OACK");
    t.handle_packet(now, &Packet::Ack { block: 0 });
    let mut sent = 0usize;
    let mut datagrams = 0usize;
    for _ in 0..1000 {
        while t.poll_transmit(now, &mut buf) {
            sent += buf.len();
            datagrams += 1;
        }
        let Some(deadline) = t.poll_timeout() else {
            break;
        };
        now = deadline;
        t.handle_timeout(now);
    }
    assert!(t.outcome().is_some(), "the transfer gives up");
    let retries = cfg.timer.max_retries as usize;
    let bound = (64 + retries) * (1468 + 4);
    assert!(
        sent <= bound,
        "{sent} bytes in {datagrams} datagrams sent to a client that never acknowledged data (bound {bound})"
    );
    // A client that does acknowledge data gets its full window again after a loss.
    let mut t = start_read(
        &pattern(1 << 20),
        Mode::Octet,
        &[("blksize", "1468"), ("windowsize", "8")],
        &cfg,
        now,
    );
    assert!(t.poll_transmit(now, &mut buf));
    t.handle_packet(now, &Packet::Ack { block: 0 });
    while t.poll_transmit(now, &mut buf) {}
    t.handle_packet(now, &Packet::Ack { block: 8 });
    let mut window = 0;
    while t.poll_transmit(now, &mut buf) {
        window += 1;
    }
    assert_eq!(window, 8);
    now = t.poll_timeout().unwrap();
    t.handle_timeout(now);
    let mut resent = 0;
    while t.poll_transmit(now, &mut buf) {
        resent += 1;
    }
    assert_eq!(
        resent, 8,
        "after data was acknowledged, a timeout resends the window"
    );
}
