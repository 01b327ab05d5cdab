//! `bootherd serve` on a LAN built from network namespaces: dnsmasq is the LAN's ordinary DHCP
//! server (no boot options), bootherd the ProxyDHCP + TFTP server, and a PXE-like client sends
//! real DHCP packets from a third namespace. The client must get its address from dnsmasq and
//! its boot file from bootherd, and then fetch that file by TFTP.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bootherd_testkit::netns::{self, Lan, Netns};
use bootherd_testkit::pxe_client::{self, ClientIdentity};
use bootherd_testkit::{Daemon, lan_dhcp_server, pattern, require_program, run_with_timeout};
use dhcproto::v4::{DhcpOption, OptionCode};

const BIN: &str = env!("CARGO_BIN_EXE_bootherd");
const BOOTHERD_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

struct Network {
    lan: Lan,
    dhcp_ns: Netns,
    server_ns: Netns,
    client_ns: Netns,
    client_if: String,
    server_if: String,
    _dnsmasq: Daemon,
    bootherd: Daemon,
    files: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl Network {
    fn start() -> Network {
        require_program("tftp", "tftp-hpa");
        let lan = Lan::create();
        let dhcp_ns = Netns::create("dhcp");
        let server_ns = Netns::create("boot");
        let client_ns = Netns::create("pxe");
        let dhcp_if = lan.attach(&dhcp_ns, Some("10.77.0.1/24"));
        let server_if = lan.attach(&server_ns, Some("10.77.0.2/24"));
        let client_if = lan.attach(&client_ns, None);
        let logs = tempfile::tempdir().unwrap();

        // The LAN's DHCP server: addresses only, no boot options at all.
        let dnsmasq = lan_dhcp_server(&dhcp_ns, &dhcp_if, logs.path());

        let files = tempfile::tempdir().unwrap();
        fs::create_dir(files.path().join("data")).unwrap();
        fs::create_dir(files.path().join("bootloaders")).unwrap();
        fs::write(
            files.path().join("bootloaders/undionly.kpxe"),
            pattern(70_000),
        )
        .unwrap();
        fs::write(files.path().join("bootloaders/ipxe.efi"), pattern(300_000)).unwrap();
        let bootherd = Daemon::spawn(
            Path::new(BIN),
            &[
                "serve",
                "--data",
                files.path().join("data").to_str().unwrap(),
                "--bootloaders",
                files.path().join("bootloaders").to_str().unwrap(),
                "--interface",
                &server_if,
            ],
            &logs.path().join("bootherd.log"),
            Some(server_ns.name()),
        );
        bootherd.wait_for_log(
            &["ProxyDHCP responder listening", "port=\"4011\""],
            Duration::from_secs(10),
        );
        bootherd.wait_for_log(&["TFTP server listening"], Duration::from_secs(10));
        Network {
            lan,
            dhcp_ns,
            server_ns,
            client_ns,
            client_if,
            server_if,
            _dnsmasq: dnsmasq,
            bootherd,
            files,
            logs,
        }
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
        format!(
            "--- bootherd ---\n{}\n--- dnsmasq ---\n{}",
            read("bootherd.log"),
            read("dnsmasq.log")
        )
    }

    /// Runs the DHCP phase in the client namespace and configures the leased address there.
    fn lease(&self, identity: &ClientIdentity, xid: u32) -> pxe_client::PxeLease {
        let interface = self.client_if.clone();
        let identity_owned = identity.clone();
        let lease = self.client_ns.run(move || {
            let socket = pxe_client::dhcp_socket(&interface);
            pxe_client::obtain_lease(&socket, &identity_owned, xid, Duration::from_secs(20))
        });
        let cidr = format!("{}/24", lease.address);
        if !fs::read_to_string(self.logs.path().join("assigned"))
            .unwrap_or_default()
            .contains(&cidr)
        {
            self.client_ns
                .ip(&["addr", "add", &cidr, "dev", &self.client_if]);
            fs::write(self.logs.path().join("assigned"), &cidr).unwrap();
        }
        lease
    }

    /// Fetches `file` from `server` with tftp-hpa inside the client namespace.
    fn tftp_fetch(&self, server: Ipv4Addr, file: &str) -> Vec<u8> {
        let out = self.logs.path().join("fetched");
        let _ = fs::remove_file(&out);
        let output = run_with_timeout(
            self.client_ns
                .command("tftp")
                .args(["-m", "binary", &server.to_string(), "-c", "get", file])
                .arg(&out),
            Duration::from_secs(60),
        );
        assert!(
            output.status.success(),
            "tftp get {file} from {server} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.diagnostics()
        );
        fs::read(&out).unwrap()
    }
}

fn bios_rom() -> ClientIdentity {
    ClientIdentity {
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x01],
        arch: 0,
        vendor_class: "PXEClient:Arch:00000:UNDI:002001".into(),
        ipxe: false,
    }
}

