//! Change tracking for the changelog: which customers changed or were removed since the
//! last drain.
//!
//! A service that writes a changelog turns tracking on (`Engine::with_change_tracking`);
//! replay and benchmarks leave it off, and then nothing is collected. A changed profile is
//! listed once per drain (its `dirty` flag says it is listed already); a removed one is
//! listed with its shard, and becomes a tombstone if it is still gone when drained.

use std::sync::Arc;

use super::Profiles;
use crate::changelog::Codec;
use crate::profile::Profile;
use crate::symbols::Symbols;

/// One entry for the changelog: a customer's record, or a tombstone (`record: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub customer_id: Arc<str>,
    pub shard: u16,
    pub record: Option<Vec<u8>>,
}

/// One identity entry for the changelog: `id` now belongs to the person `canonical`, or
/// (`None`) it belongs to nobody any more (the person was forgotten, expired or evicted).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityChange {
    pub id: Arc<str>,
    pub canonical: Option<Arc<str>>,
    /// The shard of the person's profile.
    pub shard: u16,
}

/// The customers changed and removed since the last drain. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct ChangeTracker {
    /// Whether anything is collected.
    enabled: bool,
    /// Changed customers, in the order first changed since the last drain.
    changed: Vec<Arc<str>>,
    /// Removed customers with the shard they were in.
    removed: Vec<(Arc<str>, u16)>,
    /// Identity entries changed, in order (a later entry for an id supersedes an earlier).
    identities: Vec<IdentityChange>,
}

impl ChangeTracker {
    /// Collects from now on.
    pub(super) fn enable(&mut self) {
        self.enabled = true;
    }

    /// Marks a profile changed since the last drain (once per drain).
    pub(super) fn touch(&mut self, profile: &mut Profile, id: &str) {
        if self.enabled && !profile.dirty {
            profile.dirty = true;
            self.changed.push(Arc::from(id));
        }
    }

    /// Notes that a customer's profile was removed from `shard`.
    pub(super) fn remove(&mut self, id: &str, shard: u16) {
        if self.enabled {
            self.removed.push((Arc::from(id), shard));
        }
    }

    /// Notes that `id` now belongs to `canonical` (or to nobody).
    pub(super) fn identity(&mut self, id: Arc<str>, canonical: Option<Arc<str>>, shard: u16) {
        if self.enabled {
            self.identities.push(IdentityChange {
                id,
                canonical,
                shard,
            });
        }
    }

    /// The identity entries changed since the last drain, in order.
    pub(super) fn drain_identities(&mut self, out: &mut Vec<IdentityChange>) {
        out.append(&mut self.identities);
    }

    /// Every customer changed or removed since the last drain, once each: its changelog
    /// record, or a tombstone if the profile is gone. Tombstones first, then records in the
    /// order first changed.
    pub(super) fn drain(
        &mut self,
        profiles: &mut Profiles,
        codec: &Codec,
        symbols: &Symbols,
        out: &mut Vec<StateChange>,
    ) {
        let mut buf = Vec::new();
        for (id, shard) in std::mem::take(&mut self.removed) {
            if !profiles.contains_key(&id) {
                out.push(StateChange {
                    customer_id: id,
                    shard,
                    record: None,
                });
            }
        }
        for id in std::mem::take(&mut self.changed) {
            let Some(p) = profiles.get_mut(&id) else {
                continue;
            };
            if !p.dirty {
                continue;
            }
            p.dirty = false;
            buf.clear();
            codec.encode(symbols, p, &mut buf);
            out.push(StateChange {
                customer_id: id,
                shard: p.shard,
                record: Some(buf.clone()),
            });
        }
    }

    /// Forgets what was collected for shards `keep` refuses (their profiles were dropped
    /// from `profiles`; `dropped` says whether any were).
    pub(super) fn retain_shards(
        &mut self,
        profiles: &Profiles,
        keep: &dyn Fn(u16) -> bool,
        dropped: bool,
    ) {
        if dropped {
            self.changed.retain(|id| profiles.contains_key(id));
        }
        self.removed.retain(|(_, s)| keep(*s));
        self.identities.retain(|c| keep(c.shard));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::compile::Definitions;

    fn codec(symbols: &mut Symbols) -> Codec {
        let text = "[segments.buyer]\ncondition = 'count(purchase, 1d) >= 1'\n";
        let defs = Definitions::from_source("test.toml", text, symbols)
            .unwrap_or_else(|d| panic!("definitions should compile: {d:?}"));
        Codec::new(&defs)
    }

    fn profile(shard: u16, sequence: u32) -> Profile {
        let mut p = Profile::new();
        p.shard = shard;
        p.sequence = sequence;
        p
    }

    fn record(codec: &Codec, symbols: &Symbols, p: &Profile) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        codec.encode(symbols, p, &mut buf);
        Some(buf)
    }

