//! Sticky conversations' pins in memory: each pin lapses at its own instant, and past the
//! capacity the pin that lapses soonest goes first. A pin is written again after every turn, so
//! with one TTL per policy the soonest to lapse is the conversation idle longest (least recently
//! used).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Pins by conversation key, with an index by lapse instant for eviction in O(log n).
pub struct Pins {
    capacity: usize,
    by_key: HashMap<String, (String, Instant)>,
    by_lapse: BTreeSet<(Instant, String)>,
}

impl Pins {
    /// An empty set that holds at most `capacity` pins (at least one).
    pub fn new(capacity: usize) -> Pins {
        Pins {
            capacity: capacity.max(1),
            by_key: HashMap::new(),
            by_lapse: BTreeSet::new(),
        }
    }

    /// The pin of `key`, unless it has lapsed by `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<&str> {
        self.by_key
            .get(key)
            .filter(|(_, lapse)| *lapse > now)
            .map(|(v, _)| v.as_str())
    }

    /// Sets the pin of `key` until `lapse`. Lapsed pins are dropped first; when the set is still
    /// full, the pin that lapses soonest makes room.
    pub fn set(&mut self, key: &str, value: &str, lapse: Instant, now: Instant) {
        if let Some((_, old)) = self.by_key.remove(key) {
            self.by_lapse.remove(&(old, key.to_string()));
        }
        while let Some((first, _)) = self.by_lapse.first() {
            if *first > now && self.by_key.len() < self.capacity {
                break;
            }
            if let Some((_, k)) = self.by_lapse.pop_first() {
                self.by_key.remove(&k);
            }
        }
        self.by_key
            .insert(key.to_string(), (value.to_string(), lapse));
        self.by_lapse.insert((lapse, key.to_string()));
    }

    /// Pins held, lapsed or not.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no pin is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn past_capacity_the_conversation_idle_longest_goes_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut pins = Pins::new(3);
        pins.set("a", "m1", t0 + 100 * s, t0);
        pins.set("b", "m2", t0 + 101 * s, t0 + s);
        pins.set("c", "m1", t0 + 102 * s, t0 + 2 * s);
        // `a` has a new turn: its pin moves to the back.
        pins.set("a", "m1", t0 + 103 * s, t0 + 3 * s);
        pins.set("d", "m3", t0 + 104 * s, t0 + 4 * s);
        assert_eq!(pins.len(), 3);
        let now = t0 + 5 * s;
        assert_eq!(pins.get("b", now), None, "idle longest, evicted");
        assert_eq!(pins.get("a", now), Some("m1"));
        assert_eq!(pins.get("c", now), Some("m1"));
        assert_eq!(pins.get("d", now), Some("m3"));
    }

    #[test]
    fn lapsed_pins_are_not_read_and_are_dropped_on_the_next_write() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut pins = Pins::new(10);
        pins.set("a", "m1", t0 + s, t0);
        pins.set("b", "m2", t0 + 50 * s, t0);
        assert_eq!(pins.get("a", t0 + 2 * s), None);
        assert_eq!(pins.get("b", t0 + 2 * s), Some("m2"));
        pins.set("c", "m1", t0 + 60 * s, t0 + 2 * s);
        assert_eq!(pins.len(), 2, "the lapsed pin is gone");
        assert!(!pins.is_empty());
    }

    #[test]
    fn rewriting_a_pin_changes_its_value_and_keeps_one_entry() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut pins = Pins::new(2);
        pins.set("a", "m1", t0 + 10 * s, t0);
        pins.set("a", "m2", t0 + 20 * s, t0 + s);
        pins.set("b", "m1", t0 + 21 * s, t0 + s);
        assert_eq!(pins.len(), 2);
        assert_eq!(pins.get("a", t0 + 15 * s), Some("m2"));
        assert_eq!(pins.get("b", t0 + 15 * s), Some("m1"));
    }
}
