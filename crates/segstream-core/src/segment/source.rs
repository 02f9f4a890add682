//! Reads a TOML definitions file into a [`DefinitionsSource`].
//!
//! ```toml
//! format = 1                      # optional; must be 1
//!
//! [scoring]
//! half_life = "30d"               # optional; no decay when absent
//! [[scoring.rules]]
//! event = "page_view"             # required: an event type or "any"
//! where = 'url prefix "/pricing"' # optional filter
//! points = 5                      # required: a number, may be negative
//!
//! [segments.engaged-reader]
//! description = "..."             # optional
//! condition = "count(email_open, 30d) >= 3"
//! ```
//!
//! Every error in the file is reported, each with its file, line and column; a segment or
//! scoring rule with an error is left out of the result, but the rest is still checked.
//! Spans in the result are byte offsets into the whole file, also inside conditions and
//! filters, which are mapped back through the TOML string they were written in.

use toml_edit::{ArrayOfTables, ImDocument, Item, Table, Value};

use super::ast::{
    DefinitionsSource, Pattern, ScoreRuleSource, ScoringSource, SegmentSource, Span, Spanned,
};
use super::diagnostic::{Diagnostic, SourceMap};
use super::lexer::OffsetMap;
use super::parser::{parse_condition, parse_filter};
use crate::time::parse_duration;

/// The only file format version this crate reads.
pub const FORMAT_VERSION: i64 = 1;

/// The longest segment name allowed, in characters.
pub const MAX_SEGMENT_NAME_LEN: usize = 64;

/// Reads a definitions file. `file` is the name used in diagnostics.
///
/// Returns what could be read and every error found; the result is only complete when
/// the list of diagnostics is empty.
pub fn parse_definitions(file: &str, text: &str) -> (DefinitionsSource, Vec<Diagnostic>) {
    let mut loader = Loader {
        text,
        map: SourceMap::new(file, text),
        diags: Vec::new(),
    };
    let defs = loader.load();
    (defs, loader.diags)
}

/// True if `name` is a valid segment name: `^[a-z0-9][a-z0-9_-]*$`, at most 64 characters.
pub fn is_valid_segment_name(name: &str) -> bool {
    name.len() <= MAX_SEGMENT_NAME_LEN && segment_name_chars_ok(name)
}

fn segment_name_chars_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Decodes a TOML string as written in the file (`raw`, with its quotes), which starts at
/// byte `base` of the file. Returns the string's value and the map from offsets in the
/// value to offsets in the file; `None` if `raw` is not a valid TOML string.
///
/// Handles all four kinds: `'literal'`, `'''multi-line literal'''` (the newline right
/// after the opening quotes is trimmed), `"basic"` with escapes, and `"""multi-line
/// basic"""` with escapes and line-ending backslashes. CRLF in multi-line strings decodes
/// to `\n`.
pub fn decode_toml_string(raw: &str, base: usize) -> Option<(String, OffsetMap)> {
    let (delim, multiline, basic) = if raw.starts_with("'''") {
        ("'''", true, false)
    } else if raw.starts_with("\"\"\"") {
        ("\"\"\"", true, true)
    } else if raw.starts_with('\'') {
        ("'", false, false)
    } else if raw.starts_with('"') {
        ("\"", false, true)
    } else {
        return None;
    };
    if raw.len() < 2 * delim.len() || !raw.ends_with(delim) {
        return None;
    }
    let mut content = &raw[delim.len()..raw.len() - delim.len()];
    let mut start = base + delim.len();
    if multiline {
        for nl in ["\r\n", "\n"] {
            if let Some(rest) = content.strip_prefix(nl) {
                content = rest;
                start += nl.len();
                break;
            }
        }
    }
    let mut out = String::with_capacity(content.len());
    let mut map = OffsetMap::new(start);
    let bytes = content.as_bytes();
    let mut run = 0; // start of the current verbatim run
    let mut i = 0;
    while i < content.len() {
        let b = bytes[i];
        if multiline && b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            out.push_str(&content[run..i]);
            map.push_verbatim(i - run);
            out.push('\n');
            map.push_escape(1, 2);
            i += 2;
            run = i;
        } else if basic && b == b'\\' {
            out.push_str(&content[run..i]);
            map.push_verbatim(i - run);
            let next = *bytes.get(i + 1)?;
            let simple = match next {
                b'b' => Some('\u{8}'),
                b't' => Some('\t'),
                b'n' => Some('\n'),
                b'f' => Some('\u{c}'),
                b'r' => Some('\r'),
                b'"' => Some('"'),
                b'\\' => Some('\\'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c);
                map.push_escape(1, 2);
                i += 2;
            } else if next == b'u' || next == b'U' {
                let n = if next == b'u' { 4 } else { 8 };
                let hex = content.get(i + 2..i + 2 + n)?;
                let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)?;
                out.push(c);
                map.push_escape(c.len_utf8(), 2 + n);
                i += 2 + n;
            } else if multiline {
                // A line-ending backslash: `\`, optional spaces, a newline, then all
                // whitespace and newlines up to the next other character are dropped.
                let mut j = i + 1;
                while matches!(bytes.get(j), Some(b' ' | b'\t')) {
                    j += 1;
                }
                match bytes.get(j) {
                    Some(b'\n') => j += 1,
                    Some(b'\r') if bytes.get(j + 1) == Some(&b'\n') => j += 2,
                    _ => return None,
                }
                while matches!(bytes.get(j), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                    j += 1;
                }
                map.skip(j - i);
                i = j;
            } else {
                return None;
            }
            run = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&content[run..]);
    map.push_verbatim(content.len() - run);
    Some((out, map))
}

