//! The HTTP listener: accepts connections and hands each to hyper with the limits a LAN-facing
//! server needs. A connection must send its request headers within the header timeout (idle
//! keep-alive connections included), so half-sent requests cannot pile up and share the file
//! descriptor limit with TFTP. Connections are capped in total and per client address, so one
//! host opening thousands of connections cannot take the slots that booting machines need;
//! a connection over its host's share is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::HttpLimits;

/// Connections per client address, shared by the accept loop and the connections' guards.
#[derive(Debug, Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerClient`], given back when the connection ends.
#[derive(Debug)]
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let total = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    let mut connections = tokio::task::JoinSet::new();
    // One warning per client flood, not one per refused connection.
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        // At the total cap, stop accepting: new connections wait in the kernel's queue.
        let permit = tokio::select! {
            permit = total.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = per_client.take(peer.ip(), limits.max_connections_per_client) else {
            if last_warning.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10)) {
                warn!(client = %peer.ip(), limit = limits.max_connections_per_client, "HTTP connection refused: this client already holds its share of connections (raise --http-max-connections-per-client if one host really needs more)");
                last_warning = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let service = {
            let router = router.clone();
            tower::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            })
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _held = (permit, slot);
            let connection = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(client = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Requests in flight get a moment to finish; event streams end on the same token.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
