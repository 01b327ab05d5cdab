//! bootherd-bench: runs the same TFTP and ProxyDHCP scenarios against bootherd and the servers
//! people run today (tftpd-hpa, atftpd, dnsmasq), one server at a time on identical terms, and
//! writes a results table. Run it through `bench/run.sh`, which installs the peers.

mod dhcp_load;
mod procstat;
mod servers;
mod tftp_client;

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bootherd_testkit::netns::{self, Netns};
use bootherd_testkit::pattern;
use clap::Parser;
use servers::{Peer, Programs};
use tftp_client::GetOptions;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks bootherd against tftpd-hpa, atftpd and dnsmasq (run bench/run.sh)")]
struct Cli {
    /// Repetitions of each measurement; the table shows the median and the spread.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Where to write the results (Markdown).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The bootherd binary (build it with --release).
    #[arg(long, default_value = "target/release/bootherd")]
    bootherd: PathBuf,
    /// Another bootherd build measured alongside, as `bootherd-baseline` (for example the
    /// previous commit's): run-to-run noise on a shared machine is larger than most changes,
    /// so a change is judged against its baseline within one interleaved run.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
    /// The atftpd binary (bench/run.sh unpacks it from Debian's package).
    #[arg(long, default_value = "target/bench-peers/usr/sbin/atftpd")]
    atftpd: PathBuf,
    /// Servers to compare (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = ["bootherd".to_string(), "tftpd-hpa".into(), "atftpd".into(), "dnsmasq".into()])]
    peers: Vec<String>,
    /// Small sizes and one repetition: checks the harness, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (large, storm, small, dhcp); default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The command line to record in the results.
    #[arg(long, default_value = "bench/run.sh")]
    command: String,
}

#[derive(Debug, Clone, Default)]
struct Sample {
    /// The scenario's figure (MiB/s, transfers/s, offers/s, or seconds for the storm).
    value: f64,
    cpu_per_gib: f64,
    cpu_seconds: f64,
    peak_rss: u64,
    failures: u64,
    note: String,
    extra: String,
}

#[derive(Debug)]
struct Row {
    peer: Peer,
    samples: Vec<Sample>,
    unsupported: Option<String>,
}

#[derive(Debug)]
struct Table {
    title: String,
    what: String,
    unit: &'static str,
    higher_is_better: bool,
    rows: Vec<Row>,
}

