//! Checking events in conditions and in the scoring table: event types (a custom type too
//! close to a known one is taken for a typo), patterns, property filters, and the
//! documented properties and their types.

use super::{compile_lit, lit_ty, Compiler};
use crate::event::{EventKind, PropType};
use crate::segment::ast::{self, CmpOp, Filter, Literal, Pattern, Spanned};
use crate::segment::compile::types::{
    CFilter, CPattern, EventMatch, ScoreRule, Scoring, MAX_WINDOW,
};
use crate::segment::suggest::suggest;
use crate::time::format_duration;

impl Compiler<'_> {
    pub(super) fn compile_scoring(&mut self, s: &ast::ScoringSource) -> Scoring {
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
            if let Some(s) = suggest(name, EventKind::KNOWN.iter().map(|k| k.name())) {
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

    pub(super) fn pattern(&mut self, p: &Pattern) -> Option<CPattern> {
        let event = self.event_match(&p.event)?;
        let kind = EventKind::from_type(&p.event.node);
        let filter = match &p.filter {
            Some(f) => Some(self.filter(&f.node, kind)?),
            None => None,
        };
        Some(CPattern { event, filter })
    }

    pub(super) fn check_property(
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
                if let Some(s) = suggest(&prop.node, known.iter().map(|(n, _)| *n)) {
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
}

#[cfg(test)]
mod tests {
    use crate::event::EventKind;
    use crate::segment::ast::CmpOp;
    use crate::segment::compile::{CFilter, CPattern, Definitions, EventMatch, Lit};
    use crate::symbols::Symbols;

    fn errors(text: &str) -> Vec<String> {
        match Definitions::from_source("t.toml", text, &mut Symbols::new()) {
            Ok(_) => panic!("expected errors in\n{text}"),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// The errors of one condition, on line 2 of the file.
    fn condition_errors(condition: &str) -> Vec<String> {
        errors(&format!("[segments.s]\ncondition = '{condition}'\n"))
    }

    fn compiles(condition: &str) -> Definitions {
        let text = format!("[segments.s]\ncondition = '{condition}'\n");
        Definitions::from_source("t.toml", &text, &mut Symbols::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn event_types_close_to_a_known_one_are_typos_with_a_suggestion() {
        assert_eq!(
            condition_errors("count(email_opne, 30d) >= 1 or count(Purchase, 1d) >= 1"),
            [
                "t.toml:2:20: unknown event type `email_opne`; did you mean `email_open`? (other names are custom event types, but this one is too close to a known type)",
                "t.toml:2:51: unknown event type `Purchase`; did you mean `purchase`? (other names are custom event types, but this one is too close to a known type)",
            ]
        );
        // Other names are custom event types.
        let d = compiles("count(signup, 30d) >= 1 and count(block, 1d) >= 1");
        assert_eq!(d.features.len(), 2);
        assert!(d.features.iter().all(
            |f| matches!(f.pattern.event, EventMatch::Type(t) if t >= EventKind::KNOWN.len() as u16)
        ));
    }

    #[test]
    fn forget_cannot_be_used() {
        assert_eq!(
            condition_errors("count(forget, 30d) >= 1"),
            ["t.toml:2:20: `forget` erases the profile; it cannot be used in a condition"]
        );
    }

    #[test]
    fn properties_close_to_a_documented_one_are_typos_with_a_suggestion() {
        assert_eq!(
            condition_errors(r#"count(page_view(ulr prefix "/p" or titel exists), 30d) >= 1"#),
            [
                "t.toml:2:30: `page_view` has no documented property `ulr`; did you mean `url`?",
                "t.toml:2:49: `page_view` has no documented property `titel`; did you mean `title`?",
            ]
        );
        // Undocumented properties that are not close to a documented one are allowed.
        let d = compiles(r#"count(page_view(section = "blog"), 30d) >= 1"#);
        assert_eq!(
            d.features[0].pattern,
            CPattern {
                event: EventMatch::Type(EventKind::PageView as u16),
                filter: Some(CFilter::Cmp {
                    prop: "section".into(),
                    op: CmpOp::Eq,
                    lit: Lit::Str("blog".into())
                }),
            }
        );
    }

    #[test]
    fn filter_values_must_match_the_documented_property_type() {
        assert_eq!(
            condition_errors(
                r#"count(purchase(amount = "12" or currency in ["EUR", 1] or amount > 1d), 30d) >= 1"#
            ),
            [
                "t.toml:2:38: `amount` of `purchase` is a number; it cannot be compared with a string",
                "t.toml:2:66: `currency` of `purchase` is a string; it cannot be compared with a number",
                // Both problems with the last value are reported.
                "t.toml:2:81: a duration cannot be compared with an event property",
                "t.toml:2:81: `amount` of `purchase` is a number; it cannot be compared with a duration",
            ]
        );
        assert_eq!(
            condition_errors("count(signup(trial < true), 30d) >= 1"),
            ["t.toml:2:35: booleans can only be compared with = or !="]
        );
    }

    #[test]
    fn scoring_rules_are_checked_like_patterns() {
        assert_eq!(
            errors(
                r#"[scoring]
half_life = "5000d"
[[scoring.rules]]
event = "pageview"
points = 1
[[scoring.rules]]
event = "purchase"
where = 'amount = "x"'
points = 1e9
[segments.s]
condition = 'score > 1'
"#
            ),
            [
                "t.toml:2:13: `half_life` must be between 1s and 156w6d",
                "t.toml:4:9: unknown event type `pageview`; did you mean `page_view`? (other names are custom event types, but this one is too close to a known type)",
                "t.toml:8:19: `amount` of `purchase` is a number; it cannot be compared with a string",
                "t.toml:9:10: `points` must be a finite number within ±1000000",
            ]
        );
    }
}
