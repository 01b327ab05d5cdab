//! A read and a write transfer fed arbitrary packets and clock jumps: the state machines must
//! never panic, never send more than a window before the first ACK, and always end once time
//! runs far enough.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bootherd_tftp::packet::{self, Mode, Request};
use bootherd_tftp::{
    FileContent, FileSource, SourceError, TftpPath, TransferConfig, UploadSink, UploadTarget,
    Uploads, accept,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Files;

impl FileSource for Files {
    fn open(&self, _: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
        Ok(Arc::new(vec![b'\n'; 70_000]))
    }
}

#[derive(Debug)]
struct Sink;

impl UploadSink for Sink {
    fn write(&mut self, _: &[u8]) -> Result<(), SourceError> {
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<(), SourceError> {
        Ok(())
    }
}

#[derive(Debug)]
struct Uploader;

impl UploadTarget for Uploader {
    fn create(&self, _: &TftpPath, _: Option<u64>) -> Result<Box<dyn UploadSink>, SourceError> {
        Ok(Box::new(Sink))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let write = selector & 1 == 1;
    let mode = if selector & 2 == 2 {
        Mode::Netascii
    } else {
        Mode::Octet
    };
    let request = Request {
        filename: "f",
        mode,
        options: vec![("blksize", "8"), ("windowsize", "4"), ("tsize", "0")],
    };
    let start = Instant::now();
    let mut now = start;
    let Ok(mut transfer) = accept(
        now,
        &request,
        write,
        &TransferConfig::default(),
        &Files,
        Uploads::Enabled(&Uploader),
    ) else {
        return;
    };
    let mut out = Vec::new();
    // Chunks: first byte is a clock step in 10 ms units, then a length byte, then the packet.
    let mut input = rest;
    while let [step, len, tail @ ..] = input {
        let len = usize::from(*len).min(tail.len());
        let (datagram, remaining) = tail.split_at(len);
        input = remaining;
        now += Duration::from_millis(u64::from(*step) * 10);
        if let Ok(packet) = packet::decode(datagram) {
            transfer.handle_packet(now, &packet);
        }
        transfer.handle_timeout(now);
        let mut sent = 0;
        while transfer.poll_transmit(now, &mut out) {
            sent += 1;
            assert!(sent <= 65535, "unbounded transmit loop");
        }
    }
    // Whatever happened, the transfer ends once the client has been silent long enough.
    for _ in 0..1000 {
        if transfer.outcome().is_some() {
            return;
        }
        match transfer.poll_timeout() {
            Some(deadline) => now = now.max(deadline),
            None => break,
        }
        transfer.handle_timeout(now);
        while transfer.poll_transmit(now, &mut out) {}
    }
    assert!(transfer.outcome().is_some(), "transfer never ended");
});