struct Files {
    dir: tempfile::TempDir,
    big: Vec<u8>,
    boot: Vec<u8>,
    small: Vec<u8>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "run as root: the servers bind port 69 and the DHCP scenario uses network namespaces"
        );
    }
    let mut peers: Vec<Peer> = Peer::ALL
        .into_iter()
        .filter(|p| cli.peers.iter().any(|n| n == p.name()))
        .collect();
    if cli.baseline.is_some() {
        peers.insert(1.min(peers.len()), Peer::Baseline);
    }
    let programs = Programs {
        bootherd: cli.bootherd.clone(),
        baseline: cli.baseline.clone(),
        atftpd: cli.atftpd.clone(),
    };
    let (big_len, storm_clients, small_total, dhcp_total) = if cli.quick {
        (4 << 20, 50, 500, 500)
    } else {
        (100 << 20, 1000, 40_000, 20_000)
    };
    let reps = if cli.quick { 1 } else { cli.reps.max(1) };

    let dir = tempfile::Builder::new()
        .prefix("bootherd-bench")
        .tempdir()?;
    // Forking servers drop privileges to serve; everything must be world-readable.
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let files = Files {
        big: pattern(big_len),
        boot: pattern(1 << 20),
        small: pattern(512),
        dir,
    };
    fs::write(files.dir.path().join("big.bin"), &files.big)?;
    fs::write(files.dir.path().join("boot.bin"), &files.boot)?;
    fs::write(files.dir.path().join("small.bin"), &files.small)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut tables = Vec::new();
    let server: SocketAddr = servers::ADDRESS.parse()?;

    let wanted = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    let dir = files.dir.path();

    if wanted("large") {
        let placement = Placement::for_this_machine();
        for (blksize, windowsize) in [
            (512u16, None),
            (1468, None),
            (65464, None),
            (1468, Some(16u16)),
        ] {
            let options = GetOptions {
                blksize: Some(blksize),
                windowsize,
                timeout: Duration::from_secs(1),
                retries: 8,
            };
            let label = format!("one client, blksize {blksize}, windowsize {windowsize:?}");
            let rows = interleaved(&peers, reps, &label, |peer| {
                let running = servers::start(peer, dir, &programs, placement.map(|p| p.server))?;
                let sampler = procstat::RssSampler::start(running.pid());
                let cpu_before = running.cpu_seconds();
                let result =
                    on_client_cpu(placement, one_client_downloads(server, &files.big, options))?;
                let cpu = running.cpu_seconds() - cpu_before;
                let peak = sampler.finish();
                Ok(match result {
                    Ok(got) if windowsize.is_some() && !got.windowed => {
                        Measured::Unsupported("no windowsize (answered lockstep)".into())
                    }
                    Ok(got) => Measured::Sample(Sample {
                        value: got.bytes as f64 / MIB / got.elapsed.as_secs_f64(),
                        cpu_per_gib: cpu / (got.bytes as f64 / GIB),
                        cpu_seconds: cpu,
                        peak_rss: peak,
                        extra: match got.bytes / files.big.len().max(1) as u64 {
                            1 => String::new(),
                            n => format!("{n} downloads per repetition"),
                        },
                        ..Sample::default()
                    }),
                    Err(e) => Measured::Sample(Sample {
                        failures: 1,
                        note: e,
                        ..Sample::default()
                    }),
                })
            })?;
            let ws = windowsize.map_or(String::new(), |w| format!(", windowsize {w}"));
            tables.push(Table {
                title: format!("One client, {} MiB, blksize {blksize}{ws}", big_len >> 20),
                what: "throughput of one download, verified byte for byte".into(),
                unit: "MiB/s",
                higher_is_better: true,
                rows,
            });
        }
    }

    if wanted("storm") {
        let rows = interleaved(&peers, reps, "boot storm", |peer| {
            let running = servers::start(peer, dir, &programs, None)?;
            let sampler = procstat::RssSampler::start(running.pid());
            let cpu_before = running.cpu_seconds();
            let started = Instant::now();
            let results = runtime.block_on(storm(server, &files.boot, storm_clients));
            let elapsed = started.elapsed();
            let cpu = running.cpu_seconds() - cpu_before;
            let peak = sampler.finish();
            let failures = results.iter().filter(|r| r.is_err()).count() as u64;
            let bytes: u64 = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|g| g.bytes)
                .sum();
            let first_error = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .cloned()
                .unwrap_or_default();
            Ok(Measured::Sample(Sample {
                value: elapsed.as_secs_f64(),
                // Nothing delivered: CPU per GiB has no meaning (it would divide by zero).
                cpu_per_gib: if bytes == 0 {
                    f64::NAN
                } else {
                    cpu / (bytes as f64 / GIB)
                },
                cpu_seconds: cpu,
                peak_rss: peak,
                failures,
                note: first_error,
                extra: format!("{:.0} MiB/s", bytes as f64 / MIB / elapsed.as_secs_f64()),
            }))
        })?;
        tables.push(Table {
            title: format!("Boot storm: {storm_clients} clients at once, 1 MiB each, blksize 1432"),
            what: "time until every transfer has finished; every byte verified".into(),
            unit: "s",
            higher_is_better: false,
            rows,
        });
    }

    if wanted("small") {
        // The same load from two kinds of client: how a client schedules its sockets shapes
        // how fast short transfers turn around, so one kind alone could mislead.
        type Load<'a> = Box<dyn Fn() -> (u64, u64, String) + 'a>;
        let loads: [(&str, String, &str, Load<'_>); 2] = [
            (
                "many small requests",
                format!(
                    "Many small requests: {small_total} transfers of a 512-byte file, 64 at a time"
                ),
                "completed transfers per second",
                Box::new(|| runtime.block_on(small_requests(server, &files.small, small_total))),
            ),
            (
                "small requests, blocking clients",
                format!(
                    "Many small requests, blocking clients: {small_total} transfers of a 512-byte file, {BLOCKING_CLIENTS} threads one after another"
                ),
                "completed transfers per second, the same load from plain blocking sockets (one thread per client, no async runtime)",
                Box::new(|| small_requests_blocking(server, &files.small, small_total)),
            ),
        ];
        for (label, title, what, load) in loads {
            let rows = interleaved(&peers, reps, label, |peer| {
                let running = servers::start(peer, dir, &programs, None)?;
                let sampler = procstat::RssSampler::start(running.pid());
                let cpu_before = running.cpu_seconds();
                let client_before = procstat::own_cpu_seconds();
                let (idle_before, total_before) = procstat::machine_ticks();
                let started = Instant::now();
                let (ok, failed, first_error) = load();
                let elapsed = started.elapsed();
                let cpu = running.cpu_seconds() - cpu_before;
                let client = procstat::own_cpu_seconds() - client_before;
                let (idle_after, total_after) = procstat::machine_ticks();
                let idle =
                    (idle_after - idle_before) as f64 / (total_after - total_before).max(1) as f64;
                let peak = sampler.finish();
                Ok(Measured::Sample(Sample {
                    value: ok as f64 / elapsed.as_secs_f64(),
                    cpu_per_gib: cpu / ((ok * 512) as f64 / GIB),
                    cpu_seconds: cpu,
                    peak_rss: peak,
                    failures: failed,
                    note: first_error,
                    extra: format!(
                        "{:.0} µs CPU per transfer (client {:.0} µs); machine {:.0} % idle",
                        cpu * 1e6 / ok.max(1) as f64,
                        client * 1e6 / ok.max(1) as f64,
                        idle * 100.0
                    ),
                }))
            })?;
            tables.push(Table {
                title,
                what: what.into(),
                unit: "transfers/s",
                higher_is_better: true,
                rows,
            });
        }
    }

    // ProxyDHCP, bootherd against dnsmasq in proxy mode.
    let dhcp_peers: Vec<Peer> = peers
        .iter()
        .copied()
        .filter(|p| matches!(p, Peer::Bootherd | Peer::Baseline | Peer::Dnsmasq))
        .collect();
    if !dhcp_peers.is_empty() && wanted("dhcp") {
        tables.push(dhcp_scenario(
            &dhcp_peers,
            &programs,
            dir,
            reps,
            dhcp_total,
        )?);
    }

    let report = render(&cli, &tables)?;
    if let Some(parent) = cli.out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&cli.out, report).with_context(|| format!("writing {}", cli.out.display()))?;
    eprintln!("results written to {}", cli.out.display());
    Ok(())
}

