//! The changelog record: a customer's profile as bytes another instance can restore.
//!
//! Profiles refer to symbols (event types, trait names, values) and feature indices that
//! are private to one engine: interned in the order that engine first met them. A record
//! therefore carries its own small name tables and identifies features and segments by
//! stable hashes of their canonical keys, so any instance running compatible definitions
//! can read it. Format version 2 (all integers little-endian, `varint` = LEB128):
//!
//! | field | encoding |
//! |---|---|
//! | format version | `u8` = 2 |
//! | layout hash | `u64`: segments (name, rule version) and feature keys of the writer |
//! | sequence, clock, timer, score time | varint, zigzag varint, varint, varint |
//! | flags (format 2) | varint: bit 0 = the person is known (has a customer id) |
//! | score | `f32` |
//! | event types, trait names, values | per table: varint count, then (varint length, UTF-8) |
//! | features | varint count, then `u64` hash of each feature key |
//! | memberships | varint count, then `u64` hash of each segment name |
//! | arena | varint word count, then `u32` words (references are indices into the tables) |
//!
//! The arena is the profile's own layout (see [`crate::profile`]). Format 1 had the same
//! fields and an older arena layout, which is still read and upgraded
//! ([`crate::profile::upgrade_arena_v1`]):
//!
//! | arena record | format 1 | format 2 |
//! |---|---|---|
//! | traits (`TRAIT_*`) | the value only | the event time it was set first (format 1: 0, "unknown, older than anything"), then the value |
//! | removed trait (`TRAIT_NONE`, tag 15) | absent (a removal erased the record) | key and time of the removal |
//! | `ABSENCE` | 4 words per instance: key, pending since, deadline, last cancel | per instance: key, last cancel, `n`, then `n` × (trigger time, deadline) (format 1: `n` = 1 when armed) |
//!
//! A record written under a different layout (another rule version, an added segment) is
//! restored and then re-evaluated against the current definitions, like a reload.
//! Nothing here does I/O.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use crate::profile::{remap_arena, upgrade_arena_v1, ArenaError, Profile, RefKind};
use crate::segment::compile::Definitions;
use crate::symbols::{SymbolClass, Symbols};

/// The format version written by this build (format 1 is still read).
pub const FORMAT_VERSION: u8 = 2;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u8 = 1;

