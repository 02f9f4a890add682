//! Merging two profiles of one person (identity resolution: an anonymous visitor's id is
//! linked to a known customer's), exactly as if every event of both had been applied to one
//! profile, record by record:
//!
//! | record | merged |
//! |---|---|
//! | type stats | counts added (the big form when needed), first the earlier, last the later |
//! | traits | per key the entry set later (value or removal marker); equal times: `from`'s |
//! | window counts / sums | added per absolute bucket, buckets outside the retention at `now` dropped; counts saturate at 65 535 as when applied |
//! | recency | first the earlier, last the later |
//! | absence | per correlation key, see [`AbsenceInstance::merge`] |
//! | favourites | counts added per candidate, the most counted kept (ties: `into`'s first) |
//! | revenue | added |
//! | lead score | both decayed to the later update time, then added |
//! | clock | the later |
//!
//! Where exactness has limits:
//! - sums are `f32` (and the revenue `f64`) added in another order than event by event;
//!   the score is decayed in another order too: equal up to rounding;
//! - favourites are exact while a slot has seen at most `FAVOURITE_SLOTS` distinct values
//!   (beyond it both sides are space-saving estimates already); among candidates with equal
//!   counts, which comes first (and so is the favourite) follows `into`, then `from`,
//!   where one profile would have put first the one that reached the count first;
//! - bounded state stays bounded: beyond [`MAX_TRAITS`] entries removal markers go first
//!   (oldest first), then values only `from` had (latest set first); beyond
//!   [`MAX_ABSENCE_INSTANCES`] the least recent instances go, as when applying; beyond
//!   [`ABSENCE_PENDING`](super::ABSENCE_PENDING) pending triggers per instance on one side
//!   the latest were dropped there (see [`AbsenceInstance`]);
//! - what applying events drops lazily (window buckets past the retention, absence instances
//!   neither armed nor recently cancelled) may be present on one side and not the other;
//!   none of it can be read by a condition of that profile, and [`Profile::prune`] drops it.
//!   But a dropped instance's cancel is lost to the merge as well: applying drops an
//!   unarmed instance once its last cancel is older than the allowed lateness, and the
//!   other profile's triggers from before that cancel then stay pending after the merge,
//!   where one profile would have had them cancelled;
//! - the score is only as exact as its inputs: an event's points are applied at its
//!   profile's clock, which for an out-of-order event is later than the event's time, and
//!   the two profiles' clocks are not the one profile's would have been. With events in
//!   time order the score is exact up to rounding.

use super::arena::{is_trait, key_of, len_of, tag_of};
use super::{
    millis, secs, AbsenceInstance, Profile, Secs, TypeStats, FAVOURITE_SLOTS,
    MAX_ABSENCE_INSTANCES, MAX_TRAITS, TAG_ABSENCE, TAG_COUNTS, TAG_FAVOURITE, TAG_RECENCY,
    TAG_REVENUE, TAG_SUMS, TAG_TYPE, TAG_TYPE_BIG,
};
use crate::time::Millis;

/// What a merge needs to know of one feature (the engine builds the list from its
/// definitions; index = feature index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureMerge {
    /// A windowed count (or sum, `sum`): buckets of `resolution` seconds, kept for
    /// `retention` seconds; `resolution == 0` is one lifetime bucket.
    Window {
        resolution: u32,
        retention: u32,
        sum: bool,
    },
    Recency,
    Absence,
}

impl FeatureMerge {
    /// The first bucket a windowed feature keeps at `now` (0: all).
    fn keep_from(self, now: Millis) -> u32 {
        match self {
            FeatureMerge::Window {
                resolution,
                retention,
                ..
            } if resolution != 0 => secs(now).saturating_sub(retention) / resolution,
            _ => 0,
        }
    }
}

