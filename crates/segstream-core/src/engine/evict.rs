//! Keeping the profile count within `max_profiles`.
//!
//! When a new profile takes the count over the limit, the least recently active profiles
//! (by the time of their last event; ties by customer id, so that every run evicts the
//! same customers) are evicted down to 95 % of the limit: each exits its segments with
//! cause `evicted`, its pending timer is dropped, and the changelog gets a tombstone. The
//! headroom makes the scan over all profiles rare: one scan per `max_profiles / 20` new
//! profiles, so a flood of distinct ids costs amortised constant time per event and memory
//! stays flat at the limit.

use std::sync::Arc;

use crate::time::Millis;
use crate::transition::{Cause, Transition};

use super::Engine;

/// The share of the limit kept free after an eviction round, in twentieths.
const HEADROOM_TWENTIETHS: usize = 1;

impl Engine {
    /// Evicts the least recently active profiles if there are more than `max_profiles`;
    /// `at` is the time of the event that created the newest one (exits are stamped no
    /// earlier than each profile's own clock).
    pub(super) fn evict_over_capacity(&mut self, at: Millis, out: &mut Vec<Transition>) {
        let Some(max) = self.config.max_profiles else {
            return;
        };
        if self.profiles.len() <= max {
            return;
        }
        let keep = max.saturating_sub(max * HEADROOM_TWENTIETHS / 20).max(1);
        let excess = self.profiles.len() - keep;
        let victims = self.least_recently_active(excess);
        let mut gone = Vec::with_capacity(victims.len());
        let (profiles, mut ev) = self.split();
        for id in victims {
            let Some((id, mut profile)) = profiles.remove_entry(&*id) else {
                continue;
            };
            let when = profile.clock.max(at);
            ev.exit_all(&mut profile, &id, when, Cause::Evicted, out);
            ev.changes.remove(&id, profile.shard);
            ev.stats.profiles_evicted += 1;
            gone.push((id, profile.shard));
        }
        for (id, shard) in gone {
            self.forget_ids(&id, shard);
        }
    }

    /// The `n` profiles whose last event is oldest, oldest first (ties by customer id).
    fn least_recently_active(&self, n: usize) -> Vec<Arc<str>> {
        if n == 0 {
            return Vec::new();
        }
        // The cutoff second: the n-th smallest last-event time.
        let mut times: Vec<u32> = self.profiles.values().map(|p| p.last_seen()).collect();
        let n = n.min(times.len());
        let (_, &mut cutoff, _) = times.select_nth_unstable(n - 1);
        drop(times);
        let mut victims: Vec<(u32, Arc<str>)> = self
            .profiles
            .iter()
            .filter(|(_, p)| p.last_seen() <= cutoff)
            .map(|(id, p)| (p.last_seen(), Arc::from(id)))
            .collect();
        victims.sort_unstable();
        victims.truncate(n);
        victims.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, EngineConfig};
    use crate::transition::{Cause, Direction};

    const DEFS: &str = r#"
[segments.everyone]
condition = 'count(any, ever) >= 1'
"#;

    fn event(i: usize, minute: usize) -> String {
        format!(
            r#"{{"event_id":"e{i}","customer_id":"c{i:05}","type":"page_view","timestamp":"2026-11-02T{:02}:{:02}:00Z","properties":{{"url":"/"}}}}"#,
            minute / 60,
            minute % 60
        )
    }

    #[test]
    fn the_least_recently_active_are_evicted_with_their_exits_and_tombstones() {
        let config = EngineConfig {
            max_profiles: Some(100),
            allowed_lateness: 0,
            ..EngineConfig::default()
        };
        let mut e = Engine::from_source("t.toml", DEFS, config)
            .unwrap()
            .with_change_tracking();
        let mut out = Vec::new();
        for i in 0..100 {
            e.process(event(i, i).as_bytes(), &mut out).unwrap();
        }
        assert_eq!(e.profile_count(), 100);
        out.clear();
        // Customer 0 comes back: now the most recent of the old ones.
        e.process(event(0, 100).as_bytes(), &mut out).unwrap();
        assert!(out.is_empty());
        // The 101st profile: down to 95, the six oldest (1..=6) out, not 0.
        e.process(event(100, 101).as_bytes(), &mut out).unwrap();
        assert_eq!(e.profile_count(), 95);
        let exits: Vec<(&str, &Cause)> = out
            .iter()
            .filter(|t| t.direction == Direction::Exited)
            .map(|t| (&*t.customer_id, &t.cause))
            .collect();
        let expected: Vec<String> = (1..=6).map(|i| format!("c{i:05}")).collect();
        assert_eq!(
            exits.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
            expected
        );
        assert!(exits.iter().all(|(_, c)| **c == Cause::Evicted));
        assert!(e.profile("c00000").is_some() && e.profile("c00001").is_none());
        assert_eq!(e.stats().profiles_evicted, 6);
        let mut changes = Vec::new();
        e.drain_changes(&mut changes);
        let tombstones = changes.iter().filter(|c| c.record.is_none()).count();
        assert_eq!(tombstones, 6);
    }

    #[test]
    fn without_a_limit_nothing_is_evicted() {
        let mut e = Engine::from_source("t.toml", DEFS, EngineConfig::default()).unwrap();
        let mut out = Vec::new();
        for i in 0..500 {
            e.process(event(i, i % 1000).as_bytes(), &mut out).unwrap();
        }
        assert_eq!(e.profile_count(), 500);
        assert_eq!(e.stats().profiles_evicted, 0);
    }
}
