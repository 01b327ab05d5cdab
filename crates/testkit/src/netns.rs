//! Network namespaces for tests: private hosts on one machine, joined by veth pairs, using 10.x
//! addresses that exist only inside them. Namespaces are deleted when the fixture drops, also
//! when the test fails.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::sched::{CloneFlags, setns};

/// Whether this process may create namespaces. Tests that need them skip outside CI when not
/// root; in CI (`CI` set) they must run.
pub fn available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root && std::env::var_os("CI").is_none() {
        eprintln!("skipping: network-namespace tests need root (they run in CI)");
        return false;
    }
    assert!(root, "network-namespace tests need root; CI runs as root");
    true
}

/// Runs `ip` with `args` and panics with its output on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (install iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a unique name starting with `prefix`, loopback up.
    pub fn create(prefix: &str) -> Netns {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bh-{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it creates live here,
    /// whatever thread uses them afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).expect("joining the namespace");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects two namespaces with a veth pair and gives each end an address (CIDR notation).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Interface names are limited to 15 bytes.
    let id = format!("{:x}{n:x}", std::process::id() % 0xffff);
    let (a_if, b_if) = (format!("va{id}"), format!("vb{id}"));
    ip(&[
        "link",
        "add",
        &a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", a_addr, "dev", &a_if]);
    b.ip(&["addr", "add", b_addr, "dev", &b_if]);
    a.ip(&["link", "set", &a_if, "up"]);
    b.ip(&["link", "set", &b_if, "up"]);
    (a_if, b_if)
}

/// A LAN segment: a bridge inside its own namespace, to which hosts (namespaces) attach.
#[derive(Debug)]
pub struct Lan {
    ns: Netns,
    attached: AtomicU32,
}

impl Lan {
    pub fn create() -> Lan {
        let ns = Netns::create("lan");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Lan {
            ns,
            attached: AtomicU32::new(0),
        }
    }

    /// The namespace that holds the bridge (for taps of virtual machines).
    pub fn namespace(&self) -> &Netns {
        &self.ns
    }

    /// Attaches `host` to the bridge; gives its end `addr` (CIDR) unless `None`. Returns the
    /// host's interface name.
    pub fn attach(&self, host: &Netns, addr: Option<&str>) -> String {
        let n = self.attached.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n:x}", std::process::id() % 0xffff);
        let (host_if, bridge_if) = (format!("eh{id}"), format!("eb{id}"));
        ip(&[
            "link",
            "add",
            &host_if,
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            &bridge_if,
            "netns",
            self.ns.name(),
        ]);
        self.ns.ip(&["link", "set", &bridge_if, "master", "br0"]);
        self.ns.ip(&["link", "set", &bridge_if, "up"]);
        if let Some(addr) = addr {
            host.ip(&["addr", "add", addr, "dev", &host_if]);
        }
        host.ip(&["link", "set", &host_if, "up"]);
        host_if
    }
}
