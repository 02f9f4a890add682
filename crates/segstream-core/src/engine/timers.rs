//! Event time and pending timers per shard.
//!
//! Each shard (input partition) has its own clock: a watermark, the largest event time seen,
//! and a min-heap of `(due, customer id)` timer entries. A shard's customers are judged
//! late, and their timers fired, by that shard's own progress (a partition that moves
//! between instances brings no other partition's time with it). A shard seen for the first
//! time starts at the floor: the watermark `Engine::advance_watermark` raised for all.
//!
//! The heap may hold stale entries (a customer rescheduled earlier, expired or moved to
//! another shard): the profile's own `timer_at` is the truth, and the engine skips an entry
//! that no longer matches it when popped.

use std::sync::Arc;

use super::Profiles;
use crate::profile::{millis, secs, Secs};
use crate::time::Millis;

/// A min-heap of `(due, customer id)` ordered by due time, then id, kept as two arrays:
/// 20 bytes an entry (a due second and the id's `Arc`) where a `BinaryHeap` of
/// `(Millis, Arc<str>)` takes 24. Due times are whole seconds (profiles keep `timer_at` in
/// seconds), so the seconds are exact.
#[derive(Debug, Default)]
struct TimerHeap {
    due: Vec<Secs>,
    ids: Vec<Arc<str>>,
}

impl TimerHeap {
    fn len(&self) -> usize {
        self.due.len()
    }

    fn clear(&mut self) {
        self.due.clear();
        self.ids.clear();
    }

    fn less(&self, i: usize, j: usize) -> bool {
        (self.due[i], &*self.ids[i]) < (self.due[j], &*self.ids[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.due.swap(i, j);
        self.ids.swap(i, j);
    }

    fn push(&mut self, due: Secs, id: Arc<str>) {
        self.due.push(due);
        self.ids.push(id);
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

    /// Takes the earliest entry (the smallest id among equal due times).
    fn pop(&mut self) -> Option<(Secs, Arc<str>)> {
        let last = self.len().checked_sub(1)?;
        self.swap(0, last);
        let entry = (self.due.pop()?, self.ids.pop()?);
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
    /// Heap entries over every shard, stale ones included.
    total: usize,
    /// The watermark a shard starts with (raised by `Engine::advance_watermark`).
    floor: Millis,
}

impl Timers {
    pub(super) fn new() -> Self {
        Timers {
            shards: hashbrown::HashMap::new(),
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
    pub(super) fn push(&mut self, shard: u16, at: Millis, id: Arc<str>) {
        debug_assert_eq!(millis(secs(at)), at, "timers are due at whole seconds");
        self.clock(shard).heap.push(secs(at), id);
        self.total += 1;
    }

    /// Takes the earliest entry of `shard` if it is due at or before `to` (entries due at
    /// the same time come out by customer id).
    pub(super) fn pop_due(&mut self, shard: u16, to: Millis) -> Option<(Millis, Arc<str>)> {
        let heap = &mut self.shards.get_mut(&shard)?.heap;
        if heap.peek().is_none_or(|t| millis(t) > to) {
            return None;
        }
        self.total -= 1;
        heap.pop().map(|(t, id)| (millis(t), id))
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
            self.push(p.shard, millis(p.timer_at), k.clone());
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

    #[test]
    fn pops_due_entries_in_time_then_id_order() {
        let mut t = Timers::new();
        t.push(0, 3_000, id("c"));
        t.push(0, 1_000, id("b"));
        t.push(0, 1_000, id("a"));
        t.push(1, 5_000, id("other shard"));
        assert_eq!(t.entries(0), 3);
        assert_eq!(t.next_due(0), Some(1_000));
        assert_eq!(t.next_due(7), None, "an unknown shard has no entry");
        assert_eq!(t.pop_due(0, 999), None);
        assert_eq!(t.pop_due(0, 1_000), Some((1_000, id("a"))));
        assert_eq!(t.pop_due(0, 1_000), Some((1_000, id("b"))));
        assert_eq!(t.pop_due(0, 2_999), None);
        assert_eq!(t.pop_due(0, Millis::MAX), Some((3_000, id("c"))));
        assert_eq!(t.pop_due(0, Millis::MAX), None);
        assert_eq!(
            t.pop_due(7, Millis::MAX),
            None,
            "an unknown shard has nothing due"
        );
        assert_eq!(t.entries(1), 1);
        assert_eq!(t.total_entries(), 1);
    }

    /// The two-array heap pops exactly what a `BinaryHeap` of `(due, id)` pops.
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
                let name = id(&format!("c{}", (x >> 8) % 40));
                ours.push(due, name.clone());
                std_heap.push(Reverse((due, name)));
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
        let mut t = Timers::new();
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
        t.push(5, 1_000, id("x"));
        assert_eq!(t.shard_watermark(5), 20_000);
        let mut shards = t.shards();
        shards.sort();
        assert_eq!(shards, [4, 5]);
        assert_eq!(t.watermark(), 10_000, "the lowest over the shards");
    }

    #[test]
    fn shard_time_only_moves_forward() {
        let mut t = Timers::new();
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
        let mut t = Timers::new();
        let mut profiles = Profiles::new();
        for (name, shard, timer_at) in [("a", 0, 5), ("b", 1, 0), ("c", 1, 7)] {
            let mut p = Profile::new();
            p.shard = shard;
            p.timer_at = timer_at;
            profiles.insert(id(name), p);
        }
        // Stale entries: "a" rescheduled, "b" without a timer any more.
        t.push(0, 9_000, id("a"));
        t.push(1, 2_000, id("b"));
        t.raise_watermark(3, 1_000);
        t.rebuild(&profiles);
        assert_eq!(t.entries(0), 1);
        assert_eq!(t.entries(1), 1);
        assert_eq!(t.total_entries(), 2);
        assert_eq!(t.shard_watermark(3), 1_000, "clocks survive a rebuild");
        assert_eq!(t.pop_due(0, Millis::MAX), Some((5_000, id("a"))));
        assert_eq!(t.pop_due(1, Millis::MAX), Some((7_000, id("c"))));
        t.push(1, 1_000, id("d"));
        t.clear();
        assert_eq!(t.entries(1), 0);
    }

    #[test]
    fn retain_shards_drops_clocks_and_timers() {
        let mut t = Timers::new();
        t.push(1, 1_000, id("a"));
        t.push(2, 1_000, id("b"));
        t.raise_watermark(2, 500);
        assert_eq!(t.total_entries(), 2);
        t.retain_shards(&|s| s != 2);
        assert_eq!(t.total_entries(), 1);
        assert_eq!(t.shards(), [1]);
        assert_eq!(t.entries(2), 0);
        assert_eq!(t.shard_watermark(2), Millis::MIN, "back to the floor");
    }
}
