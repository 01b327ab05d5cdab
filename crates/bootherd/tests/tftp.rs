//! `bootherd tftp` against real clients (curl, tftp-hpa, atftp, busybox) and against a raw
//! client for the refusals and protocol corners real clients cannot produce.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootherd_testkit::netns::{self, Netns};
use bootherd_testkit::{
    Daemon, RawClient, free_udp_port, free_udp_port_block, pattern, require_program,
    run_with_timeout,
};
use bootherd_tftp::Mode;
use bootherd_tftp::packet::Packet;

const BIN: &str = env!("CARGO_BIN_EXE_bootherd");
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Sizes at the edges of block arithmetic, plus one that needs block 65536 (sent as 0) at the
/// default 512-byte block size.
const ROLLOVER_SIZE: usize = 65536 * 512 + 1;
const SIZES: &[usize] = &[0, 511, 512, 513, 1 << 20];

struct Server {
    process: Daemon,
    addr: SocketAddr,
    root: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().unwrap();
        for &size in SIZES {
            fs::write(root.path().join(format!("f{size}")), pattern(size)).unwrap();
        }
        Self::start_in(root, extra)
    }

    /// A server with the edge-size files and one past the block-number rollover; returns it
    /// with the names of all of them.
    fn with_every_edge_size() -> (Server, Vec<String>) {
        let server = Server::start(&[]);
        fs::write(server.root.join("rollover"), pattern(ROLLOVER_SIZE)).unwrap();
        let names = SIZES
            .iter()
            .map(|s| format!("f{s}"))
            .chain(["rollover".into()])
            .collect();
        (server, names)
    }

    fn start_in(root: tempfile::TempDir, extra: &[&str]) -> Server {
        let logs = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let listen = addr.to_string();
        let mut args = vec![
            "tftp",
            "--root",
            root.path().to_str().unwrap(),
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let process = Daemon::spawn(
            Path::new(BIN),
            &args,
            &logs.path().join("bootherd.log"),
            None,
        );
        process.wait_for_log(&["TFTP server listening"], Duration::from_secs(10));
        Server {
            process,
            addr,
            root: root.path().to_path_buf(),
            _dirs: vec![root, logs],
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn size(&self, file: &str) -> u64 {
        fs::metadata(self.root.join(file))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    fn url(&self, file: &str) -> String {
        format!("tftp://{}/{file}", self.addr)
    }
}

fn check_download(
    server: &Server,
    name: &str,
    out: &Path,
    output: std::process::Output,
    client: &str,
) {
    assert!(
        output.status.success(),
        "{client} failed to fetch {name}: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.process.log()
    );
    let expected = fs::read(server.root.join(name)).unwrap();
    let got = fs::read(out).unwrap();
    assert_eq!(
        got.len(),
        expected.len(),
        "{client}: {name} has the wrong length"
    );
    assert!(got == expected, "{client}: {name} bytes differ");
}

#[test]
fn curl_fetches_every_edge_size_with_and_without_blksize() {
    require_program("curl", "curl");
    let (server, names) = Server::with_every_edge_size();
    let out_dir = tempfile::tempdir().unwrap();
    for name in &names {
        for blksize in [None, Some("1468"), Some("8192")] {
            let out = out_dir.path().join(name);
            let mut cmd = Command::new("curl");
            cmd.args(["--silent", "--show-error", "--output"]).arg(&out);
            // curl rejects the "tsize 0" that RFC 2349 (and tftp-hpa, dnsmasq) answer for an
            // empty file; without options it reads the empty DATA 1.
            if server.size(name) == 0 {
                cmd.arg("--tftp-no-options");
            } else if let Some(b) = blksize {
                cmd.args(["--tftp-blksize", b]);
            }
            cmd.arg(server.url(name));
            let output = run_with_timeout(&mut cmd, CLIENT_TIMEOUT);
            check_download(
                &server,
                name,
                &out,
                output,
                &format!("curl blksize {blksize:?}"),
            );
        }
    }
}

#[test]
fn tftp_hpa_fetches_in_octet_and_netascii() {
    require_program("tftp", "tftp-hpa");
    let (server, names) = Server::with_every_edge_size();
    let out_dir = tempfile::tempdir().unwrap();
    for name in &names {
        let out = out_dir.path().join(name);
        let output = run_with_timeout(
            Command::new("tftp")
                .args([
                    "-m",
                    "binary",
                    "127.0.0.1",
                    &server.port(),
                    "-c",
                    "get",
                    name,
                ])
                .arg(&out),
            CLIENT_TIMEOUT,
        );
        check_download(&server, name, &out, output, "tftp-hpa");
    }
    // netascii: the client turns CR LF back into LF, so the file must come back unchanged,
    // including lines whose CR LF straddles a 512-byte block boundary.
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!("line {i} {}\n", "x".repeat(i % 37)));
    }
    fs::write(server.root.join("menu.cfg"), &text).unwrap();
    let out = out_dir.path().join("menu.cfg");
    let output = run_with_timeout(
        Command::new("tftp")
            .args([
                "-m",
                "ascii",
                "127.0.0.1",
                &server.port(),
                "-c",
                "get",
                "menu.cfg",
            ])
            .arg(&out),
        CLIENT_TIMEOUT,
    );
    check_download(&server, "menu.cfg", &out, output, "tftp-hpa netascii");
}

#[test]
fn atftp_fetches_with_blksize_tsize_and_windowsize() {
    require_program("atftp", "atftp");
    let (server, names) = Server::with_every_edge_size();
    let out_dir = tempfile::tempdir().unwrap();
    for name in &names {
        for options in [
            &[][..],
            &["blksize 1428", "tsize 0"][..],
            &["blksize 1468", "tsize 0", "windowsize 8"][..],
        ] {
            let out = out_dir.path().join(name);
            let mut cmd = Command::new("atftp");
            for option in options {
                cmd.args(["--option", option]);
            }
            cmd.args(["-g", "-r", name, "-l"])
                .arg(&out)
                .args(["127.0.0.1", &server.port()]);
            let output = run_with_timeout(&mut cmd, CLIENT_TIMEOUT);
            check_download(&server, name, &out, output, &format!("atftp {options:?}"));
        }
    }
    let log = server.process.log();
    assert!(
        log.contains("windowsize=8"),
        "windowsize was not negotiated:\n{log}"
    );
}

#[test]
fn busybox_fetches_with_and_without_blksize() {
    require_program("busybox", "busybox-static");
    let (server, names) = Server::with_every_edge_size();
    let out_dir = tempfile::tempdir().unwrap();
    for name in names {
        for blksize in [None, Some("1024")] {
            let out = out_dir.path().join(&name);
            let mut cmd = Command::new("busybox");
            cmd.arg("tftp");
            if let Some(b) = blksize {
                cmd.args(["-b", b]);
            }
            cmd.args(["-g", "-r", &name, "-l"])
                .arg(&out)
                .args(["127.0.0.1", &server.port()]);
            let output = run_with_timeout(&mut cmd, CLIENT_TIMEOUT);
            check_download(
                &server,
                &name,
                &out,
                output,
                &format!("busybox blksize {blksize:?}"),
            );
        }
    }
}

#[test]
fn windows_paths_map_into_the_root_and_escapes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("boot/x64")).unwrap();
    fs::write(root.path().join("boot/x64/wdsnbp.com"), b"nbp").unwrap();
    fs::write(outside.path().join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("escape")).unwrap();
    let server = Server::start_in(root, &[]);

    for name in [
        "\\boot\\x64\\wdsnbp.com",
        "/boot/x64/wdsnbp.com",
        "boot//x64/wdsnbp.com",
    ] {
        let client = RawClient::new(server.addr);
        client.request(false, name, Mode::Octet, &[]);
        let (data, _) = client.read_to_end(client.expect_recv());
        assert_eq!(data, b"nbp", "{name}");
    }
    for (name, code, needle) in [
        ("../etc/passwd", 2, "'..'"),
        ("boot/../../etc/passwd", 2, "'..'"),
        ("escape", 2, "outside"),
        ("missing.efi", 1, "'missing.efi'"),
        ("boot", 2, "not a regular file"),
    ] {
        let client = RawClient::new(server.addr);
        client.request(false, name, Mode::Octet, &[]);
        let reply = client.expect_recv();
        let (got_code, message) = reply
            .error()
            .unwrap_or_else(|| panic!("{name}: expected an ERROR"));
        assert_eq!(got_code, code, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
    }
    // A NUL inside the name cannot be expressed in a request; the byte after it is parsed as
    // the mode and refused.
    let client = RawClient::new(server.addr);
    client.send_raw(server.addr, b"\x00\x01a\x00b\x00octet\x00");
    let (code, message) = client.expect_recv().error().expect("an ERROR");
    assert_eq!(code, 4, "{message}");
}

