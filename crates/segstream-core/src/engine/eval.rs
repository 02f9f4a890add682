//! Evaluating compiled conditions against a profile at a point in time, and computing when
//! (absent new events) a condition's value could next change.

use crate::event::{Event, EventKind, Value};
use crate::profile::{millis, secs, Profile, Secs};
use crate::segment::ast::{ArithOp, CmpOp};
use crate::segment::compile::{
    Attr, CFilter, CPattern, Cond, Definitions, EventMatch, FeatureKind, Lit, Op,
};
use crate::symbols::{SymbolClass, Symbols};
use crate::time::{Millis, SECOND};
use crate::transition::TimerKind;

/// Favourite slots in the profile.
pub const FAV_CATEGORY: u16 = 0;
pub const FAV_PRODUCT: u16 = 1;

/// A value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
    Missing,
}

impl<'a> Val<'a> {
    fn from_lit(l: &'a Lit) -> Self {
        match l {
            Lit::Num(n) => Val::Num(*n),
            Lit::Str(s) => Val::Str(s),
            Lit::Bool(b) => Val::Bool(*b),
        }
    }
    fn from_event(v: &'a Value<'_>) -> Self {
        match v {
            Value::Str(s) => Val::Str(s),
            Value::Int(i) => Val::Num(*i as f64),
            Value::Float(f) => Val::Num(*f),
            Value::Bool(b) => Val::Bool(*b),
            Value::Null | Value::Array | Value::Object => Val::Missing,
        }
    }
}

/// Compares two values; anything involving a missing value or mismatched types is false.
pub fn compare(a: Val<'_>, op: CmpOp, b: Val<'_>) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(&y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => {
            return match op {
                CmpOp::Eq => x == y,
                CmpOp::Ne => x != y,
                _ => false,
            }
        }
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

fn val_in(v: Val<'_>, list: &[Lit]) -> bool {
    list.iter().any(|l| compare(v, CmpOp::Eq, Val::from_lit(l)))
}

// ---- event filters --------------------------------------------------------------------------

impl CFilter {
    pub fn matches(&self, e: &Event<'_>) -> bool {
        let prop = |p: &str| e.property(p).map_or(Val::Missing, Val::from_event);
        match self {
            CFilter::And(v) => v.iter().all(|f| f.matches(e)),
            CFilter::Or(v) => v.iter().any(|f| f.matches(e)),
            CFilter::Not(f) => !f.matches(e),
            CFilter::Cmp { prop: p, op, lit } => compare(prop(p), *op, Val::from_lit(lit)),
            CFilter::In { prop: p, list } => val_in(prop(p), list),
            CFilter::Contains { prop: p, needle } => {
                matches!(prop(p), Val::Str(s) if s.contains(&**needle))
            }
            CFilter::Prefix { prop: p, prefix } => {
                matches!(prop(p), Val::Str(s) if s.starts_with(&**prefix))
            }
            CFilter::Exists(p) => prop(p) != Val::Missing,
        }
    }
}

impl CPattern {
    /// Whether the event matches; `ty` is the event's type symbol (if it has one).
    pub fn matches(&self, ty: Option<u16>, e: &Event<'_>) -> bool {
        let type_ok = match self.event {
            EventMatch::Any => e.kind != EventKind::Forget,
            EventMatch::Type(t) => ty == Some(t),
        };
        type_ok && self.filter.as_ref().is_none_or(|f| f.matches(e))
    }
}

// ---- conditions ----------------------------------------------------------------------------

/// Everything a condition reads.
pub struct Ctx<'a> {
    pub defs: &'a Definitions,
    pub symbols: &'a Symbols,
    pub profile: &'a Profile,
    /// Evaluation time (ms).
    pub now: Millis,
}

/// First bucket still inside a window of `window` ms at `now` (resolution in seconds).
pub fn window_start(now: Millis, window: Millis, resolution: u32) -> u32 {
    let start = secs(now).saturating_sub(secs(window));
    start / resolution.max(1)
}

