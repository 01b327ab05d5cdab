// A virtual clock needs some instant to start from; nothing here waits on it.
#![allow(clippy::disallowed_methods)]
use super::*;

const RRQ: &[u8] = b"\0\x01pxelinux.0\0octet\0";
const RRQ_BLKSIZE: &[u8] = b"\0\x01pxelinux.0\0octet\0blksize\x001468\0";
const ACK1: &[u8] = b"\0\x04\0\x01";

fn config(single_port: bool) -> EndpointConfig {
    EndpointConfig {
        transfer: TransferConfig::default(),
        max_transfers: 4,
        max_transfers_per_client: 2,
        single_port,
        cap_blksize_to_mtu: true,
    }
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], port))
}

/// Feeds a request and returns the admitted transfer's id.
fn start(endpoint: &mut Endpoint, now: Instant, from: SocketAddr, owner: usize) -> TransferId {
    match endpoint.handle_listener(now, from, RRQ, owner) {
        ListenerEvent::Request(NewRequest {
            admission: Ok(id),
            request,
            write: false,
            ..
        }) => {
            assert_eq!(request.filename, "pxelinux.0");
            id
        }
        other => panic!("not a new transfer: {other:?}"),
    }
}

#[test]
fn a_request_again_is_a_retransmission_until_the_client_answers() {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(config(false));
    let id = start(&mut endpoint, now, client(2000), 1);
    match endpoint.handle_listener(now, client(2000), RRQ, 0) {
        ListenerEvent::Repeated(running) => assert_eq!(running, Running { id, owner: 1 }),
        other => panic!("{other:?}"),
    }
    // Once the client answered (on the transfer's port), the same request starts over.
    endpoint.confirm(id);
    assert!(endpoint.is_confirmed(id));
    match endpoint.handle_listener(now, client(2000), RRQ, 0) {
        ListenerEvent::Request(NewRequest {
            replaces: Some(old),
            admission: Ok(new),
            ..
        }) => {
            assert_eq!(old.id, id);
            assert_ne!(new, id);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_different_request_from_the_same_port_replaces_the_transfer() {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(config(false));
    let id = start(&mut endpoint, now, client(2000), 0);
    match endpoint.handle_listener(now, client(2000), RRQ_BLKSIZE, 0) {
        ListenerEvent::Request(NewRequest {
            replaces: Some(old),
            admission: Ok(_),
            ..
        }) => assert_eq!(old.id, id),
        other => panic!("{other:?}"),
    }
    // A client at its share may still restart: the replaced transfer's share is its own.
    start(&mut endpoint, now, client(2001), 0);
    assert!(matches!(
        endpoint.handle_listener(now, client(2000), RRQ, 0),
        ListenerEvent::Request(NewRequest {
            replaces: Some(_),
            admission: Ok(_),
            ..
        })
    ));
    assert_eq!(endpoint.running(), 2);
    // The replaced transfer ending later leaves the new one's entry alone.
    endpoint.finished(id);
    assert!(matches!(
        endpoint.handle_listener(now, client(2000), RRQ, 0),
        ListenerEvent::Repeated(_)
    ));
}

#[test]
fn admission_holds_the_total_and_the_per_client_limits_until_transfers_finish() {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(config(false));
    let a = start(&mut endpoint, now, client(1), 0);
    start(&mut endpoint, now, client(2), 0);
    let busy = |event: ListenerEvent<'_>| match event {
        ListenerEvent::Request(NewRequest {
            admission: Err(busy),
            ..
        }) => busy,
        other => panic!("admitted: {other:?}"),
    };
    let refused = busy(endpoint.handle_listener(now, client(3), RRQ, 0));
    assert_eq!(refused.limit, 2);
    assert!(refused.message.contains("--max-transfers-per-client"));
    // Other hosts still get in, up to the total.
    let other = |port| SocketAddr::from(([10, 0, 0, 8], port));
    start(&mut endpoint, now, other(1), 0);
    start(&mut endpoint, now, other(2), 0);
    let refused = busy(endpoint.handle_listener(now, SocketAddr::from(([10, 0, 0, 9], 1)), RRQ, 0));
    assert_eq!(refused.limit, 4);
    assert!(refused.message.contains("--max-transfers,"));
    assert_eq!(endpoint.running(), 4);
    endpoint.finished(a);
    endpoint.finished(a);
    assert_eq!(endpoint.running(), 3);
    start(&mut endpoint, now, client(3), 0);
}

#[test]
fn single_port_datagrams_go_to_their_transfer_and_confirm_it() {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(config(true));
    let id = start(&mut endpoint, now, client(2000), 0);
    assert!(matches!(
        endpoint.handle_listener(now, client(2000), ACK1, 0),
        ListenerEvent::Deliver(Running { id: to, .. }) if to == id
    ));
    assert!(endpoint.is_confirmed(id));
    // Undecodable bytes and ERRORs from the client reach the transfer too.
    assert!(matches!(
        endpoint.handle_listener(now, client(2000), b"\0\x09", 0),
        ListenerEvent::Deliver(_)
    ));
    assert!(matches!(
        endpoint.handle_listener(now, client(2000), b"\0\x05\0\0oops\0", 0),
        ListenerEvent::Deliver(_)
    ));
    // An ACK from anyone else is an unknown transfer ID; an ERROR from them gets nothing.
    match endpoint.handle_listener(now, client(2001), ACK1, 0) {
        ListenerEvent::Reply(stray) => assert_eq!(stray.code, ErrorCode::UnknownTransferId),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        endpoint.handle_listener(now, client(2001), b"\0\x05\0\0oops\0", 0),
        ListenerEvent::Ignore
    ));
    endpoint.finished(id);
    assert!(!endpoint.is_confirmed(id));
}

#[test]
fn strangers_are_answered_within_a_rate_limit() {
    let now = Instant::now();
    let mut endpoint = Endpoint::new(config(false));
    let mut replies = 0;
    for _ in 0..100 {
        match endpoint.handle_listener(now, client(9), ACK1, 0) {
            ListenerEvent::Reply(stray) => {
                assert_eq!(stray.code, ErrorCode::IllegalOperation);
                replies += 1;
            }
            ListenerEvent::Suppressed(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(replies, 20, "the burst, then nothing until time passes");
    let later = now + std::time::Duration::from_secs(1);
    assert!(matches!(
        endpoint.handle_listener(later, client(9), b"\0\x01x", 0),
        ListenerEvent::Reply(Stray {
            cause: StrayCause::Malformed(_),
            ..
        })
    ));
    // A transfer's own port answers strangers, never an ERROR with an ERROR.
    let mut guard = PortGuard::default();
    let mut out = Vec::new();
    assert!(!guard.stranger(now, b"\0\x05\0\0x\0", &mut out));
    assert!(guard.stranger(now, ACK1, &mut out));
    assert_eq!(&out[..4], b"\0\x05\0\x05");
}

#[test]
fn open_caps_blksize_to_the_path_mtu_only_when_asked_and_windows_in_single_port_mode() {
    use crate::source::{FileContent, SourceError, TftpPath};
    use std::sync::Arc;
    #[derive(Debug)]
    struct OneFile;
    impl FileSource for OneFile {
        fn open(&self, _: &TftpPath) -> Result<Arc<dyn FileContent>, SourceError> {
            Ok(Arc::new(vec![0u8; 100_000]))
        }
    }
    let now = Instant::now();
    let decode = |bytes: &'static [u8]| match packet::decode(bytes).unwrap() {
        Packet::Rrq(request) => request,
        other => panic!("{other:?}"),
    };
    let multi = config(false);
    let opened = multi
        .open(now, &decode(RRQ_BLKSIZE), false, Some(1400), &OneFile, None)
        .unwrap();
    assert_eq!(opened.params().blksize, 1400 - 28 - 4);
    let opened = multi
        .open(now, &decode(RRQ_BLKSIZE), false, None, &OneFile, None)
        .unwrap();
    assert_eq!(opened.params().blksize, 1468);
    let windowed: &[u8] = b"\0\x01f\0octet\0blksize\x001024\0windowsize\x0064\0";
    let opened = config(true)
        .open(now, &decode(windowed), false, None, &OneFile, None)
        .unwrap();
    let window = u32::from(opened.params().windowsize) * u32::from(opened.params().blksize);
    assert!(window <= SINGLE_PORT_WINDOW_BYTES, "window {window}");
    let refusal = multi
        .open(now, &decode(RRQ), true, None, &OneFile, None)
        .unwrap_err();
    assert_eq!(refusal.code, ErrorCode::AccessViolation);
}
