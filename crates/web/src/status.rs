//! What the dashboard knows about the running servers: their listeners, counters and
//! transfers. The binary fills this in as it binds sockets and starts services.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bootherd_net::{ActiveTransfers, DhcpCounters, Interfaces, TftpCounters};

/// A socket a service listens on.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// Why it stopped; none while it runs.
    failure: Mutex<Option<String>>,
}

impl Listener {
    /// None while healthy, else what went wrong.
    pub fn state(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn failed(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

/// HTTP boot endpoint counters.
#[derive(Debug, Default)]
pub struct HttpCounters {
    pub scripts: AtomicU64,
    pub files: AtomicU64,
    /// Body bytes of scripts and image files served.
    pub bytes: AtomicU64,
    /// Requests for scripts or files that do not exist.
    pub not_found: AtomicU64,
}

#[derive(Debug)]
pub struct Services {
    pub started: SystemTime,
    pub interfaces: Option<Arc<Interfaces>>,
    pub dhcp: Option<Arc<DhcpCounters>>,
    pub tftp: Option<Arc<TftpCounters>>,
    pub transfers: Option<Arc<ActiveTransfers>>,
    pub http: HttpCounters,
    listeners: Mutex<Vec<Arc<Listener>>>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            started: SystemTime::now(),
            interfaces: None,
            dhcp: None,
            tftp: None,
            transfers: None,
            http: HttpCounters::default(),
            listeners: Mutex::new(Vec::new()),
        }
    }
}

impl Services {
    /// Registers a listening socket; the returned handle reports its failure.
    pub fn listening(&self, name: &str, address: SocketAddr) -> Arc<Listener> {
        let listener = Arc::new(Listener {
            name: name.to_string(),
            address,
            failure: Mutex::new(None),
        });
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener.clone());
        listener
    }

    pub fn listeners(&self) -> Vec<Arc<Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
