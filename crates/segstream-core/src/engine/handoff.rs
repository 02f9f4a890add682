//! Persons across shards. With the persons topic partitioned over instances, the two ids a
//! link joins can live in shards of different instances: every id has a *home* shard (the
//! partition its events are keyed to, [`super::identity::home`]), and a person lives in
//! the home shard of its canonical id. A merge then takes three steps, each a message on
//! the persons topic (the service writes and reads them; the engine decides):
//!
//! 1. The shard where the linking event is applied asks the absorbed id's home shard for it
//!    ([`Handoff::MergeRequest`]).
//! 2. The absorbed id's home shard takes the id's person out: its profile exits its
//!    segments (cause `merge:<survivor>`), the id (and the ids that point to it) now point to
//!    the survivor, and the profile goes to the survivor's shard ([`Handoff::Transfer`]).
//!    An event of the absorbed id that arrives later is forwarded there ([`Route::Forward`]).
//! 3. The survivor's shard merges the profile into the survivor's (exactly as if every event
//!    had been recorded under one id) and evaluates the survivor (cause `merge:<survivor>`).
//!
//! Each step is idempotent (a message delivered twice after a crash changes nothing the
//! second time), so at-least-once delivery of the messages keeps the state exact.

use std::sync::Arc;

use super::identity::{home, Refusal};
use super::Engine;
use crate::changelog::DecodeError;
use crate::event::{Event, EventError, EventKind};
use crate::time::Millis;
use crate::transition::{Cause, Transition};

/// A message from one shard to another (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub enum Handoff {
    /// To the home shard of `absorbed`: hand its person over to `survivor`.
    MergeRequest(MergeRequest),
    /// To the survivor's shard: the absorbed person's profile and ids.
    Transfer(Transfer),
    /// To the home shard of `id`: the id's person is gone (forgotten, expired, evicted):
    /// forget where the id points.
    ForgetId { id: Arc<str>, shard: u16 },
    /// To the survivor's shard: its merge request ended without a transfer (refused, or
    /// done before): the events it holds go on.
    Release { survivor: Arc<str>, shard: u16 },
}

impl Handoff {
    /// The shard the message goes to.
    pub fn shard(&self) -> u16 {
        match self {
            Handoff::MergeRequest(r) => r.shard,
            Handoff::Transfer(t) => t.shard,
            Handoff::ForgetId { shard, .. } => *shard,
            Handoff::Release { shard, .. } => *shard,
        }
    }
}

/// Step 1 of a merge across shards.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeRequest {
    /// The id whose person joins the survivor (its canonical id as the requester saw it).
    pub absorbed: Arc<str>,
    /// The surviving person's canonical id.
    pub survivor: Arc<str>,
    /// How many ids the survivor has (for the `max_ids` guard).
    pub survivor_ids: usize,
    /// Whether the survivor is known (a known person never joins an anonymous one).
    pub survivor_known: bool,
    /// The survivor's shard (where the transfer goes).
    pub survivor_shard: u16,
    /// The linking event's time.
    pub at: Millis,
    /// The shard the request goes to: the absorbed id's home.
    pub shard: u16,
    /// Turned around by the other person's shard, which survives: hand over.
    pub turned: bool,
    /// Sent by an instance that merged both persons itself, to the absorbed person's shard:
    /// the merge is done, but a crash between the two shards' position markers can restore
    /// the absorbed profile there (see [`Engine::accept_merge_request`]).
    pub cleanup: bool,
}

/// Step 2 of a merge across shards: the absorbed person.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub survivor: Arc<str>,
    /// The absorbed person's canonical id.
    pub from: Arc<str>,
    /// Every id of the absorbed person (`from` first).
    pub ids: Vec<Arc<str>>,
    /// Its profile as a changelog record (`None`: it had none, only ids).
    pub record: Option<Vec<u8>>,
    /// Whether the survivor is known (its linking event carries its customer id), even
    /// if it has no profile yet.
    pub survivor_known: bool,
    /// The linking event's time.
    pub at: Millis,
    /// The survivor's shard.
    pub shard: u16,
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Its person lives in this instance: apply it.
    Apply,
    /// Its person lives in another shard of another instance: forward it there.
    Forward { canonical: Arc<str>, shard: u16 },
    /// Its person is being merged with a person of another instance: hold it (and every
    /// later event of the person) until [`Engine::drain_released`] names the person, then
    /// route it again. The event that links the two persons is held too, so that it and
    /// what follows are applied to the merged profile, as if every event had been
    /// recorded under one id.
    Hold { person: Arc<str> },
}