/// Merges `from` into `into`, as if every event of both had been applied to one profile
/// (see the module documentation for each record and the limits). `features` describes the
/// features by index (records of features it does not describe are merged without
/// pruning); `score_half_life` is the scoring's half-life; `now` is the merged profile's
/// evaluation time (window retention is measured from it).
///
/// Left alone: `into`'s sequence, shard, memberships, timer, `known` and dirty flag. The
/// caller re-evaluates memberships and the timer afterwards.
pub fn merge(
    into: &mut Profile,
    from: &Profile,
    features: &[FeatureMerge],
    score_half_life: Option<Millis>,
    now: Millis,
) {
    let mut added_traits = Vec::new();
    let mut i = 0;
    while i < from.arena.len() {
        let h = from.arena[i];
        let len = len_of(h);
        let record = &from.arena[i..i + 1 + len];
        i += 1 + len;
        let (tag, key) = (tag_of(h), key_of(h));
        match tag {
            TAG_TYPE | TAG_TYPE_BIG => {
                let s = from.type_stats(key).unwrap_or(TypeStats {
                    count: 0,
                    first: 0,
                    last: 0,
                });
                into.merge_type(key, s);
            }
            t if is_trait(t) => added_traits.extend(into.merge_trait(key, record).then_some(key)),
            TAG_COUNTS | TAG_SUMS => {
                let keep_from = features
                    .get(usize::from(key))
                    .map_or(0, |f| f.keep_from(now));
                let is_sum = tag == TAG_SUMS;
                let theirs: Vec<(u32, f32)> = from.window_buckets(key, is_sum).collect();
                into.merge_window(key, is_sum, &theirs, keep_from);
            }
            TAG_RECENCY => {
                if let Some((first, last)) = from.recency(key) {
                    let (first, last) = match into.recency(key) {
                        Some((f, l)) => (f.min(first), l.max(last)),
                        None => (first, last),
                    };
                    into.put(TAG_RECENCY, key, &[first, last]);
                }
            }
            TAG_ABSENCE => {
                let mut mine: Vec<AbsenceInstance> = into.absence(key).collect();
                for theirs in from.absence(key) {
                    match mine.iter_mut().find(|a| a.key == theirs.key) {
                        Some(a) => a.merge(&theirs),
                        None => mine.push(theirs),
                    }
                }
                if mine.len() > MAX_ABSENCE_INSTANCES {
                    mine.sort_by_key(|a| std::cmp::Reverse(a.recent()));
                    mine.truncate(MAX_ABSENCE_INSTANCES);
                }
                into.set_absence(key, &mine);
            }
            TAG_FAVOURITE => {
                let mut pairs = into.favourites(key);
                for (v, c) in from.favourites(key) {
                    match pairs.iter_mut().find(|p| p.0 == v) {
                        Some(p) => p.1 = p.1.saturating_add(c),
                        None => pairs.push((v, c)),
                    }
                }
                pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
                pairs.truncate(FAVOURITE_SLOTS);
                into.put_favourites(key, &pairs);
            }
            TAG_REVENUE => into.add_revenue(from.revenue()),
            // Memberships are the caller's (re-evaluated after the merge).
            _ => {}
        }
    }
    into.limit_traits(&added_traits);
    let at = into.score_at.max(from.score_at);
    let decayed = |score: f32, since: Secs| -> f64 {
        let s = f64::from(score);
        match score_half_life {
            Some(hl) if s != 0.0 => {
                let dt = (millis(at) - millis(since)).max(0) as f64;
                s * (-dt / hl as f64).exp2()
            }
            _ => s,
        }
    };
    into.score = (decayed(into.score, into.score_at) + decayed(from.score, from.score_at)) as f32;
    into.score_at = at;
    into.clock = into.clock.max(from.clock);
}

impl Profile {
    /// Adds another profile's statistics of event type `ty`.
    fn merge_type(&mut self, ty: u16, s: TypeStats) {
        let merged = match self.type_stats(ty) {
            Some(o) => TypeStats {
                count: o.count.saturating_add(s.count),
                first: o.first.min(s.first),
                last: o.last.max(s.last),
            },
            None => s,
        };
        // The compact form holds counts up to 65 534 (as `touch_type` keeps it).
        if merged.count < u32::from(u16::MAX) {
            match self.find(TAG_TYPE, ty) {
                Some((i, _)) => {
                    self.arena[i] = super::compact(TAG_TYPE, ty, merged.count as u16);
                    self.arena[i + 1] = merged.first;
                    self.arena[i + 2] = merged.last;
                }
                None => {
                    self.arena.reserve_exact(3);
                    self.arena.extend_from_slice(&[
                        super::compact(TAG_TYPE, ty, merged.count as u16),
                        merged.first,
                        merged.last,
                    ]);
                }
            }
        } else {
            if let Some((i, _)) = self.find(TAG_TYPE, ty) {
                self.arena.drain(i..i + 3);
            }
            self.put(TAG_TYPE_BIG, ty, &[merged.count, merged.first, merged.last]);
        }
    }

