//! The tokio driver around `bootherd-pxe`: one receive loop per port (67 and 4011), a watcher
//! on port 68 for other servers' boot offers. Everything the responder decides is decided in
//! the core; this file only moves bytes and records what happened.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bootherd_pxe::{
    self as pxe, BootPolicy, EventSink, Ignored, PxeEvent, ServerPort, foreign_boot_offer,
};
use bootherd_telemetry::DhcpCounters;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::interfaces::Interfaces;
use crate::udp::{Arrival, PktSocket};

/// What the responder needs from the rest of bootherd.
#[derive(Debug, Clone)]
pub struct DhcpService {
    pub policy: Arc<dyn BootPolicy>,
    pub interfaces: Arc<Interfaces>,
    pub events: Arc<dyn EventSink>,
    pub counters: Arc<DhcpCounters>,
}

/// Receive buffer: the largest request we process. Larger datagrams are reported with their
/// real size (MSG_TRUNC) and dropped.
const BUFFER: usize = pxe::request::MAX_REQUEST_LEN;

/// Answers PXE requests arriving on `socket` (bound to port 67 or 4011) until `shutdown`.
pub async fn serve(
    socket: StdUdpSocket,
    port: ServerPort,
    service: DhcpService,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let socket = PktSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    info!(%local, port = port.name(), "ProxyDHCP responder listening");
    let mut buf = vec![0u8; BUFFER];
    // Built once: a cancellation future made per packet registers and unregisters a waiter
    // (a lock each way) on every request.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let (len, arrival) = tokio::select! {
            _ = &mut cancelled => break,
            received = socket.recv(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "receive error on DHCP socket");
                    continue;
                }
            },
        };
        handle_datagram(&socket, port, &service, &buf[..len], arrival).await;
    }
    info!(%local, "ProxyDHCP responder stopped");
    Ok(())
}

async fn handle_datagram(
    socket: &PktSocket,
    port: ServerPort,
    service: &DhcpService,
    datagram: &[u8],
    arrival: Arrival,
) {
    let SocketAddr::V4(source) = arrival.from else {
        return;
    };
    let (Some(local_ip), Some(ifindex)) = (arrival.local, arrival.ifindex) else {
        debug!(%source, "datagram without arrival information ignored");
        return;
    };
    let Some(interface) = service.interfaces.by_index(ifindex) else {
        debug!(%source, ifindex, "request on an interface bootherd does not serve");
        return;
    };
    if arrival.size > datagram.len() {
        service.counters.malformed.fetch_add(1, Ordering::Relaxed);
        warn!(%source, interface = %interface.name, bytes = arrival.size, "oversized DHCP packet dropped: {} bytes, more than a DHCP request can have", arrival.size);
        return;
    }
    let pxe_arrival = pxe::Arrival {
        source,
        local_ip,
        ifindex: Some(ifindex),
        port,
    };
    let counters = &service.counters;
    match pxe::handle(datagram, pxe_arrival, service.policy.as_ref()) {
        Ok((request, reply)) => {
            send_reply(
                socket,
                port,
                service,
                &request,
                reply,
                &interface.name,
                local_ip,
            )
            .await
        }
        Err(Ignored::Declined { request, reason }) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            counters.declined.fetch_add(1, Ordering::Relaxed);
            service.events.record(request_event(&request));
            info!(
                mac = %request.mac,
                arch = %request.arch,
                firmware = request.firmware.name(),
                cause = reason.cause.name(),
                reason = %reason,
                "not answering PXE request"
            );
            service.events.record(PxeEvent::Declined {
                mac: request.mac,
                reason,
            });
        }
        Err(Ignored::Malformed(reason)) => {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            warn!(%source, interface = %interface.name, bytes = datagram.len(), reason = %reason, "malformed DHCP packet dropped");
        }
        Err(Ignored::OtherServer {
            server,
            mac,
            address: Some(address),
        }) => {
            debug!(%mac, %address, %server, "PXE client took its address from another server");
            service.events.record(PxeEvent::AddressAccepted {
                mac,
                address,
                server,
            });
        }
        // Ordinary DHCP traffic from non-PXE clients: the normal case on port 67.
        Err(reason) => debug!(%source, reason = %reason, "DHCP packet ignored"),
    }
}

