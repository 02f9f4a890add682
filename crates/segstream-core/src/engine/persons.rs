//! Persons: resolving an event's ids to the person it belongs to, merging two persons when
//! a link joins them, and removing a person with every one of its ids.
//!
//! A merge happens at the linking event's time, before the event itself is applied: both
//! profiles are first caught up with time (their due timers fire), then the absorbed
//! person's profile exits its segments (cause `merge:<survivor>`), its state is merged into
//! the survivor's exactly as if every event had been recorded under one id
//! ([`crate::profile::merge`]), and the survivor is evaluated against every segment with
//! the same cause. The event is then applied to the merged profile as usual.

use std::sync::Arc;

use crate::event::{Event, EventError, EventKind, RejectReason};
use crate::profile::{millis, Profile};
use crate::time::Millis;
use crate::transition::{Cause, Transition};

use super::evaluate::{Schedule, Select, Trigger};
use super::handoff::Handoff;
use super::identity::Refusal;
use super::Engine;

/// What applying an event did besides updating its person's profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub link: Link,
}

/// The identity side of an applied event.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Link {
    /// The event carried one id (or its second id was already the same person's).
    #[default]
    None,
    /// Two persons were merged: `absorbed` (every id that changed person) now belongs to
    /// `survivor`.
    Merged {
        survivor: Arc<str>,
        absorbed: Vec<Arc<str>>,
    },
    /// The event's second id was not linked (the event itself was applied).
    Refused(Refusal),
    /// The other id's person lives in another instance: its home shard was asked for it
    /// (the merge completes when its profile arrives).
    Requested { absorbed: Arc<str> },
}

/// A person's canonical id: borrowed from the event (the common case: the event's own id is
/// canonical) or owned (an id that belongs to another person).
#[derive(Debug, Clone)]
pub(super) enum Person<'e> {
    Event(&'e str),
    Owned(Arc<str>),
}

impl Person<'_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Person::Event(s) => s,
            Person::Owned(s) => s,
        }
    }

    fn arc(&self) -> Arc<str> {
        match self {
            Person::Event(s) => Arc::from(*s),
            Person::Owned(s) => s.clone(),
        }
    }
}

/// An event's ids, resolved.
pub(super) struct Resolved<'e> {
    /// The person the event belongs to.
    pub person: Person<'e>,
    /// The id it links to that person, if any (not blocked).
    pub linked: Option<&'e str>,
    /// A link the event asked for but may not have: a blocked id.
    pub refused: Option<Refusal>,
}

/// Whether person `a` survives a merge with person `b`: the known one survives; between
/// two known or two anonymous persons, the one whose canonical id sorts first (byte
/// order). A total order, so that two instances that see the same link from its two sides
/// decide alike (a merge never goes round in circles).
pub fn survives(a_known: bool, a: &str, b_known: bool, b: &str) -> bool {
    if a_known != b_known {
        a_known
    } else {
        a < b
    }
}

