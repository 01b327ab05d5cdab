//! What the dashboard knows about the running servers: their listeners, the interfaces they
//! serve, their counters and transfers. The binary fills this in as it binds sockets and
//! starts services.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::counters::{DhcpCounters, HttpCounters, TftpCounters};
use crate::lock;
use crate::transfers::ActiveTransfers;

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
        lock(&self.failure).clone()
    }

    pub fn failed(&self, reason: String) {
        *lock(&self.failure) = Some(reason);
    }
}

/// One interface the DHCP responder serves, as shown on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    pub up: bool,
}

/// The interfaces served now; implemented by the driver that selects them.
pub trait InterfaceList: Send + Sync + fmt::Debug {
    fn current(&self) -> Vec<InterfaceState>;
}

#[derive(Debug)]
pub struct Services {
    pub started: SystemTime,
    pub interfaces: Option<Arc<dyn InterfaceList>>,
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
        lock(&self.listeners).push(listener.clone());
        listener
    }

    pub fn listeners(&self) -> Vec<Arc<Listener>> {
        lock(&self.listeners).clone()
    }
}