/// What a merge request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Handed {
    /// The person was handed over (a transfer is in the outbox).
    Transferred,
    /// Asked again after a crash: it was handed over before.
    Already,
    /// The request went on to another shard: the id had joined another person meanwhile,
    /// or the person here is known and the survivor is not (the survivor's shard is asked
    /// to hand over its person instead).
    Forwarded,
    /// Refused: the merged person would have too many ids.
    Refused(Refusal),
}

/// A request that hops more than a few times within one instance: the identity map holds a
/// cycle, which merges never create.
fn warn_loop() {
    debug_assert!(false, "a merge request looped within one instance");
}

impl Engine {
    /// Declares how many partitions the persons topic has: from now on every id has a
    /// home shard, and links to ids homed in shards this instance does not own go through
    /// [`Handoff`]s. The service calls it once at start-up.
    pub fn with_partitions(mut self, partitions: u16) -> Self {
        self.set_partitions(partitions);
        self
    }

    /// [`Engine::with_partitions`] on an engine in place.
    pub fn set_partitions(&mut self, partitions: u16) {
        self.partitions = Some(partitions.max(1));
    }

    /// Declares which shards this instance owns now (assignment, revocation).
    pub fn own_shards(&mut self, shards: impl IntoIterator<Item = u16>) {
        self.owned = shards.into_iter().collect();
    }

    /// The shard a person with canonical id `canonical` lives in: its home shard when ids
    /// are distributed, else `fallback` (the shard its events arrive on).
    pub(super) fn person_shard(&self, canonical: &str, fallback: u16) -> u16 {
        match self.partitions {
            Some(n) => home(canonical, n),
            None => fallback,
        }
    }

    /// Whether the person with canonical id `canonical` lives in this instance.
    pub(super) fn is_local(&self, canonical: &str) -> bool {
        match self.partitions {
            Some(n) => self.owned.contains(&home(canonical, n)),
            None => true,
        }
    }

    /// Where an event goes: applied here if its person lives in this instance, forwarded
    /// to the shard of its canonical id if not, held while its person is being merged
    /// with a person of another instance. An event that links its person to a person of
    /// another instance starts that merge (a [`Handoff::MergeRequest`]) and is held.
    pub fn route(&mut self, event: &Event<'_>) -> Result<Route, EventError> {
        let resolved = self.resolve(event)?;
        let canonical = resolved.person.as_str();
        if !self.is_local(canonical) {
            let shard = self.person_shard(canonical, 0);
            return Ok(Route::Forward {
                canonical: Arc::from(canonical),
                shard,
            });
        }
        if self.waiting.contains(canonical) {
            return Ok(Route::Hold {
                person: Arc::from(canonical),
            });
        }
        let Some(other) = resolved.linked else {
            return Ok(Route::Apply);
        };
        if event.kind == EventKind::Forget {
            return Ok(Route::Apply);
        }
        let other_person = self.identities.canonical(other);
        if other_person != canonical && self.waiting.contains(other_person) {
            // The other person waits for a merge of its own: this one waits for it (the
            // link is applied after the other's held events).
            let person: Arc<str> = Arc::from(canonical);
            let other_person: Arc<str> = Arc::from(other_person);
            self.waiting.insert(person.clone());
            self.dependents
                .entry(other_person)
                .or_default()
                .push(person.clone());
            return Ok(Route::Hold { person });
        }
        if other_person == canonical
            || self.is_local(other_person)
            || self
                .identities
                .check_merge(canonical, other_person)
                .is_err()
        {
            // One person already, a merge within this instance, or a refusal: `apply`.
            return Ok(Route::Apply);
        }
        // The other person's shard decides who survives (it knows whether its person is
        // known): it hands its person over, or turns the request around.
        let survivor: Arc<str> = Arc::from(canonical);
        let survivor_known = self.profiles.get(canonical).map_or_else(
            || event.customer_id.as_deref() == Some(canonical),
            |p| p.known,
        );
        let absorbed: Arc<str> = Arc::from(other_person);
        let survivor_shard = self.person_shard(&survivor, 0);
        self.handoffs.push(Handoff::MergeRequest(MergeRequest {
            shard: self.person_shard(&absorbed, 0),
            survivor_ids: self.identities.count(&survivor),
            survivor_known,
            survivor_shard,
            absorbed,
            survivor: survivor.clone(),
            at: event.timestamp,
            turned: false,
            cleanup: false,
        }));
        self.waiting.insert(survivor.clone());
        Ok(Route::Hold { person: survivor })
    }

    /// The persons whose merges ended since the last drain: the events held for them go
    /// on (route them again, in the order they came).
    pub fn drain_released(&mut self, out: &mut Vec<Arc<str>>) {
        out.append(&mut self.released);
    }

    /// How many persons wait for a merge with a person of another instance.
    pub fn waiting_persons(&self) -> usize {
        self.waiting.len()
    }

