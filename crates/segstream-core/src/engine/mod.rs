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
//! does not depend on how fast other customers' events arrive). Live operation can advance
//! the watermark from an injected [`Clock`] when the input is idle and caught up.

mod apply;
pub mod eval;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::changelog::{Codec, DecodeError, Parsed};
use crate::event::{parse_event, Event, EventError, EventKind, RejectReason};
use crate::profile::{millis, secs, Profile, Secs};
use crate::segment::compile::Definitions;
use crate::segment::diagnostic::Diagnostics;
use crate::symbols::Symbols;
use crate::time::{format_duration, format_rfc3339, Millis, DAY, MINUTE, SECOND};
use crate::transition::{Cause, Direction, TimerKind, Transition};

use eval::Ctx;

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness: default_allowed_lateness(),
            profile_ttl: Some(default_profile_ttl()),
            idle_lag: default_idle_lag(),
        }
    }
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
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub version: String,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Aggregates that are new in this set: they start empty and fill from now on.
    pub new_aggregates: usize,
    pub kept_aggregates: usize,
    pub transitions: usize,
}

/// A segment's name and rule version.
type NameVersion = (Arc<str>, Arc<str>);

/// The layout of a definitions set that profile state depends on.
struct Layout {
    segments: Vec<NameVersion>,
    feature_keys: Vec<String>,
}

impl Layout {
    fn of(defs: &Definitions) -> Self {
        Layout {
            segments: defs
                .segments
                .iter()
                .map(|s| (s.name.clone(), s.version.clone()))
                .collect(),
            feature_keys: defs.features.iter().map(|f| f.key.clone()).collect(),
        }
    }
}

/// The segment engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    defs: Arc<Definitions>,
    symbols: Symbols,
    profiles: hashbrown::HashMap<Arc<str>, Profile>,
    /// Event time and timers per shard: a shard's customers are judged late, and their
    /// timers fired, by that shard's own progress (a partition that moves between
    /// instances brings no other partition's time with it).
    shards: hashbrown::HashMap<u16, ShardClock>,
    /// The watermark a shard starts with (raised by `advance_watermark`).
    floor: Millis,
    /// Customers forgotten recently, with the time of the forget: an older event still in
    /// flight (within the allowed lateness) must not bring the erased history back.
    forgotten: hashbrown::HashMap<Arc<str>, Millis>,
    stats: EngineStats,
    affected: Vec<bool>,
    /// Changelog records for the current definitions.
    codec: Codec,
    /// Whether changed and removed profiles are collected for `drain_changes`.
    track: bool,
    changed: Vec<Arc<str>>,
    removed: Vec<(Arc<str>, u16)>,
}

/// One entry for the changelog: a customer's record, or a tombstone (`record: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub customer_id: Arc<str>,
    pub shard: u16,
    pub record: Option<Vec<u8>>,
}

/// One shard's event time and pending timers.
#[derive(Debug, Default)]
struct ShardClock {
    watermark: Millis,
    max_event_time: Millis,
    timers: BinaryHeap<Reverse<(Millis, Arc<str>)>>,
}

type Shards = hashbrown::HashMap<u16, ShardClock>;

fn shard_clock(shards: &mut Shards, floor: Millis, shard: u16) -> &mut ShardClock {
    shards.entry(shard).or_insert_with(|| ShardClock {
        watermark: floor,
        max_event_time: Millis::MIN,
        timers: BinaryHeap::new(),
    })
}

fn push_timer(shards: &mut Shards, floor: Millis, shard: u16, at: Millis, id: Arc<str>) {
    shard_clock(shards, floor, shard)
        .timers
        .push(Reverse((at, id)));
}

/// Marks a profile changed since the last drain (once per drain).
fn touch(track: bool, changed: &mut Vec<Arc<str>>, profile: &mut Profile, id: &Arc<str>) {
    if track && !profile.dirty {
        profile.dirty = true;
        changed.push(id.clone());
    }
}

