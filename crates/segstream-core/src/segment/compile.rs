//! From syntax tree to [`Definitions`]: type checking, cycle detection, feature extraction,
//! rule versions and the indexes that let the engine evaluate only the segments an event
//! can affect.
//!
//! Every problem is collected as a [`Diagnostic`] with file, line and column; a file with
//! any error produces no `Definitions` at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::ast::{
    self, ArithOp, CmpOp, Deadline, Expr, Filter, Literal, Operand, Pattern, Span, Spanned, Window,
};
use super::diagnostic::{Diagnostic, Diagnostics, SourceMap};
use crate::event::{EventKind, PropType};
use crate::symbols::{SymbolClass, Symbols};
use crate::time::{format_duration, Millis, DAY, SECOND};

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
    fn ty(self) -> Ty {
        match self {
            Attr::OptedOut => Ty::Bool,
            Attr::FavouriteCategory | Attr::FavouriteProduct => Ty::Str,
            _ => Ty::Num,
        }
    }
    /// Event types whose arrival can change the attribute (`None`: every event).
    fn event_types(self) -> Option<&'static [EventKind]> {
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

impl Definitions {
    /// Parses and compiles a definitions file; every error in it is reported at once.
    pub fn from_source(file: &str, text: &str, symbols: &mut Symbols) -> Result<Self, Diagnostics> {
        let map = SourceMap::new(file, text);
        let (source, mut diags) = super::source::parse_definitions(file, text);
        let compiled = Compiler::new(&map, text, symbols).compile(&source, &mut diags);
        if diags.is_empty() {
            if let Some(mut d) = compiled {
                d.file = file.to_string();
                return Ok(d);
            }
        }
        diags.sort_by_key(|d| (d.line, d.column));
        diags.dedup();
        Err(Diagnostics(diags))
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| &*s.name == name)
    }
}

// ---- types --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Dur,
    Str,
    Bool,
    /// A trait: its type is known only at run time.
    Dyn,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Dur => "a duration",
            Ty::Str => "a string",
            Ty::Bool => "a boolean",
            Ty::Dyn => "a trait value",
        }
    }
    fn compatible(self, other: Ty) -> bool {
        self == other
            || (self == Ty::Dyn && other != Ty::Dur)
            || (other == Ty::Dyn && self != Ty::Dur)
    }
}

fn lit_ty(l: &Literal) -> Ty {
    match l {
        Literal::Num(_) => Ty::Num,
        Literal::Str(_) => Ty::Str,
        Literal::Bool(_) => Ty::Bool,
        Literal::Duration(_) => Ty::Dur,
    }
}

fn compile_lit(l: &Literal) -> Lit {
    match l {
        Literal::Num(n) => Lit::Num(*n),
        Literal::Str(s) => Lit::Str(s.as_str().into()),
        Literal::Bool(b) => Lit::Bool(*b),
        Literal::Duration(ms) => Lit::Num(*ms as f64),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len().max(3) - 1)
        .min()
        .map(|(_, c)| c)
}

// ---- canonical text (for versions and feature keys) --------------------------------------

fn canon_lit(l: &Literal, out: &mut String) {
    match l {
        Literal::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Literal::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        Literal::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Literal::Duration(ms) => out.push_str(&format_duration(*ms)),
    }
}

fn canon_filter(f: &Filter, out: &mut String) {
    let list = |l: &[Spanned<Literal>], out: &mut String| {
        out.push('[');
        for (i, x) in l.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            canon_lit(&x.node, out);
        }
        out.push(']');
    };
    match f {
        Filter::And(v) | Filter::Or(v) => {
            let sep = if matches!(f, Filter::And(_)) {
                " and "
            } else {
                " or "
            };
            out.push('(');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                canon_filter(&x.node, out);
            }
            out.push(')');
        }
        Filter::Not(x) => {
            out.push_str("not ");
            canon_filter(&x.node, out);
        }
        Filter::Compare {
            property,
            op,
            value,
        } => {
            let _ = write!(out, "{}{}", property.node, op.symbol());
            canon_lit(&value.node, out);
        }
        Filter::In { property, list: l } => {
            let _ = write!(out, "{} in ", property.node);
            list(l, out);
        }
        Filter::Contains { property, needle } => {
            let _ = write!(out, "{} contains {:?}", property.node, needle.node);
        }
        Filter::Prefix { property, prefix } => {
            let _ = write!(out, "{} prefix {:?}", property.node, prefix.node);
        }
        Filter::Exists(p) => {
            let _ = write!(out, "{} exists", p.node);
        }
    }
}

fn canon_pattern(p: &Pattern, out: &mut String) {
    out.push_str(&p.event.node);
    if let Some(f) = &p.filter {
        out.push('(');
        canon_filter(&f.node, out);
        out.push(')');
    }
}