    /// Takes another profile's trait record (`record`: header and payload) when it was set
    /// at or after this profile's entry for the key. Returns whether the key is new here.
    fn merge_trait(&mut self, key: u16, record: &[u32]) -> bool {
        let theirs = record[1];
        let existing = self.find_trait(key);
        if let Some((_, i, len)) = existing {
            if self.arena[i + 1] > theirs {
                return false;
            }
            self.arena.drain(i..i + 1 + len);
        }
        self.arena.reserve_exact(record.len());
        self.arena.extend_from_slice(record);
        self.arena.shrink_to_fit();
        existing.is_none()
    }

    /// Keeps the trait entries within [`MAX_TRAITS`] after a merge added the keys `added`:
    /// removal markers go first (oldest first), then added values (latest set first).
    fn limit_traits(&mut self, added: &[u16]) {
        let mut excess = self.trait_entries().count().saturating_sub(MAX_TRAITS);
        if excess == 0 {
            return;
        }
        let mut markers: Vec<(Secs, u16)> = self
            .trait_entries()
            .filter(|(_, v, _)| v.is_none())
            .map(|(k, _, t)| (t, k))
            .collect();
        markers.sort_unstable();
        let mut values: Vec<(Secs, u16)> = self
            .trait_entries()
            .filter(|(k, v, _)| v.is_some() && added.contains(k))
            .map(|(k, _, t)| (t, k))
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        for (_, k) in markers.into_iter().chain(values) {
            if excess == 0 {
                break;
            }
            if let Some((_, i, len)) = self.find_trait(k) {
                self.arena.drain(i..i + 1 + len);
                excess -= 1;
            }
        }
        self.arena.shrink_to_fit();
    }

    /// Adds another profile's buckets of a windowed feature and drops those before
    /// `keep_from`.
    fn merge_window(&mut self, feature: u16, is_sum: bool, theirs: &[(u32, f32)], keep_from: u32) {
        let mine: Vec<(u32, f32)> = self.window_buckets(feature, is_sum).collect();
        let mut merged = Vec::with_capacity(mine.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while i < mine.len() || j < theirs.len() {
            let next = if j == theirs.len() || (i < mine.len() && mine[i].0 < theirs[j].0) {
                i += 1;
                mine[i - 1]
            } else if i == mine.len() || theirs[j].0 < mine[i].0 {
                j += 1;
                theirs[j - 1]
            } else {
                i += 1;
                j += 1;
                (mine[i - 1].0, mine[i - 1].1 + theirs[j - 1].1)
            };
            if next.0 >= keep_from {
                merged.push(next);
            }
        }
        self.put_window(is_sum, feature, &merged);
    }

    /// Drops what no condition can read any more and that applying events drops lazily
    /// (on the feature's next write): window buckets outside the retention at `now`.
    /// Nothing observable changes; after a merge, it makes a merged profile equal to the
    /// one profile that got every event.
    pub fn prune(&mut self, features: &[FeatureMerge], now: Millis) {
        for (f, kind) in features.iter().enumerate() {
            let f = f as u16;
            match *kind {
                FeatureMerge::Window { sum, .. } => {
                    let keep_from = kind.keep_from(now);
                    if self.window_oldest(f, sum, 0).is_some_and(|b| b < keep_from) {
                        self.merge_window(f, sum, &[], keep_from);
                    }
                }
                // Absence instances that are only a cancel stay: another profile's earlier
                // triggers may meet them in a later merge.
                FeatureMerge::Absence => {}
                FeatureMerge::Recency => {}
            }
        }
    }

    /// The records sorted by tag and key, with the orders that carry no meaning made
    /// canonical (absence instances by key; favourite candidates of equal count by value):
    /// equal for profiles that hold the same state whatever order it was built in.
    #[cfg(test)]
    pub(crate) fn canonical_records(&self) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            let mut rec = self.arena[i..i + 1 + len].to_vec();
            match tag_of(h) {
                TAG_ABSENCE => {
                    let mut inst: Vec<AbsenceInstance> = self.absence(key_of(h)).collect();
                    inst.sort_by_key(|a| a.key);
                    let mut p = Profile::new();
                    p.set_absence(key_of(h), &inst);
                    rec = p.arena.to_vec();
                }
                TAG_FAVOURITE => rec[1..].sort_by_key(|w| (std::cmp::Reverse(w & 0xffff), w >> 16)),
                _ => {}
            }
            out.push(rec);
            i += 1 + len;
        }
        out.sort_by_key(|r| (tag_of(r[0]), key_of(r[0])));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{AbsenceTrigger, TraitRef};

