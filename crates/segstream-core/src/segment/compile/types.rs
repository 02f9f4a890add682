//! The compiled form of segment definitions: what the checker produces and the engine
//! evaluates. Conditions refer to segments, features, event types and trait keys by index
//! (symbols from [`Symbols`](crate::symbols::Symbols)); only event properties stay names.

use std::collections::HashSet;
use std::sync::Arc;

use crate::event::EventKind;
use crate::segment::ast::{ArithOp, CmpOp};
use crate::time::{Millis, DAY, SECOND};

/// The longest window or deadline a definition may use.
pub const MAX_WINDOW: Millis = 3 * 366 * DAY;

/// A compiled literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Num(f64),
    Str(Box<str>),
    Bool(bool),
}

/// Which event types a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventMatch {
    /// Every event except `forget`.
    Any,
    Type(u16),
}

/// A compiled property filter over one event.
#[derive(Debug, Clone, PartialEq)]
pub enum CFilter {
    And(Vec<CFilter>),
    Or(Vec<CFilter>),
    Not(Box<CFilter>),
    Cmp { prop: Box<str>, op: CmpOp, lit: Lit },
    In { prop: Box<str>, list: Vec<Lit> },
    Contains { prop: Box<str>, needle: Box<str> },
    Prefix { prop: Box<str>, prefix: Box<str> },
    Exists(Box<str>),
}

/// A compiled event pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct CPattern {
    pub event: EventMatch,
    pub filter: Option<CFilter>,
}

/// What a feature keeps in each profile.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureKind {
    /// Bucketed count (or sum of `sum`) of matching events; buckets of `resolution` seconds,
    /// kept for `retention` seconds. `resolution == 0` means one lifetime bucket.
    Window {
        resolution: u32,
        retention: u32,
        sum: Option<Box<str>>,
    },
    /// First and last time a filtered pattern matched.
    Recency,
    /// "trigger, then no cancel before the deadline".
    Absence {
        cancel: CPattern,
        correlate: Option<Box<str>>,
        deadline: CDeadline,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CDeadline {
    Within(Millis),
    Until(Box<str>),
}

/// Resolution of the buckets for a window: the largest of 1 s, 1 min, 5 min, 1 h, 1 d,
/// 1 w that still gives at least 24 buckets per window (a sliding window is exact to one
/// bucket: under 1/24 of its length).
pub fn resolution_for(window: Millis) -> u32 {
    let secs = (window / SECOND).max(1);
    [604_800u32, 86_400, 3_600, 300, 60, 1]
        .into_iter()
        .find(|r| i64::from(*r) * 24 <= secs)
        .unwrap_or(1)
}

/// Per-profile state that conditions read. Features are shared between segments that use
/// the same aggregate and survive a reload when their `key` is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Canonical description; equal keys mean interchangeable state.
    pub key: String,
    pub pattern: CPattern,
    pub kind: FeatureKind,
}

/// Computed profile attributes (`profile.NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    Revenue,
    Purchases,
    Events,
    OptedOut,
    FavouriteCategory,
    FavouriteProduct,
    OpenRate,
    ClickRate,
}

impl Attr {
    pub const ALL: [(&'static str, Attr); 8] = [
        ("revenue", Attr::Revenue),
        ("purchases", Attr::Purchases),
        ("events", Attr::Events),
        ("opted_out", Attr::OptedOut),
        ("favourite_category", Attr::FavouriteCategory),
        ("favourite_product", Attr::FavouriteProduct),
        ("open_rate", Attr::OpenRate),
        ("click_rate", Attr::ClickRate),
    ];
    /// Event types whose arrival can change the attribute (`None`: every event).
    pub(super) fn event_types(self) -> Option<&'static [EventKind]> {
        Some(match self {
            Attr::Revenue | Attr::Purchases | Attr::FavouriteCategory | Attr::FavouriteProduct => {
                &[EventKind::Purchase]
            }
            Attr::Events => return None,
            Attr::OptedOut => &[EventKind::Unsubscribe, EventKind::Custom],
            Attr::OpenRate => &[EventKind::EmailOpen, EventKind::EmailSent],
            Attr::ClickRate => &[EventKind::EmailClick, EventKind::EmailSent],
        })
    }
}

