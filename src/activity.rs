//! Entries and exits per segment over the last hour and day (`GET /segments/{name}`),
//! counted by the wall-clock minute the transitions were produced in: a ring of 1440
//! minute buckets per segment, so memory stays fixed whatever the traffic. And the worker's
//! latest [`RECENT`] transitions, the causes `GET /profiles/{id}/explain` shows.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use segstream_core::transition::{Direction, Transition};

const MINUTE: i64 = 60_000;
/// Minutes kept: one day.
const BUCKETS: usize = 1440;

/// One segment's ring: per minute, (the minute it counts, entered, exited).
struct Ring {
    buckets: Box<[(i64, u32, u32)]>,
}

impl Ring {
    fn new() -> Self {
        Ring {
            buckets: vec![(i64::MIN, 0, 0); BUCKETS].into_boxed_slice(),
        }
    }

    fn add(&mut self, minute: i64, direction: Direction) {
        let b = &mut self.buckets[minute.rem_euclid(BUCKETS as i64) as usize];
        if b.0 != minute {
            *b = (minute, 0, 0);
        }
        match direction {
            Direction::Entered => b.1 += 1,
            Direction::Exited => b.2 += 1,
        }
    }

    /// (entered, exited) over the `minutes` minutes up to and including `now_minute`.
    fn sum(&self, now_minute: i64, minutes: i64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| b.0 <= now_minute && b.0 > now_minute - minutes)
            .fold((0, 0), |(e, x), b| (e + u64::from(b.1), x + u64::from(b.2)))
    }
}

/// Entries and exits of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub entered_last_hour: u64,
    pub exited_last_hour: u64,
    pub entered_last_day: u64,
    pub exited_last_day: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.entered_last_hour += o.entered_last_hour;
        self.exited_last_hour += o.exited_last_hour;
        self.entered_last_day += o.entered_last_day;
        self.exited_last_day += o.exited_last_day;
    }
}

/// Transitions a worker keeps for explain's causes (about 2 MB at most): the engine
/// keeps no history, so older causes are on the transitions topic only.
pub const RECENT: usize = 10_000;

/// Per segment name, its ring; the latest transitions.
#[derive(Default)]
pub struct Activity {
    segments: HashMap<Arc<str>, Ring>,
    recent: VecDeque<Transition>,
}

impl Activity {
    /// Counts `transitions`, produced at wall-clock time `now` (ms), and keeps them among
    /// the latest [`RECENT`] (taken over, not copied: the callers are done with them).
    pub fn record(&mut self, transitions: Vec<Transition>, now: i64) {
        let minute = now.div_euclid(MINUTE);
        for t in &transitions {
            self.segments
                .entry(t.segment.clone())
                .or_insert_with(Ring::new)
                .add(minute, t.direction);
        }
        let skip = transitions.len().saturating_sub(RECENT);
        let overflow = (self.recent.len() + transitions.len() - skip).saturating_sub(RECENT);
        self.recent.drain(..overflow);
        self.recent.extend(transitions.into_iter().skip(skip));
    }

    /// The kept transitions of person `customer_id` (its canonical id), oldest first.
    pub fn recent_of<'a>(&'a self, customer_id: &'a str) -> impl Iterator<Item = &'a Transition> {
        self.recent
            .iter()
            .filter(move |t| &*t.customer_id == customer_id)
    }

    /// The counts of `segment` as of wall-clock time `now` (ms).
    pub fn counts(&self, segment: &str, now: i64) -> Counts {
        let minute = now.div_euclid(MINUTE);
        self.segments
            .get(segment)
            .map_or_else(Counts::default, |r| {
                let (entered_last_hour, exited_last_hour) = r.sum(minute, 60);
                let (entered_last_day, exited_last_day) = r.sum(minute, BUCKETS as i64);
                Counts {
                    entered_last_hour,
                    exited_last_hour,
                    entered_last_day,
                    exited_last_day,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segstream_core::transition::Cause;

    fn t(segment: &str, direction: Direction) -> Transition {
        Transition::new(
            "c1".into(),
            segment.into(),
            direction,
            0,
            Cause::Evicted,
            "v1".into(),
            1,
        )
    }

    #[test]
    fn counts_fall_out_of_the_hour_and_the_day_and_buckets_are_reused() {
        let mut a = Activity::default();
        let h = 60 * MINUTE;
        let start = 1_000 * 24 * h;
        a.record(
            vec![t("s", Direction::Entered), t("s", Direction::Entered)],
            start,
        );
        a.record(vec![t("s", Direction::Exited)], start + 30 * MINUTE);
        a.record(vec![t("other", Direction::Entered)], start);
        let c = a.counts("s", start + 30 * MINUTE);
        assert_eq!((c.entered_last_hour, c.exited_last_hour), (2, 1));
        assert_eq!((c.entered_last_day, c.exited_last_day), (2, 1));
        // Two hours later: out of the hour, still in the day.
        let c = a.counts("s", start + 2 * h);
        assert_eq!((c.entered_last_hour, c.exited_last_hour), (0, 0));
        assert_eq!((c.entered_last_day, c.exited_last_day), (2, 1));
        // A day later the start minute's bucket counts the new minute only; the exit at
        // 30 minutes is still inside the day.
        a.record(vec![t("s", Direction::Exited)], start + 24 * h);
        let c = a.counts("s", start + 24 * h);
        assert_eq!((c.entered_last_day, c.exited_last_day), (0, 2));
        assert_eq!(a.counts("unknown", start), Counts::default());
    }

    #[test]
    fn the_latest_transitions_are_kept_for_explain() {
        let mut a = Activity::default();
        let of = |id: &str, n: u32| {
            let mut t = t("s", Direction::Entered);
            t.customer_id = id.into();
            t.sequence = n;
            t
        };
        a.record(vec![of("c1", 1), of("c2", 1), of("c1", 2)], 0);
        let seq = |a: &Activity, id| a.recent_of(id).map(|t| t.sequence).collect::<Vec<_>>();
        assert_eq!(seq(&a, "c1"), [1, 2]);
        // Past RECENT, the oldest go first (also within one oversized call).
        let many: Vec<Transition> = (0..RECENT as u32).map(|n| of("c3", n)).collect();
        a.record(many[..RECENT - 1].to_vec(), 0);
        assert_eq!(seq(&a, "c1"), [2], "the first of c1 made room");
        a.record(vec![of("c1", 3), of("c1", 4)], 0);
        assert_eq!(seq(&a, "c1"), [3, 4]);
        let mut huge = many.clone();
        huge.push(of("c4", 7));
        a.record(huge, 0);
        assert_eq!(a.recent.len(), RECENT);
        assert_eq!(seq(&a, "c4"), [7]);
        assert!(seq(&a, "c1").is_empty());
    }
}
