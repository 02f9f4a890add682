//! Identity resolution: which ids belong to one person.
//!
//! Every person has one canonical id, under which its profile is kept: its customer id once
//! it is known, its anonymous id before. Every other id of the person (more anonymous ids,
//! devices, an earlier customer id) maps to the canonical one. A link (an event with both a
//! `customer_id` and an `anonymous_id`, or an `alias`) that joins two persons merges them:
//! the person that is known survives (if both are, or neither, the link's own subject),
//! every id of the other maps to the survivor from then on.
//!
//! Two guards keep one bad id from merging everyone (a shared kiosk device, a bot, a test
//! id): a person has at most `max_ids` ids, and `blocked_ids` never link. A refused link
//! merges nothing; the caller reports it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::transition::Ids;

/// Identity-resolution settings (`[engine.identity]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The most ids one person may have; a link that would exceed it is refused.
    pub max_ids: usize,
    /// Id values that never link two persons (junk producers send for "no id"). An event
    /// whose only id is blocked is rejected; a blocked second id is ignored and the link
    /// reported as refused.
    pub blocked_ids: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            max_ids: default_max_ids(),
            blocked_ids: default_blocked_ids(),
        }
    }
}

/// 25: several devices and browsers of one person, not a kiosk or a bot.
pub fn default_max_ids() -> usize {
    25
}

/// Values that producers send when they have no id.
pub fn default_blocked_ids() -> Vec<String> {
    [
        "undefined",
        "null",
        "none",
        "nil",
        "nan",
        "0",
        "-1",
        "anonymous",
        "unknown",
        "guest",
        "test",
        "00000000-0000-0000-0000-000000000000",
    ]
    .map(String::from)
    .to_vec()
}

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The id is on the blocked list.
    Blocked(String),
    /// The merged person would have more than `max_ids` ids.
    TooManyIds { would_have: usize, max: usize },
}

impl Refusal {
    /// A low-cardinality label (metric, dead-letter header).
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Blocked(_) => "blocked_id",
            Refusal::TooManyIds { .. } => "too_many_ids",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Blocked(id) => write!(f, "the id {id:?} is blocked (engine.identity.blocked_ids)"),
            Refusal::TooManyIds { would_have, max } => write!(
                f,
                "the merged person would have {would_have} ids, more than engine.identity.max_ids = {max}"
            ),
        }
    }
}

/// The partition an id lives in among `partitions`: Kafka's default partitioner for the id as
/// key (the Java client's murmur2, positive, modulo the count), so that any Kafka client
/// can compute it too.
pub fn home(id: &str, partitions: u16) -> u16 {
    (((murmur2(id.as_bytes()) as u32) & 0x7fff_ffff) % u32::from(partitions.max(1))) as u16
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in chunks.by_ref() {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The blocked id values, compared case-insensitively.
///
/// Checked for every id of every event (the router, the replay's planner and the engine
/// each ask), so the common answer, "not blocked", is found without hashing or allocating:
/// an ASCII id whose length no blocked value has is not blocked, and an ASCII id is
/// lowercased on the stack. Only an id with other characters is lowercased by Unicode's
/// rules into a new string, as the blocked values were.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    /// The blocked values, lowercased.
    values: hashbrown::HashSet<Box<str>>,
    /// Bit `n` set: some blocked value is `n` bytes long (`n` < 64).
    lengths: u64,
    /// Some blocked value is 64 bytes long or longer.
    long: bool,
}

/// Ids up to this many bytes are lowercased on the stack.
const STACK_ID: usize = 64;

impl Blocklist {
    pub fn new(config: &IdentityConfig) -> Self {
        let values: hashbrown::HashSet<Box<str>> = config
            .blocked_ids
            .iter()
            .map(|b| b.to_lowercase().into_boxed_str())
            .collect();
        let lengths = values
            .iter()
            .filter(|v| v.len() < 64)
            .fold(0u64, |m, v| m | 1 << v.len());
        let long = values.iter().any(|v| v.len() >= 64);
        Blocklist {
            values,
            lengths,
            long,
        }
    }

    /// Whether `id` is blocked.
    pub fn contains(&self, id: &str) -> bool {
        if self.values.is_empty() {
            return false;
        }
        if !id.is_ascii() {
            return self.values.contains(id) || self.values.contains(id.to_lowercase().as_str());
        }
        // ASCII: lowercasing keeps the length.
        let n = id.len();
        let possible = if n < 64 {
            self.lengths & (1 << n) != 0
        } else {
            self.long
        };
        if !possible {
            return false;
        }
        if !id.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.values.contains(id);
        }
        if n <= STACK_ID {
            let mut lower = [0u8; STACK_ID];
            lower[..n].copy_from_slice(id.as_bytes());
            lower[..n].make_ascii_lowercase();
            std::str::from_utf8(&lower[..n]).is_ok_and(|l| self.values.contains(l))
        } else {
            self.values.contains(id.to_ascii_lowercase().as_str())
        }
    }

    /// The id an event is recorded under before resolution: its customer id, else its
    /// anonymous id, blocked ids left out. `None` if every id it has is blocked.
    pub fn subject<'e>(&self, event: &'e Event<'_>) -> Option<&'e str> {
        let usable = |id: Option<&'e str>| id.filter(|i| !self.contains(i));
        usable(event.customer_id.as_deref()).or(usable(event.anonymous_id.as_deref()))
    }
}

