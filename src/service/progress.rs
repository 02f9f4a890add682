//! What the processing loop knows about its input between batches: which partition
//! numbers it owns (their state is in the engine), the last offset applied per input
//! partition, and each partition's event time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::OwnedMessage;

use super::watermarks::PartitionClocks;

/// A persons-topic event held while its person is being merged.
#[derive(Debug)]
pub struct Held {
    pub record: OwnedMessage,
    /// Its event time: the shard's time waits for it (see [`Progress::hold_limit`]).
    pub event_time: i64,
    /// The sequence it was read in and its source offset there.
    pub sequence: Option<(String, i64)>,
}

impl Held {
    /// The persons-topic partition it was read from.
    pub fn shard(&self) -> i32 {
        rdkafka::message::Message::partition(&self.record)
    }

    /// Its offset there.
    pub fn offset(&self) -> i64 {
        rdkafka::message::Message::offset(&self.record)
    }
}

/// One shard's held events as multisets: event times (held, being released, named by a
/// restored position) and persons-topic offsets (held); and the held events' entries of the
/// shard's position marker: per (sequence, source offset), the event time and how many.
#[derive(Debug, Default)]
struct Holds {
    times: BTreeMap<i64, u32>,
    offsets: BTreeMap<i64, u32>,
    markers: BTreeMap<(String, i64), (i64, u32)>,
}

impl Holds {
    fn add_held(&mut self, h: &Held) {
        add(&mut self.times, h.event_time);
        add(&mut self.offsets, h.offset());
        if let Some(key) = &h.sequence {
            let e = self.markers.entry(key.clone()).or_insert((h.event_time, 0));
            *e = (h.event_time, e.1 + 1);
        }
    }

    /// `h` is no longer held (its time still holds the shard back until it is applied).
    fn remove_held(&mut self, h: &Held) {
        remove(&mut self.offsets, h.offset());
        if let Some(key) = &h.sequence {
            if let Some(e) = self.markers.get_mut(key) {
                e.1 -= 1;
                if e.1 == 0 {
                    self.markers.remove(key);
                }
            }
        }
    }
}

fn add(set: &mut BTreeMap<i64, u32>, v: i64) {
    *set.entry(v).or_default() += 1;
}

