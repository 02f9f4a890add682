//! The arena's record encoding: record tags and header words, the generic record access
//! every part of the profile builds on, and the passes over a whole arena (the portable
//! form for the changelog, its check, feature renumbering after a reload, the size report).
//! The layout itself is described in the [profile module](super).

use super::{Profile, Secs, TraitRef, ABSENCE_PENDING, MAX_ABSENCE_INSTANCES};

pub(super) const TAG_TYPE: u32 = 1;
pub(super) const TAG_TYPE_BIG: u32 = 2;
pub(super) const TAG_TRAIT_SYM: u32 = 3;
pub(super) const TAG_TRAIT_BOOL: u32 = 4;
pub(super) const TAG_TRAIT_STR: u32 = 5;
pub(super) const TAG_TRAIT_F32: u32 = 6;
pub(super) const TAG_TRAIT_F64: u32 = 7;
pub(super) const TAG_COUNTS: u32 = 8;
pub(super) const TAG_SUMS: u32 = 9;
pub(super) const TAG_RECENCY: u32 = 10;
pub(super) const TAG_ABSENCE: u32 = 11;
pub(super) const TAG_FAVOURITE: u32 = 12;
pub(super) const TAG_REVENUE: u32 = 13;
pub(super) const TAG_MEMBERS: u32 = 14;
/// A removed trait: its key and the time of the removal (format 2).
pub(super) const TAG_TRAIT_NONE: u32 = 15;

/// Trait records: the value forms and the removal marker.
pub(super) fn is_trait(tag: u32) -> bool {
    matches!(
        tag,
        TAG_TRAIT_SYM
            | TAG_TRAIT_BOOL
            | TAG_TRAIT_STR
            | TAG_TRAIT_F32
            | TAG_TRAIT_F64
            | TAG_TRAIT_NONE
    )
}

pub(super) const MAX_LEN: usize = 0xfff;
/// Keys of compact records (event types, trait names) are below this.
pub const MAX_COMPACT_KEY: u32 = 0xfff;

pub(super) fn is_compact(tag: u32) -> bool {
    matches!(
        tag,
        TAG_TYPE | TAG_TRAIT_SYM | TAG_TRAIT_BOOL | TAG_TRAIT_NONE
    )
}

pub(super) fn generic(tag: u32, key: u16, len: usize) -> u32 {
    debug_assert!(len <= MAX_LEN && !is_compact(tag));
    (tag << 28) | (u32::from(key) << 12) | len as u32
}

pub(super) fn compact(tag: u32, key: u16, data: u16) -> u32 {
    debug_assert!(u32::from(key) <= MAX_COMPACT_KEY && is_compact(tag));
    (tag << 28) | (u32::from(key) << 16) | u32::from(data)
}

pub(super) fn tag_of(h: u32) -> u32 {
    h >> 28
}

pub(super) fn key_of(h: u32) -> u16 {
    if is_compact(tag_of(h)) {
        ((h >> 16) & 0xfff) as u16
    } else {
        ((h >> 12) & 0xffff) as u16
    }
}

pub(super) fn data_of(h: u32) -> u16 {
    (h & 0xffff) as u16
}

/// Payload words after the header.
#[inline]
pub(super) fn len_of(h: u32) -> usize {
    // Per tag: the fixed payload of a compact record, or 0 for "in the header's low 12
    // bits" (a table instead of a match: this runs for every record a lookup passes).
    const FIXED: [u8; 16] = {
        let mut t = [0u8; 16];
        t[TAG_TYPE as usize] = 2;
        t[TAG_TRAIT_SYM as usize] = 1;
        t[TAG_TRAIT_BOOL as usize] = 1;
        t[TAG_TRAIT_NONE as usize] = 1;
        t
    };
    match FIXED[tag_of(h) as usize] {
        0 => (h & 0xfff) as usize,
        n => usize::from(n),
    }
}

/// The header bits that name a record (its tag and key), and their value for `tag` and
/// `key`: `h & mask == bits` is the record sought.
#[inline]
fn header_match(tag: u32, key: u16) -> (u32, u32) {
    if is_compact(tag) {
        if u32::from(key) > MAX_COMPACT_KEY {
            // No compact record has such a key: a pattern nothing matches.
            return (0, 1);
        }
        (0xffff_0000, (tag << 28) | (u32::from(key) << 16))
    } else {
        (0xffff_f000, (tag << 28) | (u32::from(key) << 12))
    }
}