fn canon_operand(o: &Operand, out: &mut String) {
    match o {
        Operand::Literal(l) => canon_lit(l, out),
        Operand::Trait(t) => {
            let _ = write!(out, "trait.{t}");
        }
        Operand::Attr(a) => {
            let _ = write!(out, "profile.{a}");
        }
        Operand::Count { pattern, window } => {
            out.push_str("count(");
            canon_pattern(pattern, out);
            out.push(',');
            canon_window(&window.node, out);
            out.push(')');
        }
        Operand::Sum {
            pattern,
            property,
            window,
        } => {
            out.push_str("sum(");
            canon_pattern(pattern, out);
            let _ = write!(out, ",{},", property.node);
            canon_window(&window.node, out);
            out.push(')');
        }
        Operand::Since { pattern, first } => {
            out.push_str(if *first { "since_first(" } else { "since(" });
            canon_pattern(pattern, out);
            out.push(')');
        }
        Operand::Score => out.push_str("score"),
        Operand::Arith { op, lhs, rhs } => {
            out.push('(');
            canon_operand(&lhs.node, out);
            out.push_str(match op {
                ArithOp::Add => "+",
                ArithOp::Sub => "-",
                ArithOp::Mul => "*",
                ArithOp::Div => "/",
            });
            canon_operand(&rhs.node, out);
            out.push(')');
        }
    }
}

fn canon_window(w: &Window, out: &mut String) {
    match w {
        Window::Last(ms) => out.push_str(&format_duration(*ms)),
        Window::Ever => out.push_str("ever"),
    }
}

fn canon_expr(e: &Expr, out: &mut String) {
    match e {
        Expr::Or(v) | Expr::And(v) => {
            let sep = if matches!(e, Expr::And(_)) {
                " and "
            } else {
                " or "
            };
            out.push('(');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                canon_expr(&x.node, out);
            }
            out.push(')');
        }
        Expr::Not(x) => {
            out.push_str("not ");
            canon_expr(&x.node, out);
        }
        Expr::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Expr::Compare { lhs, op, rhs } => {
            canon_operand(&lhs.node, out);
            out.push_str(op.symbol());
            canon_operand(&rhs.node, out);
        }
        Expr::In { lhs, list } => {
            canon_operand(&lhs.node, out);
            out.push_str(" in [");
            for (i, x) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon_lit(&x.node, out);
            }
            out.push(']');
        }
        Expr::Contains { lhs, needle } => {
            canon_operand(&lhs.node, out);
            let _ = write!(out, " contains {:?}", needle.node);
        }
        Expr::Prefix { lhs, prefix } => {
            canon_operand(&lhs.node, out);
            let _ = write!(out, " prefix {:?}", prefix.node);
        }
        Expr::Exists(o) => {
            canon_operand(&o.node, out);
            out.push_str(" exists");
        }
        Expr::Truthy(o) => canon_operand(&o.node, out),
        Expr::InSegment(s) => {
            let _ = write!(out, "in_segment({:?})", s.node);
        }
        Expr::Absence(a) => {
            canon_pattern(&a.trigger, out);
            out.push_str(" then no ");
            canon_pattern(&a.cancel, out);
            if let Some(c) = &a.correlate {
                let _ = write!(out, " with same {}", c.node);
            }
            match &a.deadline.node {
                Deadline::Within(ms) => {
                    let _ = write!(out, " within {}", format_duration(*ms));
                }
                Deadline::Until(p) => {
                    let _ = write!(out, " until {p}");
                }
            }
        }
    }
}

fn hex12(data: &str) -> Arc<str> {
    format!("{:012x}", xxh3_64(data.as_bytes()) >> 16).into()
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

// ---- the compiler -------------------------------------------------------------------------

struct SegInfo {
    types: HashSet<u16>,
    any: bool,
    traits: HashSet<u16>,
    score: bool,
    deps: Vec<(String, Span)>,
    time: bool,
}

struct Compiler<'a> {
    map: &'a SourceMap,
    text: &'a str,
    symbols: &'a mut Symbols,
    features: Vec<Feature>,
    feature_index: HashMap<String, u16>,
    categorical: HashSet<u16>,
    diags: Vec<Diagnostic>,
    segment_names: HashMap<String, usize>,
}

impl<'a> Compiler<'a> {
    fn new(map: &'a SourceMap, text: &'a str, symbols: &'a mut Symbols) -> Self {
        Compiler {
            map,
            text,
            symbols,
            features: Vec::new(),
            feature_index: HashMap::new(),
            categorical: HashSet::new(),
            diags: Vec::new(),
            segment_names: HashMap::new(),
        }
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(self.map.diagnostic(span, msg));
    }

