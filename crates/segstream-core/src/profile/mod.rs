//! The per-customer profile: compact by construction.
//!
//! Everything variable-sized lives in one arena of `u32` words of tagged records, a boxed
//! slice of exact size (one allocation per profile, no slack), so that a customer with a
//! typical week of activity costs about 220 bytes rather than kilobytes of maps and JSON
//! values.
//!
//! A record starts with a header word. *Compact* records keep their data in the header:
//! `tag:4 | key:12 | data:16`; *generic* records have `tag:4 | key:16 | len:12` followed by
//! `len` payload words.
//!
//! | tag | form | key | data / payload |
//! |---|---|---|---|
//! | `TYPE` | compact + 2 words | event type | count (16 bits); first seen, last seen |
//! | `TYPE_BIG` | generic | event type | count, first seen, last seen (count ≥ 65 535) |
//! | `TRAIT_SYM` | compact + 1 word | trait | interned value symbol; time set |
//! | `TRAIT_BOOL` | compact + 1 word | trait | 0 or 1; time set |
//! | `TRAIT_NONE` | compact + 1 word | trait | removed (a marker); time removed |
//! | `TRAIT_STR` | generic | trait | time set, byte length, UTF-8 bytes padded to words |
//! | `TRAIT_F32` / `TRAIT_F64` | generic | trait | time set, the number (one or two words) |
//! | `COUNTS` | generic | feature | base bucket, then `delta:16 | count:16` per bucket |
//! | `SUMS` | generic | feature | base bucket, then (`delta`, f32) per bucket |
//! | `RECENCY` | generic | feature | first, last |
//! | `ABSENCE` | generic | feature | per instance: key hash, last cancel, `n`, then `n` × (trigger time, deadline) |
//! | `FAVOURITE` | generic | slot | `symbol:16 | count:16` per candidate, most frequent first |
//! | `REVENUE` | generic | 0 | f64 |
//! | `MEMBERS` | generic | 0 | membership bits of segments 64 and up |
//!
//! Times inside the arena are whole seconds since the epoch (`u32`, until 2106); 0 means
//! "none" (for a trait's time: "unknown, older than any event"). The profile knows nothing
//! of segments: the engine gives features their meaning.
//!
//! Every record is kept so that two profiles of one person can be merged exactly as if all
//! their events had been applied to one of them ([`merge()`]): traits carry the event time
//! they were set (the latest wins; a removal leaves a marker with its time), and absence
//! instances keep their pending triggers as a set (see [`AbsenceInstance`]).
//!
//! The record encoding (tags, headers, generic record access) and the passes over a whole
//! arena (portable form, checks, remapping, the format-1 upgrade) are in `arena`; the typed
//! records are here; merging two profiles is in `merge`.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

mod arena;
mod merge;

pub use arena::{remap_arena, upgrade_arena_v1, ArenaError, RefKind, MAX_COMPACT_KEY};
pub use merge::{merge, FeatureMerge};

use arena::{
    compact, data_of, decode_trait, generic, is_trait, key_of, len_of, tag_of, trait_record,
    MAX_LEN, TAG_ABSENCE, TAG_COUNTS, TAG_FAVOURITE, TAG_MEMBERS, TAG_RECENCY, TAG_REVENUE,
    TAG_SUMS, TAG_TYPE, TAG_TYPE_BIG,
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
/// How many pending triggers an absence instance keeps (the earliest): K.
pub const ABSENCE_PENDING: usize = 8;
/// How many candidates the favourite tracker keeps (space-saving top-k).
const FAVOURITE_SLOTS: usize = 4;
/// The most trait entries (values and removal markers) a profile keeps; an `identify`
/// beyond it adds no new key (see [`Profile::set_trait`]).
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

/// A pending trigger of an absence instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsenceTrigger {
    /// When the trigger happened.
    pub at: Secs,
    /// When it fires unless cancelled.
    pub deadline: Secs,
}

