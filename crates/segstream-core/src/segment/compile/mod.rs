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

use std::sync::Arc;

use super::ast::{SegmentSource, Span, Spanned};
use super::diagnostic::{Diagnostic, Diagnostics, SourceMap};
use super::lexer::OffsetMap;
use super::parser::parse_condition;
use super::source::parse_definitions;
use crate::symbols::Symbols;
use checker::Compiler;

/// The name a candidate written as a bare condition gets.
pub const CANDIDATE_NAME: &str = "preview";

/// One candidate segment compiled together with a running definitions set: the set a
/// reload would install if the candidate were added to the file (or, for a name already
/// in it, replaced that segment).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The whole set with the candidate in it. Its `source` is the running file followed
    /// by the candidate, which is not itself a file.
    pub defs: Definitions,
    /// The candidate's position in `defs.segments`.
    pub index: usize,
    /// Whether it replaces a segment of the same name.
    pub replaces: bool,
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
                d.source = Arc::from(text);
                return Ok(d);
            }
        }
        diags.sort_by_key(|d| (d.line, d.column));
        diags.dedup();
        Err(Diagnostics(diags))
    }

    /// Compiles one candidate segment against this set (compiled from its `source`).
    ///
    /// `text` is either one `[segments.NAME]` table in the definitions-file format, or a
    /// bare condition (then the segment is named [`CANDIDATE_NAME`]). The candidate may use
    /// the set's segments and scoring; with the name of a segment of the set it replaces
    /// it. Errors come back as the file loader reports them: in the candidate, with `file`
    /// and the line and column within `text`; an error the candidate causes elsewhere in
    /// the set (a cycle through it) with the set's file, line and column.
    pub fn with_candidate(
        &self,
        file: &str,
        text: &str,
        symbols: &mut Symbols,
    ) -> Result<Candidate, Diagnostics> {
        let cand_map = SourceMap::new(file, text);
        let at_start = |msg: &str| Diagnostics(vec![cand_map.diagnostic(Span::default(), msg)]);
        let (mut source, base_diags) = parse_definitions(&self.file, &self.source);
        if !base_diags.is_empty() {
            return Err(at_start(
                "the running definitions carry no readable source text to preview against",
            ));
        }
        // The candidate's spans point past the running file's text (plus a newline), so
        // that the compiler sees one text: the file, then the candidate.
        let mut combined = String::with_capacity(self.source.len() + 1 + text.len());
        combined.push_str(&self.source);
        if !combined.is_empty() && !combined.ends_with('\n') {
            combined.push('\n');
        }
        let base = combined.len();
        let base_lines = combined.bytes().filter(|&b| b == b'\n').count();
        combined.push_str(text);

        let segment = if is_table(text) {
            let (cand, diags) = parse_definitions(file, text);
            let mut errors = diags;
            if errors.is_empty() {
                let scoring = &cand.scoring;
                let scoring_at = scoring
                    .half_life
                    .as_ref()
                    .map(|h| h.span)
                    .or(scoring.rules.first().map(|r| r.pattern.event.span));
                if let Some(span) = scoring_at {
                    errors.push(cand_map.diagnostic(
                        span,
                        "a candidate is one segment; `[scoring]` cannot be previewed",
                    ));
                }
                if let Some(second) = cand.segments.get(1) {
                    errors.push(cand_map.diagnostic(
                        second.name.span,
                        format!(
                            "a candidate is one segment; this one defines {}",
                            cand.segments.len()
                        ),
                    ));
                }
            }
            if !errors.is_empty() {
                return Err(sorted(errors));
            }
            // The same text again, placed after `base` bytes (of newlines: valid TOML).
            let mut padded = "\n".repeat(base);
            padded.push_str(text);
            let (mut shifted, _) = parse_definitions(file, &padded);
            match shifted.segments.pop() {
                Some(s) => s,
                None => return Err(at_start("the candidate defines no segment")),
            }
        } else {
            match parse_condition(text, &OffsetMap::new(base)) {
                Ok(condition) => SegmentSource {
                    name: Spanned::new(CANDIDATE_NAME.to_string(), Span::new(base, base)),
                    description: None,
                    condition,
                },
                Err((span, message)) => {
                    let span = Span::new(span.start.saturating_sub(base), span.end);
                    return Err(Diagnostics(vec![cand_map.diagnostic(span, message)]));
                }
            }
        };
        let name = segment.name.node.clone();
        let replaces = match source.segments.iter().position(|s| s.name.node == name) {
            Some(i) => {
                source.segments[i] = segment;
                true
            }
            None => {
                source.segments.push(segment);
                false
            }
        };
        let map = SourceMap::new(&self.file, &combined);
        let mut diags = Vec::new();
        let compiled = Compiler::new(&map, &combined, symbols).compile(&source, &mut diags);
        // Positions in the candidate are given within it.
        for d in &mut diags {
            if d.line > base_lines {
                d.file = file.to_string();
                d.line -= base_lines;
            }
        }
        match compiled {
            Some(mut defs) if diags.is_empty() => {
                defs.file = self.file.clone();
                defs.source = Arc::from(combined);
                let index = defs
                    .segment_index(&name)
                    .expect("the candidate is in the set it was compiled into");
                Ok(Candidate {
                    defs,
                    index,
                    replaces,
                })
            }
            _ => Err(sorted(diags)),
        }
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| &*s.name == name)
    }
}

/// Whether a candidate is written as a TOML table (its first line that is neither blank
/// nor a comment starts with `[`) rather than as a bare condition.
fn is_table(text: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with('['))
}

fn sorted(mut diags: Vec<Diagnostic>) -> Diagnostics {
    diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    diags.dedup();
    Diagnostics(diags)
}
