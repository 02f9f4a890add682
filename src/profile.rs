//! The per-customer profile: compact by construction.
//!
//! Everything variable-sized lives in one `Vec<u32>` arena of tagged records (one
//! allocation per profile), so that a customer with a typical week of activity costs a
//! couple of hundred bytes rather than kilobytes of maps and JSON values. Records:
//!
//! | tag | key | payload (u32 words) |
//! |---|---|---|
//! | `TYPE` | event-type symbol | count, first seen, last seen |
//! | `TRAIT_STR` | trait symbol | byte length, UTF-8 bytes padded to words |
//! | `TRAIT_NUM` | trait symbol | f64 as two words |
//! | `TRAIT_BOOL` | trait symbol | 0 or 1 |
//! | `WINDOW` | feature index | (bucket, f32 value) pairs, ascending bucket |
//! | `RECENCY` | feature index | first, last |
//! | `ABSENCE` | feature index | (key hash, pending since, deadline, last cancel) per instance |
//! | `FAVOURITE` | 0 = category, 1 = product | (symbol, count) pairs, most frequent first |
//!
//! Times inside the arena are whole seconds since the epoch (`u32`, until 2106); 0 means
//! "none". The profile knows nothing of segments: the engine gives features their meaning.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Seconds since the epoch, as stored in profiles.
pub type Secs = u32;

pub fn secs(ms: Millis) -> Secs {
    ms.div_euclid(1000).clamp(0, u32::MAX as i64) as Secs
}

pub fn millis(s: Secs) -> Millis {
    Millis::from(s) * 1000
}

const TAG_TYPE: u32 = 1;
const TAG_TRAIT_STR: u32 = 2;
const TAG_TRAIT_NUM: u32 = 3;
const TAG_TRAIT_BOOL: u32 = 4;
const TAG_WINDOW: u32 = 5;
const TAG_RECENCY: u32 = 6;
const TAG_ABSENCE: u32 = 7;
const TAG_FAVOURITE: u32 = 8;

const MAX_LEN: usize = 0xfff;
/// How many correlated instances (e.g. webinars) an absence feature tracks per customer.
pub const MAX_ABSENCE_INSTANCES: usize = 8;
/// How many candidates the favourite tracker keeps (space-saving top-k).
const FAVOURITE_SLOTS: usize = 4;
/// The most trait values a profile keeps; an `identify` beyond it replaces nothing new.
pub const MAX_TRAITS: usize = 64;

fn header(tag: u32, key: u16, len: usize) -> u32 {
    debug_assert!(len <= MAX_LEN);
    (tag << 28) | (u32::from(key) << 12) | len as u32
}

fn tag_of(h: u32) -> u32 {
    h >> 28
}
fn key_of(h: u32) -> u16 {
    ((h >> 12) & 0xffff) as u16
}
fn len_of(h: u32) -> usize {
    (h & 0xfff) as usize
}

/// A trait value as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraitRef<'a> {
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

/// Segment memberships as a bitset over the current definitions' segment indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    low: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high: Option<Box<[u64]>>,
}