#[test]
fn refusals_malformed_requests_mail_mode_and_disabled_uploads() {
    let server = Server::start(&[]);
    let client = RawClient::new(server.addr);
    for (bytes, needle) in [
        (&b"\x00\x01file\x00octet"[..], "NUL"),
        (&b"\x00\x01file\x00binary\x00"[..], "mode"),
        (&b"\x00\x09xx"[..], "opcode"),
        (&b"\x00"[..], "too short"),
    ] {
        client.send_raw(server.addr, bytes);
        let (code, message) = client.expect_recv().error().expect("an ERROR");
        assert_eq!(code, 4);
        assert!(message.contains(needle), "{message}");
    }
    client.request(false, "f0", Mode::Mail, &[]);
    let (code, message) = client.expect_recv().error().unwrap();
    assert_eq!((code, message.contains("mail")), (4, true), "{message}");
    client.request(true, "upload.bin", Mode::Octet, &[]);
    let (code, message) = client.expect_recv().error().unwrap();
    assert_eq!(code, 2, "a read-only server answers access violation");
    assert!(
        message.contains("'upload.bin'") && message.contains("disabled"),
        "{message}"
    );
    // curl's upload sees the refusal too.
    let src = server.root.join("f512");
    let output = run_with_timeout(
        Command::new("curl")
            .args(["--silent", "-T"])
            .arg(&src)
            .arg(server.url("new.bin")),
        CLIENT_TIMEOUT,
    );
    assert!(!output.status.success());
    assert!(!server.root.join("new.bin").exists());
    // The server is still serving.
    client.request(false, "f513", Mode::Octet, &[]);
    let (data, _) = client.read_to_end(client.expect_recv());
    assert_eq!(data.len(), 513);
    let log = server.process.log();
    assert!(log.contains("TFTP request refused"), "{log}");
}