    /// Ends `person`'s wait, if it waits (its held events go on), and then the waits of
    /// the persons that waited for it.
    pub(super) fn release(&mut self, person: &Arc<str>) {
        if self.waiting.remove(person) {
            self.released.push(person.clone());
        }
        if let Some(dependents) = self.dependents.remove(person) {
            for d in dependents {
                self.release(&d);
            }
        }
    }

    /// Tells the survivor of `req` that its request ended without a transfer.
    fn release_requester(&mut self, req: &MergeRequest) {
        if self.is_local(&req.survivor) {
            self.release(&req.survivor);
        } else {
            self.handoffs.push(Handoff::Release {
                survivor: req.survivor.clone(),
                shard: req.survivor_shard,
            });
        }
        // A turned-around request that ends here: the person here waited for it.
        self.release(&req.absorbed);
    }

    /// A [`Handoff::Release`] for a person of this shard.
    pub fn accept_release(&mut self, survivor: &str) {
        let survivor = Arc::from(survivor);
        self.release(&survivor);
    }

    /// Every message for another shard since the last drain, in order.
    pub fn drain_handoffs(&mut self, out: &mut Vec<Handoff>) {
        out.append(&mut self.handoffs);
    }

    /// Step 2, in the home shard of `req.absorbed`. When the id has joined another person
    /// meanwhile, the request follows it there (that person is the one to merge); when the
    /// person here is known and the survivor is not, the request turns around (a known
    /// person never joins an anonymous one: the survivor's shard is asked to hand its
    /// person over instead).
    pub fn accept_merge_request(
        &mut self,
        mut req: MergeRequest,
        out: &mut Vec<Transition>,
    ) -> Handed {
        if req.cleanup {
            self.clean_up_after_merge(&req, out);
            return Handed::Already;
        }
        // Hops within this instance are taken at once; a bounded number, since each
        // follows the identity map towards a canonical id or turns around once.
        for _ in 0..8 {
            let current = Arc::<str>::from(self.identities.canonical(&req.absorbed));
            if current == req.survivor {
                self.release_requester(&req);
                return Handed::Already;
            }
            if current != req.absorbed {
                // The id joined `current`'s person: that person merges with the survivor
                // (whose shard decides anew who survives).
                req.absorbed = current.clone();
                req.turned = false;
                req.shard = self.person_shard(&current, req.shard);
                if self.is_local(&current) {
                    continue;
                }
                self.handoffs.push(Handoff::MergeRequest(req));
                return Handed::Forwarded;
            }
            let would_have = self.identities.count(&req.absorbed) + req.survivor_ids;
            if would_have > self.config.identity.max_ids {
                self.stats.links_refused_too_many += 1;
                self.release_requester(&req);
                return Handed::Refused(Refusal::TooManyIds {
                    would_have,
                    max: self.config.identity.max_ids,
                });
            }
            let absorbed_known = self.profiles.get(&*req.absorbed).is_some_and(|p| p.known);
            if !req.turned
                && super::persons::survives(
                    absorbed_known,
                    &req.absorbed,
                    req.survivor_known,
                    &req.survivor,
                )
            {
                // Turn around: the requester's person joins this one.
                let here = self.person_shard(&req.absorbed, req.shard);
                req = MergeRequest {
                    shard: self.person_shard(&req.survivor, req.survivor_shard),
                    absorbed: req.survivor,
                    survivor_ids: self.identities.count(&req.absorbed),
                    survivor_known: absorbed_known,
                    survivor_shard: here,
                    survivor: req.absorbed,
                    at: req.at,
                    turned: true,
                    cleanup: false,
                };
                if self.is_local(&req.absorbed) {
                    continue;
                }
                self.handoffs.push(Handoff::MergeRequest(req));
                return Handed::Forwarded;
            }
            self.hand_over(req, out);
            return Handed::Transferred;
        }
        warn_loop();
        self.release_requester(&req);
        Handed::Already
    }

    /// A cleanup request (see [`MergeRequest::cleanup`]): normally the absorbed profile is
    /// gone and nothing happens. If it is here again (its shard was restored from before
    /// the merge, the survivor's from after it), it is dropped when this instance knows the
    /// link (the survivor's restored record holds its history), or handed over as in any
    /// merge when it does not (the survivor's shard recognises a transfer it merged before).
    fn clean_up_after_merge(&mut self, req: &MergeRequest, out: &mut Vec<Transition>) {
        let Some(shard) = self.profiles.get(&*req.absorbed).map(|p| p.shard) else {
            return;
        };
        if self.identities.canonical(&req.absorbed) == &*req.survivor {
            self.profiles.remove(&*req.absorbed);
            self.changes.remove(&req.absorbed, shard);
            return;
        }
        if self.identities.canonical(&req.absorbed) == &*req.absorbed {
            let mut req = req.clone();
            req.cleanup = false;
            req.turned = true;
            self.hand_over(req, out);
        }
    }

