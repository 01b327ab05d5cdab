//! Real firmware booting through bootherd: QEMU with SeaBIOS + the iPXE NIC ROM (BIOS) and with
//! OVMF using EDK2's own PXE client (UEFI), on a LAN built from network namespaces where
//! dnsmasq is the ordinary DHCP server. The payload is Debian's kernel and a busybox initramfs
//! that prints a marker and its command line on the serial console and powers off; a boot
//! passes when the serial log shows the marker and the profile's own token.
//!
//! Needs root, qemu-system-x86, ipxe-qemu, ovmf, ipxe, cpio, busybox-static, nftables and a
//! kernel at target/firmware-payload/vmlinuz (the README's test command prepares all of it).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bootherd_testkit::netns::{self, Lan, Netns};
use bootherd_testkit::{Daemon, lan_dhcp_server};

const BIN: &str = env!("CARGO_BIN_EXE_bootherd");

/// QEMU under software emulation is CPU-bound: one virtual machine at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firmware {
    Bios,
    Uefi,
}

fn kernel_path() -> PathBuf {
    std::env::var_os("BOOTHERD_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/firmware-payload/vmlinuz")
        })
}

/// Everything needed, or why not. Outside CI a missing prerequisite skips with a message; in CI
/// it fails, so the suite cannot silently stop booting anything.
fn prerequisites() -> bool {
    if !netns::available() {
        return false;
    }
    let kernel = kernel_path();
    let missing: Vec<String> = ["qemu-system-x86_64", "cpio", "busybox", "nft"]
        .iter()
        .filter(|p| {
            !Path::new("/usr/bin").join(p).exists()
                && !Path::new("/usr/sbin").join(p).exists()
                && !Path::new("/bin").join(p).exists()
        })
        .map(|p| p.to_string())
        .chain(
            ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/lib/ipxe/snponly.efi"]
                .iter()
                .filter(|f| !Path::new(f).exists())
                .map(|f| f.to_string()),
        )
        .chain((!kernel.exists()).then(|| kernel.display().to_string()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "firmware tests need {} (the README's test command installs and prepares them)",
        missing.join(", ")
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("skipping: {message}");
    false
}

/// The busybox initramfs: prints the marker and the command line, then powers off.
fn build_initrd(dir: &Path) -> PathBuf {
    let root = dir.join("initrd-root");
    for sub in ["bin", "proc", "dev"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    fs::write(
        root.join("init"),
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n/bin/busybox echo BOOTHERD-PAYLOAD-MARKER\n/bin/busybox echo \"cmdline: $(/bin/busybox cat /proc/cmdline)\"\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = dir.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "building the initramfs failed");
    out
}

/// KVM only when a real boot works with it (on these machines /dev/kvm exists but kernels hang
/// under it); otherwise software emulation.
fn accelerator(kernel: &Path, initrd: &Path, logs: &Path) -> &'static str {
    static CHOICE: Mutex<Option<&'static str>> = Mutex::new(None);
    let mut choice = CHOICE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(accel) = *choice {
        return accel;
    }
    let mut accel = "tcg";
    if Path::new("/dev/kvm").exists() {
        let log = logs.join("kvm-probe.log");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "kvm",
                "-nographic",
                "-m",
                "256",
                "-no-reboot",
                "-kernel",
            ])
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(child) = child {
            let mut vm = Vm(child);
            if wait_for(&log, "BOOTHERD-PAYLOAD-MARKER", Duration::from_secs(15)) {
                accel = "kvm";
            }
            vm.stop();
        }
    }
    eprintln!("QEMU accelerator: {accel}");
    *choice = Some(accel);
    accel
}

fn wait_for(log: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if fs::read(log).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// A QEMU process we started; killed by PID when dropped.
struct Vm(Child);

impl Vm {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Lab {
    lan: Lan,
    _dhcp_ns: Netns,
    boot_ns: Netns,
    boot_if: String,
    _dnsmasq: Daemon,
    bootherd: Option<Daemon>,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
    accel: &'static str,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(150);

impl Lab {
    fn new() -> Lab {
        let lan = Lan::create();
        let dhcp_ns = Netns::create("fwd");
        let boot_ns = Netns::create("fwb");
        let dhcp_if = lan.attach(&dhcp_ns, Some("10.77.0.1/24"));
        let boot_if = lan.attach(&boot_ns, Some("10.77.0.2/24"));
        let logs = tempfile::tempdir().unwrap();
        let dnsmasq = lan_dhcp_server(&dhcp_ns, &dhcp_if, logs.path());
        let data = tempfile::tempdir().unwrap();
        let initrd = build_initrd(logs.path());
        let kernel = logs.path().join("vmlinuz");
        fs::copy(kernel_path(), &kernel).unwrap();
        let accel = accelerator(&kernel, &initrd, logs.path());
        let d = data.path().to_str().unwrap();
        cli(&[
            "image",
            "add",
            "lin",
            kernel.to_str().unwrap(),
            initrd.to_str().unwrap(),
            "--data",
            d,
        ]);
        for token in ["alpha", "beta", "gamma"] {
            cli(&[
                "profile",
                "add",
                token,
                "--image",
                "lin",
                "--kernel",
                "vmlinuz",
                "--initrd",
                "initrd.gz",
                "--cmdline",
                &format!("console=ttyS0 bootherd.token={token}"),
                "--data",
                d,
            ]);
        }
        Lab {
            lan,
            _dhcp_ns: dhcp_ns,
            boot_ns,
            boot_if,
            _dnsmasq: dnsmasq,
            bootherd: None,
            data,
            logs,
            accel,
        }
    }

    fn start_bootherd(&mut self, extra: &[&str]) {
        self.bootherd = None;
        let mut args = vec![
            "serve",
            "--data",
            self.data.path().to_str().unwrap(),
            "--interface",
            &self.boot_if,
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::spawn(
            Path::new(BIN),
            &args,
            &self.logs.path().join("bootherd.log"),
            Some(self.boot_ns.name()),
        );
        daemon.wait_for_log(
            &["HTTP boot server and web UI listening"],
            Duration::from_secs(10),
        );
        self.bootherd = Some(daemon);
    }

    fn assign(&self, mac: &str, profile: &str, once: Option<&str>) {
        let d = self.data.path().to_str().unwrap();
        let mut args = vec!["machine", "set", mac, "--profile", profile, "--data", d];
        if let Some(once) = once {
            args.extend_from_slice(&["--once", once]);
        }
        cli(&args);
        // The server reloads state.yaml once a second.
        std::thread::sleep(Duration::from_millis(1500));
    }

    /// Boots a virtual machine by PXE; returns its serial log once the payload printed its
    /// command line, or `Err(log)` if it did not within `timeout`.
    fn boot(&self, firmware: Firmware, mac: &str, timeout: Duration) -> Result<String, String> {
        static TAPS: AtomicU32 = AtomicU32::new(0);
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let tap = format!(
            "tp{}{}",
            std::process::id() % 10000,
            TAPS.fetch_add(1, Ordering::Relaxed)
        );
        let lan = self.lan_ns();
        lan.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
        lan.ip(&["link", "set", &tap, "master", "br0"]);
        lan.ip(&["link", "set", &tap, "up"]);
        let serial = self.logs.path().join(format!("serial-{tap}.log"));
        let mut command = lan.command("qemu-system-x86_64");
        command.args([
            "-accel",
            self.accel,
            "-nographic",
            "-m",
            "512",
            "-no-reboot",
            "-boot",
            "n",
        ]);
        command.args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ]);
        match firmware {
            Firmware::Bios => {
                command.args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")]);
            }
            Firmware::Uefi => {
                let vars = self.logs.path().join(format!("vars-{tap}.fd"));
                fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).unwrap();
                command
                    .args([
                        "-drive",
                        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
                    ])
                    .args([
                        "-drive",
                        &format!("if=pflash,format=raw,file={}", vars.display()),
                    ])
                    // No option ROM: EDK2's own PXE client does DHCP and TFTP.
                    .args([
                        "-device",
                        &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
                    ]);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(fs::File::create(&serial).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut vm = Vm(child);
        let booted = wait_for(&serial, "cmdline: ", timeout);
        // Let the line finish.
        std::thread::sleep(Duration::from_millis(300));
        vm.stop();
        let _ = Command::new("ip")
            .args(["-n", lan.name(), "link", "del", &tap])
            .status();
        let log = String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).into_owned();
        if booted { Ok(log) } else { Err(log) }
    }

    /// Adds an nftables rule (or table or chain) in bootherd's namespace.
    fn nft(&self, rule: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", self.boot_ns.name(), "nft"])
            .args(rule.split(' '))
            .status()
            .unwrap();
        assert!(status.success(), "nft {rule}");
    }

    fn lan_ns(&self) -> &Netns {
        self.lan.namespace()
    }

    fn diagnostics(&self, serial: &str) -> String {
        let read = |name: &str| fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        let tail: String = serial
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "--- serial (end) ---\n{tail}\n--- bootherd ---\n{}\n--- dnsmasq ---\n{}",
            read("bootherd.log"),
            read("dnsmasq.log")
        )
    }

    fn expect_boot(&self, firmware: Firmware, mac: &str, token: &str) {
        match self.boot(firmware, mac, BOOT_TIMEOUT) {
            Ok(log) => {
                let line = log
                    .lines()
                    .find(|l| l.contains("cmdline: "))
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    log.contains("BOOTHERD-PAYLOAD-MARKER"),
                    "no marker\n{}",
                    self.diagnostics(&log)
                );
                assert!(
                    line.contains(&format!("bootherd.token={token}")),
                    "{firmware:?} {mac} booted the wrong profile: {line}\n{}",
                    self.diagnostics(&log)
                );
            }
            Err(log) => panic!(
                "{firmware:?} {mac} did not boot within {BOOT_TIMEOUT:?}\n{}",
                self.diagnostics(&log)
            ),
        }
    }
}

fn cli(args: &[&str]) {
    let output = Command::new(BIN).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "bootherd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bios_and_uefi_boot_their_profiles_and_boot_once_falls_back() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.start_bootherd(&[]);
    lab.assign("52:54:00:aa:00:01", "alpha", Some("beta"));
    lab.assign("52:54:00:aa:00:02", "gamma", None);
    // BIOS: the boot-once profile first, then the assigned one.
    lab.expect_boot(Firmware::Bios, "52:54:00:aa:00:01", "beta");
    lab.expect_boot(Firmware::Bios, "52:54:00:aa:00:01", "alpha");
    // UEFI, another machine, another profile: EDK2 asks port 4011, fetches snponly.efi or
    // ipxe.efi by TFTP, and iPXE continues over HTTP.
    lab.expect_boot(Firmware::Uefi, "52:54:00:aa:00:02", "gamma");
    let log = lab.bootherd.as_ref().unwrap().log();
    assert!(
        log.contains("port=\"4011\"") && log.contains("outcome=completed"),
        "{log}"
    );
}

/// The field's classic: a firewall that lets only port 69 (and DHCP and HTTP) through. With
/// ephemeral TFTP ports the DATA packets are dropped and UEFI cannot load its bootloader; with
/// single-port mode it boots. Both are shown, so the check can fail.
#[test]
fn strict_firewall_needs_single_port_mode() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.nft("add table inet fw");
    lab.nft("add chain inet fw out { type filter hook output priority 0 ; policy accept ; }");
    lab.nft("add rule inet fw out udp sport { 67, 69, 4011 } accept");
    lab.nft("add rule inet fw out meta l4proto udp drop");
    lab.start_bootherd(&[]);
    lab.assign("52:54:00:aa:00:03", "alpha", None);
    if let Ok(log) = lab.boot(Firmware::Uefi, "52:54:00:aa:00:03", Duration::from_secs(75)) {
        panic!(
            "booted through a firewall that drops ephemeral TFTP ports; the test cannot tell\n{}",
            lab.diagnostics(&log)
        );
    }
    let log = lab.bootherd.as_ref().unwrap().log();
    assert!(
        log.contains("TFTP transfer finished") && log.contains("timed out"),
        "{log}"
    );
    lab.start_bootherd(&["--single-port"]);
    lab.expect_boot(Firmware::Uefi, "52:54:00:aa:00:03", "alpha");
}

/// 5 % of packets lost in each direction at bootherd (nftables' random number generator:
/// tc netem is not available on these machines): DHCP, TFTP and HTTP retransmit and the
/// machine still boots.
#[test]
fn lossy_network_still_boots() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::new();
    lab.nft("add table inet loss");
    lab.nft("add chain inet loss out { type filter hook output priority 0 ; policy accept ; }");
    lab.nft("add chain inet loss in { type filter hook input priority 0 ; policy accept ; }");
    lab.nft("add rule inet loss out numgen random mod 100 < 5 drop");
    lab.nft("add rule inet loss in numgen random mod 100 < 5 drop");
    lab.start_bootherd(&[]);
    lab.assign("52:54:00:aa:00:04", "beta", None);
    lab.expect_boot(Firmware::Uefi, "52:54:00:aa:00:04", "beta");
}