/// Why a record could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error(
        "record format version {0} is not supported (this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})"
    )]
    Version(u8),
    #[error("record truncated")]
    Truncated,
    #[error("name is not UTF-8")]
    Utf8,
    #[error("reference {0} is outside the record's tables")]
    Reference(u16),
    #[error("{0} table has more entries than references can address")]
    TooMany(&'static str),
    #[error("invalid profile: {0}")]
    Arena(#[from] ArenaError),
}

/// Encodes and decodes records for one set of definitions (rebuilt on reload).
#[derive(Debug, Clone)]
pub struct Codec {
    layout: u64,
    feature_hash: Vec<u64>,
    feature_by_hash: HashMap<u64, u16>,
    segment_hash: Vec<u64>,
    segment_by_hash: HashMap<u64, usize>,
    /// Name tables seen before (their bytes) and what they map to: most records share a
    /// few tables, and a hit skips UTF-8 checks and symbol lookups. Symbols never change
    /// meaning within an engine, so entries stay valid; the cache is bounded.
    tables: hashbrown::HashMap<u64, (Box<[u8]>, NameMaps)>,
}

type NameMaps = [Vec<Option<u16>>; 3];

const TABLE_CACHE: usize = 65_536;

/// A decoded record.
#[derive(Debug)]
pub struct Decoded {
    pub profile: Profile,
    /// Written under the same definitions layout: memberships and timer are exact. When
    /// false, the caller re-evaluates the profile against the current definitions.
    pub same_layout: bool,
}

fn name_hash(s: &str) -> u64 {
    xxh3_64(s.as_bytes())
}

impl Codec {
    pub fn new(defs: &Definitions) -> Self {
        let mut layout = String::new();
        for s in &defs.segments {
            layout.push_str(&s.name);
            layout.push('=');
            layout.push_str(&s.version);
            layout.push(';');
        }
        for f in &defs.features {
            layout.push_str(&f.key);
            layout.push(';');
        }
        let feature_hash: Vec<u64> = defs.features.iter().map(|f| name_hash(&f.key)).collect();
        let segment_hash: Vec<u64> = defs.segments.iter().map(|s| name_hash(&s.name)).collect();
        Codec {
            layout: name_hash(&layout),
            feature_by_hash: feature_hash
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i as u16))
                .collect(),
            segment_by_hash: segment_hash
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i))
                .collect(),
            feature_hash,
            segment_hash,
            tables: hashbrown::HashMap::new(),
        }
    }

    /// Appends the record of `profile` to `out`.
    pub fn encode(&self, symbols: &Symbols, profile: &Profile, out: &mut Vec<u8>) {
        // Local tables: the engine's references in first-use order.
        let mut tables: [Vec<u16>; 4] = Default::default();
        let arena = profile.portable_arena(&mut |kind, r| {
            let t = &mut tables[kind as usize];
            Some(match t.iter().position(|x| *x == r) {
                Some(i) => i as u16,
                None => {
                    t.push(r);
                    (t.len() - 1) as u16
                }
            })
        });
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.layout.to_le_bytes());
        varint(out, u64::from(profile.sequence));
        varint(out, zigzag(profile.clock));
        varint(out, u64::from(profile.timer_at));
        varint(out, u64::from(profile.score_at));
        varint(out, u64::from(profile.known));
        out.extend_from_slice(&profile.score.to_bits().to_le_bytes());
        for (kind, class) in [
            (RefKind::EventType, SymbolClass::EventType),
            (RefKind::TraitKey, SymbolClass::TraitKey),
            (RefKind::Value, SymbolClass::Value),
        ] {
            let t = &tables[kind as usize];
            varint(out, t.len() as u64);
            for &r in t {
                let name = symbols.name(class, u32::from(r));
                varint(out, name.len() as u64);
                out.extend_from_slice(name.as_bytes());
            }
        }
        let features = &tables[RefKind::Feature as usize];
        varint(out, features.len() as u64);
        for &f in features {
            let h = self.feature_hash.get(usize::from(f)).copied().unwrap_or(0);
            out.extend_from_slice(&h.to_le_bytes());
        }
        let members: Vec<usize> = profile.members().collect();
        varint(out, members.len() as u64);
        for i in members {
            let h = self.segment_hash.get(i).copied().unwrap_or(0);
            out.extend_from_slice(&h.to_le_bytes());
        }
        varint(out, arena.len() as u64);
        for w in arena {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes a record, interning its names into `symbols`. Features and segments the
    /// current definitions do not have are dropped.
    pub fn decode(&mut self, symbols: &mut Symbols, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let parsed = self.parse(bytes)?;
        self.finish(symbols, parsed)
    }

    /// The part of decoding that needs no engine state (a restore runs it on the thread
    /// that reads the changelog): the fields, the tables' bytes, features and segments by
    /// hash, and the arena words, checked.
    pub fn parse(&self, bytes: &[u8]) -> Result<Parsed, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8().map_err(|_| DecodeError::Empty)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(DecodeError::Version(version));
        }
        let layout = r.u64()?;
        let sequence = r.varint()? as u32;
        let clock = unzigzag(r.varint()?);
        let timer_at = r.varint()? as u32;
        let score_at = r.varint()? as u32;
        // Format 1 had no flags: every profile was a known customer's.
        let known = if version >= 2 {
            r.varint()? & 1 == 1
        } else {
            true
        };
        let score = f32::from_bits(r.u32()?);
        let start = r.0;
        for what in ["event type", "trait", "value"] {
            for _ in 0..r.count(what)? {
                let len = r.varint()? as usize;
                r.take(len)?;
            }
        }
        let tables: Box<[u8]> = start[..start.len() - r.0.len()].into();
        let n = r.count("feature")?;
        let mut features = Vec::with_capacity(n);
        for _ in 0..n {
            features.push(self.feature_by_hash.get(&r.u64()?).copied());
        }
        let n = r.count("segment")?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(i) = self.segment_by_hash.get(&r.u64()?) {
                members.push(*i);
            }
        }
        let words = r.varint()? as usize;
        let raw = r.take(words.checked_mul(4).ok_or(DecodeError::Truncated)?)?;
        let mut words: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if version == 1 {
            words = upgrade_arena_v1(&words)?;
        }
        Profile::check_arena(&words)?;
        Ok(Parsed {
            same_layout: layout == self.layout,
            sequence,
            clock,
            timer_at,
            score_at,
            known,
            score,
            table_key: xxh3_64(&tables),
            tables,
            features,
            members,
            words,
        })
    }

    /// The rest: the names mapped to this engine's symbols (interned if new), the arena's
    /// references renumbered, the profile built.
    pub fn finish(&mut self, symbols: &mut Symbols, p: Parsed) -> Result<Decoded, DecodeError> {
        // Per table: the local index's meaning here (None: dropped).
        let mut maps: [Vec<Option<u16>>; 4] = Default::default();
        match self.tables.get(&p.table_key) {
            Some((b, cached)) if **b == *p.tables => {
                for (m, c) in maps.iter_mut().zip(cached) {
                    m.clone_from(c);
                }
            }
            _ => {
                let mut t = Reader(&p.tables);
                let mut fresh: NameMaps = Default::default();
                for (m, class) in fresh.iter_mut().zip([
                    SymbolClass::EventType,
                    SymbolClass::TraitKey,
                    SymbolClass::Value,
                ]) {
                    for _ in 0..t.count("table")? {
                        let len = t.varint()? as usize;
                        let name =
                            std::str::from_utf8(t.take(len)?).map_err(|_| DecodeError::Utf8)?;
                        m.push(symbols.intern(name, class).map(|s| s as u16));
                    }
                }
                for (m, c) in maps.iter_mut().zip(&fresh) {
                    m.clone_from(c);
                }
                if self.tables.len() >= TABLE_CACHE {
                    self.tables.clear();
                }
                self.tables.insert(p.table_key, (p.tables, fresh));
            }
        }
        maps[RefKind::Feature as usize] = p.features;
        let mut words = p.words;
        // A reference outside the tables is corruption.
        let mut bad = None;
        remap_arena(
            &mut words,
            &mut |kind, r| match maps[kind as usize].get(usize::from(r)) {
                Some(m) => *m,
                None => {
                    bad.get_or_insert(r);
                    None
                }
            },
        );
        if let Some(r) = bad {
            return Err(DecodeError::Reference(r));
        }
        let mut profile = Profile::from_checked_arena(words);
        profile.sequence = p.sequence;
        profile.clock = p.clock;
        profile.timer_at = p.timer_at;
        profile.score = p.score;
        profile.score_at = p.score_at;
        profile.known = p.known;
        for i in p.members {
            profile.set_member(i, true);
        }
        Ok(Decoded {
            profile,
            same_layout: p.same_layout,
        })
    }
}