/// The identity map. See the module documentation.
#[derive(Debug, Default)]
pub struct Identities {
    /// Every id that is not its person's canonical id, to the canonical id.
    alias: hashbrown::HashMap<Arc<str>, Arc<str>>,
    /// Per canonical id with other ids: those ids, in the order they joined.
    others: hashbrown::HashMap<Arc<str>, Ids>,
    blocked: Blocklist,
    max_ids: usize,
}

impl Identities {
    pub fn new(config: &IdentityConfig) -> Self {
        Identities {
            blocked: Blocklist::new(config),
            max_ids: config.max_ids.max(1),
            ..Identities::default()
        }
    }

    /// Whether `id` is on the blocked list (compared case-insensitively).
    pub fn is_blocked(&self, id: &str) -> bool {
        self.blocked.contains(id)
    }

    /// The blocked values.
    pub fn blocklist(&self) -> &Blocklist {
        &self.blocked
    }

    /// The canonical id of `id`'s person (`id` itself when it is canonical or unknown).
    pub fn canonical<'a>(&'a self, id: &'a str) -> &'a str {
        // An id can point at a person that has itself joined another since (across
        // shards, the older entry is not rewritten): follow the chain.
        let mut c = id;
        for _ in 0..64 {
            match self.alias.get(c) {
                Some(next) if &**next != c => c = next,
                _ => break,
            }
        }
        c
    }

    /// The other ids of the person whose canonical id is `canonical`.
    pub fn others(&self, canonical: &str) -> Ids {
        self.others
            .get(canonical)
            .cloned()
            .unwrap_or_else(|| Arc::from([]))
    }

    /// How many ids the person with this canonical id has.
    pub fn count(&self, canonical: &str) -> usize {
        1 + self.others.get(canonical).map_or(0, |o| o.len())
    }

    /// Checks whether the persons of canonical ids `a` and `b` (distinct) may merge.
    pub fn check_merge(&self, a: &str, b: &str) -> Result<(), Refusal> {
        let would_have = self.count(a) + self.count(b);
        if would_have > self.max_ids {
            return Err(Refusal::TooManyIds {
                would_have,
                max: self.max_ids,
            });
        }
        Ok(())
    }

