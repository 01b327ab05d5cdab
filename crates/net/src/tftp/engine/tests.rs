//! The engine with real sockets on 127.0.0.1: commands between threads, repeated requests,
//! port reuse.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bootherd_files::DirSource;
use tokio_util::sync::CancellationToken;

use super::slot::IDLE_REST;
use crate::tftp::{TftpConfig, TftpService, TransferPorts, serve};

/// A server on 127.0.0.1 serving one 100-byte file, `small`.
struct TestServer {
    addr: SocketAddr,
    counters: Arc<bootherd_telemetry::TftpCounters>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    fn start(config: TftpConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("small"), [7u8; 100]).unwrap();
        let service = TftpService {
            config,
            source: Arc::new(DirSource::new(dir.path()).unwrap()),
            uploads: None,
            counters: Arc::default(),
            active: Arc::default(),
            observer: None,
        };
        let counters = service.counters.clone();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(socket, service, shutdown.clone()));
        TestServer {
            addr,
            counters,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Waits (boundedly) until `completed` transfers have finished, checks the count and
    /// stops the server.
    async fn stop_after(self, completed: u64) -> Arc<bootherd_telemetry::TftpCounters> {
        for _ in 0..300 {
            if self.counters.completed.load(Ordering::Relaxed) == completed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            self.counters.completed.load(Ordering::Relaxed),
            completed,
            "started {}, outcomes {:?}",
            self.counters.started.load(Ordering::Relaxed),
            self.counters.outcomes.snapshot()
        );
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.counters
    }
}

/// Retransmission timers of 30 s: a request or datagram the server leaves waiting then
/// fails a client's 3 s read timeout instead of being covered by a retransmission.
fn with_slow_timers(mut config: TftpConfig) -> TftpConfig {
    let timer = &mut config.transfer.timer;
    timer.initial_rto = Duration::from_secs(30);
    timer.min_rto = Duration::from_secs(30);
    timer.max_rto = Duration::from_secs(30);
    config
}

/// Asks for `small` from `socket` and checks the one DATA block; returns where it came
/// from (the transfer's port).
fn fetch_small(socket: &UdpSocket, server: SocketAddr, client: u64, round: u64) -> SocketAddr {
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(b"\0\x01small\0octet\0", server).unwrap();
    let mut buf = [0u8; 600];
    let (len, from) = socket
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("client {client} round {round}: no DATA: {e}"));
    assert_eq!((len, &buf[..4]), (104, &b"\0\x03\0\x01"[..]));
    from
}

/// Waits for client threads without blocking the server's runtime.
async fn join_clients(clients: Vec<std::thread::JoinHandle<()>>) {
    tokio::task::spawn_blocking(move || {
        for client in clients {
            client.join().unwrap();
        }
    })
    .await
    .unwrap();
}

/// In single-port mode every ACK reaches its transfer as a command from the listener, so a
/// command left waiting shows as a stall until the transfer's retransmission timer fires;
/// with that timer at 30 s here, any stall fails the 3 s read timeout. (Commands crossing
/// threads are tested by `a_repeated_request_is_answered_from_any_thread`.) With 4000
/// short transfers, clients also get a port back that a finished client used a moment
/// before, with its last ACK still queued: that request must start a new transfer (it was
/// once taken for a retransmission of the ending one and never answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_never_wait_for_a_timer() {
    const CLIENTS: u64 = 8;
    const ROUNDS: u64 = 500;
    // Three threads configured; single-port mode runs one all the same.
    let server = TestServer::start(with_slow_timers(TftpConfig {
        ports: TransferPorts::Single,
        threads: 3,
        ..TftpConfig::default()
    }));
    let server_addr = server.addr;
    // Several clients at once, so ports come back while other transfers are running.
    let clients = (0..CLIENTS).map(|client| {
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let from = fetch_small(&socket, server_addr, client, round);
                assert_eq!(from, server_addr);
                socket.send_to(b"\0\x04\0\x01", server_addr).unwrap();
            }
        })
    });
    join_clients(clients.collect()).await;
    // The last ACK is a command too: its transfer finishes a moment later.
    let counters = server.stop_after(CLIENTS * ROUNDS).await;
    assert_eq!(counters.retransmits.load(Ordering::Relaxed), 0);
}

