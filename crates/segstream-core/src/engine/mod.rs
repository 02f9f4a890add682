//! The segment engine: pure, synchronous, I/O-free.
//!
//! It owns the profiles, the compiled definitions and the timers. Callers feed it events
//! (`process` / `apply`) and time (`advance_watermark` / `on_idle`), and collect the
//! [`Transition`]s it pushes into an output vector. The Kafka service, the offline replay
//! and the tests all drive exactly this type.
//!
//! ## Time
//! Event time drives everything. The watermark is the largest event time seen minus the
//! allowed lateness; an event older than the watermark is rejected as late (counted and
//! reported by the caller, never merged). Every customer has at most one pending timer: the
//! earliest moment at which one of its segments could change without a new event (an
//! absence deadline, an event leaving a window, a `since` threshold, score decay, or the
//! profile's TTL). Timers fire when the watermark passes them, or earlier for one customer
//! when that customer's next event is later than the timer (so the result for a customer
//! does not depend on how fast other customers' events arrive). Live operation passes the
//! time in when a shard's input is idle ([`Engine::on_idle`]); the engine never reads a
//! clock.
//!
//! ## Memory
//! With `max_profiles`, the least recently active profiles are evicted (exiting their
//! segments with cause `evicted`) whenever the count goes over it, so a flood of distinct
//! customer ids (a bot, a broken producer) cannot grow memory without bound.
//!
//! ## Parts
//! - `apply`: folding one event into a profile (statistics, traits, features, score);
//! - [`eval`]: conditions, evaluated and timed (when could the value change next);
//! - `evaluate`: the one evaluate-and-emit path that events, timers, restores and reloads
//!   share (select segments, flip memberships, emit transitions, reschedule the timer);
//! - `timers`: each shard's watermark, largest event time and timer heap;
//! - `changes`: the changed and removed profiles a changelog writer drains;
//! - `restore`: the changelog side of the engine (drain, restore, drop shards);
//! - `reload`: replacing the definitions at run time;
//! - `preview`: what a reload with one more (or one changed) segment would give, in chunks;
//! - `evict`: keeping the profile count within `max_profiles`;
//! - [`explain`]: one segment's condition for one person as a tree of values and results.

mod apply;
mod changes;
pub mod eval;
mod evaluate;
mod evict;
pub mod explain;
pub mod handoff;
pub mod identity;
mod persons;
mod preview;
mod profiles;
mod reload;
mod restore;
mod timers;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::changelog::{Codec, DecodeError};
use crate::event::{parse_event, Event, EventError, EventKind, RejectReason};
use crate::profile::{millis, Profile};
use crate::segment::compile::Definitions;
use crate::segment::diagnostic::Diagnostics;
use crate::symbols::Symbols;
use crate::time::{format_duration, format_rfc3339, Millis, DAY, MINUTE, SECOND};
use crate::transition::{Cause, TimerKind, Transition};

pub use changes::{IdentityChange, StateChange};
pub use explain::{
    CauseEntry, ExplainError, Explanation, Kind as ExplainKind, NextChange, Node as ExplainNode,
    OperandValue,
};
pub use handoff::{Handed, Handoff, MergeRequest, Route, Transfer};
pub use identity::{home, Blocklist, IdentityConfig, Refusal};
pub use persons::{Applied, Link};
pub use preview::{Cursor, DefinitionsChanged, Preview, PreviewAnswer, Tally, DEFAULT_SAMPLE};
pub use reload::ReloadReport;

use changes::ChangeTracker;
use eval::Ctx;
use evaluate::{Evaluator, Schedule, Select, Trigger};
use identity::Identities;
use profiles::Profiles;
use timers::Timers;

