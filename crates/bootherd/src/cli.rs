//! The command line: `serve`, `tftp` and the admin commands, their flags and what they turn
//! into (the TFTP driver's configuration, the HTTP limits).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bootherd_files::DirUploads;
use bootherd_net::{TftpConfig, TftpService, TransferPorts};
use bootherd_telemetry::{ActiveTransfers, TftpCounters};
use bootherd_tftp::{
    FileSource, NegotiationLimits, TimerConfig, TransferConfig, TransferObserver, UploadTarget,
};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin;

#[derive(Debug, Parser)]
#[command(
    name = "bootherd",
    version,
    about = "Network boot that just works: ProxyDHCP, TFTP and HTTP boot in one process"
)]
pub(crate) struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "BOOTHERD_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the PXE appliance: ProxyDHCP (ports 67 and 4011), TFTP (69), and HTTP (8080) for
    /// iPXE scripts, images, the web UI, the REST API and /metrics, next to the LAN's own DHCP
    /// server. It never hands out addresses.
    Serve(ServeArgs),
    /// Run only the TFTP server over a directory: a drop-in replacement for tftpd-hpa.
    Tftp(TftpArgs),
    /// Manage images: named sets of files (kernel, initrd, ISO, bootloader) with sha256.
    Image {
        #[command(subcommand)]
        command: admin::ImageCommand,
        #[command(flatten)]
        dir: admin::DataDir,
    },
    /// Manage profiles: what a machine boots.
    Profile {
        #[command(subcommand)]
        command: admin::ProfileCommand,
        #[command(flatten)]
        dir: admin::DataDir,
    },
    /// Manage machines by MAC address: their profile and boot-once profile.
    Machine {
        #[command(subcommand)]
        command: admin::MachineCommand,
        #[command(flatten)]
        dir: admin::DataDir,
    },
    /// Set the web UI's admin password: asks for it (or reads one line from standard input)
    /// and stores its argon2 hash in DATA/admin-password.
    Password {
        /// Print the hash (for admin_password_hash in bootherd.yaml) instead of storing it.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        dir: admin::DataDir,
    },
    /// Manage API tokens for the REST API (stored hashed in DATA/api-tokens.yaml).
    Token {
        #[command(subcommand)]
        command: admin::TokenCommand,
        #[command(flatten)]
        dir: admin::DataDir,
    },
    /// Exit 0 if the server at URL answers its health check (for container HEALTHCHECKs and
    /// scripts; needs no curl).
    Health {
        /// The server's /healthz; the port follows BOOTHERD_HTTP_PORT.
        #[arg(long)]
        url: Option<String>,
    },
    /// Check the configuration, the state and the images: each profile's readiness and every
    /// problem, with the fix.
    Check {
        /// Configuration file to check too.
        #[arg(long, value_name = "FILE", env = "BOOTHERD_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        dir: admin::DataDir,
        /// Directory with iPXE bootloaders.
        #[arg(long, default_value = "/usr/lib/ipxe")]
        bootloaders: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (bootherd.yaml); flags given on the command line override it.
    #[arg(long, value_name = "FILE", env = "BOOTHERD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory: state.yaml (profiles, machines, defaults) and images/.
    #[arg(long, default_value = ".", env = "BOOTHERD_DATA")]
    pub(crate) data: PathBuf,
    /// Directory with iPXE bootloaders (undionly.kpxe, ipxe.efi, snponly.efi); the default is
    /// where Debian's ipxe package installs them.
    #[arg(long, default_value = "/usr/lib/ipxe")]
    pub(crate) bootloaders: PathBuf,
    /// Answer only on this interface (repeat for several). Default: every interface that is up,
    /// has IPv4 and is not loopback.
    #[arg(long = "interface", value_name = "NAME")]
    pub(crate) interfaces: Vec<String>,
    /// Address all listeners bind to. Keep the wildcard: DHCP requests are broadcasts.
    #[arg(long, default_value = "0.0.0.0")]
    pub(crate) bind: std::net::Ipv4Addr,
    /// ProxyDHCP port for broadcast DISCOVERs.
    #[arg(long, default_value_t = 67)]
    pub(crate) dhcp_port: u16,
    /// PXE boot-server port (UEFI asks here for its boot file).
    #[arg(long, default_value_t = 4011)]
    pub(crate) proxy_port: u16,
    /// TFTP port.
    #[arg(long, default_value_t = 69)]
    pub(crate) tftp_port: u16,
    /// HTTP port for iPXE scripts and images (and UEFI HTTP Boot), the web UI and the API.
    #[arg(long, default_value_t = 8080, env = "BOOTHERD_HTTP_PORT")]
    pub(crate) http_port: u16,
    /// DHCP client port watched for other servers' boot offers (0 disables the watch).
    #[arg(long, default_value_t = 68)]
    pub(crate) watch_port: u16,
    /// argon2 hash of the web UI's admin password (make one with `bootherd password --print`).
    /// BOOTHERD_ADMIN_PASSWORD (the password itself) and DATA/admin-password work too.
    #[arg(
        long,
        value_name = "HASH",
        env = "BOOTHERD_ADMIN_PASSWORD_HASH",
        hide_env_values = true
    )]
    pub(crate) admin_password_hash: Option<String>,
    #[command(flatten)]
    pub(crate) tftp: TftpTuning,
    #[command(flatten)]
    pub(crate) http: HttpTuning,
}

