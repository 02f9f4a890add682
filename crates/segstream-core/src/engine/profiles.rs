//! The profiles by customer id, stored densely.
//!
//! A `HashMap<Arc<str>, Profile>` pays for every *bucket* of its table, and a table holds
//! between 1.14 and 2.3 buckets per entry (load factor at most 7/8, capacity a power of
//! two): with an 80-byte key and value that is 90 to 185 bytes per profile. Here the table
//! holds only a `u32` slot number per bucket (5 bytes with its control byte), and the ids
//! and profiles live in dense slots, in chunks of [`CHUNK`]: growing never copies the
//! slots already there nor frees a large block (a single `Vec` doubling at 10 M profiles
//! would hold its old and new buffers, 1.8 GB, at once), and at most one chunk is partly
//! used. Removing a profile moves the last slot into its place (one more lookup to
//! re-point that slot's table entry), so the slots stay dense.
//!
//! An id of up to 24 bytes (a customer number, a device id, an e-mail address of that
//! length) is kept inline in its slot: no allocation of its own, and the compare that
//! confirms a lookup reads the slot it already had to read. Longer ids (UUIDs) live on the
//! heap, as before. Callers see ids as `&str`; where they keep one (a transition, a
//! changed-profile list), they make their own `Arc<str>`.
//!
//! The order of iteration is the slots' order; like a hash map's, nothing may depend on
//! it.

use std::hash::BuildHasher;
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::profile::Profile;

/// The profiles by customer id. See the module documentation.
#[derive(Default)]
pub(crate) struct Profiles {
    /// Slot numbers, by the hash of the slot's id.
    index: HashTable<u32>,
    /// The ids and their profiles, dense.
    slots: Slots,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Profiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.slots.iter().map(|(k, p)| (k.as_str(), p)))
            .finish()
    }
}

impl Profiles {
    pub(crate) fn new() -> Self {
        Profiles::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn hash(hasher: &DefaultHashBuilder, id: &str) -> u64 {
        hasher.hash_one(id)
    }

    /// The hasher of the table: `hasher().hash_one(id)` is the key [`Profiles::ids_hashed`]
    /// finds `id` by (the timers name customers so).
    pub(crate) fn hasher(&self) -> DefaultHashBuilder {
        self.hasher
    }

    /// The ids (with their profiles) whose hash is `key`: one, as a rule; none if that
    /// customer is gone; more only if two ids collide in all 64 bits.
    pub(crate) fn ids_hashed(&self, key: u64) -> impl Iterator<Item = (&str, &Profile)> {
        self.index
            .iter_hash(key)
            .map(|&i| &self.slots[i as usize])
            .filter(move |(id, _)| Self::hash(&self.hasher, id) == key)
            .map(|(id, p)| (id.as_str(), p))
    }

    /// The slot of `id`.
    fn find(&self, id: &str) -> Option<usize> {
        let Profiles {
            index,
            slots,
            hasher,
        } = self;
        index
            .find(Self::hash(hasher, id), |&i| slots[i as usize].0 == id)
            .map(|&i| i as usize)
    }

    pub(crate) fn contains_key(&self, id: &(impl AsRef<str> + ?Sized)) -> bool {
        self.find(id.as_ref()).is_some()
    }

    pub(crate) fn get(&self, id: &(impl AsRef<str> + ?Sized)) -> Option<&Profile> {
        self.find(id.as_ref()).map(|i| &self.slots[i].1)
    }

    pub(crate) fn get_mut(&mut self, id: &(impl AsRef<str> + ?Sized)) -> Option<&mut Profile> {
        self.find(id.as_ref()).map(|i| &mut self.slots[i].1)
    }

    pub(crate) fn get_key_value(
        &self,
        id: &(impl AsRef<str> + ?Sized),
    ) -> Option<(&str, &Profile)> {
        self.find(id.as_ref()).map(|i| {
            let (k, p) = &self.slots[i];
            (k.as_str(), p)
        })
    }

    /// The id and profile in slot `slot` (from [`Profiles::slot_or_insert`], with no removal
    /// since).
    pub(crate) fn slot_mut(&mut self, slot: usize) -> (&str, &mut Profile) {
        let (k, p) = &mut self.slots[slot];
        (k.as_str(), p)
    }

    /// The slot of `id`, with a new blank profile if it has none (one hash of the id); true
    /// if the profile is new.
    pub(crate) fn slot_or_insert(&mut self, id: &str) -> (usize, bool) {
        let Profiles {
            index,
            slots,
            hasher,
        } = self;
        let h = Self::hash(hasher, id);
        match index.entry(
            h,
            |&i| slots[i as usize].0 == id,
            |&i| Self::hash(hasher, &slots[i as usize].0),
        ) {
            Entry::Occupied(o) => (*o.get() as usize, false),
            Entry::Vacant(v) => {
                let slot = slots.len();
                v.insert(slot_number(slot));
                slots.push((CompactString::new(id), Profile::new()));
                (slot, true)
            }
        }
    }

    /// Inserts or replaces `id`'s profile; returns the profile replaced.
    pub(crate) fn insert(&mut self, id: &str, profile: Profile) -> Option<Profile> {
        let (slot, fresh) = self.slot_or_insert(id);
        let old = std::mem::replace(&mut self.slots[slot].1, profile);
        (!fresh).then_some(old)
    }

    pub(crate) fn remove(&mut self, id: &(impl AsRef<str> + ?Sized)) -> Option<Profile> {
        self.remove_slot(id.as_ref()).map(|(_, p)| p)
    }

    /// Removes `id`'s profile, returning it with the id as the caller keeps ids.
    pub(crate) fn remove_entry(
        &mut self,
        id: &(impl AsRef<str> + ?Sized),
    ) -> Option<(Arc<str>, Profile)> {
        self.remove_slot(id.as_ref())
            .map(|(k, p)| (Arc::from(k.as_str()), p))
    }

    /// Removes `id`'s slot: the last slot moves into its place.
    fn remove_slot(&mut self, id: &str) -> Option<Slot> {
        let Profiles {
            index,
            slots,
            hasher,
        } = self;
        let h = Self::hash(hasher, id);
        let (slot, _) = index
            .find_entry(h, |&i| slots[i as usize].0 == id)
            .ok()?
            .remove();
        let slot = slot as usize;
        let last = slots.len() - 1;
        if slot != last {
            let moved = index
                .find_mut(Self::hash(hasher, &slots[last].0), |&i| i as usize == last)
                .expect("every slot is indexed");
            *moved = slot_number(slot);
        }
        Some(slots.swap_remove(slot))
    }

    /// Keeps the profiles `keep` accepts (the table is rebuilt: for rare, bulk removals).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str, &mut Profile) -> bool) {
        let before = self.slots.len();
        self.slots.retain(|(k, p)| keep(k, p));
        if self.slots.len() == before {
            return;
        }
        let Profiles {
            index,
            slots,
            hasher,
        } = self;
        index.clear();
        for (i, (k, _)) in slots.iter().enumerate() {
            index.insert_unique(Self::hash(hasher, k), slot_number(i), |&j| {
                Self::hash(hasher, &slots[j as usize].0)
            });
        }
    }

