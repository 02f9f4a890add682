//! The per-customer profile: compact by construction.
//!
//! Everything variable-sized lives in one `Vec<u32>` arena of tagged records, kept at exact
//! capacity (one allocation per profile, no slack), so that a customer with a typical week
//! of activity costs about 250 bytes rather than kilobytes of maps and JSON values.
//!
//! A record starts with a header word. *Compact* records keep their data in the header:
//! `tag:4 | key:12 | data:16`; *generic* records have `tag:4 | key:16 | len:12` followed by
//! `len` payload words.
//!
//! | tag | form | key | data / payload |
//! |---|---|---|---|
//! | `TYPE` | compact + 2 words | event type | count (16 bits); first seen, last seen |
//! | `TYPE_BIG` | generic | event type | count, first seen, last seen (count ≥ 65 535) |
//! | `TRAIT_SYM` | compact | trait | interned value symbol |
//! | `TRAIT_BOOL` | compact | trait | 0 or 1 |
//! | `TRAIT_STR` | generic | trait | byte length, UTF-8 bytes padded to words |
//! | `TRAIT_F32` / `TRAIT_F64` | generic | trait | the number (one or two words) |
//! | `COUNTS` | generic | feature | base bucket, then `delta:16 | count:16` per bucket |
//! | `SUMS` | generic | feature | base bucket, then (`delta`, f32) per bucket |
//! | `RECENCY` | generic | feature | first, last |
//! | `ABSENCE` | generic | feature | (key hash, pending since, deadline, last cancel) per instance |
//! | `FAVOURITE` | generic | slot | `symbol:16 | count:16` per candidate, most frequent first |
//! | `REVENUE` | generic | 0 | f64 |
//! | `MEMBERS` | generic | 0 | membership bits of segments 64 and up |
//!
//! Times inside the arena are whole seconds since the epoch (`u32`, until 2106); 0 means
//! "none". The profile knows nothing of segments: the engine gives features their meaning.
//!
//! The record encoding (tags, headers, generic record access) and the passes over a whole
//! arena (portable form, checks, remapping) are in `arena`; the typed records are here.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

mod arena;
pub mod merge;

pub use arena::{remap_arena, ArenaError, RefKind, MAX_COMPACT_KEY};

use arena::{
    compact, data_of, decode_trait, generic, is_compact, key_of, len_of, tag_of, MAX_LEN,
    TAG_ABSENCE, TAG_COUNTS, TAG_FAVOURITE, TAG_MEMBERS, TAG_RECENCY, TAG_REVENUE, TAG_SUMS,
    TAG_TRAIT_BOOL, TAG_TRAIT_F32, TAG_TRAIT_F64, TAG_TRAIT_STR, TAG_TRAIT_SYM, TAG_TYPE,
    TAG_TYPE_BIG, TRAIT_TAGS,
};

/// Seconds since the epoch, as stored in profiles.
pub type Secs = u32;

pub fn secs(ms: Millis) -> Secs {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as Secs
}

pub fn millis(s: Secs) -> Millis {
    Millis::from(s) * 1000
}

/// How many correlated instances (e.g. webinars) an absence feature tracks per customer.
pub const MAX_ABSENCE_INSTANCES: usize = 8;
/// How many candidates the favourite tracker keeps (space-saving top-k).
const FAVOURITE_SLOTS: usize = 4;
/// The most trait values a profile keeps; an `identify` beyond it adds nothing new.
pub const MAX_TRAITS: usize = 64;

/// A trait value as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraitRef<'a> {
    /// An interned value (see `SymbolClass::Value`).
    Sym(u16),
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

/// Per event type: how often and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeStats {
    pub count: u32,
    pub first: Secs,
    pub last: Secs,
}

/// One tracked instance of an absence pattern ("trigger, then no cancel").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsenceInstance {
    /// Hash of the correlation value (0 when the pattern is not correlated).
    pub key: u32,
    /// Time of the first trigger since the last cancel (0 = not armed).
    pub pending: Secs,
    /// When the armed instance fires.
    pub deadline: Secs,
    /// Time of the latest cancel seen (0 = none).
    pub last_cancel: Secs,
}