fn remove(set: &mut BTreeMap<i64, u32>, v: i64) {
    if let std::collections::btree_map::Entry::Occupied(mut e) = set.entry(v) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// The loop's bookkeeping (see the module documentation).
#[derive(Debug, Default)]
pub struct Progress {
    /// Partition numbers whose state this instance holds (restored from the changelog).
    pub owned: BTreeSet<i32>,
    /// Highest offset applied to the engine per input partition: a message seen again after
    /// a failure before its offset was stored is not applied twice.
    pub applied: HashMap<(String, i32), i64>,
    /// With the router: per (sequence, shard), the highest source offset applied (see
    /// `service::persons`): an event routed or forwarded again after a crash upstream is
    /// recognised and skipped.
    pub routed: HashMap<(String, i32), i64>,
    /// With the router: events held while their person is being merged with a person of
    /// another instance, per person, in the order they came (see `service::persons`).
    held: HashMap<Arc<str>, Vec<Held>>,
    /// The held events of a released person not applied yet (while they are applied).
    releasing: VecDeque<Held>,
    /// Held events a restored position names (sequence, shard, source offset): read again,
    /// they are not duplicates though below their sequence's highest offset.
    /// With their event times (which hold the shard's time back until they are applied).
    held_sources: HashMap<(String, i32, i64), i64>,
    /// Per shard, the event times and offsets of the three above, counted, and the held
    /// events' marker entries: read per message and per marker without a scan of every
    /// held event.
    holds: HashMap<i32, Holds>,
    /// Event time per input partition (routed: per source partition and shard).
    pub clocks: PartitionClocks,
    /// With the router: the sequence of every input partition (`src:{topic}:{partition}`),
    /// each one a clock of every owned shard from its assignment on.
    pub sources: Vec<String>,
    /// When the gauges that scan the profiles were last refreshed.
    pub last_gauges: Option<Instant>,
}

impl Progress {
    /// A worker's progress before its first assignment; `sources` as [`Progress::sources`].
    pub fn new(sources: Vec<String>) -> Self {
        Progress {
            sources,
            ..Default::default()
        }
    }

    /// Whether a message at `offset` was applied already (then it is skipped); otherwise
    /// records it as applied.
    pub fn first_application(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self.applied.get_mut(&(topic.to_string(), partition)) {
            Some(a) if offset <= *a => false,
            Some(a) => {
                *a = offset;
                true
            }
            None => {
                self.applied.insert((topic.to_string(), partition), offset);
                true
            }
        }
    }

    /// Whether the event at `offset` of routed sequence `sequence` is new in `shard`
    /// (then it is recorded); `false` for one applied before.
    pub fn first_routed(&mut self, sequence: &str, shard: i32, offset: i64) -> bool {
        match self.routed.get_mut(&(sequence.to_string(), shard)) {
            Some(a) if offset <= *a => {
                // Held when the position was written: not applied yet.
                match self
                    .held_sources
                    .remove(&(sequence.to_string(), shard, offset))
                {
                    Some(time) => {
                        if let Some(holds) = self.holds.get_mut(&shard) {
                            remove(&mut holds.times, time);
                        }
                        true
                    }
                    None => false,
                }
            }
            Some(a) => {
                *a = offset;
                true
            }
            None => {
                self.routed.insert((sequence.to_string(), shard), offset);
                true
            }
        }
    }

    /// Holds `held` for `person` (after the events held for it before).
    pub fn hold(&mut self, person: Arc<str>, held: Held) {
        self.holds.entry(held.shard()).or_default().add_held(&held);
        self.held.entry(person).or_default().push(held);
    }

    /// `person`'s held events become the ones being released, in the order they came
    /// (taken with [`Progress::next_released`]); they hold their shard's time back until
    /// then.
    pub fn release(&mut self, person: &str) {
        let held = self.held.remove(person).unwrap_or_default();
        for h in &held {
            if let Some(holds) = self.holds.get_mut(&h.shard()) {
                holds.remove_held(h);
            }
        }
        self.releasing.extend(held);
    }

    /// The next event being released, to be applied now.
    pub fn next_released(&mut self) -> Option<Held> {
        let h = self.releasing.pop_front()?;
        if let Some(holds) = self.holds.get_mut(&h.shard()) {
            remove(&mut holds.times, h.event_time);
        }
        Some(h)
    }

    /// The offset of the first event held from partition `shard` (input from there is
    /// read again from it after a restart).
    pub fn first_held(&self, shard: i32) -> Option<i64> {
        let holds = self.holds.get(&shard)?;
        holds.offsets.keys().next().copied()
    }

    /// The earliest event time held in partition `shard`. The shard's watermark and
    /// timers stay at or below it: a held event is judged when it is applied as it would
    /// have been when it came (not late, and no deadline of its person passed meanwhile),
    /// however long the merge it waits for takes.
    pub fn hold_limit(&self, shard: i32) -> Option<i64> {
        let holds = self.holds.get(&shard)?;
        holds.times.keys().next().copied()
    }

    /// How many events are held.
    pub fn held_count(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }

    /// Per input topic of partition number `shard`: the next offset to apply (not beyond
    /// the first held event) and the largest event time seen (what a position marker
    /// records); with the router also per routed sequence (keys `src:…`, `fwd:…`): the
    /// last source offset applied and its largest event time, and per held event (keys
    /// `held:{source offset}|{sequence}`, with the held event's time).
    pub fn inputs_of(&self, shard: i32) -> std::collections::BTreeMap<String, (i64, i64)> {
        let first_held = self.first_held(shard);
        let topics = self
            .applied
            .iter()
            .filter(|((_, p), _)| *p == shard)
            .map(|((t, _), o)| {
                let next = first_held.map_or(o + 1, |h| h.min(o + 1));
                (t.clone(), (next, self.clocks.max_event_time(t, shard)))
            });
        let sequences = self
            .routed
            .iter()
            .filter(|((_, p), _)| *p == shard)
            .map(|((k, _), o)| (k.clone(), (*o, self.clocks.max_event_time(k, shard))));
        let held = self
            .holds
            .get(&shard)
            .into_iter()
            .flat_map(|h| &h.markers)
            .map(|((seq, o), (t, _))| (format!("{HELD_PREFIX}{o}|{seq}"), (*o, *t)));
        // Held before a restart and not re-read yet: still held.
        let unread = self
            .held_sources
            .iter()
            .filter(|((_, p, _), _)| *p == shard)
            .map(|((seq, _, o), t)| (format!("{HELD_PREFIX}{o}|{seq}"), (*o, *t)));
        topics.chain(sequences).chain(held).chain(unread).collect()
    }

    /// Takes a restored position's entry for `shard`: an input topic's next offset, or a
    /// routed sequence's last applied source offset (with its largest event time), or a
    /// held event's source offset (with its event time).
    pub fn restore_input(&mut self, shard: i32, key: &str, offset: i64, max_event_time: i64) {
        if let Some(held) = key.strip_prefix(HELD_PREFIX) {
            if let Some((_, sequence)) = held.split_once('|') {
                let times = &mut self.holds.entry(shard).or_default().times;
                if let Some(before) = self
                    .held_sources
                    .insert((sequence.to_string(), shard, offset), max_event_time)
                {
                    remove(times, before);
                }
                add(times, max_event_time);
            }
        } else if is_sequence(key) {
            self.routed.insert((key.to_string(), shard), offset);
            if key.starts_with(SOURCE_PREFIX) {
                self.clocks
                    .restored_source(key, shard, max_event_time, Instant::now());
            }
        } else if self.clocks.contains(key, shard) {
            self.applied.insert((key.to_string(), shard), offset - 1);
            self.clocks.restored(key, shard, max_event_time);
        }
    }

    /// Forgets what belongs to shards no longer owned.
    pub fn retain_shards(&mut self, owned: &std::collections::BTreeSet<i32>) {
        self.routed.retain(|(_, p), _| owned.contains(p));
        self.held_sources.retain(|(_, p, _), _| owned.contains(p));
        // The new owner of a partition reads its held events again.
        for held in self.held.values_mut() {
            held.retain(|h| owned.contains(&h.shard()));
        }
        self.held.retain(|_, h| !h.is_empty());
        self.releasing.retain(|h| owned.contains(&h.shard()));
        // What an owned shard holds is unchanged: only the others' counts go.
        self.holds.retain(|p, _| owned.contains(p));
    }
}

/// The prefix of a routed sequence read directly from the router: `src:{topic}:{partition}`.
pub const SOURCE_PREFIX: &str = "src:";

/// The routed sequence of input partition `partition` of `topic`.
pub fn source_sequence(topic: &str, partition: i32) -> String {
    format!("{SOURCE_PREFIX}{topic}:{partition}")
}
/// The prefix of a sequence of forwarded events: `fwd:{shard}|{sequence at that shard}`.
pub const FORWARD_PREFIX: &str = "fwd:";
/// The prefix of a held event in a position marker: `held:{source offset}|{sequence}`.
pub const HELD_PREFIX: &str = "held:";

/// Whether a position-marker key is a routed sequence (topic names cannot contain `:`).
pub fn is_sequence(key: &str) -> bool {
    key.starts_with(SOURCE_PREFIX) || key.starts_with(FORWARD_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_applied_once_and_markers_record_the_next_offset() {
        let mut p = Progress::default();
        assert!(p.first_application("a", 0, 5));
        assert!(!p.first_application("a", 0, 5));
        assert!(!p.first_application("a", 0, 3));
        assert!(p.first_application("a", 0, 6));
        assert!(p.first_application("a", 1, 0));
        let inputs = p.inputs_of(0);
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs["a"].0, 7);
    }

    #[test]
    fn routed_sequences_are_deduplicated_and_recorded_in_markers() {
        let mut p = Progress::default();
        assert!(p.first_routed("src:clicks:3", 0, 10));
        assert!(!p.first_routed("src:clicks:3", 0, 10));
        assert!(!p.first_routed("src:clicks:3", 0, 9));
        assert!(p.first_routed("src:clicks:3", 1, 9), "another shard");
        assert!(
            p.first_routed("fwd:2|src:clicks:3", 0, 4),
            "another sequence"
        );
        let inputs = p.inputs_of(0);
        assert_eq!(inputs["src:clicks:3"].0, 10);
        assert_eq!(inputs["fwd:2|src:clicks:3"].0, 4);
        let mut restored = Progress::default();
        for (k, (o, t)) in inputs {
            restored.restore_input(0, &k, o, t);
        }
        assert!(!restored.first_routed("src:clicks:3", 0, 10));
        assert!(restored.first_routed("src:clicks:3", 0, 11));
        assert!(!restored.first_routed("fwd:2|src:clicks:3", 0, 4));
    }

    #[test]
    fn held_events_hold_their_shard_back_and_survive_a_restart_in_the_markers() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let held = |offset: i64, source: i64, event_time: i64| Held {
            record: OwnedMessage::new(
                None,
                None,
                "persons".into(),
                Timestamp::NotAvailable,
                2,
                offset,
                None,
            ),
            event_time,
            sequence: Some(("src:clicks:0".to_string(), source)),
        };
        let mut p = Progress::default();
        assert!(p.first_routed("src:clicks:0", 2, 40));
        p.hold("c-1".into(), held(7, 30, 5_000));
        p.hold("c-1".into(), held(9, 35, 4_000));
        p.hold("c-2".into(), held(8, 33, 4_500));
        assert_eq!(p.hold_limit(2), Some(4_000));
        assert_eq!(p.hold_limit(1), None);
        assert_eq!(p.first_held(2), Some(7));
        assert_eq!(p.held_count(), 3);
        let inputs = p.inputs_of(2);
        assert_eq!(inputs["held:30|src:clicks:0"], (30, 5_000));
        // Released: no longer held for the offsets, but the time waits until applied.
        let mut released = Progress::default();
        released.hold("c-1".into(), held(7, 30, 5_000));
        released.hold("c-1".into(), held(9, 35, 4_000));
        released.hold("c-2".into(), held(8, 33, 4_500));
        released.release("c-1");
        let markers = released.inputs_of(2);
        assert!(markers.contains_key("held:33|src:clicks:0"));
        assert!(!markers.contains_key("held:30|src:clicks:0"), "released");
        assert_eq!(released.first_held(2), Some(8));
        assert_eq!(released.hold_limit(2), Some(4_000));
        assert_eq!(released.next_released().map(|h| h.offset()), Some(7));
        assert_eq!(released.hold_limit(2), Some(4_000));
        assert_eq!(released.next_released().map(|h| h.offset()), Some(9));
        assert_eq!(released.hold_limit(2), Some(4_500), "c-2 still held");
        assert!(released.next_released().is_none());
        released.retain_shards(&BTreeSet::from([1]));
        assert_eq!(
            (released.hold_limit(2), released.first_held(2)),
            (None, None)
        );
        // A new owner restores the marker: the held events hold the shard back until
        // they are read again, and are not taken for duplicates then.
        let mut restored = Progress::default();
        for (k, (o, t)) in inputs {
            restored.restore_input(2, &k, o, t);
        }
        assert_eq!(restored.hold_limit(2), Some(4_000));
        assert!(restored.first_routed("src:clicks:0", 2, 30));
        assert!(
            !restored.first_routed("src:clicks:0", 2, 31),
            "applied before"
        );
        assert!(restored.first_routed("src:clicks:0", 2, 35));
        assert_eq!(restored.hold_limit(2), Some(4_500));
        assert!(restored.first_routed("src:clicks:0", 2, 33));
        assert_eq!(restored.hold_limit(2), None);
    }
}