/// The custom event type that ends an opt-out (`profile.opted_out`).
pub const RESUBSCRIBE: &str = "subscribe";

/// A compiled operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Lit(Lit),
    Trait(u16),
    Attr(Attr),
    /// A windowed feature read over `window` ms (`None`: lifetime).
    Window {
        feature: u16,
        window: Option<Millis>,
    },
    /// Time since the last (or first) event of a type (`None`: any type).
    SinceType {
        ty: Option<u16>,
        first: bool,
    },
    /// Time since the last (or first) match of a filtered pattern.
    SinceFeature {
        feature: u16,
        first: bool,
    },
    Score,
    Arith(ArithOp, Box<Op>, Box<Op>),
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Const(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp { lhs: Op, op: CmpOp, rhs: Op },
    In { lhs: Op, list: Vec<Lit> },
    Contains { lhs: Op, needle: Box<str> },
    Prefix { lhs: Op, prefix: Box<str> },
    Exists(Op),
    Truthy(Op),
    Segment(usize),
    Absence(u16),
}

/// One compiled segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub name: Arc<str>,
    pub description: Option<String>,
    /// Content hash of the condition and of everything it depends on.
    pub version: Arc<str>,
    pub condition_text: String,
    pub cond: Cond,
    /// Segments whose conditions use this one (`in_segment`).
    pub dependents: Vec<usize>,
    /// Whether time alone can change the result (windows, recency, decay, deadlines).
    pub time_dependent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRule {
    pub pattern: CPattern,
    pub points: f32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scoring {
    pub half_life: Option<Millis>,
    pub rules: Vec<ScoreRule>,
}

/// A validated, compiled set of segment definitions.
#[derive(Debug, Clone)]
pub struct Definitions {
    pub file: String,
    /// The text the set was compiled from (a preview compiles a candidate segment
    /// together with it).
    pub source: Arc<str>,
    /// Hash of the whole set.
    pub version: Arc<str>,
    /// In dependency order: a segment comes after every segment it uses.
    pub segments: Vec<Segment>,
    pub features: Vec<Feature>,
    pub scoring: Scoring,
    /// Segments an event of a type can affect.
    pub by_type: SymIndex<usize>,
    /// Segments every event can affect.
    pub on_any: Vec<usize>,
    /// Segments an `identify` changing a trait can affect.
    pub by_trait: SymIndex<usize>,
    /// Segments that read the score (affected by every scored event).
    pub on_score: Vec<usize>,
    /// Features an event of a type updates (triggers and cancels alike).
    pub features_by_type: SymIndex<u16>,
    pub features_any: Vec<u16>,
    /// Trait keys compared by value (their values are worth interning).
    pub categorical_traits: HashSet<u16>,
    /// The symbol of the custom `subscribe` event that ends an opt-out.
    pub resubscribe: Option<u16>,
}

/// Lists keyed by a (small, dense) symbol: a lookup is an index, not a hash.
#[derive(Debug, Clone)]
pub struct SymIndex<T>(Vec<Vec<T>>);

impl<T> Default for SymIndex<T> {
    fn default() -> Self {
        SymIndex(Vec::new())
    }
}

impl<T: PartialEq> SymIndex<T> {
    pub fn add(&mut self, sym: u16, value: T) {
        let i = usize::from(sym);
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Vec::new);
        }
        if !self.0[i].contains(&value) {
            self.0[i].push(value);
        }
    }

    pub fn get(&self, sym: u16) -> &[T] {
        self.0.get(usize::from(sym)).map_or(&[], Vec::as_slice)
    }
}
