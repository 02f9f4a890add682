//! The syntax tree of a segment definitions file, as the parser produces it.
//!
//! Every node carries a [`Span`] of byte offsets into the *whole file* (not into the
//! condition string), so that the compiler can report errors with file, line and column.

use std::fmt;

/// A half-open byte range `[start, end)` into the definitions file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A node with the place it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

/// Comparison operators, shared by conditions and event filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A literal value written in a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Num(f64),
    Str(String),
    Bool(bool),
    /// A duration such as `24h` or `30d`, in milliseconds.
    Duration(i64),
}

/// A condition: something that is true or false for a profile at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Vec<Spanned<Expr>>),
    And(Vec<Spanned<Expr>>),
    Not(Box<Spanned<Expr>>),
    Bool(bool),
    /// `lhs OP rhs`, e.g. `trait.company_size >= 500`, `count(email_open, 30d) >= 3`,
    /// `since(page_view) > 60d`, `score >= 50`.
    Compare {
        lhs: Spanned<Operand>,
        op: CmpOp,
        rhs: Spanned<Operand>,
    },
    /// `trait.country in ["DE", "AT", "CH"]`
    In {
        lhs: Spanned<Operand>,
        list: Vec<Spanned<Literal>>,
    },
    /// `trait.industry contains "soft"`
    Contains {
        lhs: Spanned<Operand>,
        needle: Spanned<String>,
    },
    /// `trait.email prefix "sales@"`
    Prefix {
        lhs: Spanned<Operand>,
        prefix: Spanned<String>,
    },
    /// `trait.role exists`
    Exists(Spanned<Operand>),
    /// A bare boolean operand: `profile.opted_out`, `trait.email_opt_in`.
    Truthy(Spanned<Operand>),
    /// `in_segment("engaged-reader")`
    InSegment(Spanned<String>),
    /// `ad_click(campaign = "x") then no webinar_registered(webinar_id = "w") within 24h`
    Absence(Absence),
}

/// The things a condition can compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Literal),
    /// `trait.NAME`: an explicit attribute from CRM `identify` events.
    Trait(String),
    /// `profile.NAME`: a computed attribute (`revenue`, `purchases`, `opted_out`,
    /// `favourite_category`, `favourite_product`, `events`).
    Attr(String),
    /// `count(PATTERN, WINDOW)`: number of matching events in the window.
    Count {
        pattern: Pattern,
        window: Spanned<Window>,
    },
    /// `sum(PATTERN, PROPERTY, WINDOW)`: sum of a numeric property of matching events.
    Sum {
        pattern: Pattern,
        property: Spanned<String>,
        window: Spanned<Window>,
    },
    /// `since(PATTERN)` (time since the last match) or `since_first(PATTERN)`.
    Since {
        pattern: Pattern,
        first: bool,
    },
    /// `score`: the decayed lead score.
    Score,
    Arith {
        op: ArithOp,
        lhs: Box<Spanned<Operand>>,
        rhs: Box<Spanned<Operand>>,
    },
}

/// How far back an aggregate looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// The last N milliseconds (sliding).
    Last(i64),
    /// The customer's whole lifetime (`ever`).
    Ever,
}

/// Which events an aggregate or sequence step matches: an event type (or `any`) and an
/// optional property filter: `email_open`, `purchase(category = "shoes")`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// The event type; `any` matches every event type.
    pub event: Spanned<String>,
    pub filter: Option<Spanned<Filter>>,
}

/// A condition on the properties of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Spanned<Filter>>),
    Or(Vec<Spanned<Filter>>),
    Not(Box<Spanned<Filter>>),
    Compare {
        property: Spanned<String>,
        op: CmpOp,
        value: Spanned<Literal>,
    },
    In {
        property: Spanned<String>,
        list: Vec<Spanned<Literal>>,
    },
    Contains {
        property: Spanned<String>,
        needle: Spanned<String>,
    },
    Prefix {
        property: Spanned<String>,
        prefix: Spanned<String>,
    },
    Exists(Spanned<String>),
}

/// "TRIGGER, then no CANCEL before the deadline": the customer is in the segment from the
/// deadline of the first trigger (since the last cancel) until a cancel arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct Absence {
    pub trigger: Pattern,
    pub cancel: Pattern,
    /// `with same PROPERTY`: only a cancel with the trigger's value of PROPERTY counts, and
    /// each value is tracked on its own (e.g. one per webinar).
    pub correlate: Option<Spanned<String>>,
    pub deadline: Spanned<Deadline>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Deadline {
    /// `within 24h`: the trigger's time plus a duration (ms).
    Within(i64),
    /// `until ends_at`: a timestamp property of the trigger event.
    Until(String),
}

/// One `[segments.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSource {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub condition: Spanned<Expr>,
}

/// One `[[scoring.rules]]` entry: `points` for every event matching `event` (and `where`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRuleSource {
    pub pattern: Pattern,
    pub points: Spanned<f64>,
}

/// The `[scoring]` table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoringSource {
    /// Half-life of the exponential decay (ms); no decay when absent.
    pub half_life: Option<Spanned<i64>>,
    pub rules: Vec<ScoreRuleSource>,
}

/// A whole definitions file, as parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DefinitionsSource {
    pub scoring: ScoringSource,
    pub segments: Vec<SegmentSource>,
}
