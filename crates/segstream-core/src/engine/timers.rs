//! Event time and pending timers per shard.
//!
//! Each shard (input partition) has its own clock: a watermark, the largest event time seen,
//! and a min-heap of `(due, customer)` timer entries. A shard's customers are judged
//! late, and their timers fired, by that shard's own progress (a partition that moves
//! between instances brings no other partition's time with it). A shard seen for the first
//! time starts at the floor: the watermark `Engine::advance_watermark` raised for all.
//!
//! An entry names its customer by the hash of the id the profile table indexes it by (8
//! bytes; the id's `Arc` took 16), so an entry leads back to the profile through the
//! table. The heap may hold stale entries (a customer rescheduled earlier, expired or
//! moved to another shard): the profile's own `timer_at` is the truth, and the engine skips
//! an entry that no longer matches it. Entries due at the same second are taken together
//! and fired in customer id order, whatever their hashes.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use super::Profiles;
use crate::profile::{millis, secs, Secs};
use crate::time::Millis;

/// A min-heap of `(due, key)` ordered by due time, then key, kept as two arrays: 12 bytes
/// an entry (a due second and the hash of the customer's id) where a `BinaryHeap` of
/// `(Millis, Arc<str>)` takes 24. Due times are whole seconds (profiles keep `timer_at` in
/// seconds), so the seconds are exact.
#[derive(Debug, Default)]
struct TimerHeap {
    due: Vec<Secs>,
    keys: Vec<u64>,
}

impl TimerHeap {
    fn len(&self) -> usize {
        self.due.len()
    }

    fn clear(&mut self) {
        self.due.clear();
        self.keys.clear();
    }