fn edk2() -> ClientIdentity {
    ClientIdentity {
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x01],
        arch: 7,
        vendor_class: "PXEClient:Arch:00007:UNDI:003000".into(),
        ipxe: false,
    }
}

#[test]
fn pxe_client_gets_address_from_lan_dhcp_and_boot_file_from_bootherd() {
    if !netns::available() {
        return;
    }
    let net = Network::start();

    // BIOS PXE ROM: the boot file comes straight from the proxy offer on port 67.
    let lease = net.lease(&bios_rom(), 0x1111_0001);
    assert!(
        (100..=150).contains(&lease.address.octets()[3]),
        "address {} not from dnsmasq's range",
        lease.address
    );
    assert_eq!(lease.dhcp_server, Ipv4Addr::new(10, 77, 0, 1));
    let offer = &lease.proxy_offer;
    assert_eq!(lease.proxy_from, SocketAddr::from((BOOTHERD_IP, 67)));
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "the proxy handed out an address"
    );
    assert_eq!(
        offer.siaddr(),
        BOOTHERD_IP,
        "next-server is not bootherd's own address"
    );
    assert_eq!(
        offer.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(BOOTHERD_IP))
    );
    assert_eq!(lease.bootfile(), "undionly.kpxe");
    let fetched = net.tftp_fetch(offer.siaddr(), &lease.bootfile());
    assert!(fetched == pattern(70_000), "bootloader bytes differ");

    // EDK2: a bare offer on 67, then the boot file from port 4011, answered to port 4011.
    let lease = net.lease(&edk2(), 0x2222_0002);
    assert!(
        lease
            .proxy_offer
            .opts()
            .get(OptionCode::VendorExtensions)
            .is_none()
    );
    let client_ip = lease.address;
    let identity = edk2();
    let ack = net.client_ns.run(move || {
        pxe_client::boot_server_request(&identity, client_ip, BOOTHERD_IP, 0x2222_0003)
    });
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.siaddr(), BOOTHERD_IP);
    assert_eq!(pxe_client::bootfile(&ack), "ipxe.efi");
    let fetched = net.tftp_fetch(ack.siaddr(), "ipxe.efi");
    assert!(fetched == pattern(300_000));

    let log = net.bootherd.log();
    assert!(
        log.contains("PXE boot offer sent")
            && log.contains("reply=OFFER")
            && log.contains("reply=ACK"),
        "{}",
        net.diagnostics()
    );
    assert!(log.contains("mac=52:54:00:12:34:01"), "{log}");
    assert!(log.contains("outcome=completed"), "{log}");

    // The same boots, counted in /metrics by architecture and outcome (each client got two
    // replies: the proxy offer and the answer to its REQUEST on port 67 or 4011).
    let (ok, metrics) = curl_in(&net, "http://10.77.0.2:8080/metrics", &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(ok, "{metrics}");
    for sample in [
        "bootherd_dhcp_offers_by_arch_total{arch=\"bios\"} 2",
        "bootherd_dhcp_offers_by_arch_total{arch=\"efi-x64\"} 2",
        "bootherd_dhcp_replies_total{type=\"ack\"} 1",
        "bootherd_transfers_total{protocol=\"tftp\",outcome=\"completed\"} 2",
        "bootherd_bytes_total{protocol=\"tftp\"} 370000",
    ] {
        assert!(metrics.contains(sample), "no '{sample}' in\n{metrics}");
    }
}

