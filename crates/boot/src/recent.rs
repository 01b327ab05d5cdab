//! A map that keeps the most recently touched entries, up to a fixed number: what bootherd
//! remembers about machines (timelines, what was seen) must stay bounded even when a flood of
//! DHCP requests invents a new MAC address for every packet. Touch and eviction are O(log n):
//! this runs for every DHCP request.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct RecentMap<K, V> {
    capacity: usize,
    clock: u64,
    entries: HashMap<K, (u64, V)>,
    /// Touch time -> key, oldest first.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Copy, V: Default> RecentMap<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentMap {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The entry for `key`, created if needed (forgetting the least recently touched entry when
    /// full), and marked as touched now.
    pub(crate) fn touch(&mut self, key: K) -> &mut V {
        self.touch_evicting(key, drop)
    }

    /// [`RecentMap::touch`], handing a forgotten entry to `evicted` (to keep totals right).
    pub(crate) fn touch_evicting(&mut self, key: K, evicted: impl FnOnce(V)) -> &mut V {
        self.clock += 1;
        let now = self.clock;
        if let Some((touched, _)) = self.entries.get(&key) {
            self.order.remove(touched);
        } else if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                if let Some((_, value)) = self.entries.remove(&oldest) {
                    evicted(value);
                }
            }
        }
        self.order.insert(now, key);
        let entry = self
            .entries
            .entry(key)
            .or_insert_with(|| (now, V::default()));
        entry.0 = now;
        &mut entry.1
    }

    /// The entry touched least recently.
    pub(crate) fn oldest_mut(&mut self) -> Option<&mut V> {
        let key = self.order.first_key_value()?.1;
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    /// Forgets the entry touched least recently.
    pub(crate) fn pop_oldest(&mut self) -> Option<V> {
        let (_, key) = self.order.pop_first()?;
        self.entries.remove(&key).map(|(_, v)| v)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k, v))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_touched() {
        let mut map: RecentMap<u32, u32> = RecentMap::new(3);
        for key in [1, 2, 3] {
            *map.touch(key) += 1;
        }
        *map.touch(1) += 1; // 1 is now the most recent
        *map.touch(4) += 1; // evicts 2, the least recent
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&2), None);
        assert_eq!(map.get(&1), Some(&2));
        assert_eq!(map.get(&3), Some(&1));
        assert_eq!(map.get(&4), Some(&1));
    }
}