    fn less(&self, i: usize, j: usize) -> bool {
        (self.due[i], self.keys[i]) < (self.due[j], self.keys[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.due.swap(i, j);
        self.keys.swap(i, j);
    }

    fn push(&mut self, due: Secs, key: u64) {
        self.due.push(due);
        self.keys.push(key);
        let mut i = self.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    /// The earliest due time.
    fn peek(&self) -> Option<Secs> {
        self.due.first().copied()
    }

    /// Takes the earliest entry (the smallest key among equal due times).
    fn pop(&mut self) -> Option<(Secs, u64)> {
        let last = self.len().checked_sub(1)?;
        self.swap(0, last);
        let entry = (self.due.pop()?, self.keys.pop()?);
        let n = self.len();
        let mut i = 0;
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && self.less(right, left) {
                right
            } else {
                left
            };
            if !self.less(child, i) {
                break;
            }
            self.swap(child, i);
            i = child;
        }
        Some(entry)
    }
}

/// One shard's event time and pending timers.
#[derive(Debug)]
struct ShardClock {
    watermark: Millis,
    max_event_time: Millis,
    heap: TimerHeap,
}

/// The clocks and timer heaps of every shard seen. See the module documentation.
#[derive(Debug)]
pub(super) struct Timers {
    shards: hashbrown::HashMap<u16, ShardClock>,
    /// The profile table's hasher: an entry's key is `hasher.hash_one(id)`.
    hasher: DefaultHashBuilder,
    /// Heap entries over every shard, stale ones included.
    total: usize,
    /// The watermark a shard starts with (raised by `Engine::advance_watermark`).
    floor: Millis,
}

impl Timers {
    /// Timers for the profiles of a table hashing ids with `hasher`.
    pub(super) fn new(hasher: DefaultHashBuilder) -> Self {
        Timers {
            shards: hashbrown::HashMap::new(),
            hasher,
            total: 0,
            floor: Millis::MIN,
        }
    }

    /// A shard's clock, created at the floor if the shard is new.
    fn clock(&mut self, shard: u16) -> &mut ShardClock {
        let floor = self.floor;
        self.shards.entry(shard).or_insert_with(|| ShardClock {
            watermark: floor,
            max_event_time: Millis::MIN,
            heap: TimerHeap::default(),
        })
    }

    /// Schedules `id` at `at` (a whole second, as profiles keep their timers) in `shard`.
    pub(super) fn push(&mut self, shard: u16, at: Millis, id: &str) {
        debug_assert_eq!(millis(secs(at)), at, "timers are due at whole seconds");
        let key = self.hasher.hash_one(id);
        self.clock(shard).heap.push(secs(at), key);
        self.total += 1;
    }

    /// Takes every entry of `shard` due at its earliest due time, if that is at or before
    /// `to`: the due time, and the ids of the profiles those entries name whose own timer
    /// is due then (`timer_at`; stale entries name none), in id order, each once.
    pub(super) fn pop_due(
        &mut self,
        shard: u16,
        to: Millis,
        profiles: &Profiles,
    ) -> Option<(Millis, Vec<Arc<str>>)> {
        let heap = &mut self.shards.get_mut(&shard)?.heap;
        let due = heap.peek().filter(|&t| millis(t) <= to)?;
        let mut ids: Vec<Arc<str>> = Vec::new();
        while heap.peek() == Some(due) {
            let Some((_, key)) = heap.pop() else { break };
            self.total -= 1;
            ids.extend(
                profiles
                    .ids_hashed(key)
                    .filter(|(_, p)| p.timer_at == due)
                    .map(|(id, _)| Arc::from(id)),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        Some((millis(due), ids))
    }

    /// The due time of `shard`'s earliest heap entry (stale ones included).
    pub(super) fn next_due(&self, shard: u16) -> Option<Millis> {
        self.shards.get(&shard)?.heap.peek().map(millis)
    }

    /// Heap entries of `shard`, stale ones included.
    #[cfg(test)]
    pub(super) fn entries(&self, shard: u16) -> usize {
        self.shards.get(&shard).map_or(0, |s| s.heap.len())
    }

    /// Heap entries over every shard, stale ones included.
    pub(super) fn total_entries(&self) -> usize {
        self.total
    }

    /// Empties every heap (the clocks stay).
    pub(super) fn clear(&mut self) {
        for s in self.shards.values_mut() {
            s.heap.clear();
        }
        self.total = 0;
    }

    /// The heaps from the profiles' own due times (drops stale entries).
    pub(super) fn rebuild(&mut self, profiles: &Profiles) {
        self.clear();
        for (k, p) in profiles.iter().filter(|(_, p)| p.timer_at != 0) {
            self.push(p.shard, millis(p.timer_at), k);
        }
    }

    /// Raises the floor (never lowers it).
    pub(super) fn raise_floor(&mut self, to: Millis) {
        self.floor = self.floor.max(to);
    }

    /// The shards seen, in the map's order.
    pub(super) fn shards(&self) -> Vec<u16> {
        self.shards.keys().copied().collect()
    }

    /// Forgets the clocks of the shards `keep` refuses.
    pub(super) fn retain_shards(&mut self, keep: &dyn Fn(u16) -> bool) {
        self.shards.retain(|s, _| keep(*s));
        self.total = self.shards.values().map(|s| s.heap.len()).sum();
    }

    /// The lowest watermark over the shards (the floor if there are none).
    pub(super) fn watermark(&self) -> Millis {
        self.shards
            .values()
            .map(|s| s.watermark)
            .min()
            .unwrap_or(self.floor)
    }

    /// A shard's watermark (the floor for a shard not seen yet).
    pub(super) fn shard_watermark(&self, shard: u16) -> Millis {
        self.shards.get(&shard).map_or(self.floor, |s| s.watermark)
    }

    /// A shard's watermark and largest event time.
    pub(super) fn shard_time(&self, shard: u16) -> (Millis, Millis) {
        self.shards
            .get(&shard)
            .map_or((self.floor, Millis::MIN), |s| {
                (s.watermark, s.max_event_time)
            })
    }

    /// Raises a shard's watermark and largest event time (never lowers them).
    pub(super) fn set_shard_time(&mut self, shard: u16, watermark: Millis, max_event_time: Millis) {
        let c = self.clock(shard);
        c.watermark = c.watermark.max(watermark);
        c.max_event_time = c.max_event_time.max(max_event_time);
    }

    /// Raises a shard's watermark to `to` (never lowers it).
    pub(super) fn raise_watermark(&mut self, shard: u16, to: Millis) {
        let c = self.clock(shard);
        if to > c.watermark {
            c.watermark = to;
        }
    }

    /// Raises a shard's largest event time to `at` (never lowers it).
    pub(super) fn observe_event_time(&mut self, shard: u16, at: Millis) {
        let c = self.clock(shard);
        c.max_event_time = c.max_event_time.max(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Profiles `(id, shard, timer_at in seconds)`.
    fn profiles(list: &[(&str, u16, Secs)]) -> Profiles {
        let mut profiles = Profiles::new();
        for &(name, shard, timer_at) in list {
            let mut p = Profile::new();
            p.shard = shard;
            p.timer_at = timer_at;
            profiles.insert(name, p);
        }
        profiles
    }

    fn ids(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|s| id(s)).collect()
    }

    #[test]
    fn pops_due_entries_in_time_then_id_order() {
        let ps = profiles(&[("c", 0, 3), ("b", 0, 1), ("a", 0, 1), ("other shard", 1, 5)]);
        let mut t = Timers::new(ps.hasher());
        t.push(0, 3_000, "c");
        t.push(0, 1_000, "b");
        t.push(0, 1_000, "a");
        t.push(1, 5_000, "other shard");
        assert_eq!(t.entries(0), 3);
        assert_eq!(t.next_due(0), Some(1_000));
        assert_eq!(t.next_due(7), None, "an unknown shard has no entry");
        assert_eq!(t.pop_due(0, 999, &ps), None);
        assert_eq!(t.pop_due(0, 1_000, &ps), Some((1_000, ids(&["a", "b"]))));
        assert_eq!(t.pop_due(0, 2_999, &ps), None);
        assert_eq!(t.pop_due(0, Millis::MAX, &ps), Some((3_000, ids(&["c"]))));
        assert_eq!(t.pop_due(0, Millis::MAX, &ps), None);
        assert_eq!(
            t.pop_due(7, Millis::MAX, &ps),
            None,
            "an unknown shard has nothing due"
        );
        assert_eq!(t.entries(1), 1);
        assert_eq!(t.total_entries(), 1);
    }

    /// Entries of customers gone, rescheduled or pushed twice name nobody or the customer
    /// once; entries due at one second come out together, in id order whatever their
    /// hashes.
    #[test]
    fn stale_and_repeated_entries_fire_each_due_customer_once() {
        let names: Vec<String> = (0..200).map(|i| format!("c-{i:03}")).collect();
        let mut list: Vec<(&str, u16, Secs)> = names.iter().map(|n| (n.as_str(), 0, 7)).collect();
        list[5].2 = 9; // rescheduled later: its entry at 7 is stale
        let mut ps = profiles(&list);
        let mut t = Timers::new(ps.hasher());
        for n in names.iter().rev() {
            t.push(0, 7_000, n);
        }
        t.push(0, 7_000, "c-010"); // twice
        t.push(0, 9_000, "c-005");
        ps.remove("c-020"); // gone
        t.push(0, 7_000, "nobody");
        let (due, fired) = t.pop_due(0, 8_000, &ps).expect("due");
        assert_eq!(due, 7_000);
        let want: Vec<Arc<str>> = names
            .iter()
            .filter(|n| !["c-005", "c-020"].contains(&n.as_str()))
            .map(|n| id(n))
            .collect();
        assert_eq!(fired, want);
        assert_eq!(t.pop_due(0, 8_000, &ps), None);
        assert_eq!(t.pop_due(0, 9_000, &ps), Some((9_000, ids(&["c-005"]))));
        assert_eq!(t.total_entries(), 0);
    }

    /// The two-array heap pops exactly what a `BinaryHeap` of `(due, key)` pops.
    #[test]
    fn timer_heap_pops_in_the_order_of_a_binary_heap() {
        use std::cmp::Reverse;
        let mut ours = TimerHeap::default();
        let mut std_heap = std::collections::BinaryHeap::new();
        let mut x: u64 = 3;
        for step in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (x >> 40) % 3 == 0 {
                let want = std_heap.pop().map(|Reverse(e)| e);
                assert_eq!(ours.pop(), want, "step {step}");
            } else {
                let due = ((x >> 20) % 50) as Secs;
                let key = (x >> 8) % 40;
                ours.push(due, key);
                std_heap.push(Reverse((due, key)));
            }
            assert_eq!(ours.len(), std_heap.len());
            assert_eq!(ours.peek(), std_heap.peek().map(|Reverse((t, _))| *t));
        }
        while let Some(Reverse(e)) = std_heap.pop() {
            assert_eq!(ours.pop(), Some(e));
        }
        assert_eq!(ours.pop(), None);
    }

    #[test]
    fn new_shards_start_at_the_floor() {
        let mut t = Timers::new(DefaultHashBuilder::default());
        assert_eq!(t.watermark(), Millis::MIN);
        assert_eq!(t.shard_time(4), (Millis::MIN, Millis::MIN));
        t.raise_floor(10_000);
        t.raise_floor(5_000);
        assert_eq!(
            t.shard_watermark(4),
            10_000,
            "an unseen shard reads the floor"
        );
        assert!(t.shards().is_empty(), "reading creates no shard");
        t.observe_event_time(4, 12_000);
        assert_eq!(t.shard_time(4), (10_000, 12_000));
        t.raise_floor(20_000);
        assert_eq!(
            t.shard_watermark(4),
            10_000,
            "a raised floor leaves existing shards"
        );
        t.push(5, 1_000, "x");
        assert_eq!(t.shard_watermark(5), 20_000);
        let mut shards = t.shards();
        shards.sort();
        assert_eq!(shards, [4, 5]);
        assert_eq!(t.watermark(), 10_000, "the lowest over the shards");
    }

    #[test]
    fn shard_time_only_moves_forward() {
        let mut t = Timers::new(DefaultHashBuilder::default());
        t.set_shard_time(2, 5_000, 9_000);
        t.set_shard_time(2, 4_000, 8_000);
        assert_eq!(t.shard_time(2), (5_000, 9_000));
        t.raise_watermark(2, 3_000);
        assert_eq!(t.shard_watermark(2), 5_000);
        t.raise_watermark(2, 6_000);
        t.observe_event_time(2, 7_000);
        assert_eq!(t.shard_time(2), (6_000, 9_000));
        t.observe_event_time(2, 9_500);
        assert_eq!(t.shard_time(2), (6_000, 9_500));
    }

    #[test]
    fn rebuild_keeps_one_entry_per_pending_profile() {
        let ps = profiles(&[("a", 0, 5), ("b", 1, 0), ("c", 1, 7)]);
        let mut t = Timers::new(ps.hasher());
        // Stale entries: "a" rescheduled, "b" without a timer any more.
        t.push(0, 9_000, "a");
        t.push(1, 2_000, "b");
        t.raise_watermark(3, 1_000);
        t.rebuild(&ps);
        assert_eq!(t.entries(0), 1);
        assert_eq!(t.entries(1), 1);
        assert_eq!(t.total_entries(), 2);
        assert_eq!(t.shard_watermark(3), 1_000, "clocks survive a rebuild");
        assert_eq!(t.pop_due(0, Millis::MAX, &ps), Some((5_000, ids(&["a"]))));
        assert_eq!(t.pop_due(1, Millis::MAX, &ps), Some((7_000, ids(&["c"]))));
        t.push(1, 1_000, "d");
        t.clear();
        assert_eq!(t.entries(1), 0);
    }

    #[test]
    fn retain_shards_drops_clocks_and_timers() {
        let mut t = Timers::new(DefaultHashBuilder::default());
        t.push(1, 1_000, "a");
        t.push(2, 1_000, "b");
        t.raise_watermark(2, 500);
        assert_eq!(t.total_entries(), 2);
        t.retain_shards(&|s| s != 2);
        assert_eq!(t.total_entries(), 1);
        assert_eq!(t.shards(), [1]);
        assert_eq!(t.entries(2), 0);
        assert_eq!(t.shard_watermark(2), Millis::MIN, "back to the floor");
    }
}