impl Engine {
    /// The person an event belongs to and the id it links, with blocked ids left out. An
    /// event whose every id is blocked is rejected.
    pub(super) fn resolve<'e>(&self, event: &'e Event<'_>) -> Result<Resolved<'e>, EventError> {
        let ids = &self.identities;
        let customer = event.customer_id.as_deref();
        let anonymous = event.anonymous_id.as_deref();
        let Some(subject) = ids.blocklist().subject(event) else {
            return Err(EventError::new(
                RejectReason::InvalidValue,
                format!(
                    "every id of the event is blocked (engine.identity.blocked_ids): {}",
                    customer
                        .into_iter()
                        .chain(anonymous)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let wanted: Option<&'e str> = if event.kind == EventKind::Alias {
            event.previous_id.as_deref()
        } else if Some(subject) == customer {
            anonymous
        } else {
            // The customer id was blocked: it cannot be linked.
            customer
        };
        let (linked, refused) = match wanted {
            Some(w) if ids.is_blocked(w) => (None, Some(Refusal::Blocked(w.to_string()))),
            w => (w, None),
        };
        let person = match ids.canonical(subject) {
            c if c == subject => Person::Event(subject),
            c => Person::Owned(Arc::from(c)),
        };
        Ok(Resolved {
            person,
            linked,
            refused,
        })
    }

    /// Links `other` to `person`: nothing if they are one person already, a refusal if the
    /// limit forbids it, otherwise a merge. `person` becomes the survivor.
    pub(super) fn link(
        &mut self,
        shard: u16,
        person: &mut Person<'_>,
        other: &str,
        event: &Event<'_>,
        out: &mut Vec<Transition>,
    ) -> Link {
        self.stats.links += 1;
        let other_person = Arc::<str>::from(self.identities.canonical(other));
        if &*other_person == person.as_str() {
            return Link::None;
        }
        if let Err(refusal) = self.identities.check_merge(person.as_str(), &other_person) {
            match refusal {
                Refusal::Blocked(_) => self.stats.links_refused_blocked += 1,
                Refusal::TooManyIds { .. } => self.stats.links_refused_too_many += 1,
            }
            return Link::Refused(refusal);
        }
        let subject_known = self.profiles.get(person.as_str()).map_or_else(
            || event.customer_id.as_deref() == Some(person.as_str()),
            |p| p.known,
        );
        if !self.is_local(&other_person) {
            // The other person lives in another instance's shard (an event applied without
            // `route`, which would have held it): ask its home for it; that shard decides
            // who survives. The event is applied to the person here meanwhile.
            let survivor = person.arc();
            let request = super::handoff::MergeRequest {
                shard: self.person_shard(&other_person, shard),
                survivor_ids: self.identities.count(&survivor),
                survivor_known: subject_known,
                survivor_shard: self.person_shard(&survivor, shard),
                absorbed: other_person.clone(),
                survivor,
                at: event.timestamp,
                turned: false,
                cleanup: false,
            };
            self.handoffs
                .push(super::handoff::Handoff::MergeRequest(request));
            return Link::Requested {
                absorbed: other_person,
            };
        }
        // The known person survives; between two known or two anonymous persons, the one
        // whose id sorts first ([`survives`]: every instance decides alike).
        let other_known = self.profiles.get(&*other_person).is_some_and(|p| p.known);
        let (survivor, absorbed, survivor_known) =
            if survives(other_known, &other_person, subject_known, person.as_str()) {
                (other_person, person.arc(), other_known)
            } else {
                (person.arc(), other_person, subject_known)
            };
        *person = Person::Owned(survivor.clone());
        self.catch_up(&Person::Owned(survivor.clone()), event.timestamp, out);
        self.catch_up(&Person::Owned(absorbed.clone()), event.timestamp, out);
        let moved = self.merge_persons(
            shard,
            &survivor,
            &absorbed,
            survivor_known,
            event.timestamp,
            out,
        );
        self.stats.merges += 1;
        Link::Merged {
            survivor,
            absorbed: moved,
        }
    }

    /// Merges the person `absorbed` into `survivor` at `at`, both in this instance. Returns
    /// the ids that changed person.
    fn merge_persons(
        &mut self,
        shard: u16,
        survivor: &Arc<str>,
        absorbed: &Arc<str>,
        survivor_known: bool,
        at: Millis,
        out: &mut Vec<Transition>,
    ) -> Vec<Arc<str>> {
        let mut gone = self.profiles.remove(absorbed);
        if let Some(g) = gone.as_mut() {
            let when = g.clock.max(at);
            let (_, mut ev) = self.split();
            ev.exit_all(g, absorbed, when, Cause::Merge(survivor.clone()), out);
            ev.changes.remove(absorbed, g.shard);
        }
        let ids = self.identities.remove(absorbed);
        // A person that waited for a merge of its own joins this one: its held events go on.
        self.release(absorbed);
        let survivor_shard = self.person_shard(survivor, shard);
        if let (Some(g), Some(_)) = (&gone, self.partitions) {
            if g.shard != survivor_shard {
                // Two shards changed in one batch; their position markers are separate
                // records: tell the absorbed profile's shard through its own input.
                self.handoffs
                    .push(Handoff::MergeRequest(super::handoff::MergeRequest {
                        absorbed: absorbed.clone(),
                        survivor: survivor.clone(),
                        survivor_ids: 0,
                        survivor_known,
                        survivor_shard,
                        at,
                        shard: g.shard,
                        turned: true,
                        cleanup: true,
                    }));
            }
        }
        self.absorb(
            survivor_shard,
            survivor,
            &ids,
            gone,
            survivor_known,
            at,
            out,
        );
        ids
    }

    /// The survivor's side of a merge: the absorbed person's `ids` point to `survivor` from
    /// now on (changelog entries in the survivor's shard, and in each id's home shard when it
    /// is another one of this instance's), its profile `gone` (if it had one) is merged into
    /// the survivor's, and the survivor is evaluated against every segment (cause
    /// `merge:<survivor>`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn absorb(
        &mut self,
        shard: u16,
        survivor: &Arc<str>,
        ids: &[Arc<str>],
        gone: Option<Profile>,
        survivor_known: bool,
        at: Millis,
        out: &mut Vec<Transition>,
    ) {
        for id in ids.iter().filter(|id| *id != survivor) {
            self.identities.restore(id.clone(), survivor.clone());
            self.changes
                .identity(id.clone(), Some(survivor.clone()), shard);
            let home = self.person_shard(id, shard);
            if home != shard && self.owned.contains(&home) {
                self.changes
                    .identity(id.clone(), Some(survivor.clone()), home);
            }
        }
        let cause = Cause::Merge(survivor.clone());
        let features = super::apply::feature_merges(&self.defs);
        let half_life = self.defs.scoring.half_life;
        let (profiles, mut ev) = self.split();
        let (slot, fresh) = profiles.slot_or_insert(survivor);
        let (id, profile) = profiles.slot_mut(slot);
        if fresh {
            profile.shard = shard;
        }
        if let Some(g) = &gone {
            crate::profile::merge(profile, g, &features, half_life, at);
            profile.known |= g.known;
        }
        profile.known |= survivor_known;
        let now = profile.clock.max(at);
        profile.clock = now;
        ev.changes.touch(profile, id);
        ev.evaluate(
            profile,
            id,
            now,
            Select::All,
            Trigger::Given(&cause),
            Schedule::Replace,
            out,
        );
    }

    /// Fires the person's timers due at or before `t` (its history is complete up to `t`
    /// before anything happens to it at `t`).
    pub(super) fn catch_up(&mut self, person: &Person<'_>, t: Millis, out: &mut Vec<Transition>) {
        while let Some((id, due)) = self
            .profiles
            .get_key_value(person.as_str())
            .filter(|(_, p)| p.timer_at != 0 && millis(p.timer_at) <= t)
            .map(|(k, p)| (Arc::<str>::from(k), millis(p.timer_at)))
        {
            self.fire_customer(&id, due, out);
        }
    }

    /// Removes a person: its profile exits every segment with `cause` (at its clock, or
    /// `at_least`), and every one of its ids is erased, with tombstones for the changelog.
    /// Returns its ids and the time of the exits, or `None` if it had no profile.
    pub(super) fn remove_person(
        &mut self,
        canonical: &str,
        at_least: Millis,
        cause: Cause,
        out: &mut Vec<Transition>,
    ) -> Option<(Vec<Arc<str>>, Millis)> {
        let (id, mut profile) = self.profiles.remove_entry(canonical)?;
        // Held events of a removed person go on (they start it afresh, or are late).
        self.release(&id);
        let at = profile.clock.max(at_least);
        let (_, mut ev) = self.split();
        ev.exit_all(&mut profile, &id, at, cause, out);
        ev.changes.remove(&id, profile.shard);
        let ids = self.forget_ids(&id, profile.shard);
        Some((ids, at))
    }

    /// Erases a removed person's ids from the identity map (tombstones for the changelog;
    /// an id homed in another instance's shard is told by a [`Handoff::ForgetId`]).
    pub(super) fn forget_ids(&mut self, canonical: &Arc<str>, shard: u16) -> Vec<Arc<str>> {
        let ids = self.identities.remove(canonical);
        for id in ids.iter().skip(1) {
            self.changes.identity(id.clone(), None, shard);
            let home = self.person_shard(id, shard);
            if home != shard {
                if self.owned.contains(&home) {
                    self.changes.identity(id.clone(), None, home);
                } else {
                    self.handoffs.push(Handoff::ForgetId {
                        id: id.clone(),
                        shard: home,
                    });
                }
            }
        }
        ids
    }
}