/// A measurement, or the reason a server cannot be measured in this scenario.
enum Measured {
    Sample(Sample),
    Unsupported(String),
}

/// Runs `measure` for every peer, repetition by repetition (all peers once, then all again),
/// so slow drifts of the machine spread over every server instead of favouring one.
fn interleaved(
    peers: &[Peer],
    reps: usize,
    label: &str,
    mut measure: impl FnMut(Peer) -> anyhow::Result<Measured>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = peers
        .iter()
        .map(|&peer| Row {
            peer,
            samples: Vec::new(),
            unsupported: None,
        })
        .collect();
    for rep in 0..reps {
        for row in rows.iter_mut().filter(|r| r.unsupported.is_none()) {
            match measure(row.peer)? {
                Measured::Sample(sample) => row.samples.push(sample),
                Measured::Unsupported(reason) => row.unsupported = Some(reason),
            }
        }
        eprintln!("{label}: repetition {} of {reps} done", rep + 1);
    }
    Ok(rows)
}

/// `clients` downloads of the boot file, all started at once.
async fn storm(
    server: SocketAddr,
    boot: &[u8],
    clients: usize,
) -> Vec<Result<tftp_client::Got, String>> {
    let boot: std::sync::Arc<[u8]> = boot.into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let boot = boot.clone();
        tasks.spawn(async move {
            let options = GetOptions {
                blksize: Some(1432),
                windowsize: None,
                timeout: Duration::from_secs(1),
                retries: 8,
            };
            tftp_client::get_verified(server, "boot.bin", &boot, options).await
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.unwrap_or_else(|e| Err(e.to_string())));
    }
    results
}

