//! The checker: turns the syntax tree of a definitions file into [`Definitions`].
//!
//! This file holds the [`Compiler`] and the whole-file passes: segment names and
//! dependencies, cycle detection and the dependency order, shared features, and the indexes
//! that let the engine evaluate only the segments an event can affect. Checking one
//! condition is in [`conditions`] (operands, comparisons, types) and [`events`] (event
//! types, patterns, property filters, the scoring table).
//!
//! Errors are collected, never returned early across segments: one run reports every
//! problem in the file, each with its span.

mod conditions;
mod events;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::canonical::{self, canon_expr, RuleText};
use super::types::{
    Attr, CPattern, Cond, Definitions, EventMatch, Feature, FeatureKind, Lit, Segment, SymIndex,
    RESUBSCRIBE,
};
use crate::event::EventKind;
use crate::segment::ast::{self, Literal, Span};
use crate::segment::diagnostic::{Diagnostic, SourceMap};
use crate::segment::suggest::suggest;
use crate::symbols::{SymbolClass, Symbols};

/// The most features (distinct aggregates) one file may define.
const MAX_FEATURES: usize = 4000;

// ---- types --------------------------------------------------------------------------------

/// The type of an operand, as far as it is known before run time.
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

impl Attr {
    fn ty(self) -> Ty {
        match self {
            Attr::OptedOut => Ty::Bool,
            Attr::FavouriteCategory | Attr::FavouriteProduct => Ty::Str,
            _ => Ty::Num,
        }
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

// ---- the compiler -------------------------------------------------------------------------

/// What checking one condition found out about it.
struct SegInfo {
    /// Event types whose arrival can change it.
    types: HashSet<u16>,
    /// Whether every event can change it.
    any: bool,
    /// Trait keys it reads.
    traits: HashSet<u16>,
    /// Whether it reads `score`.
    score: bool,
    /// Segments it uses (`in_segment`), by name, where they are named.
    deps: Vec<(String, Span)>,
    /// Whether time alone can change it (windows, recency, decay, deadlines).
    time: bool,
}

/// One segment after checking its condition, in file order.
struct Checked<'s> {
    source: &'s ast::SegmentSource,
    /// `Cond::Segment` holds file positions until the segments are put in order.
    cond: Cond,
    info: SegInfo,
    /// Canonical text of the condition.
    canon: String,
}

/// Segments in dependency order and the indexes of what can affect them.
struct Ordered {
    segments: Vec<Segment>,
    by_type: SymIndex<usize>,
    on_any: Vec<usize>,
    by_trait: SymIndex<usize>,
    on_score: Vec<usize>,
}

pub(super) struct Compiler<'a> {
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
    pub(super) fn new(map: &'a SourceMap, text: &'a str, symbols: &'a mut Symbols) -> Self {
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

    /// Checks and compiles a whole file; its errors are appended to `diags`, and with any
    /// error (there or already in `diags`) there is no result.
    pub(super) fn compile(
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
        let checked: Vec<Checked<'_>> = src
            .segments
            .iter()
            .map(|s| self.check_segment(s, &src.scoring))
            .collect();
        // Dependencies: unknown names, cycles, and a topological order.
        let deps = self.dependencies(&checked);
        let order = self.topological(&checked, &deps);
        diags.append(&mut self.diags);
        if !diags.is_empty() {
            return None;
        }
        let order = order?;
        // Versions in dependency order, so a segment's version covers its dependencies.
        let scoring_canon = canonical::scoring_text(&scoring);
        let rules: Vec<RuleText<'_>> = checked
            .iter()
            .zip(&deps)
            .map(|(c, d)| RuleText {
                canon: &c.canon,
                deps: d,
                score: c.info.score,
            })
            .collect();
        let versions = canonical::rule_versions(&rules, &order, &scoring_canon);
        let ordered = self.order(&checked, &deps, &order, versions);
        let (features_by_type, features_any) = self.feature_indexes();
        Some(Definitions {
            file: String::new(),
            source: Arc::from(""),
            version: canonical::set_version(&ordered.segments, &scoring_canon),
            segments: ordered.segments,
            features: self.features,
            scoring,
            by_type: ordered.by_type,
            on_any: ordered.on_any,
            by_trait: ordered.by_trait,
            on_score: ordered.on_score,
            features_by_type,
            features_any,
            categorical_traits: self.categorical,
            resubscribe: self.symbols.event_type(EventKind::Custom, RESUBSCRIBE),
        })
    }

    /// Checks one segment's condition.
    fn check_segment<'s>(
        &mut self,
        s: &'s ast::SegmentSource,
        scoring: &ast::ScoringSource,
    ) -> Checked<'s> {
        let mut info = SegInfo {
            types: HashSet::new(),
            any: false,
            traits: HashSet::new(),
            score: false,
            deps: Vec::new(),
            time: false,
        };
        let cond = self.expr(&s.condition, &mut info);
        if info.score && scoring.rules.is_empty() {
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
        Checked {
            source: s,
            cond,
            info,
            canon,
        }
    }

