//! Explaining a membership: why a customer is (or is not) in a segment.
//!
//! [`Engine::explain`] evaluates one segment's condition for one person at a point in time
//! and returns it as a tree ([`Node`]): every part with its canonical text, its kind, its
//! current value, what it needs, its result and, for the parts time alone can change, when
//! it next can (the same computation as the engine's timers, [`Ctx::next_change`]). The
//! tree's result is the segment's result at that time; `member` is the membership the
//! engine has recorded.
//!
//! ## Which time
//! [`Engine::explain_now`] evaluates at [`Engine::evaluation_time`]: the later of the
//! profile's clock (its latest event time or fired timer: the time the engine last
//! evaluated it at) and its shard's watermark (every timer up to the watermark has
//! fired). At that time the explanation's result equals the recorded membership (the
//! property tests check this over generated streams).
//!
//! ## Causes
//! The engine keeps no history of transitions (a profile holds only its sequence number),
//! so [`Explanation::causes`] is empty when it comes from the engine; a caller that has
//! the person's transitions adds them with [`Explanation::add_causes`] (the offline
//! replay does, from the transitions it produced; the service from each worker's latest
//! transitions).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value as J;

use super::eval::{Ctx, Val};
use super::Engine;
use crate::profile::{millis, Profile};
use crate::segment::ast::{ArithOp, CmpOp};
use crate::segment::compile::{Attr, CDeadline, Cond, Definitions, FeatureKind, Lit, Op};
use crate::segment::suggest::suggest;
use crate::symbols::SymbolClass;
use crate::time::{format_duration, format_rfc3339, Millis};
use crate::transition::Transition;

/// One segment's condition for one person at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The person's canonical id (the explanation may have been asked for by another id).
    pub customer_id: String,
    pub segment: String,
    /// The segment's rule version (as on its transitions).
    pub rule_version: String,
    /// The time the condition was evaluated at (RFC 3339).
    pub at: String,
    /// Whether the engine has the person in the segment.
    pub member: bool,
    /// The condition's result at `at` (the root of `condition`).
    pub result: bool,
    /// When time alone could next change the result (absent new events).
    pub next_change: Option<NextChange>,
    /// The condition as a tree.
    pub condition: Node,
    /// The person's transitions of this segment so far, oldest first, where the caller
    /// knows them (the engine keeps none; see the module documentation).
    pub causes: Vec<CauseEntry>,
}

/// When a part of a condition could next change without a new event, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextChange {
    /// RFC 3339.
    pub at: String,
    /// `window` (an event leaves a sliding window), `recency` (a `since` threshold is
    /// crossed), `score` (the decaying score crosses a threshold), `absence` (a deadline
    /// passes).
    pub kind: &'static str,
}

/// What a part of a condition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// All parts must hold.
    And,
    /// At least one part must hold.
    Or,
    /// The one part must not hold.
    Not,
    /// `true` or `false`.
    Constant,
    /// A test of `count(PATTERN, WINDOW)`.
    Count,
    /// A test of `sum(PATTERN, PROPERTY, WINDOW)`.
    Sum,
    /// A test of `since(PATTERN)`: the time since the last match.
    Since,
    /// A test of `since_first(PATTERN)`: the time since the first match.
    SinceFirst,
    /// A test of the decayed lead `score`.
    Score,
    /// A test of a `trait.NAME` (comparison, list, `contains`, `prefix`, `exists`, bare).
    Trait,
    /// A test of a computed `profile.NAME`.
    Attribute,
    /// A test of arithmetic over operands (`count(a, 7d) + count(b, 7d) >= 3`).
    Arithmetic,
    /// A test of literals only.
    Literal,
    /// `in_segment("NAME")`: the recorded membership of another segment.
    Segment,
    /// `TRIGGER then no CANCEL within DURATION` / `until PROPERTY`: a deadline.
    Absence,
}