/// An owned copy of a profile's segment memberships (by segment index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(Vec<u64>);

impl Members {
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// A customer's state. See the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    arena: Vec<u32>,
    /// Membership bits of the first 64 segments (the rest live in the arena).
    members_low: u64,
    /// The customer's evaluation clock: the latest event time or fired timer (ms).
    pub clock: Millis,
    /// Sequence number of the last transition emitted for this customer.
    pub sequence: u32,
    /// When this customer's next timer is due (seconds; 0 = none).
    pub timer_at: Secs,
    /// Lead score as of `score_at` (decays from there).
    pub score: f32,
    pub score_at: Secs,
    /// The input shard (partition) the customer's events arrive on: state is owned, written
    /// to the changelog and dropped per shard. Opaque to the engine.
    #[serde(default)]
    pub shard: u16,
    /// Changed since the last `Engine::drain_changes` (changelog bookkeeping).
    #[serde(skip)]
    pub(crate) dirty: bool,
    /// Whether the person is known (one of its ids came as a `customer_id`) or anonymous.
    /// Profiles written before identity resolution were all known.
    #[serde(default)]
    pub known: bool,
}

impl Profile {
    pub fn new() -> Self {
        Profile::default()
    }

    /// Heap bytes owned by this profile (excluding allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() * 4
    }

    // ---- event types --------------------------------------------------------------------

    /// Counts an event of type `ty` (a 12-bit symbol) at `at`.
    pub fn touch_type(&mut self, ty: u16, at: Secs) {
        if let Some((i, _)) = self.find(TAG_TYPE, ty) {
            let h = self.arena[i];
            let count = data_of(h);
            let (first, last) = (self.arena[i + 1], self.arena[i + 2]);
            let (first, last) = (first.min(at), last.max(at));
            if count < u16::MAX - 1 {
                self.arena[i] = compact(TAG_TYPE, ty, count + 1);
                self.arena[i + 1] = first;
                self.arena[i + 2] = last;
            } else {
                self.arena.drain(i..i + 3);
                self.put(TAG_TYPE_BIG, ty, &[u32::from(count) + 1, first, last]);
            }
        } else if let Some((i, _)) = self.find(TAG_TYPE_BIG, ty) {
            let p = &mut self.arena[i + 1..i + 4];
            p[0] = p[0].saturating_add(1);
            p[1] = p[1].min(at);
            p[2] = p[2].max(at);
        } else {
            self.arena.reserve_exact(3);
            self.arena
                .extend_from_slice(&[compact(TAG_TYPE, ty, 1), at, at]);
        }
    }

    pub fn type_stats(&self, ty: u16) -> Option<TypeStats> {
        if let Some((i, _)) = self.find(TAG_TYPE, ty) {
            return Some(TypeStats {
                count: u32::from(data_of(self.arena[i])),
                first: self.arena[i + 1],
                last: self.arena[i + 2],
            });
        }
        self.payload(TAG_TYPE_BIG, ty).map(|p| TypeStats {
            count: p[0],
            first: p[1],
            last: p[2],
        })
    }

    pub fn types(&self) -> impl Iterator<Item = (u16, TypeStats)> + '_ {
        let small = self.records(TAG_TYPE).map(|(h, p)| {
            (
                key_of(h),
                TypeStats {
                    count: u32::from(data_of(h)),
                    first: p[0],
                    last: p[1],
                },
            )
        });
        let big = self.records(TAG_TYPE_BIG).map(|(h, p)| {
            (
                key_of(h),
                TypeStats {
                    count: p[0],
                    first: p[1],
                    last: p[2],
                },
            )
        });
        small.chain(big)
    }

    /// First event of any type (0 = none).
    pub fn first_seen(&self) -> Secs {
        self.types().map(|(_, s)| s.first).min().unwrap_or(0)
    }

    /// Last event of any type (0 = none).
    pub fn last_seen(&self) -> Secs {
        self.types().map(|(_, s)| s.last).max().unwrap_or(0)
    }

    // ---- traits -------------------------------------------------------------------------

    pub fn trait_value(&self, key: u16) -> Option<TraitRef<'_>> {
        TRAIT_TAGS
            .into_iter()
            .find_map(|t| self.find(t, key).map(|(i, len)| (t, i, len)))
            .map(|(t, i, len)| decode_trait(t, self.arena[i], &self.arena[i + 1..i + 1 + len]))
    }

    pub fn traits(&self) -> impl Iterator<Item = (u16, TraitRef<'_>)> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.arena.len() {
                let h = self.arena[i];
                let len = len_of(h);
                let at = i;
                i += 1 + len;
                let t = tag_of(h);
                if TRAIT_TAGS.contains(&t) {
                    return Some((
                        key_of(h),
                        decode_trait(t, h, &self.arena[at + 1..at + 1 + len]),
                    ));
                }
            }
            None
        })
    }

    pub fn trait_count(&self) -> usize {
        self.traits().count()
    }

    /// Sets a trait (`key` is a 12-bit symbol); `None` removes it. Returns whether the
    /// stored value changed.
    pub fn set_trait(&mut self, key: u16, value: Option<TraitRef<'_>>) -> bool {
        let old = self.trait_value(key);
        if old == value {
            return false;
        }
        for t in TRAIT_TAGS {
            if self.find(t, key).is_some() {
                if is_compact(t) {
                    let (i, _) = self.find(t, key).unwrap_or_default();
                    self.arena.remove(i);
                    self.arena.shrink_to_fit();
                } else {
                    self.remove(t, key);
                }
            }
        }
        let push_compact = |arena: &mut Vec<u32>, tag, data| {
            arena.reserve_exact(1);
            arena.push(compact(tag, key, data));
        };
        match value {
            None => {}
            Some(TraitRef::Sym(s)) => push_compact(&mut self.arena, TAG_TRAIT_SYM, s),
            Some(TraitRef::Bool(b)) => push_compact(&mut self.arena, TAG_TRAIT_BOOL, u16::from(b)),
            Some(TraitRef::Num(n)) => {
                let small = n as f32;
                if f64::from(small) == n {
                    self.put(TAG_TRAIT_F32, key, &[small.to_bits()]);
                } else {
                    let bits = n.to_bits();
                    self.put(TAG_TRAIT_F64, key, &[bits as u32, (bits >> 32) as u32]);
                }
            }
            Some(TraitRef::Str(s)) => {
                let mut cut = s.len().min((MAX_LEN - 1) * 4);
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                let bytes = &s.as_bytes()[..cut];
                let mut words = Vec::with_capacity(1 + bytes.len().div_ceil(4));
                words.push(bytes.len() as u32);
                for chunk in bytes.chunks(4) {
                    let mut w = [0u8; 4];
                    w[..chunk.len()].copy_from_slice(chunk);
                    words.push(u32::from_ne_bytes(w));
                }
                self.put(TAG_TRAIT_STR, key, &words);
            }
        }
        true
    }

    // ---- windowed aggregates ------------------------------------------------------------

    /// Adds `value` to `bucket` of a windowed feature, first dropping buckets before
    /// `keep_from` (they have left the longest window that uses the feature). Counts are
    /// kept as 16-bit numbers per bucket (saturating), sums as f32.
    pub fn window_add(
        &mut self,
        feature: u16,
        is_sum: bool,
        bucket: u32,
        value: f32,
        keep_from: u32,
    ) {
        let tag = if is_sum { TAG_SUMS } else { TAG_COUNTS };
        let stride = if is_sum { 2 } else { 1 };
        // Fast path, without allocating: nothing to prune and the bucket is the newest or
        // already present (the common case: events arrive roughly in time order).
        if let Some((i, len)) = self.find(tag, feature) {
            let base = self.arena[i + 1];
            if base >= keep_from && bucket >= base && bucket - base <= 0xffff {
                let delta = bucket - base;
                let body = i + 2..i + 1 + len;
                let mut j = body.start;
                while j < body.end && (self.arena[j] >> 16) < delta {
                    j += stride;
                }
                if j < body.end && (self.arena[j] >> 16) == delta {
                    if is_sum {
                        let v = f32::from_bits(self.arena[j + 1]) + value;
                        self.arena[j + 1] = v.to_bits();
                    } else {
                        let c = ((self.arena[j] & 0xffff) as f32 + value).clamp(0.0, 65_535.0);
                        self.arena[j] = (delta << 16) | c as u32;
                    }
                    return;
                }
                if j == body.end && len + stride <= MAX_LEN {
                    self.arena.reserve_exact(stride);
                    if is_sum {
                        self.arena.splice(j..j, [delta << 16, value.to_bits()]);
                    } else {
                        let c = value.clamp(0.0, 65_535.0) as u32;
                        self.arena.insert(j, (delta << 16) | c);
                    }
                    self.arena[i] = generic(tag, feature, len + stride);
                    return;
                }
            }
        }
        let mut entries: Vec<(u32, f32)> = self.window_entries(tag, feature).collect();
        let before = entries.len();
        entries.retain(|(b, _)| *b >= keep_from);
        if bucket >= keep_from {
            match entries.binary_search_by_key(&bucket, |(b, _)| *b) {
                Ok(i) => entries[i].1 += value,
                Err(i) => entries.insert(i, (bucket, value)),
            }
        } else if entries.len() == before {
            return;
        }
        // Buckets more than 16 bits apart from the oldest cannot be stored; they are older
        // than any window of the feature, so drop the oldest until the rest fit.
        while entries.len() > 1 && entries[entries.len() - 1].0 - entries[0].0 > 0xffff {
            entries.remove(0);
        }
        if entries.is_empty() {
            self.remove(tag, feature);
            return;
        }
        let base = entries[0].0;
        let mut words = Vec::with_capacity(1 + entries.len() * stride);
        words.push(base);
        for (b, v) in entries.iter().take((MAX_LEN - 1) / stride) {
            let delta = (b - base) << 16;
            if is_sum {
                words.push(delta);
                words.push(v.to_bits());
            } else {
                words.push(delta | (v.clamp(0.0, 65_535.0) as u32));
            }
        }
        self.put(tag, feature, &words);
    }

    fn window_entries(&self, tag: u32, feature: u16) -> impl Iterator<Item = (u32, f32)> + '_ {
        let p = self.payload(tag, feature).unwrap_or(&[]);
        let base = p.first().copied().unwrap_or(0);
        let body = p.get(1..).unwrap_or(&[]);
        let stride = if tag == TAG_SUMS { 2 } else { 1 };
        body.chunks_exact(stride).map(move |c| {
            let b = base + (c[0] >> 16);
            let v = if stride == 2 {
                f32::from_bits(c[1])
            } else {
                (c[0] & 0xffff) as f32
            };
            (b, v)
        })
    }

    /// All (bucket, value) pairs of a windowed feature, oldest first.
    pub fn window_buckets(
        &self,
        feature: u16,
        is_sum: bool,
    ) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.window_entries(if is_sum { TAG_SUMS } else { TAG_COUNTS }, feature)
    }

    /// Sum of the buckets at or after `from`.
    pub fn window_sum(&self, feature: u16, is_sum: bool, from: u32) -> f64 {
        let tag = if is_sum { TAG_SUMS } else { TAG_COUNTS };
        let Some(p) = self.payload(tag, feature) else {
            return 0.0;
        };
        let base = p[0];
        if is_sum {
            p[1..]
                .chunks_exact(2)
                .filter(|c| base + (c[0] >> 16) >= from)
                .map(|c| f64::from(f32::from_bits(c[1])))
                .sum()
        } else {
            let total: u32 = p[1..]
                .iter()
                .filter(|w| base + (*w >> 16) >= from)
                .map(|w| w & 0xffff)
                .sum();
            f64::from(total)
        }
    }

    /// The sum of the buckets at or after `from`, and the oldest of them, in one scan.
    pub fn window_sum_oldest(&self, feature: u16, is_sum: bool, from: u32) -> (f64, Option<u32>) {
        let mut total = 0.0;
        let mut oldest = None;
        for (b, v) in self.window_buckets(feature, is_sum) {
            if b >= from {
                total += f64::from(v);
                oldest.get_or_insert(b);
            }
        }
        (total, oldest)
    }

    /// The oldest bucket at or after `from` that holds something.
    pub fn window_oldest(&self, feature: u16, is_sum: bool, from: u32) -> Option<u32> {
        self.window_buckets(feature, is_sum)
            .map(|(b, _)| b)
            .find(|b| *b >= from)
    }

    // ---- filtered recency -----------------------------------------------------------------

    pub fn recency_touch(&mut self, feature: u16, at: Secs) {
        match self.find(TAG_RECENCY, feature) {
            Some((i, _)) => {
                let p = &mut self.arena[i + 1..i + 3];
                p[0] = p[0].min(at);
                p[1] = p[1].max(at);
            }
            None => self.put(TAG_RECENCY, feature, &[at, at]),
        }
    }

    /// (first, last) time a filtered pattern matched.
    pub fn recency(&self, feature: u16) -> Option<(Secs, Secs)> {
        self.payload(TAG_RECENCY, feature).map(|p| (p[0], p[1]))
    }

    // ---- absence ----------------------------------------------------------------------------

    pub fn absence(&self, feature: u16) -> impl Iterator<Item = AbsenceInstance> + '_ {
        self.payload(TAG_ABSENCE, feature)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| AbsenceInstance {
                key: c[0],
                pending: c[1],
                deadline: c[2],
                last_cancel: c[3],
            })
    }

    pub fn set_absence(&mut self, feature: u16, instances: &[AbsenceInstance]) {
        if instances.is_empty() {
            self.remove(TAG_ABSENCE, feature);
            return;
        }
        let words: Vec<u32> = instances
            .iter()
            .flat_map(|a| [a.key, a.pending, a.deadline, a.last_cancel])
            .collect();
        self.put(TAG_ABSENCE, feature, &words);
    }

    // ---- favourites ------------------------------------------------------------------------

    /// Counts one occurrence of `value` (a 16-bit symbol) in favourite slot `slot`.
    pub fn favourite_add(&mut self, slot: u16, value: u16) {
        let mut pairs: Vec<(u16, u16)> = self
            .payload(TAG_FAVOURITE, slot)
            .unwrap_or(&[])
            .iter()
            .map(|w| ((w >> 16) as u16, *w as u16))
            .collect();
        if let Some(p) = pairs.iter_mut().find(|p| p.0 == value) {
            p.1 = p.1.saturating_add(1);
        } else if pairs.len() < FAVOURITE_SLOTS {
            pairs.push((value, 1));
        } else {
            // Space-saving: the least counted candidate is replaced, inheriting its count.
            let last = pairs.len() - 1;
            pairs[last] = (value, pairs[last].1.saturating_add(1));
        }
        // Most frequent first; ties keep the earlier (stable sort).
        pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
        let words: Vec<u32> = pairs
            .iter()
            .map(|p| (u32::from(p.0) << 16) | u32::from(p.1))
            .collect();
        self.put(TAG_FAVOURITE, slot, &words);
    }

    pub fn favourite(&self, slot: u16) -> Option<u16> {
        self.payload(TAG_FAVOURITE, slot)
            .and_then(|p| p.first())
            .map(|w| (w >> 16) as u16)
    }

    // ---- value -------------------------------------------------------------------------

    /// Lifetime sum of purchase amounts.
    pub fn revenue(&self) -> f64 {
        self.payload(TAG_REVENUE, 0).map_or(0.0, |p| {
            f64::from_bits(u64::from(p[0]) | (u64::from(p[1]) << 32))
        })
    }

    pub fn add_revenue(&mut self, amount: f64) {
        let bits = (self.revenue() + amount).to_bits();
        self.put(TAG_REVENUE, 0, &[bits as u32, (bits >> 32) as u32]);
    }

    // ---- memberships ---------------------------------------------------------------------

    pub fn is_member(&self, i: usize) -> bool {
        if i < 64 {
            return self.members_low & (1 << i) != 0;
        }
        let (w, b) = ((i - 64) / 32, (i - 64) % 32);
        self.payload(TAG_MEMBERS, 0)
            .and_then(|p| p.get(w))
            .is_some_and(|x| x & (1 << b) != 0)
    }

    pub fn set_member(&mut self, i: usize, on: bool) {
        if i < 64 {
            if on {
                self.members_low |= 1 << i;
            } else {
                self.members_low &= !(1 << i);
            }
            return;
        }
        let (w, b) = ((i - 64) / 32, (i - 64) % 32);
        let mut words = self.payload(TAG_MEMBERS, 0).unwrap_or(&[]).to_vec();
        if words.len() <= w {
            if !on {
                return;
            }
            words.resize(w + 1, 0);
        }
        if on {
            words[w] |= 1 << b;
        } else {
            words[w] &= !(1 << b);
        }
        while words.last() == Some(&0) {
            words.pop();
        }
        if words.is_empty() {
            self.remove(TAG_MEMBERS, 0);
        } else {
            self.put(TAG_MEMBERS, 0, &words);
        }
    }

    /// Indices of the segments the customer is in, ascending.
    pub fn members(&self) -> impl Iterator<Item = usize> + '_ {
        let low = (0..64).filter(move |b| self.members_low & (1u64 << b) != 0);
        let high = self
            .payload(TAG_MEMBERS, 0)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| {
                (0..32)
                    .filter(move |b| bits & (1u32 << b) != 0)
                    .map(move |b| 64 + w * 32 + b)
            });
        low.chain(high)
    }

    pub fn has_members(&self) -> bool {
        self.members_low != 0 || self.find(TAG_MEMBERS, 0).is_some()
    }

    /// Removes every membership and returns them.
    pub fn take_members(&mut self) -> Members {
        let mut words = Vec::new();
        for i in self.members() {
            if words.len() <= i / 64 {
                words.resize(i / 64 + 1, 0u64);
            }
            words[i / 64] |= 1 << (i % 64);
        }
        self.members_low = 0;
        self.remove(TAG_MEMBERS, 0);
        Members(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_stats_track_count_first_last() {
        let mut p = Profile::new();
        p.touch_type(3, 100);
        p.touch_type(3, 50);
        p.touch_type(3, 200);
        p.touch_type(4, 10);
        assert_eq!(
            p.type_stats(3),
            Some(TypeStats {
                count: 3,
                first: 50,
                last: 200
            })
        );
        assert_eq!(p.types().count(), 2);
        assert_eq!(p.type_stats(9), None);
        assert_eq!((p.first_seen(), p.last_seen()), (10, 200));
        assert_eq!(
            p.heap_bytes(),
            24,
            "two compact type records, exact capacity"
        );
    }

    #[test]
    fn type_counts_grow_past_16_bits() {
        let mut p = Profile::new();
        for i in 0..70_000u32 {
            p.touch_type(1, 1000 + i % 7);
        }
        assert_eq!(
            p.type_stats(1),
            Some(TypeStats {
                count: 70_000,
                first: 1000,
                last: 1006
            })
        );
        assert_eq!(p.types().count(), 1);
    }

    #[test]
    fn traits_round_trip_all_kinds() {
        let mut p = Profile::new();
        assert!(p.set_trait(1, Some(TraitRef::Str("marketing"))));
        assert!(p.set_trait(2, Some(TraitRef::Num(5000.5))));
        assert!(p.set_trait(3, Some(TraitRef::Bool(true))));
        assert!(p.set_trait(4, Some(TraitRef::Str("Europe/Zürich"))));
        assert!(p.set_trait(5, Some(TraitRef::Sym(77))));
        assert!(p.set_trait(6, Some(TraitRef::Num(0.1))));
        assert!(!p.set_trait(1, Some(TraitRef::Str("marketing"))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("marketing")));
        assert_eq!(p.trait_value(2), Some(TraitRef::Num(5000.5)));
        assert_eq!(p.trait_value(3), Some(TraitRef::Bool(true)));
        assert_eq!(p.trait_value(4), Some(TraitRef::Str("Europe/Zürich")));
        assert_eq!(p.trait_value(5), Some(TraitRef::Sym(77)));
        assert_eq!(p.trait_value(6), Some(TraitRef::Num(0.1)));
        assert!(p.set_trait(1, Some(TraitRef::Num(1.0))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Num(1.0)));
        assert!(p.set_trait(2, None));
        assert_eq!(p.trait_value(2), None);
        assert!(p.set_trait(5, Some(TraitRef::Bool(false))));
        assert_eq!(p.trait_value(5), Some(TraitRef::Bool(false)));
        assert_eq!(p.trait_count(), 5);
        assert!(p.set_trait(1, Some(TraitRef::Str(""))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("")));
        assert_eq!(p.heap_bytes(), p.arena.len() * 4, "no slack");
    }

    #[test]
    fn windows_add_sum_and_prune() {
        for is_sum in [false, true] {
            let mut p = Profile::new();
            p.window_add(0, is_sum, 10, 1.0, 0);
            p.window_add(0, is_sum, 12, 2.0, 0);
            p.window_add(0, is_sum, 11, 4.0, 0);
            p.window_add(0, is_sum, 12, 1.0, 0);
            assert_eq!(p.window_sum(0, is_sum, 0), 8.0);
            assert_eq!(p.window_sum(0, is_sum, 11), 7.0);
            assert_eq!(p.window_oldest(0, is_sum, 0), Some(10));
            // Pruning happens on the next write.
            p.window_add(0, is_sum, 13, 1.0, 12);
            assert_eq!(
                p.window_buckets(0, is_sum).collect::<Vec<_>>(),
                vec![(12, 3.0), (13, 1.0)]
            );
            // A write older than the retention is dropped, and pruning can empty the record.
            p.window_add(0, is_sum, 5, 1.0, 20);
            assert_eq!(p.window_buckets(0, is_sum).count(), 0);
            assert_eq!(p.heap_bytes(), 0);
        }
        let mut p = Profile::new();
        p.window_add(1, true, 100_000, 2.5, 0);
        p.window_add(1, true, 100_003, -1.0, 0);
        assert_eq!(p.window_sum(1, true, 0), 1.5);
        // Far-apart buckets: the old one cannot be in any window with the new one.
        p.window_add(2, false, 10, 1.0, 0);
        p.window_add(2, false, 10 + 70_000, 1.0, 0);
        assert_eq!(
            p.window_buckets(2, false).collect::<Vec<_>>(),
            vec![(70_010, 1.0)]
        );
    }

    #[test]
    fn absence_and_remap() {
        let mut p = Profile::new();
        let a = AbsenceInstance {
            key: 7,
            pending: 100,
            deadline: 200,
            last_cancel: 0,
        };
        p.set_absence(2, &[a]);
        p.recency_touch(3, 50);
        p.window_add(4, false, 1, 1.0, 0);
        p.touch_type(9, 5);
        assert_eq!(p.absence(2).collect::<Vec<_>>(), vec![a]);
        p.remap_features(&|k| match k {
            2 => Some(0),
            4 => Some(1),
            _ => None,
        });
        assert_eq!(p.absence(0).collect::<Vec<_>>(), vec![a]);
        assert_eq!(p.window_sum(1, false, 0), 1.0);
        assert_eq!(p.recency(3), None);
        assert_eq!(p.type_stats(9).map(|s| s.count), Some(1));
    }

    #[test]
    fn favourites_keep_the_most_frequent() {
        let mut p = Profile::new();
        for v in [5, 6, 6, 7, 6, 5] {
            p.favourite_add(0, v);
        }
        assert_eq!(p.favourite(0), Some(6));
        assert_eq!(p.favourite(1), None);
    }

    #[test]
    fn revenue_and_memberships() {
        let mut p = Profile::new();
        assert_eq!(p.revenue(), 0.0);
        p.add_revenue(10.25);
        p.add_revenue(0.5);
        assert_eq!(p.revenue(), 10.75);
        p.set_member(3, true);
        p.set_member(70, true);
        p.set_member(200, true);
        assert!(p.is_member(3) && p.is_member(70) && p.is_member(200) && !p.is_member(4));
        assert_eq!(p.members().collect::<Vec<_>>(), vec![3, 70, 200]);
        p.set_member(200, false);
        let m = p.take_members();
        assert!(m.contains(3) && m.contains(70) && !m.contains(200));
        assert!(!p.has_members());
        assert_eq!(p.revenue(), 10.75);
    }
}