    const HOUR_S: u32 = 3600;

    fn merged(a: &Profile, b: &Profile, features: &[FeatureMerge], now: Millis) -> Profile {
        let mut m = a.clone();
        merge(&mut m, b, features, Some(3_600_000), now);
        m
    }

    #[test]
    fn type_stats_add_and_grow_to_the_big_form() {
        let mut a = Profile::new();
        let mut b = Profile::new();
        a.touch_type(1, 100);
        a.touch_type(1, 300);
        b.touch_type(1, 50);
        b.touch_type(2, 70);
        let m = merged(&a, &b, &[], 0);
        assert_eq!(
            m.type_stats(1),
            Some(TypeStats {
                count: 3,
                first: 50,
                last: 300
            })
        );
        assert_eq!(m.type_stats(2).map(|s| s.count), Some(1));
        assert_eq!(m.heap_bytes(), 24);
        // 40 000 + 40 000 does not fit the compact form.
        let (mut a, mut b) = (Profile::new(), Profile::new());
        for i in 0..40_000 {
            a.touch_type(1, 10 + i % 3);
            b.touch_type(1, 20);
        }
        let m = merged(&a, &b, &[], 0);
        assert_eq!(
            m.type_stats(1),
            Some(TypeStats {
                count: 80_000,
                first: 10,
                last: 20
            })
        );
        assert_eq!(m.types().count(), 1);
        let m2 = merged(&m, &a, &[], 0);
        assert_eq!(m2.type_stats(1).map(|s| s.count), Some(120_000));
    }

    #[test]
    fn traits_take_the_later_entry_and_removals_win_when_later() {
        let mut a = Profile::new();
        let mut b = Profile::new();
        a.set_trait(1, Some(TraitRef::Str("old")), 100);
        b.set_trait(1, Some(TraitRef::Num(2.5)), 200);
        a.set_trait(2, Some(TraitRef::Bool(true)), 300);
        b.set_trait(2, None, 250);
        a.set_trait(3, Some(TraitRef::Sym(9)), 100);
        b.set_trait(3, None, 400);
        b.set_trait(4, Some(TraitRef::Str("only b")), 10);
        a.set_trait(5, Some(TraitRef::Num(1.0)), 50);
        b.set_trait(5, Some(TraitRef::Num(7.0)), 50);
        let m = merged(&a, &b, &[], 0);
        assert_eq!(m.trait_value(1), Some(TraitRef::Num(2.5)));
        assert_eq!(m.trait_value(2), Some(TraitRef::Bool(true)));
        assert_eq!(m.trait_value(3), None);
        assert_eq!(m.trait_entry(3), Some((None, 400)));
        assert_eq!(m.trait_value(4), Some(TraitRef::Str("only b")));
        // Equal times: `from`'s entry.
        assert_eq!(m.trait_value(5), Some(TraitRef::Num(7.0)));
        assert_eq!(m.trait_count(), 4);
        assert_eq!(m.heap_bytes(), m.arena.len() * 4);
        // The other way round, the result is the same apart from the tie.
        let m2 = merged(&b, &a, &[], 0);
        for k in 1..=4 {
            assert_eq!(m2.trait_entry(k), m.trait_entry(k));
        }
    }

    #[test]
    fn traits_stay_within_the_limit() {
        let mut a = Profile::new();
        let mut b = Profile::new();
        for k in 0..40u16 {
            a.set_trait(k, Some(TraitRef::Bool(true)), 100);
            b.set_trait(100 + k, Some(TraitRef::Bool(false)), 200 + u32::from(k));
        }
        a.set_trait(0, None, 150);
        let m = merged(&a, &b, &[], 0);
        assert_eq!(m.trait_entries().count(), MAX_TRAITS);
        // The marker went first, then b's latest values.
        assert_eq!(m.trait_entry(0), None);
        assert!((1..40).all(|k| m.trait_value(k).is_some()));
        assert!((100..125).all(|k| m.trait_value(k).is_some()));
        assert!((125..140).all(|k| m.trait_value(k).is_none()));
    }

