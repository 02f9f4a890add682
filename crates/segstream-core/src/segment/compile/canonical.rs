//! Canonical text of conditions, and the content hashes made from it: rule versions (and,
//! in the checker, feature keys).
//!
//! The canonical text is written from the syntax tree, not taken from the file, so layout,
//! comments, the kind of TOML string and parentheses around a single condition do not
//! change it, and a duration is written one way (`90m` and `1h30m` alike). A segment's
//! version hashes its canonical condition, the versions of the segments it uses and, if it
//! reads `score`, the scoring table: it changes exactly when what the segment means
//! changes. The engine compares versions on reload (an unchanged version keeps the
//! segment's members without re-evaluating them) and the changelog's record layout includes
//! them, so this text must stay the same for an unchanged condition.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::types::{Definitions, Scoring, Segment};
use crate::segment::ast::{
    ArithOp, Deadline, Expr, Filter, Literal, Operand, Pattern, Spanned, Window,
};
use crate::time::format_duration;

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

pub(super) fn canon_pattern(p: &Pattern, out: &mut String) {
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

pub(super) fn canon_expr(e: &Expr, out: &mut String) {
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

/// The canonical text of the scoring table, part of the version of every segment that
/// reads `score` and of the whole set.
pub(super) fn scoring_text(scoring: &Scoring) -> String {
    format!("{scoring:?}")
}

/// One segment's part in [`rule_versions`].
pub(super) struct RuleText<'a> {
    /// Canonical text of the condition.
    pub canon: &'a str,
    /// Indexes of the segments it uses (`in_segment`).
    pub deps: &'a [usize],
    /// Whether it reads `score`.
    pub score: bool,
}

/// The version of every segment, indexed like `rules`. `order` is a dependency order (a
/// segment after every segment it uses), so a segment's version covers its dependencies'.
pub(super) fn rule_versions(
    rules: &[RuleText<'_>],
    order: &[usize],
    scoring: &str,
) -> Vec<Arc<str>> {
    let mut versions: Vec<Option<Arc<str>>> = vec![None; rules.len()];
    for &i in order {
        let rule = &rules[i];
        let mut data = rule.canon.to_string();
        for &d in rule.deps {
            data.push('|');
            data.push_str(versions[d].as_deref().unwrap_or(""));
        }
        if rule.score {
            data.push('|');
            data.push_str(scoring);
        }
        versions[i] = Some(hex12(&data));
    }
    versions
        .into_iter()
        .map(|v| v.unwrap_or_else(|| "".into()))
        .collect()
}

/// The version of a whole set: its segments' names and versions, in order, and the scoring.
pub(super) fn set_version(segments: &[Segment], scoring: &str) -> Arc<str> {
    let mut all = String::new();
    for s in segments {
        let _ = write!(all, "{}={};", s.name, s.version);
    }
    let _ = write!(all, "{scoring}");
    hex12(&all)
}

/// Names of the segments as a sorted map to their versions (for reload reports and APIs).
pub fn versions(defs: &Definitions) -> BTreeMap<String, String> {
    defs.segments
        .iter()
        .map(|s| (s.name.to_string(), s.version.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::source::parse_definitions;
    use crate::symbols::Symbols;

    /// The canonical text of one condition.
    fn canon(condition: &str) -> String {
        let text = format!("[segments.s]\ncondition = '''{condition}'''\n");
        let (src, diags) = parse_definitions("t.toml", &text);
        assert!(diags.is_empty(), "{condition}: {diags:?}");
        let mut out = String::new();
        canon_expr(&src.segments[0].condition.node, &mut out);
        out
    }

    fn compile(text: &str) -> Definitions {
        Definitions::from_source("t.toml", text, &mut Symbols::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The version of segment `name` in `text`.
    fn version(text: &str, name: &str) -> String {
        let d = compile(text);
        d.segments[d.segment_index(name).unwrap()]
            .version
            .to_string()
    }

    #[test]
    fn canonical_text_is_written_from_the_syntax_tree() {
        let cases = [
            ("count(email_open, 30d) >= 3", "count(email_open,4w2d)>=3"),
            (
                r#"count(page_view(url prefix "/pricing" and not utm_source = "email"), 7d) >= 1"#,
                r#"count(page_view((url prefix "/pricing" and not utm_source="email")),1w)>=1"#,
            ),
            (
                "sum(purchase, amount, 365d) >= 10000",
                "sum(purchase,amount,52w1d)>=10000",
            ),
            (
                "since(page_view) > 60d or since_first(any) <= 90m",
                "(since(page_view)>8w4d or since_first(any)<=1h30m)",
            ),
            (
                "count(a, 90d) + 5 * count(b, ever) >= 12.5",
                "(count(a,12w6d)+(5*count(b,ever)))>=12.5",
            ),
            (
                r#"trait.country in ["DE", "AT"] and not trait.role exists"#,
                r#"(trait.country in ["DE","AT"] and not trait.role exists)"#,
            ),
            (
                r#"trait.industry contains "soft" or trait.email prefix "sales@""#,
                r#"(trait.industry contains "soft" or trait.email prefix "sales@")"#,
            ),
            (
                r#"score >= 50 and in_segment("vip") and profile.opted_out"#,
                r#"(score>=50 and in_segment("vip") and profile.opted_out)"#,
            ),
            (
                r#"ad_click(campaign = "q4") then no webinar_registered within 24h"#,
                r#"ad_click(campaign="q4") then no webinar_registered within 1d"#,
            ),
            (
                "webinar_registered then no webinar_attended with same webinar_id until ends_at",
                "webinar_registered then no webinar_attended with same webinar_id until ends_at",
            ),
            (
                r#"count(purchase(category in ["a", "b"] or amount > 1.50), ever) >= 1"#,
                r#"count(purchase((category in ["a","b"] or amount>1.5)),ever)>=1"#,
            ),
        ];
        for (condition, want) in cases {
            assert_eq!(canon(condition), want, "{condition}");
        }
    }

    #[test]
    fn equivalent_formatting_gives_equal_canonical_text() {
        let groups: &[&[&str]] = &[
            &[
                "count(page_view, 7d) >= 1",
                "count( page_view , 7d )  >=  1",
                "count(page_view,7d)>=1",
                "\n  count(page_view, # views\n        7d) >= 1  # at least one\n",
                "count(page_view, 1w) >= 1",
                "count(page_view, 168h) >= 1",
                "count(page_view, 7d) >= 1.0",
                "(count(page_view, 7d) >= 1)",
            ],
            &[
                "since(any) > 90m",
                "since(any) > 1h30m",
                "since(any) > 5400s",
            ],
            &[
                "trait.role exists and not trait.x = 1",
                "traits.role exists and not (trait.x = 1)",
                "(trait.role exists) and not trait.x = 1",
            ],
            &[
                r#"trait.email prefix "a""#,
                r#"trait.email starts_with "a""#,
            ],
        ];
        for group in groups {
            let first = canon(group[0]);
            for c in &group[1..] {
                assert_eq!(canon(c), first, "{c:?} vs {:?}", group[0]);
            }
        }
    }

    #[test]
    fn a_different_meaning_gives_different_canonical_text() {
        let pairs = [
            ("count(a, 7d) >= 1", "count(a, 7d) > 1"),
            ("count(a, 7d) >= 1", "count(a, 8d) >= 1"),
            ("count(a, 7d) >= 1", "count(b, 7d) >= 1"),
            ("count(a, 7d) >= 1", "count(a(x exists), 7d) >= 1"),
            ("trait.x = 1", r#"trait.x = "1""#),
            ("trait.x = true", r#"trait.x = "true""#),
            ("trait.x = 1 and trait.y = 1", "trait.x = 1 or trait.y = 1"),
            (
                "trait.x = 1 and trait.y = 1 and trait.z = 1",
                "(trait.x = 1 and trait.y = 1) and trait.z = 1",
            ),
            ("since(a) > 1d", "since_first(a) > 1d"),
            ("count(a, 1d) + 2 * 3 > 1", "(count(a, 1d) + 2) * 3 > 1"),
            ("a then no b within 1d", "a then no b with same x within 1d"),
        ];
        for (a, b) in pairs {
            assert_ne!(canon(a), canon(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn layout_comments_descriptions_and_string_kinds_do_not_change_versions() {
        let plain = r#"[segments.x]
condition = 'count(page_view, 7d) >= 1 and trait.role = "cmo"'
[segments.y]
condition = 'in_segment("x")'
"#;
        let variants = [
            // Comments, blank lines, other string kinds and escapes, a description.
            r#"# a comment
format = 1

[segments.x]
description = "Recent viewers who are CMOs"
condition = """
  count( page_view , 7d )   # views
    >= 1
  and trait.role = \"cmo\"
"""

[segments.y]
condition = "in_segment(\"x\")"
"#,
            // Other segments before, after and in between; a different file order.
            r#"[segments.y]
condition = 'in_segment("x")'
[segments.other]
condition = 'count(click, 1d) >= 1'
[segments.x]
condition = '''count(page_view, 1w) >= 1 and trait.role = "cmo"'''
"#,
        ];
        for v in variants {
            assert_eq!(version(v, "x"), version(plain, "x"), "{v}");
            assert_eq!(version(v, "y"), version(plain, "y"), "{v}");
        }
    }

    #[test]
    fn a_change_in_a_dependency_changes_the_dependents_versions() {
        let file = |threshold: u32| {
            format!(
                r#"[segments.x]
condition = 'count(page_view, 7d) >= {threshold}'
[segments.y]
condition = 'in_segment("x") and trait.role exists'
[segments.z]
condition = 'not in_segment("y")'
[segments.w]
condition = 'trait.role exists'
"#
            )
        };
        let (a, b) = (file(1), file(2));
        // y and z did not change textually, but what they mean did.
        for name in ["x", "y", "z"] {
            assert_ne!(version(&a, name), version(&b, name), "{name}");
        }
        assert_eq!(version(&a, "w"), version(&b, "w"));
        assert_ne!(compile(&a).version, compile(&b).version);
    }

    #[test]
    fn segments_reading_the_score_follow_the_scoring_table() {
        let file = |points: u32| {
            format!(
                r#"[[scoring.rules]]
event = "page_view"
points = {points}
[segments.scored]
condition = 'score >= 10'
[segments.unscored]
condition = 'count(page_view, 7d) >= 1'
[segments.uses-scored]
condition = 'in_segment("scored")'
"#
            )
        };
        let (a, b) = (file(1), file(2));
        assert_ne!(version(&a, "scored"), version(&b, "scored"));
        assert_ne!(version(&a, "uses-scored"), version(&b, "uses-scored"));
        assert_eq!(version(&a, "unscored"), version(&b, "unscored"));
        // The version of the whole set covers the scoring table.
        assert_ne!(compile(&a).version, compile(&b).version);
    }

    /// Versions are stored (changelog layouts, reload comparisons): these values were
    /// computed before the compiler was split into modules and must not change.
    #[test]
    fn versions_are_stable_content_hashes() {
        let text = r#"[scoring]
half_life = "7d"
[[scoring.rules]]
event = "page_view"
points = 1
[segments.base]
condition = 'count(page_view, 30d) >= 1'
[segments.vip]
condition = 'trait.tier = "vip"'
[segments.dach]
condition = 'in_segment("vip")'
[segments.t]
condition = '''in_segment("base")'''
"#;
        let d = compile(text);
        let got: Vec<(&str, &str)> = d.segments.iter().map(|s| (&*s.name, &*s.version)).collect();
        assert_eq!(
            got,
            [
                ("base", "7ff9fe712444"),
                ("vip", "efe0695e8d88"),
                ("dach", "a3188f4f7177"),
                ("t", "436692f309f7"),
            ]
        );
        assert_eq!(&*d.version, "d6e574f56b86");
        let map = versions(&d);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["base", "dach", "t", "vip"]);
        assert_eq!(map["t"], "436692f309f7");
    }
}
