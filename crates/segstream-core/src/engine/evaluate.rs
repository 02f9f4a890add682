//! The one evaluate-and-emit path: for one customer, evaluate a selection of segments,
//! flip memberships, emit the transitions, and reschedule the customer's timer.
//!
//! Four callers use it, and differ in ways that matter (they are the parameters):
//!
//! | caller | [`Select`] | [`Trigger`] | [`Schedule`] |
//! |---|---|---|---|
//! | an event (`Engine::apply_to_profile`) | `Affected` | `Event` | `Earlier` from the event time |
//! | a timer (`Engine::fire_customer`) | `TimeDependent` | `Timer` | `Replace` |
//! | a record from other definitions (`Engine::settle`) | `All` | `Given` (reload) | `Replace` |
//! | a reload (`Engine::install`) | `Reload` | `Given` (reload) | `Replace` |
//! | a merge of two persons (`Engine::merge_persons`) | `All` | `Given` (merge) | `Replace` |

use std::sync::Arc;

use super::changes::ChangeTracker;
use super::eval::{Ctx, Next};
use super::identity::Identities;
use super::timers::Timers;
use super::{EngineConfig, EngineStats};
use crate::profile::{millis, secs, Members, Profile, Secs};
use crate::segment::compile::{Definitions, Segment};
use crate::symbols::Symbols;
use crate::time::Millis;
use crate::transition::{Cause, Direction, TimerKind, Transition};

/// The engine's state beside the profile map, borrowed for one customer at a time
/// (`Engine::split` lends it out with the profile map split off).
pub(super) struct Evaluator<'e> {
    pub config: &'e EngineConfig,
    pub defs: &'e Definitions,
    pub symbols: &'e mut Symbols,
    pub stats: &'e mut EngineStats,
    pub timers: &'e mut Timers,
    pub changes: &'e mut ChangeTracker,
    /// Whose ids are whose: every transition names the person's other ids.
    pub identities: &'e Identities,
    /// Per segment: whether the current event can affect it ([`Select::Affected`]).
    pub affected: &'e mut [bool],
}

/// Which segments a pass evaluates, and how.
#[derive(Clone, Copy)]
pub(super) enum Select<'a> {
    /// The segments marked in [`Evaluator::affected`], and the dependents of each one that
    /// flips (marked as it flips: they come later in definition order). Time-dependent
    /// segments are evaluated with their next change, the others without (cheaper).
    /// Counted in `stats.evaluations`.
    Affected,
    /// The time-dependent segments only (a timer: nothing else can have changed), each
    /// with its next change. Counted in `stats.evaluations`.
    TimeDependent,
    /// Every segment, with its next change (a record written under other definitions).
    All,
    /// Every segment after a reload; the profile's memberships were taken out
    /// (`old_members`) and every one is written back. A segment marked in `reevaluate`
    /// is evaluated; any other keeps the membership `carried` from its old index. The
    /// next change of a time-dependent segment is computed separately.
    Reload {
        reevaluate: &'a [bool],
        carried: &'a [Option<usize>],
        old_members: &'a Members,
    },
}

impl Select<'_> {
    fn includes(&self, affected: &[bool], i: usize, seg: &Segment) -> bool {
        match self {
            Select::Affected => affected[i],
            Select::TimeDependent => seg.time_dependent,
            Select::All | Select::Reload { .. } => true,
        }
    }

    /// Restores and reloads are not counted as evaluations.
    fn counted(&self) -> bool {
        matches!(self, Select::Affected | Select::TimeDependent)
    }
}