#[test]
fn unknown_tid_gets_error_5_and_the_transfer_continues() {
    let server = Server::start(&["--tftp-threads", "3"]);
    let client = RawClient::new(server.addr);
    client.request(false, "f1048576", Mode::Octet, &[]);
    let first = client.expect_recv();
    let tid = first.from;
    assert_ne!(
        tid, server.addr,
        "reply came from the listening port in ephemeral mode"
    );
    assert!(matches!(first.packet(), Packet::Data { block: 1, .. }));
    let stranger = RawClient::new(server.addr);
    stranger.ack(tid, 1);
    let (code, _) = stranger
        .expect_recv()
        .error()
        .expect("ERROR 5 for the stranger");
    assert_eq!(code, 5);
    let (data, _) = client.read_to_end(first);
    assert_eq!(data, pattern(1 << 20));
}

#[test]
fn repeated_request_is_answered_by_the_same_transfer() {
    let server = Server::start(&["--tftp-threads", "3"]);
    let client = RawClient::new(server.addr);
    let options = [("tsize", "0"), ("blksize", "1468")];
    client.request(false, "f1048576", Mode::Octet, &options);
    let first = client.expect_recv();
    client.request(false, "f1048576", Mode::Octet, &options);
    let second = client.expect_recv();
    assert_eq!(first, second, "the repeated RRQ got a different reply");
    let (data, _) = client.read_to_end(second);
    assert_eq!(data.len(), 1 << 20);
    client.expect_silence(Duration::from_millis(300));
    let log = server.process.wait_for_log(
        &["TFTP transfer finished", "f1048576"],
        Duration::from_secs(5),
    );
    assert!(log.contains("completed"), "{log}");
    assert_eq!(
        server
            .process
            .log()
            .matches("TFTP transfer finished")
            .count(),
        1,
        "a second transfer was started"
    );
}

