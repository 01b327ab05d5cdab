//! UDP sockets that know which local address a datagram arrived on, and can choose the source
//! address of each reply (IP_PKTINFO, ip(7)).
//!
//! Why this matters for booting: EDK2 and iPXE drop replies that do not come from the exact
//! address their request went to, and a socket bound to 0.0.0.0 would otherwise let the kernel
//! pick any local address. Binding to one unicast address instead would lose broadcasts (DHCP
//! requests; ACKs from old clients that send to the broadcast address). So we bind the wildcard
//! and set the source per datagram.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Where a received datagram was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Sender.
    pub from: SocketAddr,
    /// The local unicast address to answer from: for a unicast datagram its destination, for a
    /// broadcast the address of the interface it arrived on (the kernel's `ipi_spec_dst`).
    pub local: Option<Ipv4Addr>,
    /// Destination address in the IP header, which may be a broadcast address.
    pub destination: Option<Ipv4Addr>,
    /// Interface index the datagram arrived on.
    pub ifindex: Option<u32>,
    /// Size of the datagram as sent, which exceeds the returned length when it did not fit.
    pub size: usize,
}

/// A non-blocking UDP socket with per-datagram local addressing.
#[derive(Debug)]
pub struct PktSocket {
    socket: UdpSocket,
}

impl PktSocket {
    /// Takes over a bound socket (the binary binds; tests bind 127.0.0.1:0), enabling
    /// IP_PKTINFO and SO_BROADCAST.
    pub fn from_std(socket: StdUdpSocket) -> io::Result<PktSocket> {
        prepare_listener(&socket)?;
        Ok(PktSocket {
            socket: UdpSocket::from_std(socket)?,
        })
    }

    /// Binds `addr` with the options every bootherd socket needs.
    pub fn bind(addr: SocketAddr) -> io::Result<PktSocket> {
        PktSocket::from_std(StdUdpSocket::bind(addr)?)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram. A datagram larger than `buf` is truncated; the returned length is
    /// what fits.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, Arrival)> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || recv_with_info(fd, buf))
            .await
    }

    /// Sends `data` to `to`, from local address `from` when given.
    pub async fn send(
        &self,
        data: &[u8],
        to: SocketAddr,
        from: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        self.send_via(data, to, from, None).await
    }

    /// Like [`send`](Self::send), and out of interface `ifindex` when given: a reply to the
    /// limited broadcast address must leave through the interface its request came in on,
    /// which routing alone would not pick.
    pub async fn send_via(
        &self,
        data: &[u8],
        to: SocketAddr,
        from: Option<Ipv4Addr>,
        ifindex: Option<u32>,
    ) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let info = pktinfo(from, ifindex);
        self.socket
            .async_io(Interest::WRITABLE, || {
                send_with_info(fd, data, to, info.as_ref())
            })
            .await
    }
}

/// Makes a bound socket non-blocking, with IP_PKTINFO (so [`recv_with_info`] learns the local
/// address) and SO_BROADCAST.
pub fn prepare_listener(socket: &StdUdpSocket) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    if socket.local_addr()?.is_ipv4() {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)?;
    }
    socket.set_broadcast(true)
}

/// A socket for one TFTP transfer, non-blocking, bound to `addr`. It only talks to one client's
/// unicast address and chooses its source per datagram ([`send_with_info`]), so it needs
/// neither SO_BROADCAST nor IP_PKTINFO on receive, and is made in two system calls instead of
/// the six the general path takes; that matters when a transfer is two packets long.
pub fn bind_transfer(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The control message that sets a datagram's source address and outgoing interface.
pub fn pktinfo(from: Option<Ipv4Addr>, ifindex: Option<u32>) -> Option<libc::in_pktinfo> {
    (from.is_some() || ifindex.is_some()).then(|| libc::in_pktinfo {
        ipi_ifindex: ifindex.and_then(|i| i32::try_from(i).ok()).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from.unwrap_or(Ipv4Addr::UNSPECIFIED)).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    })
}

