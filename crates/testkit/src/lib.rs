//! Test helpers shared by bootherd's integration tests: a scriptable raw TFTP client, launchers
//! for the bootherd binary and for real peers, and network-namespace fixtures.
//!
//! Everything here talks only to loopback or to namespaces the test created itself.

use std::fs;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bootherd_tftp::packet::{self, Mode, Packet, Request, decode};

pub mod capture;
pub mod netns;
pub mod pxe_client;

/// Panics with an install hint when a peer program is missing, so a failing run says what to do.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: the README's test command installs it (apt-get install {package})"
    );
}

/// Picks a currently free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a probe socket");
    socket.local_addr().expect("local address").port()
}

/// The first of `count` consecutive UDP ports on 127.0.0.1 that are free and below the kernel's
/// ephemeral range, for a server's transfer port range. A port from [`free_udp_port`] is an
/// ephemeral one: once the probe closes, the kernel may give it to any socket another test
/// binds to port 0, and a one-port range then has no free port. Ports below the range are only
/// ever taken by explicit binds; each call in a process, and each process, starts elsewhere.
pub fn free_udp_port_block(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let region_start = ephemeral_low.saturating_sub(12_000).max(1024);
    let region_len = ephemeral_low.saturating_sub(region_start);
    let count = u32::from(count.max(1));
    assert!(
        region_len > count * 2,
        "no room below the ephemeral ports ({ephemeral_low}) for {count} test ports"
    );
    let process_offset = std::process::id().wrapping_mul(7919);
    for _ in 0..1000 {
        let offset = process_offset.wrapping_add(HANDED_OUT.fetch_add(count, Ordering::Relaxed));
        let first = region_start + offset % (region_len - count);
        let held: Vec<UdpSocket> = (first..first + count)
            .filter_map(|port| u16::try_from(port).ok())
            .filter_map(|port| UdpSocket::bind(("127.0.0.1", port)).ok())
            .collect();
        if held.len() == count as usize {
            return u16::try_from(first).expect("ports fit in u16");
        }
    }
    panic!("no {count} consecutive free UDP ports below {ephemeral_low}")
}

/// A daemon we started (bootherd, dnsmasq); killed by PID when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts `bootherd` with `args`, logging at debug level to `log_path`, optionally inside a
    /// network namespace.
    pub fn spawn(binary: &Path, args: &[&str], log_path: &Path, netns: Option<&str>) -> Daemon {
        let log = fs::File::create(log_path).expect("creating the log file");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("starting the daemon");
        Daemon {
            child,
            log_path: log_path.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until a line of the log contains every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?} within {timeout:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit after SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command with a time limit; the child is killed if it overruns. Output is drained
/// while it runs, so a child that prints more than a pipe holds cannot stall.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    use std::io::Read;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{command:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out[..out.len().min(2000)]),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {command:?}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A hand-driven TFTP client for the cases real clients cannot produce: malformed packets,
/// strangers, repeated requests, a UEFI-style size probe.
#[derive(Debug)]
pub struct RawClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
}

/// A packet as received, kept as bytes so it can outlive the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
}

impl Received {
    pub fn packet(&self) -> Packet<'_> {
        decode(&self.bytes)
            .unwrap_or_else(|e| panic!("server sent an undecodable packet ({e}): {:?}", self.bytes))
    }

    /// (code, message) if this is an ERROR.
    pub fn error(&self) -> Option<(u16, String)> {
        match self.packet() {
            Packet::Error { code, message } => Some((code.as_u16(), message.into_owned())),
            _ => None,
        }
    }
}

impl RawClient {
    pub fn new(server: SocketAddr) -> RawClient {
        Self::bound("127.0.0.1:0".parse().expect("address"), server)
    }

    pub fn bound(local: SocketAddr, server: SocketAddr) -> RawClient {
        let socket = UdpSocket::bind(local).expect("binding the test client");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        RawClient { socket, server }
    }

    pub fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).expect("sending");
    }

    pub fn request(
        &self,
        write: bool,
        filename: &str,
        mode: Mode,
        options: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        packet::encode_request(
            &mut bytes,
            write,
            &Request {
                filename,
                mode,
                options: options.to_vec(),
            },
        );
        self.send_raw(self.server, &bytes);
        bytes
    }

    pub fn ack(&self, to: SocketAddr, block: u16) {
        let mut bytes = Vec::new();
        packet::encode_ack(&mut bytes, block);
        self.send_raw(to, &bytes);
    }

    pub fn recv(&self) -> io::Result<Received> {
        let mut buf = vec![0u8; 65536];
        let (n, from) = self.socket.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(Received { bytes: buf, from })
    }

    pub fn expect_recv(&self) -> Received {
        self.recv().expect("no reply from the server within 3 s")
    }

    /// Nothing arrives within `wait`.
    pub fn expect_silence(&self, wait: Duration) {
        self.socket
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        let result = self.recv();
        self.socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        if let Ok(received) = result {
            panic!(
                "expected silence, got {:?} from {}",
                received.packet(),
                received.from
            );
        }
    }

    /// Reads a whole file in lockstep after the first reply (OACK or DATA 1); returns the bytes
    /// and the server's transfer address.
    pub fn read_to_end(&self, first: Received) -> (Vec<u8>, SocketAddr) {
        let tid = first.from;
        let mut blksize = 512usize;
        let mut data = Vec::new();
        let mut current = first;
        let mut expected: u16 = 1;
        loop {
            match current.packet() {
                Packet::Oack { options } => {
                    for (name, value) in options {
                        if name.eq_ignore_ascii_case("blksize") {
                            blksize = value.parse().expect("blksize value");
                        }
                    }
                    self.ack(tid, 0);
                }
                Packet::Data { block, data: chunk } if block == expected => {
                    data.extend_from_slice(chunk);
                    self.ack(tid, block);
                    expected = expected.wrapping_add(1);
                    if chunk.len() < blksize {
                        return (data, tid);
                    }
                }
                Packet::Data { .. } => {}
                other => panic!("unexpected packet during transfer: {other:?}"),
            }
            current = self.expect_recv();
            assert_eq!(
                current.from, tid,
                "packet from a different server port mid-transfer"
            );
        }
    }
}

/// Deterministic test content: not all zeros, not periodic at block sizes.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678 ^ len as u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// dnsmasq as a LAN's ordinary DHCP server: addresses from 10.77.0.100-150, no boot options at
/// all, DNS off, logging every DHCP exchange to `logs/dnsmasq.log`.
pub fn lan_dhcp_server(netns: &netns::Netns, interface: &str, logs: &Path) -> Daemon {
    require_program("dnsmasq", "dnsmasq-base");
    Daemon::spawn(
        Path::new("dnsmasq"),
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            &format!("--interface={interface}"),
            "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h",
            &format!("--dhcp-leasefile={}", logs.join("dnsmasq.leases").display()),
            "--pid-file=",
            "--log-dhcp",
            "--log-facility=-",
        ],
        &logs.join("dnsmasq.log"),
        Some(netns.name()),
    )
}