/// Payload words after the header in the format-1 layout (traits had no time).
fn len_of_v1(h: u32) -> usize {
    match tag_of(h) {
        TAG_TYPE => 2,
        TAG_TRAIT_SYM | TAG_TRAIT_BOOL => 0,
        _ => (h & 0xfff) as usize,
    }
}

/// What a 16-bit reference inside the arena means (for portable encodings, where symbols
/// and feature indices of one engine mean nothing to another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    EventType,
    TraitKey,
    Value,
    Feature,
}

/// Why a serialized arena was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    #[error("record at word {0} runs past the end of the arena")]
    Truncated(usize),
    #[error("unknown record tag {tag} at word {at}")]
    UnknownTag { tag: u32, at: usize },
    #[error("string trait at word {0} is longer than its record or not UTF-8")]
    BadString(usize),
    #[error("absence record at word {0} is malformed")]
    BadAbsence(usize),
}

impl Profile {
    // ---- records ----------------------------------------------------------------------

    pub(super) fn find(&self, tag: u32, key: u16) -> Option<(usize, usize)> {
        self.find_either(tag, tag, key).map(|(i, len, _)| (i, len))
    }

    /// The first record that is `a`'s or `b`'s with `key`, in one pass: its place, length
    /// and tag (a record kept in one of two forms, such as small and big counters).
    pub(super) fn find_either(&self, a: u32, b: u32, key: u16) -> Option<(usize, usize, u32)> {
        let (mask_a, bits_a) = header_match(a, key);
        let (mask_b, bits_b) = header_match(b, key);
        let mut i = 0;
        while let Some(&h) = self.arena.get(i) {
            let len = len_of(h);
            if h & mask_a == bits_a {
                return Some((i, len, a));
            }
            if h & mask_b == bits_b {
                return Some((i, len, b));
            }
            i += 1 + len;
        }
        None
    }

    pub(super) fn payload(&self, tag: u32, key: u16) -> Option<&[u32]> {
        self.find(tag, key)
            .map(|(i, len)| &self.arena[i + 1..i + 1 + len])
    }

    /// Replaces (or appends) a generic record's payload, keeping capacity exact.
    pub(super) fn put(&mut self, tag: u32, key: u16, payload: &[u32]) {
        let len = payload.len().min(MAX_LEN);
        match self.find(tag, key) {
            Some((i, old)) => {
                if len > old {
                    self.arena.reserve_exact(len - old);
                }
                self.arena[i] = generic(tag, key, len);
                self.arena
                    .splice(i + 1..i + 1 + old, payload[..len].iter().copied());
                if len < old {
                    self.arena.shrink_to_fit();
                }
            }
            None => {
                self.arena.reserve_exact(1 + len);
                self.arena.push(generic(tag, key, len));
                self.arena.extend_from_slice(&payload[..len]);
            }
        }
    }

    pub(super) fn remove(&mut self, tag: u32, key: u16) -> bool {
        match self.find(tag, key) {
            Some((i, len)) => {
                self.arena.drain(i..i + 1 + len);
                self.arena.shrink_to_fit();
                true
            }
            None => false,
        }
    }

