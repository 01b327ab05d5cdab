//! A running transfer's socket and send path: receiving on its own port, sending (and waiting
//! for room when the socket buffer is full), arming its deadline, and the sockets of finished
//! transfers kept for the next ones.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bootherd_telemetry::TransferProgress;
use bootherd_tftp::{PortGuard, Transfer, TransferId, packet};
use nix::libc;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use tracing::debug;

use super::worker::Worker;
use crate::tftp::{TransferPorts, lock};
use crate::udp::{bind_transfer, send_with_info};

/// A running transfer.
pub(super) struct Slot {
    pub(super) transfer: Transfer,
    /// `None` in single-port mode: datagrams then come through the listener and replies leave
    /// from it.
    pub(super) socket: Option<StdUdpSocket>,
    pub(super) client: SocketAddr,
    /// The source address for every datagram (the one the client sent its request to), built
    /// once; `None` when routing picks that address anyway.
    pub(super) info: Option<libc::in_pktinfo>,
    pub(super) out: Vec<u8>,
    /// `out` holds a datagram the socket had no room for; it goes first once writable.
    pub(super) unsent: bool,
    /// Whether the socket is registered for writability (only while `unsent`).
    pub(super) watching_writable: bool,
    /// The deadline a timer entry is queued for. Re-armed only when the transfer's deadline
    /// moves earlier: progress moves it later every packet, and a timer that fires early just
    /// finds nothing due.
    pub(super) armed: Option<Instant>,
    /// ERROR 5 replies to strangers on this transfer's port.
    pub(super) guard: PortGuard,
    /// Whether the endpoint has been told the client answered (told once).
    pub(super) confirmed: bool,
    pub(super) progress: Arc<TransferProgress>,
    pub(super) active_id: u64,
    pub(super) started: Instant,
}

impl Slot {
    /// Sends `out` from this transfer's port and the address the client used.
    pub(super) fn send(&self, listener: &StdUdpSocket) -> io::Result<()> {
        let socket = self.socket.as_ref().unwrap_or(listener);
        send_with_info(
            socket.as_raw_fd(),
            &self.out,
            self.client,
            self.info.as_ref(),
        )
    }

    pub(super) fn local_port(&self, listener: SocketAddr) -> u16 {
        match &self.socket {
            Some(socket) => socket.local_addr().map_or(0, |a| a.port()),
            None => listener.port(),
        }
    }

    pub(super) fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        match packet::decode(datagram) {
            Ok(packet) => self.transfer.handle_packet(now, &packet),
            Err(e) => {
                debug!(client = %self.client, error = %e, "undecodable packet from client ignored")
            }
        }
    }

    /// Takes one datagram from the transfer's own socket; true if the client sent it (the
    /// transfer then has something to act on).
    pub(super) fn receive(&mut self, buf: &mut [u8], now: Instant) -> bool {
        let Some(socket) = &self.socket else {
            return false;
        };
        match socket.recv_from(buf) {
            Ok((len, from)) if from == self.client => {
                self.handle_datagram(&buf[..len], now);
                true
            }
            Ok((len, from)) => {
                let mut out = Vec::new();
                if self.guard.stranger(now, &buf[..len], &mut out) {
                    let _ = send_with_info(socket.as_raw_fd(), &out, from, self.info.as_ref());
                }
                debug!(client = %self.client, stranger = %from, "packet from unknown transfer ID");
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                debug!(client = %self.client, error = %e, "TFTP receive error");
                false
            }
        }
    }

    /// Sends what the transfer has to send; stops when the socket has no room.
    fn transmit(&mut self, listener: &StdUdpSocket, now: Instant) {
        loop {
            if !self.unsent && !self.transfer.poll_transmit(now, &mut self.out) {
                break;
            }
            match self.send(listener) {
                Ok(()) => self.unsent = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.socket.is_some() => {
                    self.unsent = true;
                    break;
                }
                Err(e) => {
                    // Treated like a lost packet: the retransmission timer deals with it.
                    self.unsent = false;
                    debug!(client = %self.client, error = %e, "TFTP send failed");
                }
            }
        }
    }

    /// Watches the socket for room exactly while a datagram waits for it.
    fn watch_writable(&mut self, epoll: &Epoll, id: TransferId) {
        if self.unsent == self.watching_writable {
            return;
        }
        let Some(socket) = &self.socket else {
            return;
        };
        let mut flags = EpollFlags::EPOLLIN;
        if self.unsent {
            flags |= EpollFlags::EPOLLOUT;
        }
        match epoll.modify(socket, &mut EpollEvent::new(flags, id.0)) {
            Ok(()) => self.watching_writable = self.unsent,
            // Without the writable event the retransmission timer resends instead.
            Err(e) => debug!(client = %self.client, error = %e, "cannot watch for writability"),
        }
    }
}