impl Members {
    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            let (w, b) = ((i - 64) / 64, (i - 64) % 64);
            self.high
                .as_ref()
                .and_then(|h| h.get(w))
                .is_some_and(|x| x & (1 << b) != 0)
        }
    }
    pub fn set(&mut self, i: usize, on: bool) {
        if i < 64 {
            if on {
                self.low |= 1 << i;
            } else {
                self.low &= !(1 << i);
            }
            return;
        }
        let (w, b) = ((i - 64) / 64, (i - 64) % 64);
        let high = self.high.get_or_insert_with(|| vec![0; w + 1].into());
        if high.len() <= w {
            let mut v = high.to_vec();
            v.resize(w + 1, 0);
            *high = v.into();
        }
        if on {
            high[w] |= 1 << b;
        } else {
            high[w] &= !(1 << b);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.as_ref().is_none_or(|h| h.iter().all(|w| *w == 0))
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let words =
            std::iter::once(self.low).chain(self.high.iter().flat_map(|h| h.iter().copied()));
        words.enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

/// A customer's state. See the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    arena: Vec<u32>,
    /// First and last event of any type (seconds).
    pub first_seen: Secs,
    pub last_seen: Secs,
    /// The customer's evaluation clock: the latest event time or fired timer (ms).
    pub clock: Millis,
    /// Sequence number of the last transition emitted for this customer.
    pub sequence: u32,
    /// When this customer's next timer is due (ms; 0 = none).
    pub timer_at: Millis,
    /// Lead score as of `score_at` (decays from there).
    pub score: f32,
    pub score_at: Secs,
    /// Lifetime sum of purchase amounts.
    pub revenue: f64,
    pub members: Members,
}

impl Profile {
    pub fn new() -> Self {
        Profile::default()
    }

    /// Heap bytes owned by this profile (excluding allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() * 4 + self.members.high.as_ref().map_or(0, |h| h.len() * 8)
    }

    /// Shrinks the arena to fit; the engine calls it after bulk changes.
    pub fn shrink(&mut self) {
        self.arena.shrink_to_fit();
    }

    // ---- records ----------------------------------------------------------------------

    fn find(&self, tag: u32, key: u16) -> Option<(usize, usize)> {
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            if tag_of(h) == tag && key_of(h) == key {
                return Some((i, len));
            }
            i += 1 + len;
        }
        None
    }

    fn payload(&self, tag: u32, key: u16) -> Option<&[u32]> {
        self.find(tag, key)
            .map(|(i, len)| &self.arena[i + 1..i + 1 + len])
    }

    /// Replaces (or appends) a record's payload.
    fn put(&mut self, tag: u32, key: u16, payload: &[u32]) {
        let len = payload.len().min(MAX_LEN);
        match self.find(tag, key) {
            Some((i, old)) => {
                self.arena[i] = header(tag, key, len);
                self.arena
                    .splice(i + 1..i + 1 + old, payload[..len].iter().copied());
            }
            None => {
                self.arena.reserve_exact(1 + len);
                self.arena.push(header(tag, key, len));
                self.arena.extend_from_slice(&payload[..len]);
            }
        }
    }

    fn remove(&mut self, tag: u32, key: u16) -> bool {
        match self.find(tag, key) {
            Some((i, len)) => {
                self.arena.drain(i..i + 1 + len);
                true
            }
            None => false,
        }
    }

    /// Records of a tag, with their key and payload.
    fn records(&self, tag: u32) -> impl Iterator<Item = (u16, &[u32])> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.arena.len() {
                let h = self.arena[i];
                let len = len_of(h);
                let at = i;
                i += 1 + len;
                if tag_of(h) == tag {
                    return Some((key_of(h), &self.arena[at + 1..at + 1 + len]));
                }
            }
            None
        })
    }

    // ---- event types --------------------------------------------------------------------

    pub fn touch_type(&mut self, ty: u16, at: Secs) {
        match self.find(TAG_TYPE, ty) {
            Some((i, _)) => {
                let p = &mut self.arena[i + 1..i + 4];
                p[0] = p[0].saturating_add(1);
                if p[1] == 0 || at < p[1] {
                    p[1] = at;
                }
                p[2] = p[2].max(at);
            }
            None => self.put(TAG_TYPE, ty, &[1, at, at]),
        }
    }

    pub fn type_stats(&self, ty: u16) -> Option<TypeStats> {
        self.payload(TAG_TYPE, ty).map(|p| TypeStats {
            count: p[0],
            first: p[1],
            last: p[2],
        })
    }

    pub fn types(&self) -> impl Iterator<Item = (u16, TypeStats)> + '_ {
        self.records(TAG_TYPE).map(|(k, p)| {
            (
                k,
                TypeStats {
                    count: p[0],
                    first: p[1],
                    last: p[2],
                },
            )
        })
    }

    // ---- traits -------------------------------------------------------------------------

    fn trait_record(&self, key: u16) -> Option<(u32, &[u32])> {
        [TAG_TRAIT_STR, TAG_TRAIT_NUM, TAG_TRAIT_BOOL]
            .into_iter()
            .find_map(|t| self.payload(t, key).map(|p| (t, p)))
    }

    pub fn trait_value(&self, key: u16) -> Option<TraitRef<'_>> {
        self.trait_record(key).map(|(t, p)| decode_trait(t, p))
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
                if matches!(t, TAG_TRAIT_STR | TAG_TRAIT_NUM | TAG_TRAIT_BOOL) {
                    return Some((
                        key_of(h),
                        decode_trait(t, &self.arena[at + 1..at + 1 + len]),
                    ));
                }
            }
            None
        })
    }

    pub fn trait_count(&self) -> usize {
        self.traits().count()
    }

    /// Sets a trait; `None` removes it. Returns whether anything changed.
    pub fn set_trait(&mut self, key: u16, value: Option<TraitRef<'_>>) -> bool {
        let old = self.trait_value(key);
        if old == value {
            return false;
        }
        for t in [TAG_TRAIT_STR, TAG_TRAIT_NUM, TAG_TRAIT_BOOL] {
            self.remove(t, key);
        }
        match value {
            None => {}
            Some(TraitRef::Bool(b)) => self.put(TAG_TRAIT_BOOL, key, &[u32::from(b)]),
            Some(TraitRef::Num(n)) => {
                let bits = n.to_bits();
                self.put(TAG_TRAIT_NUM, key, &[bits as u32, (bits >> 32) as u32]);
            }
            Some(TraitRef::Str(s)) => {
                let bytes = &s.as_bytes()[..s.len().min((MAX_LEN - 1) * 4)];
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
    /// `keep_from` (they have left the longest window that uses the feature).
    pub fn window_add(&mut self, feature: u16, bucket: u32, value: f32, keep_from: u32) {
        let Some((i, len)) = self.find(TAG_WINDOW, feature) else {
            if bucket >= keep_from {
                self.put(TAG_WINDOW, feature, &[bucket, value.to_bits()]);
            }
            return;
        };
        let start = i + 1;
        let end = start + len;
        // Prune expired pairs at the front.
        let mut first_live = start;
        while first_live < end && self.arena[first_live] < keep_from {
            first_live += 2;
        }
        let removed = first_live - start;
        if removed > 0 {
            self.arena.drain(start..first_live);
        }
        let len = len - removed;
        let end = start + len;
        if bucket >= keep_from {
            let mut j = start;
            while j < end && self.arena[j] < bucket {
                j += 2;
            }
            if j < end && self.arena[j] == bucket {
                let v = f32::from_bits(self.arena[j + 1]) + value;
                self.arena[j + 1] = v.to_bits();
                self.arena[i] = header(TAG_WINDOW, feature, len);
            } else if len + 2 <= MAX_LEN {
                self.arena.splice(j..j, [bucket, value.to_bits()]);
                self.arena[i] = header(TAG_WINDOW, feature, len + 2);
            } else {
                // Full (2047 buckets): fold into the newest bucket so totals stay right.
                let v = f32::from_bits(self.arena[end - 1]) + value;
                self.arena[end - 1] = v.to_bits();
                self.arena[i] = header(TAG_WINDOW, feature, len);
            }
        } else {
            self.arena[i] = header(TAG_WINDOW, feature, len);
        }
        if len == 0 && bucket < keep_from {
            self.arena.remove(i);
        }
    }

    /// Sum of the buckets at or after `from`.
    pub fn window_sum(&self, feature: u16, from: u32) -> f64 {
        self.payload(TAG_WINDOW, feature).map_or(0.0, |p| {
            p.chunks_exact(2)
                .filter(|c| c[0] >= from)
                .map(|c| f64::from(f32::from_bits(c[1])))
                .sum()
        })
    }

    /// The oldest bucket at or after `from` that holds something.
    pub fn window_oldest(&self, feature: u16, from: u32) -> Option<u32> {
        self.payload(TAG_WINDOW, feature)
            .and_then(|p| p.chunks_exact(2).map(|c| c[0]).find(|b| *b >= from))
    }

    /// All (bucket, value) pairs of a windowed feature.
    pub fn window_buckets(&self, feature: u16) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.payload(TAG_WINDOW, feature)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| (c[0], f32::from_bits(c[1])))
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

    /// Counts one occurrence of `value` (a symbol) in favourite slot `slot`.
    pub fn favourite_add(&mut self, slot: u16, value: u32) {
        let mut pairs: Vec<(u32, u32)> = self
            .payload(TAG_FAVOURITE, slot)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| (c[0], c[1]))
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
        let words: Vec<u32> = pairs.iter().flat_map(|p| [p.0, p.1]).collect();
        self.put(TAG_FAVOURITE, slot, &words);
    }

    pub fn favourite(&self, slot: u16) -> Option<u32> {
        self.payload(TAG_FAVOURITE, slot)
            .and_then(|p| p.first().copied())
    }

    // ---- feature bookkeeping for definition reloads ------------------------------------------

    /// Renumbers (or drops, where `map` gives `None`) all feature records after the
    /// definitions changed. Type, trait and favourite records are kept as they are.
    pub fn remap_features(&mut self, map: &dyn Fn(u16) -> Option<u16>) {
        let mut out = Vec::with_capacity(self.arena.len());
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            let tag = tag_of(h);
            let body = &self.arena[i + 1..i + 1 + len];
            if matches!(tag, TAG_WINDOW | TAG_RECENCY | TAG_ABSENCE) {
                if let Some(k) = map(key_of(h)) {
                    out.push(header(tag, k, len));
                    out.extend_from_slice(body);
                }
            } else {
                out.push(h);
                out.extend_from_slice(body);
            }
            i += 1 + len;
        }
        self.arena = out;
    }
}

