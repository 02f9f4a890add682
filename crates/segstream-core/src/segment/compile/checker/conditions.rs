//! Checking one condition: operands and their types, comparisons, windows and deadlines,
//! and the features (windowed counts and sums, recency, absences) the condition reads.
//! An error in one part of a condition does not stop the checking of the rest, so one run
//! reports them all.

use std::fmt::Write as _;

use super::{compile_lit, lit_ty, note_pattern, Compiler, SegInfo, Ty};
use crate::event::{EventKind, PropType};
use crate::segment::ast::{CmpOp, Deadline, Expr, Operand, Spanned, Window};
use crate::segment::compile::canonical::{canon_expr, canon_pattern};
use crate::segment::compile::types::{
    resolution_for, Attr, CDeadline, Cond, EventMatch, FeatureKind, Lit, Op, MAX_WINDOW,
    RESUBSCRIBE,
};
use crate::segment::suggest::suggest;
use crate::symbols::SymbolClass;
use crate::time::{format_duration, Millis, SECOND};

impl Compiler<'_> {
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
                    let hint = suggest(name, names.iter().copied())
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
                note_pattern(&p, info);
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
                note_pattern(&p, info);
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

    pub(super) fn expr(&mut self, e: &Spanned<Expr>, info: &mut SegInfo) -> Cond {
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
                note_pattern(&trigger, info);
                note_pattern(&cancel, info);
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
}

#[cfg(test)]
mod tests {
    use crate::segment::ast::CmpOp;
    use crate::segment::compile::{Attr, Cond, Definitions, Lit, Op};
    use crate::symbols::Symbols;

    /// The errors of each condition, one segment per condition, on lines 2, 4, 6, ...
    fn errors(conditions: &[&str]) -> Vec<String> {
        errors_after("", conditions)
    }