fn span_of(range: Option<std::ops::Range<usize>>) -> Option<Span> {
    range.map(|r| Span::new(r.start, r.end))
}

/// A TOML node, whichever way it was written.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a Table),
    Tables(&'a ArrayOfTables),
    Value(&'a Value),
    None,
}

impl<'a> Node<'a> {
    fn of(item: &'a Item) -> Self {
        match item {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => Node::Value(v),
            Item::None => Node::None,
        }
    }

    fn span(self) -> Option<Span> {
        span_of(match self {
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
            Node::Value(v) => v.span(),
            Node::None => None,
        })
    }

    fn type_name(self) -> &'static str {
        match self {
            Node::Table(_) | Node::Value(Value::InlineTable(_)) => "table",
            Node::Tables(_) | Node::Value(Value::Array(_)) => "array",
            Node::Value(Value::String(_)) => "string",
            Node::Value(Value::Integer(_)) => "integer",
            Node::Value(Value::Float(_)) => "float",
            Node::Value(Value::Boolean(_)) => "boolean",
            Node::Value(Value::Datetime(_)) => "datetime",
            Node::None => "nothing",
        }
    }

    /// The entries, if this is a table (with a `[header]`, dotted or inline).
    fn table(self) -> Option<TableView<'a>> {
        let entries = match self {
            Node::Table(t) => t
                .iter()
                .map(|(name, item)| Entry {
                    name,
                    key: span_of(t.key(name).and_then(|k| k.span())),
                    node: Node::of(item),
                })
                .collect(),
            Node::Value(Value::InlineTable(t)) => t
                .iter()
                .map(|(name, value)| Entry {
                    name,
                    key: span_of(t.key(name).and_then(|k| k.span())),
                    node: Node::Value(value),
                })
                .collect(),
            _ => return None,
        };
        Some(TableView {
            entries,
            span: self.span(),
        })
    }
}

struct Entry<'a> {
    name: &'a str,
    key: Option<Span>,
    node: Node<'a>,
}

impl Entry<'_> {
    /// Where to report a problem with the value: the value, else its key.
    fn value_span(&self) -> Span {
        self.node.span().or(self.key).unwrap_or_default()
    }

    fn key_span(&self) -> Span {
        self.key.or(self.node.span()).unwrap_or_default()
    }
}

struct TableView<'a> {
    entries: Vec<Entry<'a>>,
    span: Option<Span>,
}

impl<'a> TableView<'a> {
    fn get(&self, name: &str) -> Option<&Entry<'a>> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// "`a`", "`a` or `b`", "`a`, `b` or `c`".
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

struct Loader<'t> {
    text: &'t str,
    map: SourceMap,
    diags: Vec<Diagnostic>,
}

