//! The server side of the listening port, sans-IO (quinn's `Endpoint` is the model): which
//! client runs which transfer, whether a request is new, a retransmission or a restart, who
//! is admitted, and what a stranger is told. The driver feeds it every datagram that arrives
//! on the listening port and reports when a transfer ends; it answers with an
//! [`ListenerEvent`] saying what to do. It never sees a socket or the clock.
//!
//! Each datagram is decoded once, here; a new request travels on to [`EndpointConfig::open`]
//! already decoded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::packet::{self, ErrorCode, MAX_BLKSIZE, MIN_BLKSIZE, Packet, Request};
use crate::source::{FileSource, UploadTarget};
use crate::transfer::{ErrorRateLimiter, Refusal, Transfer, TransferConfig, Uploads, accept};

/// An admitted transfer, from its request until the driver reports it [`Endpoint::finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

/// Where a running transfer lives: its id and the driver's opaque owner (an engine thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub id: TransferId,
    pub owner: usize,
}

/// What the endpoint decides with.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    pub transfer: TransferConfig,
    /// Transfers running at once; further requests are refused with "server busy" rather than
    /// queued, so a client retries instead of timing out.
    pub max_transfers: usize,
    /// Transfers one client address may run at once, so one host cannot take every slot.
    pub max_transfers_per_client: usize,
    /// Every datagram of every transfer arrives on the listening port (no port per transfer).
    pub single_port: bool,
    /// Caps blksize at the path MTU minus headers, so no DATA packet is fragmented (many PXE
    /// ROMs cannot reassemble).
    pub cap_blksize_to_mtu: bool,
}

/// Largest window (windowsize × blksize) in single-port mode: what one forged datagram can make
/// the server send to someone else. There the transfer's port is the well-known one, so a
/// forged ACK 0 needs no guessing.
pub const SINGLE_PORT_WINDOW_BYTES: u32 = 16 * 1024;
/// IPv4 + UDP headers, subtracted from the MTU for the blksize cap.
const IP_UDP_HEADERS: u32 = 20 + 8;
/// TFTP DATA header.
const DATA_HEADER: u32 = 4;

impl EndpointConfig {
    /// Accepts an admitted request: negotiates within this server's limits (the single-port
    /// window cap, blksize capped to `path_mtu` when the client asks for a blksize and the
    /// MTU towards it is known) and opens the file or the upload.
    pub fn open(
        &self,
        now: Instant,
        request: &Request<'_>,
        write: bool,
        path_mtu: Option<u32>,
        source: &dyn FileSource,
        uploads: Option<&dyn UploadTarget>,
    ) -> Result<Transfer, Refusal> {
        let mut config = self.transfer;
        if self.single_port {
            config.limits.max_window_bytes =
                config.limits.max_window_bytes.min(SINGLE_PORT_WINDOW_BYTES);
        }
        let asks_for_blksize = request
            .options
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("blksize"));
        if let Some(mtu) = path_mtu.filter(|_| self.cap_blksize_to_mtu && asks_for_blksize) {
            let cap = mtu.saturating_sub(IP_UDP_HEADERS + DATA_HEADER);
            let cap = cap.clamp(u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE)) as u16;
            config.limits.max_blksize = config.limits.max_blksize.min(cap);
        }
        let uploads = match uploads {
            Some(target) => Uploads::Enabled(target),
            None => Uploads::Disabled,
        };
        accept(now, request, write, &config, source, uploads)
    }
}

/// What to do with a datagram that arrived on the listening port.
#[derive(Debug)]
pub enum ListenerEvent<'d> {
    /// A read or write request that is not a retransmission.
    Request(NewRequest<'d>),
    /// The same request again before the client showed it had our reply: usually the reply was
    /// lost. The transfer resends; if it has ended meanwhile, feed the datagram in again.
    Repeated(Running),
    /// Single-port mode: a datagram of this running transfer.
    Deliver(Running),
    /// Send this ERROR from the listening port (the rate limit for strangers allowed it).
    Reply(Stray),
    /// An ERROR to a stranger held back by the rate limit.
    Suppressed(Stray),
    /// Nothing to answer: an ERROR from someone with no transfer (never an ERROR for an ERROR).
    Ignore,
}

