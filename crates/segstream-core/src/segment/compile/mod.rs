//! From syntax tree to [`Definitions`]: type checking, cycle detection, feature extraction,
//! rule versions and the indexes that let the engine evaluate only the segments an event
//! can affect.
//!
//! Every problem is collected as a [`Diagnostic`](super::diagnostic::Diagnostic) with file,
//! line and column; a file with any error produces no `Definitions` at all.
//!
//! - `types`: the compiled form ([`Definitions`], [`Segment`], [`Cond`], [`Op`],
//!   [`Feature`], ...), re-exported here;
//! - `canonical`: canonical text of conditions and the rule versions hashed from it;
//! - `checker`: the compiler itself, with `checker::events` (event types, patterns,
//!   filters, scoring) and `checker::conditions` (operands, comparisons, features).

mod canonical;
mod checker;
mod types;

pub use canonical::versions;
pub use types::{
    resolution_for, Attr, CDeadline, CFilter, CPattern, Cond, Definitions, EventMatch, Feature,
    FeatureKind, Lit, Op, ScoreRule, Scoring, Segment, SymIndex, MAX_WINDOW, RESUBSCRIBE,
};

use super::diagnostic::{Diagnostics, SourceMap};
use crate::symbols::Symbols;
use checker::Compiler;

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