    /// Room for `additional` more profiles.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let Profiles {
            index,
            slots,
            hasher,
        } = self;
        slots.reserve(additional);
        index.reserve(additional, |&j| Self::hash(hasher, &slots[j as usize].0));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.slots.iter().map(|(k, p)| (k.as_str(), p))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|(k, _)| k.as_str())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Profile> {
        self.slots.iter().map(|(_, p)| p)
    }

    /// Bytes of the storage itself (table and slots, at their capacity), not counting what
    /// the profiles own on the heap (nor the ids longer than a slot holds inline).
    pub(crate) fn table_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Heap bytes of the ids too long to be kept inline.
    pub(crate) fn id_heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .filter(|(k, _)| k.is_heap_allocated())
            .map(|(k, _)| k.capacity())
            .sum()
    }
}

/// An id and its profile.
type Slot = (CompactString, Profile);

/// Slots per chunk (a power of two: a chunk's `Vec` doubles up to exactly this; 1.2 MB).
const CHUNK: usize = 1 << 14;

/// Dense slots in chunks of [`CHUNK`]; every chunk but the last is full.
#[derive(Default)]
struct Slots {
    chunks: Vec<Vec<Slot>>,
    len: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    fn push(&mut self, slot: Slot) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            // The first chunk grows by doubling (a small engine stays small); every later
            // one is allocated whole: growing a megabyte-sized `Vec` by doubling copies it
            // and faults in fresh pages each time (4 % of a replay's time).
            let chunk = if self.chunks.is_empty() {
                Vec::new()
            } else {
                Vec::with_capacity(CHUNK)
            };
            self.chunks.push(chunk);
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(slot);
        }
        self.len += 1;
    }

    /// Removes slot `i`; the last slot takes its place.
    fn swap_remove(&mut self, i: usize) -> Slot {
        let last = self
            .chunks
            .last_mut()
            .and_then(Vec::pop)
            .expect("not empty");
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len -= 1;
        if i == self.len {
            last
        } else {
            std::mem::replace(&mut self[i], last)
        }
    }

    /// Keeps the slots `keep` accepts, in order, dense again.
    fn retain(&mut self, mut keep: impl FnMut(&mut Slot) -> bool) {
        let old = std::mem::take(self);
        for c in old.chunks {
            for mut slot in c {
                if keep(&mut slot) {
                    self.push(slot);
                }
            }
        }
    }

    fn reserve(&mut self, additional: usize) {
        let chunks = (self.len + additional).div_ceil(CHUNK);
        self.chunks
            .reserve(chunks.saturating_sub(self.chunks.len()));
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Slot;
    fn index(&self, i: usize) -> &Slot {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// A slot number as stored in the table.
fn slot_number(slot: usize) -> u32 {
    u32::try_from(slot).expect("at most u32::MAX profiles per engine")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(sequence: u32) -> Profile {
        let mut p = Profile::new();
        p.sequence = sequence;
        p
    }

    /// The same operations on `Profiles` and a `HashMap` give the same contents.
    #[test]
    fn behaves_like_a_map_under_inserts_and_removals() {
        let mut ours = Profiles::new();
        let mut map: std::collections::HashMap<Arc<str>, Profile> = Default::default();
        // A deterministic mix of inserts, replacements and removals over 300 ids.
        let mut x: u64 = 7;
        for step in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id: Arc<str> = Arc::from(format!("c{}", (x >> 33) % 300));
            match (x >> 20) % 4 {
                0 => assert_eq!(ours.remove(&id), map.remove(&id), "step {step}"),
                1 => {
                    let (slot, fresh) = ours.slot_or_insert(&id);
                    assert_eq!(fresh, !map.contains_key(&id), "step {step}");
                    assert_eq!(ours.slot_mut(slot).0, &*id);
                    ours.slot_mut(slot).1.sequence += 1;
                    map.entry(id).or_default().sequence += 1;
                }
                _ => assert_eq!(
                    ours.insert(&id, profile(step)),
                    map.insert(id, profile(step)),
                    "step {step}"
                ),
            }
            assert_eq!(ours.len(), map.len());
        }
        for (k, p) in &map {
            assert_eq!(ours.get(k), Some(p));
            assert_eq!(ours.get_key_value(k).map(|(k, _)| k), Some(&**k));
        }
        assert_eq!(ours.iter().count(), map.len());
        ours.retain(|_, p| p.sequence % 2 == 0);
        map.retain(|_, p| p.sequence % 2 == 0);
        assert_eq!(ours.len(), map.len());
        for (k, p) in &map {
            assert_eq!(ours.get_mut(k).map(|p| &*p), Some(p));
        }
        assert!(ours.keys().all(|k| map.contains_key(k)));
        assert!(!ours.contains_key("nobody"));
        let (k, _) = map.iter().next().expect("some left");
        assert_eq!(ours.remove_entry(k).map(|(k, _)| k), Some(k.clone()));
        assert_eq!(ours.get(k), None);
        let (slot, fresh) = ours.slot_or_insert(k);
        assert!(fresh && ours.slot_mut(slot).1 == &Profile::new());
    }

    /// Across chunks: removals move the last slot (in another chunk) into the hole, and the
    /// chunks stay full but the last.
    #[test]
    fn removals_across_chunks_keep_every_profile_reachable() {
        let mut ours = Profiles::new();
        let n = 2 * CHUNK + 5;
        for i in 0..n {
            assert_eq!(ours.insert(&format!("c{i}"), profile(i as u32)), None);
        }
        for i in (0..n).step_by(3) {
            assert_eq!(
                ours.remove(&format!("c{i}")).map(|p| p.sequence),
                Some(i as u32)
            );
        }
        assert_eq!(ours.len(), n - n.div_ceil(3));
        assert_eq!(ours.slots.chunks.len(), ours.len().div_ceil(CHUNK));
        for i in 0..n {
            let got = ours.get(&format!("c{i}")).map(|p| p.sequence);
            assert_eq!(got, (i % 3 != 0).then_some(i as u32), "c{i}");
        }
        ours.retain(|_, p| p.sequence % 2 == 0);
        assert_eq!(ours.slots.chunks.len(), ours.len().div_ceil(CHUNK));
        assert_eq!(ours.iter().count(), ours.len());
        for i in 0..n {
            let got = ours.get(&format!("c{i}")).map(|p| p.sequence);
            assert_eq!(got, (i % 3 != 0 && i % 2 == 0).then_some(i as u32), "c{i}");
        }
    }
}