/// One tracked instance of an absence pattern ("trigger, then no cancel"), per
/// correlation key.
///
/// Its state is a function of the times of its triggers `T` (each with its deadline) and
/// of its cancels `C`: `last_cancel = max C`, and the pending triggers are those of `T`
/// after `last_cancel`, the earliest [`ABSENCE_PENDING`] of them, ascending. The pattern
/// has fired when the earliest pending trigger's deadline has passed. So triggers and
/// cancels may arrive in any order, and two instances merge exactly (see
/// [`AbsenceInstance::merge`]) as long as no more than [`ABSENCE_PENDING`] triggers are
/// pending at once (beyond it the latest are dropped, and a cancel between the kept and
/// the dropped ones then leaves the instance unarmed where it would have stayed armed).
/// Two triggers at the same second: the first one kept wins (its deadline stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AbsenceInstance {
    /// Hash of the correlation value (0 when the pattern is not correlated).
    pub key: u32,
    /// Time of the latest cancel seen (0 = none).
    pub last_cancel: Secs,
    /// How many of `triggers` are in use (the rest stay zero).
    n: u8,
    triggers: [AbsenceTrigger; ABSENCE_PENDING],
}

impl AbsenceInstance {
    pub fn new(key: u32) -> Self {
        AbsenceInstance {
            key,
            ..AbsenceInstance::default()
        }
    }

    /// The pending triggers, earliest first.
    pub fn pending(&self) -> &[AbsenceTrigger] {
        &self.triggers[..usize::from(self.n)]
    }

    /// The earliest pending trigger: the one whose deadline decides whether the pattern
    /// has fired.
    pub fn first(&self) -> Option<AbsenceTrigger> {
        self.pending().first().copied()
    }

    pub fn is_armed(&self) -> bool {
        self.n != 0
    }

    /// Whether the pattern has fired by `now`: the earliest pending trigger's deadline
    /// has passed.
    pub fn fired(&self, now: Secs) -> bool {
        self.first().is_some_and(|t| t.deadline <= now)
    }

    /// The latest of the earliest pending trigger and the last cancel (which instances
    /// are kept beyond [`MAX_ABSENCE_INSTANCES`]).
    pub fn recent(&self) -> Secs {
        self.first().map_or(0, |t| t.at).max(self.last_cancel)
    }

    /// A cancel at `at`: triggers at or before the latest cancel are no longer pending.
    pub fn cancel(&mut self, at: Secs) {
        self.last_cancel = self.last_cancel.max(at);
        let gone = self
            .pending()
            .iter()
            .take_while(|t| t.at <= self.last_cancel)
            .count();
        if gone > 0 {
            let n = usize::from(self.n);
            self.triggers.copy_within(gone..n, 0);
            self.triggers[n - gone..n].fill(AbsenceTrigger::default());
            self.n -= gone as u8;
        }
    }

    /// A trigger at `at`, firing at `deadline`: ignored at or before the last cancel; a
    /// trigger of the same second as a pending one keeps the earlier of the two deadlines
    /// (whichever came first: the state must not depend on the order of equal-time
    /// events); beyond [`ABSENCE_PENDING`] pending triggers the latest is dropped.
    pub fn trigger(&mut self, at: Secs, deadline: Secs) {
        if at <= self.last_cancel {
            return;
        }
        let i = match self.pending().binary_search_by_key(&at, |t| t.at) {
            Ok(j) => {
                let t = &mut self.triggers[j];
                t.deadline = t.deadline.min(deadline);
                return;
            }
            Err(i) => i,
        };
        if i == ABSENCE_PENDING {
            return;
        }
        let n = usize::from(self.n);
        let end = n.min(ABSENCE_PENDING - 1);
        self.triggers.copy_within(i..end, i + 1);
        self.triggers[i] = AbsenceTrigger { at, deadline };
        self.n = (end + 1) as u8;
    }

    /// Merges another instance of the same key: the last cancel is the later one, and the
    /// pending triggers are the union of both after it (the earliest
    /// [`ABSENCE_PENDING`]). At equal trigger times the earlier deadline is kept.
    pub fn merge(&mut self, other: &AbsenceInstance) {
        self.cancel(other.last_cancel);
        for t in other.pending() {
            self.trigger(t.at, t.deadline);
        }
    }
}

/// An owned copy of a profile's segment memberships (by segment index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(Vec<u64>);

