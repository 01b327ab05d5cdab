//! Starting each TFTP server the same way: alone, on 127.0.0.1:69, serving the same directory,
//! logging as little as it can, with its concurrency limit raised above the storm size.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bootherd_tftp::packet::{self, Mode, Request};

use crate::procstat::{self, CpuGroup};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Bootherd,
    /// Another bootherd build (`--baseline`), to measure a change against within one run.
    Baseline,
    TftpdHpa,
    Atftpd,
    Dnsmasq,
}

impl Peer {
    pub(crate) const ALL: [Peer; 4] = [Peer::Bootherd, Peer::TftpdHpa, Peer::Atftpd, Peer::Dnsmasq];

    /// A server people run today, as opposed to a bootherd build.
    pub(crate) fn is_other_server(self) -> bool {
        !matches!(self, Peer::Bootherd | Peer::Baseline)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Bootherd => "bootherd",
            Peer::Baseline => "bootherd-baseline",
            Peer::TftpdHpa => "tftpd-hpa",
            Peer::Atftpd => "atftpd",
            Peer::Dnsmasq => "dnsmasq",
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub(crate) bootherd: PathBuf,
    pub(crate) baseline: Option<PathBuf>,
    pub(crate) atftpd: PathBuf,
}

impl Programs {
    /// The binary of `Bootherd` or `Baseline`.
    pub(crate) fn bootherd_for(&self, peer: Peer) -> &Path {
        match (peer, &self.baseline) {
            (Peer::Baseline, Some(baseline)) => baseline,
            _ => &self.bootherd,
        }
    }
}

pub(crate) const ADDRESS: &str = "127.0.0.1:69";

#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    group: Option<CpuGroup>,
}

impl Running {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds the server has used, its ended children included where a control group
    /// can count them.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.group
            .as_ref()
            .and_then(CpuGroup::cpu_seconds)
            .unwrap_or_else(|| procstat::cpu_seconds(self.pid()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Children of a forking server that are still serving: they were started by us.
        if let Some(group) = &self.group {
            for pid in group.members() {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Whether `bootherd tftp` of `binary` takes `flag`.
fn knows_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .args(["tftp", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

/// Starts `peer`, confined to CPU `cpu` when one is given (with every thread and child it
/// will have: `taskset` sets the mask before the server's first instruction).
pub(crate) fn start(
    peer: Peer,
    root: &Path,
    programs: &Programs,
    cpu: Option<usize>,
) -> anyhow::Result<Running> {
    // A server left running would answer in place of the one under test (and its files
    // would fail verification): the port must be free before each start.
    if let Err(e) = std::net::UdpSocket::bind(ADDRESS) {
        bail!(
            "cannot start {}: {ADDRESS} is not free ({e}); is another TFTP server still running?",
            peer.name()
        );
    }
    let root_text = root.to_str().context("root path is not UTF-8")?;
    let mut command = server_command(peer, root_text, programs, cpu);
    // The server joins its group itself, before its first instruction, so that no child it
    // forks can escape the count.
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start_number = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let group = CpuGroup::create(&format!(
        "bootherd-bench-{}-{start_number}-{}",
        std::process::id(),
        peer.name()
    ));
    if let Some(group) = &group {
        let mut joining = Command::new("sh");
        joining
            .arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(group.procs_file())
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                joining.env(key, value);
            }
        }
        command = joining;
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", peer.name()))?;
    let running = Running { child, group };
    wait_ready(peer)?;
    Ok(running)
}

/// The command line that runs `peer` serving `root` on `ADDRESS`, pinned to `cpu` if given.
fn server_command(peer: Peer, root_text: &str, programs: &Programs, cpu: Option<usize>) -> Command {
    let program = |path: &Path| match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("--cpu-list").arg(cpu.to_string()).arg(path);
            c
        }
        None => Command::new(path),
    };
    match peer {
        Peer::Bootherd | Peer::Baseline => {
            let binary = programs.bootherd_for(peer);
            let mut c = program(binary);
            c.args([
                "tftp",
                "--root",
                root_text,
                "--listen",
                ADDRESS,
                "--max-transfers",
                "4096",
            ])
            .env("RUST_LOG", "warn");
            // Every load client runs on 127.0.0.1: one address, so the per-client share is
            // raised with the total (builds older than the flag, measured as --baseline,
            // have no share).
            if knows_flag(binary, "--max-transfers-per-client") {
                c.args(["--max-transfers-per-client", "4096"]);
            }
            c
        }
        Peer::TftpdHpa => {
            let mut c = program(Path::new("/usr/sbin/in.tftpd"));
            c.args([
                "--foreground",
                "--listen",
                "--address",
                ADDRESS,
                "--user",
                "root",
                "--secure",
                root_text,
            ]);
            c
        }
        Peer::Atftpd => {
            let mut c = program(&programs.atftpd);
            c.args([
                "--daemon",
                "--no-fork",
                "--port",
                "69",
                "--bind-address",
                "127.0.0.1",
                "--maxthread",
                "4096",
                "--user",
                "root",
                "--group",
                "root",
                "--logfile",
                "/dev/null",
                "--verbose=0",
                root_text,
            ]);
            c
        }
        Peer::Dnsmasq => {
            let mut c = program(Path::new("dnsmasq"));
            c.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--enable-tftp",
                &format!("--tftp-root={root_text}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--tftp-max=4096",
                "--quiet-tftp",
                "--user=root",
                "--pid-file=",
                "--log-facility=/dev/null",
            ]);
            c
        }
    }
}

/// Ready when a request for a missing file gets an ERROR back.
fn wait_ready(peer: Peer) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let server: SocketAddr = ADDRESS.parse()?;
    let mut rrq = Vec::new();
    packet::encode_request(
        &mut rrq,
        false,
        &Request {
            filename: "no-such-file-ready-probe",
            mode: Mode::Octet,
            options: vec![],
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        socket.send_to(&rrq, server)?;
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            if matches!(
                packet::decode(&buf[..len]),
                Ok(packet::Packet::Error { .. })
            ) {
                return Ok(());
            }
        }
    }
    bail!(
        "{} did not answer on {ADDRESS} within 10 s (is port 69 free? are you root?)",
        peer.name()
    )
}
