//! The HTTP listener under abuse, over real sockets on loopback: connections that never finish
//! their headers are closed, and one host cannot take the connection slots the machines
//! booting from /boot and /images need.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bootherd_web::HttpLimits;
use common::Site;

fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_time_out_and_one_host_cannot_take_every_slot() {
    let site = Site::new(|_, _| {});
    let limits = HttpLimits {
        header_timeout: Duration::from_millis(800),
        max_connections: 64,
        max_connections_per_client: 16,
        ..HttpLimits::default()
    };
    let (app, shutdown) = site.router(None, limits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let serving = tokio::spawn(bootherd_web::serve(listener, app, limits, shutdown.clone()));

    let outcome = tokio::task::spawn_blocking(move || {
        // One host opens many connections and sends half a request on each.
        let attacker = Ipv4Addr::new(127, 0, 0, 2);
        let mut held: Vec<TcpStream> = (0..100)
            .map(|_| {
                let mut stream = connect_from(attacker, server);
                let _ =
                    stream.write_all(b"GET /boot/52:54:00:00:00:01.ipxe HTTP/1.1\r\nHost: x\r\n");
                stream
            })
            .collect();
        // A machine booting from another address is still answered at once.
        let started = Instant::now();
        let mut machine = connect_from(Ipv4Addr::new(127, 0, 0, 3), server);
        machine
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        machine
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = machine.read_to_string(&mut answer);
        let answered_in = started.elapsed();
        // Connections over the host's share were closed at once, not held until the timeout.
        let closed_at_once = held
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(20)))
            .filter(|closed| *closed)
            .count();
        // Past the header timeout, every half-sent request has been closed.
        std::thread::sleep(Duration::from_millis(1500));
        let still_open = held
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(50)))
            .filter(|closed| !closed)
            .count();
        (answer, answered_in, closed_at_once, still_open)
    })
    .await
    .unwrap();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    let (answer, answered_in, closed_at_once, still_open) = outcome;
    assert_eq!(closed_at_once, 100 - 16, "one host holds at most its share");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    assert_eq!(
        still_open, 0,
        "half-sent requests still open after the header timeout"
    );
}