/// A client whose first DATA was lost asks again; the request may be read by any thread,
/// and the transfer's own thread must answer it at once, woken by the doorbell alone (the
/// transfer's socket has nothing to read). With 30 s server timers, only the repeated
/// request can bring DATA 1 a second time within the 3 s read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_is_answered_from_any_thread() {
    const CLIENTS: u64 = 8;
    const ROUNDS: u64 = 300;
    let server = TestServer::start(with_slow_timers(TftpConfig {
        threads: 3,
        ..TftpConfig::default()
    }));
    let server_addr = server.addr;
    let clients = (0..CLIENTS).map(|client| {
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let first = fetch_small(&socket, server_addr, client, round);
                let again = fetch_small(&socket, server_addr, client, round);
                assert_eq!(first, again, "the repeat was answered by another transfer");
                socket.send_to(b"\0\x04\0\x01", first).unwrap();
            }
        })
    });
    join_clients(clients.collect()).await;
    let counters = server.stop_after(CLIENTS * ROUNDS).await;
    assert_eq!(counters.started.load(Ordering::Relaxed), CLIENTS * ROUNDS);
}

/// A client that fetches the same file again from the same port sends its last ACK to the
/// transfer's socket and at once its request to the listener. Another thread may read the
/// request before the transfer's thread has read the ACK; the request must then start a
/// new transfer, not be taken for a retransmission of the ending one (and go unanswered).
/// The clients never retransmit and the server's timers are 30 s, so a request left
/// unanswered fails the 3 s read timeout (before the fix, within 20 rounds).
///
/// Not checked: that every round started a transfer. An ACK and the next request travel
/// to different sockets and the kernel may deliver them out of order; the request then
/// looks like a retransmission, the ending transfer sends its block again, and the client,
/// which asked for those very bytes, takes them (this happened about once in 2400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_again_from_the_same_port_is_a_new_transfer() {
    const CLIENTS: u64 = 8;
    const ROUNDS: u64 = 300;
    let server = TestServer::start(with_slow_timers(TftpConfig {
        threads: 3,
        ..TftpConfig::default()
    }));
    let server_addr = server.addr;
    let clients = (0..CLIENTS).map(|client| {
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            for round in 0..ROUNDS {
                let tid = fetch_small(&socket, server_addr, client, round);
                socket.send_to(b"\0\x04\0\x01", tid).unwrap();
            }
        })
    });
    join_clients(clients.collect()).await;
    let started = server.counters.started.load(Ordering::Relaxed);
    assert!(
        started > CLIENTS * ROUNDS * 9 / 10,
        "only {started} transfers"
    );
    let counters = server.stop_after(started).await;
    assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
}

/// Sockets of finished transfers are reused, but never straight away for the client they
/// just served: its late packets must not reach its next transfer as if they were new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_sockets_are_reused_but_not_for_the_same_client_twice_in_a_row() {
    let server = TestServer::start(TftpConfig {
        threads: 1,
        ..TftpConfig::default()
    });
    let server_addr = server.addr;
    let (alone, taking_turns) = tokio::task::spawn_blocking(move || {
        let fetch = |client: &UdpSocket| {
            let tid = fetch_small(client, server_addr, 0, 0);
            client.send_to(b"\0\x04\0\x01", tid).unwrap();
            tid
        };
        // One client, its sockets rested: every idle socket last served this client.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let alone: Vec<SocketAddr> = (0..20)
            .map(|_| {
                std::thread::sleep(IDLE_REST + Duration::from_millis(5));
                fetch(&client)
            })
            .collect();
        // Two other clients taking turns, with rests.
        let clients = [
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        let taking_turns: Vec<SocketAddr> = (0..20)
            .map(|round| {
                std::thread::sleep(IDLE_REST + Duration::from_millis(5));
                fetch(&clients[round % 2])
            })
            .collect();
        (alone, taking_turns)
    })
    .await
    .unwrap();
    for pair in alone.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "a client got its previous transfer's port again"
        );
    }
    // The first client's 20 sockets rest idle by then, and serve the other two.
    let reused = taking_turns
        .iter()
        .filter(|tid| alone.contains(tid))
        .count();
    assert!(
        reused >= 15,
        "only {reused} of 20 transfers reused a socket"
    );
    server.stop_after(40).await;
}
