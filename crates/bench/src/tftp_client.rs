//! A TFTP load client: many concurrent downloads from one process, each verified byte for byte
//! as it arrives (a storm of 1000 x 1 MiB must not need 1 GiB of client memory).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bootherd_tftp::packet::{self, Mode, Packet, Request};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy)]
pub(crate) struct GetOptions {
    pub(crate) blksize: Option<u16>,
    pub(crate) windowsize: Option<u16>,
    /// Client retransmission timeout (iPXE starts at 250 ms and backs off; 1 s is EDK2-like).
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
}

/// What a finished download reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Got {
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// Whether the server agreed to our windowsize.
    pub(crate) windowed: bool,
}

/// The RRQ for `file` with the options asked for.
fn read_request(file: &str, options: &GetOptions) -> Vec<u8> {
    let mut request_options = Vec::new();
    let (b, w);
    if let Some(blksize) = options.blksize {
        b = blksize.to_string();
        request_options.push(("blksize", b.as_str()));
    }
    if let Some(windowsize) = options.windowsize {
        w = windowsize.to_string();
        request_options.push(("windowsize", w.as_str()));
    }
    let mut rrq = Vec::new();
    packet::encode_request(
        &mut rrq,
        false,
        &Request {
            filename: file,
            mode: Mode::Octet,
            options: request_options,
        },
    );
    rrq
}

/// Downloads `file` and checks every byte against `expected`.
pub(crate) async fn get_verified(
    server: SocketAddr,
    file: &str,
    expected: &[u8],
    options: GetOptions,
) -> Result<Got, String> {
    let started = Instant::now();
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let local_any = server.ip().is_loopback();
    if !local_any {
        return Err("the load client only targets loopback".into());
    }
    let rrq = read_request(file, &options);
    socket
        .send_to(&rrq, server)
        .await
        .map_err(|e| e.to_string())?;

    let mut last_sent = rrq;
    let mut last_sent_to = server;
    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut windowsize = 1u64;
    let mut windowed = false;
    let mut next: u64 = 1;
    let mut offset = 0usize;
    let mut in_window = 0u64;
    let mut retries = 0;
    let mut buf = vec![0u8; 65536];
    let mut ack = Vec::with_capacity(4);
    loop {
        let received = tokio::time::timeout(options.timeout, socket.recv_from(&mut buf)).await;
        let (len, from) = match received {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(format!("receive error: {e}")),
            Err(_) => {
                retries += 1;
                if retries > options.retries {
                    return Err(format!("timed out at byte {offset} of {}", expected.len()));
                }
                socket
                    .send_to(&last_sent, last_sent_to)
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        let server_tid = *tid.get_or_insert(from);
        if from != server_tid {
            continue;
        }
        retries = 0;
        match packet::decode(&buf[..len]) {
            Ok(Packet::Oack { options: agreed }) if next == 1 => {
                for (name, value) in agreed {
                    let value: u64 = value
                        .parse()
                        .map_err(|_| format!("bad OACK value {value:?}"))?;
                    match name.to_ascii_lowercase().as_str() {
                        "blksize" => blksize = value as usize,
                        "windowsize" => {
                            windowsize = value.max(1);
                            windowed = value > 1;
                        }
                        _ => {}
                    }
                }
                ack.clear();
                packet::encode_ack(&mut ack, 0);
            }
            Ok(Packet::Data { block, data }) => {
                if block == next as u16 {
                    let end = offset + data.len();
                    if end > expected.len() || data != &expected[offset..end] {
                        return Err(format!("wrong bytes in block {next} (offset {offset})"));
                    }
                    offset = end;
                    next += 1;
                    in_window += 1;
                    let last = data.len() < blksize;
                    if last && offset != expected.len() {
                        return Err(format!("short file: {offset} of {} bytes", expected.len()));
                    }
                    if last || in_window >= windowsize {
                        in_window = 0;
                        ack.clear();
                        packet::encode_ack(&mut ack, (next - 1) as u16);
                        socket
                            .send_to(&ack, server_tid)
                            .await
                            .map_err(|e| e.to_string())?;
                        if last {
                            return Ok(Got {
                                bytes: offset as u64,
                                elapsed: started.elapsed(),
                                windowed,
                            });
                        }
                        last_sent.clone_from(&ack);
                        last_sent_to = server_tid;
                    }
                    continue;
                }
                // Out of order or duplicate: say where we are (EDK2 does the same).
                in_window = 0;
                ack.clear();
                packet::encode_ack(&mut ack, (next - 1) as u16);
            }
            Ok(Packet::Error { code, message }) => {
                return Err(format!("server error {code}: {message}"));
            }
            Ok(_) | Err(_) => continue,
        }
        socket
            .send_to(&ack, server_tid)
            .await
            .map_err(|e| e.to_string())?;
        last_sent.clone_from(&ack);
        last_sent_to = server_tid;
    }
}

/// Downloads a file of at most a few blocks with a plain blocking socket, lock-step, no
/// options, resending its last packet on timeout: the simplest client there is, as a second
/// opinion on the async client above (a runtime's scheduling on the client side shapes how
/// fast short transfers turn around).
pub(crate) fn get_small_blocking(
    server: SocketAddr,
    file: &str,
    expected: &[u8],
    timeout: Duration,
    retries: u32,
) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut last = Vec::new();
    packet::encode_request(
        &mut last,
        false,
        &Request {
            filename: file,
            mode: Mode::Octet,
            options: Vec::new(),
        },
    );
    let mut to = server;
    socket.send_to(&last, to).map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    let mut buf = [0u8; 600];
    let mut failures = 0;
    loop {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                failures += 1;
                if failures > retries {
                    return Err(format!("timed out at byte {}", received.len()));
                }
                socket.send_to(&last, to).map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        match packet::decode(&buf[..len]) {
            Ok(Packet::Data { block, data }) => {
                let expected_block = (received.len() / 512 + 1) as u16;
                if block != expected_block {
                    continue;
                }
                received.extend_from_slice(data);
                to = from;
                last.clear();
                packet::encode_ack(&mut last, block);
                socket.send_to(&last, to).map_err(|e| e.to_string())?;
                if data.len() < 512 {
                    return if received == expected {
                        Ok(())
                    } else {
                        Err("wrong bytes".into())
                    };
                }
            }
            Ok(Packet::Error { code, message }) => {
                return Err(format!("server error {code}: {message}"));
            }
            _ => {}
        }
    }
}