#[test]
fn uefi_size_probe_gets_an_exact_oack_and_is_logged_quietly() {
    let server = Server::start(&[]);
    let client = RawClient::new(server.addr);
    client.request(
        false,
        "f513",
        Mode::Octet,
        &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")],
    );
    let reply = client.expect_recv();
    let Packet::Oack { options } = reply.packet() else {
        panic!("expected OACK, got {:?}", reply.packet())
    };
    assert_eq!(
        options,
        [("blksize", "1468"), ("tsize", "513"), ("windowsize", "4")]
    );
    let mut abort = Vec::new();
    bootherd_tftp::packet::encode_error(
        &mut abort,
        bootherd_tftp::ErrorCode::OptionNegotiation,
        "User aborted the transfer",
    );
    client.send_raw(reply.from, &abort);
    let line = server.process.wait_for_log(
        &["TFTP transfer finished", "size probe"],
        Duration::from_secs(5),
    );
    assert!(line.contains("INFO"), "probe logged as a failure: {line}");
    client.expect_silence(Duration::from_millis(300));
}

#[test]
fn single_port_mode_sends_everything_from_the_listening_port() {
    require_program("curl", "curl");
    // Three engine threads: the listening thread hands every client packet to the thread
    // running its transfer.
    let server = Server::start(&["--single-port", "--tftp-threads", "3"]);
    let client = RawClient::new(server.addr);
    client.request(false, "f1048576", Mode::Octet, &[("blksize", "1468")]);
    let first = client.expect_recv();
    assert_eq!(first.from, server.addr);
    let (data, tid) = client.read_to_end(first);
    assert_eq!(tid, server.addr);
    assert_eq!(data, pattern(1 << 20));
    // Anyone can forge an ACK for the well-known port, so the window is capped at 16 KiB:
    // a forged RRQ and ACK 0 buy at most that (11 blocks of 1468), not 64 blocks.
    let windowed = RawClient::new(server.addr);
    windowed.request(
        false,
        "f1048576",
        Mode::Octet,
        &[("blksize", "1468"), ("windowsize", "64")],
    );
    let oack = windowed.expect_recv();
    let text = String::from_utf8_lossy(&oack.bytes).to_string();
    assert!(text.contains("windowsize\u{0}11\u{0}"), "{text:?}");
    windowed.send_raw(server.addr, &[0, 5, 0, 0, b'n', b'o', 0]);
    // A stranger's ACK on the shared port is an unknown TID.
    let stranger = RawClient::new(server.addr);
    stranger.ack(server.addr, 3);
    assert_eq!(stranger.expect_recv().error().map(|e| e.0), Some(5));
    // Four concurrent real clients, demultiplexed by their ports.
    let out_dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for i in 0..4 {
        let out = out_dir.path().join(format!("out{i}"));
        let child = Command::new("curl")
            .args(["--silent", "--tftp-blksize", "1024", "--output"])
            .arg(&out)
            .arg(server.url("f1048576"))
            .spawn()
            .unwrap();
        children.push((child, out));
    }
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(fs::read(out).unwrap(), pattern(1 << 20));
    }
}

#[test]
fn port_range_is_respected_and_exhaustion_is_reported() {
    let lo = free_udp_port_block(2);
    // Pick a range of two ports; occupy one so only one is free.
    let range = format!("{lo}:{}", lo + 1);
    let occupy = std::net::UdpSocket::bind(("127.0.0.1", lo + 1)).ok();
    let server = Server::start(&["--port-range", &range]);
    let client = RawClient::new(server.addr);
    client.request(false, "f1048576", Mode::Octet, &[]);
    let first = client.expect_recv();
    let port = first.from.port();
    assert!(
        port == lo || (occupy.is_none() && port == lo + 1),
        "port {port} outside {range}"
    );
    if occupy.is_some() {
        // The only free port is taken by the running transfer.
        let second = RawClient::new(server.addr);
        second.request(false, "f512", Mode::Octet, &[]);
        let (code, message) = second.expect_recv().error().expect("busy ERROR");
        assert_eq!(code, 0);
        assert!(message.contains("port"), "{message}");
    }
    let (data, _) = client.read_to_end(first);
    assert_eq!(data.len(), 1 << 20);
}

