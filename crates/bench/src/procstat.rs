//! CPU time and memory of a server and all its descendants, read from /proc. Forking servers
//! (tftpd-hpa starts a process per transfer) are measured as the whole tree.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The process and its descendants.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// CPU seconds used by `pid` and its descendants (including reaped children).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = tree(pid).into_iter().map(|p| process_ticks(p, true)).sum();
    ticks as f64 / ticks_per_second()
}

/// CPU seconds this process (the load client) used itself: not [`cpu_seconds`], whose tree
/// would include the server under test, a child of this process.
pub(crate) fn own_cpu_seconds() -> f64 {
    process_ticks(std::process::id(), false) as f64 / ticks_per_second()
}

/// User and system ticks of one process, with those of its reaped children if asked.
fn process_ticks(pid: u32, with_reaped_children: bool) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which may contain spaces, start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 overall: 11-14 after the name.
    let end = if with_reaped_children { 15 } else { 13 };
    fields
        .get(11..end)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

fn rss_bytes(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/statm")).ok())
        .filter_map(|statm| {
            statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum::<u64>()
        * page_size()
}

fn high_water_mark(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Samples the tree's resident memory every 10 ms until dropped; reports the peak (and the
/// main process's own high-water mark, which catches peaks between samples).
#[derive(Debug)]
pub(crate) struct RssSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            pid,
            peak,
            stop,
            handle: Some(handle),
        }
    }

    /// Peak resident bytes seen.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.peak
            .load(Ordering::Relaxed)
            .max(high_water_mark(self.pid))
    }
}

/// The whole machine's CPU time so far, as (idle, total) in ticks: a short-transfer scenario
/// bound by latency leaves CPUs idle, one bound by work does not.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let idle = fields.get(3..5).map_or(0, |f| f.iter().sum());
    let total = fields.iter().take(8).sum();
    (idle, total)
}

/// A control group of its own for one server, so that its CPU time includes processes that
/// already ended: tftpd-hpa serves each transfer in a child that is gone before it could be
/// read from /proc, and a reaped child's time reaches its parent only if the parent waits for
/// it. Linux keeps the sum per group (cgroup v1 `cpuacct`, or v2's `cpu.stat`).
#[derive(Debug)]
pub(crate) struct CpuGroup {
    dir: std::path::PathBuf,
    version: CgroupVersion,
}

#[derive(Debug, Clone, Copy)]
enum CgroupVersion {
    V1,
    V2,
}

impl CpuGroup {
    /// A new, empty group, or `None` where none can be made (no cgroup file system, or not
    /// root): CPU time is then read per process from /proc.
    pub(crate) fn create(name: &str) -> Option<CpuGroup> {
        let (parent, version) =
            if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                ("/sys/fs/cgroup", CgroupVersion::V2)
            } else if std::path::Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
                ("/sys/fs/cgroup/cpuacct", CgroupVersion::V1)
            } else {
                return None;
            };
        let dir = std::path::Path::new(parent).join(name);
        match fs::create_dir(&dir) {
            Ok(()) => Some(CpuGroup { dir, version }),
            Err(_) => None,
        }
    }

    /// The file a process writes its own pid to, to join the group before it starts serving.
    pub(crate) fn procs_file(&self) -> std::path::PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// CPU seconds used by every process that has been in the group.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        match self.version {
            CgroupVersion::V1 => fs::read_to_string(self.dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|ns| ns as f64 / 1e9),
            CgroupVersion::V2 => fs::read_to_string(self.dir.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|us| us as f64 / 1e6),
        }
    }

    /// Processes still in the group (a forking server's children outlive a killed parent).
    pub(crate) fn members(&self) -> Vec<u32> {
        fs::read_to_string(self.procs_file())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // A group can only be removed once empty; its last members may take a moment to exit.
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}