fn decode_trait(tag: u32, p: &[u32]) -> TraitRef<'_> {
    match tag {
        TAG_TRAIT_BOOL => TraitRef::Bool(p[0] != 0),
        TAG_TRAIT_NUM => TraitRef::Num(f64::from_bits(u64::from(p[0]) | (u64::from(p[1]) << 32))),
        _ => {
            let len = p[0] as usize;
            let bytes: &[u8] = bytemuck_words(&p[1..]);
            // Stored from a &str, possibly cut inside a char when over-long: keep the valid part.
            match std::str::from_utf8(&bytes[..len]) {
                Ok(s) => TraitRef::Str(s),
                Err(e) => TraitRef::Str(
                    std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
                ),
            }
        }
    }
}

/// The bytes of a word slice, in memory order (strings are stored with `from_ne_bytes`).
fn bytemuck_words(words: &[u32]) -> &[u8] {
    bytemuck::cast_slice(words)
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
    }

    #[test]
    fn traits_round_trip_all_kinds() {
        let mut p = Profile::new();
        assert!(p.set_trait(1, Some(TraitRef::Str("marketing"))));
        assert!(p.set_trait(2, Some(TraitRef::Num(5000.5))));
        assert!(p.set_trait(3, Some(TraitRef::Bool(true))));
        assert!(p.set_trait(4, Some(TraitRef::Str("Europe/Zürich"))));
        assert!(!p.set_trait(1, Some(TraitRef::Str("marketing"))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("marketing")));
        assert_eq!(p.trait_value(2), Some(TraitRef::Num(5000.5)));
        assert_eq!(p.trait_value(3), Some(TraitRef::Bool(true)));
        assert_eq!(p.trait_value(4), Some(TraitRef::Str("Europe/Zürich")));
        assert!(p.set_trait(1, Some(TraitRef::Num(1.0))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Num(1.0)));
        assert!(p.set_trait(2, None));
        assert_eq!(p.trait_value(2), None);
        assert_eq!(p.trait_count(), 3);
        assert!(p.set_trait(1, Some(TraitRef::Str(""))));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("")));
    }

    #[test]
    fn windows_add_sum_and_prune() {
        let mut p = Profile::new();
        p.window_add(0, 10, 1.0, 0);
        p.window_add(0, 12, 2.0, 0);
        p.window_add(0, 11, 4.0, 0);
        p.window_add(0, 12, 1.0, 0);
        assert_eq!(p.window_sum(0, 0), 8.0);
        assert_eq!(p.window_sum(0, 11), 7.0);
        assert_eq!(p.window_oldest(0, 0), Some(10));
        // Pruning happens on the next write.
        p.window_add(0, 13, 1.0, 12);
        assert_eq!(
            p.window_buckets(0).collect::<Vec<_>>(),
            vec![(12, 3.0), (13, 1.0)]
        );
        // A write older than the retention is dropped, and pruning can empty the record.
        p.window_add(0, 5, 1.0, 20);
        assert_eq!(p.window_buckets(0).count(), 0);
        p.touch_type(1, 1);
        assert_eq!(p.type_stats(1).map(|s| s.count), Some(1));
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
        p.window_add(4, 1, 1.0, 0);
        p.touch_type(9, 5);
        assert_eq!(p.absence(2).collect::<Vec<_>>(), vec![a]);
        p.remap_features(&|k| match k {
            2 => Some(0),
            4 => Some(1),
            _ => None,
        });
        assert_eq!(p.absence(0).collect::<Vec<_>>(), vec![a]);
        assert_eq!(p.window_sum(1, 0), 1.0);
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
    fn members_bitset() {
        let mut m = Members::default();
        m.set(3, true);
        m.set(70, true);
        m.set(200, true);
        assert!(m.contains(3) && m.contains(70) && m.contains(200) && !m.contains(4));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![3, 70, 200]);
        m.set(70, false);
        m.set(200, false);
        m.set(3, false);
        assert!(m.is_empty());
    }
}
