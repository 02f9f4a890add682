//! JSON views of engine state: a customer's profile as the HTTP API serves it and
//! `segstream replay --profiles-out` writes it (the "segment of one"). Presentation only:
//! the engine keeps the state, this module names its symbols and formats its times.

use segstream_core::engine::eval::Val;
use segstream_core::engine::{member_names, Engine};
use segstream_core::profile::{millis, TraitRef};
use segstream_core::segment::compile::{Attr, Op};
use segstream_core::symbols::SymbolClass;
use segstream_core::time::format_rfc3339;
use serde_json::{json, Map, Value as J};

/// A person's profile as JSON: ids, traits, behaviour, value, score and segments, found by
/// any of the person's ids; `None` if the engine has no profile for `id`.
pub fn profile_json(engine: &Engine, id: &str) -> Option<serde_json::Value> {
    let customer_id = engine.canonical_id(id);
    let p = engine.profile(customer_id)?;
    let other_ids: Vec<String> = engine
        .other_ids(customer_id)
        .iter()
        .map(|i| i.to_string())
        .collect();
    let ctx = engine.context(p, p.clock);
    let mut traits = Map::new();
    for (k, v) in p.traits() {
        let v = match v {
            TraitRef::Sym(s) => J::from(engine.symbols().name(SymbolClass::Value, u32::from(s))),
            TraitRef::Str(s) => J::from(s),
            TraitRef::Num(n) => J::from(n),
            TraitRef::Bool(b) => J::from(b),
        };
        traits.insert(
            engine
                .symbols()
                .name(SymbolClass::TraitKey, u32::from(k))
                .to_string(),
            v,
        );
    }
    let mut types = Map::new();
    for (t, s) in p.types() {
        types.insert(
            engine
                .symbols()
                .name(SymbolClass::EventType, u32::from(t))
                .to_string(),
            json!({
                "count": s.count,
                "first_seen": format_rfc3339(millis(s.first)),
                "last_seen": format_rfc3339(millis(s.last)),
            }),
        );
    }
    let attr = |a| match ctx.operand(&Op::Attr(a)) {
        Val::Num(n) => J::from(n),
        Val::Str(s) => J::from(s),
        Val::Bool(b) => J::from(b),
        Val::Missing => J::Null,
    };
    Some(json!({
        "customer_id": customer_id,
        "anonymous_ids": other_ids,
        "known": p.known,
        "segments": member_names(engine.definitions(), p),
        "traits": traits,
        "first_seen": format_rfc3339(millis(p.first_seen())),
        "last_seen": format_rfc3339(millis(p.last_seen())),
        "events": types,
        "value": {
            "revenue": p.revenue(),
            "purchases": attr(Attr::Purchases),
            "favourite_category": attr(Attr::FavouriteCategory),
            "favourite_product": attr(Attr::FavouriteProduct),
        },
        "email": {
            "opted_out": attr(Attr::OptedOut),
            "open_rate": attr(Attr::OpenRate),
            "click_rate": attr(Attr::ClickRate),
        },
        "score": (ctx.score() * 100.0).round() / 100.0,
        "clock": format_rfc3339(p.clock),
        "sequence": p.sequence,
        "next_timer": (p.timer_at != 0).then(|| format_rfc3339(millis(p.timer_at))),
    }))
}

/// Up to `limit` members of segment `segment` in `engine` whose canonical id sorts after
/// `after`, in id order (a page of `GET /segments/{name}/members`; the caller merges the
/// pages of several engines). One pass over the profiles, keeping the `limit` smallest
/// ids in a heap: the engine is locked for that pass.
pub fn members_after(
    engine: &Engine,
    segment: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<std::sync::Arc<str>> {
    let Some(i) = engine
        .definitions()
        .segments
        .iter()
        .position(|s| &*s.name == segment)
    else {
        return Vec::new();
    };
    let mut heap: std::collections::BinaryHeap<&str> =
        std::collections::BinaryHeap::with_capacity(limit + 1);
    for (id, p) in engine.profiles() {
        if !p.is_member(i) || after.is_some_and(|a| id <= a) {
            continue;
        }
        if heap.len() < limit {
            heap.push(id);
        } else if heap.peek().is_some_and(|top| id < *top) {
            heap.pop();
            heap.push(id);
        }
    }
    let mut page: Vec<std::sync::Arc<str>> = heap.into_iter().map(Into::into).collect();
    page.sort();
    page
}