/// A record parsed by [`Codec::parse`], to be finished against an engine's symbols.
#[derive(Debug)]
pub struct Parsed {
    same_layout: bool,
    sequence: u32,
    clock: i64,
    timer_at: u32,
    score_at: u32,
    known: bool,
    score: f32,
    table_key: u64,
    tables: Box<[u8]>,
    features: Vec<Option<u16>>,
    members: Vec<usize>,
    words: Vec<u32>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }
    /// A table length: at most what a 16-bit reference can address.
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > u64::from(u16::MAX) + 1 {
            return Err(DecodeError::TooMany(what));
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 1_700_000_000_000, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, zigzag(v));
            let mut r = Reader(&b);
            assert_eq!(unzigzag(r.varint().unwrap()), v);
            assert!(r.0.is_empty());
        }
    }

    #[test]
    fn truncated_and_foreign_records_are_refused() {
        let mut symbols = Symbols::new();
        let defs = Definitions::from_source(
            "t.toml",
            "[segments.a]\ncondition = 'count(page_view, 1h) >= 1'\n",
            &mut symbols,
        )
        .unwrap();
        let mut codec = Codec::new(&defs);
        assert_eq!(
            codec.decode(&mut symbols, &[]).unwrap_err(),
            DecodeError::Empty
        );
        assert_eq!(
            codec.decode(&mut symbols, &[9, 0, 0]).unwrap_err(),
            DecodeError::Version(9)
        );
        let mut b = Vec::new();
        codec.encode(&symbols, &Profile::new(), &mut b);
        for cut in 1..b.len() {
            assert!(
                codec.decode(&mut symbols, &b[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(codec.decode(&mut symbols, &b).is_ok());
    }

    fn defs(symbols: &mut Symbols) -> Definitions {
        Definitions::from_source(
            "t.toml",
            "[segments.a]\ncondition = 'ad_click then no webinar_registered within 30m'\n\
             [segments.b]\ncondition = 'trait.country = \"DE\"'\n",
            symbols,
        )
        .unwrap()
    }

    #[test]
    fn format_2_round_trips_trait_times_removals_and_pending_triggers() {
        use crate::profile::{AbsenceInstance, TraitRef};
        let mut symbols = Symbols::new();
        let defs = defs(&mut symbols);
        let mut codec = Codec::new(&defs);
        let country = symbols.intern("country", SymbolClass::TraitKey).unwrap() as u16;
        let plan = symbols.intern("plan", SymbolClass::TraitKey).unwrap() as u16;
        let de = symbols.intern("DE", SymbolClass::Value).unwrap() as u16;
        let mut p = Profile::new();
        p.set_trait(country, Some(TraitRef::Sym(de)), 1_000);
        p.set_trait(plan, Some(TraitRef::Str("pro")), 900);
        p.set_trait(plan, None, 1_100);
        let mut a = AbsenceInstance::new(0);
        a.cancel(50);
        a.trigger(100, 200);
        a.trigger(150, 170);
        p.set_absence(0, &[a]);
        let mut b = Vec::new();
        codec.encode(&symbols, &p, &mut b);
        assert_eq!(b[0], 2);
        // Into a fresh engine's symbols: names are interned anew.
        let mut other = Symbols::new();
        other.intern("something else", SymbolClass::TraitKey);
        let q = codec.decode(&mut other, &b).unwrap().profile;
        let country2 = other.get("country", SymbolClass::TraitKey).unwrap() as u16;
        let plan2 = other.get("plan", SymbolClass::TraitKey).unwrap() as u16;
        let de2 = other.get("DE", SymbolClass::Value).unwrap() as u16;
        assert_eq!(
            q.trait_entry(country2),
            Some((Some(TraitRef::Sym(de2)), 1_000))
        );
        assert_eq!(q.trait_entry(plan2), Some((None, 1_100)));
        assert_eq!(q.absence(0).collect::<Vec<_>>(), vec![a]);
        for cut in 1..b.len() {
            assert!(
                codec.decode(&mut symbols, &b[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A malformed absence instance is refused with its reason.
        let n_at = b.len() - 4 * 5;
        let mut bad = b.clone();
        bad[n_at] = 9;
        assert_eq!(
            codec.decode(&mut symbols, &bad).unwrap_err(),
            DecodeError::Arena(ArenaError::BadAbsence(
                p.portable_arena(&mut |_, r| Some(r)).len() - 8
            ))
        );
    }

    #[test]
    fn format_1_records_are_read_and_upgraded() {
        use crate::profile::{AbsenceTrigger, TraitRef};
        let mut symbols = Symbols::new();
        let defs = defs(&mut symbols);
        let mut codec = Codec::new(&defs);
        let mut b = vec![1u8];
        b.extend_from_slice(&codec.layout.to_le_bytes());
        varint(&mut b, 3); // sequence
        varint(&mut b, zigzag(200_000)); // clock
        varint(&mut b, 200); // timer
        varint(&mut b, 0); // score time
        b.extend_from_slice(&0f32.to_bits().to_le_bytes());
        for name in ["ad_click", "country", "DE"] {
            varint(&mut b, 1);
            varint(&mut b, name.len() as u64);
            b.extend_from_slice(name.as_bytes());
        }
        varint(&mut b, 1);
        b.extend_from_slice(&codec.feature_hash[0].to_le_bytes());
        varint(&mut b, 0);
        // Format-1 arena: a type record, a trait without time, an armed 4-word instance.
        let words: [u32; 9] = [
            (1 << 28) | 1,
            100,
            100,
            3 << 28,
            (11 << 28) | 4,
            0x55,
            100,
            200,
            0,
        ];
        varint(&mut b, words.len() as u64);
        for w in words {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let d = codec.decode(&mut symbols, &b).unwrap();
        assert!(d.same_layout);
        let p = d.profile;
        assert_eq!((p.sequence, p.clock, p.timer_at), (3, 200_000, 200));
        let ad = symbols.get("ad_click", SymbolClass::EventType).unwrap() as u16;
        let country = symbols.get("country", SymbolClass::TraitKey).unwrap() as u16;
        let de = symbols.get("DE", SymbolClass::Value).unwrap() as u16;
        assert_eq!(p.type_stats(ad).map(|s| s.count), Some(1));
        assert_eq!(p.trait_entry(country), Some((Some(TraitRef::Sym(de)), 0)));
        let inst: Vec<_> = p.absence(0).collect();
        assert_eq!(inst.len(), 1);
        assert_eq!(inst[0].key, 0x55);
        assert_eq!(
            inst[0].first(),
            Some(AbsenceTrigger {
                at: 100,
                deadline: 200
            })
        );
        // Written again, it is format 2 and reads back the same.
        let mut again = Vec::new();
        codec.encode(&symbols, &p, &mut again);
        assert_eq!(again[0], FORMAT_VERSION);
        assert_eq!(codec.decode(&mut symbols, &again).unwrap().profile, p);
        // Truncated format-1 records are refused too.
        for cut in 1..b.len() {
            assert!(
                codec.decode(&mut symbols, &b[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A format-1 record using tag 15 (only format 2 has it) is refused.
        let mut bad = b.clone();
        let at = bad.len() - 21;
        bad[at] = 0xf0;
        assert!(matches!(
            codec.decode(&mut symbols, &bad).unwrap_err(),
            DecodeError::Arena(ArenaError::UnknownTag { tag: 15, at: 3 })
        ));
    }
}