/// Engine settings (the segment definitions are separate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far behind the latest event time an event may be and still be applied.
    #[serde(with = "crate::time::serde_duration")]
    pub allowed_lateness: Millis,
    /// A profile with no event for this long is evicted (exiting its segments).
    #[serde(with = "crate::time::serde_duration_opt")]
    pub profile_ttl: Option<Millis>,
    /// With idle, caught-up input the watermark follows the clock minus this lag.
    #[serde(with = "crate::time::serde_duration")]
    pub idle_lag: Millis,
    /// An event stamped further ahead of the wall clock than this is rejected
    /// (`future_timestamp`) and never moves event time (`off`: no limit). Checked by the
    /// callers that know the clock, with [`crate::event::check_not_future`].
    #[serde(with = "crate::time::serde_duration_opt")]
    pub max_future_skew: Option<Millis>,
    /// At most this many profiles are kept; beyond it the least recently active are
    /// evicted (exiting their segments with cause `evicted`). `None`: no limit.
    pub max_profiles: Option<usize>,
    /// Identity resolution: the limits that keep one bad id from merging everyone.
    pub identity: IdentityConfig,
    /// Engines (worker threads) per service instance, each owning its share of the
    /// partitions; `None`: one. The engine itself is single-threaded: the
    /// service starts the workers.
    pub workers: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness: default_allowed_lateness(),
            profile_ttl: Some(default_profile_ttl()),
            idle_lag: default_idle_lag(),
            max_future_skew: Some(default_max_future_skew()),
            max_profiles: None,
            identity: IdentityConfig::default(),
            workers: None,
        }
    }
}

/// One hour, as Kafka's own guard (KIP-937, `log.message.timestamp.after.max.ms`).
pub fn default_max_future_skew() -> Millis {
    crate::time::HOUR
}

/// Five minutes: enough for producer retries and partition skew.
pub fn default_allowed_lateness() -> Millis {
    5 * MINUTE
}

/// 400 days: longer than the longest window of the shipped library (365 d).
pub fn default_profile_ttl() -> Millis {
    400 * DAY
}

/// One second: a deadline fires about a second after the wall clock passes it.
pub fn default_idle_lag() -> Millis {
    SECOND
}

/// Counters the engine keeps (the service turns them into metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    pub events_applied: u64,
    pub events_late: u64,
    pub transitions: u64,
    pub timers_fired: u64,
    /// Segment conditions evaluated (the index keeps this far below events x segments).
    pub evaluations: u64,
    pub profiles_forgotten: u64,
    pub profiles_expired: u64,
    /// Profiles evicted to stay within `max_profiles`.
    pub profiles_evicted: u64,
    /// Events that carried a link of two ids (whether or not they were one person yet).
    pub links: u64,
    /// Persons merged into another.
    pub merges: u64,
    /// Links refused: a blocked id.
    pub links_refused_blocked: u64,
    /// Links refused: the person would have too many ids.
    pub links_refused_too_many: u64,
}

/// The segment engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    defs: Arc<Definitions>,
    symbols: Symbols,
    profiles: Profiles,
    /// Event time and timers per shard: a shard's customers are judged late, and their
    /// timers fired, by that shard's own progress (a partition that moves between
    /// instances brings no other partition's time with it).
    timers: Timers,
    /// Customers forgotten recently, with the time of the forget: an older event still in
    /// flight (within the allowed lateness) must not bring the erased history back.
    forgotten: hashbrown::HashMap<Arc<str>, Millis>,
    stats: EngineStats,
    /// Per segment: whether the event being applied can affect it (scratch space).
    affected: Vec<bool>,
    /// Changelog records for the current definitions.
    codec: Codec,
    /// Changed and removed profiles for `drain_changes` (if enabled).
    changes: ChangeTracker,
    /// Which ids belong to one person.
    identities: Identities,
    /// With persons spread over instances: the persons topic's partition count (every id
    /// has a home shard); `None`: every person is local.
    partitions: Option<u16>,
    /// The shards this instance owns (with `partitions`).
    owned: std::collections::BTreeSet<u16>,
    /// Messages for other shards, drained by the service.
    handoffs: Vec<handoff::Handoff>,
    /// Persons waiting for a merge with a person of another instance (their events are
    /// held by the caller meanwhile; see [`Route::Hold`]).
    waiting: std::collections::HashSet<Arc<str>>,
    /// Per waiting person, the persons waiting for it (to link to it afterwards).
    dependents: hashbrown::HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Persons whose wait ended, drained by the caller.
    released: Vec<Arc<str>>,
}

