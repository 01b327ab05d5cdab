//! The driver around `bootherd-tftp`: epoll engine threads (see `engine`) receive requests,
//! give each transfer (unless in single-port mode) its own socket, and move datagrams and
//! deadlines between the sockets and the state machines. Admission (the transfer limits, in
//! total and per client) is decided here for now; the protocol itself is the core's.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootherd_telemetry::{ActiveTransfers, TftpCounters};
use bootherd_tftp::packet::{self, ErrorCode, MAX_BLKSIZE, MIN_BLKSIZE};
use bootherd_tftp::{
    ErrorRateLimiter, FileSource, Packet, Refusal, Transfer, TransferConfig, TransferObserver,
    UploadTarget, Uploads, accept,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::udp::{
    Arrival, Route, bind_transfer, pktinfo, prepare_listener, route_to, send_with_info,
};

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
/// IPv4 + UDP headers, subtracted from the MTU for the blksize cap.
const IP_UDP_HEADERS: u32 = 20 + 8;
/// TFTP DATA header.
const DATA_HEADER: u32 = 4;

struct Entry {
    request: Vec<u8>,
    /// The engine thread running the transfer, and the transfer's id there.
    worker: usize,
    generation: u64,
    /// Set once the client has answered our first reply: from then on an identical request
    /// from the same address and port is a new transfer, not a lost-reply retransmission
    /// (clients reuse ports quickly during a boot storm).
    confirmed: Arc<AtomicBool>,
}

type Table = Arc<Mutex<HashMap<SocketAddr, Entry>>>;
/// Local address and peer a route was looked up for.
type RouteKey = (Option<Ipv4Addr>, IpAddr);

/// An accepted request; the engine gives it a socket.
struct Opened {
    transfer: Transfer,
    /// The source address to set on every datagram; `None` when routing picks it anyway.
    source: Option<Ipv4Addr>,
}

/// Shared by the engine threads.
struct Shared {
    /// The listener's address (asked of the kernel once, not per transfer).
    local: SocketAddr,
    service: TftpService,
    /// Non-blocking, IP_PKTINFO; read by the engine thread that owns it, written by all.
    listener: StdUdpSocket,
    table: Table,
    permits: Arc<Semaphore>,
    /// Transfers running per client address.
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    strangers: Mutex<ErrorRateLimiter>,
    generation: AtomicU64,
    routes: Mutex<HashMap<RouteKey, (Route, Instant)>>,
}

/// One transfer's place in its client's share, given back when the transfer ends.
#[derive(Debug)]
struct ClientShare {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientShare {
    fn take(
        table: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<ClientShare> {
        let mut counts = lock(table);
        let count = counts.entry(ip).or_insert(0);
        if *count >= limit.max(1) {
            return None;
        }
        *count += 1;
        Some(ClientShare {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut counts = lock(&self.table);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holds these locks across a panic-prone section; recover rather than cascade.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Largest window (windowsize × blksize) in single-port mode: what one forged datagram can make
/// the server send to someone else.
const SINGLE_PORT_WINDOW_BYTES: u32 = 16 * 1024;

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

    /// Sends an ERROR to someone who is not a client of a running transfer, within the rate
    /// limit. Never answers an ERROR with an ERROR (RFC 1350 §7).
    fn reply_to_stranger(
        &self,
        to: SocketAddr,
        from: Option<Ipv4Addr>,
        code: ErrorCode,
        message: &str,
    ) {
        if !lock(&self.strangers).allow(Instant::now()) {
            debug!(%to, %code, message, "ERROR reply suppressed by rate limit");
            return;
        }
        self.send_error(to, from, code, message);
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
    let shared = Arc::new(Shared {
        local,
        permits: Arc::new(Semaphore::new(service.config.max_transfers.max(1))),
        per_client: Arc::default(),
        service,
        listener: socket,
        table: Arc::default(),
        strangers: Mutex::new(ErrorRateLimiter::default()),
        generation: AtomicU64::new(0),
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

impl Shared {
    /// Removes the table entry of transfer `generation`, unless a newer transfer for the same
    /// client replaced it.
    fn forget(&self, client: SocketAddr, generation: u64) {
        let mut table = lock(&self.table);
        if table
            .get(&client)
            .is_some_and(|entry| entry.generation == generation)
        {
            table.remove(&client);
        }
    }

    /// Accepts a request. Opening is cheap by the FileSource contract (no bulk reads), so it runs on the engine
    /// thread.
    fn open(&self, request: &[u8], write: bool, arrival: &Arrival) -> Result<Opened, Refusal> {
        let service = &self.service;
        let mut config = service.config.transfer;
        let route = self.route(arrival.local, arrival.from);
        // Replies must come from the address the request went to; say so per datagram only
        // where routing would not pick it anyway.
        let source = arrival
            .local
            .filter(|&local| route.is_none_or(|route| route.source != Some(local)));
        // In single-port mode the transfer's port is the well-known one, so a forged ACK 0 needs
        // no guessing: the window it buys is kept small.
        if service.config.ports == TransferPorts::Single {
            config.limits.max_window_bytes =
                config.limits.max_window_bytes.min(SINGLE_PORT_WINDOW_BYTES);
        }
        if service.config.cap_blksize_to_mtu && asks_for_blksize(request) {
            if let Some(Route { mtu, .. }) = route {
                let cap = mtu.saturating_sub(IP_UDP_HEADERS + DATA_HEADER);
                let cap = cap.clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE)) as u16;
                config.limits.max_blksize = config.limits.max_blksize.min(cap);
            }
        }
        let packet = packet::decode(request).map_err(|e| Refusal {
            code: ErrorCode::IllegalOperation,
            message: e.to_string(),
        })?;
        let (Packet::Rrq(request) | Packet::Wrq(request)) = packet else {
            return Err(Refusal {
                code: ErrorCode::IllegalOperation,
                message: "not a request".into(),
            });
        };
        let uploads = match &service.uploads {
            Some(target) => Uploads::Enabled(target.as_ref()),
            None => Uploads::Disabled,
        };
        let accepted = accept(
            Instant::now(),
            &request,
            write,
            &config,
            service.source.as_ref(),
            uploads,
        )?;
        Ok(Opened {
            transfer: accepted,
            source,
        })
    }
}

/// Whether a request carries a blksize option: only then does the MTU matter.
fn asks_for_blksize(request: &[u8]) -> bool {
    match packet::decode(request) {
        Ok(Packet::Rrq(r) | Packet::Wrq(r)) => r
            .options
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("blksize")),
        _ => false,
    }
}

/// Binds a transfer socket. It is always bound to the wildcard address, even when the
/// listener is bound to one address: a socket bound to a unicast address does not receive
/// datagrams sent to the broadcast address, and old clients (Cisco access points) send their
/// ACKs there. Replies still leave from the address the request was sent to (IP_PKTINFO).
fn bind_transfer_socket(ports: TransferPorts, listener: SocketAddr) -> io::Result<StdUdpSocket> {
    let ip: IpAddr = match listener {
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        _ => Ipv4Addr::UNSPECIFIED.into(),
    };
    match ports {
        TransferPorts::Range(lo, hi) => {
            let span = u32::from(hi - lo) + 1;
            // Start at a random place so concurrent transfers rarely collide, then walk the
            // whole range once.
            let offset = fastrand::u32(0..span);
            for i in 0..span {
                let port = lo + ((offset + i) % span) as u16;
                match bind_transfer(SocketAddr::new(ip, port)) {
                    Ok(socket) => return Ok(socket),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("all ports {lo}-{hi} are in use"),
            ))
        }
        _ => bind_transfer(SocketAddr::new(ip, 0)),
    }
}