#[test]
fn garbage_is_dropped_and_the_responder_keeps_serving_and_competitors_are_reported() {
    if !netns::available() {
        return;
    }
    let net = Network::start();
    let lease = net.lease(&bios_rom(), 0x3333_0001);
    let client_ip = lease.address;

    // Malformed, truncated and oversized datagrams to both ports.
    net.client_ns.run(move || {
        let socket = UdpSocket::bind((client_ip, 0)).unwrap();
        let mut truncated = vec![1u8, 1, 6, 0];
        truncated.resize(200, 0);
        let mut bad_option = vec![1u8, 1, 6, 0];
        bad_option.resize(236, 0);
        bad_option.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 60, 200, b'P']);
        let oversized = vec![1u8; 3000];
        for datagram in [&b"hello"[..], &truncated, &bad_option, &oversized] {
            for port in [67, 4011] {
                socket.send_to(datagram, (BOOTHERD_IP, port)).unwrap();
            }
        }
    });
    net.bootherd.wait_for_log(
        &["malformed DHCP packet dropped", "option 60"],
        Duration::from_secs(5),
    );
    net.bootherd.wait_for_log(
        &["oversized DHCP packet dropped", "3000 bytes"],
        Duration::from_secs(5),
    );

    // Still serving: the next client boots.
    let lease = net.lease(&edk2(), 0x3333_0002);
    assert_eq!(lease.proxy_from, SocketAddr::from((BOOTHERD_IP, 67)));

    // A second PXE server appears on the LAN (dnsmasq in proxy mode): bootherd says so.
    let rogue_ns = Netns::create("rogue");
    let rogue_if = net.lan.attach(&rogue_ns, Some("10.77.0.3/24"));
    let _rogue = Daemon::spawn(
        Path::new("dnsmasq"),
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--bind-interfaces",
            &format!("--interface={rogue_if}"),
            "--dhcp-range=10.77.0.0,proxy",
            "--pxe-service=x86PC,rogue,pxelinux",
            "--dhcp-leasefile=/dev/null",
            &format!("--pid-file={}", net.logs.path().join("rogue.pid").display()),
            "--log-facility=-",
        ],
        &net.logs.path().join("rogue.log"),
        Some(rogue_ns.name()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = net.lease(&bios_rom(), 0x3333_0003);
    let line = net.bootherd.wait_for_log(
        &["another server on this network is also answering PXE clients"],
        Duration::from_secs(10),
    );
    assert!(line.contains("10.77.0.3"), "{line}");
    let _ = (&net.dhcp_ns, &net.server_ns, &net.server_if, &net.files);
}

fn run_cli(args: &[&str]) -> std::process::Output {
    run_with_timeout(Command::new(BIN).args(args), Duration::from_secs(30))
}

fn curl_in(net: &Network, url: &str, extra: &[&str]) -> (bool, Vec<u8>) {
    let output = run_with_timeout(
        net.client_ns
            .command("curl")
            .args(["--silent", "--fail", "--max-time", "10"])
            .args(extra)
            .arg(url),
        Duration::from_secs(20),
    );
    (output.status.success(), output.stdout)
}