    #[test]
    fn windows_add_per_bucket_and_keep_the_retention() {
        let features = [
            FeatureMerge::Window {
                resolution: HOUR_S,
                retention: 3 * HOUR_S,
                sum: false,
            },
            FeatureMerge::Window {
                resolution: HOUR_S,
                retention: 3 * HOUR_S,
                sum: true,
            },
            FeatureMerge::Window {
                resolution: 0,
                retention: 0,
                sum: false,
            },
        ];
        let (mut a, mut b) = (Profile::new(), Profile::new());
        for (p, buckets) in [(&mut a, [1u32, 5, 7]), (&mut b, [4, 5, 8])] {
            for bkt in buckets {
                p.window_add(0, false, bkt, 1.0, 0);
                p.window_add(1, true, bkt, 2.5, 0);
                p.window_add(2, false, 0, 1.0, 0);
            }
        }
        b.window_add(0, false, 5, 65_534.0, 0);
        // now = hour 8.5: the retention keeps buckets from hour 5.
        let now = Millis::from(8 * HOUR_S + HOUR_S / 2) * 1000;
        let m = merged(&a, &b, &features, now);
        assert_eq!(
            m.window_buckets(0, false).collect::<Vec<_>>(),
            vec![(5, 65_535.0), (7, 1.0), (8, 1.0)]
        );
        assert_eq!(
            m.window_buckets(1, true).collect::<Vec<_>>(),
            vec![(5, 5.0), (7, 2.5), (8, 2.5)]
        );
        assert_eq!(
            m.window_buckets(2, false).collect::<Vec<_>>(),
            vec![(0, 6.0)]
        );
        // A feature only `from` has is copied (and pruned).
        let m = merged(&Profile::new(), &b, &features, now);
        assert_eq!(
            m.window_buckets(1, true).collect::<Vec<_>>(),
            vec![(5, 2.5), (8, 2.5)]
        );
        // Everything outside the retention: no record left.
        let m = merged(&a, &b, &features[..1], now * 10);
        assert_eq!(m.window_buckets(0, false).count(), 0);
        assert_eq!(
            m.window_buckets(1, true).count(),
            5,
            "not described: no pruning"
        );
    }

    #[test]
    fn recency_takes_the_earliest_first_and_latest_last() {
        let (mut a, mut b) = (Profile::new(), Profile::new());
        a.recency_touch(0, 100);
        a.recency_touch(0, 500);
        b.recency_touch(0, 50);
        b.recency_touch(0, 300);
        b.recency_touch(1, 7);
        let m = merged(&a, &b, &[FeatureMerge::Recency; 2], 0);
        assert_eq!(m.recency(0), Some((50, 500)));
        assert_eq!(m.recency(1), Some((7, 7)));
    }

    fn instance(key: u32, last_cancel: Secs, triggers: &[(Secs, Secs)]) -> AbsenceInstance {
        let mut a = AbsenceInstance::new(key);
        a.cancel(last_cancel);
        for &(at, deadline) in triggers {
            a.trigger(at, deadline);
        }
        a
    }

    #[test]
    fn absence_unites_pending_triggers_after_the_latest_cancel() {
        let (mut a, mut b) = (Profile::new(), Profile::new());
        a.set_absence(
            0,
            &[
                instance(1, 0, &[(100, 1000), (300, 1300)]),
                instance(2, 50, &[(60, 90)]),
            ],
        );
        b.set_absence(
            0,
            &[
                instance(2, 0, &[(40, 70), (80, 95)]),
                instance(1, 150, &[(200, 1200)]),
                instance(3, 10, &[]),
            ],
        );
        let m = merged(&a, &b, &[FeatureMerge::Absence], 0);
        let got: Vec<AbsenceInstance> = m.absence(0).collect();
        assert_eq!(
            got,
            vec![
                // The cancel at 150 (from b) removes a's trigger at 100.
                instance(1, 150, &[(200, 1200), (300, 1300)]),
                // b's trigger at 40 is before a's cancel at 50.
                instance(2, 50, &[(60, 90), (80, 95)]),
                instance(3, 10, &[]),
            ]
        );
        assert_eq!(
            got[0].first(),
            Some(AbsenceTrigger {
                at: 200,
                deadline: 1200
            })
        );
        assert!(got[1].fired(90) && !got[1].fired(89));
        // Commutative (as sets): the same instances the other way round.
        let mut other: Vec<AbsenceInstance> = merged(&b, &a, &[FeatureMerge::Absence], 0)
            .absence(0)
            .collect();
        other.sort_by_key(|a| a.key);
        assert_eq!(other, got);
    }