impl Engine {
    /// An engine for definitions compiled against `symbols`.
    pub fn new(defs: Definitions, symbols: Symbols, config: EngineConfig) -> Self {
        let n = defs.segments.len();
        let profiles = Profiles::new();
        Engine {
            symbols,
            timers: Timers::new(profiles.hasher()),
            profiles,
            forgotten: hashbrown::HashMap::new(),
            stats: EngineStats::default(),
            affected: vec![false; n],
            codec: Codec::new(&defs),
            defs: Arc::new(defs),
            changes: ChangeTracker::default(),
            identities: Identities::new(&config.identity),
            partitions: None,
            owned: Default::default(),
            handoffs: Vec::new(),
            waiting: Default::default(),
            dependents: Default::default(),
            released: Vec::new(),
            config,
        }
    }

    /// The same engine, collecting every changed and removed profile for
    /// [`Engine::drain_changes`] (a service that writes a changelog). Without it nothing is
    /// collected (replay, benchmarks).
    pub fn with_change_tracking(mut self) -> Self {
        self.changes.enable();
        self
    }

    /// Compiles a definitions file and builds an engine for it.
    pub fn from_source(file: &str, text: &str, config: EngineConfig) -> Result<Self, Diagnostics> {
        let mut symbols = Symbols::new();
        let defs = Definitions::from_source(file, text, &mut symbols)?;
        Ok(Engine::new(defs, symbols, config))
    }