#[test]
fn transfer_limit_refuses_with_server_busy() {
    let server = Server::start(&["--max-transfers", "1"]);
    let first = RawClient::new(server.addr);
    first.request(false, "f1048576", Mode::Octet, &[]);
    let reply = first.expect_recv();
    let second = RawClient::new(server.addr);
    second.request(false, "f512", Mode::Octet, &[]);
    let (code, message) = second.expect_recv().error().expect("busy ERROR");
    assert_eq!(code, 0);
    assert!(message.contains("busy"), "{message}");
    first.read_to_end(reply);
}

/// One host that sends many requests and never ACKs holds at most its share of transfers; the
/// next machine is still served. Before, 1024 such requests locked every client out for ~37 s.
#[test]
fn one_client_cannot_take_every_transfer_slot() {
    let server = Server::start(&["--max-transfers", "64", "--max-transfers-per-client", "8"]);
    let hog_ip = "127.0.0.2:0".parse().unwrap();
    let hogs: Vec<RawClient> = (0..12)
        .map(|_| RawClient::bound(hog_ip, server.addr))
        .collect();
    let mut refused = Vec::new();
    for hog in &hogs {
        hog.request(false, "f1048576", Mode::Octet, &[]);
        let reply = hog.expect_recv();
        if let Some((code, message)) = reply.error() {
            refused.push((code, message));
        }
    }
    assert_eq!(refused.len(), 4, "{refused:?}");
    let (code, message) = &refused[0];
    assert_eq!(*code, 0);
    assert!(
        message.contains("busy")
            && message.contains("127.0.0.2")
            && message.contains("--max-transfers-per-client"),
        "{message}"
    );
    let machine = RawClient::bound("127.0.0.3:0".parse().unwrap(), server.addr);
    machine.request(false, "f512", Mode::Octet, &[]);
    let reply = machine.expect_recv();
    assert!(reply.error().is_none(), "{:?}", reply.error());
    let log = server.process.log();
    assert!(
        log.contains("f1048576")
            && log.contains("127.0.0.2")
            && log.contains("--max-transfers-per-client"),
        "the busy log line names file, client and fix:\n{log}"
    );
}

#[test]
fn uploads_land_atomically_within_limits() {
    require_program("curl", "curl");
    let uploads = tempfile::tempdir().unwrap();
    let dir = uploads.path().to_str().unwrap().to_string();
    let server = Server::start(&["--upload-dir", &dir, "--max-upload-bytes", "1048576"]);
    let src = server.root.join("f1048576");
    let output = run_with_timeout(
        Command::new("curl")
            .args(["--silent", "--show-error", "--tftp-blksize", "1468", "-T"])
            .arg(&src)
            .arg(server.url("up.bin")),
        CLIENT_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        fs::read(uploads.path().join("up.bin")).unwrap(),
        pattern(1 << 20)
    );

    // Exists already: ERROR 6, old content kept.
    let client = RawClient::new(server.addr);
    client.request(true, "up.bin", Mode::Octet, &[]);
    assert_eq!(client.expect_recv().error().map(|e| e.0), Some(6));

    // Too large, announced by tsize: ERROR 3 before any data.
    client.request(true, "big.bin", Mode::Octet, &[("tsize", "2000000")]);
    assert_eq!(client.expect_recv().error().map(|e| e.0), Some(3));

    // Too large, found out while receiving: ERROR 3 and nothing left behind.
    let big = uploads.path().join("../big-src.bin");
    fs::write(&big, pattern((1 << 20) + 1)).unwrap();
    let output = run_with_timeout(
        Command::new("curl")
            .args(["--silent", "-T"])
            .arg(&big)
            .arg(server.url("big.bin")),
        CLIENT_TIMEOUT,
    );
    assert!(!output.status.success());
    // Abandoned half-way: nothing left behind either.
    let client = RawClient::new(server.addr);
    client.request(true, "half.bin", Mode::Octet, &[]);
    let ack0 = client.expect_recv();
    assert!(matches!(ack0.packet(), Packet::Ack { block: 0 }));
    let mut data = vec![0, 3, 0, 1];
    data.extend_from_slice(&[7; 512]);
    client.send_raw(ack0.from, &data);
    client.expect_recv();
    let mut abort = Vec::new();
    bootherd_tftp::packet::encode_error(&mut abort, bootherd_tftp::ErrorCode::NotDefined, "bye");
    client.send_raw(ack0.from, &abort);
    server
        .process
        .wait_for_log(&["half.bin", "aborted by client"], Duration::from_secs(5));
    let names: Vec<String> = fs::read_dir(uploads.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["up.bin"], "partial uploads were left behind");
    let _ = fs::remove_file(big);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let server = Server::start(&["--tftp-threads", "3"]);
    let status = server.process.terminate();
    assert!(status.success(), "exit status {status}");
}

