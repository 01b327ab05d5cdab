//! Each machine's recent boot steps, newest last, bounded so a machine that boots in a loop
//! cannot grow memory without limit. Kept in memory: it explains the current boot, not history.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use bootherd_store::Mac;

/// Steps kept per machine.
pub const PER_MACHINE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    pub at: SystemTime,
    pub what: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Timeline {
    machines: Mutex<HashMap<Mac, VecDeque<TimelineEvent>>>,
}

impl Timeline {
    pub fn record(&self, mac: Mac, what: &str, detail: String) {
        let mut machines = self.machines.lock().unwrap_or_else(|p| p.into_inner());
        let events = machines.entry(mac).or_default();
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