    fn compile(
        mut self,
        src: &ast::DefinitionsSource,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Definitions> {
        for (i, s) in src.segments.iter().enumerate() {
            self.segment_names.insert(s.name.node.clone(), i);
        }
        // Well-known CRM traits hold a few distinct values: profiles store them interned.
        for name in crate::event::CATEGORICAL_TRAITS {
            if let Some(k) = self.symbols.intern(name, SymbolClass::TraitKey) {
                self.categorical.insert(k as u16);
            }
        }
        let scoring = self.compile_scoring(&src.scoring);
        let mut compiled = Vec::new();
        for s in &src.segments {
            let mut info = SegInfo {
                types: HashSet::new(),
                any: false,
                traits: HashSet::new(),
                score: false,
                deps: Vec::new(),
                time: false,
            };
            let cond = self.expr(&s.condition, &mut info);
            if info.score && src.scoring.rules.is_empty() {
                self.error(
                    s.condition.span,
                    format!(
                        "segment `{}` uses `score` but [scoring] defines no rules",
                        s.name.node
                    ),
                );
            }
            let mut canon = String::new();
            canon_expr(&s.condition.node, &mut canon);
            compiled.push((s, cond, info, canon));
        }
        // Dependencies: unknown names, cycles, and a topological order.
        let n = compiled.len();
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, (s, _, info, _)) in compiled.iter().enumerate() {
            for (name, span) in &info.deps {
                match self.segment_names.get(name) {
                    Some(&j) => deps[i].push(j),
                    None => {
                        let hint = suggestion(name, self.segment_names.keys().map(String::as_str))
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default();
                        let msg = format!(
                            "segment `{}` uses unknown segment `{name}`{hint}",
                            s.name.node
                        );
                        self.error(*span, msg);
                    }
                }
            }
        }
        let order = self.topological(&compiled, &deps);
        diags.append(&mut self.diags);
        if !diags.is_empty() {
            return None;
        }
        let order = order?;
        // Versions in dependency order, so a segment's version covers its dependencies.
        let scoring_canon = format!("{scoring:?}");
        let mut versions: Vec<Option<Arc<str>>> = vec![None; n];
        for &i in &order {
            let (_, _, info, canon) = &compiled[i];
            let mut data = canon.clone();
            for &d in &deps[i] {
                data.push('|');
                data.push_str(versions[d].as_deref().unwrap_or(""));
            }
            if info.score {
                data.push('|');
                data.push_str(&scoring_canon);
            }
            versions[i] = Some(hex12(&data));
        }
        let position: HashMap<usize, usize> =
            order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut segments = Vec::with_capacity(n);
        let mut by_type: SymIndex<usize> = SymIndex::default();
        let mut on_any = Vec::new();
        let mut by_trait: SymIndex<usize> = SymIndex::default();
        let mut on_score = Vec::new();
        let mut time_dep = vec![false; n];
        for (p, &i) in order.iter().enumerate() {
            let (s, cond, info, _) = &compiled[i];
            let mut cond = cond.clone();
            renumber_segments(&mut cond, &position);
            time_dep[p] = info.time || deps[i].iter().any(|d| time_dep[position[d]]);
            for t in &info.types {
                by_type.add(*t, p);
            }
            if info.any {
                on_any.push(p);
            }
            for t in &info.traits {
                by_trait.add(*t, p);
            }
            if info.score {
                on_score.push(p);
            }
            segments.push(Segment {
                name: s.name.node.as_str().into(),
                description: s.description.clone(),
                version: versions[i].clone().unwrap_or_else(|| "".into()),
                condition_text: self.map_text(s.condition.span),
                cond,
                dependents: Vec::new(),
                time_dependent: time_dep[p],
            });
        }
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                let (pi, pj) = (position[&i], position[&j]);
                if !segments[pj].dependents.contains(&pi) {
                    segments[pj].dependents.push(pi);
                }
            }
        }
        let mut features_by_type: SymIndex<u16> = SymIndex::default();
        let mut features_any = Vec::new();
        for (fi, f) in self.features.iter().enumerate() {
            let mut add = |m: EventMatch| match m {
                EventMatch::Any => {
                    if !features_any.contains(&(fi as u16)) {
                        features_any.push(fi as u16)
                    }
                }
                EventMatch::Type(t) => features_by_type.add(t, fi as u16),
            };
            add(f.pattern.event);
            if let FeatureKind::Absence { cancel, .. } = &f.kind {
                add(cancel.event);
            }
        }
        let mut all = String::new();
        for s in &segments {
            let _ = write!(all, "{}={};", s.name, s.version);
        }
        let _ = write!(all, "{scoring_canon}");
        Some(Definitions {
            file: String::new(),
            version: hex12(&all),
            segments,
            features: self.features,
            scoring,
            by_type,
            on_any,
            by_trait,
            on_score,
            features_by_type,
            features_any,
            categorical_traits: self.categorical,
            resubscribe: self.symbols.event_type(EventKind::Custom, RESUBSCRIBE),
        })
    }

    /// The condition as written (for display in the API).
    fn map_text(&self, span: Span) -> String {
        self.text
            .get(span.start..span.end)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    fn topological(
        &mut self,
        compiled: &[(&ast::SegmentSource, Cond, SegInfo, String)],
        deps: &[Vec<usize>],
    ) -> Option<Vec<usize>> {
        // 0 = unvisited, 1 = on stack, 2 = done
        fn visit(
            i: usize,
            deps: &[Vec<usize>],
            state: &mut [u8],
            stack: &mut Vec<usize>,
            order: &mut Vec<usize>,
            cycles: &mut Vec<Vec<usize>>,
        ) {
            state[i] = 1;
            stack.push(i);
            for &j in &deps[i] {
                match state[j] {
                    0 => visit(j, deps, state, stack, order, cycles),
                    1 => {
                        let from = stack.iter().position(|&x| x == j).unwrap_or(0);
                        cycles.push(stack[from..].to_vec());
                    }
                    _ => {}
                }
            }
            stack.pop();
            state[i] = 2;
            order.push(i);
        }
        let n = compiled.len();
        let mut state = vec![0u8; n];
        let mut order = Vec::with_capacity(n);
        let mut cycles = Vec::new();
        for i in 0..n {
            if state[i] == 0 {
                visit(
                    i,
                    deps,
                    &mut state,
                    &mut Vec::new(),
                    &mut order,
                    &mut cycles,
                );
            }
        }
        for cycle in &cycles {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| compiled[i].0.name.node.as_str())
                .collect();
            let first = cycle[0];
            let path = format!("{} -> {}", names.join(" -> "), names[0]);
            let span = compiled[first].0.name.span;
            self.error(
                span,
                format!("segments depend on each other in a cycle: {path}"),
            );
        }
        cycles.is_empty().then_some(order)
    }

    fn compile_scoring(&mut self, s: &ast::ScoringSource) -> Scoring {
        let half_life = s.half_life.as_ref().and_then(|h| {
            if h.node <= 0 || h.node > MAX_WINDOW {
                self.error(
                    h.span,
                    format!(
                        "`half_life` must be between 1s and {}",
                        format_duration(MAX_WINDOW)
                    ),
                );
                None
            } else {
                Some(h.node)
            }
        });
        let mut rules = Vec::new();
        for r in &s.rules {
            if !r.points.node.is_finite() || r.points.node.abs() > 1e6 {
                self.error(
                    r.points.span,
                    "`points` must be a finite number within ±1000000",
                );
            }
            if let Some(pattern) = self.pattern(&r.pattern) {
                rules.push(ScoreRule {
                    pattern,
                    points: r.points.node as f32,
                });
            }
        }
        Scoring { half_life, rules }
    }

    fn event_match(&mut self, ev: &Spanned<String>) -> Option<EventMatch> {
        let name = ev.node.as_str();
        if name == "any" {
            return Some(EventMatch::Any);
        }
        let kind = EventKind::from_type(name);
        if kind == EventKind::Forget {
            self.error(
                ev.span,
                "`forget` erases the profile; it cannot be used in a condition",
            );
            return None;
        }
        if kind == EventKind::Custom {
            if let Some(s) = suggestion(name, EventKind::KNOWN.iter().map(|k| k.name())) {
                self.error(
                    ev.span,
                    format!("unknown event type `{name}`; did you mean `{s}`? (other names are custom event types, but this one is too close to a known type)"),
                );
                return None;
            }
        }
        match self.symbols.event_type(kind, name) {
            Some(t) => Some(EventMatch::Type(t)),
            None => {
                self.error(ev.span, "too many distinct event types");
                None
            }
        }
    }

    fn pattern(&mut self, p: &Pattern) -> Option<CPattern> {
        let event = self.event_match(&p.event)?;
        let kind = EventKind::from_type(&p.event.node);
        let filter = match &p.filter {
            Some(f) => Some(self.filter(&f.node, kind)?),
            None => None,
        };
        Some(CPattern { event, filter })
    }

    fn check_property(
        &mut self,
        kind: EventKind,
        prop: &Spanned<String>,
        value: Option<&Spanned<Literal>>,
    ) -> bool {
        let known = kind.known_properties();
        match known.iter().find(|(n, _)| *n == prop.node) {
            Some((_, ty)) => {
                if let Some(v) = value {
                    let ok = matches!(
                        (ty, &v.node),
                        (PropType::Str, Literal::Str(_))
                            | (PropType::Num, Literal::Num(_))
                            | (PropType::Timestamp, Literal::Num(_) | Literal::Str(_))
                    );
                    if !ok {
                        let want = match ty {
                            PropType::Str => "a string",
                            PropType::Num => "a number",
                            PropType::Timestamp => "a timestamp",
                        };
                        self.error(
                            v.span,
                            format!(
                                "`{}` of `{}` is {want}; it cannot be compared with {}",
                                prop.node,
                                kind.name(),
                                lit_ty(&v.node).name()
                            ),
                        );
                        return false;
                    }
                }
                true
            }
            None => {
                if let Some(s) = suggestion(&prop.node, known.iter().map(|(n, _)| *n)) {
                    self.error(
                        prop.span,
                        format!(
                            "`{}` has no documented property `{}`; did you mean `{s}`?",
                            kind.name(),
                            prop.node
                        ),
                    );
                    return false;
                }
                true
            }
        }
    }

    fn filter(&mut self, f: &Filter, kind: EventKind) -> Option<CFilter> {
        let lit_ok = |c: &mut Self, l: &Spanned<Literal>| {
            if matches!(l.node, Literal::Duration(_)) {
                c.error(
                    l.span,
                    "a duration cannot be compared with an event property",
                );
                false
            } else {
                true
            }
        };
        Some(match f {
            Filter::And(v) | Filter::Or(v) => {
                let mut out = Vec::new();
                let mut ok = true;
                for x in v {
                    match self.filter(&x.node, kind) {
                        Some(c) => out.push(c),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                if matches!(f, Filter::And(_)) {
                    CFilter::And(out)
                } else {
                    CFilter::Or(out)
                }
            }
            Filter::Not(x) => CFilter::Not(Box::new(self.filter(&x.node, kind)?)),
            Filter::Compare {
                property,
                op,
                value,
            } => {
                let ok = lit_ok(self, value) & self.check_property(kind, property, Some(value));
                if !ok {
                    return None;
                }
                if matches!(value.node, Literal::Bool(_) | Literal::Str(_))
                    && !matches!(op, CmpOp::Eq | CmpOp::Ne)
                    && matches!(value.node, Literal::Bool(_))
                {
                    self.error(value.span, "booleans can only be compared with = or !=");
                    return None;
                }
                CFilter::Cmp {
                    prop: property.node.as_str().into(),
                    op: *op,
                    lit: compile_lit(&value.node),
                }
            }
            Filter::In { property, list } => {
                let mut ok = true;
                for l in list {
                    ok &= lit_ok(self, l) && self.check_property(kind, property, Some(l));
                }
                if !ok {
                    return None;
                }
                CFilter::In {
                    prop: property.node.as_str().into(),
                    list: list.iter().map(|l| compile_lit(&l.node)).collect(),
                }
            }
            Filter::Contains { property, needle } => {
                self.check_property(kind, property, None).then_some(())?;
                CFilter::Contains {
                    prop: property.node.as_str().into(),
                    needle: needle.node.as_str().into(),
                }
            }
            Filter::Prefix { property, prefix } => {
                self.check_property(kind, property, None).then_some(())?;
                CFilter::Prefix {
                    prop: property.node.as_str().into(),
                    prefix: prefix.node.as_str().into(),
                }
            }
            Filter::Exists(p) => {
                self.check_property(kind, p, None).then_some(())?;
                CFilter::Exists(p.node.as_str().into())
            }
        })
    }

    fn feature(&mut self, key: String, pattern: CPattern, kind: FeatureKind) -> Option<u16> {
        if let Some(&i) = self.feature_index.get(&key) {
            // Same state, possibly a longer retention.
            if let (
                FeatureKind::Window { retention, .. },
                FeatureKind::Window { retention: new, .. },
            ) = (&mut self.features[i as usize].kind, &kind)
            {
                *retention = (*retention).max(*new);
            }
            return Some(i);
        }
        if self.features.len() >= 4000 {
            return None;
        }
        let i = self.features.len() as u16;
        self.features.push(Feature {
            key: key.clone(),
            pattern,
            kind,
        });
        self.feature_index.insert(key, i);
        Some(i)
    }

    fn note_pattern(&self, p: &CPattern, info: &mut SegInfo) {
        match p.event {
            EventMatch::Any => info.any = true,
            EventMatch::Type(t) => {
                info.types.insert(t);
            }
        }
    }

    fn window(&mut self, w: &Spanned<Window>) -> Option<Option<Millis>> {
        match w.node {
            Window::Ever => Some(None),
            Window::Last(ms) if ms <= 0 => {
                self.error(
                    w.span,
                    "an empty window can never hold an event; use a positive duration",
                );
                None
            }
            Window::Last(ms) if ms > MAX_WINDOW => {
                self.error(
                    w.span,
                    format!(
                        "window {} is longer than the {} maximum; use `ever` for lifetime totals",
                        format_duration(ms),
                        format_duration(MAX_WINDOW)
                    ),
                );
                None
            }
            Window::Last(ms) if ms < SECOND => {
                self.error(w.span, "windows are at least 1s long");
                None
            }
            Window::Last(ms) => Some(Some(ms)),
        }
    }

    fn operand(&mut self, o: &Spanned<Operand>, info: &mut SegInfo) -> Option<(Op, Ty)> {
        Some(match &o.node {
            Operand::Literal(l) => (Op::Lit(compile_lit(l)), lit_ty(l)),
            Operand::Trait(name) => {
                let Some(k) = self.symbols.intern(name, SymbolClass::TraitKey) else {
                    self.error(o.span, "too many distinct trait names");
                    return None;
                };
                info.traits.insert(k as u16);
                (Op::Trait(k as u16), Ty::Dyn)
            }
            Operand::Attr(name) => {
                let Some((_, a)) = Attr::ALL.iter().find(|(n, _)| n == name) else {
                    let names: Vec<&str> = Attr::ALL.iter().map(|(n, _)| *n).collect();
                    let hint = suggestion(name, names.iter().copied())
                        .map(|s| format!("did you mean `profile.{s}`? "))
                        .unwrap_or_default();
                    self.error(
                        o.span,
                        format!(
                            "unknown profile attribute `profile.{name}`; {hint}known: {}",
                            names.join(", ")
                        ),
                    );
                    return None;
                };
                match a.event_types() {
                    None => info.any = true,
                    Some(kinds) => {
                        for k in kinds {
                            if *k == EventKind::Custom {
                                if let Some(t) =
                                    self.symbols.event_type(EventKind::Custom, RESUBSCRIBE)
                                {
                                    info.types.insert(t);
                                }
                            } else {
                                info.types.insert(*k as u16);
                            }
                        }
                    }
                }
                (Op::Attr(*a), a.ty())
            }
            Operand::Count { pattern, window }
            | Operand::Sum {
                pattern, window, ..
            } => {
                let p = self.pattern(pattern);
                let w = self.window(window);
                let sum = match &o.node {
                    Operand::Sum { property, .. } => {
                        let kind = EventKind::from_type(&pattern.event.node);
                        if let Some((_, ty)) = kind
                            .known_properties()
                            .iter()
                            .find(|(n, _)| *n == property.node)
                        {
                            if *ty != PropType::Num {
                                self.error(
                                    property.span,
                                    format!(
                                        "`{}` of `{}` is not a number; it cannot be summed",
                                        property.node,
                                        kind.name()
                                    ),
                                );
                                return None;
                            }
                        } else if !self.check_property(kind, property, None) {
                            return None;
                        }
                        Some(property.node.as_str())
                    }
                    _ => None,
                };
                let (p, w) = (p?, w?);
                self.note_pattern(&p, info);
                let mut key = String::from("win|");
                let (resolution, retention) = match w {
                    Some(ms) => {
                        info.time = true;
                        let r = resolution_for(ms);
                        let _ = write!(key, "{r}|");
                        (r, (ms / SECOND) as u32)
                    }
                    None => {
                        key.push_str("ever|");
                        (0, 0)
                    }
                };
                if let Some(s) = sum {
                    let _ = write!(key, "sum={s}|");
                }
                canon_pattern(pattern, &mut key);
                let f = self.feature(
                    key,
                    p,
                    FeatureKind::Window {
                        resolution,
                        retention,
                        sum: sum.map(Into::into),
                    },
                );
                let Some(f) = f else {
                    self.error(o.span, "too many distinct aggregates in one file");
                    return None;
                };
                (
                    Op::Window {
                        feature: f,
                        window: w,
                    },
                    Ty::Num,
                )
            }
            Operand::Since { pattern, first } => {
                let p = self.pattern(pattern)?;
                self.note_pattern(&p, info);
                info.time = true;
                let op = match (&p.event, &p.filter) {
                    (EventMatch::Any, None) => Op::SinceType {
                        ty: None,
                        first: *first,
                    },
                    (EventMatch::Type(t), None) => Op::SinceType {
                        ty: Some(*t),
                        first: *first,
                    },
                    (_, Some(_)) => {
                        let mut key = String::from("rec|");
                        canon_pattern(pattern, &mut key);
                        let Some(f) = self.feature(key, p, FeatureKind::Recency) else {
                            self.error(o.span, "too many distinct aggregates in one file");
                            return None;
                        };
                        Op::SinceFeature {
                            feature: f,
                            first: *first,
                        }
                    }
                };
                (op, Ty::Dur)
            }
            Operand::Score => {
                info.score = true;
                info.time = true;
                (Op::Score, Ty::Num)
            }
            Operand::Arith { op, lhs, rhs } => {
                let l = self.operand(lhs, info);
                let r = self.operand(rhs, info);
                let ((l, lt), (r, rt)) = (l?, r?);
                for (x, t, s) in [(&l, lt, lhs.span), (&r, rt, rhs.span)] {
                    if matches!(
                        x,
                        Op::Score | Op::SinceType { .. } | Op::SinceFeature { .. }
                    ) {
                        self.error(s, "`score` and `since(...)` can only be compared directly with a literal, not used in arithmetic");
                        return None;
                    }
                    if !matches!(t, Ty::Num | Ty::Dyn) {
                        self.error(s, format!("arithmetic needs numbers, found {}", t.name()));
                        return None;
                    }
                }
                (Op::Arith(*op, Box::new(l), Box::new(r)), Ty::Num)
            }
        })
    }

    fn expr(&mut self, e: &Spanned<Expr>, info: &mut SegInfo) -> Cond {
        self.expr_opt(e, info).unwrap_or(Cond::Const(false))
    }

    fn expr_opt(&mut self, e: &Spanned<Expr>, info: &mut SegInfo) -> Option<Cond> {
        Some(match &e.node {
            Expr::Or(v) => Cond::Or(v.iter().map(|x| self.expr(x, info)).collect()),
            Expr::And(v) => Cond::And(v.iter().map(|x| self.expr(x, info)).collect()),
            Expr::Not(x) => Cond::Not(Box::new(self.expr(x, info))),
            Expr::Bool(b) => Cond::Const(*b),
            Expr::Compare { lhs, op, rhs } => {
                let l = self.operand(lhs, info);
                let r = self.operand(rhs, info);
                let ((l, lt), (r, rt)) = (l?, r?);
                if !lt.compatible(rt) {
                    let hint = if lt == Ty::Dur || rt == Ty::Dur {
                        " (`since(...)` is a duration: compare it with a duration such as 60d)"
                    } else {
                        ""
                    };
                    self.error(
                        rhs.span,
                        format!("cannot compare {} with {}{hint}", lt.name(), rt.name()),
                    );
                    return None;
                }
                if (lt == Ty::Bool || rt == Ty::Bool) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    self.error(e.span, "booleans can only be compared with = or !=");
                    return None;
                }
                for (x, other, span) in [(&l, &r, rhs.span), (&r, &l, lhs.span)] {
                    let direct = matches!(
                        x,
                        Op::Score | Op::SinceType { .. } | Op::SinceFeature { .. }
                    );
                    if direct && !matches!(other, Op::Lit(_)) {
                        self.error(span, "`score` and `since(...)` must be compared with a literal number or duration");
                        return None;
                    }
                    if matches!(x, Op::SinceType { .. } | Op::SinceFeature { .. }) {
                        if let Op::Lit(Lit::Num(d)) = other {
                            if *d < 0.0 || *d > MAX_WINDOW as f64 {
                                self.error(
                                    span,
                                    format!(
                                        "impossible duration: use 0s..{}",
                                        format_duration(MAX_WINDOW)
                                    ),
                                );
                                return None;
                            }
                        }
                    }
                    if let (Op::Window { .. }, Op::Lit(Lit::Num(n))) = (x, other) {
                        let never = if std::ptr::eq(x, &l) {
                            (*n < 0.0 && matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Eq))
                                || (*n <= 0.0 && *op == CmpOp::Lt)
                        } else {
                            (*n < 0.0 && matches!(op, CmpOp::Gt | CmpOp::Ge | CmpOp::Eq))
                                || (*n <= 0.0 && *op == CmpOp::Gt)
                        };
                        let counts = matches!(&l, Op::Window { feature, .. } if self.is_count(*feature))
                            || matches!(&r, Op::Window { feature, .. } if self.is_count(*feature));
                        if never && counts {
                            self.error(e.span, "impossible condition: a count is never negative");
                            return None;
                        }
                    }
                }
                if let (Op::Trait(k), Op::Lit(_)) | (Op::Lit(_), Op::Trait(k)) = (&l, &r) {
                    if matches!(op, CmpOp::Eq | CmpOp::Ne) {
                        self.categorical.insert(*k);
                    }
                }
                Cond::Cmp {
                    lhs: l,
                    op: *op,
                    rhs: r,
                }
            }
            Expr::In { lhs, list } => {
                let (l, lt) = self.operand(lhs, info)?;
                if matches!(lt, Ty::Dur | Ty::Bool) {
                    self.error(
                        lhs.span,
                        format!("`in` needs a string or number, found {}", lt.name()),
                    );
                    return None;
                }
                for x in list {
                    let t = lit_ty(&x.node);
                    if !lt.compatible(t) || t == Ty::Dur {
                        self.error(
                            x.span,
                            format!("list item is {}, but the value is {}", t.name(), lt.name()),
                        );
                        return None;
                    }
                }
                if let Op::Trait(k) = l {
                    self.categorical.insert(k);
                }
                Cond::In {
                    lhs: l,
                    list: list.iter().map(|x| compile_lit(&x.node)).collect(),
                }
            }
            Expr::Contains { lhs, needle }
            | Expr::Prefix {
                lhs,
                prefix: needle,
            } => {
                let (l, lt) = self.operand(lhs, info)?;
                if !matches!(lt, Ty::Str | Ty::Dyn) {
                    self.error(
                        lhs.span,
                        format!("`contains` and `prefix` need a string, found {}", lt.name()),
                    );
                    return None;
                }
                let n: Box<str> = needle.node.as_str().into();
                if matches!(e.node, Expr::Contains { .. }) {
                    Cond::Contains { lhs: l, needle: n }
                } else {
                    Cond::Prefix { lhs: l, prefix: n }
                }
            }
            Expr::Exists(o) => {
                let (l, _) = self.operand(o, info)?;
                if !matches!(
                    l,
                    Op::Trait(_) | Op::Attr(Attr::FavouriteCategory | Attr::FavouriteProduct)
                ) {
                    self.error(
                        o.span,
                        "`exists` applies to traits and favourites; for events use count(...) >= 1",
                    );
                    return None;
                }
                Cond::Exists(l)
            }
            Expr::Truthy(o) => {
                let (l, t) = self.operand(o, info)?;
                if !matches!(t, Ty::Bool | Ty::Dyn) {
                    self.error(
                        o.span,
                        format!(
                            "expected a condition, found {}; compare it with something",
                            t.name()
                        ),
                    );
                    return None;
                }
                Cond::Truthy(l)
            }
            Expr::InSegment(name) => {
                info.deps.push((name.node.clone(), name.span));
                match self.segment_names.get(&name.node) {
                    Some(&i) => Cond::Segment(i),
                    None => return None,
                }
            }
            Expr::Absence(a) => {
                let trigger = self.pattern(&a.trigger);
                let cancel = self.pattern(&a.cancel);
                let (trigger, cancel) = (trigger?, cancel?);
                let deadline = match &a.deadline.node {
                    Deadline::Within(ms) if *ms < SECOND || *ms > MAX_WINDOW => {
                        self.error(
                            a.deadline.span,
                            format!(
                                "impossible deadline: use 1s..{}",
                                format_duration(MAX_WINDOW)
                            ),
                        );
                        return None;
                    }
                    Deadline::Within(ms) => CDeadline::Within(*ms),
                    Deadline::Until(p) => {
                        let kind = EventKind::from_type(&a.trigger.event.node);
                        if let Some((_, ty)) = kind.known_properties().iter().find(|(n, _)| n == p)
                        {
                            if *ty != PropType::Timestamp {
                                self.error(
                                    a.deadline.span,
                                    format!("`{p}` of `{}` is not a timestamp", kind.name()),
                                );
                                return None;
                            }
                        }
                        CDeadline::Until(p.as_str().into())
                    }
                };
                if trigger == cancel && a.correlate.is_none() {
                    self.error(
                        e.span,
                        "impossible condition: every trigger is also its own cancel",
                    );
                    return None;
                }
                if let Some(c) = &a.correlate {
                    let kind = EventKind::from_type(&a.trigger.event.node);
                    if !self.check_property(kind, c, None) {
                        return None;
                    }
                }
                self.note_pattern(&trigger, info);
                self.note_pattern(&cancel, info);
                info.time = true;
                let mut key = String::from("abs|");
                canon_expr(&e.node, &mut key);
                let kind = FeatureKind::Absence {
                    cancel,
                    correlate: a.correlate.as_ref().map(|c| c.node.as_str().into()),
                    deadline,
                };
                let Some(f) = self.feature(key, trigger, kind) else {
                    self.error(e.span, "too many distinct aggregates in one file");
                    return None;
                };
                Cond::Absence(f)
            }
        })
    }

    fn is_count(&self, feature: u16) -> bool {
        matches!(
            &self.features[feature as usize].kind,
            FeatureKind::Window { sum: None, .. }
        )
    }
}

fn renumber_segments(c: &mut Cond, position: &HashMap<usize, usize>) {
    match c {
        Cond::And(v) | Cond::Or(v) => v.iter_mut().for_each(|x| renumber_segments(x, position)),
        Cond::Not(x) => renumber_segments(x, position),
        Cond::Segment(i) => *i = position[i],
        _ => {}
    }
}

/// Names of the segments as a sorted map to their versions (for reload reports and APIs).
pub fn versions(defs: &Definitions) -> BTreeMap<String, String> {
    defs.segments
        .iter()
        .map(|s| (s.name.to_string(), s.version.to_string()))
        .collect()
}
