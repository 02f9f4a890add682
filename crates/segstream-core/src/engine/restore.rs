//! The engine's side of the changelog: draining changed profiles as records, restoring
//! records (and tombstones) into shards, and dropping the shards another instance owns now.

use std::sync::Arc;

use super::evaluate::{Schedule, Select, Trigger};
use super::{Engine, IdentityChange, StateChange};
use crate::changelog::{Codec, DecodeError, Parsed};
use crate::profile::millis;
use crate::transition::{Cause, Transition};

impl Engine {
    /// Every customer changed or removed since the last drain, once each: its changelog
    /// record, or a tombstone if the profile is gone. In the order first changed.
    pub fn drain_changes(&mut self, out: &mut Vec<StateChange>) {
        self.changes
            .drain(&mut self.profiles, &self.codec, &self.symbols, out);
    }

    /// Every identity entry changed since the last drain, in order: an id that joined a
    /// person, or (canonical `None`) an id erased with its person.
    pub fn drain_identity_changes(&mut self, out: &mut Vec<IdentityChange>) {
        self.changes.drain_identities(out);
    }

    /// Restores one identity entry: `id` belongs to `canonical` (`None`: to nobody).
    pub fn restore_identity(&mut self, id: &str, canonical: Option<&str>) {
        match canonical {
            Some(c) => self.identities.restore(Arc::from(id), Arc::from(c)),
            None => self.identities.remove_id(id),
        }
    }

    /// Makes room for `additional` more profiles at once (a restore that knows how many
    /// records it will read grows the map once instead of rehashing it again and again).
    pub fn reserve(&mut self, additional: usize) {
        self.profiles.reserve(additional);
    }

    /// Drops, without transitions or tombstones, every profile whose shard `keep` refuses
    /// (a partition moved to another instance). Returns how many were dropped.
    pub fn drop_shards(&mut self, keep: &dyn Fn(u16) -> bool) -> usize {
        let before = self.profiles.len();
        let gone: Vec<Arc<str>> = self
            .profiles
            .iter()
            .filter(|(_, p)| !keep(p.shard))
            .map(|(k, _)| Arc::from(k))
            .collect();
        for id in &gone {
            // The new owner restores the ids with the profiles.
            self.identities.remove(id);
        }
        if let Some(n) = self.partitions {
            // Ids homed in a dropped shard whose person does not live here either.
            self.identities.retain(|id, canonical| {
                keep(super::identity::home(id, n)) || keep(super::identity::home(canonical, n))
            });
            self.owned.retain(|s| keep(*s));
        }
        self.profiles.retain(|_, p| keep(p.shard));
        if let Some(n) = self.partitions {
            // The new owner re-reads the held events and starts their merges again.
            self.waiting
                .retain(|person| keep(super::identity::home(person, n)));
            self.dependents
                .retain(|person, _| keep(super::identity::home(person, n)));
        }
        self.timers.retain_shards(keep);
        let dropped = before - self.profiles.len();
        self.changes
            .retain_shards(&self.profiles, keep, dropped > 0);
        dropped
    }

    /// Restores one changelog entry into `shard`: a record replaces the customer's profile
    /// (with its pending timer), a tombstone (`None`) removes it. A record written under
    /// other definitions is re-evaluated like a reload; its transitions go to `out`.
    pub fn restore_record(
        &mut self,
        shard: u16,
        customer_id: &str,
        record: Option<&[u8]>,
        out: &mut Vec<Transition>,
    ) -> Result<(), DecodeError> {
        let parsed = record.map(|b| self.codec.parse(b)).transpose()?;
        self.restore_parsed(shard, customer_id, parsed, out)
    }

    /// A codec for these definitions, to parse records on another thread
    /// ([`Engine::restore_parsed`] finishes them).
    pub fn codec(&self) -> Codec {
        Codec::new(&self.defs)
    }

    /// [`Engine::restore_record`] for a record already parsed by [`Codec::parse`].
    pub fn restore_parsed(
        &mut self,
        shard: u16,
        customer_id: &str,
        record: Option<Parsed>,
        out: &mut Vec<Transition>,
    ) -> Result<(), DecodeError> {
        let Some(parsed) = record else {
            self.profiles.remove(customer_id);
            return Ok(());
        };
        let decoded = self.codec.finish(&mut self.symbols, parsed)?;
        let mut profile = decoded.profile;
        profile.shard = shard;
        let timer_at = profile.timer_at;
        // One hash of the id: replace in place, or insert with a new key.
        let (slot, _) = self.profiles.slot_or_insert(customer_id);
        *self.profiles.slot_mut(slot).1 = profile;
        if decoded.same_layout {
            if timer_at != 0 {
                self.timers.push(shard, millis(timer_at), customer_id);
            }
        } else {
            self.settle(customer_id, out);
        }
        Ok(())
    }

    /// Re-evaluates every segment for one customer (a record from other definitions) and
    /// reschedules its timer. Differences are transitions with cause `reload`.
    fn settle(&mut self, id: &str, out: &mut Vec<Transition>) {
        let (profiles, mut ev) = self.split();
        let Some(profile) = profiles.get_mut(id) else {
            return;
        };
        let now = profile.clock;
        let cause = Cause::Reload(ev.defs.version.clone());
        let trigger = Trigger::Given(&cause);
        ev.evaluate(
            profile,
            id,
            now,
            Select::All,
            trigger,
            Schedule::Replace,
            out,
        );
        ev.changes.touch(profile, id);
    }
}