    /// Records of a tag, with their header and payload.
    pub(super) fn records(&self, tag: u32) -> impl Iterator<Item = (u32, &[u32])> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            while i < self.arena.len() {
                let h = self.arena[i];
                let len = len_of(h);
                let at = i;
                i += 1 + len;
                if tag_of(h) == tag {
                    return Some((h, &self.arena[at + 1..at + 1 + len]));
                }
            }
            None
        })
    }

    /// The same profile with its records in a canonical order (by tag, then key). Records
    /// are kept in the order they were first written, which depends on the order of
    /// events; two profiles holding the same state compare equal once normalised.
    pub fn normalized(&self) -> Profile {
        // Absence instances in key order too.
        let mut copy = self.clone();
        let features: Vec<u16> = self.records(TAG_ABSENCE).map(|(h, _)| key_of(h)).collect();
        for f in features {
            let mut instances: Vec<_> = copy.absence(f).collect();
            instances.sort_by_key(|a| a.key);
            copy.set_absence(f, &instances);
        }
        let mut spans: Vec<(u32, u16, usize, usize)> = Vec::new();
        let mut i = 0;
        while i < copy.arena.len() {
            let h = copy.arena[i];
            let len = len_of(h);
            spans.push((tag_of(h), key_of(h), i, i + 1 + len));
            i += 1 + len;
        }
        spans.sort_by_key(|&(tag, key, ..)| (tag, key));
        let mut arena = Vec::with_capacity(copy.arena.len());
        for (_, _, from, to) in spans {
            arena.extend_from_slice(&copy.arena[from..to]);
        }
        Profile {
            arena: arena.into(),
            ..copy
        }
    }

    // ---- portable form ----------------------------------------------------------------------

    /// The arena with every reference renumbered by `map` and memberships left out (they
    /// are encoded by segment, not by index). A record whose key maps to `None` is dropped,
    /// as is a trait value or favourite candidate whose value does.
    pub fn portable_arena(&self, map: &mut dyn FnMut(RefKind, u16) -> Option<u16>) -> Vec<u32> {
        let mut words = self.arena.to_vec();
        remap_arena(&mut words, map);
        words
    }

    /// A profile from an arena [`Profile::check_arena`] accepted and [`remap_arena`]
    /// renumbered (which keeps it well-formed).
    pub(crate) fn from_checked_arena(arena: Vec<u32>) -> Profile {
        Profile {
            arena: arena.into(),
            ..Profile::default()
        }
    }

    /// Checks that an arena is well-formed: known tags, records within bounds and long
    /// enough for their kind, string traits valid UTF-8, absence instances complete with at
    /// most [`ABSENCE_PENDING`] pending triggers each, ascending and after the last cancel.
    pub fn check_arena(arena: &[u32]) -> Result<(), ArenaError> {
        let mut i = 0;
        while i < arena.len() {
            let h = arena[i];
            let tag = tag_of(h);
            if tag < TAG_TYPE {
                return Err(ArenaError::UnknownTag { tag, at: i });
            }
            let len = len_of(h);
            if i + 1 + len > arena.len() {
                return Err(ArenaError::Truncated(i));
            }
            let body = &arena[i + 1..i + 1 + len];
            let min = match tag {
                TAG_TYPE_BIG | TAG_TRAIT_F64 => 3,
                TAG_COUNTS | TAG_SUMS => 1,
                TAG_TRAIT_F32 | TAG_TRAIT_STR | TAG_RECENCY | TAG_REVENUE => 2,
                _ => 0,
            };
            if len < min {
                return Err(ArenaError::Truncated(i));
            }
            if tag == TAG_TRAIT_STR && !string_ok(&body[1..]) {
                return Err(ArenaError::BadString(i));
            }
            if tag == TAG_ABSENCE && !absence_ok(body) {
                return Err(ArenaError::BadAbsence(i));
            }
            i += 1 + len;
        }
        Ok(())
    }

    // ---- feature bookkeeping for definition reloads ------------------------------------------

    /// Renumbers (or drops, where `map` gives `None`) all feature records after the
    /// definitions changed. Type, trait, value and favourite records are kept as they are.
    pub fn remap_features(&mut self, map: &dyn Fn(u16) -> Option<u16>) {
        let mut out = Vec::with_capacity(self.arena.len());
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            let tag = tag_of(h);
            let body = &self.arena[i + 1..i + 1 + len];
            if matches!(tag, TAG_COUNTS | TAG_SUMS | TAG_RECENCY | TAG_ABSENCE) {
                if let Some(k) = map(key_of(h)) {
                    out.push(generic(tag, k, len));
                    out.extend_from_slice(body);
                }
            } else {
                out.push(h);
                out.extend_from_slice(body);
            }
            i += 1 + len;
        }
        self.arena = out.into();
    }

    /// Bytes of the arena used by each record tag (for the size report).
    pub fn usage_by_kind(&self) -> Vec<(&'static str, usize)> {
        let names = [
            (TAG_TYPE, "type stats"),
            (TAG_TYPE_BIG, "type stats"),
            (TAG_TRAIT_SYM, "traits"),
            (TAG_TRAIT_BOOL, "traits"),
            (TAG_TRAIT_STR, "traits"),
            (TAG_TRAIT_F32, "traits"),
            (TAG_TRAIT_F64, "traits"),
            (TAG_TRAIT_NONE, "traits"),
            (TAG_COUNTS, "windows"),
            (TAG_SUMS, "windows"),
            (TAG_RECENCY, "recency"),
            (TAG_ABSENCE, "absence"),
            (TAG_FAVOURITE, "favourites"),
            (TAG_REVENUE, "value"),
            (TAG_MEMBERS, "memberships"),
        ];
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        let mut i = 0;
        while i < self.arena.len() {
            let h = self.arena[i];
            let len = len_of(h);
            let name = names
                .iter()
                .find(|(t, _)| *t == tag_of(h))
                .map_or("other", |(_, n)| n);
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, b)) => *b += 4 * (1 + len),
                None => out.push((name, 4 * (1 + len))),
            }
            i += 1 + len;
        }
        out
    }
}