    /// Moves every id of the person `absorbed` (canonical) to the person `survivor`
    /// (canonical). Returns the ids that changed person (the absorbed canonical first).
    pub fn merge(&mut self, survivor: &Arc<str>, absorbed: &Arc<str>) -> Vec<Arc<str>> {
        let mut moved: Vec<Arc<str>> = vec![absorbed.clone()];
        if let Some(o) = self.others.remove(absorbed) {
            moved.extend(o.iter().cloned());
        }
        // The survivor may have been an id of the absorbed person before: it is canonical now.
        self.alias.remove(survivor);
        moved.retain(|id| id != survivor);
        for id in &moved {
            self.alias.insert(id.clone(), survivor.clone());
        }
        let mut all: Vec<Arc<str>> = self
            .others
            .get(survivor)
            .map(|o| o.to_vec())
            .unwrap_or_default();
        all.extend(moved.iter().cloned());
        self.others.insert(survivor.clone(), Arc::from(all));
        moved
    }

    /// Sets `id` to belong to `canonical` (restoring the map; `id == canonical` makes it
    /// canonical again). Keeps the other-ids lists in step.
    pub fn restore(&mut self, id: Arc<str>, canonical: Arc<str>) {
        if let Some(old) = self.alias.remove(&id) {
            self.drop_other(&old, &id);
        }
        if id != canonical {
            let mut all: Vec<Arc<str>> = self
                .others
                .get(&canonical)
                .map(|o| o.to_vec())
                .unwrap_or_default();
            if !all.contains(&id) {
                all.push(id.clone());
            }
            self.others.insert(canonical.clone(), Arc::from(all));
            self.alias.insert(id, canonical);
        }
    }

    /// Removes a person: every one of its ids. Returns them (canonical first).
    pub fn remove(&mut self, canonical: &Arc<str>) -> Vec<Arc<str>> {
        let mut ids = vec![canonical.clone()];
        if let Some(o) = self.others.remove(canonical) {
            for id in o.iter() {
                self.alias.remove(id);
                ids.push(id.clone());
            }
        }
        ids
    }

    /// Removes one non-canonical id from its person (an identity tombstone restored).
    pub fn remove_id(&mut self, id: &str) {
        if let Some(c) = self.alias.remove(id) {
            self.drop_other(&c, id);
        }
    }

    fn drop_other(&mut self, canonical: &Arc<str>, id: &str) {
        if let Some(o) = self.others.get(canonical) {
            let rest: Vec<Arc<str>> = o.iter().filter(|x| &***x != id).cloned().collect();
            if rest.is_empty() {
                self.others.remove(canonical);
            } else {
                self.others.insert(canonical.clone(), Arc::from(rest));
            }
        }
    }

