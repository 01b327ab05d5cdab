//! Which network interfaces bootherd answers on.
//!
//! Sockets are bound to the wildcard address (to receive broadcasts) and every datagram is
//! checked against the selected interfaces by the index the kernel reports for it
//! (IP_PKTINFO), so a config naming `eth1` never answers requests arriving on `eth0`. The list
//! is re-read periodically: interfaces and addresses come and go (DHCP-assigned host
//! addresses, VLANs created after start).
//!
//! nix's getifaddrs is used instead of pnet_datalink: it gives names, flags and IPv4 addresses,
//! which is all this needs, without another dependency.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::{InterfaceFlags, if_nametoindex};

/// One IPv4-capable interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub addresses: Vec<Ipv4Addr>,
    pub up: bool,
    pub loopback: bool,
}

/// Lists interfaces with at least one IPv4 address.
pub fn list() -> std::io::Result<Vec<Interface>> {
    let mut by_name: HashMap<String, Interface> = HashMap::new();
    for entry in getifaddrs().map_err(std::io::Error::from)? {
        let Some(ip) = entry
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        let Ok(index) = if_nametoindex(entry.interface_name.as_str()) else {
            continue;
        };
        let interface = by_name
            .entry(entry.interface_name.clone())
            .or_insert_with(|| Interface {
                name: entry.interface_name.clone(),
                index,
                addresses: Vec::new(),
                up: entry.flags.contains(InterfaceFlags::IFF_UP),
                loopback: entry.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            });
        interface.addresses.push(ip);
    }
    let mut interfaces: Vec<Interface> = by_name.into_values().collect();
    interfaces.sort_by_key(|i| i.index);
    Ok(interfaces)
}

/// The operator's choice of interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every interface that is up, has IPv4 and is not loopback.
    AllExceptLoopback,
    /// Exactly these, by name (loopback allowed when named, for tests and local setups).
    Named(Vec<String>),
}

impl Selection {
    fn admits(&self, interface: &Interface) -> bool {
        match self {
            Selection::AllExceptLoopback => interface.up && !interface.loopback,
            Selection::Named(names) => names.contains(&interface.name),
        }
    }
}

const REFRESH: Duration = Duration::from_secs(10);

/// The selected interfaces, refreshed at most every ten seconds.
#[derive(Debug)]
pub struct Interfaces {
    selection: Selection,
    cache: Mutex<(Option<Instant>, Vec<Interface>)>,
}

impl Interfaces {
    pub fn new(selection: Selection) -> Interfaces {
        Interfaces {
            selection,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// Runs `f` on the selected interfaces, refreshing the list when it is older than
    /// `REFRESH`. Every DHCP packet asks, so nothing is copied here.
    fn with_current<T>(&self, f: impl FnOnce(&[Interface]) -> T) -> T {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cache.0.is_some_and(|at| at.elapsed() < REFRESH);
        if !fresh {
            if let Ok(all) = list() {
                cache.1 = all
                    .into_iter()
                    .filter(|i| self.selection.admits(i))
                    .collect();
            }
            cache.0 = Some(Instant::now());
        }
        f(&cache.1)
    }

    /// The selected interfaces now.
    pub fn current(&self) -> Vec<Interface> {
        self.with_current(<[Interface]>::to_vec)
    }

    /// The selected interface with this index, if it is one.
    pub fn by_index(&self, index: u32) -> Option<Interface> {
        self.with_current(|all| all.iter().find(|i| i.index == index).cloned())
    }

    /// Every IPv4 address of the selected interfaces.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.with_current(|all| {
            all.iter()
                .flat_map(|i| i.addresses.iter().copied())
                .collect()
        })
    }

    /// Names in the selection that match no interface, for a start-up warning.
    pub fn missing(&self) -> Vec<String> {
        match &self.selection {
            Selection::AllExceptLoopback => Vec::new(),
            Selection::Named(names) => {
                let present = self.current();
                names
                    .iter()
                    .filter(|n| !present.iter().any(|i| &i.name == *n))
                    .cloned()
                    .collect()
            }
        }
    }
}

impl bootherd_telemetry::InterfaceList for Interfaces {
    fn current(&self) -> Vec<bootherd_telemetry::InterfaceState> {
        self.with_current(|all| {
            all.iter()
                .map(|i| bootherd_telemetry::InterfaceState {
                    name: i.name.clone(),
                    addresses: i.addresses.clone(),
                    up: i.up,
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_only_selected_when_named() {
        let all = list().unwrap();
        let lo = all
            .iter()
            .find(|i| i.loopback)
            .expect("a loopback interface");
        assert!(lo.addresses.contains(&Ipv4Addr::LOCALHOST));
        assert!(
            Interfaces::new(Selection::AllExceptLoopback)
                .by_index(lo.index)
                .is_none()
        );
        let named = Interfaces::new(Selection::Named(vec![lo.name.clone(), "nosuch0".into()]));
        assert!(named.by_index(lo.index).is_some());
        assert_eq!(named.missing(), vec!["nosuch0".to_string()]);
    }
}