/// Old Cisco access points send their ACKs to the broadcast address. Transfer sockets are bound
/// to the wildcard address, so those ACKs still reach them and the transfer completes, whether
/// the listener is bound to the wildcard or to the server's one address. Also checks that
/// replies come from the address the request went to, and the MTU cap: a client on a
/// 1500-byte link asking for 65464-byte blocks gets 1468.
#[test]
fn acks_sent_to_broadcast_still_complete_the_transfer() {
    if !netns::available() {
        return;
    }
    let server_ns = Netns::create("srv");
    let client_ns = Netns::create("cli");
    netns::link(&server_ns, "10.66.0.1/24", &client_ns, "10.66.0.2/24");
    let root = tempfile::tempdir().unwrap();
    let content = pattern(300_000);
    fs::write(root.path().join("ap.img"), &content).unwrap();
    for listen in ["0.0.0.0:69", "10.66.0.1:69"] {
        let (process, _logs) = tftp_in_namespace(&server_ns, root.path(), listen);
        let (data, blksize, tid) = client_ns.run(fetch_with_broadcast_acks);
        assert_eq!(blksize, 1468, "blksize not capped to the 1500-byte MTU");
        assert!(
            data == content,
            "broadcast-ACK transfer delivered wrong bytes"
        );
        let line = process.wait_for_log(
            &["TFTP transfer finished", "ap.img"],
            Duration::from_secs(10),
        );
        assert!(line.contains("outcome=completed"), "{listen}: {line}");
        assert_ne!(tid.port(), 69);
    }
}

/// The listener on 0.0.0.0, the server with two addresses on one interface: a client that asks
/// the secondary one must hear every packet from it, though routing alone would answer from the
/// primary (EDK2 and iPXE drop such replies). bootherd leaves out the per-datagram source
/// where routing picks the right one anyway, so both cases are checked.
#[test]
fn replies_come_from_the_address_asked_on_a_multi_address_interface() {
    if !netns::available() {
        return;
    }
    let server_ns = Netns::create("srv");
    let client_ns = Netns::create("cli");
    let (server_if, _) = netns::link(&server_ns, "10.67.0.1/24", &client_ns, "10.67.0.2/24");
    server_ns.ip(&["addr", "add", "10.67.0.3/24", "dev", &server_if]);
    let root = tempfile::tempdir().unwrap();
    let content = pattern(100_000);
    fs::write(root.path().join("two.img"), &content).unwrap();
    let (_process, _logs) = tftp_in_namespace(&server_ns, root.path(), "0.0.0.0:69");
    for (round, asked) in ["10.67.0.3", "10.67.0.1", "10.67.0.3"]
        .into_iter()
        .enumerate()
    {
        let server: SocketAddr = format!("{asked}:69").parse().unwrap();
        let (data, tid) = client_ns.run(move || {
            let client = RawClient::bound("10.67.0.2:0".parse().unwrap(), server);
            client.request(false, "two.img", Mode::Octet, &[("blksize", "1024")]);
            let first = client.expect_recv();
            client.read_to_end(first)
        });
        assert_eq!(
            tid.ip().to_string(),
            asked,
            "round {round}: replies from the wrong address"
        );
        assert!(data == content, "round {round}: wrong bytes");
    }
}

