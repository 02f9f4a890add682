//! Event time per input partition, and the watermarks the service derives from it.
//!
//! Every input topic's partition N carries the events of the same customers (the inputs
//! are co-partitioned), so partition *number* N is one shard of state with its own event
//! time. Its watermark is the minimum, over the topics' partitions N that delivered
//! recently, of the largest event time each has delivered, minus the allowed lateness: a
//! topic read ahead of another does not make the other's events late. A partition that has
//! been quiet for `idle` no longer holds time back; a shard whose partitions are all quiet
//! follows the instance-wide watermark, so its timers still fire as the others' time
//! passes.
//!
//! Pure bookkeeping: every method takes "now" as an [`Instant`], so it is testable without
//! Kafka or a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use segstream_core::time::Millis;

/// The largest event time delivered by one input partition, and when it last delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    max_event_time: Millis,
    at: Instant,
    /// How it goes quiet.
    quiet: Quiet,
}

/// When a partition stops holding its shard's time back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// After `idle` without an event (a partition this instance reads itself).
    AfterIdle,
    /// When the router says so (a routed source, `src:…`): silence alone may be the
    /// router lagging or down, with the source's events still to come. `true` from the
    /// router's word until the next event.
    Told(bool),
}

impl Seen {
    fn new(max_event_time: Millis, at: Instant, key: &str) -> Self {
        let quiet = if key.starts_with(super::progress::SOURCE_PREFIX) {
            Quiet::Told(false)
        } else {
            Quiet::AfterIdle
        };
        Seen {
            max_event_time,
            at,
            quiet,
        }
    }

    /// Whether it holds its shard's time back at `now`.
    fn active(&self, idle: Duration, now: Instant) -> bool {
        match self.quiet {
            Quiet::AfterIdle => now.saturating_duration_since(self.at) < idle,
            Quiet::Told(quiet) => !quiet,
        }
    }

    /// The time it holds its shard's watermark at, if it holds it at all: its largest
    /// event time while active. A routed source the router said is quiet holds it at its
    /// largest event time plus the real time passed since then: when it resumes (a
    /// producer pausing between bursts of history, the router reading its partitions at
    /// different speeds), its next events are not late because the others ran ahead
    /// meanwhile, while live data (event time close to real time) is not held back.
    fn holds(&self, idle: Duration, now: Instant) -> Option<Millis> {
        match self.quiet {
            Quiet::Told(true) if self.max_event_time == Millis::MIN => None,
            Quiet::Told(true) => {
                let passed = now.saturating_duration_since(self.at).as_millis();
                Some(
                    self.max_event_time
                        .saturating_add(Millis::try_from(passed).unwrap_or(Millis::MAX)),
                )
            }
            _ => self.active(idle, now).then_some(self.max_event_time),
        }
    }
}

/// Event time per assigned input partition `(topic, partition)`.
#[derive(Debug, Default)]
pub struct PartitionClocks {
    partitions: HashMap<(String, i32), Seen>,
}

impl PartitionClocks {
    /// Tracks exactly `assigned`; a newly assigned partition starts as "not delivered yet"
    /// (it holds its shard's time back until it delivers or has been idle for `idle`).
    pub fn sync(&mut self, assigned: &[(String, i32)], now: Instant) {
        // A routed source's clock (`src:…`) stays while its shard stays assigned.
        let shards: std::collections::BTreeSet<i32> = assigned.iter().map(|(_, p)| *p).collect();
        self.partitions.retain(|k, _| {
            assigned.contains(k)
                || (k.0.starts_with(super::progress::SOURCE_PREFIX) && shards.contains(&k.1))
        });
        for k in assigned {
            self.partitions
                .entry(k.clone())
                .or_insert(Seen::new(Millis::MIN, now, &k.0));
        }
    }

    /// Tracks `(source, shard)` from `now` if it is not yet: "not delivered yet", holding
    /// the shard's time back like a newly assigned partition (a routed source that may
    /// deliver to the shard).
    pub fn expect(&mut self, source: &str, shard: i32, now: Instant) {
        self.partitions
            .entry((source.to_string(), shard))
            .or_insert(Seen::new(Millis::MIN, now, source));
    }