    #[test]
    fn disabled_collects_nothing() {
        let mut symbols = Symbols::new();
        let codec = codec(&mut symbols);
        let mut t = ChangeTracker::default();
        let mut profiles = Profiles::new();
        let id: Arc<str> = Arc::from("a");
        let mut p = profile(0, 1);
        t.touch(&mut p, &id);
        assert!(!p.dirty);
        profiles.insert(&id, p);
        t.remove(&Arc::from("gone"), 0);
        let mut out = Vec::new();
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn touch_lists_a_profile_once_per_drain() {
        let mut symbols = Symbols::new();
        let codec = codec(&mut symbols);
        let mut t = ChangeTracker::default();
        t.enable();
        let mut profiles = Profiles::new();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        profiles.insert(&b, profile(2, 5));
        profiles.insert(&a, profile(1, 7));
        for id in [&b, &a, &b, &a] {
            let p = profiles.get_mut(id).unwrap();
            t.touch(p, id);
            assert!(p.dirty);
        }
        let mut out = Vec::new();
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        let expected = vec![
            StateChange {
                customer_id: b.clone(),
                shard: 2,
                record: record(&codec, &symbols, profiles.get(&b).unwrap()),
            },
            StateChange {
                customer_id: a.clone(),
                shard: 1,
                record: record(&codec, &symbols, profiles.get(&a).unwrap()),
            },
        ];
        assert_eq!(out, expected, "in the order first changed, once each");
        assert!(profiles.values().all(|p| !p.dirty));
        out.clear();
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        assert!(out.is_empty(), "nothing changed since");
        let p = profiles.get_mut(&a).unwrap();
        t.touch(p, &a);
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        assert_eq!(out.len(), 1, "listed again after a drain");
    }

    #[test]
    fn removed_profiles_become_tombstones_unless_back() {
        let mut symbols = Symbols::new();
        let codec = codec(&mut symbols);
        let mut t = ChangeTracker::default();
        t.enable();
        let mut profiles = Profiles::new();
        let (gone, back): (Arc<str>, Arc<str>) = (Arc::from("gone"), Arc::from("back"));
        // `back` changed, was removed, and came back (a new profile, not dirty yet).
        let mut p = profile(3, 1);
        t.touch(&mut p, &back);
        t.remove(&back, 3);
        t.remove(&gone, 4);
        profiles.insert(&back, profile(3, 0));
        let mut out = Vec::new();
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        let tombstone = StateChange {
            customer_id: gone,
            shard: 4,
            record: None,
        };
        assert_eq!(
            out,
            [tombstone],
            "`back` is present and not dirty: no entry"
        );
    }

    #[test]
    fn retain_shards_forgets_dropped_profiles() {
        let mut symbols = Symbols::new();
        let codec = codec(&mut symbols);
        let mut t = ChangeTracker::default();
        t.enable();
        let mut profiles = Profiles::new();
        for (name, shard) in [("a", 1), ("b", 2)] {
            let id: Arc<str> = Arc::from(name);
            let mut p = profile(shard, 1);
            t.touch(&mut p, &id);
            profiles.insert(&id, p);
        }
        t.remove(&Arc::from("c"), 1);
        t.remove(&Arc::from("d"), 2);
        profiles.retain(|_, p| p.shard != 2);
        t.retain_shards(&profiles, &|s| s != 2, true);
        let mut out = Vec::new();
        t.drain(&mut profiles, &codec, &symbols, &mut out);
        let ids: Vec<&str> = out.iter().map(|c| &*c.customer_id).collect();
        assert_eq!(ids, ["c", "a"]);
        assert!(out[0].record.is_none() && out[1].record.is_some());
    }
}
