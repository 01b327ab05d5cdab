//! The driver around `bootherd-tftp`: epoll engine threads (see `engine`) receive requests,
//! give each transfer (unless in single-port mode) its own socket, and move datagrams and
//! deadlines between the sockets and the state machines. What a datagram on the listening port
//! means (new request, retransmission, restart, stranger) and who is admitted is decided by
//! the core's `Endpoint`; this module holds what the engine threads share.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootherd_telemetry::{ActiveTransfers, TftpCounters};
use bootherd_tftp::packet::{self, ErrorCode, MAX_BLKSIZE};
use bootherd_tftp::{
    Endpoint, EndpointConfig, FileSource, TransferConfig, TransferObserver, UploadTarget,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::udp::{Route, pktinfo, prepare_listener, route_to, send_with_info};

mod engine;

use engine::Engine;

/// Which local ports transfers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferPorts {
    /// A kernel-chosen ephemeral port per transfer (RFC 1350 behaviour).
    Ephemeral,
    /// A port from this inclusive range per transfer, so a firewall needs only that range open.
    Range(u16, u16),
    /// Every packet, requests and transfers, from the listening port; transfers are told apart
    /// by client address and port. Not RFC-conformant, but it is the one mode that works
    /// through NAT and stateless firewalls (dnsmasq's `--tftp-single-port`).
    Single,
}

impl std::str::FromStr for TransferPorts {
    type Err = String;

    /// `ephemeral`, `single`, or a range `LO:HI` (`LO-HI`): the one parser of the setting, for
    /// the configuration file and the flags alike.
    fn from_str(text: &str) -> Result<TransferPorts, String> {
        match text.trim() {
            "ephemeral" => Ok(TransferPorts::Ephemeral),
            "single" => Ok(TransferPorts::Single),
            range if range.contains([':', '-']) => TransferPorts::parse_range(range),
            other => Err(format!(
                "{other:?} is not a transfer port setting: use ephemeral, single, or a range LO:HI such as 30000:30100"
            )),
        }
    }
}

impl std::fmt::Display for TransferPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferPorts::Ephemeral => f.write_str("ephemeral"),
            TransferPorts::Single => f.write_str("single"),
            TransferPorts::Range(lo, hi) => write!(f, "{lo}:{hi}"),
        }
    }
}

impl TransferPorts {
    /// Parses `LO:HI` or `LO-HI`.
    pub fn parse_range(text: &str) -> Result<TransferPorts, String> {
        let (lo, hi) = text
            .split_once([':', '-'])
            .ok_or_else(|| format!("port range {text:?} must look like LO:HI, e.g. 30000:30100"))?;
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("{lo:?} is not a port number"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("{hi:?} is not a port number"))?;
        if lo == 0 || lo > hi {
            return Err(format!("port range {lo}:{hi} is empty or starts at 0"));
        }
        Ok(TransferPorts::Range(lo, hi))
    }
}

/// Driver configuration.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub transfer: TransferConfig,
    pub ports: TransferPorts,
    /// Transfers running at once; further requests are refused with "server busy" rather than
    /// queued, so a client retries instead of timing out.
    pub max_transfers: usize,
    /// Transfers one client address may run at once, so one host (a broken client, or one
    /// sending requests it never ACKs) cannot take every slot from the machines booting.
    pub max_transfers_per_client: usize,
    /// Caps blksize at the path MTU towards the client minus IP and UDP headers, so no DATA
    /// packet is ever fragmented (many PXE ROMs cannot reassemble).
    pub cap_blksize_to_mtu: bool,
    /// Engine threads moving datagrams; 0 picks one per CPU, at most four. Single-port mode
    /// runs one whatever this says.
    pub threads: usize,
}

impl TftpConfig {
    /// What the core's `Endpoint` decides with.
    fn endpoint(&self) -> EndpointConfig {
        EndpointConfig {
            transfer: self.transfer,
            max_transfers: self.max_transfers,
            max_transfers_per_client: self.max_transfers_per_client,
            single_port: self.ports == TransferPorts::Single,
            cap_blksize_to_mtu: self.cap_blksize_to_mtu,
        }
    }
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            transfer: TransferConfig::default(),
            ports: TransferPorts::Ephemeral,
            max_transfers: 1024,
            max_transfers_per_client: 64,
            cap_blksize_to_mtu: true,
            threads: 0,
        }
    }
}