impl Members {
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// The words of a profile's arena, in a boxed slice: no capacity field (16 bytes in the
/// profile rather than a `Vec`'s 24), and never any slack. The `Vec` operations the records
/// need turn the box into a `Vec` and back, which costs no copy: growing is a reallocation
/// as with a `Vec` of exact capacity, and the box is exact again afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct Arena(Box<[u32]>);

impl Arena {
    /// Runs `f` on the words as a `Vec`; the result is kept at exact size.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<u32>) -> R) -> R {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let r = f(&mut v);
        self.0 = v.into_boxed_slice();
        r
    }

    /// Words allocated: always the words in use.
    fn capacity(&self) -> usize {
        self.0.len()
    }

    /// Nothing to do: the next operation that grows the arena grows it exactly.
    fn reserve_exact(&mut self, _additional: usize) {}

    /// Nothing to do: the arena never has slack.
    fn shrink_to_fit(&mut self) {}

    fn push(&mut self, word: u32) {
        self.extend_from_slice(&[word]);
    }

    fn extend_from_slice(&mut self, words: &[u32]) {
        self.edit(|v| {
            v.reserve_exact(words.len());
            v.extend_from_slice(words);
        });
    }

    fn insert(&mut self, at: usize, word: u32) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.insert(at, word);
        });
    }

    fn splice(&mut self, range: std::ops::Range<usize>, words: impl IntoIterator<Item = u32>) {
        self.edit(|v| {
            v.splice(range, words);
        });
    }

    fn drain(&mut self, range: std::ops::Range<usize>) {
        self.edit(|v| {
            v.drain(range);
        });
    }
}

impl std::ops::Deref for Arena {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.0
    }
}

impl std::ops::DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [u32] {
        &mut self.0
    }
}

impl From<Vec<u32>> for Arena {
    fn from(words: Vec<u32>) -> Self {
        Arena(words.into_boxed_slice())
    }
}

