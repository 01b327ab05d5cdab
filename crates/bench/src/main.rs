//! bootherd-bench: runs the same TFTP and ProxyDHCP scenarios against bootherd and the servers
//! people run today (tftpd-hpa, atftpd, dnsmasq), one server at a time on identical terms, and
//! writes a results table. Run it through `bench/run.sh`, which installs the peers.

mod dhcp_load;
mod procstat;
mod report;
mod scenarios;
mod servers;
mod tftp_client;

use report::render;
use scenarios::{boot_storm, dhcp_scenario, large, small};

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use bootherd_testkit::pattern;
use clap::Parser;
use servers::{Peer, Programs};

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

/// How much each scenario moves (`--quick` shrinks everything).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    big_len: usize,
    storm_clients: usize,
    small_total: i64,
    dhcp_total: u64,
}

/// What every scenario runs with.
struct Run {
    peers: Vec<Peer>,
    programs: Programs,
    files: Files,
    reps: usize,
    server: SocketAddr,
    runtime: tokio::runtime::Runtime,
    sizes: Sizes,
}

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
    let sizes = if cli.quick {
        Sizes {
            big_len: 4 << 20,
            storm_clients: 50,
            small_total: 500,
            dhcp_total: 500,
        }
    } else {
        Sizes {
            big_len: 100 << 20,
            storm_clients: 1000,
            small_total: 40_000,
            dhcp_total: 20_000,
        }
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
        big: pattern(sizes.big_len),
        boot: pattern(1 << 20),
        small: pattern(512),
        dir,
    };
    fs::write(files.dir.path().join("big.bin"), &files.big)?;
    fs::write(files.dir.path().join("boot.bin"), &files.boot)?;
    fs::write(files.dir.path().join("small.bin"), &files.small)?;

    let run = Run {
        peers,
        programs,
        files,
        reps,
        server: servers::ADDRESS.parse()?,
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        sizes,
    };
    let wanted = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    let mut tables = Vec::new();
    if wanted("large") {
        tables.extend(large(&run)?);
    }
    if wanted("storm") {
        tables.extend(boot_storm(&run)?);
    }
    if wanted("small") {
        tables.extend(small(&run)?);
    }
    // ProxyDHCP, bootherd against dnsmasq in proxy mode.
    let dhcp_peers: Vec<Peer> = run
        .peers
        .iter()
        .copied()
        .filter(|p| matches!(p, Peer::Bootherd | Peer::Baseline | Peer::Dnsmasq))
        .collect();
    if !dhcp_peers.is_empty() && wanted("dhcp") {
        tables.push(dhcp_scenario(
            &dhcp_peers,
            &run.programs,
            run.files.dir.path(),
            run.reps,
            run.sizes.dhcp_total,
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