/// Renumbers the references of an arena in place, like [`Profile::portable_arena`]. The
/// arena must be well-formed (see [`Profile::check_arena`]); a record running past the end
/// is cut.
pub fn remap_arena(words: &mut Vec<u32>, map: &mut dyn FnMut(RefKind, u16) -> Option<u16>) {
    let (mut r, mut w) = (0, 0);
    while r < words.len() {
        let h = words[r];
        let tag = tag_of(h);
        let end = (r + 1 + len_of(h)).min(words.len());
        let header = match tag {
            TAG_FAVOURITE => {
                let mut k = 0;
                for i in r + 1..end {
                    let x = words[i];
                    if let Some(v) = map(RefKind::Value, (x >> 16) as u16) {
                        words[w + 1 + k] = (u32::from(v) << 16) | (x & 0xffff);
                        k += 1;
                    }
                }
                if k > 0 {
                    words[w] = generic(tag, key_of(h), k);
                    w += 1 + k;
                }
                r = end;
                continue;
            }
            TAG_REVENUE => Some(h),
            TAG_MEMBERS => None,
            _ => {
                let kind = match tag {
                    TAG_TYPE | TAG_TYPE_BIG => RefKind::EventType,
                    TAG_COUNTS | TAG_SUMS | TAG_RECENCY | TAG_ABSENCE => RefKind::Feature,
                    _ => RefKind::TraitKey,
                };
                match map(kind, key_of(h)) {
                    None => None,
                    Some(key) if is_compact(tag) => {
                        if u32::from(key) > MAX_COMPACT_KEY {
                            None
                        } else if tag == TAG_TRAIT_SYM {
                            map(RefKind::Value, data_of(h)).map(|v| compact(tag, key, v))
                        } else {
                            Some(compact(tag, key, data_of(h)))
                        }
                    }
                    Some(key) => Some(generic(tag, key, len_of(h))),
                }
            }
        };
        if let Some(h2) = header {
            words[w] = h2;
            words.copy_within(r + 1..end, w + 1);
            w += end - r;
        }
        r = end;
    }
    words.truncate(w);
}

/// Converts an arena written in changelog format 1 to the current layout, checking it as
/// format 1 did: trait records get the time 0 ("unknown, older than anything"), and each
/// 4-word absence instance (key, pending since, deadline, last cancel) becomes the
/// variable-length form, with one pending trigger when it was armed. References are left
/// as they are (renumber with [`remap_arena`] afterwards).
pub fn upgrade_arena_v1(words: &[u32]) -> Result<Vec<u32>, ArenaError> {
    let mut out = Vec::with_capacity(words.len() + words.len() / 4);
    let mut i = 0;
    while i < words.len() {
        let h = words[i];
        let tag = tag_of(h);
        if !(TAG_TYPE..=TAG_MEMBERS).contains(&tag) {
            return Err(ArenaError::UnknownTag { tag, at: i });
        }
        let len = len_of_v1(h);
        if i + 1 + len > words.len() {
            return Err(ArenaError::Truncated(i));
        }
        let body = &words[i + 1..i + 1 + len];
        let min = match tag {
            TAG_TYPE_BIG => 3,
            TAG_TRAIT_F32 | TAG_TRAIT_STR | TAG_COUNTS | TAG_SUMS => 1,
            TAG_TRAIT_F64 | TAG_RECENCY | TAG_REVENUE => 2,
            _ => 0,
        };
        if len < min {
            return Err(ArenaError::Truncated(i));
        }
        let key = key_of(h);
        match tag {
            TAG_TRAIT_SYM | TAG_TRAIT_BOOL => out.extend_from_slice(&[h, 0]),
            TAG_TRAIT_STR | TAG_TRAIT_F32 | TAG_TRAIT_F64 => {
                if tag == TAG_TRAIT_STR && !string_ok(body) {
                    return Err(ArenaError::BadString(i));
                }
                // The value payload (after the time word) is what format 1 stored.
                let value = decode_value(tag, h, body);
                out.extend_from_slice(&trait_record(key, Some(value), 0));
            }
            TAG_ABSENCE => {
                let mut payload = Vec::new();
                for c in body.chunks_exact(4).take(MAX_ABSENCE_INSTANCES) {
                    let (k, pending, deadline, last_cancel) = (c[0], c[1], c[2], c[3]);
                    if pending != 0 && pending > last_cancel {
                        payload.extend_from_slice(&[k, last_cancel, 1, pending, deadline]);
                    } else {
                        payload.extend_from_slice(&[k, last_cancel, 0]);
                    }
                }
                if !payload.is_empty() {
                    out.push(generic(tag, key, payload.len()));
                    out.extend_from_slice(&payload);
                }
            }
            _ => out.extend_from_slice(&words[i..i + 1 + len]),
        }
        i += 1 + len;
    }
    out.shrink_to_fit();
    Ok(out)
}