/// Limits of the HTTP side (`http:` in bootherd.yaml).
#[derive(Debug, Args)]
pub(crate) struct HttpTuning {
    /// Directory the web UI and API may import files from (repeat for several); DATA/import is
    /// always one. Nothing outside them can be imported.
    #[arg(long = "import-dir", value_name = "DIR")]
    pub(crate) import_dirs: Vec<PathBuf>,
    /// Largest file an upload or an import may add to the image store.
    #[arg(long, default_value_t = bootherd_web::DEFAULT_MAX_IMAGE_FILE_BYTES)]
    pub(crate) max_image_file_bytes: u64,
    /// Seconds an upload may send nothing before it is given up.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) upload_stall_secs: u64,
    /// Seconds a connection has to send its request headers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) http_header_timeout_secs: u64,
    /// HTTP connections served at once (the rest wait to be accepted).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) http_max_connections: u64,
    /// HTTP connections one client address may hold; more from it are closed at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) http_max_connections_per_client: u64,
}

impl HttpTuning {
    pub(crate) fn limits(&self) -> bootherd_web::HttpLimits {
        bootherd_web::HttpLimits {
            import_dirs: self.import_dirs.clone(),
            max_image_file_bytes: self.max_image_file_bytes,
            upload_stall: Duration::from_secs(self.upload_stall_secs),
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
            max_connections_per_client: usize::try_from(self.http_max_connections_per_client)
                .unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct TftpArgs {
    /// Configuration file (root, listen and the tftp: settings of bootherd.yaml); flags given
    /// on the command line override it. See examples/tftp-only.yaml.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory to serve. Requests are mapped into it ('\' and a leading '/' included); nothing
    /// outside it is ever served, symlinks included.
    #[arg(long, default_value = "images")]
    pub(crate) root: PathBuf,
    /// Address and port to listen on. The default wildcard address receives broadcast requests
    /// too; replies always come from the address each request was sent to.
    #[arg(long, default_value = "0.0.0.0:69")]
    pub(crate) listen: SocketAddr,
    #[command(flatten)]
    pub(crate) tftp: TftpTuning,
}

/// TFTP behaviour shared by `serve` and `tftp`.
#[derive(Debug, Args)]
pub(crate) struct TftpTuning {
    /// Use ports LO:HI for transfers instead of random ephemeral ports, so a firewall needs only
    /// that range open.
    #[arg(long, value_name = "LO:HI", value_parser = TransferPorts::parse_range, conflicts_with = "single_port")]
    pub(crate) port_range: Option<TransferPorts>,
    /// Send every packet from the listening port (for NAT and stateless firewalls that only let
    /// port 69 through).
    #[arg(long)]
    pub(crate) single_port: bool,
    /// Largest block size granted (RFC 2348). By default it is further capped per client to
    /// the path MTU, so packets are never fragmented.
    #[arg(long, default_value_t = 65464, value_parser = clap::value_parser!(u16).range(8..=65464))]
    pub(crate) max_blksize: u16,
    /// Do not cap the block size to the path MTU (only for clients that reassemble fragments).
    #[arg(long)]
    pub(crate) no_mtu_cap: bool,
    /// Largest window granted (RFC 7440).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) max_windowsize: u16,
    /// Transfers running at once; more are refused with "server busy" until one ends.
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_transfers: usize,
    /// Concurrent transfers one client address may run; more from it are refused with
    /// "server busy", so one host cannot take every slot.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_transfers_per_client: u64,
    /// Accept write requests into this directory (off by default: read-only server).
    #[arg(long, value_name = "DIR")]
    pub(crate) upload_dir: Option<PathBuf>,
    /// Largest upload accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, requires = "upload_dir")]
    pub(crate) max_upload_bytes: u64,
    /// Let uploads replace existing files (otherwise: "file already exists").
    #[arg(long, requires = "upload_dir")]
    pub(crate) allow_overwrite: bool,
    /// Retransmissions without an answer before a client is given up.
    #[arg(long, default_value_t = TimerConfig::default().max_retries)]
    pub(crate) max_retries: u32,
    /// Threads moving TFTP datagrams; 0 picks one per CPU (at most four); single-port mode
    /// runs one. One thread moves well over 100,000 packets per second.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub(crate) tftp_threads: u16,
}

impl TftpTuning {
    pub(crate) fn config(&self) -> TftpConfig {
        let ports = match (self.single_port, self.port_range) {
            (true, _) => TransferPorts::Single,
            (false, Some(range)) => range,
            (false, None) => TransferPorts::Ephemeral,
        };
        TftpConfig {
            transfer: TransferConfig {
                limits: NegotiationLimits {
                    max_blksize: self.max_blksize,
                    max_windowsize: self.max_windowsize,
                    ..NegotiationLimits::default()
                },
                timer: TimerConfig {
                    max_retries: self.max_retries,
                    ..TimerConfig::default()
                },
            },
            ports,
            max_transfers: self.max_transfers,
            max_transfers_per_client: usize::try_from(self.max_transfers_per_client)
                .unwrap_or(usize::MAX),
            cap_blksize_to_mtu: !self.no_mtu_cap,
            threads: usize::from(self.tftp_threads),
        }
    }

    pub(crate) fn uploads(&self) -> anyhow::Result<Option<Arc<dyn UploadTarget>>> {
        let Some(dir) = &self.upload_dir else {
            return Ok(None);
        };
        let uploads = DirUploads::new(dir, self.max_upload_bytes, self.allow_overwrite)
            .with_context(|| format!("upload directory {}", dir.display()))?;
        Ok(Some(Arc::new(uploads)))
    }

    pub(crate) fn service(
        &self,
        source: Arc<dyn FileSource>,
        observer: Option<Arc<dyn TransferObserver>>,
    ) -> anyhow::Result<TftpService> {
        Ok(TftpService {
            config: self.config(),
            source,
            uploads: self.uploads()?,
            counters: Arc::new(TftpCounters::default()),
            active: Arc::new(ActiveTransfers::default()),
            observer,
        })
    }
}
