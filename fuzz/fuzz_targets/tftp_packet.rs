//! Any datagram: decoding must not panic, and whatever decodes must encode back to something
//! that decodes to the same packet (requests, DATA, ACK; ERROR text is sanitised on encode).
#![no_main]

use bootherd_tftp::RequestedOptions;
use bootherd_tftp::packet::{self, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = packet::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    match &decoded {
        Packet::Rrq(request) | Packet::Wrq(request) => {
            let _ = RequestedOptions::parse(&request.options);
            let _ = bootherd_tftp::TftpPath::parse(request.filename);
            packet::encode_request(&mut out, matches!(decoded, Packet::Wrq(_)), request);
            let again = packet::decode(&out).expect("re-encoded request must decode");
            assert_eq!(again, decoded);
        }
        Packet::Data { block, data } => {
            packet::encode_data_header(&mut out, *block);
            out.extend_from_slice(data);
            assert_eq!(packet::decode(&out).expect("DATA"), decoded);
        }
        Packet::Error { code, message } => {
            packet::encode_error(&mut out, *code, message);
            assert!(matches!(packet::decode(&out), Ok(Packet::Error { .. })));
        }
        _ => {}
    }
});
