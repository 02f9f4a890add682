//! Folding one event into a profile: type statistics, traits, value, favourites, the
//! features the definitions ask for, and the lead score.

use xxhash_rust::xxh3::xxh3_64;

use super::eval::{decay, decayed_score, FAV_CATEGORY, FAV_PRODUCT};
use crate::event::{Event, EventError, EventKind, RejectReason, Value};
use crate::profile::{
    millis, secs, AbsenceInstance, FeatureMerge, Profile, TraitRef, MAX_ABSENCE_INSTANCES,
};
use crate::segment::compile::{CDeadline, Definitions, FeatureKind};
use crate::symbols::{SymbolClass, Symbols};
use crate::time::Millis;

/// What an event changed that the segment index cares about.
#[derive(Debug, Default)]
pub struct Changes {
    /// Trait keys whose value changed.
    pub traits: Vec<u16>,
    /// Whether the lead score changed.
    pub score: bool,
}

/// Interns the trait keys of an event (before the profile is borrowed). A key that cannot
/// be interned any more (the table is full) rejects the event rather than dropping data.
pub fn intern_traits(
    symbols: &mut Symbols,
    event: &Event<'_>,
) -> Result<Vec<Option<u16>>, EventError> {
    if event.kind != EventKind::Identify {
        return Ok(Vec::new());
    }
    event
        .traits
        .iter()
        .map(|(k, _)| match symbols.intern(k, SymbolClass::TraitKey) {
            Some(s) => Ok(Some(s as u16)),
            None => Err(EventError::new(
                RejectReason::InvalidValue,
                format!("trait `{k}` would exceed the limit on distinct trait names"),
            )),
        })
        .collect()
}

/// What [`crate::profile::merge`] needs to know of each feature, by feature index.
// For the identity merge (engine/identity.rs); allowed unused until it calls this.
pub fn feature_merges(defs: &Definitions) -> Vec<FeatureMerge> {
    defs.features
        .iter()
        .map(|f| match &f.kind {
            FeatureKind::Window {
                resolution,
                retention,
                sum,
            } => FeatureMerge::Window {
                resolution: *resolution,
                retention: *retention,
                sum: sum.is_some(),
            },
            FeatureKind::Recency => FeatureMerge::Recency,
            FeatureKind::Absence { .. } => FeatureMerge::Absence,
        })
        .collect()
}

fn correlation_key(v: Option<&Value<'_>>) -> u32 {
    let h = match v {
        Some(Value::Str(s)) => xxh3_64(s.as_bytes()),
        Some(Value::Int(i)) => xxh3_64(&i.to_le_bytes()),
        Some(Value::Float(f)) => xxh3_64(&f.to_bits().to_le_bytes()),
        Some(Value::Bool(b)) => u64::from(*b) + 1,
        _ => return 0,
    };
    // Never 0, which marks "uncorrelated".
    (h as u32) | 1
}