/// One part of a condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// The part's canonical text (as rule versions are made from: layout and duration
    /// spelling normalised).
    pub text: String,
    pub kind: Kind,
    /// Its current value: a number, string or boolean (`null`: missing, e.g. an unset
    /// trait or `since` with no matching event); a duration for `since`; for `and`/`or`
    /// the number of parts that hold; for an absence the pending deadlines.
    pub value: J,
    /// What the value needs for the part to hold, e.g. `>= 3`, `exists`, `all of 2`.
    pub needs: String,
    pub result: bool,
    /// When time alone could next change this part (absent new events).
    pub next_change: Option<NextChange>,
    /// With more than one operand read (arithmetic, or a comparison of two operands):
    /// each one's text and value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operands: Vec<OperandValue>,
    /// The parts of `and`, `or`, `not`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// An operand of an arithmetic or two-sided comparison, with its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperandValue {
    pub text: String,
    pub value: J,
}

/// One transition of the explained segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CauseEntry {
    /// RFC 3339.
    pub at: String,
    /// `entered` or `exited`.
    pub direction: &'static str,
    /// As on the transition: `event:ID`, `timer:KIND@TIME`, `reload:VERSION`, `evicted`,
    /// `merge:ID`.
    pub cause: String,
    pub sequence: u32,
    pub rule_version: String,
    /// The id the transition was for.
    pub customer_id: String,
}

/// Why there is no explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("no profile for customer {0:?}")]
    UnknownProfile(String),
    #[error("unknown segment {name:?}{}", did_you_mean(.suggestion))]
    UnknownSegment {
        name: String,
        /// The closest known segment name, if one is close enough to be a typo of it.
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default()
}

impl Explanation {
    /// Adds the transitions of this segment among `transitions` (in their order) as
    /// causes; the caller picks the person's transitions.
    pub fn add_causes<'t>(&mut self, transitions: impl IntoIterator<Item = &'t Transition>) {
        for t in transitions {
            if *t.segment != *self.segment {
                continue;
            }
            self.causes.push(CauseEntry {
                at: format_rfc3339(t.timestamp),
                direction: t.direction.as_str(),
                cause: t.cause.to_string(),
                sequence: t.sequence,
                rule_version: t.rule_version.to_string(),
                customer_id: t.customer_id.to_string(),
            });
        }
    }
}

impl Engine {
    /// The time [`Engine::explain_now`] evaluates a person at: the later of its profile's
    /// clock and its shard's watermark. `None` without a profile.
    pub fn evaluation_time(&self, id: &str) -> Option<Millis> {
        let p = self.profile(id)?;
        Some(p.clock.max(self.shard_watermark(p.shard)))
    }

    /// [`Engine::explain`] at [`Engine::evaluation_time`].
    pub fn explain_now(&self, id: &str, segment: &str) -> Result<Explanation, ExplainError> {
        let seg = self.segment_position(segment)?;
        let now = self
            .evaluation_time(id)
            .ok_or_else(|| ExplainError::UnknownProfile(id.to_string()))?;
        self.explain_index(id, seg, now)
    }

    /// Explains segment `segment` for the person `id` belongs to (any of its ids),
    /// evaluated at `now`.
    pub fn explain(
        &self,
        id: &str,
        segment: &str,
        now: Millis,
    ) -> Result<Explanation, ExplainError> {
        let seg = self.segment_position(segment)?;
        self.explain_index(id, seg, now)
    }

    /// Every segment explained for `id` at `now`, in definition (dependency) order.
    pub fn explain_all(&self, id: &str, now: Millis) -> Result<Vec<Explanation>, ExplainError> {
        (0..self.defs.segments.len())
            .map(|i| self.explain_index(id, i, now))
            .collect()
    }

    fn segment_position(&self, name: &str) -> Result<usize, ExplainError> {
        self.defs
            .segment_index(name)
            .ok_or_else(|| ExplainError::UnknownSegment {
                name: name.to_string(),
                suggestion: suggest(name, self.defs.segments.iter().map(|s| &*s.name))
                    .map(str::to_string),
            })
    }

    fn explain_index(
        &self,
        id: &str,
        seg: usize,
        now: Millis,
    ) -> Result<Explanation, ExplainError> {
        let canonical = self.canonical_id(id);
        let profile = self
            .profile(canonical)
            .ok_or_else(|| ExplainError::UnknownProfile(id.to_string()))?;
        let s = &self.defs.segments[seg];
        let x = Explainer {
            ctx: self.context(profile, now),
        };
        let condition = x.node(&s.cond);
        Ok(Explanation {
            customer_id: canonical.to_string(),
            segment: s.name.to_string(),
            rule_version: s.version.to_string(),
            at: format_rfc3339(now),
            member: profile.is_member(seg),
            result: condition.result,
            next_change: condition.next_change.clone(),
            condition,
            causes: Vec::new(),
        })
    }
}