    /// The segments each segment uses, by file position; unknown names are errors.
    fn dependencies(&mut self, checked: &[Checked<'_>]) -> Vec<Vec<usize>> {
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); checked.len()];
        for (i, c) in checked.iter().enumerate() {
            for (name, span) in &c.info.deps {
                match self.segment_names.get(name) {
                    Some(&j) => deps[i].push(j),
                    None => {
                        let hint = suggest(name, self.segment_names.keys().map(String::as_str))
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default();
                        let msg = format!(
                            "segment `{}` uses unknown segment `{name}`{hint}",
                            c.source.name.node
                        );
                        self.error(*span, msg);
                    }
                }
            }
        }
        deps
    }

    /// The condition as written (for display in the API).
    fn map_text(&self, span: Span) -> String {
        self.text
            .get(span.start..span.end)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// A dependency order (every segment after the segments it uses), or `None` after
    /// reporting every cycle at the first segment in it.
    fn topological(&mut self, checked: &[Checked<'_>], deps: &[Vec<usize>]) -> Option<Vec<usize>> {
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
        let n = checked.len();
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
                .map(|&i| checked[i].source.name.node.as_str())
                .collect();
            let first = cycle[0];
            let path = format!("{} -> {}", names.join(" -> "), names[0]);
            let span = checked[first].source.name.span;
            self.error(
                span,
                format!("segments depend on each other in a cycle: {path}"),
            );
        }
        cycles.is_empty().then_some(order)
    }

    /// Puts the segments in dependency `order` (renumbering `in_segment` references to
    /// match) and indexes them by what can affect them.
    fn order(
        &self,
        checked: &[Checked<'_>],
        deps: &[Vec<usize>],
        order: &[usize],
        versions: Vec<Arc<str>>,
    ) -> Ordered {
        let n = checked.len();
        let position: HashMap<usize, usize> =
            order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut out = Ordered {
            segments: Vec::with_capacity(n),
            by_type: SymIndex::default(),
            on_any: Vec::new(),
            by_trait: SymIndex::default(),
            on_score: Vec::new(),
        };
        let mut time_dep = vec![false; n];
        for (p, &i) in order.iter().enumerate() {
            let Checked {
                source: s,
                cond,
                info,
                ..
            } = &checked[i];
            let mut cond = cond.clone();
            renumber_segments(&mut cond, &position);
            time_dep[p] = info.time || deps[i].iter().any(|d| time_dep[position[d]]);
            for t in &info.types {
                out.by_type.add(*t, p);
            }
            if info.any {
                out.on_any.push(p);
            }
            for t in &info.traits {
                out.by_trait.add(*t, p);
            }
            if info.score {
                out.on_score.push(p);
            }
            out.segments.push(Segment {
                name: s.name.node.as_str().into(),
                description: s.description.clone(),
                version: versions[i].clone(),
                condition_text: self.map_text(s.condition.span),
                cond,
                dependents: Vec::new(),
                time_dependent: time_dep[p],
            });
        }
        for (i, d) in deps.iter().enumerate() {
            for &j in d {
                let (pi, pj) = (position[&i], position[&j]);
                if !out.segments[pj].dependents.contains(&pi) {
                    out.segments[pj].dependents.push(pi);
                }
            }
        }
        out
    }

    // ---- features ----

    /// The feature with `key`, added if new (`None`: too many features). An existing window
    /// feature keeps the longer of the two retentions.
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
        if self.features.len() >= MAX_FEATURES {
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

    fn is_count(&self, feature: u16) -> bool {
        matches!(
            &self.features[feature as usize].kind,
            FeatureKind::Window { sum: None, .. }
        )
    }

    /// Features an event of a type updates (triggers and cancels alike), and those every
    /// event updates.
    fn feature_indexes(&self) -> (SymIndex<u16>, Vec<u16>) {
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
        (features_by_type, features_any)
    }
}

/// Which events a pattern in a condition makes relevant to its segment.
fn note_pattern(p: &CPattern, info: &mut SegInfo) {
    match p.event {
        EventMatch::Any => info.any = true,
        EventMatch::Type(t) => {
            info.types.insert(t);
        }
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

#[cfg(test)]
mod tests {
    use crate::event::EventKind;
    use crate::segment::compile::{Cond, Definitions, FeatureKind};
    use crate::symbols::{SymbolClass, Symbols};

    fn compile(text: &str) -> (Definitions, Symbols) {
        let mut symbols = Symbols::new();
        let d = Definitions::from_source("t.toml", text, &mut symbols)
            .unwrap_or_else(|e| panic!("{e}"));
        (d, symbols)
    }

    fn errors(text: &str) -> Vec<String> {
        match Definitions::from_source("t.toml", text, &mut Symbols::new()) {
            Ok(_) => panic!("expected errors in\n{text}"),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn names(d: &Definitions, positions: &[usize]) -> Vec<String> {
        let mut v: Vec<String> = positions
            .iter()
            .map(|&p| d.segments[p].name.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn segments_come_after_the_segments_they_use() {
        let (d, _) = compile(
            r#"[segments.a]
condition = 'in_segment("b") or in_segment("c")'
[segments.b]
condition = 'in_segment("c") and trait.x exists'
[segments.c]
condition = 'count(page_view, 1d) >= 1'
[segments.d]
condition = 'trait.x = 1'
"#,
        );
        let order: Vec<&str> = d.segments.iter().map(|s| &*s.name).collect();
        assert_eq!(order, ["c", "b", "a", "d"]);
        let pos = |n: &str| d.segment_index(n).unwrap();
        // `in_segment` refers to positions in this order.
        assert_eq!(
            d.segments[pos("a")].cond,
            Cond::Or(vec![Cond::Segment(pos("b")), Cond::Segment(pos("c"))])
        );
        assert_eq!(names(&d, &d.segments[pos("c")].dependents), ["a", "b"]);
        assert_eq!(names(&d, &d.segments[pos("b")].dependents), ["a"]);
        assert!(d.segments[pos("a")].dependents.is_empty());
        // Time dependence is inherited through `in_segment`.
        assert!(d.segments[pos("c")].time_dependent);
        assert!(d.segments[pos("b")].time_dependent);
        assert!(d.segments[pos("a")].time_dependent);
        assert!(!d.segments[pos("d")].time_dependent);
        // The condition as written, for display.
        assert_eq!(d.segments[pos("d")].condition_text, "trait.x = 1");
    }

    #[test]
    fn cycles_between_segments_are_errors() {
        assert_eq!(
            errors(
                r#"[segments.a]
condition = 'in_segment("b")'
[segments.b]
condition = 'in_segment("a")'
"#
            ),
            ["t.toml:1:11: segments depend on each other in a cycle: a -> b -> a"]
        );
        assert_eq!(
            errors(
                r#"[segments.ok]
condition = 'trait.x = 1'
[segments.self]
condition = 'in_segment("self") or in_segment("ok")'
"#
            ),
            ["t.toml:3:11: segments depend on each other in a cycle: self -> self"]
        );
        // Every cycle is reported, each at the segment where it was found.
        assert_eq!(
            errors(
                r#"[segments.x]
condition = 'in_segment("y")'
[segments.y]
condition = 'in_segment("z")'
[segments.z]
condition = 'in_segment("x")'
[segments.p]
condition = 'in_segment("q") and in_segment("x")'
[segments.q]
condition = 'in_segment("p")'
"#
            ),
            [
                "t.toml:1:11: segments depend on each other in a cycle: x -> y -> z -> x",
                "t.toml:7:11: segments depend on each other in a cycle: p -> q -> p",
            ]
        );
    }

    #[test]
    fn unknown_segments_are_errors_with_a_suggestion_when_one_is_close() {
        assert_eq!(
            errors(
                r#"[segments.vip]
condition = 'trait.tier = "vip"'
[segments.dach]
condition = '''in_segment("ivp") or in_segment("vipp")
  or in_segment("germany")'''
"#
            ),
            [
                "t.toml:4:27: segment `dach` uses unknown segment `ivp`; did you mean `vip`?",
                "t.toml:4:48: segment `dach` uses unknown segment `vipp`; did you mean `vip`?",
                "t.toml:5:17: segment `dach` uses unknown segment `germany`",
            ]
        );
    }

    #[test]
    fn segments_using_the_same_aggregate_share_one_feature() {
        let (d, _) = compile(
            r#"[segments.a]
condition = 'count(page_view, 30d) >= 1'
[segments.b]
condition = 'count( page_view , 30d ) >= 5 or count(page_view, 60d) >= 9'
[segments.c]
condition = 'count(page_view, 7d) >= 1 and sum(purchase, amount, 30d) > 0'
[segments.d]
condition = 'count(page_view(url exists), 30d) >= 1 and since(page_view) > 1d'
[segments.e]
condition = 'since(page_view(url exists)) > 1d and since_first(page_view(url exists)) > 2d'
[segments.f]
condition = 'purchase then no email_open within 1d'
[segments.g]
condition = 'not (purchase then no email_open within 24h)'
"#,
        );
        let keys: Vec<&str> = d.features.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                // a and b (30d and 60d both use 1-day buckets)
                "win|86400|page_view",
                // c: shorter window, finer buckets
                "win|3600|page_view",
                "win|86400|sum=amount|purchase",
                // d: a filter makes another aggregate; `since` of a plain type needs none
                "win|86400|page_view(url exists)",
                // e: `since` and `since_first` of a filtered pattern share recency
                "rec|page_view(url exists)",
                // f and g
                "abs|purchase then no email_open within 1d",
            ]
        );
        // The shared window keeps the longest retention asked for.
        assert_eq!(
            d.features[0].kind,
            FeatureKind::Window {
                resolution: 86_400,
                retention: 60 * 86_400,
                sum: None
            }
        );
    }

    #[test]
    fn indexes_list_what_can_affect_each_segment() {
        let (d, mut symbols) = compile(
            r#"[[scoring.rules]]
event = "email_open"
points = 1
[segments.views]
condition = 'count(page_view, 7d) >= 1'
[segments.role]
condition = 'trait.role = "cmo" and trait.company_size > 50'
[segments.scored]
condition = 'score >= 10'
[segments.quiet]
condition = 'since(any) > 30d'
[segments.events]
condition = 'profile.events > 100'
[segments.no-show]
condition = 'webinar_registered then no webinar_attended within 1d'
[segments.signed]
condition = 'count(signup, ever) >= 1 and trait.plan in ["pro"]'
[segments.derived]
condition = 'in_segment("views")'
"#,
        );
        let pos = |n: &str| d.segment_index(n).unwrap();
        let by_type = |k: EventKind| names(&d, d.by_type.get(k as u16));
        assert_eq!(by_type(EventKind::PageView), ["views"]);
        assert_eq!(by_type(EventKind::WebinarRegistered), ["no-show"]);
        assert_eq!(by_type(EventKind::WebinarAttended), ["no-show"]);
        assert!(by_type(EventKind::EmailOpen).is_empty());
        let signup = symbols.event_type(EventKind::Custom, "signup").unwrap();
        assert_eq!(names(&d, d.by_type.get(signup)), ["signed"]);
        // A segment that only uses another is evaluated through `dependents`.
        assert_eq!(d.segments[pos("views")].dependents, [pos("derived")]);
        assert_eq!(names(&d, &d.on_any), ["events", "quiet"]);
        assert_eq!(names(&d, &d.on_score), ["scored"]);
        let key = |name: &str| symbols.get(name, SymbolClass::TraitKey).unwrap() as u16;
        assert_eq!(names(&d, d.by_trait.get(key("role"))), ["role"]);
        assert_eq!(names(&d, d.by_trait.get(key("company_size"))), ["role"]);
        assert_eq!(names(&d, d.by_trait.get(key("plan"))), ["signed"]);
        // Traits compared by value are interned; one compared by size is not.
        assert!(d.categorical_traits.contains(&key("role")));
        assert!(d.categorical_traits.contains(&key("plan")));
        assert!(!d.categorical_traits.contains(&key("company_size")));
        // Features by the events that update them, cancels included.
        let fpos = |prefix: &str| d.features.iter().position(|f| f.key.starts_with(prefix));
        let (views, absence, signups) = (
            fpos("win|3600|page_view").unwrap() as u16,
            fpos("abs|").unwrap() as u16,
            fpos("win|ever|signup").unwrap() as u16,
        );
        assert_eq!(d.features_by_type.get(EventKind::PageView as u16), [views]);
        assert_eq!(
            d.features_by_type.get(EventKind::WebinarRegistered as u16),
            [absence]
        );
        assert_eq!(
            d.features_by_type.get(EventKind::WebinarAttended as u16),
            [absence]
        );
        assert_eq!(d.features_by_type.get(signup), [signups]);
        assert!(d.features_any.is_empty());
        assert_eq!(
            d.resubscribe,
            symbols
                .get("subscribe", SymbolClass::EventType)
                .map(|s| s as u16)
        );
    }

    #[test]
    fn features_of_any_event_are_indexed_apart() {
        let (d, _) = compile(
            r#"[segments.busy]
condition = 'count(any, 1d) >= 100'
[segments.silent]
condition = 'purchase then no any within 1d'
"#,
        );
        assert_eq!(d.features_any, [0, 1]);
        assert_eq!(d.features_by_type.get(EventKind::Purchase as u16), [1]);
        assert_eq!(names(&d, &d.on_any), ["busy", "silent"]);
    }

    #[test]
    fn profile_attributes_are_indexed_by_the_events_that_change_them() {
        let (d, mut symbols) = compile(
            r#"[segments.buyer]
condition = 'profile.purchases >= 1'
[segments.opted-out]
condition = 'profile.opted_out'
[segments.reader]
condition = 'profile.open_rate > 0.5'
"#,
        );
        let by_type = |k: u16| names(&d, d.by_type.get(k));
        assert_eq!(by_type(EventKind::Purchase as u16), ["buyer"]);
        assert_eq!(by_type(EventKind::Unsubscribe as u16), ["opted-out"]);
        let subscribe = symbols.event_type(EventKind::Custom, "subscribe").unwrap();
        assert_eq!(by_type(subscribe), ["opted-out"]);
        assert_eq!(d.resubscribe, Some(subscribe));
        assert_eq!(by_type(EventKind::EmailOpen as u16), ["reader"]);
        assert_eq!(by_type(EventKind::EmailSent as u16), ["reader"]);
        assert!(d.on_any.is_empty());
    }
}