/// The cause the transitions of a pass carry.
#[derive(Clone, Copy)]
pub(super) enum Trigger<'a> {
    /// An event, by its `event_id` (each transition gets its own copy).
    Event(&'a str),
    /// The customer's timer, due at `due`, the customer's clock having been `before`:
    /// the kind is that of the segment's change due by then, seen from before the timer.
    Timer { before: Millis, due: Millis },
    /// A given cause, cloned into each transition: a reload, a merge.
    Given(&'a Cause),
}

/// How a pass reschedules the customer's timer. Both bound it by the profile TTL.
#[derive(Clone, Copy)]
pub(super) enum Schedule {
    /// Only ever earlier (or set if there is none), the TTL counted from `ttl_from`. An
    /// event is the last seen or older: its expiry is a lower bound, and cheaper than
    /// scanning the profile (a timer that fires early just re-checks).
    Earlier { ttl_from: Millis },
    /// Replaced by the earliest next change, the TTL counted from the last event seen;
    /// none if there is nothing to wait for.
    Replace,
}

impl Evaluator<'_> {
    /// Evaluates the `select`ed segments for the customer `id` at `now`: flips memberships,
    /// emits a transition with a cause from `trigger` for each flip, and reschedules the
    /// customer's timer (in the profile's shard) by `schedule`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate(
        &mut self,
        profile: &mut Profile,
        id: &str,
        now: Millis,
        select: Select<'_>,
        trigger: Trigger<'_>,
        schedule: Schedule,
        out: &mut Vec<Transition>,
    ) {
        let defs = self.defs;
        let mut next: Option<Millis> = None;
        for (i, seg) in defs.segments.iter().enumerate() {
            if !select.includes(self.affected, i, seg) {
                continue;
            }
            let was = match select {
                Select::Reload {
                    carried,
                    old_members,
                    ..
                } => carried[i].is_some_and(|j| old_members.contains(j)),
                _ => profile.is_member(i),
            };
            let ctx = Ctx {
                defs,
                symbols: self.symbols,
                profile,
                now,
            };
            let mut seg_next: Next = None;
            let is_in = match select {
                Select::Affected if !seg.time_dependent => ctx.eval(&seg.cond),
                Select::Affected | Select::TimeDependent | Select::All => {
                    ctx.eval_next(&seg.cond, &mut seg_next)
                }
                Select::Reload { reevaluate, .. } => {
                    let is_in = if reevaluate[i] {
                        ctx.eval(&seg.cond)
                    } else {
                        was
                    };
                    if seg.time_dependent {
                        seg_next = ctx.next_change(&seg.cond);
                    }
                    is_in
                }
            };
            if select.counted() {
                self.stats.evaluations += 1;
            }
            // Only time-dependent segments change without an event.
            if seg.time_dependent {
                if let Some((n, _)) = seg_next {
                    next = Some(next.map_or(n, |x: Millis| x.min(n)));
                }
            }
            // A reload took the memberships out of the profile: every one is written back.
            let write_back = matches!(select, Select::Reload { .. });
            if write_back {
                profile.set_member(i, is_in);
            }
            if is_in == was {
                continue;
            }
            let cause = match trigger {
                Trigger::Event(event_id) => Cause::Event(event_id.into()),
                Trigger::Timer { before, due } => {
                    // Seen from before the timer, with the membership not flipped yet.
                    let kind = Ctx {
                        defs,
                        symbols: self.symbols,
                        profile,
                        now: before.min(due - 1),
                    }
                    .next_change(&seg.cond)
                    .filter(|(n, _)| *n <= due)
                    .map_or(TimerKind::Window, |(_, k)| k);
                    Cause::Timer {
                        kind,
                        deadline: due,
                    }
                }
                Trigger::Given(cause) => cause.clone(),
            };
            if !write_back {
                profile.set_member(i, is_in);
            }
            let dir = if is_in {
                Direction::Entered
            } else {
                Direction::Exited
            };
            self.emit(profile, id, seg, dir, now, cause, out);
            if let Select::Affected = select {
                for &d in &seg.dependents {
                    self.affected[d] = true;
                }
            }
        }
        match schedule {
            Schedule::Earlier { ttl_from } => {
                if let Some(ttl) = self.config.profile_ttl {
                    let t = ttl_from + ttl;
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                if let Some(t) = next {
                    let at = timer_secs(t);
                    if profile.timer_at == 0 || at < profile.timer_at {
                        profile.timer_at = at;
                        self.timers.push(profile.shard, millis(at), id);
                    }
                }
            }
            Schedule::Replace => {
                if let Some(ttl) = self.config.profile_ttl {
                    // A profile without an event yet (made by a merge or an alias) lives
                    // from its clock.
                    let seen = match profile.last_seen() {
                        0 => profile.clock,
                        s => millis(s),
                    };
                    let x = seen + ttl;
                    next = Some(next.map_or(x, |n| n.min(x)));
                }
                profile.timer_at = next.map_or(0, timer_secs);
                if profile.timer_at != 0 {
                    let at = millis(profile.timer_at);
                    self.timers.push(profile.shard, at, id);
                }
            }
        }
    }

    /// Every membership ends (forget, TTL): dependents first, so a segment never outlives
    /// one it depends on.
    pub(super) fn exit_all(
        &mut self,
        profile: &mut Profile,
        id: &str,
        at: Millis,
        cause: Cause,
        out: &mut Vec<Transition>,
    ) {
        let members: Vec<usize> = profile.members().collect();
        for &i in members.iter().rev() {
            if let Some(seg) = self.defs.segments.get(i) {
                profile.set_member(i, false);
                self.emit(profile, id, seg, Direction::Exited, at, cause.clone(), out);
            }
        }
    }

    /// One transition: the customer's next sequence number, counted, with the person's
    /// other ids and whether it is known.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
        &mut self,
        profile: &mut Profile,
        id: &str,
        seg: &Segment,
        direction: Direction,
        at: Millis,
        cause: Cause,
        out: &mut Vec<Transition>,
    ) {
        profile.sequence += 1;
        self.stats.transitions += 1;
        out.push(
            Transition::new(
                Arc::from(id),
                seg.name.clone(),
                direction,
                at,
                cause,
                seg.version.clone(),
                profile.sequence,
            )
            .with_identity(self.identities.others(id), profile.known),
        );
    }
}

/// Timers are kept in whole seconds, rounded up so a timer never fires early.
fn timer_secs(ms: Millis) -> Secs {
    secs(ms + 999).max(1)
}