/// Which CPUs the one-client scenarios use. Left to the scheduler, a lock-step transfer runs
/// about twice as fast when server and client happen to share a CPU (on this kind of virtual
/// machine a wake-up across CPUs is the largest part of a round trip), so the figures were a
/// lottery of placement; with the client on one CPU and the server on another, every server
/// meets the same conditions, as with a client on another machine.
#[derive(Debug, Clone, Copy)]
struct Placement {
    client: usize,
    server: usize,
}

impl Placement {
    /// The first and the last CPU this process may use; none on a single CPU.
    fn for_this_machine() -> Option<Placement> {
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
        let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .collect();
        match (cpus.first(), cpus.last()) {
            (Some(&client), Some(&server)) if client != server => {
                Some(Placement { client, server })
            }
            _ => None,
        }
    }
}

/// Runs `client` on a thread of its own, confined to the placement's client CPU, with a
/// single-threaded runtime (one download needs no more, and a second thread would wander).
fn on_client_cpu<T: Send>(
    placement: Option<Placement>,
    client: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(placement) = placement {
                    let mut only = nix::sched::CpuSet::new();
                    only.set(placement.client)?;
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &only)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                Ok(client(&runtime))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    })
}

/// A single download measures a fraction of a second at large block sizes, too short to
/// measure steadily: downloads are repeated, one after another, until this much time is spent
/// (one is enough at small block sizes).
const MIN_MEASURED: Duration = Duration::from_secs(2);

/// Downloads the big file, verified, again and again until [`MIN_MEASURED`] has passed;
/// returns the bytes and the time of all downloads together.
fn one_client_downloads(
    server: SocketAddr,
    big: &[u8],
    options: GetOptions,
) -> impl FnOnce(&tokio::runtime::Runtime) -> Result<tftp_client::Got, String> {
    move |runtime| {
        runtime.block_on(async {
            let mut total = tftp_client::get_verified(server, "big.bin", big, options).await?;
            while total.elapsed < MIN_MEASURED {
                let got = tftp_client::get_verified(server, "big.bin", big, options).await?;
                total.bytes += got.bytes;
                total.elapsed += got.elapsed;
                total.windowed &= got.windowed;
            }
            Ok(total)
        })
    }
}

/// Client threads of the blocking small-request scenario.
const BLOCKING_CLIENTS: usize = 16;

/// `total` transfers of the small file from [`BLOCKING_CLIENTS`] threads, each fetching one
/// after another with a blocking socket; returns (ok, failed, first error).
fn small_requests_blocking(server: SocketAddr, small: &[u8], total: i64) -> (u64, u64, String) {
    let remaining = std::sync::atomic::AtomicI64::new(total);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..BLOCKING_CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, String::new());
                    while remaining.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                        match tftp_client::get_small_blocking(
                            server,
                            "small.bin",
                            small,
                            Duration::from_secs(1),
                            5,
                        ) {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                failed += 1;
                                if first_error.is_empty() {
                                    first_error = e;
                                }
                            }
                        }
                    }
                    (ok, failed, first_error)
                })
            })
            .collect();
        let (mut ok, mut failed, mut first_error) = (0, 0, String::new());
        for thread in threads {
            let (o, f, e) = thread
                .join()
                .unwrap_or((0, 0, "client thread panicked".into()));
            ok += o;
            failed += f;
            if first_error.is_empty() {
                first_error = e;
            }
        }
        (ok, failed, first_error)
    })
}

/// `total` transfers of the small file, 64 at a time; returns (ok, failed, first error).
async fn small_requests(server: SocketAddr, small: &[u8], total: i64) -> (u64, u64, String) {
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(total));
    let small: std::sync::Arc<[u8]> = small.into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let small = small.clone();
        let remaining = remaining.clone();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut first_error) = (0u64, 0u64, String::new());
            while remaining.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                let options = GetOptions {
                    blksize: None,
                    windowsize: None,
                    timeout: Duration::from_secs(1),
                    retries: 5,
                };
                match tftp_client::get_verified(server, "small.bin", &small, options).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        if first_error.is_empty() {
                            first_error = e;
                        }
                    }
                }
            }
            (ok, failed, first_error)
        });
    }
    let (mut ok, mut failed, mut first_error) = (0, 0, String::new());
    while let Some(Ok((o, f, e))) = tasks.join_next().await {
        ok += o;
        failed += f;
        if first_error.is_empty() {
            first_error = e;
        }
    }
    (ok, failed, first_error)
}