/// A customer's state. See the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    arena: Arena,
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
        // One pass for both forms (a type the customer never had is the common answer).
        let (i, _, tag) = self.find_either(TAG_TYPE, TAG_TYPE_BIG, ty)?;
        Some(if tag == TAG_TYPE {
            TypeStats {
                count: u32::from(data_of(self.arena[i])),
                first: self.arena[i + 1],
                last: self.arena[i + 2],
            }
        } else {
            let p = &self.arena[i + 1..i + 4];
            TypeStats {
                count: p[0],
                first: p[1],
                last: p[2],
            }
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

    /// The trait record of `key` (a value or a removal marker): tag, index, payload length.
    fn find_trait(&self, key: u16) -> Option<(u32, usize, usize)> {
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            if is_trait(tag_of(h)) && key_of(h) == key {
                return Some((tag_of(h), i, len));
            }
            i += 1 + len;
        }
        None
    }

    /// A trait's current value (`None` when never set or removed).
    pub fn trait_value(&self, key: u16) -> Option<TraitRef<'_>> {
        self.trait_entry(key).and_then(|(v, _)| v)
    }

    /// A trait's stored entry: its value (`None`: removed) and the event time it was set
    /// (0: unknown, older than any event; records of changelog format 1).
    pub fn trait_entry(&self, key: u16) -> Option<(Option<TraitRef<'_>>, Secs)> {
        self.find_trait(key)
            .map(|(t, i, len)| decode_trait(t, self.arena[i], &self.arena[i + 1..i + 1 + len]))
    }

    /// Every stored trait entry, removal markers included: key, value, time set.
    pub fn trait_entries(&self) -> impl Iterator<Item = (u16, Option<TraitRef<'_>>, Secs)> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.arena.len() {
                let h = self.arena[i];
                let len = len_of(h);
                let at = i;
                i += 1 + len;
                let t = tag_of(h);
                if is_trait(t) {
                    let (v, when) = decode_trait(t, h, &self.arena[at + 1..at + 1 + len]);
                    return Some((key_of(h), v, when));
                }
            }
            None
        })
    }

    /// The traits that have a value (removed ones are skipped).
    pub fn traits(&self) -> impl Iterator<Item = (u16, TraitRef<'_>)> + '_ {
        self.trait_entries()
            .filter_map(|(k, v, _)| v.map(|v| (k, v)))
    }

    /// How many traits have a value.
    pub fn trait_count(&self) -> usize {
        self.traits().count()
    }

    /// Sets a trait (`key` is a 12-bit symbol) from an event at `at`; `None` removes it,
    /// leaving a removal marker with its time (so that a merge knows the removal is newer
    /// than another profile's value). The latest wins by event time: an entry set after
    /// `at` is left as it is; at equal times the later call wins.
    ///
    /// Values and removal markers together are at most [`MAX_TRAITS`]: at the limit a new
    /// key's value replaces the oldest removal marker, or is dropped when there is none
    /// (so values alone are limited exactly as before markers existed), and a new key's
    /// removal is not recorded.
    ///
    /// Returns whether the value (as [`Profile::trait_value`] sees it) changed.
    pub fn set_trait(&mut self, key: u16, value: Option<TraitRef<'_>>, at: Secs) -> bool {
        let existing = self.find_trait(key);
        let changed = match existing {
            Some((t, i, len)) => {
                let (old, when) = decode_trait(t, self.arena[i], &self.arena[i + 1..i + 1 + len]);
                if when > at {
                    return false;
                }
                if old == value {
                    // The same value, set again: only its time moves on.
                    self.arena[i + 1] = at;
                    return false;
                }
                true
            }
            None => value.is_some(),
        };
        // Removed without shrinking: the new record reuses the room (one reallocation at most).
        match existing {
            Some((_, i, len)) => {
                self.arena.drain(i..i + 1 + len);
            }
            None if self.trait_entries().count() >= MAX_TRAITS => {
                if value.is_none() {
                    return false;
                }
                let oldest_marker = self
                    .trait_entries()
                    .filter(|(_, v, _)| v.is_none())
                    .min_by_key(|(_, _, when)| *when)
                    .map(|(k, _, _)| k);
                let Some((_, i, len)) = oldest_marker.and_then(|k| self.find_trait(k)) else {
                    return false;
                };
                self.arena.drain(i..i + 1 + len);
            }
            None => {}
        }
        // Appended at the end, as before: the arena keeps the order traits were last set.
        let record = trait_record(key, value, at);
        self.arena.reserve_exact(record.len());
        self.arena.extend_from_slice(&record);
        self.arena.shrink_to_fit();
        changed
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
        self.put_window(is_sum, feature, &entries);
    }

    /// Writes a windowed feature's (bucket, value) pairs, ascending by bucket (counts
    /// clamped to 16 bits). Buckets more than 16 bits apart from the newest cannot be
    /// stored; they are older than any window of the feature, so the oldest are dropped
    /// until the rest fit.
    fn put_window(&mut self, is_sum: bool, feature: u16, entries: &[(u32, f32)]) {
        let tag = if is_sum { TAG_SUMS } else { TAG_COUNTS };
        let stride = if is_sum { 2 } else { 1 };
        let mut entries = entries;
        while entries.len() > 1 && entries[entries.len() - 1].0 - entries[0].0 > 0xffff {
            entries = &entries[1..];
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
        self.window_sum_oldest(feature, is_sum, from).0
    }

    /// The sum of the buckets at or after `from`, and the oldest of them, in one scan.
    pub fn window_sum_oldest(&self, feature: u16, is_sum: bool, from: u32) -> (f64, Option<u32>) {
        let tag = if is_sum { TAG_SUMS } else { TAG_COUNTS };
        let Some(p) = self.payload(tag, feature) else {
            return (0.0, None);
        };
        let Some((&base, body)) = p.split_first() else {
            return (0.0, None);
        };
        let mut total = 0.0;
        let mut oldest = None;
        if is_sum {
            for c in body.chunks_exact(2) {
                let b = base + (c[0] >> 16);
                if b >= from {
                    total += f64::from(f32::from_bits(c[1]));
                    oldest.get_or_insert(b);
                }
            }
        } else {
            // Counts are whole numbers below 2^16 per bucket: summed exactly as integers.
            let mut count = 0u64;
            for &w in body {
                let b = base + (w >> 16);
                if b >= from {
                    count += u64::from(w & 0xffff);
                    oldest.get_or_insert(b);
                }
            }
            total = count as f64;
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

    /// The instances of an absence feature, in the order they were first seen.
    pub fn absence(&self, feature: u16) -> impl Iterator<Item = AbsenceInstance> + '_ {
        let mut p = self.payload(TAG_ABSENCE, feature).unwrap_or(&[]);
        std::iter::from_fn(move || {
            // Well-formed by construction or by `check_arena`; a short rest ends the list.
            let [key, last_cancel, n, rest @ ..] = p else {
                return None;
            };
            let n = (*n as usize).min(ABSENCE_PENDING).min(rest.len() / 2);
            let mut a = AbsenceInstance::new(*key);
            a.last_cancel = *last_cancel;
            for (slot, t) in a.triggers.iter_mut().zip(rest.chunks_exact(2).take(n)) {
                *slot = AbsenceTrigger {
                    at: t[0],
                    deadline: t[1],
                };
            }
            a.n = n as u8;
            p = &rest[2 * n..];
            Some(a)
        })
    }

    pub fn set_absence(&mut self, feature: u16, instances: &[AbsenceInstance]) {
        if instances.is_empty() {
            self.remove(TAG_ABSENCE, feature);
            return;
        }
        let mut words =
            Vec::with_capacity(instances.iter().map(|a| 3 + 2 * a.pending().len()).sum());
        for a in instances {
            words.extend_from_slice(&[a.key, a.last_cancel, u32::from(a.n)]);
            for t in a.pending() {
                words.extend_from_slice(&[t.at, t.deadline]);
            }
        }
        self.put(TAG_ABSENCE, feature, &words);
    }

    // ---- favourites ------------------------------------------------------------------------

    /// Counts one occurrence of `value` (a 16-bit symbol) in favourite slot `slot`.
    pub fn favourite_add(&mut self, slot: u16, value: u16) {
        let mut pairs = self.favourites(slot);
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
        self.put_favourites(slot, &pairs);
    }

    /// The candidates of favourite slot `slot` and their counts, most frequent first.
    pub fn favourites(&self, slot: u16) -> Vec<(u16, u16)> {
        self.payload(TAG_FAVOURITE, slot)
            .unwrap_or(&[])
            .iter()
            .map(|w| ((w >> 16) as u16, *w as u16))
            .collect()
    }

    fn put_favourites(&mut self, slot: u16, pairs: &[(u16, u16)]) {
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
        assert!(p.set_trait(1, Some(TraitRef::Str("marketing")), 10));
        assert!(p.set_trait(2, Some(TraitRef::Num(5000.5)), 10));
        assert!(p.set_trait(3, Some(TraitRef::Bool(true)), 10));
        assert!(p.set_trait(4, Some(TraitRef::Str("Europe/Zürich")), 10));
        assert!(p.set_trait(5, Some(TraitRef::Sym(77)), 10));
        assert!(p.set_trait(6, Some(TraitRef::Num(0.1)), 10));
        assert!(!p.set_trait(1, Some(TraitRef::Str("marketing")), 11));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("marketing")));
        assert_eq!(
            p.trait_entry(1),
            Some((Some(TraitRef::Str("marketing")), 11))
        );
        assert_eq!(p.trait_value(2), Some(TraitRef::Num(5000.5)));
        assert_eq!(p.trait_value(3), Some(TraitRef::Bool(true)));
        assert_eq!(p.trait_value(4), Some(TraitRef::Str("Europe/Zürich")));
        assert_eq!(p.trait_value(5), Some(TraitRef::Sym(77)));
        assert_eq!(p.trait_value(6), Some(TraitRef::Num(0.1)));
        assert!(p.set_trait(1, Some(TraitRef::Num(1.0)), 12));
        assert_eq!(p.trait_value(1), Some(TraitRef::Num(1.0)));
        assert!(p.set_trait(2, None, 12));
        assert_eq!(p.trait_value(2), None);
        assert!(p.set_trait(5, Some(TraitRef::Bool(false)), 12));
        assert_eq!(p.trait_value(5), Some(TraitRef::Bool(false)));
        assert_eq!(p.trait_count(), 5);
        assert!(p.set_trait(1, Some(TraitRef::Str("")), 13));
        assert_eq!(p.trait_value(1), Some(TraitRef::Str("")));
        assert_eq!(p.heap_bytes(), p.arena.len() * 4, "no slack");
        // One word per trait for its time: a symbol costs two words, a removal two.
        let mut q = Profile::new();
        q.set_trait(1, Some(TraitRef::Sym(3)), 5);
        q.set_trait(2, None, 5);
        assert_eq!(q.heap_bytes(), 16);
    }

    #[test]
    fn traits_keep_the_latest_by_event_time() {
        let mut p = Profile::new();
        assert!(p.set_trait(1, Some(TraitRef::Sym(1)), 200));
        // An older value arriving late does not overwrite.
        assert!(!p.set_trait(1, Some(TraitRef::Sym(2)), 100));
        assert_eq!(p.trait_entry(1), Some((Some(TraitRef::Sym(1)), 200)));
        // Equal time: the later call wins.
        assert!(p.set_trait(1, Some(TraitRef::Sym(3)), 200));
        assert_eq!(p.trait_value(1), Some(TraitRef::Sym(3)));
        // A removal leaves a marker with its time, which older values do not pass.
        assert!(p.set_trait(1, None, 300));
        assert_eq!(p.trait_value(1), None);
        assert_eq!(p.trait_entry(1), Some((None, 300)));
        assert!(!p.set_trait(1, Some(TraitRef::Num(4.0)), 250));
        assert_eq!(p.trait_value(1), None);
        assert_eq!(p.traits().count(), 0);
        assert_eq!(p.trait_count(), 0);
        assert_eq!(p.trait_entries().count(), 1);
        // A later removal moves the marker's time on (the value stays absent).
        assert!(!p.set_trait(1, None, 310));
        assert_eq!(p.trait_entry(1), Some((None, 310)));
        assert!(p.set_trait(1, Some(TraitRef::Num(4.0)), 320));
        assert_eq!(p.trait_value(1), Some(TraitRef::Num(4.0)));
        // Removing a trait never set still records when.
        assert!(!p.set_trait(2, None, 50));
        assert_eq!(p.trait_entry(2), Some((None, 50)));
        assert_eq!(p.heap_bytes(), p.arena.len() * 4, "no slack");
    }

    #[test]
    fn trait_entries_are_bounded_with_removal_markers() {
        let mut p = Profile::new();
        for k in 0..MAX_TRAITS as u16 {
            assert!(p.set_trait(k, Some(TraitRef::Bool(true)), 10));
        }
        // At the limit: a new key is refused, as is a new key's removal...
        assert!(!p.set_trait(100, Some(TraitRef::Bool(true)), 20));
        assert!(!p.set_trait(101, None, 20));
        assert_eq!(p.trait_entries().count(), MAX_TRAITS);
        // ...but existing keys change, and a value takes the oldest marker's place.
        assert!(p.set_trait(3, None, 30));
        assert!(p.set_trait(4, None, 25));
        assert!(p.set_trait(100, Some(TraitRef::Sym(1)), 40));
        assert_eq!(p.trait_entry(4), None);
        assert_eq!(p.trait_entry(3), Some((None, 30)));
        assert!(p.set_trait(101, Some(TraitRef::Sym(1)), 40));
        assert_eq!(p.trait_entry(3), None);
        assert!(!p.set_trait(102, Some(TraitRef::Sym(1)), 40));
        assert_eq!(p.trait_count(), MAX_TRAITS);
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
        let mut a = AbsenceInstance::new(7);
        a.trigger(100, 200);
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

    fn triggers(a: &AbsenceInstance) -> Vec<(Secs, Secs)> {
        a.pending().iter().map(|t| (t.at, t.deadline)).collect()
    }

    #[test]
    fn absence_pending_triggers_are_a_set() {
        // In order, as before: the first trigger since the last cancel decides.
        let mut a = AbsenceInstance::new(1);
        a.trigger(100, 200);
        a.trigger(150, 160);
        assert_eq!(
            a.first(),
            Some(AbsenceTrigger {
                at: 100,
                deadline: 200
            })
        );
        assert!(!a.fired(199) && a.fired(200));
        a.cancel(170);
        assert!(!a.is_armed() && a.last_cancel == 170);
        a.trigger(170, 300);
        assert!(!a.is_armed(), "a trigger at the cancel's time is cancelled");
        a.trigger(180, 300);
        assert_eq!(triggers(&a), vec![(180, 300)]);
        // Out of order: an earlier trigger comes first, a late cancel removes only what
        // came before it, and a trigger before the last cancel is ignored.
        let mut b = AbsenceInstance::new(1);
        b.trigger(300, 900);
        b.trigger(100, 400);
        b.trigger(200, 250);
        assert_eq!(triggers(&b), vec![(100, 400), (200, 250), (300, 900)]);
        b.cancel(150);
        assert_eq!(triggers(&b), vec![(200, 250), (300, 900)]);
        assert!(b.fired(250));
        b.cancel(120);
        assert_eq!(b.last_cancel, 150);
        b.trigger(140, 145);
        assert_eq!(b.first().map(|t| t.at), Some(200));
        // The same second twice: the first kept wins.
        b.trigger(200, 999);
        assert_eq!(triggers(&b), vec![(200, 250), (300, 900)]);
        // The same result in any order of the same triggers and cancels.
        let events: [(bool, Secs, Secs); 6] = [
            (false, 300, 900),
            (false, 100, 400),
            (false, 200, 250),
            (true, 150, 0),
            (true, 120, 0),
            (false, 140, 145),
        ];
        for rot in 0..events.len() {
            let mut c = AbsenceInstance::new(1);
            for (cancel, at, d) in events.iter().cycle().skip(rot).take(events.len()) {
                if *cancel {
                    c.cancel(*at);
                } else {
                    c.trigger(*at, *d);
                }
            }
            assert_eq!(triggers(&c), vec![(200, 250), (300, 900)], "rotation {rot}");
            assert_eq!(c.last_cancel, 150);
        }
    }

    #[test]
    fn absence_keeps_the_earliest_k_triggers() {
        let mut a = AbsenceInstance::new(0);
        for t in (1..=20).rev() {
            a.trigger(t * 10, t * 10 + 5);
        }
        assert_eq!(a.pending().len(), ABSENCE_PENDING);
        let at: Vec<Secs> = a.pending().iter().map(|t| t.at).collect();
        assert_eq!(at, (1..=8).map(|t| t * 10).collect::<Vec<_>>());
        a.trigger(500, 505);
        assert_eq!(a.pending().last().map(|t| t.at), Some(80));
        a.cancel(35);
        assert_eq!(a.first().map(|t| t.at), Some(40));
        assert_eq!(a.pending().len(), 5);
        // Unused slots stay zero, so equal states compare equal.
        let mut b = AbsenceInstance::new(0);
        b.cancel(35);
        for t in 4..=8 {
            b.trigger(t * 10, t * 10 + 5);
        }
        assert_eq!(a, b);
        // The record: key, last cancel, n, then n pairs; variable length per instance.
        let mut p = Profile::new();
        let c = AbsenceInstance::new(9);
        p.set_absence(0, &[a, c]);
        assert_eq!(
            p.payload(TAG_ABSENCE, 0).map(<[u32]>::len),
            Some(3 + 10 + 3)
        );
        assert_eq!(p.absence(0).collect::<Vec<_>>(), vec![a, c]);
        Profile::check_arena(&p.arena).unwrap();
    }

    #[test]
    fn format_1_arenas_are_upgraded() {
        // Format 1: traits without time, 4-word absence instances.
        let bytes = b"Z\xc3\xbcrich";
        let str_words = [
            arena::generic(arena::TAG_TRAIT_STR, 4, 3),
            bytes.len() as u32,
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], 0]),
        ];
        let mut v1 = vec![
            compact(TAG_TYPE, 3, 2),
            10,
            20,
            compact(arena::TAG_TRAIT_SYM, 1, 77),
            compact(arena::TAG_TRAIT_BOOL, 2, 1),
            generic(arena::TAG_TRAIT_F32, 5, 1),
            2.5f32.to_bits(),
        ];
        v1.extend_from_slice(&str_words);
        v1.extend_from_slice(&[
            generic(TAG_ABSENCE, 6, 12),
            // armed
            11,
            100,
            200,
            50,
            // not armed, a cancel
            12,
            0,
            0,
            70,
            // nothing
            13,
            0,
            0,
            0,
            generic(TAG_RECENCY, 7, 2),
            5,
            6,
        ]);
        let up = upgrade_arena_v1(&v1).unwrap();
        Profile::check_arena(&up).unwrap();
        let p = Profile::from_checked_arena(up);
        assert_eq!(
            p.type_stats(3),
            Some(TypeStats {
                count: 2,
                first: 10,
                last: 20
            })
        );
        assert_eq!(p.trait_entry(1), Some((Some(TraitRef::Sym(77)), 0)));
        assert_eq!(p.trait_entry(2), Some((Some(TraitRef::Bool(true)), 0)));
        assert_eq!(p.trait_entry(5), Some((Some(TraitRef::Num(2.5)), 0)));
        assert_eq!(p.trait_entry(4), Some((Some(TraitRef::Str("Zürich")), 0)));
        let inst: Vec<AbsenceInstance> = p.absence(6).collect();
        assert_eq!(inst.len(), 3);
        assert_eq!((inst[0].key, inst[0].last_cancel), (11, 50));
        assert_eq!(triggers(&inst[0]), vec![(100, 200)]);
        assert_eq!(
            (inst[1].key, inst[1].last_cancel, inst[1].is_armed()),
            (12, 70, false)
        );
        assert_eq!((inst[2].key, inst[2].is_armed()), (13, false));
        assert_eq!(p.recency(7), Some((5, 6)));
        // Any event's time is later than "unknown".
        let mut p = p;
        assert!(p.set_trait(1, Some(TraitRef::Sym(78)), 1));
        // Malformed format-1 arenas are refused.
        assert_eq!(
            upgrade_arena_v1(&v1[..v1.len() - 1]),
            Err(ArenaError::Truncated(v1.len() - 3))
        );
        assert!(matches!(
            upgrade_arena_v1(&[15 << 28]),
            Err(ArenaError::UnknownTag { tag: 15, at: 0 })
        ));
        let mut bad = str_words.to_vec();
        bad[1] = 99;
        assert_eq!(upgrade_arena_v1(&bad), Err(ArenaError::BadString(0)));
    }

    #[test]
    fn malformed_format_2_arenas_are_refused() {
        let mut p = Profile::new();
        let mut a = AbsenceInstance::new(1);
        a.trigger(10, 20);
        a.trigger(30, 40);
        p.set_absence(0, &[a]);
        p.set_trait(1, Some(TraitRef::Str("abc")), 5);
        Profile::check_arena(&p.arena).unwrap();
        let at = |p: &Profile| p.find(TAG_ABSENCE, 0).unwrap().0;
        // n larger than the record, unsorted triggers, a trigger at the cancel, n > K.
        for (word, value) in [(3, 3), (4, 31), (4, 0), (3, 9)] {
            let mut w = p.arena.to_vec();
            w[at(&p) + word] = value;
            assert_eq!(
                Profile::check_arena(&w),
                Err(ArenaError::BadAbsence(at(&p))),
                "word {word} = {value}"
            );
        }
        let mut w = p.arena.to_vec();
        w[at(&p) + 2] = 10;
        assert_eq!(
            Profile::check_arena(&w),
            Err(ArenaError::BadAbsence(at(&p)))
        );
        // A string longer than its record.
        let (i, _) = p.find_trait(1).map(|(_, i, l)| (i, l)).unwrap();
        let mut w = p.arena.to_vec();
        w[i + 2] = 9;
        assert_eq!(Profile::check_arena(&w), Err(ArenaError::BadString(i)));
        w.truncate(i + 2);
        assert_eq!(Profile::check_arena(&w), Err(ArenaError::Truncated(i)));
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