/// `bootherd tftp` serving `root` inside `ns`, listening; returns it with its log directory.
fn tftp_in_namespace(ns: &Netns, root: &Path, listen: &str) -> (Daemon, tempfile::TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let process = Daemon::spawn(
        Path::new(BIN),
        &["tftp", "--root", root.to_str().unwrap(), "--listen", listen],
        &logs.path().join("bootherd.log"),
        Some(ns.name()),
    );
    process.wait_for_log(&["TFTP server listening"], Duration::from_secs(10));
    (process, logs)
}

fn fetch_with_broadcast_acks() -> (Vec<u8>, usize, SocketAddr) {
    let server: SocketAddr = "10.66.0.1:69".parse().unwrap();
    let client = RawClient::bound("10.66.0.2:0".parse().unwrap(), server);
    client.socket.set_broadcast(true).unwrap();
    client.request(false, "ap.img", Mode::Octet, &[("blksize", "65464")]);
    let mut blksize = 0;
    let mut data = Vec::new();
    let mut tid = None;
    let mut expected: u16 = 0;
    loop {
        let reply = client.expect_recv();
        let server_tid = *tid.get_or_insert(reply.from);
        assert_eq!(reply.from, server_tid);
        assert_eq!(
            reply.from.ip().to_string(),
            "10.66.0.1",
            "reply not from the address asked"
        );
        // Every ACK goes to the subnet broadcast address at the transfer's port.
        let broadcast: SocketAddr = format!("10.66.0.255:{}", server_tid.port())
            .parse()
            .unwrap();
        match reply.packet() {
            Packet::Oack { options } => {
                blksize = options
                    .iter()
                    .find(|o| o.0 == "blksize")
                    .unwrap()
                    .1
                    .parse::<usize>()
                    .unwrap();
                client.ack(broadcast, 0);
            }
            Packet::Data { block, data: chunk } => {
                if block == expected.wrapping_add(1) {
                    expected = block;
                    data.extend_from_slice(chunk);
                }
                client.ack(broadcast, expected);
                if chunk.len() < blksize && block == expected {
                    return (data, blksize, server_tid);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `bootherd tftp --config` takes the root, the address and the TFTP settings from a file (the
/// drop-in replacement for tftpd-hpa's /etc/default file), and a flag still wins over it.
#[test]
fn tftp_only_configuration_file() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("pxelinux.0"), pattern(40_000)).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let lo = free_udp_port_block(1);
    let config = logs.path().join("tftp-only.yaml");
    fs::write(
        &config,
        format!(
            "root: {}\nlisten: 127.0.0.1:{port}\ntftp:\n  port_range: \"{lo}:{lo}\"\n  max_blksize: 1024\n",
            root.path().display()
        ),
    )
    .unwrap();
    let process = Daemon::spawn(
        Path::new(BIN),
        &[
            "tftp",
            "--config",
            config.to_str().unwrap(),
            "--max-blksize",
            "1432",
        ],
        &logs.path().join("bootherd.log"),
        None,
    );
    process.wait_for_log(&["TFTP server listening"], Duration::from_secs(10));
    let out = logs.path().join("got");
    let output = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--tftp-blksize", "8192", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{port}/pxelinux.0")),
        Duration::from_secs(20),
    );
    assert!(
        output.status.success(),
        "curl: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        process.log()
    );
    assert!(fs::read(&out).unwrap() == pattern(40_000));
    let log = process.log();
    assert!(log.contains(&format!("Range({lo}, {lo})")), "{log}");
    assert!(log.contains(&format!("local_port={lo}")), "{log}");
    // The flag (1432) beat the file (1024).
    assert!(log.contains("blksize=1432"), "{log}");
    // A typo in the file is an error naming the line, and nothing starts.
    fs::write(
        &config,
        "root: /srv\nlisten: 127.0.0.1:1\ntftp:\n  singel_port: true\n",
    )
    .unwrap();
    let output = run_with_timeout(
        Command::new(BIN).args(["tftp", "--config", config.to_str().unwrap()]),
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("line 4"),
        "{stderr}"
    );
}