    /// [`errors`] with `prefix` at the top of the file.
    fn errors_after(prefix: &str, conditions: &[&str]) -> Vec<String> {
        let text: String = conditions
            .iter()
            .enumerate()
            .map(|(i, c)| format!("[segments.s{i}]\ncondition = '{c}'\n"))
            .collect();
        let text = format!("{prefix}{text}");
        match Definitions::from_source("t.toml", &text, &mut Symbols::new()) {
            Ok(_) => panic!("expected errors in\n{text}"),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn compiles(condition: &str) -> Cond {
        let text = format!("[segments.s]\ncondition = '{condition}'\n");
        let d = Definitions::from_source("t.toml", &text, &mut Symbols::new())
            .unwrap_or_else(|e| panic!("{e}"));
        d.segments[0].cond.clone()
    }

    #[test]
    fn comparisons_need_compatible_types() {
        assert_eq!(
            errors(&[
                "since(page_view) > 5",
                r#"count(page_view, 30d) >= "many""#,
                "profile.revenue = true",
                "profile.opted_out < true",
                r#"profile.favourite_category > 1d"#,
            ]),
            [
                "t.toml:2:33: cannot compare a duration with a number (`since(...)` is a duration: compare it with a duration such as 60d)",
                "t.toml:4:39: cannot compare a number with a string",
                "t.toml:6:32: cannot compare a number with a boolean",
                "t.toml:8:14: booleans can only be compared with = or !=",
                "t.toml:10:43: cannot compare a string with a duration (`since(...)` is a duration: compare it with a duration such as 60d)",
            ]
        );
        // A trait's type is known only at run time: it compares with anything but a duration.
        assert!(matches!(compiles("trait.x = true"), Cond::Cmp { .. }));
        assert!(matches!(compiles(r#"trait.x >= "b""#), Cond::Cmp { .. }));
        assert_eq!(
            errors(&["trait.x > 1d"]),
            ["t.toml:2:24: cannot compare a trait value with a duration (`since(...)` is a duration: compare it with a duration such as 60d)"]
        );
    }

    #[test]
    fn score_and_since_are_compared_directly_with_a_literal() {
        let scoring = "[[scoring.rules]]\nevent = \"page_view\"\npoints = 1\n";
        assert_eq!(
            errors_after(
                scoring,
                &[
                    "score >= trait.threshold",
                    "since(page_view) > since(click)",
                    "score + 1 > 5",
                    "since(any) > 1100d",
                ]
            ),
            [
                "t.toml:5:23: `score` and `since(...)` must be compared with a literal number or duration",
                "t.toml:7:33: `score` and `since(...)` must be compared with a literal number or duration",
                "t.toml:9:14: `score` and `since(...)` can only be compared directly with a literal, not used in arithmetic",
                "t.toml:11:27: impossible duration: use 0s..156w6d",
            ]
        );
    }

    #[test]
    fn arithmetic_needs_numbers() {
        assert_eq!(
            errors(&[
                "count(a, 1d) + profile.favourite_category > 1",
                "count(a, 1d) * 2d > 1",
            ]),
            [
                "t.toml:2:29: arithmetic needs numbers, found a string",
                "t.toml:4:29: arithmetic needs numbers, found a duration",
            ]
        );
        assert!(matches!(
            compiles("count(a, 1d) + trait.bonus >= 3"),
            Cond::Cmp {
                lhs: Op::Arith(..),
                ..
            }
        ));
    }

    #[test]
    fn list_string_and_existence_tests_need_the_right_operand() {
        assert_eq!(
            errors(&[
                "since(a) in [1, 2]",
                r#"profile.revenue in [1, "x"]"#,
                r#"count(a, 1d) contains "x""#,
                "count(a, 1d) exists",
                "profile.revenue",
            ]),
            [
                "t.toml:2:14: `in` needs a string or number, found a duration",
                "t.toml:4:37: list item is a string, but the value is a number",
                "t.toml:6:14: `contains` and `prefix` need a string, found a number",
                "t.toml:8:14: `exists` applies to traits and favourites; for events use count(...) >= 1",
                "t.toml:10:14: expected a condition, found a number; compare it with something",
            ]
        );
        assert_eq!(
            compiles("profile.favourite_category exists"),
            Cond::Exists(Op::Attr(Attr::FavouriteCategory))
        );
    }

    #[test]
    fn windows_and_deadlines_have_limits() {
        assert_eq!(
            errors(&[
                "count(a, 0d) >= 1",
                "count(a, 2000d) >= 1",
                "count(a, 500ms) >= 1",
                "a then no b within 500ms",
                "webinar_registered then no webinar_attended until webinar_id",
            ]),
            [
                "t.toml:2:23: an empty window can never hold an event; use a positive duration",
                "t.toml:4:23: window 285w5d is longer than the 156w6d maximum; use `ever` for lifetime totals",
                "t.toml:6:23: windows are at least 1s long",
                "t.toml:8:26: impossible deadline: use 1s..156w6d",
                "t.toml:10:58: `webinar_id` of `webinar_registered` is not a timestamp",
            ]
        );
    }

    #[test]
    fn impossible_conditions_are_errors() {
        assert_eq!(
            errors(&[
                "count(a, 1d) < 0",
                "0 > count(a, 1d)",
                "a then no a within 1d",
            ]),
            [
                "t.toml:2:14: impossible condition: a count is never negative",
                "t.toml:4:14: impossible condition: a count is never negative",
                "t.toml:6:14: impossible condition: every trigger is also its own cancel",
            ]
        );
        // A sum can be negative; with `with same` a trigger can cancel an earlier one.
        assert!(matches!(
            compiles("sum(refund, amount, 1d) < 0"),
            Cond::Cmp { op: CmpOp::Lt, .. }
        ));
        assert!(matches!(
            compiles("a then no a with same id within 1d"),
            Cond::Absence(_)
        ));
    }

    #[test]
    fn unknown_profile_attributes_are_errors_with_a_suggestion() {
        assert_eq!(
            errors(&["profile.purchase >= 1", "profile.lifetime_value > 1"]),
            [
                "t.toml:2:14: unknown profile attribute `profile.purchase`; did you mean `profile.purchases`? known: revenue, purchases, events, opted_out, favourite_category, favourite_product, open_rate, click_rate",
                "t.toml:4:14: unknown profile attribute `profile.lifetime_value`; known: revenue, purchases, events, opted_out, favourite_category, favourite_product, open_rate, click_rate",
            ]
        );
    }

    #[test]
    fn score_needs_scoring_rules() {
        assert_eq!(
            errors(&["score > 1"]),
            ["t.toml:2:14: segment `s0` uses `score` but [scoring] defines no rules"]
        );
    }

    #[test]
    fn every_error_in_a_condition_is_reported_and_the_rest_still_compiles() {
        assert_eq!(
            errors(&["count(a, 0d) >= 1 or since(b) > 5 or profile.x"]),
            [
                "t.toml:2:23: an empty window can never hold an event; use a positive duration",
                "t.toml:2:46: cannot compare a duration with a number (`since(...)` is a duration: compare it with a duration such as 60d)",
                "t.toml:2:51: unknown profile attribute `profile.x`; known: revenue, purchases, events, opted_out, favourite_category, favourite_product, open_rate, click_rate",
            ]
        );
    }

    #[test]
    fn literals_compile_to_numbers_strings_and_booleans() {
        assert_eq!(
            compiles(r#"trait.x in [1, "a", true]"#),
            Cond::In {
                lhs: Op::Trait(match compiles("trait.x exists") {
                    Cond::Exists(Op::Trait(k)) => k,
                    c => panic!("{c:?}"),
                }),
                list: vec![Lit::Num(1.0), Lit::Str("a".into()), Lit::Bool(true)],
            }
        );
        // A duration compared with `since` is a number of milliseconds.
        assert!(matches!(
            compiles("since(a) > 1s"),
            Cond::Cmp { rhs: Op::Lit(Lit::Num(n)), .. } if n == 1000.0
        ));
    }
}