    /// The router said routed source `source` is caught up and quiet, its largest event
    /// time being `time` (its latest events may have gone to other shards): until its next
    /// event here it holds `shard` at that time plus the real time passed since it went
    /// quiet.
    pub fn quiet(&mut self, source: &str, shard: i32, time: Option<Millis>, now: Instant) {
        if let Some(seen) = self.partitions.get_mut(&(source.to_string(), shard)) {
            let later = time.is_some_and(|t| t > seen.max_event_time);
            if later {
                seen.max_event_time = time.unwrap_or(seen.max_event_time);
            }
            if later || seen.quiet != Quiet::Told(true) {
                seen.at = now;
            }
            seen.quiet = Quiet::Told(true);
        }
    }

    /// Whether `(topic, partition)` is tracked (assigned).
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .contains_key(&(topic.to_string(), partition))
    }

    /// A partition delivered an event with time `event_time` at `now`.
    pub fn delivered(&mut self, topic: &str, partition: i32, event_time: Millis, now: Instant) {
        let seen = self
            .partitions
            .entry((topic.to_string(), partition))
            .or_insert(Seen::new(event_time, now, topic));
        seen.max_event_time = seen.max_event_time.max(event_time);
        seen.at = now;
        if let Quiet::Told(_) = seen.quiet {
            seen.quiet = Quiet::Told(false);
        }
    }

    /// Raises a partition's largest event time to what a previous owner had reached
    /// (restored from the changelog), without counting as a delivery.
    pub fn restored(&mut self, topic: &str, partition: i32, event_time: Millis) {
        if let Some(seen) = self.partitions.get_mut(&(topic.to_string(), partition)) {
            seen.max_event_time = seen.max_event_time.max(event_time);
        }
    }

    /// A routed source's largest event time in `shard` as a previous owner left it: tracked
    /// from now (it holds the shard's time back like a delivering partition until it has
    /// been quiet for the idle time).
    pub fn restored_source(&mut self, source: &str, shard: i32, event_time: Millis, now: Instant) {
        let seen = self
            .partitions
            .entry((source.to_string(), shard))
            .or_insert(Seen::new(event_time, now, source));
        seen.max_event_time = seen.max_event_time.max(event_time);
    }

    /// The largest event time `(topic, partition)` delivered (`Millis::MIN` if none).
    pub fn max_event_time(&self, topic: &str, partition: i32) -> Millis {
        self.partitions
            .get(&(topic.to_string(), partition))
            .map_or(Millis::MIN, |s| s.max_event_time)
    }

    /// The watermark of partition number `shard`: over the topics' partitions of that
    /// number, the minimum of the largest event time of those that delivered within
    /// `idle` (or the maximum when all are idle), minus `lateness`. `None` before any
    /// delivered.
    pub fn watermark(
        &self,
        shard: i32,
        lateness: Millis,
        idle: Duration,
        now: Instant,
    ) -> Option<Millis> {
        Self::combine(
            self.partitions
                .iter()
                .filter(|((_, p), _)| *p == shard)
                .map(|(_, s)| s),
            lateness,
            idle,
            now,
        )
    }

    /// The instance-wide watermark: the same over every assigned partition.
    pub fn global_watermark(
        &self,
        lateness: Millis,
        idle: Duration,
        now: Instant,
    ) -> Option<Millis> {
        Self::combine(self.partitions.values(), lateness, idle, now)
    }

    /// Whether every partition of number `shard` has been quiet for `idle`.
    pub fn shard_idle(&self, shard: i32, idle: Duration, now: Instant) -> bool {
        self.partitions
            .iter()
            .filter(|((_, p), _)| *p == shard)
            .all(|(_, s)| !s.active(idle, now))
    }

    /// The watermark a shard's timers follow while the input is idle: its own, or, when
    /// all its partitions are quiet, at least the instance-wide one.
    pub fn idle_watermark(
        &self,
        shard: i32,
        lateness: Millis,
        idle: Duration,
        now: Instant,
    ) -> Option<Millis> {
        let own = self.watermark(shard, lateness, idle, now);
        if self.shard_idle(shard, idle, now) {
            own.max(self.global_watermark(lateness, idle, now))
        } else {
            own
        }
    }

    /// Where a shard's event time stands while its input is idle: for each of its
    /// partitions that has delivered, the largest event time plus the real time passed
    /// since it last delivered; the largest of those, but never beyond `wall_now`. Live
    /// data (event time close to the wall clock) thus follows the wall clock, while history
    /// streamed in slower than it is consumed stays on its own time instead of jumping to
    /// today. `None` before any partition of the shard delivered.
    pub fn idle_event_time(&self, shard: i32, now: Instant, wall_now: Millis) -> Option<Millis> {
        self.partitions
            .iter()
            .filter(|((_, p), s)| *p == shard && s.max_event_time != Millis::MIN)
            .map(|(_, s)| {
                let passed = now.saturating_duration_since(s.at).as_millis();
                s.max_event_time
                    .saturating_add(Millis::try_from(passed).unwrap_or(Millis::MAX))
            })
            .max()
            .map(|t| t.min(wall_now))
    }

    fn combine<'a>(
        seen: impl Iterator<Item = &'a Seen> + Clone,
        lateness: Millis,
        idle: Duration,
        now: Instant,
    ) -> Option<Millis> {
        // While some input is active, the quiet ones still hold it (see `Seen::holds`);
        // when all is quiet (caught up), the largest time counts, as with a shard's own
        // idle partitions.
        let t = if seen.clone().any(|s| s.active(idle, now)) {
            seen.filter_map(|s| s.holds(idle, now)).min()?
        } else {
            seen.map(|s| s.max_event_time).max()?
        };
        (t != Millis::MIN).then(|| t.saturating_sub(lateness))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);
    const LATE: Millis = 1_000;

    fn key(topic: &str, p: i32) -> (String, i32) {
        (topic.to_string(), p)
    }

    #[test]
    fn nothing_delivered_means_no_watermark() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0)], t0);
        assert_eq!(c.watermark(0, LATE, IDLE, t0), None);
        assert_eq!(c.global_watermark(LATE, IDLE, t0), None);
    }

    #[test]
    fn a_shard_waits_for_its_slowest_active_topic() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0), key("b", 0)], t0);
        c.delivered("a", 0, 50_000, t0);
        // b has not delivered yet and is not idle: it holds the shard back.
        assert_eq!(c.watermark(0, LATE, IDLE, t0), None);
        c.delivered("b", 0, 20_000, t0);
        assert_eq!(c.watermark(0, LATE, IDLE, t0), Some(19_000));
        // b goes quiet while a keeps delivering: a alone sets the watermark.
        let t1 = t0 + IDLE;
        c.delivered("a", 0, 60_000, t1);
        assert_eq!(c.watermark(0, LATE, IDLE, t1), Some(59_000));
    }

    #[test]
    fn routed_sources_hold_a_shard_back_until_they_deliver_or_the_router_says_they_are_quiet() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("persons", 1)], t0);
        for p in 0..2 {
            c.expect(&format!("src:clicks:{p}"), 1, t0);
        }
        c.delivered("persons", 1, 90_000, t0);
        c.delivered("src:clicks:0", 1, 90_000, t0);
        // src:clicks:1 has delivered nothing to shard 1 yet: its events may still come.
        assert_eq!(c.watermark(1, LATE, IDLE, t0), None);
        c.delivered("persons", 1, 90_000, t0);
        c.delivered("src:clicks:1", 1, 30_000, t0);
        assert_eq!(c.watermark(1, LATE, IDLE, t0), Some(29_000));
        // Expecting again keeps what was delivered; the sync of a new assignment keeps
        // the sources of the shards still assigned.
        c.expect("src:clicks:1", 1, t0);
        c.sync(&[key("persons", 1)], t0);
        assert_eq!(c.max_event_time("src:clicks:1", 1), 30_000);
        // Silence is not enough (the router may lag or be down): src:clicks:1 still holds
        // the shard back after the idle time...
        let t1 = t0 + IDLE * 3;
        c.delivered("persons", 1, 95_000, t1);
        c.delivered("src:clicks:0", 1, 95_000, t1);
        assert_eq!(c.watermark(1, LATE, IDLE, t1), Some(29_000));
        assert!(!c.shard_idle(1, IDLE, t1 + IDLE));
        // ...until the router says it is quiet, and where it stands (its latest events went
        // to other shards): then it holds the shard at that time plus the real time passed
        // since (it may resume with events of that time), and again from its next event on.
        c.quiet("src:clicks:1", 1, Some(80_000), t1);
        assert_eq!(c.watermark(1, LATE, IDLE, t1), Some(79_000));
        c.quiet("src:clicks:1", 1, Some(80_000), t1 + IDLE);
        let t2 = t1 + Duration::from_secs(60);
        c.delivered("persons", 1, 95_000, t2);
        c.delivered("src:clicks:0", 1, 95_000, t2);
        assert_eq!(
            c.watermark(1, LATE, IDLE, t2),
            Some(94_000),
            "the word repeated does not restart its clock"
        );
        c.delivered("src:clicks:1", 1, 96_000, t1);
        c.delivered("src:clicks:0", 1, 99_000, t1);
        c.delivered("persons", 1, 99_000, t1);
        assert_eq!(c.watermark(1, LATE, IDLE, t1), Some(95_000));
        c.quiet("src:clicks:0", 1, None, t1);
        c.quiet("src:clicks:1", 1, None, t1);
        assert!(
            c.shard_idle(1, IDLE, t1 + IDLE),
            "persons entry quiet by time, sources told"
        );
    }

    #[test]
    fn all_quiet_takes_the_largest_time_and_shards_are_separate() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0), key("a", 1)], t0);
        c.delivered("a", 0, 10_000, t0);
        c.delivered("a", 1, 90_000, t0);
        assert_eq!(c.watermark(0, LATE, IDLE, t0), Some(9_000));
        assert_eq!(c.watermark(1, LATE, IDLE, t0), Some(89_000));
        assert_eq!(c.global_watermark(LATE, IDLE, t0), Some(9_000));
        let later = t0 + IDLE;
        assert_eq!(c.global_watermark(LATE, IDLE, later), Some(89_000));
        assert!(c.shard_idle(0, IDLE, later));
        // A quiet shard's timers follow the others' time.
        assert_eq!(c.idle_watermark(0, LATE, IDLE, later), Some(89_000));
    }

    #[test]
    fn an_active_shard_keeps_its_own_time_while_idle() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0), key("a", 1)], t0);
        c.delivered("a", 0, 10_000, t0);
        c.delivered("a", 1, 90_000, t0);
        assert!(!c.shard_idle(0, IDLE, t0));
        assert_eq!(c.idle_watermark(0, LATE, IDLE, t0), Some(9_000));
    }

    #[test]
    fn idle_time_moves_with_real_time_from_the_last_event_never_past_the_wall_clock() {
        let t0 = Instant::now();
        let wall = 1_800_000_000_000;
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0), key("b", 0), key("a", 1)], t0);
        assert_eq!(c.idle_event_time(0, t0, wall), None);
        // History from two years ago, delivered at t0.
        let old = wall - 2 * 365 * 86_400_000;
        c.delivered("a", 0, old, t0);
        c.delivered("b", 0, old - 5_000, t0);
        assert_eq!(c.idle_event_time(0, t0, wall), Some(old));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(c.idle_event_time(0, later, wall), Some(old + 3_000));
        // Live data follows the wall clock, and never passes it.
        c.delivered("a", 1, wall - 200, t0);
        assert_eq!(c.idle_event_time(1, later, wall + 100), Some(wall + 100));
        assert_eq!(c.idle_event_time(1, later, wall), Some(wall));
    }

    #[test]
    fn sync_drops_revoked_partitions_and_restored_time_is_kept() {
        let t0 = Instant::now();
        let mut c = PartitionClocks::default();
        c.sync(&[key("a", 0), key("a", 1)], t0);
        c.delivered("a", 1, 5_000, t0);
        c.sync(&[key("a", 0)], t0);
        assert!(!c.contains("a", 1));
        assert_eq!(c.max_event_time("a", 1), Millis::MIN);
        c.restored("a", 0, 7_000);
        assert_eq!(c.max_event_time("a", 0), 7_000);
        // Restoring never lowers time.
        c.restored("a", 0, 6_000);
        assert_eq!(c.max_event_time("a", 0), 7_000);
        // An unassigned partition is not tracked by a restore.
        c.restored("a", 9, 1);
        assert!(!c.contains("a", 9));
    }
}