/// Issue 4's acceptance: with no configuration an unknown iPXE machine gets the menu; the
/// command line changes what it boots while the server runs; scripts point at bootherd's own
/// address; image files come over HTTP with Range.
#[test]
fn ipxe_gets_the_menu_then_the_profile_assigned_from_the_command_line() {
    if !netns::available() {
        return;
    }
    require_program("curl", "curl");
    let net = Network::start();
    let data = net.files.path().join("data");
    let data_arg = data.to_str().unwrap().to_string();
    let ipxe = ClientIdentity {
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x01],
        arch: 0,
        vendor_class: "PXEClient:Arch:00000:UNDI:002001".into(),
        ipxe: true,
    };
    let lease = net.lease(&ipxe, 0x4444_0001);
    let url = lease.bootfile();
    assert_eq!(url, "http://10.77.0.2:8080/boot/52:54:00:12:34:01.ipxe");
    let (ok, menu) = curl_in(&net, &url, &[]);
    let menu = String::from_utf8_lossy(&menu).into_owned();
    assert!(
        ok && menu.starts_with("#!ipxe") && menu.contains("choose --default local"),
        "{menu}\n{}",
        net.diagnostics()
    );

    // Import a kernel, define a profile, assign it: all from the command line.
    let kernel = net.files.path().join("linux");
    fs::write(&kernel, pattern(200_000)).unwrap();
    for args in [
        vec![
            "image",
            "add",
            "deb",
            kernel.to_str().unwrap(),
            "--data",
            &data_arg,
        ],
        vec![
            "profile",
            "add",
            "inst",
            "--image",
            "deb",
            "--kernel",
            "linux",
            "--cmdline",
            "marker=inst",
            "--data",
            &data_arg,
        ],
        vec![
            "machine",
            "set",
            "52:54:00:12:34:01",
            "--profile",
            "inst",
            "--data",
            &data_arg,
        ],
    ] {
        let output = run_cli(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Assigning a profile whose files are missing is refused, with the reason.
    let output = run_cli(&[
        "profile", "add", "broken", "--image", "deb", "--kernel", "vmlinuz", "--data", &data_arg,
    ]);
    assert!(output.status.success());
    let output = run_cli(&[
        "machine",
        "set",
        "52:54:00:12:34:02",
        "--profile",
        "broken",
        "--data",
        &data_arg,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("vmlinuz"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The running server picks the change up.
    let expected = "kernel http://10.77.0.2:8080/images/deb/linux marker=inst";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let script = loop {
        let (_, body) = curl_in(&net, &url, &[]);
        let script = String::from_utf8_lossy(&body).into_owned();
        if script.contains(expected) || std::time::Instant::now() > deadline {
            break script;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(script.contains(expected), "{script}\n{}", net.diagnostics());

    // The kernel over HTTP, whole and by range.
    let (ok, body) = curl_in(&net, "http://10.77.0.2:8080/images/deb/linux", &[]);
    assert!(ok && body == pattern(200_000));
    let (ok, body) = curl_in(
        &net,
        "http://10.77.0.2:8080/images/deb/linux",
        &["--range", "1000-1999"],
    );
    assert!(ok && body == pattern(200_000)[1000..2000]);

    // `check` names the profile that is not ready and fails; the listing shows readiness.
    let output = run_cli(&[
        "check",
        "--data",
        &data_arg,
        "--bootloaders",
        net.files.path().join("bootloaders").to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success()
            && report.contains("profile 'broken' is not ready")
            && report.contains("vmlinuz"),
        "{report}"
    );
    let output = run_cli(&["profile", "list", "--json", "--data", &data_arg]);
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listing.as_array().unwrap().len(), 2);

    // A broken hand edit is reported with its line; the last good state keeps serving.
    fs::write(
        data.join("state.yaml"),
        "profiles:\n  inst:\n    kind: linux\n    image: deb\n    kernal: linux\n",
    )
    .unwrap();
    let line = net
        .bootherd
        .wait_for_log(&["state file edit rejected"], Duration::from_secs(10));
    assert!(line.contains("line 5") && line.contains("kernal"), "{line}");
    let (_, body) = curl_in(&net, &url, &[]);
    assert!(String::from_utf8_lossy(&body).contains(expected));
}
