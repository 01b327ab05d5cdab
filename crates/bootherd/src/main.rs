//! bootherd: the binary. Wiring only: command line, logging, sockets, signals, shutdown.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bootherd_net::{TftpConfig, TftpCounters, TftpService, TransferPorts};
use bootherd_tftp::{DirSource, DirUploads, NegotiationLimits, TimerConfig, TransferConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "bootherd",
    version,
    about = "Network boot that just works: ProxyDHCP, TFTP and HTTP boot in one process"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "BOOTHERD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run only the TFTP server over a directory: a drop-in replacement for tftpd-hpa.
    Tftp(TftpArgs),
}

#[derive(Debug, Args)]
struct TftpArgs {
    /// Directory to serve. Requests are mapped into it ('\' and a leading '/' included); nothing
    /// outside it is ever served, symlinks included.
    #[arg(long, default_value = "images")]
    root: PathBuf,
    /// Address and port to listen on. The default wildcard address receives broadcast requests
    /// too; replies always come from the address each request was sent to.
    #[arg(long, default_value = "0.0.0.0:69")]
    listen: SocketAddr,
    /// Use ports LO:HI for transfers instead of random ephemeral ports, so a firewall needs only
    /// that range open.
    #[arg(long, value_name = "LO:HI", value_parser = TransferPorts::parse_range, conflicts_with = "single_port")]
    port_range: Option<TransferPorts>,
    /// Send every packet from the listening port (for NAT and stateless firewalls that only let
    /// port 69 through).
    #[arg(long)]
    single_port: bool,
    /// Largest block size granted (RFC 2348). By default it is further capped per client to
    /// the path MTU, so packets are never fragmented.
    #[arg(long, default_value_t = 65464, value_parser = clap::value_parser!(u16).range(8..=65464))]
    max_blksize: u16,
    /// Do not cap the block size to the path MTU (only for clients that reassemble fragments).
    #[arg(long)]
    no_mtu_cap: bool,
    /// Largest window granted (RFC 7440).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    max_windowsize: u16,
    /// Transfers running at once; more are refused with "server busy" until one ends.
    #[arg(long, default_value_t = 1024)]
    max_transfers: usize,
    /// Accept write requests into this directory (off by default: read-only server).
    #[arg(long, value_name = "DIR")]
    upload_dir: Option<PathBuf>,
    /// Largest upload accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, requires = "upload_dir")]
    max_upload_bytes: u64,
    /// Let uploads replace existing files (otherwise: "file already exists").
    #[arg(long, requires = "upload_dir")]
    allow_overwrite: bool,
    /// Retransmissions without an answer before a client is given up.
    #[arg(long, default_value_t = TimerConfig::default().max_retries)]
    max_retries: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootherd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Tftp(args) => runtime.block_on(run_tftp(args)),
    }
}

/// Every transfer holds a socket; the usual soft limit of 1024 descriptors would cap a boot
/// storm well below what the machine can serve.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

async fn run_tftp(args: TftpArgs) -> anyhow::Result<()> {
    let source = DirSource::new(&args.root).with_context(|| {
        format!(
            "cannot serve {}: create the directory or pass --root DIR",
            args.root.display()
        )
    })?;
    let uploads = match &args.upload_dir {
        Some(dir) => Some(Arc::new(
            DirUploads::new(dir, args.max_upload_bytes, args.allow_overwrite)
                .with_context(|| format!("upload directory {}", dir.display()))?,
        ) as Arc<dyn bootherd_tftp::UploadTarget>),
        None => None,
    };
    let ports = match (args.single_port, args.port_range) {
        (true, _) => TransferPorts::Single,
        (false, Some(range)) => range,
        (false, None) => TransferPorts::Ephemeral,
    };
    let config = TftpConfig {
        transfer: TransferConfig {
            limits: NegotiationLimits {
                max_blksize: args.max_blksize,
                max_windowsize: args.max_windowsize,
                ..NegotiationLimits::default()
            },
            timer: TimerConfig {
                max_retries: args.max_retries,
                ..TimerConfig::default()
            },
        },
        ports,
        max_transfers: args.max_transfers,
        cap_blksize_to_mtu: !args.no_mtu_cap,
    };
    let socket = bind_udp(args.listen)?;
    info!(root = %source.root().display(), listen = %socket.local_addr()?, "serving TFTP");
    let service = TftpService {
        config,
        source: Arc::new(source),
        uploads,
        counters: Arc::new(TftpCounters::default()),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(bootherd_net::serve_tftp(socket, service, shutdown.clone()));
    wait_for_signal().await?;
    info!("shutting down");
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(joined) => joined.context("TFTP server task")?.context("TFTP server")?,
        Err(_) => warn!("transfers did not stop within 5 s; exiting anyway"),
    }
    Ok(())
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; or use --listen with a higher port)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another TFTP server, e.g. tftpd-hpa or dnsmasq, already uses it: stop it or pick another --listen port)"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