/// What the server serves from and stores to.
#[derive(Debug, Clone)]
pub struct TftpService {
    pub config: TftpConfig,
    pub source: Arc<dyn FileSource>,
    pub uploads: Option<Arc<dyn UploadTarget>>,
    pub counters: Arc<TftpCounters>,
    pub active: Arc<ActiveTransfers>,
    /// Told about every transfer and refusal (machine timelines).
    pub observer: Option<Arc<dyn TransferObserver>>,
}

/// Largest datagram we accept on the listening port: a request can exceed 512 bytes with many
/// options, and in single-port mode uploads arrive here too.
const LISTEN_BUFFER: usize = MAX_BLKSIZE as usize + 4;
/// Receive queue asked for the listening socket (see `serve`).
const LISTENER_QUEUE_BYTES: usize = 4 << 20;

/// Local address and peer a route was looked up for.
type RouteKey = (Option<Ipv4Addr>, IpAddr);

/// Shared by the engine threads.
struct Shared {
    /// The listener's address (asked of the kernel once, not per transfer).
    local: SocketAddr,
    service: TftpService,
    /// Non-blocking, IP_PKTINFO; read by the engine thread that owns it, written by all.
    listener: StdUdpSocket,
    /// The client table and admission; locked once per datagram on the listening port and
    /// once when a transfer is confirmed or ends.
    endpoint: Mutex<Endpoint>,
    /// The endpoint's configuration, read without its lock to open transfers.
    endpoint_config: EndpointConfig,
    routes: Mutex<HashMap<RouteKey, (Route, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holds these locks across a panic-prone section; recover rather than cascade.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a looked-up route is reused: routes rarely change, and probing costs a socket.
const ROUTE_MEMORY: Duration = Duration::from_secs(60);

impl Shared {
    fn route(&self, local: Option<Ipv4Addr>, peer: SocketAddr) -> Option<Route> {
        let key = (local, peer.ip());
        let now = Instant::now();
        if let Some(&(route, at)) = lock(&self.routes).get(&key) {
            if now.duration_since(at) < ROUTE_MEMORY {
                return Some(route);
            }
        }
        let route = route_to(local, peer).ok()?;
        let mut routes = lock(&self.routes);
        if routes.len() > 4096 {
            routes.retain(|_, (_, at)| now.duration_since(*at) < ROUTE_MEMORY);
        }
        routes.insert(key, (route, now));
        Some(route)
    }

    /// Sends an ERROR from the listening port. Not retried: a full send buffer loses it like
    /// the network could, and the client asks again.
    fn send_error(&self, to: SocketAddr, from: Option<Ipv4Addr>, code: ErrorCode, message: &str) {
        let mut out = Vec::with_capacity(message.len() + 5);
        packet::encode_error(&mut out, code, message);
        if let Err(e) = send_with_info(
            self.listener.as_raw_fd(),
            &out,
            to,
            pktinfo(from, None).as_ref(),
        ) {
            debug!(%to, error = %e, "could not send ERROR");
        }
    }
}

/// Runs the TFTP server on `socket` until `shutdown` is cancelled. Transfers still running then
/// are told the server is going away. The work happens on the engine's own threads (see
/// `engine`); this future only starts and stops them.
pub async fn serve(
    socket: StdUdpSocket,
    service: TftpService,
    shutdown: CancellationToken,
) -> io::Result<()> {
    prepare_listener(&socket)?;
    // A boot storm is a burst: machines powered on together send their requests within
    // milliseconds, and the default queue (about 270 requests) overflows, so hundreds of
    // clients wait out their retry timeout. The kernel caps this at net.core.rmem_max.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(LISTENER_QUEUE_BYTES) {
        debug!(error = %e, "could not enlarge the TFTP listener's receive queue");
    }
    let local = socket.local_addr()?;
    info!(%local, ports = ?service.config.ports, uploads = service.uploads.is_some(), "TFTP server listening");
    let endpoint_config = service.config.endpoint();
    let shared = Arc::new(Shared {
        local,
        service,
        listener: socket,
        endpoint: Mutex::new(Endpoint::new(endpoint_config)),
        endpoint_config,
        routes: Mutex::default(),
    });
    let engine = Engine::start(&shared)?;
    shutdown.cancelled().await;
    // Joining threads blocks; the runtime's other tasks keep running meanwhile.
    if tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .is_err()
    {
        warn!("TFTP engine did not shut down cleanly");
    }
    info!(%local, "TFTP server stopped");
    Ok(())
}
