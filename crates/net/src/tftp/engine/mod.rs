//! The transfer engine: a few threads, each an epoll loop over the sockets of its transfers.
//!
//! Why not a tokio task per transfer (the first driver): in a boot storm or a run of small
//! requests the cost per datagram was not the protocol but the runtime around it: the I/O
//! driver's wake-up and the task's scheduling, a readiness check that ended in an extra
//! `recvmsg` returning EAGAIN, an `epoll_wait` with zero timeout before parking, and an
//! `epoll_ctl` pair per transfer socket. Here a datagram costs one `recvfrom` and one `sendmsg`,
//! and one `epoll_wait` is shared by every transfer that became ready at once (level-triggered,
//! so nothing needs draining to EAGAIN; closing a socket removes it from the set). This is
//! dnsmasq's structure with epoll instead of poll. The protocol stays in the sans-IO core (the
//! `Endpoint` decides what each datagram on the listening port means); the engine only moves
//! datagrams and deadlines: `worker` is a thread's loop, `slot` a transfer's socket and send
//! path, `report` what a finished transfer tells counters, observer and log.
//!
//! Every thread also watches the listening socket (`EPOLLEXCLUSIVE`: the kernel wakes one idle
//! thread per request, not all of them), and a transfer runs on the thread that read its
//! request: a request is read, accepted and answered without a hand-over. Threads only talk to
//! each other (a channel and an eventfd) when a datagram concerns a transfer another thread
//! runs: a repeated or superseding request. Single-port mode runs one thread, which reads
//! every datagram of every transfer in the order they came.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use bootherd_tftp::TransferId;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tracing::{error, info};

use super::{Shared, TransferPorts};
use crate::udp::Arrival;

mod report;
mod slot;
mod worker;

#[cfg(test)]
mod tests;

use worker::Worker;

/// A read or write request as it came in on the listener.
struct Incoming {
    datagram: Vec<u8>,
    arrival: Arrival,
}

/// What the thread that read a datagram on the listener tells the thread running the transfer
/// it concerns.
enum Command {
    /// A datagram for transfer `id` that arrived on the listener (single-port mode).
    Packet { id: TransferId, datagram: Vec<u8> },
    /// The client of transfer `id` sent its request again, before anything showed it had our
    /// reply: usually the reply was lost. The request travels along in case the transfer turns
    /// out to be over.
    RepeatedRequest {
        id: TransferId,
        request: Box<Incoming>,
    },
    /// A different request from the same client address and port replaced transfer `id`.
    Supersede { id: TransferId },
}

/// The engine threads, as `serve` sees them: started, then stopped.
pub(super) struct Engine {
    workers: Vec<WorkerHandle>,
    /// Set to tell the threads to end their transfers and finish.
    stopping: Arc<AtomicBool>,
}

struct WorkerHandle {
    doorbell: Arc<Doorbell>,
    thread: Option<JoinHandle<()>>,
}

/// One engine thread's way to another.
struct Peer {
    commands: mpsc::Sender<Command>,
    doorbell: Arc<Doorbell>,
}

impl Engine {
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for handle in &self.workers {
            handle.doorbell.ring();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wakes an engine thread from `epoll_wait` when a command is queued; rung at most once
/// until answered, so a burst of requests costs one `write` and one `read`, not one each.
struct Doorbell {
    fd: EventFd,
    rung: AtomicBool,
}

impl Doorbell {
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            // Only fails if the counter would overflow, and then the thread is awake anyway.
            let _ = self.fd.write(1);
        }
    }

    /// Called before the thread drains its commands. The counter is cleared first: a ring
    /// between the two steps then writes again (a spurious wake-up at worst); the other order
    /// could swallow that write and leave `rung` set, silencing the bell for good.
    fn answer(&self) {
        let _ = self.fd.read();
        self.rung.store(false, Ordering::SeqCst);
    }
}

/// Epoll keys of the doorbell and the listening socket; transfer ids count up from 0 and never
/// reach them.
const DOORBELL: u64 = u64::MAX;
const LISTENER: u64 = u64::MAX - 1;
/// Events taken from the kernel per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
/// Engine threads unless configured: one per CPU, at most four. Most of the cost of a datagram
/// is the kernel's (on loopback, `sendmsg` also runs the receiver's network stack), so a
/// thread per CPU lets that work run on every CPU at once. On a 2-CPU machine two threads
/// served 32,500 small transfers per second against 29,000 for one (the single thread kept
/// sleeping and waking, leaving the machine 19 % idle) and finished the 1000-client storm in
/// 5.2 s against 5.6 s (docs/benchmarks.md). A second thread once made the storm slower; that
/// was while a tokio task read the listening socket and every request crossed threads.
/// More than four has not been measured here: one thread still reads every request.
const MAX_THREADS: usize = 4;

impl Engine {
    pub(super) fn start(shared: &Arc<Shared>) -> io::Result<Engine> {
        let single_port = shared.service.config.ports == TransferPorts::Single;
        let threads = match shared.service.config.threads {
            // Every datagram of every transfer arrives on the one socket, and one client's
            // datagrams must be handled in the order they came: one thread reads them all,
            // and a transfer elsewhere would only add a hand-over per datagram.
            _ if single_port => 1,
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_THREADS),
            chosen => chosen,
        };
        if single_port && shared.service.config.threads > 1 {
            info!(
                configured = shared.service.config.threads,
                "single-port mode runs one TFTP engine thread; the thread count does not apply"
            );
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        let mut senders = Vec::with_capacity(threads);
        for index in 0..threads {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            let doorbell = Arc::new(Doorbell {
                fd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
                rung: AtomicBool::new(false),
            });
            epoll.add(&doorbell.fd, EpollEvent::new(EpollFlags::EPOLLIN, DOORBELL))?;
            // Without EXCLUSIVE every idle thread would wake for each request and all but one
            // would find the queue empty.
            epoll.add(
                &shared.listener,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER),
            )?;
            let (commands, inbox) = mpsc::channel();
            workers.push(Worker::new(
                index,
                shared.clone(),
                epoll,
                doorbell.clone(),
                inbox,
                stopping.clone(),
            ));
            senders.push(commands);
            handles.push(WorkerHandle {
                doorbell,
                thread: None,
            });
        }
        for worker in &mut workers {
            let index = worker.index();
            let peers = senders
                .iter()
                .zip(&handles)
                .enumerate()
                .map(|(other, (commands, handle))| {
                    (other != index).then(|| Peer {
                        commands: commands.clone(),
                        doorbell: handle.doorbell.clone(),
                    })
                })
                .collect();
            worker.set_peers(peers);
        }
        drop(senders);
        let mut engine = Engine {
            workers: handles,
            stopping,
        };
        for (worker, handle) in workers.into_iter().zip(&mut engine.workers) {
            handle.thread = Some(
                std::thread::Builder::new()
                    .name("bootherd-tftp".into())
                    .spawn(move || worker.run())?,
            );
        }
        Ok(engine)
    }

    /// Ends every transfer (their clients are told) and waits for the threads. Blocks.
    pub(super) fn shutdown(mut self) {
        self.stop();
        for handle in &mut self.workers {
            if let Some(thread) = handle.thread.take() {
                if thread.join().is_err() {
                    error!("a TFTP engine thread panicked");
                }
            }
        }
    }
}