/// One non-blocking `sendmsg` of `data` to `to`, with `info` as IP_PKTINFO when given.
pub fn send_with_info(
    fd: RawFd,
    data: &[u8],
    to: SocketAddr,
    info: Option<&libc::in_pktinfo>,
) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let sent = match to {
        SocketAddr::V4(to) => {
            let cmsgs: &[ControlMessage<'_>] = match info {
                Some(info) => &[ControlMessage::Ipv4PacketInfo(info)],
                None => &[],
            };
            sendmsg(
                fd,
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&SockaddrIn::from(to)),
            )
        }
        // No per-datagram source for IPv6: routing picks it.
        SocketAddr::V6(to) => sendmsg(
            fd,
            &iov,
            &[],
            MsgFlags::empty(),
            Some(&SockaddrIn6::from(to)),
        ),
    };
    sent.map(drop).map_err(io::Error::from)
}

/// One non-blocking `recvmsg` that also reports where the datagram was addressed (needs
/// IP_PKTINFO on the socket for the local fields).
pub fn recv_with_info(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Arrival)> {
    let buf_len = buf.len();
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    // MSG_TRUNC makes Linux report the full size of an oversized datagram.
    let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC)
        .map_err(io::Error::from)?;
    let Some(from) = msg.address else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram without a source address",
        ));
    };
    let mut arrival = Arrival {
        from: SocketAddr::V4(SocketAddrV4::new(from.ip(), from.port())),
        local: None,
        destination: None,
        ifindex: None,
        size: msg.bytes,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = cmsg {
                arrival.local = Some(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)))
                    .filter(|ip| !ip.is_unspecified());
                arrival.destination = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                arrival.ifindex = u32::try_from(info.ipi_ifindex).ok().filter(|&i| i != 0);
            }
        }
    }
    Ok((msg.bytes.min(buf_len), arrival))
}

/// What routing says about sending to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Path MTU from `local` (IP_MTU).
    pub mtu: u32,
    /// The source address the kernel picks for an unbound socket.
    pub source: Option<Ipv4Addr>,
}

/// Asks the kernel's routing about `peer` with connected probe sockets; nothing is sent.
/// When the source it picks on its own is `local`, a reply needs no IP_PKTINFO to come from the
/// right address (which saves a control message per datagram); the MTU is measured from
/// `local`, which matters only under source-based routing.
pub fn route_to(local: Option<Ipv4Addr>, peer: SocketAddr) -> io::Result<Route> {
    let probe = StdUdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    probe.connect(peer)?;
    let source = match probe.local_addr()? {
        SocketAddr::V4(addr) => Some(*addr.ip()),
        SocketAddr::V6(_) => None,
    };
    let mtu = match local {
        Some(local) if source != Some(local) => path_mtu(Some(local), peer)?,
        _ => nix::sys::socket::getsockopt(&probe, sockopt::IpMtu).map_err(io::Error::from)?,
    };
    Ok(Route {
        mtu: u32::try_from(mtu).map_err(|_| io::Error::other("negative MTU"))?,
        source,
    })
}

/// Path MTU towards `peer` from `local` as the kernel's routing sees it (IP_MTU on a connected
/// probe socket). Nothing is sent.
fn path_mtu(local: Option<Ipv4Addr>, peer: SocketAddr) -> io::Result<i32> {
    let bind_ip = local.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let probe = StdUdpSocket::bind(SocketAddr::from((bind_ip, 0)))?;
    probe.connect(peer)?;
    nix::sys::socket::getsockopt(&probe, sockopt::IpMtu).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_local_address_and_sends_from_it() {
        let server = PktSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(b"ping", server.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, arrival) = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(arrival.from, client.local_addr().unwrap());
        assert_eq!(arrival.local, Some(Ipv4Addr::LOCALHOST));
        assert!(arrival.ifindex.is_some());
        server
            .send(b"pong", arrival.from, arrival.local)
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from, server.local_addr().unwrap());
    }

    #[test]
    fn loopback_route_has_a_large_mtu_and_its_own_source() {
        let route = route_to(Some(Ipv4Addr::LOCALHOST), "127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(route.mtu >= 1500, "{route:?}");
        assert_eq!(route.source, Some(Ipv4Addr::LOCALHOST));
        // Another loopback address: routing would answer from 127.0.0.1, so replies from
        // 127.0.0.2 need the control message; the MTU is still measured from it.
        let other = Ipv4Addr::new(127, 0, 0, 2);
        let route = route_to(Some(other), "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_ne!(route.source, Some(other));
        assert!(route.mtu >= 1500, "{route:?}");
    }
}