    pub fn definitions(&self) -> &Arc<Definitions> {
        &self.defs
    }
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    /// The lowest watermark over the shards (the start watermark if there are none).
    pub fn watermark(&self) -> Millis {
        self.timers.watermark()
    }
    /// A shard's watermark.
    pub fn shard_watermark(&self, shard: u16) -> Millis {
        self.timers.shard_watermark(shard)
    }
    /// The earliest time a timer of `shard` can fire: its timer heap's first entry (which
    /// may be stale, so no timer fires before it; `None`: no entry). A caller that moves
    /// the watermark often can skip the moves that fire nothing.
    pub fn next_timer_due(&self, shard: u16) -> Option<Millis> {
        self.timers.next_due(shard)
    }
    /// A shard's event time: its watermark and largest event time (carried to the next
    /// owner of the shard through the changelog).
    pub fn shard_time(&self, shard: u16) -> (Millis, Millis) {
        self.timers.shard_time(shard)
    }
    /// Raises a shard's event time to what its previous owner had reached (fires nothing:
    /// the restored timers fire when this owner's time passes them).
    pub fn set_shard_time(&mut self, shard: u16, watermark: Millis, max_event_time: Millis) {
        self.timers.set_shard_time(shard, watermark, max_event_time);
    }
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }
    /// The profile of the person `id` belongs to (any of its ids).
    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.get(self.identities.canonical(id))
    }
    /// The person's profile in a form two engines can compare: records in a canonical order
    /// and window buckets no condition can read any more (older than the window at the
    /// profile's clock) dropped, as applying events drops them lazily. For tests and audits.
    pub fn comparable_profile(&self, id: &str) -> Option<Profile> {
        let p = self.profile(id)?;
        let mut p = p.normalized();
        p.prune(&apply::feature_merges(&self.defs), p.clock);
        Some(p.normalized())
    }
    /// The canonical id of the person `id` belongs to (`id` itself if it is canonical or
    /// unknown).
    pub fn canonical_id<'a>(&'a self, id: &'a str) -> &'a str {
        self.identities.canonical(id)
    }
    /// The other ids of the person whose canonical id is `canonical`.
    pub fn other_ids(&self, canonical: &str) -> crate::transition::Ids {
        self.identities.others(canonical)
    }
    /// Ids linked to another person's canonical id (the identity map's size).
    pub fn linked_ids(&self) -> usize {
        self.identities.linked_ids()
    }
    /// Approximate bytes of the identity map.
    pub fn identity_bytes(&self) -> usize {
        self.identities.bytes()
    }
    pub fn profiles(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.profiles.iter()
    }
    /// Customers with a pending timer.
    pub fn pending_timers(&self) -> usize {
        self.profiles.values().filter(|p| p.timer_at != 0).count()
    }
    /// Members per segment, in definition order.
    pub fn populations(&self) -> Vec<(Arc<str>, usize)> {
        let mut counts = vec![0usize; self.defs.segments.len()];
        for p in self.profiles.values() {
            for i in p.members() {
                if let Some(c) = counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        self.defs
            .segments
            .iter()
            .zip(counts)
            .map(|(s, c)| (s.name.clone(), c))
            .collect()
    }
    /// Names of the segments a customer is in.
    pub fn memberships(&self, id: &str) -> Vec<Arc<str>> {
        self.profile(id).map_or_else(Vec::new, |p| {
            p.members()
                .filter_map(|i| self.defs.segments.get(i).map(|s| s.name.clone()))
                .collect()
        })
    }

    /// An evaluation context for one profile at `now` (for APIs that explain a profile).
    pub fn context<'a>(&'a self, profile: &'a Profile, now: Millis) -> Ctx<'a> {
        Ctx {
            defs: &self.defs,
            symbols: &self.symbols,
            profile,
            now,
        }
    }

    /// Parses and applies one raw event in shard 0, the watermark following the largest
    /// event time ([`Engine::apply_and_advance`]): one ordered input, as in a replay.
    pub fn process(
        &mut self,
        raw: &[u8],
        out: &mut Vec<Transition>,
    ) -> Result<Applied, EventError> {
        let event = parse_event(raw)?;
        self.apply_and_advance(0, &event, out)
    }

    /// [`Engine::apply`], then, if the event raised the shard's largest event time, moves
    /// the shard's watermark to it minus the allowed lateness (firing the timers it
    /// passes). The policy for a caller that sees a shard's whole input in order (replay,
    /// tests); the service computes watermarks over partitions itself.
    pub fn apply_and_advance(
        &mut self,
        shard: u16,
        event: &Event<'_>,
        out: &mut Vec<Transition>,
    ) -> Result<Applied, EventError> {
        let (_, before) = self.shard_time(shard);
        let applied = self.apply(shard, event, out)?;
        if event.timestamp > before {
            let wm = event.timestamp.saturating_sub(self.config.allowed_lateness);
            self.advance_shard_watermark(shard, wm, out);
        }
        Ok(applied)
    }

    /// Applies one validated event to its customer in `shard` (the input partition number:
    /// the profile is written to the changelog and dropped with that shard): fires the
    /// customer's due timers, updates the profile, re-evaluates the segments the event can
    /// affect, and raises the shard's largest event time. The watermark does not move; the
    /// caller moves it ([`Engine::advance_shard_watermark`]).
    pub fn apply(
        &mut self,
        shard: u16,
        event: &Event<'_>,
        out: &mut Vec<Transition>,
    ) -> Result<Applied, EventError> {
        let watermark = self.shard_watermark(shard);
        if event.timestamp < watermark {
            self.stats.events_late += 1;
            return Err(EventError::new(
                RejectReason::Late,
                format!(
                    "event time {} is before the watermark {} (allowed lateness {})",
                    format_rfc3339(event.timestamp),
                    format_rfc3339(watermark),
                    format_duration(self.config.allowed_lateness)
                ),
            ));
        }
        // Whose event it is, and which other id (if any) it links to that person.
        let ids = self.resolve(event)?;
        if let Some(&at) = self.forgotten.get(ids.person.as_str()) {
            if event.timestamp < at {
                self.stats.events_late += 1;
                return Err(EventError::new(
                    RejectReason::Late,
                    format!(
                        "event time {} is before the customer's forget at {}: erased history is not restored",
                        format_rfc3339(event.timestamp),
                        format_rfc3339(at)
                    ),
                ));
            }
        }
        let ty = self.symbols.event_type(event.kind, &event.event_type);
        // Trait keys are interned before the profile is borrowed.
        let trait_keys = apply::intern_traits(&mut self.symbols, event)?;
        let mut applied = Applied::default();
        let mut person = ids.person;
        if let Some(refusal) = ids.refused {
            applied.link = Link::Refused(refusal);
        }
        if event.kind == EventKind::Forget {
            // Catch the person up with time first.
            self.catch_up(&person, event.timestamp, out);
            self.forget(&person, event, out);
        } else {
            if let Some(other) = ids.linked {
                applied.link = self.link(shard, &mut person, other, event, out);
            }
            // A due timer of the person fires first, then the event is applied (an `alias`
            // too: it counts as an event of the person, so the person exists from then on).
            while let Some((id, t)) =
                self.apply_to_profile(shard, person.as_str(), event, ty, &trait_keys, out)
            {
                self.fire_customer(&id, t, out);
            }
        }
        self.stats.events_applied += 1;
        // Rescheduling a customer earlier leaves its old heap entry behind (skipped when
        // popped); rebuild the heaps when such stale entries, over all shards, pass half the
        // live ones (a heap entry is 24 bytes: at most 36 per profile, stale included).
        let live = self.profiles.len();
        if self.timers.total_entries() > live + live / 2 + 1024 {
            self.timers.rebuild(&self.profiles);
        }
        self.timers.observe_event_time(shard, event.timestamp);
        self.evict_over_capacity(event.timestamp, out);
        Ok(applied)
    }

    /// The engine's parts besides the profile map, to work on one profile of it.
    fn split(&mut self) -> (&mut Profiles, Evaluator<'_>) {
        let Engine {
            config,
            defs,
            symbols,
            profiles,
            timers,
            stats,
            affected,
            changes,
            identities,
            ..
        } = self;
        let ev = Evaluator {
            config,
            defs,
            symbols,
            stats,
            timers,
            changes,
            identities,
            affected,
        };
        (profiles, ev)
    }

    /// Applies the event to its customer's profile, unless the customer has a timer due
    /// before the event: then nothing is changed and the timer is returned to fire first.
    fn apply_to_profile(
        &mut self,
        event_shard: u16,
        person: &str,
        event: &Event<'_>,
        ty: Option<u16>,
        trait_keys: &[Option<u16>],
        out: &mut Vec<Transition>,
    ) -> Option<(Arc<str>, Millis)> {
        let shard = self.person_shard(person, event_shard);
        let (profiles, mut ev) = self.split();
        // One map lookup: the profile, created if new.
        let (slot, fresh) = profiles.slot_or_insert(person);
        let (id, profile) = profiles.slot_mut(slot);
        if !fresh {
            let due = profile.timer_at;
            if due != 0 && millis(due) <= event.timestamp {
                return Some((Arc::from(id), millis(due)));
            }
        }
        let now = profile.clock.max(event.timestamp);
        profile.clock = now;
        if event.customer_id.is_some() {
            profile.known = true;
        }
        if profile.shard != shard {
            // The customer's events moved to another shard: so does its pending timer.
            profile.shard = shard;
            if profile.timer_at != 0 {
                ev.timers.push(shard, millis(profile.timer_at), id);
            }
        }
        ev.changes.touch(profile, id);
        let changes = apply::apply_event(ev.defs, ev.symbols, profile, event, ty, trait_keys, now);
        // Mark the segments this event can affect; a new profile is evaluated against every
        // segment once, since segments like `not ...` hold for a customer with no history.
        let defs = ev.defs;
        let affected = &mut *ev.affected;
        affected.iter_mut().for_each(|a| *a = fresh);
        let mut mark = |list: &[usize]| {
            for &i in list {
                affected[i] = true;
            }
        };
        if let Some(t) = ty {
            mark(defs.by_type.get(t));
        }
        mark(&defs.on_any);
        for k in &changes.traits {
            mark(defs.by_trait.get(*k));
        }
        if changes.score {
            mark(&defs.on_score);
        }
        let trigger = Trigger::Event(&event.event_id);
        let schedule = Schedule::Earlier {
            ttl_from: event.timestamp,
        };
        ev.evaluate(profile, id, now, Select::Affected, trigger, schedule, out);
        None
    }

    /// Right to be forgotten: the person exits every segment, and its profile and every one
    /// of its ids are erased (an event of any of its ids older than the forget, still in
    /// flight, cannot bring the history back).
    fn forget(
        &mut self,
        person: &persons::Person<'_>,
        event: &Event<'_>,
        out: &mut Vec<Transition>,
    ) {
        let at_least = event.timestamp;
        let removed = self.remove_person(
            person.as_str(),
            at_least,
            Cause::Event(event.event_id.as_ref().into()),
            out,
        );
        if self.forgotten.len() >= 1024 {
            let wm = self.watermark();
            self.forgotten.retain(|_, t| *t >= wm);
        }
        let at = removed.as_ref().map_or(at_least, |(_, at)| *at);
        let ids = removed
            .map(|(ids, _)| ids)
            .unwrap_or_else(|| vec![Arc::from(person.as_str())]);
        for id in ids {
            self.forgotten.insert(id, at);
        }
        self.stats.profiles_forgotten += 1;
    }

    /// Moves the watermark of every shard forward (never back) and fires every timer it
    /// passes. Events older than the watermark are rejected as late from then on.
    pub fn advance_watermark(&mut self, to: Millis, out: &mut Vec<Transition>) {
        self.timers.raise_floor(to);
        for s in self.timers.shards() {
            self.advance_shard_watermark(s, to, out);
        }
    }

    /// Moves one shard's watermark forward (never back) and fires the timers it passes.
    pub fn advance_shard_watermark(&mut self, shard: u16, to: Millis, out: &mut Vec<Transition>) {
        self.timers.raise_watermark(shard, to);
        self.fire_timers_until(shard, to, out);
    }

    /// Live operation with a shard's input idle and caught up: fires the shard's timers
    /// that `now` (minus `idle_lag`) has passed. The caller decides what "now" is for the
    /// shard (the service: its event time plus the real time passed since its last event,
    /// at most the wall clock). The watermark for late events does not move: an event still
    /// in flight from a producer is applied when it arrives (if it was a cancel for a
    /// deadline that fired meanwhile, the customer exits again).
    pub fn on_idle(&mut self, shard: u16, now: Millis, out: &mut Vec<Transition>) {
        let to = now.saturating_sub(self.config.idle_lag);
        self.fire_timers_until(shard, to, out);
    }

    /// Fires the timers of `shard` due at or before `to` (skipping stale heap entries).
    fn fire_timers_until(&mut self, shard: u16, to: Millis, out: &mut Vec<Transition>) {
        self.fire_timers_marked(shard, to, out, None);
    }

    /// [`Engine::fire_timers_until`], noting each timer fired in `fired`.
    fn fire_timers_marked(
        &mut self,
        shard: u16,
        to: Millis,
        out: &mut Vec<Transition>,
        mut fired: Option<&mut Vec<Firing>>,
    ) {
        while let Some((t, ids)) = self.timers.pop_due(shard, to, &self.profiles) {
            // Each is due at `t` (`pop_due` checked); firing one customer changes no other's
            // timer.
            for id in ids {
                debug_assert!(self
                    .profiles
                    .get(&id)
                    .is_some_and(|p| millis(p.timer_at) == t));
                if let Some(f) = fired.as_deref_mut() {
                    f.push(Firing {
                        due: t,
                        customer: id.clone(),
                        start: out.len(),
                    });
                }
                self.fire_customer(&id, t, out);
            }
        }
    }

    /// [`Engine::advance_shard_watermark`], noting every timer it fires in `fired` (in the
    /// order fired: by due time, then customer id). For a caller that spreads customers
    /// over several engines and merges their output in the order one engine would have
    /// written it (`segstream replay --workers`).
    pub fn advance_shard_watermark_marked(
        &mut self,
        shard: u16,
        to: Millis,
        out: &mut Vec<Transition>,
        fired: &mut Vec<Firing>,
    ) {
        self.timers.raise_watermark(shard, to);
        self.fire_timers_marked(shard, to, out, Some(fired));
    }

    /// [`Engine::advance_watermark`], noting every timer it fires in `fired` (see
    /// [`Engine::advance_shard_watermark_marked`]).
    pub fn advance_watermark_marked(
        &mut self,
        to: Millis,
        out: &mut Vec<Transition>,
        fired: &mut Vec<Firing>,
    ) {
        self.timers.raise_floor(to);
        for s in self.timers.shards() {
            self.advance_shard_watermark_marked(s, to, out, fired);
        }
    }

    /// Takes every person and forget record of `ids` out of this engine, for another
    /// engine of the same definitions to go on with ([`Engine::put_persons`]): the profile
    /// (as a changelog record), the person's ids in the order they joined, and the time of
    /// any forget of one of the ids. Nothing is emitted and no timer fires; the persons'
    /// timers move with their profiles. For an offline replay that spreads persons over
    /// several engines and moves a person when a link joins it to one of another engine;
    /// an engine without change tracking and without `partitions` (the service moves
    /// persons with [`Handoff`]s instead).
    pub fn take_persons(&mut self, ids: &[Arc<str>]) -> MovedPersons {
        let mut moved = MovedPersons::default();
        let mut seen = hashbrown::HashSet::new();
        for id in ids {
            if let Some(at) = self.forgotten.remove(id) {
                moved.forgotten.push((id.clone(), at));
            }
            let canonical = Arc::<str>::from(self.identities.canonical(id));
            if !seen.insert(canonical.clone()) {
                continue;
            }
            let profile = self.profiles.remove(&canonical);
            let ids = self.identities.remove(&canonical);
            if profile.is_none() && ids.len() == 1 {
                continue;
            }
            let record = profile.map(|p| {
                let mut buf = Vec::new();
                self.codec.encode(&self.symbols, &p, &mut buf);
                buf
            });
            moved.persons.push(MovedPerson { ids, record });
        }
        moved
    }

    /// Takes in the persons another engine of the same definitions gave up
    /// ([`Engine::take_persons`]), as if they had always lived here.
    pub fn put_persons(&mut self, moved: MovedPersons) -> Result<(), DecodeError> {
        for (id, at) in moved.forgotten {
            self.forgotten.insert(id, at);
        }
        for person in moved.persons {
            let Some(canonical) = person.ids.first().cloned() else {
                continue;
            };
            for id in &person.ids[1..] {
                self.identities.restore(id.clone(), canonical.clone());
            }
            if let Some(bytes) = &person.record {
                let parsed = self.codec.parse(bytes)?;
                let profile = self.codec.finish(&mut self.symbols, parsed)?.profile;
                if profile.timer_at != 0 {
                    self.timers
                        .push(profile.shard, millis(profile.timer_at), &canonical);
                }
                self.profiles.insert(&canonical, profile);
            }
        }
        Ok(())
    }

    /// Fires a customer's timer due at `t`: evaluates the segments time can change.
    fn fire_customer(&mut self, id: &str, t: Millis, out: &mut Vec<Transition>) {
        let (profiles, mut ev) = self.split();
        let Some(profile) = profiles.get_mut(id) else {
            return;
        };
        ev.changes.touch(profile, id);
        ev.stats.timers_fired += 1;
        profile.timer_at = 0;
        let before = profile.clock;
        profile.clock = profile.clock.max(t);
        let now = profile.clock;
        if let Some(ttl) = ev.config.profile_ttl {
            let expires = millis(profile.last_seen()) + ttl;
            if expires <= now {
                let cause = Cause::Timer {
                    kind: TimerKind::Ttl,
                    deadline: expires,
                };
                ev.exit_all(profile, id, expires.max(before), cause, out);
                ev.stats.profiles_expired += 1;
                ev.changes.remove(id, profile.shard);
                let shard = profile.shard;
                profiles.remove(id);
                self.forget_ids(&Arc::from(id), shard);
                return;
            }
        }
        let trigger = Trigger::Timer { before, due: t };
        ev.evaluate(
            profile,
            id,
            now,
            Select::TimeDependent,
            trigger,
            Schedule::Replace,
            out,
        );
    }

    /// Approximate bytes of profile state: the storage (table and slots of id and profile,
    /// at capacity), and per profile its arena and, for an id too long for its slot, the
    /// id's heap bytes.
    pub fn profile_bytes(&self) -> usize {
        self.profiles.table_bytes()
            + self.profiles.id_heap_bytes()
            + self
                .profiles
                .values()
                .map(Profile::heap_bytes)
                .sum::<usize>()
    }
}

/// A timer an advance fired ([`Engine::advance_shard_watermark_marked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// When it was due.
    pub due: Millis,
    /// The customer (canonical id) whose timer it was.
    pub customer: Arc<str>,
    /// Where in the output vector the transitions it caused begin.
    pub start: usize,
}

/// One person taken out of an engine ([`Engine::take_persons`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MovedPerson {
    /// Its canonical id first, then its other ids in the order they joined.
    pub ids: Vec<Arc<str>>,
    /// Its profile as a changelog record, if it has one.
    pub record: Option<Vec<u8>>,
}

/// Persons and forget records taken out of an engine ([`Engine::take_persons`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MovedPersons {
    pub persons: Vec<MovedPerson>,
    /// Ids forgotten, with the time of the forget.
    pub forgotten: Vec<(Arc<str>, Millis)>,
}

/// Members of a profile by segment name (for the API and tests).
pub fn member_names(defs: &Definitions, profile: &Profile) -> Vec<String> {
    profile
        .members()
        .filter_map(|i| defs.segments.get(i).map(|s| s.name.to_string()))
        .collect()
}
