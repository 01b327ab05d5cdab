//! One engine thread: its epoll loop, the datagrams it reads on the listening port (what they
//! mean is the `Endpoint`'s decision), the commands other threads send it, and the transfers
//! it runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Instant, SystemTime};

use bootherd_telemetry::TransferProgress;
use bootherd_tftp::packet::{self, ErrorCode};
use bootherd_tftp::{
    Busy, ListenerEvent, NewRequest, Outcome, PortGuard, Refusal, Request, Running, Stray,
    StrayCause, TransferId,
};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use tracing::{debug, error, warn};

use super::slot::{IdleSockets, Slot};
use super::{Command, DOORBELL, Doorbell, EVENTS_PER_WAIT, Incoming, LISTENER, Peer};
use crate::tftp::{LISTEN_BUFFER, Shared, TransferPorts, lock};
use crate::udp::{Arrival, pktinfo, recv_with_info};

/// One engine thread's state.
pub(super) struct Worker {
    index: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) epoll: Epoll,
    doorbell: Arc<Doorbell>,
    inbox: mpsc::Receiver<Command>,
    /// The other threads by index (`None` at this one's).
    peers: Vec<Option<Peer>>,
    stopping: Arc<AtomicBool>,
    pub(super) transfers: HashMap<TransferId, Slot>,
    /// Deadlines by transfer; an entry is live only while it equals its slot's `armed`.
    pub(super) timers: BinaryHeap<Reverse<(Instant, TransferId)>>,
    /// One receive buffer for all of this thread's transfers.
    recv_buf: Vec<u8>,
    pub(super) idle: IdleSockets,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        shared: Arc<Shared>,
        epoll: Epoll,
        doorbell: Arc<Doorbell>,
        inbox: mpsc::Receiver<Command>,
        stopping: Arc<AtomicBool>,
    ) -> Worker {
        let idle = IdleSockets::new(shared.service.config.ports);
        Worker {
            index,
            shared,
            epoll,
            doorbell,
            inbox,
            peers: Vec::new(),
            stopping,
            transfers: HashMap::new(),
            timers: BinaryHeap::new(),
            recv_buf: vec![0u8; LISTEN_BUFFER],
            idle,
        }
    }

    pub(super) fn index(&self) -> usize {
        self.index
    }

    pub(super) fn set_peers(&mut self, peers: Vec<Option<Peer>>) {
        self.peers = peers;
    }

    pub(super) fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        loop {
            let ready = match self.epoll.wait(&mut events, self.wait_timeout()) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    // Only a programming error gets here (EBADF, EINVAL); end cleanly rather
                    // than spin.
                    error!(error = %e, "TFTP engine cannot wait for its sockets; ending its transfers");
                    self.shut_down();
                    return;
                }
            };
            let now = Instant::now();
            // The listener goes last: a client that sent its final ACK and at once a new
            // request from the same port must find the old transfer finished, not have the
            // request taken for a retransmission of it.
            let mut listener_ready = false;
            for event in &events[..ready] {
                match event.data() {
                    DOORBELL => self.doorbell.answer(),
                    LISTENER => listener_ready = true,
                    id if event.events().contains(EpollFlags::EPOLLOUT) => {
                        self.service(TransferId(id), now);
                        if event.events().contains(EpollFlags::EPOLLIN) {
                            self.receive(TransferId(id), now);
                        }
                    }
                    id => self.receive(TransferId(id), now),
                }
            }
            if listener_ready {
                self.listener_readable(now);
            }
            if self.stopping.load(Ordering::SeqCst) {
                self.shut_down();
                return;
            }
            // A disconnected inbox needs no handling: `stopping` is how a thread is told to end.
            while let Ok(command) = self.inbox.try_recv() {
                self.command(command, now);
            }
            self.expire(Instant::now());
        }
    }

    fn wait_timeout(&self) -> EpollTimeout {
        let Some(Reverse((deadline, _))) = self.timers.peek() else {
            return EpollTimeout::NONE;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up: waking a little late is harmless, waking early costs a turn.
        let millis = left.as_micros().div_ceil(1000);
        EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX)
    }

    /// Takes one datagram from the listening socket (level-triggered: the next `epoll_wait`
    /// reports the socket again if more are queued).
    fn listener_readable(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.recv_buf);
        match recv_with_info(self.shared.listener.as_raw_fd(), &mut buf) {
            Ok((len, arrival)) => self.listener_datagram(&buf[..len], arrival, now),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // ICMP errors from earlier sends surface here (ECONNREFUSED); they concern one
            // peer, not the server.
            Err(e) => debug!(error = %e, "receive error on TFTP listener"),
        }
        self.recv_buf = buf;
    }

    /// Does what the endpoint decides about a datagram on the listening port.
    fn listener_datagram(&mut self, datagram: &[u8], arrival: Arrival, now: Instant) {
        let shared = self.shared.clone();
        let client = arrival.from;
        let event = lock(&shared.endpoint).handle_listener(now, client, datagram, self.index);
        match event {
            ListenerEvent::Request(request) => self.new_request(request, &arrival, now),
            ListenerEvent::Repeated(Running { id, owner }) => {
                let request = Box::new(Incoming {
                    datagram: datagram.to_vec(),
                    arrival,
                });
                self.dispatch(owner, Command::RepeatedRequest { id, request }, now);
            }
            ListenerEvent::Deliver(Running { id, owner }) => {
                let datagram = datagram.to_vec();
                self.dispatch(owner, Command::Packet { id, datagram }, now);
            }
            ListenerEvent::Reply(stray) => {
                log_stray(&stray, arrival);
                shared.send_error(client, arrival.local, stray.code, &stray.message);
            }
            ListenerEvent::Suppressed(stray) => {
                log_stray(&stray, arrival);
                debug!(%client, code = %stray.code, message = %stray.message, "ERROR reply suppressed by rate limit");
            }
            ListenerEvent::Ignore => {}
        }
    }

    fn new_request(&mut self, new: NewRequest<'_>, arrival: &Arrival, now: Instant) {
        if let Some(Running { id, owner }) = new.replaces {
            self.dispatch(owner, Command::Supersede { id }, now);
        }
        match new.admission {
            Ok(id) => self.start(id, &new.request, new.write, arrival, now),
            Err(busy) => self.busy(&busy, &new.request, arrival),
        }
    }

    /// Refuses a request the server has no room for.
    fn busy(&self, busy: &Busy, request: &Request<'_>, arrival: &Arrival) {
        let shared = &self.shared;
        warn!(
            client = %arrival.from,
            file = %request.filename,
            limit = busy.limit,
            reason = busy.reason,
            "TFTP request refused: {}",
            busy.message
        );
        shared
            .service
            .counters
            .refused
            .fetch_add(1, Ordering::Relaxed);
        shared.send_error(arrival.from, arrival.local, Busy::CODE, &busy.message);
    }

    /// Runs `command` here if `worker` is this thread, else queues it there.
    fn dispatch(&mut self, worker: usize, command: Command, now: Instant) {
        if worker == self.index {
            return self.command(command, now);
        }
        let Some(Some(peer)) = self.peers.get(worker) else {
            return;
        };
        if peer.commands.send(command).is_err() {
            // Threads end only when the server stops.
            debug!(worker, "TFTP engine thread has ended; datagram dropped");
            return;
        }
        peer.doorbell.ring();
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Packet { id, datagram } => {
                if let Some(slot) = self.transfers.get_mut(&id) {
                    slot.handle_datagram(&datagram, now);
                    self.service(id, now);
                }
            }
            Command::RepeatedRequest { id, request } => {
                // Another thread may have read the request while the client's last ACK, sent
                // before it, still waited on the transfer's socket: take that ACK first.
                self.receive(id, now);
                let confirmed = lock(&self.shared.endpoint).is_confirmed(id);
                match self.transfers.get_mut(&id) {
                    Some(slot) if !confirmed => {
                        slot.transfer.handle_repeated_request();
                        self.service(id, now);
                    }
                    // The same request again once the transfer had its answer: the client
                    // starts over from the same port.
                    Some(_) => {
                        self.finish(id, Outcome::Superseded);
                        self.listener_datagram(&request.datagram, request.arrival, now);
                    }
                    None => self.listener_datagram(&request.datagram, request.arrival, now),
                }
            }
            // No ERROR: the new transfer's client is at this very address.
            Command::Supersede { id } => self.finish(id, Outcome::Superseded),
        }
    }

    /// Opens an admitted request and runs its transfer on this thread.
    fn start(
        &mut self,
        id: TransferId,
        request: &Request<'_>,
        write: bool,
        arrival: &Arrival,
        now: Instant,
    ) {
        let shared = self.shared.clone();
        let service = &shared.service;
        let client = arrival.from;
        let route = shared.route(arrival.local, client);
        // Replies must come from the address the request went to; say so per datagram only
        // where routing would not pick it anyway.
        let source = arrival
            .local
            .filter(|&local| route.is_none_or(|route| route.source != Some(local)));
        let opened = shared.endpoint_config.open(
            now,
            request,
            write,
            route.map(|route| route.mtu),
            service.source.as_ref(),
            service.uploads.as_deref(),
        );
        let transfer = match opened {
            Ok(transfer) => transfer,
            Err(refusal) => return self.refuse(id, request, write, arrival, &refusal),
        };
        let socket = match self.transfer_socket(id, client, now) {
            Ok(socket) => socket,
            Err(refusal) => return self.refuse(id, request, write, arrival, &refusal),
        };
        let counters = &service.counters;
        counters.started.fetch_add(1, Ordering::Relaxed);
        counters.active.fetch_add(1, Ordering::Relaxed);
        let (active_id, progress) = service.active.add(TransferProgress {
            client,
            file: transfer.params().filename.to_string(),
            write: transfer.is_write(),
            size: transfer.params().size,
            started: SystemTime::now(),
            bytes: AtomicU64::new(0),
        });
        self.transfers.insert(
            id,
            Slot {
                out: Vec::with_capacity(usize::from(transfer.params().blksize) + 4),
                transfer,
                socket,
                client,
                info: pktinfo(source, None),
                unsent: false,
                watching_writable: false,
                armed: None,
                guard: PortGuard::default(),
                confirmed: false,
                progress,
                active_id,
                started: Instant::now(),
            },
        );
        self.service(id, now);
    }

    /// A socket for transfer `id`, watched by this thread's epoll; `None` in single-port mode.
    fn transfer_socket(
        &mut self,
        id: TransferId,
        client: std::net::SocketAddr,
        now: Instant,
    ) -> Result<Option<std::net::UdpSocket>, Refusal> {
        let ports = self.shared.service.config.ports;
        if ports == TransferPorts::Single {
            return Ok(None);
        }
        let socket = match self.idle.take(client, now) {
            Some(socket) => socket,
            None => super::slot::bind_transfer_socket(ports, self.shared.local).map_err(|e| {
                warn!(error = %e, "no socket for a TFTP transfer");
                Refusal {
                    code: ErrorCode::NotDefined,
                    message: format!(
                        "server busy: no free transfer port ({e}); retry shortly or widen the port range"
                    ),
                }
            })?,
        };
        self.epoll
            .add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, id.0))
            .map_err(|e| Refusal {
                code: ErrorCode::NotDefined,
                message: format!(
                    "server busy: cannot watch a transfer socket ({e}); retry shortly"
                ),
            })?;
        Ok(Some(socket))
    }

    /// Refuses an admitted request that could not start; its admission is given back.
    fn refuse(
        &self,
        id: TransferId,
        request: &Request<'_>,
        write: bool,
        arrival: &Arrival,
        refusal: &Refusal,
    ) {
        let shared = &self.shared;
        let client = arrival.from;
        let counters = &shared.service.counters;
        counters.refused.fetch_add(1, Ordering::Relaxed);
        counters.refusals.add(refusal.code.name());
        shared.send_error(client, arrival.local, refusal.code, &refusal.message);
        if let Some(observer) = &shared.service.observer {
            observer.request_refused(client, request.filename, refusal);
        }
        warn!(
            %client,
            file = request.filename,
            direction = if write { "write" } else { "read" },
            code = refusal.code.as_u16(),
            reason = %refusal.message,
            "TFTP request refused"
        );
        lock(&shared.endpoint).finished(id);
    }

    /// Takes one datagram from the transfer's socket (level-triggered epoll reports again if
    /// more are queued).
    fn receive(&mut self, id: TransferId, now: Instant) {
        let Some(slot) = self.transfers.get_mut(&id) else {
            return;
        };
        if slot.receive(&mut self.recv_buf, now) {
            self.service(id, now);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.transfers.get_mut(&id) else {
                continue;
            };
            if slot.armed != Some(at) {
                continue;
            }
            slot.armed = None;
            self.service(id, now);
        }
    }

    fn shut_down(&mut self) {
        let ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        let mut out = Vec::new();
        packet::encode_error(
            &mut out,
            ErrorCode::NotDefined,
            "transfer cancelled: the TFTP server is shutting down; retry in a moment",
        );
        for id in ids {
            if let Some(slot) = self.transfers.get_mut(&id) {
                slot.out.clone_from(&out);
                let _ = slot.send(&self.shared.listener);
            }
            self.finish(id, Outcome::Cancelled);
        }
    }
}

fn log_stray(stray: &Stray, arrival: Arrival) {
    let client = arrival.from;
    match &stray.cause {
        StrayCause::Malformed(error) => warn!(%client, error = %error, "malformed TFTP request"),
        StrayCause::NotARequest(kind) => {
            debug!(%client, kind, "stray packet on the TFTP listener")
        }
    }
}
