//! netascii (RFC 1350 §5, after the Telnet NVT of RFC 764): LF travels as CR LF and a bare CR
//! as CR NUL.
//!
//! Both directions carry state across block boundaries: an encoded pair may be split between
//! two blocks, and a received CR may be the last byte of one block with its LF or NUL first in
//! the next. dnsmasq 2.6x truncated files by getting exactly this wrong.

use std::io;

use crate::source::FileContent;

/// Where the encoder stands in the source file. Small and `Copy`, so a sender can keep one per
/// block of its window and restart from any of them after a loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeCursor {
    offset: u64,
    /// Second byte of a CR LF or CR NUL pair whose CR ended the previous block.
    pending: Option<u8>,
}

impl EncodeCursor {
    pub fn is_at_end(&self, len: u64) -> bool {
        self.offset >= len && self.pending.is_none()
    }

    /// Appends up to `limit` encoded bytes to `out` and advances. Returns how many bytes were
    /// appended; fewer than `limit` means the file is exhausted.
    pub fn fill<F: FileContent + ?Sized>(
        &mut self,
        file: &F,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> io::Result<usize> {
        let start = out.len();
        if let Some(byte) = self.pending.take() {
            out.push(byte);
        }
        // Each source byte expands to at most two, so reading limit bytes always suffices.
        let mut chunk = vec![0u8; limit.min(16 * 1024)];
        while out.len() - start < limit {
            let n = file.read_at(self.offset, &mut chunk)?;
            if n == 0 {
                break;
            }
            let mut used = 0;
            for &byte in &chunk[..n] {
                if out.len() - start >= limit {
                    break;
                }
                used += 1;
                let second = match byte {
                    b'\n' => Some(b'\n'),
                    b'\r' => Some(0),
                    _ => None,
                };
                match second {
                    Some(second) => {
                        out.push(b'\r');
                        if out.len() - start < limit {
                            out.push(second);
                        } else {
                            self.pending = Some(second);
                        }
                    }
                    None => out.push(byte),
                }
            }
            self.offset += used as u64;
        }
        Ok(out.len() - start)
    }
}

/// Decodes received netascii back to local text: CR LF -> LF, CR NUL -> CR.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    carry_cr: bool,
}

impl Decoder {
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            if std::mem::take(&mut self.carry_cr) {
                match byte {
                    b'\n' => {
                        out.push(b'\n');
                        continue;
                    }
                    0 => {
                        out.push(b'\r');
                        continue;
                    }
                    // A CR followed by anything else is not valid netascii; keep the CR rather
                    // than lose data.
                    _ => out.push(b'\r'),
                }
            }
            if byte == b'\r' {
                self.carry_cr = true;
            } else {
                out.push(byte);
            }
        }
    }

    /// Flushes a CR left at the very end of the upload.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.carry_cr) {
            out.push(b'\r');
        }
    }
}

/// Encodes a whole buffer (client side and tests).
pub fn encode_all(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut cursor = EncodeCursor::default();
    while !cursor.is_at_end(input.len() as u64) {
        // Infallible: reading from a slice cannot fail.
        let _ = cursor.fill(input, &mut out, 4096);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_line_ends_and_bare_cr() {
        assert_eq!(encode_all(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
    }

    #[test]
    fn pair_split_across_blocks() {
        let text: &[u8] = b"abc\n";
        let mut cursor = EncodeCursor::default();
        let mut block = Vec::new();
        assert_eq!(cursor.fill(text, &mut block, 4).unwrap(), 4);
        assert_eq!(block, b"abc\r");
        block.clear();
        assert_eq!(cursor.fill(text, &mut block, 4).unwrap(), 1);
        assert_eq!(block, b"\n");
        assert!(cursor.is_at_end(4));
    }

    proptest! {
        #[test]
        fn round_trip_at_any_block_size(
            text in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), Just(b'x')], 0..300),
            blksize in 1usize..20,
        ) {
            let mut cursor = EncodeCursor::default();
            let mut decoder = Decoder::default();
            let mut decoded = Vec::new();
            let mut wire = Vec::new();
            loop {
                let mut block = Vec::new();
                let n = cursor.fill(text.as_slice(), &mut block, blksize).unwrap();
                wire.extend_from_slice(&block);
                decoder.decode(&block, &mut decoded);
                if n < blksize { break; }
            }
            decoder.finish(&mut decoded);
            prop_assert_eq!(&decoded, &text);
            prop_assert_eq!(wire, encode_all(&text));
        }
    }
}