impl Worker {
    /// Lets the transfer act on what happened: due timeout, datagrams to send, its end.
    pub(super) fn service(&mut self, id: TransferId, now: Instant) {
        let Some(slot) = self.transfers.get_mut(&id) else {
            return;
        };
        if slot
            .transfer
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            slot.transfer.handle_timeout(now);
        }
        slot.transmit(&self.shared.listener, now);
        slot.progress
            .bytes
            .store(slot.transfer.stats().bytes, Ordering::Relaxed);
        if slot.transfer.client_confirmed() && !slot.confirmed {
            slot.confirmed = true;
            lock(&self.shared.endpoint).confirm(id);
        }
        if let Some(outcome) = slot.transfer.outcome() {
            let outcome = outcome.clone();
            return self.finish(id, outcome);
        }
        if !slot.unsent {
            // The datagram is on its way; read the next block while the client handles it.
            slot.transfer.prepare_next();
        }
        slot.watch_writable(&self.epoll, id);
        if let Some(deadline) = slot.transfer.poll_timeout() {
            if slot.armed.is_none_or(|at| deadline < at) {
                self.timers.push(Reverse((deadline, id)));
                slot.armed = Some(deadline);
            }
        }
    }
}

/// Sockets of finished transfers, oldest first, each with the client it last served. A
/// socket's life (socket, bind, epoll add, close) cost 7 µs on this machine, a quarter of a
/// small transfer; taking one from here costs an epoll add.
pub(super) struct IdleSockets {
    sockets: VecDeque<IdleSocket>,
    capacity: usize,
}

/// The socket of a finished transfer, kept for another.
struct IdleSocket {
    socket: StdUdpSocket,
    last_client: SocketAddr,
    since: Instant,
}

/// How long a socket rests before it serves another transfer.
pub(super) const IDLE_REST: Duration = Duration::from_millis(10);

/// At 10 ms rest, 256 sockets cover 25,000 transfers a second.
const IDLE_SOCKETS: usize = 256;

impl IdleSockets {
    /// None kept for a port range of fewer than 1024 ports: there idle sockets would hold
    /// ports that another thread may need.
    pub(super) fn new(ports: TransferPorts) -> IdleSockets {
        let capacity = match ports {
            TransferPorts::Ephemeral => IDLE_SOCKETS,
            TransferPorts::Range(lo, hi) if hi - lo >= 1023 => IDLE_SOCKETS,
            _ => 0,
        };
        IdleSockets {
            sockets: VecDeque::new(),
            capacity,
        }
    }

    /// A socket for a new transfer of `client`: the oldest that has rested a moment and did
    /// not just serve this very client address and port. Late packets of an earlier transfer
    /// (a duplicate ACK answering our last retransmission) then find either an idle socket or
    /// a transfer of another client, which answers them as an unknown TID; they cannot pass
    /// for the new transfer's.
    pub(super) fn take(&mut self, client: SocketAddr, now: Instant) -> Option<StdUdpSocket> {
        let index = self
            .sockets
            .iter()
            .take(4)
            .take_while(|idle| now.duration_since(idle.since) >= IDLE_REST)
            .position(|idle| idle.last_client != client)?;
        self.sockets.remove(index).map(|idle| idle.socket)
    }

    /// Keeps a finished transfer's socket, out of the epoll set while idle (datagrams that
    /// arrive meanwhile wait in its queue); closes it when there are enough.
    pub(super) fn keep(&mut self, epoll: &Epoll, socket: StdUdpSocket, client: SocketAddr) {
        if self.sockets.len() < self.capacity && epoll.delete(&socket).is_ok() {
            self.sockets.push_back(IdleSocket {
                socket,
                last_client: client,
                since: Instant::now(),
            });
        }
    }
}

/// Binds a transfer socket. It is always bound to the wildcard address, even when the
/// listener is bound to one address: a socket bound to a unicast address does not receive
/// datagrams sent to the broadcast address, and old clients (Cisco access points) send their
/// ACKs there. Replies still leave from the address the request was sent to (IP_PKTINFO).
pub(super) fn bind_transfer_socket(
    ports: TransferPorts,
    listener: SocketAddr,
) -> io::Result<StdUdpSocket> {
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