impl Ctx<'_> {
    fn now_s(&self) -> Secs {
        secs(self.now)
    }

    pub fn eval(&self, c: &Cond) -> bool {
        match c {
            Cond::Const(b) => *b,
            Cond::And(v) => v.iter().all(|x| self.eval(x)),
            Cond::Or(v) => v.iter().any(|x| self.eval(x)),
            Cond::Not(x) => !self.eval(x),
            Cond::Cmp { lhs, op, rhs } => compare(self.operand(lhs), *op, self.operand(rhs)),
            Cond::In { lhs, list } => val_in(self.operand(lhs), list),
            Cond::Contains { lhs, needle } => {
                matches!(self.operand(lhs), Val::Str(s) if s.contains(&**needle))
            }
            Cond::Prefix { lhs, prefix } => {
                matches!(self.operand(lhs), Val::Str(s) if s.starts_with(&**prefix))
            }
            Cond::Exists(o) => self.operand(o) != Val::Missing,
            Cond::Truthy(o) => self.operand(o) == Val::Bool(true),
            Cond::Segment(i) => self.profile.is_member(*i),
            Cond::Absence(f) => {
                let now = self.now_s();
                self.profile.absence(*f).any(|a| a.fired(now))
            }
        }
    }

    fn count(&self, kind: EventKind) -> f64 {
        self.profile
            .type_stats(kind as u16)
            .map_or(0.0, |s| f64::from(s.count))
    }

    fn ratio(&self, num: EventKind, den: EventKind) -> Val<'static> {
        let d = self.count(den);
        if d == 0.0 {
            Val::Missing
        } else {
            Val::Num(self.count(num) / d)
        }
    }

    pub fn score(&self) -> f64 {
        decayed_score(self.profile, self.defs.scoring.half_life, self.now)
    }

    pub fn operand<'s>(&'s self, o: &'s Op) -> Val<'s> {
        let p = self.profile;
        match o {
            Op::Lit(l) => Val::from_lit(l),
            Op::Trait(k) => match p.trait_value(*k) {
                None => Val::Missing,
                Some(crate::profile::TraitRef::Sym(s)) => {
                    Val::Str(self.symbols.name(SymbolClass::Value, u32::from(s)))
                }
                Some(crate::profile::TraitRef::Str(s)) => Val::Str(s),
                Some(crate::profile::TraitRef::Num(n)) => Val::Num(n),
                Some(crate::profile::TraitRef::Bool(b)) => Val::Bool(b),
            },
            Op::Attr(a) => match a {
                Attr::Revenue => Val::Num(p.revenue()),
                Attr::Purchases => Val::Num(self.count(EventKind::Purchase)),
                Attr::Events => Val::Num(p.types().map(|(_, s)| f64::from(s.count)).sum()),
                Attr::OptedOut => {
                    let unsub = p
                        .type_stats(EventKind::Unsubscribe as u16)
                        .map_or(0, |s| s.last);
                    let resub = self
                        .defs
                        .resubscribe
                        .and_then(|t| p.type_stats(t))
                        .map_or(0, |s| s.last);
                    Val::Bool(unsub != 0 && unsub >= resub)
                }
                Attr::FavouriteCategory | Attr::FavouriteProduct => {
                    let slot = if *a == Attr::FavouriteCategory {
                        FAV_CATEGORY
                    } else {
                        FAV_PRODUCT
                    };
                    p.favourite(slot).map_or(Val::Missing, |s| {
                        Val::Str(self.symbols.name(SymbolClass::Value, u32::from(s)))
                    })
                }
                Attr::OpenRate => self.ratio(EventKind::EmailOpen, EventKind::EmailSent),
                Attr::ClickRate => self.ratio(EventKind::EmailClick, EventKind::EmailSent),
            },
            Op::Window { feature, window } => {
                let FeatureKind::Window {
                    resolution, sum, ..
                } = &self.defs.features[*feature as usize].kind
                else {
                    return Val::Missing;
                };
                let from = match window {
                    Some(w) => window_start(self.now, *w, *resolution),
                    None => 0,
                };
                Val::Num(p.window_sum(*feature, sum.is_some(), from))
            }
            Op::SinceType { ty, first } => {
                let t = match ty {
                    None => {
                        if *first {
                            p.first_seen()
                        } else {
                            p.last_seen()
                        }
                    }
                    Some(t) => p
                        .type_stats(*t)
                        .map_or(0, |s| if *first { s.first } else { s.last }),
                };
                self.since(t)
            }
            Op::SinceFeature { feature, first } => {
                let t = p
                    .recency(*feature)
                    .map_or(0, |(f, l)| if *first { f } else { l });
                self.since(t)
            }
            Op::Score => Val::Num(self.score()),
            Op::Arith(op, l, r) => {
                let (Val::Num(a), Val::Num(b)) = (self.operand(l), self.operand(r)) else {
                    return Val::Missing;
                };
                arith(*op, a, b)
            }
        }
    }

    fn since(&self, t: Secs) -> Val<'static> {
        if t == 0 {
            Val::Missing
        } else {
            Val::Num((self.now - millis(t)).max(0) as f64)
        }
    }

    /// The earliest time after `now` at which `c` could change without a new event.
    pub fn next_change(&self, c: &Cond) -> Option<(Millis, TimerKind)> {
        let mut next = None;
        self.eval_next(c, &mut next);
        next
    }

    fn offer(&self, best: &mut Next, at: Millis, kind: TimerKind) {
        if at > self.now && best.is_none_or(|(b, _)| at < b) {
            *best = Some((at, kind));
        }
    }

    /// Evaluates `c` and lowers `next` to the earliest time after `now` at which its value
    /// could change without a new event. One pass does both. Only the leaves evaluation
    /// visits are considered: with `A and B` and `A` false, only a change of `A` can change
    /// the result, and when it does the condition is evaluated (and timed) again.
    pub fn eval_next(&self, c: &Cond, next: &mut Next) -> bool {
        const NONE: Op = Op::Lit(Lit::Bool(false));
        match c {
            Cond::And(v) => v.iter().all(|x| self.eval_next(x, next)),
            Cond::Or(v) => v.iter().any(|x| self.eval_next(x, next)),
            Cond::Not(x) => !self.eval_next(x, next),
            Cond::Cmp { lhs, op, rhs } => {
                let a = self.operand_next(lhs, rhs, next);
                let b = self.operand_next(rhs, lhs, next);
                compare(a, *op, b)
            }
            Cond::In { lhs, list } => val_in(self.operand_next(lhs, &NONE, next), list),
            Cond::Absence(f) => {
                let now = self.now_s();
                let mut fired = false;
                // Only the earliest pending trigger of an instance decides.
                for t in self.profile.absence(*f).filter_map(|a| a.first()) {
                    if t.deadline <= now {
                        fired = true;
                    } else {
                        self.offer(next, millis(t.deadline), TimerKind::Absence);
                    }
                }
                fired
            }
            _ => self.eval(c),
        }
    }

    /// An operand's value; time-dependent operands also offer when they next change (for
    /// `since` and `score`, when the comparison with `other` flips).
    fn operand_next<'s>(&'s self, o: &'s Op, other: &Op, next: &mut Next) -> Val<'s> {
        let p = self.profile;
        match o {
            Op::Window {
                feature,
                window: Some(w),
            } => {
                let FeatureKind::Window {
                    resolution, sum, ..
                } = &self.defs.features[*feature as usize].kind
                else {
                    return Val::Missing;
                };
                let from = window_start(self.now, *w, *resolution);
                let (total, oldest) = p.window_sum_oldest(*feature, sum.is_some(), from);
                if let Some(b) = oldest {
                    // Bucket b leaves the window when now - w reaches its end.
                    let end = (i64::from(b) + 1) * i64::from(*resolution) * SECOND;
                    self.offer(next, end + w, TimerKind::Window);
                }
                Val::Num(total)
            }
            Op::SinceType { .. } | Op::SinceFeature { .. } => {
                let v = self.operand(o);
                if let (Val::Num(elapsed), Op::Lit(Lit::Num(d))) = (v, other) {
                    // The comparison flips when elapsed reaches d (>=) or passes it (>).
                    let at = self.now - elapsed as Millis + *d as Millis;
                    self.offer(next, at, TimerKind::Recency);
                    self.offer(next, at + SECOND, TimerKind::Recency);
                }
                v
            }
            Op::Score => {
                let v = self.operand(o);
                if let (Op::Lit(Lit::Num(thr)), Some(hl)) = (other, self.defs.scoring.half_life) {
                    let s0 = f64::from(p.score);
                    if s0 != 0.0
                        && *thr != 0.0
                        && s0.signum() == thr.signum()
                        && s0.abs() > thr.abs()
                    {
                        // s0 * 2^(-dt/hl) = thr  =>  dt = hl * log2(s0/thr)
                        let dt = (hl as f64 * (s0 / thr).log2()).ceil() as Millis;
                        let at = millis(p.score_at) + dt;
                        // A second past the crossing, in whole seconds, so it has happened.
                        self.offer(next, (at.div_euclid(SECOND) + 1) * SECOND, TimerKind::Score);
                    }
                }
                v
            }
            Op::Arith(op, l, r) => {
                let (Val::Num(a), Val::Num(b)) = (
                    self.operand_next(l, other, next),
                    self.operand_next(r, other, next),
                ) else {
                    return Val::Missing;
                };
                arith(*op, a, b)
            }
            _ => self.operand(o),
        }
    }
}

/// When a condition could next change, and why.
pub type Next = Option<(Millis, TimerKind)>;

fn arith(op: ArithOp, a: f64, b: f64) -> Val<'static> {
    Val::Num(match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div if b == 0.0 => return Val::Missing,
        ArithOp::Div => a / b,
    })
}

/// The lead score at `now`, decayed from its last update.
pub fn decayed_score(p: &Profile, half_life: Option<Millis>, now: Millis) -> f64 {
    decay(f64::from(p.score), half_life, millis(p.score_at), now)
}

/// `points` given at `from`, decayed to `to` (halving every `half_life`; never grown).
pub fn decay(points: f64, half_life: Option<Millis>, from: Millis, to: Millis) -> f64 {
    match half_life {
        Some(hl) if points != 0.0 => {
            let dt = (to - from).max(0) as f64;
            points * (-dt / hl as f64).exp2()
        }
        _ => points,
    }
}
