//! The scenarios: what each measures and the loads that drive it.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{GIB, MIB, Row, Run, Sample, Sizes, Table, dhcp_load, procstat, servers, tftp_client};
use bootherd_testkit::netns::{self, Netns};
use servers::{Peer, Programs};
use tftp_client::GetOptions;

/// One client downloading a large file, at several block and window sizes.
pub(crate) fn large(run: &Run) -> anyhow::Result<Vec<Table>> {
    let Run {
        peers,
        programs,
        files,
        ..
    } = run;
    let (reps, server, sizes) = (run.reps, run.server, run.sizes);
    let dir = files.dir.path();
    let mut tables = Vec::new();
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
        let rows = interleaved(peers, reps, &label, |peer| {
            let running = servers::start(peer, dir, programs, placement.map(|p| p.server))?;
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
            title: format!(
                "One client, {} MiB, blksize {blksize}{ws}",
                sizes.big_len >> 20
            ),
            what: "throughput of one download, verified byte for byte".into(),
            unit: "MiB/s",
            higher_is_better: true,
            rows,
        });
    }
    Ok(tables)
}

/// Many clients at once fetching one boot file.
pub(crate) fn boot_storm(run: &Run) -> anyhow::Result<Vec<Table>> {
    let Run {
        peers,
        programs,
        files,
        runtime,
        ..
    } = run;
    let (reps, server, sizes) = (run.reps, run.server, run.sizes);
    let dir = files.dir.path();
    let mut tables = Vec::new();
    let rows = interleaved(peers, reps, "boot storm", |peer| {
        let running = servers::start(peer, dir, programs, None)?;
        let sampler = procstat::RssSampler::start(running.pid());
        let cpu_before = running.cpu_seconds();
        let started = Instant::now();
        let results = runtime.block_on(storm(server, &files.boot, sizes.storm_clients));
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
        title: format!(
            "Boot storm: {} clients at once, 1 MiB each, blksize 1432",
            sizes.storm_clients
        ),
        what: "time until every transfer has finished; every byte verified".into(),
        unit: "s",
        higher_is_better: false,
        rows,
    });
    Ok(tables)
}

/// Many short transfers, from two kinds of client.
pub(crate) fn small(run: &Run) -> anyhow::Result<Vec<Table>> {
    let Run {
        peers,
        programs,
        files,
        runtime,
        ..
    } = run;
    let (reps, server, sizes) = (run.reps, run.server, run.sizes);
    let dir = files.dir.path();
    let mut tables = Vec::new();
    let Sizes { small_total, .. } = sizes;
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
            Box::new(|| runtime.block_on(small_requests(server, &files.small, sizes.small_total))),
        ),
        (
            "small requests, blocking clients",
            format!(
                "Many small requests, blocking clients: {small_total} transfers of a 512-byte file, {BLOCKING_CLIENTS} threads one after another"
            ),
            "completed transfers per second, the same load from plain blocking sockets (one thread per client, no async runtime)",
            Box::new(|| small_requests_blocking(server, &files.small, sizes.small_total)),
        ),
    ];
    for (label, title, what, load) in loads {
        let rows = interleaved(peers, reps, label, |peer| {
            let running = servers::start(peer, dir, programs, None)?;
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
    Ok(tables)
}

/// A measurement, or the reason a server cannot be measured in this scenario.
pub(crate) enum Measured {
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

pub(crate) fn dhcp_scenario(
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