#[allow(clippy::too_many_arguments)]
pub fn apply_event(
    defs: &Definitions,
    symbols: &mut Symbols,
    p: &mut Profile,
    e: &Event<'_>,
    ty: Option<u16>,
    trait_keys: &[Option<u16>],
    now: Millis,
) -> Changes {
    let mut changes = Changes::default();
    let at = secs(e.timestamp).max(1);
    if let Some(t) = ty {
        p.touch_type(t, at);
    }
    match e.kind {
        EventKind::Identify => {
            for ((_, v), key) in e.traits.iter().zip(trait_keys) {
                let Some(key) = *key else { continue };
                let value = match v {
                    Value::Str(s) if s.len() <= 64 && defs.categorical_traits.contains(&key) => {
                        match symbols.intern(s, SymbolClass::Value) {
                            Some(sym) => Some(TraitRef::Sym(sym as u16)),
                            None => Some(TraitRef::Str(s)),
                        }
                    }
                    Value::Str(s) => Some(TraitRef::Str(s)),
                    Value::Int(i) => Some(TraitRef::Num(*i as f64)),
                    Value::Float(f) => Some(TraitRef::Num(*f)),
                    Value::Bool(b) => Some(TraitRef::Bool(*b)),
                    _ => None,
                };
                // Latest by event time wins; a removal is kept as a marker (bounded with
                // the values by MAX_TRAITS, see `set_trait`).
                if p.set_trait(key, value, at) {
                    changes.traits.push(key);
                }
            }
        }
        EventKind::Purchase => {
            if let Some(a) = e.property("amount").and_then(Value::as_f64) {
                p.add_revenue(a);
            }
            for (prop, slot) in [("category", FAV_CATEGORY), ("product", FAV_PRODUCT)] {
                if let Some(v) = e.property(prop).and_then(Value::as_str) {
                    if let Some(sym) = symbols.intern(v, SymbolClass::Value) {
                        p.favourite_add(slot, sym as u16);
                    }
                }
            }
        }
        _ => {}
    }
    let now_s = secs(now);
    let by_type = ty.map_or(&[][..], |t| defs.features_by_type.get(t));
    for &f in by_type.iter().chain(defs.features_any.iter()) {
        let feature = &defs.features[f as usize];
        match &feature.kind {
            FeatureKind::Window {
                resolution,
                retention,
                sum,
            } => {
                if !feature.pattern.matches(ty, e) {
                    continue;
                }
                let value = match sum {
                    None => 1.0,
                    Some(prop) => match e.property(prop).and_then(Value::as_f64) {
                        Some(v) => v as f32,
                        None => continue,
                    },
                };
                let is_sum = sum.is_some();
                if *resolution == 0 {
                    p.window_add(f, is_sum, 0, value, 0);
                } else {
                    let keep_from = now_s.saturating_sub(*retention) / resolution;
                    p.window_add(f, is_sum, at / resolution, value, keep_from);
                }
            }
            FeatureKind::Recency => {
                if feature.pattern.matches(ty, e) {
                    p.recency_touch(f, at);
                }
            }
            FeatureKind::Absence {
                cancel,
                correlate,
                deadline,
            } => {
                let is_trigger = feature.pattern.matches(ty, e);
                let is_cancel = cancel.matches(ty, e);
                if !is_trigger && !is_cancel {
                    continue;
                }
                let key = correlate
                    .as_ref()
                    .map_or(0, |c| correlation_key(e.property(c)));
                let mut inst: Vec<AbsenceInstance> = p.absence(f).collect();
                let pos = match inst.iter().position(|a| a.key == key) {
                    Some(i) => i,
                    None => {
                        inst.push(AbsenceInstance::new(key));
                        inst.len() - 1
                    }
                };
                let a = &mut inst[pos];
                if is_cancel {
                    a.cancel(at);
                } else {
                    let due = match deadline {
                        CDeadline::Within(ms) => Some(secs(e.timestamp + ms)),
                        CDeadline::Until(prop) => {
                            e.property(prop).and_then(Value::as_timestamp).map(secs)
                        }
                    };
                    if let Some(d) = due {
                        a.trigger(at, d.max(at));
                    }
                }
                // An instance that is only a cancel is kept (up to the cap, the least recent
                // go first): when another profile of the person merges in, its earlier
                // triggers are cancelled by it, exactly as if one profile had seen both.
                if inst.len() > MAX_ABSENCE_INSTANCES {
                    inst.sort_by_key(|a| std::cmp::Reverse(a.recent()));
                    inst.truncate(MAX_ABSENCE_INSTANCES);
                }
                p.set_absence(f, &inst);
            }
        }
    }
    if !defs.scoring.rules.is_empty() {
        let points: f32 = defs
            .scoring
            .rules
            .iter()
            .filter(|r| r.pattern.matches(ty, e))
            .map(|r| r.points)
            .sum();
        if points != 0.0 {
            // Each event's points decay from the event's own time, so that the score does
            // not depend on the order events arrive in (nor on whether they were recorded
            // under one id or merged from several).
            let at = secs(e.timestamp);
            if p.score == 0.0 || at >= p.score_at {
                let current = decayed_score(p, defs.scoring.half_life, millis(at));
                p.score = (current + f64::from(points)) as f32;
                p.score_at = at;
            } else {
                let late = decay(
                    f64::from(points),
                    defs.scoring.half_life,
                    millis(at),
                    millis(p.score_at),
                );
                p.score = (f64::from(p.score) + late) as f32;
            }
            changes.score = true;
        }
    }
    changes
}

#[cfg(test)]
mod merge_tests;