fn dhcp_scenario(
    peers: &[Peer],
    programs: &Programs,
    root: &Path,
    reps: usize,
    total: u64,
) -> anyhow::Result<Table> {
    let server_ns = Netns::create("bsrv");
    let client_ns = Netns::create("bcli");
    let (server_if, _) = netns::link(&server_ns, "10.88.0.1/24", &client_ns, "10.88.0.2/24");
    let bootloaders = root.join("bootloaders");
    fs::create_dir_all(&bootloaders)?;
    fs::write(bootloaders.join("undionly.kpxe"), b"bench")?;
    let rows = interleaved(peers, reps, "proxydhcp", |peer| {
        let mut command = server_ns.command(match peer {
            Peer::Bootherd | Peer::Baseline => {
                programs.bootherd_for(peer).to_str().unwrap_or("bootherd")
            }
            _ => "dnsmasq",
        });
        match peer {
            Peer::Bootherd | Peer::Baseline => {
                command
                    .args(["serve", "--data"])
                    .arg(root)
                    .arg("--bootloaders")
                    .arg(&bootloaders)
                    .args(["--interface", &server_if, "--watch-port", "0"])
                    .env("RUST_LOG", "warn");
            }
            _ => {
                command.args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--bind-interfaces",
                    &format!("--interface={server_if}"),
                    "--dhcp-range=10.88.0.0,proxy",
                    "--pxe-service=x86PC,bench,undionly",
                    "--quiet-dhcp",
                    "--dhcp-leasefile=/dev/null",
                    "--pid-file=",
                    "--log-facility=/dev/null",
                ]);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(700));
        let pid = child.id();
        let sampler = procstat::RssSampler::start(pid);
        let cpu_before = procstat::cpu_seconds(pid);
        let result = client_ns.run(move || dhcp_load::run(total, 32));
        let cpu = procstat::cpu_seconds(pid) - cpu_before;
        let peak = sampler.finish();
        let _ = child.kill();
        let _ = child.wait();
        let result = result?;
        let mut micros: Vec<f64> = result
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1e6)
            .collect();
        micros.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            micros
                .get(((micros.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Ok(Measured::Sample(Sample {
            value: result.answered as f64 / result.elapsed.as_secs_f64(),
            cpu_per_gib: f64::NAN,
            cpu_seconds: cpu,
            peak_rss: peak,
            failures: result.lost,
            note: String::new(),
            extra: format!(
                "p50 {:.0} µs, p99 {:.0} µs",
                percentile(0.5),
                percentile(0.99)
            ),
        }))
    })?;
    Ok(Table {
        title: format!(
            "ProxyDHCP: {total} PXE DISCOVERs, 32 outstanding (dnsmasq in proxy mode as the peer)"
        ),
        what: "offers per second; latency percentiles in the notes".into(),
        unit: "offers/s",
        higher_is_better: true,
        rows,
    })
}

fn version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn render(cli: &Cli, tables: &[Table]) -> anyhow::Result<String> {
    let mut out = String::new();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = version("uname", &["-r"]);
    let commit = version("git", &["rev-parse", "--short", "HEAD"]);
    writeln!(out, "# Benchmarks")?;
    writeln!(out)?;
    writeln!(
        out,
        "Produced by `{}` (bootherd {commit}); {} repetitions per figure, the table shows the median and the range (min–max). Every server runs alone on 127.0.0.1:69 serving the same directory, restarted for each repetition so memory figures are per run; the load generator runs on the same machine.",
        cli.command,
        if cli.quick { 1 } else { cli.reps }
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- Machine: {} cores, {cpu}, Linux {kernel}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "- Peers: tftpd-hpa `{}`, atftpd `{}`, dnsmasq `{}`",
        version("/usr/sbin/in.tftpd", &["-V"]),
        version(cli.atftpd.to_str().unwrap_or("atftpd"), &["--version"]),
        version("dnsmasq", &["--version"])
    )?;
    writeln!(
        out,
        "- Settings: concurrency limits raised above the storm size for every server (bootherd `--max-transfers 4096 --max-transfers-per-client 4096`, atftpd `--maxthread 4096`, dnsmasq `--tftp-max=4096`); routine logging off (bootherd `RUST_LOG=warn`, dnsmasq `--quiet-tftp`/`--quiet-dhcp`, atftpd to /dev/null)"
    )?;
    writeln!(
        out,
        "- CPU is the server's user+system time; in the TFTP scenarios a control group of the server's own counts it, together with every process the server forks (tftpd-hpa serves each transfer in a child). Peak RSS is the highest resident memory of the server's process tree, sampled every 10 ms and including the main process's high-water mark."
    )?;
    writeln!(
        out,
        "- One-client scenarios: the client runs on the first CPU and the server (all its threads and children) on the last, as with a client on another machine; left to the scheduler, whether the two share a CPU changed a lock-step transfer's speed twofold. Each repetition repeats the download until at least 2 s are measured."
    )?;
    writeln!(
        out,
        "- Targets are judged round by round: every server is measured once per round, in turn, and bootherd's figure is divided by the best peer's from the same round."
    )?;
    writeln!(out)?;
    let mut verdicts = Vec::new();
    for table in tables {
        writeln!(out, "## {}", table.title)?;
        writeln!(out)?;
        writeln!(
            out,
            "Figure: {} ({}, {} is better).",
            table.what,
            table.unit,
            if table.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| server | {} (median) | range | bootherd vs this | CPU s/GiB | CPU s | peak RSS MiB | failures | notes |",
            table.unit
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
        let ours = table
            .rows
            .iter()
            .find(|r| r.peer == Peer::Bootherd)
            .map(|r| median(&mut good_values(r)));
        let mut best_peer: Option<f64> = None;
        let mut best_row: Option<&Row> = None;
        for row in &table.rows {
            if let Some(reason) = &row.unsupported {
                writeln!(out, "| {} | n/a | | | | | | | {reason} |", row.peer.name())?;
                continue;
            }
            let mut values = good_values(row);
            let med = median(&mut values);
            let (lo, hi) = (
                values.first().copied().unwrap_or(f64::NAN),
                values.last().copied().unwrap_or(f64::NAN),
            );
            let ratio = match (ours, row.peer) {
                (_, Peer::Bootherd) => "—".to_string(),
                (Some(o), _) if table.higher_is_better => format!("{:.2}×", o / med),
                (Some(o), _) => format!("{:.2}×", med / o),
                _ => String::new(),
            };
            if row.peer.is_other_server() && med.is_finite() {
                let better = match best_peer {
                    None => true,
                    Some(b) if table.higher_is_better => med > b,
                    Some(b) => med < b,
                };
                if better {
                    best_peer = Some(med);
                    best_row = Some(row);
                }
            }
            let mut cpu_gib: Vec<f64> = row
                .samples
                .iter()
                .map(|s| s.cpu_per_gib)
                .filter(|v| v.is_finite())
                .collect();
            let mut cpu_s: Vec<f64> = row.samples.iter().map(|s| s.cpu_seconds).collect();
            let peak = row.samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / MIB;
            let failures: u64 = row.samples.iter().map(|s| s.failures).sum();
            let mut notes: Vec<String> = row
                .samples
                .iter()
                .map(|s| s.extra.clone())
                .filter(|e| !e.is_empty())
                .take(1)
                .collect();
            if let Some(error) = row
                .samples
                .iter()
                .map(|s| s.note.clone())
                .find(|n| !n.is_empty())
            {
                notes.push(format!("first failure: {error}"));
            }
            writeln!(
                out,
                "| {} | {:.1} | {:.1}–{:.1} | {ratio} | {} | {:.2} | {peak:.1} | {failures} | {} |",
                row.peer.name(),
                med,
                lo,
                hi,
                if cpu_gib.is_empty() {
                    "—".into()
                } else {
                    format!("{:.2}", median(&mut cpu_gib))
                },
                median(&mut cpu_s),
                notes.join("; ")
            )?;
        }
        writeln!(out)?;
        let our_row = table.rows.iter().find(|r| r.peer == Peer::Bootherd);
        if let (Some(o), Some(b), Some(ours_row), Some(best_row)) =
            (ours, best_peer, our_row, best_row)
        {
            let verdict = paired_verdict(ours_row, best_row, table.higher_is_better);
            verdicts.push(format!(
                "- {}: bootherd {o:.1} vs best peer ({}) {b:.1} {} by median — {verdict}",
                table.title,
                best_row.peer.name(),
                table.unit,
            ));
        }
    }
    writeln!(out, "## Targets")?;
    writeln!(out)?;
    for v in &verdicts {
        writeln!(out, "{v}")?;
    }
    if let Some(storm) = tables.iter().find(|t| t.title.starts_with("Boot storm")) {
        if let Some(row) = storm.rows.iter().find(|r| r.peer == Peer::Bootherd) {
            let failures: u64 = row.samples.iter().map(|s| s.failures).sum();
            let peak = row.samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / MIB;
            writeln!(
                out,
                "- Boot storm failures (bootherd, all repetitions): {failures} (target 0)"
            )?;
            writeln!(
                out,
                "- Boot storm peak RSS (bootherd): {peak:.1} MiB (target under 64 MiB)"
            )?;
        }
    }
    let windowed = tables.iter().find(|t| t.title.contains("windowsize"));
    let lockstep = tables
        .iter()
        .find(|t| t.title.contains("blksize 1468") && !t.title.contains("windowsize"));
    if let (Some(w), Some(l)) = (windowed, lockstep) {
        let ours = w
            .rows
            .iter()
            .find(|r| r.peer == Peer::Bootherd)
            .map(|r| median(&mut good_values(r)));
        let best_lockstep = l
            .rows
            .iter()
            .filter(|r| r.peer.is_other_server())
            .map(|r| median(&mut good_values(r)))
            .filter(|v| v.is_finite())
            .fold(f64::NAN, f64::max);
        if let Some(o) = ours {
            writeln!(
                out,
                "- Windowsize 16 vs the best stop-and-wait peer at blksize 1468: {:.1}×",
                o / best_lockstep
            )?;
        }
    }
    // Hand-written findings that go with the figures (profiling, changes made, assessment).
    if let Ok(notes) = fs::read_to_string("bench/notes.md") {
        writeln!(out)?;
        out.push_str(&notes);
    }
    Ok(out)
}

/// Whether bootherd is slower than `best`, judged repetition by repetition: the harness runs
/// every server once per round, so a round's figures share the machine's state of the moment,
/// and the ratio within a round is free of the drift between rounds (often ±20 % on a shared
/// machine, more than the gaps being judged). Slower means slower in every round; where the
/// rounds disagree, the servers are level within what this machine can tell apart.
fn paired_verdict(ours: &Row, best: &Row, higher_is_better: bool) -> String {
    let usable = |s: &Sample| s.value.is_finite() && s.value > 0.0;
    let mut ratios: Vec<f64> = ours
        .samples
        .iter()
        .zip(&best.samples)
        .filter(|(a, b)| usable(a) && usable(b))
        .map(|(a, b)| {
            if higher_is_better {
                a.value / b.value
            } else {
                b.value / a.value
            }
        })
        .collect();
    if ratios.is_empty() {
        return "**not measured** in a common round".into();
    }
    ratios.sort_by(f64::total_cmp);
    let rounds = ratios.len();
    let ahead = ratios.iter().filter(|r| **r >= 1.0).count();
    let (lo, hi) = (ratios[0], ratios[rounds - 1]);
    let med = median(&mut ratios);
    let spread = format!("bootherd/peer per round {med:.2}× median, {lo:.2}–{hi:.2}×");
    if ahead == rounds {
        format!("not slower: ahead in all {rounds} rounds ({spread})")
    } else if med >= 1.0 {
        format!("not slower: ahead in {ahead} of {rounds} rounds ({spread})")
    } else if ahead > 0 {
        format!("level within noise: ahead in {ahead} of {rounds} rounds ({spread})")
    } else {
        format!("**slower** in all {rounds} rounds ({spread})")
    }
}

fn good_values(row: &Row) -> Vec<f64> {
    let mut v: Vec<f64> = row
        .samples
        .iter()
        .filter(|s| s.failures == 0 || s.value > 0.0)
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}