    #[test]
    fn absence_keeps_the_earliest_k_and_the_most_recent_instances() {
        let (mut a, mut b) = (Profile::new(), Profile::new());
        let odd: Vec<(Secs, Secs)> = (0..8).map(|i| (2 * i + 1, 100)).collect();
        let even: Vec<(Secs, Secs)> = (0..8).map(|i| (2 * i + 2, 100)).collect();
        a.set_absence(0, &[instance(1, 0, &odd)]);
        b.set_absence(0, &[instance(1, 0, &even)]);
        let m = merged(&a, &b, &[FeatureMerge::Absence], 0);
        let at: Vec<Secs> = m
            .absence(0)
            .next()
            .unwrap()
            .pending()
            .iter()
            .map(|t| t.at)
            .collect();
        assert_eq!(at, (1..=8).collect::<Vec<_>>());
        // Instances beyond the cap: the least recent go.
        let many = |keys: std::ops::Range<u32>| -> Vec<AbsenceInstance> {
            keys.map(|k| instance(k, 0, &[(k * 10, k * 10 + 5)]))
                .collect()
        };
        a.set_absence(1, &many(1..7));
        b.set_absence(1, &many(7..13));
        let m = merged(&a, &b, &[FeatureMerge::Absence; 2], 0);
        let mut keys: Vec<u32> = m.absence(1).map(|a| a.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, (5..13).collect::<Vec<_>>());
    }

    #[test]
    fn favourites_add_counts_per_candidate() {
        let (mut a, mut b) = (Profile::new(), Profile::new());
        for v in [5, 5, 6] {
            a.favourite_add(0, v);
        }
        for v in [6, 6, 7, 8] {
            b.favourite_add(0, v);
        }
        b.favourite_add(1, 3);
        let m = merged(&a, &b, &[], 0);
        assert_eq!(m.favourites(0), vec![(6, 3), (5, 2), (7, 1), (8, 1)]);
        assert_eq!(m.favourite(0), Some(6));
        assert_eq!(m.favourite(1), Some(3));
        // More than the slots: the most counted stay.
        let mut c = Profile::new();
        for v in [9, 9, 9, 9] {
            c.favourite_add(0, v);
        }
        c.favourite_add(0, 1);
        let m = merged(&m, &c, &[], 0);
        assert_eq!(m.favourites(0), vec![(9, 4), (6, 3), (5, 2), (7, 1)]);
    }

    #[test]
    fn revenue_score_and_clock() {
        let (mut a, mut b) = (Profile::new(), Profile::new());
        a.add_revenue(10.5);
        b.add_revenue(4.25);
        a.score = 8.0;
        a.score_at = 1000;
        b.score = 2.0;
        b.score_at = 1000 + HOUR_S;
        a.clock = 5;
        b.clock = 9;
        b.sequence = 77;
        let m = merged(&a, &b, &[], 0);
        assert_eq!(m.revenue(), 14.75);
        // a's 8 points decayed by one half-life, plus b's 2.
        assert_eq!((m.score, m.score_at), (6.0, 1000 + HOUR_S));
        assert_eq!((m.clock, m.sequence), (9, 0));
        // Without decay the scores add; with nothing on one side nothing changes.
        let mut m = a.clone();
        merge(&mut m, &b, &[], None, 0);
        assert_eq!(m.score, 10.0);
        let mut m = a.clone();
        merge(&mut m, &Profile::new(), &[], Some(1000), 0);
        assert_eq!(m, a);
        let mut m = Profile::new();
        merge(&mut m, &a, &[], Some(1000), 0);
        assert_eq!((m.score, m.score_at, m.revenue()), (8.0, 1000, 10.5));
    }

    #[test]
    fn prune_drops_window_buckets_no_condition_reads() {
        let features = [
            FeatureMerge::Window {
                resolution: 60,
                retention: 600,
                sum: false,
            },
            FeatureMerge::Absence,
        ];
        let mut p = Profile::new();
        p.window_add(0, false, 1, 1.0, 0);
        p.window_add(0, false, 100, 1.0, 0);
        p.set_absence(
            1,
            &[
                instance(1, 10, &[]),
                instance(2, 6_000, &[]),
                instance(3, 0, &[(20, 30)]),
            ],
        );
        p.prune(&features, 6_300_000);
        assert_eq!(
            p.window_buckets(0, false).collect::<Vec<_>>(),
            vec![(100, 1.0)]
        );
        // Instances that are only a cancel stay for a later merge.
        let keys: Vec<u32> = p.absence(1).map(|a| a.key).collect();
        assert_eq!(keys, vec![1, 2, 3]);
        assert_eq!(p.heap_bytes(), p.arena.len() * 4);
    }
}