/// A new request, admitted or not.
#[derive(Debug)]
pub struct NewRequest<'d> {
    pub request: Request<'d>,
    pub write: bool,
    /// An earlier transfer of the same client address and port this request replaces: the
    /// client restarted, or a new client reuses the port. It ends as superseded, without an
    /// ERROR (its client is the one asking now).
    pub replaces: Option<Running>,
    /// The new transfer's id, or why it may not start (send the ERROR, run nothing).
    pub admission: Result<TransferId, Busy>,
}

/// A request refused because the server or this client is at its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub message: String,
    pub limit: usize,
    /// Which limit, for the log.
    pub reason: &'static str,
}

impl Busy {
    pub const CODE: ErrorCode = ErrorCode::NotDefined;
}

/// An ERROR for someone who is not a client of a running transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub code: ErrorCode,
    pub message: String,
    pub cause: StrayCause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrayCause {
    /// The datagram does not decode.
    Malformed(String),
    /// A packet of a transfer (DATA, ACK, OACK) with no transfer to belong to.
    NotARequest(&'static str),
}

#[derive(Debug)]
struct ClientEntry {
    request: Box<[u8]>,
    running: Running,
    /// Set once the client has answered our first reply: from then on an identical request
    /// from the same address and port is a new transfer, not a lost-reply retransmission
    /// (clients reuse ports quickly during a boot storm).
    confirmed: bool,
}

/// The listening port's state: the client table and the admission counts.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    /// The latest transfer of each client address and port.
    clients: HashMap<SocketAddr, ClientEntry>,
    /// Every admitted transfer not yet finished, with its client.
    admitted: HashMap<TransferId, SocketAddr>,
    per_client: HashMap<IpAddr, usize>,
    next: u64,
    strangers: ErrorRateLimiter,
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Endpoint {
        Endpoint {
            config,
            clients: HashMap::new(),
            admitted: HashMap::new(),
            per_client: HashMap::new(),
            next: 0,
            strangers: ErrorRateLimiter::default(),
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Transfers admitted and not yet finished.
    pub fn running(&self) -> usize {
        self.admitted.len()
    }

    /// Decides what `datagram`, which arrived on the listening port from `client`, means. A
    /// transfer started for it belongs to `owner`.
    pub fn handle_listener<'d>(
        &mut self,
        now: Instant,
        client: SocketAddr,
        datagram: &'d [u8],
        owner: usize,
    ) -> ListenerEvent<'d> {
        let packet = match packet::decode(datagram) {
            Ok(packet) => packet,
            Err(e) => {
                // In single-port mode a client's datagram may belong to its transfer even if
                // it does not decode; the transfer's own handling decides.
                if let Some(running) = self.deliver(client) {
                    return ListenerEvent::Deliver(running);
                }
                return self.stray(
                    now,
                    ErrorCode::IllegalOperation,
                    format!("malformed request: {e}"),
                    StrayCause::Malformed(e.to_string()),
                );
            }
        };
        let (request, write) = match packet {
            Packet::Rrq(request) => (request, false),
            Packet::Wrq(request) => (request, true),
            Packet::Error { .. } => {
                return match self.deliver(client) {
                    Some(running) => ListenerEvent::Deliver(running),
                    None => ListenerEvent::Ignore,
                };
            }
            other => {
                if let Some(running) = self.deliver(client) {
                    return ListenerEvent::Deliver(running);
                }
                let (code, message) = if self.config.single_port {
                    (
                        ErrorCode::UnknownTransferId,
                        "unknown transfer ID: no transfer with this client address and port",
                    )
                } else {
                    (
                        ErrorCode::IllegalOperation,
                        "only read and write requests belong on this port",
                    )
                };
                return self.stray(
                    now,
                    code,
                    message.into(),
                    StrayCause::NotARequest(other.kind()),
                );
            }
        };
        let replaces = match self.clients.get(&client) {
            Some(entry) if *entry.request == *datagram && !entry.confirmed => {
                return ListenerEvent::Repeated(entry.running);
            }
            // A different request from the same address and port, or the same one after our
            // reply arrived: the client started over. The old transfer's slot and share are
            // given back now, so the restart is not refused for what its predecessor holds.
            Some(_) => {
                let old = self.clients.remove(&client).map(|old| old.running);
                if let Some(old) = old {
                    self.finished(old.id);
                }
                old
            }
            None => None,
        };
        let admission = self.admit(client, datagram, owner);
        ListenerEvent::Request(NewRequest {
            request,
            write,
            replaces,
            admission,
        })
    }

    fn admit(
        &mut self,
        client: SocketAddr,
        datagram: &[u8],
        owner: usize,
    ) -> Result<TransferId, Busy> {
        let limit = self.config.max_transfers.max(1);
        if self.admitted.len() >= limit {
            return Err(Busy {
                message: format!(
                    "server busy: {limit} transfers already running; retry shortly (or raise --max-transfers, tftp.max_transfers)"
                ),
                limit,
                reason: "every transfer slot is taken",
            });
        }
        let per_client = self.config.max_transfers_per_client.max(1);
        let count = self.per_client.entry(client.ip()).or_insert(0);
        if *count >= per_client {
            return Err(Busy {
                message: format!(
                    "server busy: {} already runs {per_client} transfers; finish or abort those first (or raise --max-transfers-per-client, tftp.max_transfers_per_client)",
                    client.ip()
                ),
                limit: per_client,
                reason: "this client holds its share of transfer slots",
            });
        }
        *count += 1;
        let id = TransferId(self.next);
        self.next += 1;
        self.admitted.insert(id, client);
        self.clients.insert(
            client,
            ClientEntry {
                request: datagram.into(),
                running: Running { id, owner },
                confirmed: false,
            },
        );
        Ok(id)
    }

    /// In single-port mode, the transfer `client` runs. Whatever the client sends after its
    /// request shows it has our reply: marked now, not when the transfer gets to the datagram,
    /// so a client that reuses this port for the same request a moment later starts a new
    /// transfer instead of being taken for a retransmission of one about to end.
    fn deliver(&mut self, client: SocketAddr) -> Option<Running> {
        if !self.config.single_port {
            return None;
        }
        let entry = self.clients.get_mut(&client)?;
        entry.confirmed = true;
        Some(entry.running)
    }

    fn stray(
        &mut self,
        now: Instant,
        code: ErrorCode,
        message: String,
        cause: StrayCause,
    ) -> ListenerEvent<'static> {
        let stray = Stray {
            code,
            message,
            cause,
        };
        if self.strangers.allow(now) {
            ListenerEvent::Reply(stray)
        } else {
            ListenerEvent::Suppressed(stray)
        }
    }

    /// The client of `id` has answered our reply (a transfer's own port saw it).
    pub fn confirm(&mut self, id: TransferId) {
        if let Some(client) = self.admitted.get(&id) {
            if let Some(entry) = self.clients.get_mut(client) {
                if entry.running.id == id {
                    entry.confirmed = true;
                }
            }
        }
    }

    /// Whether the client of `id` has answered our reply; false once `id` is finished.
    pub fn is_confirmed(&self, id: TransferId) -> bool {
        self.admitted
            .get(&id)
            .and_then(|client| self.clients.get(client))
            .is_some_and(|entry| entry.running.id == id && entry.confirmed)
    }

    /// Transfer `id` has ended, or never started after admission: its slot and its client's
    /// share are free again. Calling it twice is harmless.
    pub fn finished(&mut self, id: TransferId) {
        let Some(client) = self.admitted.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_client.get_mut(&client.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&client.ip());
            }
        }
        // A newer transfer of the same client may have replaced the entry; that one stays.
        if self
            .clients
            .get(&client)
            .is_some_and(|entry| entry.running.id == id)
        {
            self.clients.remove(&client);
        }
    }
}

/// Answers datagrams that reach a transfer's own port from someone else (RFC 1350 §4: ERROR 5,
/// and the transfer carries on undisturbed), within a small rate limit per port.
#[derive(Debug)]
pub struct PortGuard {
    limiter: ErrorRateLimiter,
}

impl Default for PortGuard {
    fn default() -> Self {
        PortGuard {
            limiter: ErrorRateLimiter::new(5, 5),
        }
    }
}

impl PortGuard {
    /// Writes the ERROR for a stranger's `datagram` into `out` and returns true, unless the
    /// datagram is itself an ERROR (never an ERROR for an ERROR) or the rate limit holds it.
    pub fn stranger(&mut self, now: Instant, datagram: &[u8], out: &mut Vec<u8>) -> bool {
        let is_error = datagram.len() >= 2 && datagram[..2] == [0, 5];
        if is_error || !self.limiter.allow(now) {
            return false;
        }
        out.clear();
        packet::encode_error(
            out,
            ErrorCode::UnknownTransferId,
            "unknown transfer ID: this port serves another client",
        );
        true
    }
}

#[cfg(test)]
mod tests;