    /// Takes the person `req.absorbed` (canonical, living here) out and sends it to the
    /// survivor's shard, or merges it here when the survivor lives here too.
    fn hand_over(&mut self, req: MergeRequest, out: &mut Vec<Transition>) {
        self.catch_up(
            &super::persons::Person::Owned(req.absorbed.clone()),
            req.at,
            out,
        );
        let cause = Cause::Merge(req.survivor.clone());
        let mut gone = None;
        if let Some((id, mut profile)) = self.profiles.remove_entry(&*req.absorbed) {
            let when = profile.clock.max(req.at);
            let (_, mut ev) = self.split();
            ev.exit_all(&mut profile, &id, when, cause, out);
            ev.changes.remove(&id, profile.shard);
            gone = Some(profile);
        }
        let ids = self.identities.remove(&req.absorbed);
        self.stats.merges += 1;
        // A person that waited for a merge of its own joins another: its held events go on
        // (to the survivor).
        self.release(&req.absorbed);
        if self.is_local(&req.survivor) {
            let shard = self.person_shard(&req.survivor, req.survivor_shard);
            self.catch_up(
                &super::persons::Person::Owned(req.survivor.clone()),
                req.at,
                out,
            );
            self.absorb(
                shard,
                &req.survivor,
                &ids,
                gone,
                req.survivor_known,
                req.at,
                out,
            );
            self.release(&req.survivor);
            return;
        }
        for id in &ids {
            // Here, every id of the person points to the survivor (events of them are
            // forwarded); in the changelog, each id's home (when it is one of this
            // instance's shards) says so. An id homed elsewhere keeps pointing to the
            // absorbed id, whose home forwards: the chain ends at the survivor.
            self.identities.restore(id.clone(), req.survivor.clone());
            let home = self.person_shard(id, req.shard);
            if self.owned.contains(&home) {
                self.changes
                    .identity(id.clone(), Some(req.survivor.clone()), home);
            }
        }
        let record = gone.map(|profile| {
            let mut buf = Vec::new();
            self.codec.encode(&self.symbols, &profile, &mut buf);
            buf
        });
        self.handoffs.push(Handoff::Transfer(Transfer {
            survivor: req.survivor,
            from: req.absorbed,
            ids,
            record,
            survivor_known: req.survivor_known,
            at: req.at,
            shard: req.survivor_shard,
        }));
    }

    /// Step 3, in the survivor's shard: merges the transferred person.
    pub fn accept_transfer(
        &mut self,
        t: Transfer,
        out: &mut Vec<Transition>,
    ) -> Result<(), DecodeError> {
        let current = Arc::<str>::from(self.identities.canonical(&t.survivor));
        if t.from != current
            && self.identities.canonical(&t.from) == &*current
            && self.identities.others(&current).contains(&t.from)
        {
            // Delivered again after a crash: merged before.
            self.release(&current);
            return Ok(());
        }
        if current != t.survivor {
            // The survivor joined another person meanwhile: the transfer follows it. The
            // transferred ids point there from here too (events of them that other
            // instances send to the survivor's home find their person from here).
            self.release(&t.survivor);
            let here = self.person_shard(&t.survivor, t.shard);
            let mut t = t;
            t.shard = self.person_shard(&current, t.shard);
            t.survivor = current.clone();
            if self.is_local(&current) {
                return self.accept_transfer(t, out);
            }
            for id in &t.ids {
                self.identities.restore(id.clone(), current.clone());
                if self.owned.contains(&here) {
                    self.changes
                        .identity(id.clone(), Some(current.clone()), here);
                }
            }
            self.handoffs.push(Handoff::Transfer(t));
            return Ok(());
        }
        let gone = match &t.record {
            Some(bytes) => {
                let decoded = self
                    .codec
                    .parse(bytes)
                    .and_then(|parsed| self.codec.finish(&mut self.symbols, parsed));
                match decoded {
                    Ok(d) => Some(d.profile),
                    Err(e) => {
                        // Not merged (the caller keeps the record); the held events go on.
                        self.release(&t.survivor);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let shard = self.person_shard(&t.survivor, t.shard);
        self.catch_up(
            &super::persons::Person::Owned(t.survivor.clone()),
            t.at,
            out,
        );
        self.absorb(
            shard,
            &t.survivor,
            &t.ids,
            gone,
            t.survivor_known,
            t.at,
            out,
        );
        self.release(&t.survivor);
        Ok(())
    }

    /// A forget for an id homed here: it points nowhere any more.
    pub fn accept_forget_id(&mut self, id: &str) {
        let shard = self.person_shard(id, 0);
        self.identities.remove_id(id);
        self.changes.identity(Arc::from(id), None, shard);
    }
}