impl Engine {
    /// An engine for definitions compiled against `symbols`.
    pub fn new(defs: Definitions, symbols: Symbols, config: EngineConfig) -> Self {
        let n = defs.segments.len();
        Engine {
            config,
            symbols,
            profiles: hashbrown::HashMap::new(),
            shards: Shards::new(),
            floor: Millis::MIN,
            forgotten: hashbrown::HashMap::new(),
            stats: EngineStats::default(),
            affected: vec![false; n],
            codec: Codec::new(&defs),
            defs: Arc::new(defs),
            track: false,
            changed: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// The same engine, collecting every changed and removed profile for
    /// [`Engine::drain_changes`] (a service that writes a changelog). Without it nothing is
    /// collected (replay, benchmarks).
    pub fn with_change_tracking(mut self) -> Self {
        self.track = true;
        self
    }

    /// Every customer changed or removed since the last drain, once each: its changelog
    /// record, or a tombstone if the profile is gone. In the order first changed.
    pub fn drain_changes(&mut self, out: &mut Vec<StateChange>) {
        let mut buf = Vec::new();
        for (id, shard) in std::mem::take(&mut self.removed) {
            if !self.profiles.contains_key(&id) {
                out.push(StateChange {
                    customer_id: id,
                    shard,
                    record: None,
                });
            }
        }
        for id in std::mem::take(&mut self.changed) {
            let Some(p) = self.profiles.get_mut(&id) else {
                continue;
            };
            if !p.dirty {
                continue;
            }
            p.dirty = false;
            buf.clear();
            self.codec.encode(&self.symbols, p, &mut buf);
            out.push(StateChange {
                customer_id: id,
                shard: p.shard,
                record: Some(buf.clone()),
            });
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
        self.profiles.retain(|_, p| keep(p.shard));
        self.shards.retain(|s, _| keep(*s));
        let dropped = before - self.profiles.len();
        if dropped > 0 {
            let profiles = &self.profiles;
            self.changed.retain(|id| profiles.contains_key(id));
        }
        self.removed.retain(|(_, s)| keep(*s));
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
        let id: Arc<str> = match self.profiles.entry_ref(customer_id) {
            hashbrown::hash_map::EntryRef::Occupied(mut o) => {
                o.insert(profile);
                o.key().clone()
            }
            hashbrown::hash_map::EntryRef::Vacant(v) => v.insert_entry(profile).key().clone(),
        };
        if decoded.same_layout {
            if timer_at != 0 {
                push_timer(&mut self.shards, self.floor, shard, millis(timer_at), id);
            }
        } else {
            self.settle(&id, out);
        }
        Ok(())
    }

    /// Re-evaluates every segment for one customer (a record from other definitions) and
    /// reschedules its timer. Differences are transitions with cause `reload`.
    fn settle(&mut self, id: &Arc<str>, out: &mut Vec<Transition>) {
        let Engine {
            config,
            defs,
            symbols,
            profiles,
            shards,
            floor,
            stats,
            track,
            changed,
            ..
        } = self;
        let defs: &Definitions = defs;
        let Some(profile) = profiles.get_mut(id) else {
            return;
        };
        let now = profile.clock;
        let cause = Cause::Reload(defs.version.clone());
        let mut next: Option<Millis> = None;
        for (i, seg) in defs.segments.iter().enumerate() {
            let ctx = Ctx {
                defs,
                symbols,
                profile,
                now,
            };
            let mut seg_next = None;
            let is_in = ctx.eval_next(&seg.cond, &mut seg_next);
            if seg.time_dependent {
                if let Some((n, _)) = seg_next {
                    next = Some(next.map_or(n, |x: Millis| x.min(n)));
                }
            }
            if is_in != profile.is_member(i) {
                profile.set_member(i, is_in);
                let dir = if is_in {
                    Direction::Entered
                } else {
                    Direction::Exited
                };
                emit(stats, profile, id, seg, dir, now, cause.clone(), out);
            }
        }
        if let Some(ttl) = config.profile_ttl {
            let x = millis(profile.last_seen()) + ttl;
            next = Some(next.map_or(x, |n| n.min(x)));
        }
        profile.timer_at = next.map_or(0, timer_secs);
        if profile.timer_at != 0 {
            let at = millis(profile.timer_at);
            push_timer(shards, *floor, profile.shard, at, id.clone());
        }
        touch(*track, changed, profile, id);
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
        self.shards
            .values()
            .map(|s| s.watermark)
            .min()
            .unwrap_or(self.floor)
    }
    /// A shard's watermark.
    pub fn shard_watermark(&self, shard: u16) -> Millis {
        self.shards.get(&shard).map_or(self.floor, |s| s.watermark)
    }
    /// A shard's event time: its watermark and largest event time (carried to the next
    /// owner of the shard through the changelog).
    pub fn shard_time(&self, shard: u16) -> (Millis, Millis) {
        self.shards
            .get(&shard)
            .map_or((self.floor, Millis::MIN), |s| {
                (s.watermark, s.max_event_time)
            })
    }
    /// Raises a shard's event time to what its previous owner had reached (fires nothing:
    /// the restored timers fire when this owner's time passes them).
    pub fn set_shard_time(&mut self, shard: u16, watermark: Millis, max_event_time: Millis) {
        let c = shard_clock(&mut self.shards, self.floor, shard);
        c.watermark = c.watermark.max(watermark);
        c.max_event_time = c.max_event_time.max(max_event_time);
    }
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }
    pub fn profile(&self, customer_id: &str) -> Option<&Profile> {
        self.profiles.get(customer_id)
    }
    pub fn profiles(&self) -> impl Iterator<Item = (&Arc<str>, &Profile)> {
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
    pub fn memberships(&self, customer_id: &str) -> Vec<Arc<str>> {
        self.profiles.get(customer_id).map_or_else(Vec::new, |p| {
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

    /// Parses and applies one raw event.
    /// Parses and applies one raw event in shard 0, the watermark following the largest
    /// event time ([`Engine::apply_and_advance`]): one ordered input, as in a replay.
    pub fn process(&mut self, raw: &[u8], out: &mut Vec<Transition>) -> Result<(), EventError> {
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
    ) -> Result<(), EventError> {
        let (_, before) = self.shard_time(shard);
        self.apply(shard, event, out)?;
        if event.timestamp > before {
            let wm = event.timestamp.saturating_sub(self.config.allowed_lateness);
            self.advance_shard_watermark(shard, wm, out);
        }
        Ok(())
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
    ) -> Result<(), EventError> {
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
        if let Some(&at) = self.forgotten.get(&*event.customer_id) {
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
        if event.kind == EventKind::Forget {
            // Catch the customer up with time first.
            let cid: &str = &event.customer_id;
            while let Some((id, t)) = self
                .profiles
                .get_key_value(cid)
                .filter(|(_, p)| p.timer_at != 0 && millis(p.timer_at) <= event.timestamp)
                .map(|(k, p)| (k.clone(), millis(p.timer_at)))
            {
                self.fire_customer(&id, t, out);
            }
            self.forget(event, out);
        } else {
            // A due timer of the customer fires first, then the event is applied.
            while let Some((id, t)) = self.apply_to_profile(shard, event, ty, &trait_keys, out) {
                self.fire_customer(&id, t, out);
            }
        }
        self.stats.events_applied += 1;
        // Rescheduling a customer earlier leaves its old heap entry behind (skipped when
        // popped); rebuild the heap when such stale entries outnumber the live ones.
        let clock = shard_clock(&mut self.shards, self.floor, shard);
        if clock.timers.len() > 2 * self.profiles.len() + 1024 {
            self.rebuild_timers();
        }
        let clock = shard_clock(&mut self.shards, self.floor, shard);
        clock.max_event_time = clock.max_event_time.max(event.timestamp);
        Ok(())
    }

    /// Applies the event to its customer's profile, unless the customer has a timer due
    /// before the event: then nothing is changed and the timer is returned to fire first.
    fn apply_to_profile(
        &mut self,
        shard: u16,
        event: &Event<'_>,
        ty: Option<u16>,
        trait_keys: &[Option<u16>],
        out: &mut Vec<Transition>,
    ) -> Option<(Arc<str>, Millis)> {
        let Engine {
            config,
            defs,
            symbols,
            profiles,
            shards,
            floor,
            stats,
            affected,
            track,
            changed,
            ..
        } = self;
        let defs: &Definitions = defs;
        // One map lookup: the profile, created if new.
        let (id, profile, fresh) = match profiles.entry_ref(&*event.customer_id) {
            hashbrown::hash_map::EntryRef::Occupied(o) => {
                let due = o.get().timer_at;
                if due != 0 && millis(due) <= event.timestamp {
                    return Some((o.key().clone(), millis(due)));
                }
                let id = o.key().clone();
                (id, o.into_mut(), false)
            }
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                let e = v.insert_entry(Profile::new());
                let id = e.key().clone();
                (id, e.into_mut(), true)
            }
        };
        let now = profile.clock.max(event.timestamp);
        profile.clock = now;
        if profile.shard != shard {
            // The customer's events moved to another shard: so does its pending timer.
            profile.shard = shard;
            if profile.timer_at != 0 {
                push_timer(shards, *floor, shard, millis(profile.timer_at), id.clone());
            }
        }
        touch(*track, changed, profile, &id);
        let changes = apply::apply_event(
            defs,
            symbols,
            profile,
            event,
            ty,
            trait_keys,
            now,
            config.allowed_lateness,
        );
        // Mark the segments this event can affect; a new profile is evaluated against every
        // segment once, since segments like `not ...` hold for a customer with no history.
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
        let mut next: Option<Millis> = None;
        for (i, seg) in defs.segments.iter().enumerate() {
            if !affected[i] {
                continue;
            }
            let ctx = Ctx {
                defs,
                symbols,
                profile,
                now,
            };
            let mut seg_next = None;
            let is_in = if seg.time_dependent {
                ctx.eval_next(&seg.cond, &mut seg_next)
            } else {
                ctx.eval(&seg.cond)
            };
            stats.evaluations += 1;
            if let Some((t, _)) = seg_next {
                next = Some(next.map_or(t, |n: Millis| n.min(t)));
            }
            if is_in != profile.is_member(i) {
                profile.set_member(i, is_in);
                let dir = if is_in {
                    Direction::Entered
                } else {
                    Direction::Exited
                };
                let cause = Cause::Event(event.event_id.as_ref().into());
                emit(stats, profile, &id, seg, dir, now, cause, out);
                for &d in &seg.dependents {
                    affected[d] = true;
                }
            }
        }
        if let Some(ttl) = config.profile_ttl {
            // The event is the last seen or older: its expiry is a lower bound, and cheaper
            // than scanning the profile (a timer that fires early just re-checks).
            let t = event.timestamp + ttl;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if let Some(t) = next {
            let at = timer_secs(t);
            if profile.timer_at == 0 || at < profile.timer_at {
                profile.timer_at = at;
                push_timer(shards, *floor, shard, millis(at), id);
            }
        }
        None
    }

    /// Right to be forgotten: the customer exits every segment and the profile is erased.
    fn forget(&mut self, event: &Event<'_>, out: &mut Vec<Transition>) {
        let Some((id, mut profile)) = self.profiles.remove_entry(&*event.customer_id) else {
            return;
        };
        if self.track {
            self.removed.push((id.clone(), profile.shard));
        }
        let at = profile.clock.max(event.timestamp);
        if self.forgotten.len() >= 1024 {
            let wm = self.watermark();
            self.forgotten.retain(|_, t| *t >= wm);
        }
        self.forgotten.insert(id.clone(), at);
        let cause = Cause::Event(event.event_id.as_ref().into());
        exit_all(
            &self.defs,
            &mut self.stats,
            &mut profile,
            &id,
            at,
            cause,
            out,
        );
        self.stats.profiles_forgotten += 1;
    }

    /// The timer heap from the profiles' own due times (drops stale entries).
    fn rebuild_timers(&mut self) {
        for s in self.shards.values_mut() {
            s.timers.clear();
        }
        for (k, p) in self.profiles.iter().filter(|(_, p)| p.timer_at != 0) {
            let at = millis(p.timer_at);
            push_timer(&mut self.shards, self.floor, p.shard, at, k.clone());
        }
    }

    /// Moves the watermark of every shard forward (never back) and fires every timer it
    /// passes. Events older than the watermark are rejected as late from then on.
    pub fn advance_watermark(&mut self, to: Millis, out: &mut Vec<Transition>) {
        self.floor = self.floor.max(to);
        let shards: Vec<u16> = self.shards.keys().copied().collect();
        for s in shards {
            self.advance_shard_watermark(s, to, out);
        }
    }

    /// Moves one shard's watermark forward (never back) and fires the timers it passes.
    pub fn advance_shard_watermark(&mut self, shard: u16, to: Millis, out: &mut Vec<Transition>) {
        let clock = shard_clock(&mut self.shards, self.floor, shard);
        if to > clock.watermark {
            clock.watermark = to;
        }
        self.fire_timers_until(shard, to, out);
    }

    /// Live operation with idle, caught-up input: fires the timers the wall clock (minus
    /// `idle_lag`) has passed. The watermark for late events does not move: an event still
    /// in flight from a producer is applied when it arrives (if it was a cancel for a
    /// deadline that fired meanwhile, the customer exits again).
    pub fn on_idle(&mut self, now: Millis, out: &mut Vec<Transition>) {
        let to = now.saturating_sub(self.config.idle_lag);
        let shards: Vec<u16> = self.shards.keys().copied().collect();
        for s in shards {
            self.fire_timers_until(s, to, out);
        }
    }

    fn fire_timers_until(&mut self, shard: u16, to: Millis, out: &mut Vec<Transition>) {
        while let Some(heap) = self.shards.get_mut(&shard).map(|s| &mut s.timers) {
            if heap.peek().is_none_or(|Reverse((t, _))| *t > to) {
                break;
            }
            let Some(Reverse((t, id))) = heap.pop() else {
                break;
            };
            let due = self
                .profiles
                .get(&id)
                .is_some_and(|p| millis(p.timer_at) == t);
            if due {
                self.fire_customer(&id, t, out);
            }
        }
    }

    /// Fires a customer's timer due at `t`: evaluates the segments time can change.
    fn fire_customer(&mut self, id: &Arc<str>, t: Millis, out: &mut Vec<Transition>) {
        let Engine {
            config,
            defs,
            symbols,
            profiles,
            shards,
            floor,
            stats,
            track,
            changed,
            removed,
            ..
        } = self;
        let defs: &Definitions = defs;
        let Some(profile) = profiles.get_mut(id) else {
            return;
        };
        touch(*track, changed, profile, id);
        stats.timers_fired += 1;
        profile.timer_at = 0;
        let before = profile.clock;
        profile.clock = profile.clock.max(t);
        let now = profile.clock;
        if let Some(ttl) = config.profile_ttl {
            let expires = millis(profile.last_seen()) + ttl;
            if expires <= now {
                let cause = Cause::Timer {
                    kind: TimerKind::Ttl,
                    deadline: expires,
                };
                exit_all(defs, stats, profile, id, expires.max(before), cause, out);
                stats.profiles_expired += 1;
                if *track {
                    removed.push((id.clone(), profile.shard));
                }
                profiles.remove(id);
                return;
            }
        }
        let mut next: Option<Millis> = None;
        for (i, seg) in defs.segments.iter().enumerate() {
            if !seg.time_dependent {
                continue;
            }
            let ctx = Ctx {
                defs,
                symbols,
                profile,
                now,
            };
            let mut seg_next = None;
            let is_in = ctx.eval_next(&seg.cond, &mut seg_next);
            stats.evaluations += 1;
            if let Some((n, _)) = seg_next {
                next = Some(next.map_or(n, |x: Millis| x.min(n)));
            }
            if is_in != profile.is_member(i) {
                let kind = Ctx {
                    defs,
                    symbols,
                    profile,
                    now: before.min(t - 1),
                }
                .next_change(&seg.cond)
                .filter(|(n, _)| *n <= t)
                .map_or(TimerKind::Window, |(_, k)| k);
                profile.set_member(i, is_in);
                let dir = if is_in {
                    Direction::Entered
                } else {
                    Direction::Exited
                };
                let cause = Cause::Timer { kind, deadline: t };
                emit(stats, profile, id, seg, dir, now, cause, out);
            }
        }
        if let Some(ttl) = config.profile_ttl {
            let x = millis(profile.last_seen()) + ttl;
            next = Some(next.map_or(x, |n| n.min(x)));
        }
        if let Some(n) = next {
            profile.timer_at = timer_secs(n);
            let at = millis(profile.timer_at);
            push_timer(shards, *floor, profile.shard, at, id.clone());
        }
    }

    /// Replaces the definitions. Features with an unchanged key keep their state; every
    /// customer's membership in added and changed segments is re-evaluated from the
    /// profile, and members of removed segments exit. Transitions carry cause `reload`.
    pub fn replace_definitions(
        &mut self,
        defs: Definitions,
        out: &mut Vec<Transition>,
    ) -> ReloadReport {
        let old = Layout::of(&self.defs);
        self.install(defs, &old, out)
    }

    /// Compiles `text` against this engine's symbols and replaces the definitions; an
    /// invalid file changes nothing and returns every error.
    pub fn reload_source(
        &mut self,
        file: &str,
        text: &str,
        out: &mut Vec<Transition>,
    ) -> Result<ReloadReport, Diagnostics> {
        let defs = Definitions::from_source(file, text, &mut self.symbols)?;
        Ok(self.replace_definitions(defs, out))
    }

    fn install(
        &mut self,
        defs: Definitions,
        old: &Layout,
        out: &mut Vec<Transition>,
    ) -> ReloadReport {
        let defs = Arc::new(defs);
        let mut report = ReloadReport {
            version: defs.version.to_string(),
            ..ReloadReport::default()
        };
        // Feature remapping by key.
        let new_index: HashMap<&str, u16> = defs
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.as_str(), i as u16))
            .collect();
        let feature_map: Vec<Option<u16>> = old
            .feature_keys
            .iter()
            .map(|k| new_index.get(k.as_str()).copied())
            .collect();
        report.kept_aggregates = feature_map.iter().filter(|m| m.is_some()).count();
        report.new_aggregates = defs.features.len() - report.kept_aggregates;
        // Segment mapping by name.
        let old_by_name: HashMap<&str, (usize, &Arc<str>)> = old
            .segments
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (&**n, (i, v)))
            .collect();
        let mut reevaluate = vec![false; defs.segments.len()];
        let mut carried: Vec<Option<usize>> = vec![None; defs.segments.len()];
        for (i, s) in defs.segments.iter().enumerate() {
            match old_by_name.get(&*s.name) {
                Some((j, v)) if **v == s.version => {
                    carried[i] = Some(*j);
                    report.unchanged.push(s.name.to_string());
                }
                Some((j, _)) => {
                    carried[i] = Some(*j);
                    reevaluate[i] = true;
                    report.changed.push(s.name.to_string());
                }
                None => {
                    reevaluate[i] = true;
                    report.added.push(s.name.to_string());
                }
            }
        }
        let removed: Vec<(usize, &NameVersion)> = old
            .segments
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| defs.segment_index(n).is_none())
            .collect();
        report.removed = removed.iter().map(|(_, (n, _))| n.to_string()).collect();

        let cause = Cause::Reload(defs.version.clone());
        let identical = report.added.is_empty()
            && report.changed.is_empty()
            && removed.is_empty()
            && old.feature_keys.len() == defs.features.len()
            && feature_map
                .iter()
                .enumerate()
                .all(|(i, m)| *m == Some(i as u16));
        if identical {
            // Same definitions (e.g. a restore): state and timers stay exactly as they were.
            self.rebuild_timers();
            self.affected = vec![false; defs.segments.len()];
            self.codec = Codec::new(&defs);
            self.defs = defs;
            return report;
        }
        let mut ids: Vec<Arc<str>> = self.profiles.keys().cloned().collect();
        ids.sort();
        let before = out.len();
        for s in self.shards.values_mut() {
            s.timers.clear();
        }
        for id in ids {
            let Some(profile) = self.profiles.get_mut(&id) else {
                continue;
            };
            touch(self.track, &mut self.changed, profile, &id);
            profile.remap_features(&|k| feature_map.get(k as usize).copied().flatten());
            let old_members = profile.take_members();
            let now = profile.clock;
            for (j, (name, version)) in removed.iter().map(|(j, s)| (*j, s)) {
                if old_members.contains(j) {
                    let seg = crate::segment::compile::Segment {
                        name: name.clone(),
                        description: None,
                        version: version.clone(),
                        condition_text: String::new(),
                        cond: crate::segment::compile::Cond::Const(false),
                        dependents: Vec::new(),
                        time_dependent: false,
                    };
                    emit(
                        &mut self.stats,
                        profile,
                        &id,
                        &seg,
                        Direction::Exited,
                        now,
                        cause.clone(),
                        out,
                    );
                }
            }
            let mut next: Option<Millis> = None;
            for (i, seg) in defs.segments.iter().enumerate() {
                let was = carried[i].is_some_and(|j| old_members.contains(j));
                let ctx = Ctx {
                    defs: &defs,
                    symbols: &self.symbols,
                    profile,
                    now,
                };
                let is_in = if reevaluate[i] {
                    ctx.eval(&seg.cond)
                } else {
                    was
                };
                if seg.time_dependent {
                    if let Some((n, _)) = ctx.next_change(&seg.cond) {
                        next = Some(next.map_or(n, |x: Millis| x.min(n)));
                    }
                }
                profile.set_member(i, is_in);
                if is_in != was {
                    let dir = if is_in {
                        Direction::Entered
                    } else {
                        Direction::Exited
                    };
                    emit(
                        &mut self.stats,
                        profile,
                        &id,
                        seg,
                        dir,
                        now,
                        cause.clone(),
                        out,
                    );
                }
            }
            if let Some(ttl) = self.config.profile_ttl {
                let x = millis(profile.last_seen()) + ttl;
                next = Some(next.map_or(x, |n| n.min(x)));
            }
            profile.timer_at = next.map_or(0, timer_secs);
            if let Some(n) = next {
                let (shard, at) = (profile.shard, millis(timer_secs(n)));
                push_timer(&mut self.shards, self.floor, shard, at, id.clone());
            }
        }
        report.transitions = out.len() - before;
        self.affected = vec![false; defs.segments.len()];
        self.codec = Codec::new(&defs);
        self.defs = defs;
        report
    }

    /// Approximate bytes of profile state: per profile, the struct, its heap and the key.
    pub fn profile_bytes(&self) -> usize {
        self.profiles
            .iter()
            .map(|(k, p)| std::mem::size_of::<Profile>() + p.heap_bytes() + k.len() + 16)
            .sum()
    }
}

/// Timers are kept in whole seconds, rounded up so a timer never fires early.
fn timer_secs(ms: Millis) -> Secs {
    secs(ms + 999).max(1)
}

/// Every membership ends (forget, TTL): dependents first, so a segment never outlives
/// one it depends on.
fn exit_all(
    defs: &Definitions,
    stats: &mut EngineStats,
    profile: &mut Profile,
    id: &Arc<str>,
    at: Millis,
    cause: Cause,
    out: &mut Vec<Transition>,
) {
    let members: Vec<usize> = profile.members().collect();
    for &i in members.iter().rev() {
        if let Some(seg) = defs.segments.get(i) {
            profile.set_member(i, false);
            emit(
                stats,
                profile,
                id,
                seg,
                Direction::Exited,
                at,
                cause.clone(),
                out,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    stats: &mut EngineStats,
    profile: &mut Profile,
    id: &Arc<str>,
    seg: &crate::segment::compile::Segment,
    direction: Direction,
    at: Millis,
    cause: Cause,
    out: &mut Vec<Transition>,
) {
    profile.sequence += 1;
    stats.transitions += 1;
    out.push(Transition::new(
        id.clone(),
        seg.name.clone(),
        direction,
        at,
        cause,
        seg.version.clone(),
        profile.sequence,
    ));
}

/// Members of a profile by segment name (for the API and tests).
pub fn member_names(defs: &Definitions, profile: &Profile) -> Vec<String> {
    profile
        .members()
        .filter_map(|i| defs.segments.get(i).map(|s| s.name.to_string()))
        .collect()
}
