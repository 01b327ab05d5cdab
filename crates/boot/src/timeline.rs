//! Each machine's recent boot steps, newest last, bounded so a machine that boots in a loop
//! cannot grow memory without limit. Kept in memory: it explains the current boot, not history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use bootherd_store::Mac;

use crate::recent::RecentMap;

/// Steps kept per machine.
pub const PER_MACHINE: usize = 200;
/// Machines kept. A flood of DHCP requests with made-up MAC addresses must not grow memory
/// without bound: past this, the machine heard from least recently is forgotten.
pub const MACHINES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    pub at: SystemTime,
    pub what: String,
    pub detail: String,
}

#[derive(Debug)]
pub struct Timeline {
    machines: Mutex<RecentMap<Mac, VecDeque<TimelineEvent>>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            machines: Mutex::new(RecentMap::new(MACHINES)),
        }
    }
}

impl Timeline {
    pub fn record(&self, mac: Mac, what: &str, detail: String) {
        let mut machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        let events = machines.touch(mac);
        if events.len() == PER_MACHINE {
            events.pop_front();
        }
        events.push_back(TimelineEvent {
            at: SystemTime::now(),
            what: what.to_string(),
            detail,
        });
    }

    pub fn events(&self, mac: &Mac) -> Vec<TimelineEvent> {
        let machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        machines
            .get(mac)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_machines() {
        let timeline = Timeline::default();
        for i in 0..MACHINES as u32 + 10 {
            let b = i.to_be_bytes();
            timeline.record(Mac([2, 0, b[0], b[1], b[2], b[3]]), "step", String::new());
        }
        assert_eq!(timeline.machines.lock().unwrap().len(), MACHINES);
        // The first machines, heard from longest ago, are the ones forgotten.
        assert!(timeline.events(&Mac([2, 0, 0, 0, 0, 0])).is_empty());
        let last = (MACHINES as u32 + 9).to_be_bytes();
        assert_eq!(
            timeline
                .events(&Mac([2, 0, last[0], last[1], last[2], last[3]]))
                .len(),
            1
        );
    }

    #[test]
    fn bounded_per_machine() {
        let timeline = Timeline::default();
        let mac = Mac([2, 0, 0, 0, 0, 1]);
        for i in 0..PER_MACHINE + 5 {
            timeline.record(mac, "step", i.to_string());
        }
        let events = timeline.events(&mac);
        assert_eq!(events.len(), PER_MACHINE);
        assert_eq!(events[0].detail, "5");
    }
}