/// Sends the reply the core built, and records and logs it.
async fn send_reply(
    socket: &PktSocket,
    port: ServerPort,
    service: &DhcpService,
    request: &pxe::PxeRequest,
    reply: pxe::Reply,
    interface: &str,
    local_ip: Ipv4Addr,
) {
    let counters = &service.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    service.events.record(request_event(request));
    let destination = reply.destination;
    let sent = socket
        .send_via(
            &reply.bytes,
            SocketAddr::V4(destination.addr),
            Some(destination.source_ip),
            destination.ifindex,
        )
        .await;
    let message_type = format!("{:?}", reply.message_type).to_uppercase();
    match sent {
        Ok(()) => {
            let counter = if reply.message_type == dhcproto::v4::MessageType::Offer {
                &counters.offers
            } else {
                &counters.acks
            };
            counter.fetch_add(1, Ordering::Relaxed);
            counters.by_arch.add(request.arch.name());
            info!(
                mac = %request.mac,
                port = port.name(),
                request = ?request.message_type,
                reply = %message_type,
                arch = %request.arch,
                firmware = request.firmware.name(),
                interface = %interface,
                next_server = %local_ip,
                bootfile = reply.offer.bootfile(),
                destination = %destination.addr,
                option43 = reply.vendor_options,
                relay = ?request.relay,
                "PXE boot offer sent"
            );
            service.events.record(PxeEvent::Replied {
                mac: request.mac,
                port,
                message_type,
                bootfile: reply.offer.bootfile().to_string(),
                destination: destination.addr,
            });
        }
        Err(e) => warn!(
            mac = %request.mac,
            destination = %destination.addr,
            interface = %interface,
            error = %e,
            "could not send the PXE reply; check the interface and firewall"
        ),
    }
}

fn request_event(request: &pxe::PxeRequest) -> PxeEvent {
    PxeEvent::Request {
        mac: request.mac,
        port: request.arrival.port,
        message_type: format!("{:?}", request.message_type).to_uppercase(),
        arch: request.arch,
        firmware: request.firmware,
        vendor_class: request.vendor_class.clone(),
        guid: request.guid.clone(),
        relay: request.relay,
        local_ip: request.arrival.local_ip,
        client_ip: (!request.ciaddr.is_unspecified()).then_some(request.ciaddr),
    }
}

/// Watches DHCP replies on the client port (68) for other servers offering something to boot,
/// and warns about each one once. The socket is bound with SO_REUSEADDR so a DHCP client on the
/// same host keeps working; if the port cannot be had, bootherd runs without the watcher.
pub async fn watch_competitors(
    socket: StdUdpSocket,
    service: DhcpService,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let socket = PktSocket::from_std(socket)?;
    let mut warned: Vec<Ipv4Addr> = Vec::new();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let (len, arrival) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = socket.recv(&mut buf) => match received {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        if arrival
            .ifindex
            .and_then(|i| service.interfaces.by_index(i))
            .is_none()
        {
            continue;
        }
        let Some(offer) = foreign_boot_offer(&buf[..len], &service.interfaces.addresses()) else {
            continue;
        };
        service.counters.competing.fetch_add(1, Ordering::Relaxed);
        if !warned.contains(&offer.server) {
            warned.push(offer.server);
            warn!(
                server = %offer.server,
                client = %offer.client,
                bootfile = offer.bootfile.as_deref().unwrap_or(""),
                pxe = offer.pxe,
                "another server on this network is also answering PXE clients; machines may boot from it instead of bootherd. Remove the boot options (next-server/filename, PXE vendor class) from that server or stop its proxy"
            );
        }
        service.events.record(PxeEvent::CompetingServer(offer));
    }
}

/// Binds the watcher's socket: port 68 with SO_REUSEADDR, shared with a local DHCP client.
pub fn bind_watcher(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