impl Loader<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        let d = self.map.diagnostic(span, message);
        self.diags.push(d);
    }

    fn load(&mut self) -> DefinitionsSource {
        let doc = match ImDocument::parse(self.text) {
            Ok(doc) => doc,
            Err(e) => {
                let span = span_of(e.span()).unwrap_or_default();
                let message = e
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.error(span, format!("invalid TOML: {message}"));
                return DefinitionsSource::default();
            }
        };
        let root = Node::Table(doc.as_table())
            .table()
            .expect("the root is a table");
        self.check_fields(&root, &["format", "scoring", "segments"], "");

        if let Some(format) = root.get("format") {
            match format.node {
                Node::Value(Value::Integer(n)) if *n.value() == FORMAT_VERSION => {}
                Node::Value(Value::Integer(n)) => self.error(
                    format.value_span(),
                    format!(
                        "unsupported format {}; this version of segstream reads format \
                         {FORMAT_VERSION}",
                        n.value()
                    ),
                ),
                node => self.error(
                    format.value_span(),
                    format!("`format` must be an integer, found {}", node.type_name()),
                ),
            }
        }

        let scoring = match root.get("scoring") {
            Some(entry) => self.scoring(entry),
            None => ScoringSource::default(),
        };
        let segments = match root.get("segments") {
            Some(entry) => self.segments(entry),
            None => {
                self.error(
                    Span::default(),
                    "no segments defined; add at least one `[segments.NAME]` table",
                );
                Vec::new()
            }
        };
        DefinitionsSource { scoring, segments }
    }

    /// Reports every key of `table` not in `allowed`. `context` follows the field name in
    /// the message, e.g. " in segment `x`".
    fn check_fields(&mut self, table: &TableView<'_>, allowed: &[&str], context: &str) {
        for entry in &table.entries {
            if !allowed.contains(&entry.name) {
                self.error(
                    entry.key_span(),
                    format!(
                        "unknown field `{}`{context}; expected {}",
                        entry.name,
                        one_of(allowed)
                    ),
                );
            }
        }
    }

    /// A required or optional string field: its value, its span (of the TOML string,
    /// quotes included) and the map from the value to the file.
    fn string_field(
        &mut self,
        table: &TableView<'_>,
        name: &str,
        required: Option<(Span, &str)>,
    ) -> Result<Option<(String, Span, OffsetMap)>, ()> {
        let Some(entry) = table.get(name) else {
            return match required {
                Some((at, context)) => {
                    self.error(at, format!("missing field `{name}`{context}"));
                    Err(())
                }
                None => Ok(None),
            };
        };
        let Node::Value(Value::String(s)) = entry.node else {
            self.error(
                entry.value_span(),
                format!(
                    "`{name}` must be a string, found {}",
                    entry.node.type_name()
                ),
            );
            return Err(());
        };
        let value = s.value().clone();
        let span = entry.value_span();
        let decoded = s
            .span()
            .and_then(|r| self.text.get(r.clone()).map(|raw| (raw, r.start)))
            .and_then(|(raw, start)| decode_toml_string(raw, start))
            .filter(|(text, _)| *text == value);
        let map = match decoded {
            Some((_, map)) => map,
            None => {
                // Should not happen; if the string cannot be mapped, every position in it
                // maps to the whole string.
                let mut map = OffsetMap::new(span.start);
                map.push_escape(value.len(), span.end - span.start);
                map
            }
        };
        Ok(Some((value, span, map)))
    }

    fn scoring(&mut self, entry: &Entry<'_>) -> ScoringSource {
        let mut scoring = ScoringSource::default();
        let Some(table) = entry.node.table() else {
            self.error(
                entry.value_span(),
                format!(
                    "`scoring` must be a table, found {}",
                    entry.node.type_name()
                ),
            );
            return scoring;
        };
        self.check_fields(&table, &["half_life", "rules"], " in `scoring`");

        if let Ok(Some((value, span, _))) = self.string_field(&table, "half_life", None) {
            match parse_duration(&value) {
                Some(0) => self.error(span, "`half_life` must be greater than zero"),
                Some(ms) => scoring.half_life = Some(Spanned::new(ms, span)),
                None => self.error(
                    span,
                    format!(
                        "invalid duration `{value}` for `half_life`; expected a whole number \
                         with a unit (`ms`, `s`, `m`, `h`, `d` or `w`), e.g. \"30d\" or \"1d12h\""
                    ),
                ),
            }
        }

        if let Some(rules) = table.get("rules") {
            let items: Vec<Node<'_>> = match rules.node {
                Node::Tables(a) => a.iter().map(Node::Table).collect(),
                Node::Value(Value::Array(a)) => a.iter().map(Node::Value).collect(),
                node => {
                    self.error(
                        rules.value_span(),
                        format!(
                            "`rules` must be an array of tables (`[[scoring.rules]]`), found {}",
                            node.type_name()
                        ),
                    );
                    Vec::new()
                }
            };
            for (i, node) in items.into_iter().enumerate() {
                let fallback = rules.key_span();
                if let Some(rule) = self.rule(i + 1, node, fallback) {
                    scoring.rules.push(rule);
                }
            }
        }
        scoring
    }

    fn rule(&mut self, number: usize, node: Node<'_>, fallback: Span) -> Option<ScoreRuleSource> {
        let at = node.span().unwrap_or(fallback);
        let Some(table) = node.table() else {
            self.error(
                at,
                format!(
                    "scoring rule #{number} must be a table, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let context = format!(" in scoring rule #{number}");
        self.check_fields(&table, &["event", "where", "points"], &context);
        let mut ok = true;

        let event = match self.string_field(&table, "event", Some((at, &context))) {
            Ok(Some((value, span, _))) if value.is_empty() => {
                self.error(
                    span,
                    "`event` must not be empty; use \"any\" for every event",
                );
                ok = false;
                None
            }
            Ok(Some((value, span, _))) => Some(Spanned::new(value, span)),
            _ => {
                ok = false;
                None
            }
        };

        let filter = match self.string_field(&table, "where", None) {
            Ok(Some((value, _, map))) => match parse_filter(&value, &map) {
                Ok(f) => Some(f),
                Err((span, message)) => {
                    self.error(span, message);
                    ok = false;
                    None
                }
            },
            Ok(None) => None,
            Err(()) => {
                ok = false;
                None
            }
        };

        let points = match table.get("points") {
            None => {
                self.error(at, format!("missing field `points`{context}"));
                None
            }
            Some(e) => match e.node {
                Node::Value(Value::Integer(n)) => {
                    Some(Spanned::new(*n.value() as f64, e.value_span()))
                }
                Node::Value(Value::Float(x)) if x.value().is_finite() => {
                    Some(Spanned::new(*x.value(), e.value_span()))
                }
                Node::Value(Value::Float(_)) => {
                    self.error(e.value_span(), "`points` must be a finite number");
                    None
                }
                node => {
                    self.error(
                        e.value_span(),
                        format!("`points` must be a number, found {}", node.type_name()),
                    );
                    None
                }
            },
        };

        match (event, points) {
            (Some(event), Some(points)) if ok => Some(ScoreRuleSource {
                pattern: Pattern { event, filter },
                points,
            }),
            _ => None,
        }
    }

    fn segments(&mut self, entry: &Entry<'_>) -> Vec<SegmentSource> {
        let Some(table) = entry.node.table() else {
            self.error(
                entry.value_span(),
                format!(
                    "`segments` must be a table, found {}",
                    entry.node.type_name()
                ),
            );
            return Vec::new();
        };
        if table.entries.is_empty() {
            self.error(
                entry.key_span(),
                "no segments defined; add at least one `[segments.NAME]` table",
            );
            return Vec::new();
        }
        table
            .entries
            .iter()
            .filter_map(|e| self.segment(e))
            .collect()
    }

    fn segment(&mut self, entry: &Entry<'_>) -> Option<SegmentSource> {
        let name = entry.name;
        let name_span = entry.key_span();
        let mut ok = true;
        if name.chars().count() > MAX_SEGMENT_NAME_LEN {
            self.error(
                name_span,
                format!(
                    "segment name `{name}` is too long ({} characters; at most \
                     {MAX_SEGMENT_NAME_LEN})",
                    name.chars().count()
                ),
            );
            ok = false;
        } else if !segment_name_chars_ok(name) {
            self.error(
                name_span,
                format!(
                    "invalid segment name `{name}`; a name has lowercase letters, digits, \
                     `_` and `-`, and starts with a letter or digit"
                ),
            );
            ok = false;
        }
        let Some(table) = entry.node.table() else {
            self.error(
                entry.value_span(),
                format!(
                    "segment `{name}` must be a table, found {}",
                    entry.node.type_name()
                ),
            );
            return None;
        };
        let context = format!(" in segment `{name}`");
        self.check_fields(&table, &["description", "condition"], &context);
        // For a missing field, point at the `[segments.NAME]` header (or at the name).
        let at = table.span.unwrap_or(name_span);

        let description = match self.string_field(&table, "description", None) {
            Ok(d) => d.map(|(value, _, _)| value),
            Err(()) => {
                ok = false;
                None
            }
        };
        let condition = match self.string_field(&table, "condition", Some((at, &context))) {
            Ok(Some((value, _, map))) => match parse_condition(&value, &map) {
                Ok(c) => Some(c),
                Err((span, message)) => {
                    self.error(span, message);
                    None
                }
            },
            _ => None,
        };
        match condition {
            Some(condition) if ok => Some(SegmentSource {
                name: Spanned::new(name.to_string(), name_span),
                description,
                condition,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::ast::{Deadline, Expr, Filter, Literal, Operand, Window};

    const EXAMPLE: &str = include_str!("../../tests/fixtures/segments/example.toml");
    const INVALID: &str = include_str!("../../tests/fixtures/segments/invalid.toml");

    /// Parses and returns the diagnostics as `line:column: message` strings.
    fn errors(text: &str) -> Vec<String> {
        let (_, diags) = parse_definitions("t.toml", text);
        diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect()
    }

    fn ok(text: &str) -> DefinitionsSource {
        let (defs, diags) = parse_definitions("t.toml", text);
        assert!(diags.is_empty(), "{diags:#?}");
        defs
    }

    fn at(text: &str, span: Span) -> &str {
        &text[span.start..span.end]
    }

    #[test]
    fn example_file_parses() {
        let defs = ok(EXAMPLE);
        let names: Vec<&str> = defs.segments.iter().map(|s| s.name.node.as_str()).collect();
        assert_eq!(
            names,
            [
                "engaged-reader",
                "big-spender",
                "dormant",
                "clicked-but-not-registered",
                "no-show",
                "dach-without-role",
                "hot-lead",
                "key-account-or-scored",
                "opted-out",
                "discount-hunter",
                "pricing-visitor",
            ]
        );
        for seg in &defs.segments {
            assert_eq!(at(EXAMPLE, seg.name.span), seg.name.node);
        }
        assert_eq!(
            defs.segments[0].description.as_deref(),
            Some("Opened at least three emails in the last 30 days")
        );
        assert_eq!(defs.segments[1].description, None);

        // Scoring.
        let s = &defs.scoring;
        let half_life = s.half_life.as_ref().unwrap();
        assert_eq!(half_life.node, 30 * 86_400_000);
        assert_eq!(at(EXAMPLE, half_life.span), "\"30d\"");
        assert_eq!(s.rules.len(), 3);
        assert_eq!(s.rules[0].pattern.event.node, "page_view");
        assert_eq!(at(EXAMPLE, s.rules[0].pattern.event.span), "\"page_view\"");
        assert_eq!(s.rules[0].points.node, 5.0);
        assert_eq!(at(EXAMPLE, s.rules[0].points.span), "5");
        let f = s.rules[0].pattern.filter.as_ref().unwrap();
        assert_eq!(at(EXAMPLE, f.span), "url prefix \"/pricing\"");
        assert!(matches!(&f.node, Filter::Prefix { prefix, .. } if prefix.node == "/pricing"));
        assert_eq!(s.rules[1].pattern.filter, None);
        assert_eq!(s.rules[2].pattern.event.node, "any");
        assert_eq!(s.rules[2].points.node, -2.5);
        // A filter in a basic string with escapes: spans cover the escaped text.
        let f = s.rules[2].pattern.filter.as_ref().unwrap();
        assert_eq!(
            at(EXAMPLE, f.span),
            "utm_source = \\\"spam\\\" or bot exists"
        );
        let Filter::Or(items) = &f.node else { panic!() };
        let Filter::Compare { value, .. } = &items[0].node else {
            panic!()
        };
        assert_eq!(value.node, Literal::Str("spam".into()));
        assert_eq!(at(EXAMPLE, value.span), "\\\"spam\\\"");
    }

    #[test]
    fn example_spans_point_into_the_file() {
        let defs = ok(EXAMPLE);
        let cond = |name: &str| {
            defs.segments
                .iter()
                .find(|s| s.name.node == name)
                .unwrap()
                .condition
                .clone()
        };
        // Basic string.
        let c = cond("engaged-reader");
        assert_eq!(at(EXAMPLE, c.span), "count(email_open, 30d) >= 3");
        // Multi-line literal string: the newline after ''' is trimmed.
        let c = cond("clicked-but-not-registered");
        assert_eq!(
            at(EXAMPLE, c.span),
            "ad_click(campaign = \"webinar-q4-ads\")\n  then no webinar_registered(webinar_id = \"W-2026-12\") within 24h"
        );
        let Expr::Absence(a) = &c.node else { panic!() };
        assert_eq!(at(EXAMPLE, a.deadline.span), "within 24h");
        assert_eq!(a.deadline.node, Deadline::Within(24 * 3_600_000));
        // Multi-line basic string with a line-ending backslash.
        let c = cond("no-show");
        let Expr::Absence(a) = &c.node else { panic!() };
        assert_eq!(at(EXAMPLE, a.trigger.event.span), "webinar_registered");
        assert_eq!(at(EXAMPLE, a.cancel.event.span), "webinar_attended");
        assert_eq!(
            at(EXAMPLE, a.correlate.as_ref().unwrap().span),
            "webinar_id"
        );
        assert_eq!(a.deadline.node, Deadline::Until("ends_at".into()));
        assert_eq!(
            at(EXAMPLE, c.span),
            "webinar_registered \\\n  then no webinar_attended with same webinar_id until ends_at"
        );
        // Escaped quotes in a basic string.
        let c = cond("key-account-or-scored");
        let Expr::Or(items) = &c.node else { panic!() };
        let Expr::InSegment(name) = &items[1].node else {
            panic!()
        };
        assert_eq!(name.node, "key-account");
        assert_eq!(at(EXAMPLE, name.span), "\\\"key-account\\\"");
        assert_eq!(
            at(EXAMPLE, items[1].span),
            "in_segment(\\\"key-account\\\")"
        );
        // A comment inside a multi-line basic string.
        let c = cond("hot-lead");
        let Expr::And(items) = &c.node else { panic!() };
        assert_eq!(
            at(EXAMPLE, items[1].span),
            "sum(purchase, amount, 365d) < 500"
        );
        let c = cond("big-spender");
        let Expr::Compare { lhs, .. } = &c.node else {
            panic!()
        };
        let Operand::Sum { window, .. } = &lhs.node else {
            panic!()
        };
        assert_eq!(window.node, Window::Last(365 * 86_400_000));
        assert_eq!(at(EXAMPLE, window.span), "365d");
    }

    #[test]
    fn multi_line_condition_error_position() {
        let text = "[segments.a]\ncondition = '''\ncount(email_open, 30d) >= 3\n  and\n    count(email_open) >= 1\n'''\n";
        // The condition's third line is the file's fifth; `)` is at column 21.
        assert_eq!(
            errors(text),
            ["5:21: expected `,` and a window (such as `30d` or `ever`) after the event in `count(...)`, found `)`"]
        );
        // The same with a multi-line basic string, CRLF line ends and a non-ASCII
        // character before the error (columns count characters).
        let text = "[segments.a]\r\ncondition = \"\"\"\r\ncount(\"é\", 30d) >= 3\r\n  and\r\n    \"ü\" # comment\r\n\"\"\"\r\n";
        assert_eq!(
            errors(text),
            ["5:5: expected a comparison after `\"ü\"`, found end of condition"]
        );
    }

    #[test]
    fn error_positions_through_escapes() {
        // Line 2: `condition = "ad_click(campaign = \"x\") then no y within 2x"`: the
        // escapes shift everything after them by one byte each in the file.
        let text =
            "[segments.a]\ncondition = \"ad_click(campaign = \\\"x\\\") then no y within 2x\"\n";
        assert_eq!(
            errors(text),
            ["2:58: invalid number or duration `2x`; durations are whole numbers with a unit (`ms`, `s`, `m`, `h`, `d`, `w`), e.g. `30d` or `1h30m`"]
        );
        // After a line-ending backslash in a multi-line basic string.
        let text = "[segments.a]\ncondition = \"\"\"score > 1 and \\\n      \\\n   score >\"\"\"\n";
        assert_eq!(
            errors(text),
            ["4:11: expected an operand, found end of condition"]
        );
        // Unicode escapes: `\u00e9` is 6 bytes in the file, 2 in the value.
        let text = "[segments.a]\ncondition = \"trait.x = \\\"\\u00e9\\\" or @\"\n";
        assert_eq!(errors(text), ["2:38: unexpected character `@`"]);
        // A filter in a literal string.
        let text = "[[scoring.rules]]\nevent = \"x\"\nwhere = 'a = 1 b'\npoints = 1\n[segments.a]\ncondition = \"true\"\n";
        assert_eq!(
            errors(text),
            ["3:16: expected `and`, `or` or the end of the filter, found `b`"]
        );
    }

    #[test]
    fn every_error_is_reported() {
        let (defs, diags) = parse_definitions("invalid.toml", INVALID);
        let got: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            [
                "invalid.toml:2:1: unknown field `colour`; expected `format`, `scoring` or `segments`",
                "invalid.toml:1:10: unsupported format 2; this version of segstream reads format 1",
                "invalid.toml:6:1: unknown field `decay` in `scoring`; expected `half_life` or `rules`",
                "invalid.toml:5:13: invalid duration `30x` for `half_life`; expected a whole number with a unit (`ms`, `s`, `m`, `h`, `d` or `w`), e.g. \"30d\" or \"1d12h\"",
                "invalid.toml:10:20: expected a string in double quotes after `prefix`, found end of filter",
                "invalid.toml:11:10: `points` must be a number, found string",
                "invalid.toml:13:1: missing field `event` in scoring rule #2",
                "invalid.toml:19:11: invalid segment name `Bad_Name`; a name has lowercase letters, digits, `_` and `-`, and starts with a letter or digit",
                "invalid.toml:23:1: unknown field `conditon` in segment `typo`; expected `description` or `condition`",
                "invalid.toml:22:1: missing field `condition` in segment `typo`",
                "invalid.toml:26:15: `description` must be a string, found integer",
                "invalid.toml:30:11: expected a comparison after `count(a, 30d)`, found `)`",
                "invalid.toml:34:28: expected `no` after `then`, found `webinar_registered`",
            ]
        );
        // Only the valid segment is kept.
        assert_eq!(defs.segments.len(), 1);
        assert_eq!(defs.segments[0].name.node, "ok");
        assert!(defs.scoring.rules.is_empty());
        // Sorted for display.
        let all = crate::segment::diagnostic::Diagnostics(diags);
        let shown = all.to_string();
        assert!(
            shown.starts_with("invalid.toml:1:10: unsupported format 2"),
            "{shown}"
        );
        assert!(shown
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("invalid.toml:2:1:"));
    }

    #[test]
    fn toml_syntax_error() {
        let text = "[segments.a]\ncondition = \"x\n";
        assert_eq!(errors(text), ["2:15: invalid TOML: invalid basic string"]);
        let text = "[segments.a]\ncondition = \"score > 1\"\ncondition = \"score > 2\"\n";
        let e = errors(text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("3:1: invalid TOML: duplicate key `condition`"),
            "{e:?}"
        );
    }

    #[test]
    fn no_segments() {
        assert_eq!(
            errors("format = 1\n"),
            ["1:1: no segments defined; add at least one `[segments.NAME]` table"]
        );
        assert_eq!(
            errors("format = 1\n[segments]\n"),
            ["2:2: no segments defined; add at least one `[segments.NAME]` table"]
        );
        assert_eq!(
            errors("segments = 3\n"),
            ["1:12: `segments` must be a table, found integer"]
        );
        assert_eq!(
            errors("[segments]\na = \"score > 1\"\n"),
            ["2:5: segment `a` must be a table, found string"]
        );
    }

    #[test]
    fn segment_names() {
        let long = "a".repeat(65);
        let text = format!(
            "[segments.{long}]\ncondition = \"true\"\n[segments.{}]\ncondition = \"true\"\n[segments._x]\ncondition = \"true\"\n[segments.\"\"]\ncondition = \"true\"\n[segments.\"a b\"]\ncondition = \"true\"\n[segments.0-a_b]\ncondition = \"true\"\n",
            "b".repeat(64)
        );
        let (defs, diags) = parse_definitions("t.toml", &text);
        let msgs: Vec<String> = diags
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .collect();
        assert_eq!(msgs.len(), 4, "{msgs:#?}");
        assert!(msgs[0].starts_with("1:11: segment name `aaaa"), "{msgs:?}");
        assert!(msgs[0].ends_with("is too long (65 characters; at most 64)"));
        assert!(msgs[1].starts_with("5:11: invalid segment name `_x`"));
        assert!(msgs[2].starts_with("7:11: invalid segment name ``"));
        assert!(msgs[3].starts_with("9:11: invalid segment name `a b`"));
        let names: Vec<&str> = defs.segments.iter().map(|s| s.name.node.as_str()).collect();
        assert_eq!(names, ["b".repeat(64).as_str(), "0-a_b"]);
        assert!(is_valid_segment_name("clicked-but-not-registered"));
        assert!(!is_valid_segment_name("Clicked"));
        assert!(!is_valid_segment_name(""));
    }

    #[test]
    fn other_ways_to_write_tables() {
        // Inline tables, dotted keys and an inline array of rules.
        let text = r#"
scoring = { half_life = "1d12h", rules = [{ event = "a", points = 2 }, { event = "b", where = "x > 1", points = 0.5 }] }
segments.dotted.condition = "score > 1"
segments.inline = { description = "d", condition = "score > 2" }
"#;
        let defs = ok(text);
        assert_eq!(defs.scoring.half_life.unwrap().node, 36 * 3_600_000);
        assert_eq!(defs.scoring.rules.len(), 2);
        assert_eq!(defs.scoring.rules[1].points.node, 0.5);
        assert_eq!(defs.segments.len(), 2);
        assert_eq!(defs.segments[0].name.node, "dotted");
        assert_eq!(at(text, defs.segments[0].condition.span), "score > 1");
        assert_eq!(defs.segments[1].description.as_deref(), Some("d"));

        // Missing fields in inline tables point at the table.
        let text = "segments.a = { description = \"d\" }\nscoring.rules = [{ event = \"a\" }, 3]\n";
        assert_eq!(
            errors(text),
            [
                "2:18: missing field `points` in scoring rule #1",
                "2:35: scoring rule #2 must be a table, found integer",
                "1:14: missing field `condition` in segment `a`",
            ]
        );
    }

    #[test]
    fn wrong_types() {
        let text = r#"format = "1"
scoring = 5
[segments.a]
condition = 3
[segments.b]
condition = "true"
description = ["x"]
"#;
        assert_eq!(
            errors(text),
            [
                "1:10: `format` must be an integer, found string",
                "2:11: `scoring` must be a table, found integer",
                "4:13: `condition` must be a string, found integer",
                "7:15: `description` must be a string, found array",
            ]
        );
        let text = r#"[scoring]
half_life = 30
rules = { event = "a" }
[segments.a]
condition = "true"
"#;
        assert_eq!(
            errors(text),
            [
                "2:13: `half_life` must be a string, found integer",
                "3:9: `rules` must be an array of tables (`[[scoring.rules]]`), found table",
            ]
        );
        let text = r#"[scoring]
half_life = "0s"
[[scoring.rules]]
event = ""
points = true
[[scoring.rules]]
event = "a"
points = nan
[[scoring.rules]]
event = "a"
where = 1
points = 1
[[scoring.rules]]
event = "b"
points = 1
[[scoring.rules]]
evnt = "b"
points = 1
[segments.a]
condition = "true"
"#;
        assert_eq!(
            errors(text),
            [
                "2:13: `half_life` must be greater than zero",
                "4:9: `event` must not be empty; use \"any\" for every event",
                "5:10: `points` must be a number, found boolean",
                "8:10: `points` must be a finite number",
                "11:9: `where` must be a string, found integer",
                "17:1: unknown field `evnt` in scoring rule #5; expected `event`, `where` or `points`",
                "16:1: missing field `event` in scoring rule #5",
            ]
        );
    }

    #[test]
    fn decode_strings() {
        let check = |raw: &str, value: &str| {
            let (v, map) = decode_toml_string(raw, 10).unwrap();
            assert_eq!(v, value, "{raw:?}");
            // Every character of the value maps to where it is written.
            (v, map)
        };
        let (_, m) = check("'a\\b'", "a\\b");
        assert_eq!(m.span(0, 3), Span::new(11, 14));
        let (_, m) = check("'''\nab'''", "ab");
        assert_eq!(m.span(0, 2), Span::new(14, 16));
        let (_, m) = check("'''\r\na\r\nb'''", "a\nb");
        assert_eq!(m.span(2, 3), Span::new(18, 19));
        assert_eq!(m.span(1, 2), Span::new(16, 18));
        let (_, m) = check(r#""a\tb\"c""#, "a\tb\"c");
        assert_eq!(m.span(4, 5), Span::new(17, 18));
        assert_eq!(m.span(3, 4), Span::new(15, 17));
        let (_, m) = check(r#""\U0001F600x""#, "\u{1F600}x");
        assert_eq!(m.span(4, 5), Span::new(21, 22));
        assert_eq!(m.span(0, 4), Span::new(11, 21));
        let (_, m) = check("\"\"\"\na \\  \n\n   b\"\"\"", "a b");
        assert_eq!(m.span(2, 3), Span::new(24, 25));
        assert_eq!(m.span(0, 2), Span::new(14, 16));
        check(r#""""a""b""""#, "a\"\"b");
        check("''''a'''", "'a");
        check("\"\"", "");
        assert!(decode_toml_string(r#""\q""#, 0).is_none());
        assert!(decode_toml_string("x", 0).is_none());
    }

    #[test]
    fn decoder_agrees_with_toml_edit() {
        let values = [
            "'plain'",
            "\"esc \\\" \\\\ \\n \\t \\b \\f \\r \\u00e9 \\U0001F600\"",
            "'''\nmulti\n line'''",
            "'''no newline\r\n'''",
            "\"\"\"\r\na \\\r\n   b \\   \n\n c\"\"\"",
            "\"\"\"\"quoted\"\"\"\"",
        ];
        for raw in values {
            let text = format!("k = {raw}\n");
            let doc = ImDocument::parse(text.as_str()).unwrap();
            let v = doc.as_table().get("k").unwrap().as_value().unwrap();
            let expected = v.as_str().unwrap();
            let (decoded, _) = decode_toml_string(raw, 4).unwrap();
            assert_eq!(decoded, expected, "{raw:?}");
        }
    }

    proptest::proptest! {
        /// Arbitrary text and arbitrary condition strings: no panic, and every diagnostic
        /// is inside the file.
        #[test]
        fn never_panics(text in "\\PC{0,60}", cond in "\\PC{0,30}") {
            let (_, diags) = parse_definitions("t.toml", &text);
            let lines = text.split('\n').count();
            for d in diags {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines);
            }
            let quoted = [
                format!("{cond:?}"),
                format!("'''{cond}'''"),
                format!("\"\"\"{cond}\"\"\""),
                format!("'{cond}'"),
            ];
            for q in quoted {
                let text = format!("[segments.a]\ncondition = {q}\n");
                let _ = parse_definitions("t.toml", &text);
            }
        }
    }
}