/// Builds the tree for one profile at one time. The canonical text is written from the
/// compiled form: `segment/compile/canonical.rs` writes it from the syntax tree, which
/// the definitions do not keep; the tests check that the two agree (the text hashes to
/// the rule version) for every shipped segment.
struct Explainer<'a> {
    ctx: Ctx<'a>,
}

fn lit_text(l: &Lit, out: &mut String) {
    match l {
        Lit::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Lit::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        Lit::Bool(b) => {
            let _ = write!(out, "{b}");
        }
    }
}

fn list_text(list: &[Lit], out: &mut String) {
    out.push('[');
    for (i, l) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        lit_text(l, out);
    }
    out.push(']');
}

fn is_since(o: &Op) -> bool {
    matches!(o, Op::SinceType { .. } | Op::SinceFeature { .. })
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

impl Explainer<'_> {
    fn defs(&self) -> &Definitions {
        self.ctx.defs
    }

    fn profile(&self) -> &Profile {
        self.ctx.profile
    }

    /// The pattern text of a feature, from its key (`win|RES|[sum=P|]PATTERN`,
    /// `rec|PATTERN`), which the compiler writes with the canonical pattern text.
    fn feature_pattern(&self, feature: u16) -> String {
        let f = &self.defs().features[usize::from(feature)];
        let key = f.key.as_str();
        let from_key = if let Some(rest) = key.strip_prefix("win|") {
            rest.split_once('|')
                .map(|(_, rest)| match rest.strip_prefix("sum=") {
                    Some(s) => s.split_once('|').map_or(s, |(_, p)| p),
                    None => rest,
                })
        } else {
            key.strip_prefix("rec|")
        };
        match from_key {
            Some(p) => p.to_string(),
            // Not written by the compiler: the event type alone (without its filter).
            None => self.event_name(match f.pattern.event {
                crate::segment::compile::EventMatch::Any => None,
                crate::segment::compile::EventMatch::Type(t) => Some(t),
            }),
        }
    }

    fn event_name(&self, ty: Option<u16>) -> String {
        match ty {
            None => "any".to_string(),
            Some(t) => self
                .ctx
                .symbols
                .name(SymbolClass::EventType, u32::from(t))
                .to_string(),
        }
    }

    /// An operand's canonical text; `duration` writes a numeric literal as a duration
    /// (the other side of a `since`).
    fn op_text(&self, o: &Op, duration: bool, out: &mut String) {
        match o {
            Op::Lit(Lit::Num(n)) if duration => out.push_str(&format_duration(*n as Millis)),
            Op::Lit(l) => lit_text(l, out),
            Op::Trait(k) => {
                let name = self.ctx.symbols.name(SymbolClass::TraitKey, u32::from(*k));
                let _ = write!(out, "trait.{name}");
            }
            Op::Attr(a) => {
                let name = Attr::ALL
                    .iter()
                    .find(|(_, x)| x == a)
                    .map_or("?", |(n, _)| n);
                let _ = write!(out, "profile.{name}");
            }
            Op::Window { feature, window } => {
                let sum = match &self.defs().features[usize::from(*feature)].kind {
                    FeatureKind::Window { sum: Some(s), .. } => Some(s),
                    _ => None,
                };
                out.push_str(if sum.is_some() { "sum(" } else { "count(" });
                out.push_str(&self.feature_pattern(*feature));
                if let Some(s) = sum {
                    let _ = write!(out, ",{s}");
                }
                out.push(',');
                match window {
                    Some(w) => out.push_str(&format_duration(*w)),
                    None => out.push_str("ever"),
                }
                out.push(')');
            }
            Op::SinceType { ty, first } => {
                out.push_str(if *first { "since_first(" } else { "since(" });
                out.push_str(&self.event_name(*ty));
                out.push(')');
            }
            Op::SinceFeature { feature, first } => {
                out.push_str(if *first { "since_first(" } else { "since(" });
                out.push_str(&self.feature_pattern(*feature));
                out.push(')');
            }
            Op::Score => out.push_str("score"),
            Op::Arith(op, l, r) => {
                out.push('(');
                self.op_text(l, false, out);
                out.push_str(match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                });
                self.op_text(r, false, out);
                out.push(')');
            }
        }
    }

    fn op_string(&self, o: &Op, duration: bool) -> String {
        let mut s = String::new();
        self.op_text(o, duration, &mut s);
        s
    }

    /// A condition's canonical text.
    fn cond_text(&self, c: &Cond, out: &mut String) {
        match c {
            Cond::Const(b) => {
                let _ = write!(out, "{b}");
            }
            Cond::And(v) | Cond::Or(v) => {
                let sep = if matches!(c, Cond::And(_)) {
                    " and "
                } else {
                    " or "
                };
                out.push('(');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    self.cond_text(x, out);
                }
                out.push(')');
            }
            Cond::Not(x) => {
                out.push_str("not ");
                self.cond_text(x, out);
            }
            Cond::Cmp { lhs, op, rhs } => {
                self.op_text(lhs, is_since(rhs), out);
                out.push_str(op.symbol());
                self.op_text(rhs, is_since(lhs), out);
            }
            Cond::In { lhs, list } => {
                self.op_text(lhs, false, out);
                out.push_str(" in ");
                list_text(list, out);
            }
            Cond::Contains { lhs, needle } => {
                self.op_text(lhs, false, out);
                let _ = write!(out, " contains {needle:?}");
            }
            Cond::Prefix { lhs, prefix } => {
                self.op_text(lhs, false, out);
                let _ = write!(out, " prefix {prefix:?}");
            }
            Cond::Exists(o) => {
                self.op_text(o, false, out);
                out.push_str(" exists");
            }
            Cond::Truthy(o) => self.op_text(o, false, out),
            Cond::Segment(i) => {
                let name = self.defs().segments.get(*i).map_or("?", |s| &*s.name);
                let _ = write!(out, "in_segment({name:?})");
            }
            Cond::Absence(f) => {
                let key = &self.defs().features[usize::from(*f)].key;
                out.push_str(key.strip_prefix("abs|").unwrap_or(key));
            }
        }
    }

    /// An operand's value as JSON: `since` as a duration, whole numbers as integers (a
    /// count of 2 is `2`).
    fn value(&self, o: &Op) -> J {
        match self.ctx.operand(o) {
            Val::Num(n) if is_since(o) => J::from(format_duration(n as Millis)),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => J::from(n as i64),
            Val::Num(n) => J::from(n),
            Val::Str(s) => J::from(s),
            Val::Bool(b) => J::from(b),
            Val::Missing => J::Null,
        }
    }

    fn kind_of(&self, o: &Op) -> Kind {
        match o {
            Op::Lit(_) => Kind::Literal,
            Op::Trait(_) => Kind::Trait,
            Op::Attr(_) => Kind::Attribute,
            Op::Window { feature, .. } => match &self.defs().features[usize::from(*feature)].kind {
                FeatureKind::Window { sum: Some(_), .. } => Kind::Sum,
                _ => Kind::Count,
            },
            Op::SinceType { first, .. } | Op::SinceFeature { first, .. } => {
                if *first {
                    Kind::SinceFirst
                } else {
                    Kind::Since
                }
            }
            Op::Score => Kind::Score,
            Op::Arith(..) => Kind::Arithmetic,
        }
    }

    /// The operands (not literals) an operand reads, each with its value.
    fn leaves(&self, o: &Op, out: &mut Vec<OperandValue>) {
        match o {
            Op::Lit(_) => {}
            Op::Arith(_, l, r) => {
                self.leaves(l, out);
                self.leaves(r, out);
            }
            _ => out.push(OperandValue {
                text: self.op_string(o, false),
                value: self.value(o),
            }),
        }
    }

    fn next(&self, c: &Cond) -> Option<NextChange> {
        self.ctx.next_change(c).map(|(at, kind)| NextChange {
            at: format_rfc3339(at),
            kind: kind.as_str(),
        })
    }

    fn node(&self, c: &Cond) -> Node {
        let mut text = String::new();
        self.cond_text(c, &mut text);
        let result = self.ctx.eval(c);
        let mut node = Node {
            text,
            kind: Kind::Constant,
            value: J::Null,
            needs: String::new(),
            result,
            next_change: self.next(c),
            operands: Vec::new(),
            children: Vec::new(),
        };
        match c {
            Cond::Const(b) => {
                node.value = J::from(*b);
                node.needs = "true".into();
            }
            Cond::And(v) | Cond::Or(v) => {
                node.children = v.iter().map(|x| self.node(x)).collect();
                let held = node.children.iter().filter(|n| n.result).count();
                node.value = J::from(held);
                if matches!(c, Cond::And(_)) {
                    node.kind = Kind::And;
                    node.needs = format!("all of {}", v.len());
                } else {
                    node.kind = Kind::Or;
                    node.needs = format!("at least 1 of {}", v.len());
                }
            }
            Cond::Not(x) => {
                let child = self.node(x);
                node.kind = Kind::Not;
                node.value = J::from(child.result);
                node.needs = "false".into();
                node.children = vec![child];
            }
            Cond::Cmp { lhs, op, rhs } => {
                // The value is the operand tested; a literal on the left is read the
                // other way round (`3 <= count(...)` needs `>= 3`).
                let (main, op, other) = match (lhs, rhs) {
                    (Op::Lit(_), r) if !matches!(r, Op::Lit(_)) => (rhs, flip(*op), lhs),
                    _ => (lhs, *op, rhs),
                };
                node.kind = self.kind_of(main);
                node.value = self.value(main);
                node.needs = format!("{} {}", op.symbol(), self.op_string(other, is_since(main)));
                let mut leaves = Vec::new();
                self.leaves(main, &mut leaves);
                self.leaves(other, &mut leaves);
                if leaves.len() > 1 {
                    node.operands = leaves;
                }
            }
            Cond::In { lhs, list } => {
                node.kind = self.kind_of(lhs);
                node.value = self.value(lhs);
                let mut needs = String::from("in ");
                list_text(list, &mut needs);
                node.needs = needs;
                self.arith_leaves(lhs, &mut node);
            }
            Cond::Contains { lhs, needle } => {
                node.kind = self.kind_of(lhs);
                node.value = self.value(lhs);
                node.needs = format!("contains {needle:?}");
                self.arith_leaves(lhs, &mut node);
            }
            Cond::Prefix { lhs, prefix } => {
                node.kind = self.kind_of(lhs);
                node.value = self.value(lhs);
                node.needs = format!("prefix {prefix:?}");
                self.arith_leaves(lhs, &mut node);
            }
            Cond::Exists(o) => {
                node.kind = self.kind_of(o);
                node.value = self.value(o);
                node.needs = "exists".into();
            }
            Cond::Truthy(o) => {
                node.kind = self.kind_of(o);
                node.value = self.value(o);
                node.needs = "= true".into();
            }
            Cond::Segment(i) => {
                node.kind = Kind::Segment;
                node.value = J::from(self.profile().is_member(*i));
                node.needs = "member".into();
            }
            Cond::Absence(f) => {
                node.kind = Kind::Absence;
                node.value = self.absence_value(*f);
                node.needs = match &self.defs().features[usize::from(*f)].kind {
                    FeatureKind::Absence {
                        deadline: CDeadline::Within(d),
                        ..
                    } => format!(
                        "a trigger with no cancel within {} after it",
                        format_duration(*d)
                    ),
                    FeatureKind::Absence {
                        deadline: CDeadline::Until(p),
                        ..
                    } => format!("a trigger with no cancel until its {p}"),
                    _ => String::new(),
                };
            }
        }
        node
    }

    /// The leaves of an arithmetic operand, if it is one.
    fn arith_leaves(&self, o: &Op, node: &mut Node) {
        if matches!(o, Op::Arith(..)) {
            self.leaves(o, &mut node.operands);
        }
    }

    /// An absence's state: per tracked instance (one per correlation value), its earliest
    /// pending trigger (the one that decides) and that trigger's deadline.
    fn absence_value(&self, f: u16) -> J {
        let now = crate::profile::secs(self.ctx.now);
        let pending: Vec<J> = self
            .profile()
            .absence(f)
            .filter_map(|a| a.first())
            .map(|t| {
                serde_json::json!({
                    "triggered_at": format_rfc3339(millis(t.at)),
                    "deadline": format_rfc3339(millis(t.deadline)),
                    "passed": t.deadline <= now,
                })
            })
            .collect();
        serde_json::json!({ "pending": pending })
    }
}