    /// Keeps the non-canonical ids for which `keep(id, canonical)` holds.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        let gone: Vec<Arc<str>> = self
            .alias
            .iter()
            .filter(|(id, c)| !keep(id, c))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_id(&id);
        }
    }

    /// Ids that map to another (the size of the identity map, for metrics).
    pub fn linked_ids(&self) -> usize {
        self.alias.len()
    }

    /// Every non-canonical id with its canonical id.
    pub fn aliases(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.alias.iter()
    }

    /// Approximate bytes the map takes (keys, values, list entries, table slots).
    pub fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Arc<str>, Arc<str>)>() + 1;
        self.alias
            .keys()
            .map(|k| k.len() + 16 + slot)
            .sum::<usize>()
            + self
                .others
                .values()
                .map(|o| o.len() * 16 + 16 + slot)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn murmur2_is_kafkas() {
        // The vectors of Kafka's own UtilsTest, and partitions as kafka-python computes them.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"abc"), 479_470_107);
        assert_eq!(home("c-000001", 12), 1);
        assert_eq!(home("6deee5387e5c2634", 12), 0);
        assert_eq!(home("", 12), 9);
    }

    #[test]
    fn chains_merge_into_one_canonical_id() {
        let mut m = Identities::new(&IdentityConfig::default());
        let (a1, a2, c) = (Arc::from("a1"), Arc::from("a2"), Arc::from("c"));
        assert_eq!(m.merge(&a2, &a1), ids(&["a1"]));
        assert_eq!(m.canonical("a1"), "a2");
        assert_eq!(m.merge(&c, &a2), ids(&["a2", "a1"]));
        assert_eq!(m.canonical("a1"), "c");
        assert_eq!(m.canonical("a2"), "c");
        assert_eq!(m.canonical("c"), "c");
        assert_eq!(&*m.others("c"), &ids(&["a2", "a1"])[..]);
        assert_eq!(m.count("c"), 3);
        assert_eq!(m.remove(&c), ids(&["c", "a2", "a1"]));
        assert_eq!(m.canonical("a1"), "a1");
        assert_eq!(m.linked_ids(), 0);
    }

    /// The fast paths answer as lowercasing every id by Unicode's rules and looking it up.
    #[test]
    fn blocklist_answers_as_unicode_lowercasing_does() {
        let long = "X".repeat(70);
        let blocked = [
            "undefined",
            "NULL",
            "0",
            "00000000-0000-0000-0000-000000000000",
            "Ärger",
            "ΣΑΣ",
            long.as_str(),
            "i\u{307}d",
        ];
        let config = IdentityConfig {
            max_ids: 3,
            blocked_ids: blocked.iter().map(|b| b.to_string()).collect(),
        };
        let list = Blocklist::new(&config);
        let lowered: std::collections::HashSet<String> =
            blocked.iter().map(|b| b.to_lowercase()).collect();
        let reference = |id: &str| lowered.contains(id) || lowered.contains(&id.to_lowercase());
        let mut ids: Vec<String> = [
            "undefined",
            "Undefined",
            "UNDEFINED",
            "undefine",
            "null",
            "NuLl",
            "0",
            "00",
            "00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-00000000000A",
            "ärger",
            "ÄRGER",
            "Ärger",
            "σας",
            "ΣΑΣ",
            "σασ",
            "İd",
            "i\u{307}d",
            "ID",
            "c-000000001",
            "",
            " ",
            "undefined ",
            "6deee5387e5c2634",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        ids.extend([
            long.clone(),
            long.to_lowercase(),
            "x".repeat(69),
            "x".repeat(64),
        ]);
        for id in &ids {
            assert_eq!(list.contains(id), reference(id), "{id:?}");
        }
        assert!(list.contains(&long.to_lowercase()) && list.contains("NuLl"));
        assert!(!Blocklist::new(&IdentityConfig {
            max_ids: 3,
            blocked_ids: Vec::new(),
        })
        .contains("undefined"));
    }

    #[test]
    fn limits_and_blocked_values() {
        let config = IdentityConfig {
            max_ids: 3,
            blocked_ids: vec!["Undefined".into()],
        };
        let mut m = Identities::new(&config);
        assert!(m.is_blocked("undefined") && m.is_blocked("UNDEFINED"));
        assert!(!m.is_blocked("u-1"));
        let c: Arc<str> = Arc::from("c");
        m.merge(&c, &Arc::from("a1"));
        m.merge(&c, &Arc::from("a2"));
        assert_eq!(
            m.check_merge("c", "a3"),
            Err(Refusal::TooManyIds {
                would_have: 4,
                max: 3
            })
        );
    }

    #[test]
    fn restoring_entries_rebuilds_the_lists() {
        let mut m = Identities::new(&IdentityConfig::default());
        m.restore(Arc::from("a1"), Arc::from("c"));
        m.restore(Arc::from("a2"), Arc::from("c"));
        assert_eq!(m.count("c"), 3);
        // a2 moves to another person.
        m.restore(Arc::from("a2"), Arc::from("d"));
        assert_eq!(m.count("c"), 2);
        assert_eq!(m.canonical("a2"), "d");
        m.remove_id("a1");
        assert_eq!(m.count("c"), 1);
        assert_eq!(m.canonical("a1"), "a1");
    }
}