/// A string trait's payload (byte length, then the bytes padded to words) is consistent.
fn string_ok(p: &[u32]) -> bool {
    let Some((n, rest)) = p.split_first() else {
        return false;
    };
    let bytes: &[u8] = bytemuck::cast_slice(rest);
    let n = *n as usize;
    n <= bytes.len() && std::str::from_utf8(&bytes[..n]).is_ok()
}

/// Absence instances fill the payload exactly, each with at most [`ABSENCE_PENDING`]
/// triggers, ascending and after the instance's last cancel.
fn absence_ok(mut p: &[u32]) -> bool {
    while !p.is_empty() {
        if p.len() < 3 {
            return false;
        }
        let (last_cancel, n) = (p[1], p[2] as usize);
        if n > ABSENCE_PENDING || p.len() < 3 + 2 * n {
            return false;
        }
        let mut prev = last_cancel;
        for t in p[3..3 + 2 * n].chunks_exact(2) {
            if t[0] <= prev {
                return false;
            }
            prev = t[0];
        }
        p = &p[3 + 2 * n..];
    }
    true
}

/// The words of a trait record, header included: `value` set (`None`: removed) at `at`.
/// The time is the first payload word of every trait record; strings are cut (at a char
/// boundary) to what a record can hold.
pub(super) fn trait_record(key: u16, value: Option<TraitRef<'_>>, at: Secs) -> Vec<u32> {
    match value {
        None => vec![compact(TAG_TRAIT_NONE, key, 0), at],
        Some(TraitRef::Sym(s)) => vec![compact(TAG_TRAIT_SYM, key, s), at],
        Some(TraitRef::Bool(b)) => vec![compact(TAG_TRAIT_BOOL, key, u16::from(b)), at],
        Some(TraitRef::Num(n)) => {
            let small = n as f32;
            if f64::from(small) == n {
                vec![generic(TAG_TRAIT_F32, key, 2), at, small.to_bits()]
            } else {
                let bits = n.to_bits();
                vec![
                    generic(TAG_TRAIT_F64, key, 3),
                    at,
                    bits as u32,
                    (bits >> 32) as u32,
                ]
            }
        }
        Some(TraitRef::Str(s)) => {
            // Header, time and byte length take three of the record's words.
            let mut cut = s.len().min((MAX_LEN - 2) * 4);
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let bytes = &s.as_bytes()[..cut];
            let len = 2 + bytes.len().div_ceil(4);
            let mut words = Vec::with_capacity(1 + len);
            words.extend_from_slice(&[generic(TAG_TRAIT_STR, key, len), at, cut as u32]);
            for chunk in bytes.chunks(4) {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                words.push(u32::from_ne_bytes(w));
            }
            words
        }
    }
}

/// A trait record's value (`None`: a removal marker) and the time it was set. `p` is the
/// record's payload.
pub(super) fn decode_trait(tag: u32, header: u32, p: &[u32]) -> (Option<TraitRef<'_>>, Secs) {
    let value = (tag != TAG_TRAIT_NONE).then(|| decode_value(tag, header, &p[1..]));
    (value, p[0])
}

/// A trait value from its value payload (what follows the time word).
fn decode_value(tag: u32, header: u32, p: &[u32]) -> TraitRef<'_> {
    match tag {
        TAG_TRAIT_SYM => TraitRef::Sym(data_of(header)),
        TAG_TRAIT_BOOL => TraitRef::Bool(data_of(header) != 0),
        TAG_TRAIT_F32 => TraitRef::Num(f64::from(f32::from_bits(p[0]))),
        TAG_TRAIT_F64 => TraitRef::Num(f64::from_bits(u64::from(p[0]) | (u64::from(p[1]) << 32))),
        _ => {
            let len = p[0] as usize;
            let bytes: &[u8] = bytemuck::cast_slice(&p[1..]);
            // Written from a &str and cut at a char boundary: valid UTF-8.
            TraitRef::Str(std::str::from_utf8(&bytes[..len]).unwrap_or_default())
        }
    }
}
