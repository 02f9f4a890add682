//! The fuzzing harness shared by the smoke test (`tests/fuzz_smoke.rs`), the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and the release-mode driver (`fuzz/driver.rs`).
//!
//! It is included with `#[path = ...] mod harness;` and depends on nothing but
//! `segstream-core` and `std`:
//!
//! - [`Rng`]: a small deterministic PRNG (SplitMix64), so every run can be replayed;
//! - [`generate`]: grammar-aware generators of events, conditions, filters and whole
//!   definitions files (structurally valid, often also semantically valid);
//! - [`mutate`]: byte-level and token-level mutations with the languages' dictionaries,
//!   splices and generated fragments;
//! - the checks ([`check`], [`check_generated_event`]): the properties every input must
//!   satisfy. A check that fails panics, which is what the fuzzers and the test report.
#![allow(dead_code)]

pub mod generate;
pub mod mutate;

use segstream_core::event::{parse_event, parse_event_with_serde, RejectReason, MAX_TIMESTAMP_MS};
use segstream_core::segment::compile::Definitions;
use segstream_core::segment::diagnostic::Diagnostics;
use segstream_core::symbols::Symbols;

/// The three harnesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `parse_event` on raw bytes (one Kafka message).
    Events,
    /// `Definitions::from_source` on a whole definitions file.
    Definitions,
    /// The condition language: the input is one condition (and one scoring filter),
    /// embedded in a definitions file.
    Conditions,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Events, Target::Definitions, Target::Conditions];

    pub fn name(self) -> &'static str {
        match self {
            Target::Events => "events",
            Target::Definitions => "definitions",
            Target::Conditions => "conditions",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Runs the checks of `target` on one input. Panics if a property does not hold.
pub fn check(target: Target, data: &[u8]) {
    match target {
        Target::Events => check_event(data),
        Target::Definitions => {
            check_definitions(&String::from_utf8_lossy(data));
        }
        Target::Conditions => check_condition(&String::from_utf8_lossy(data)),
    }
}

/// One input of a coverage-guided run: [`check`], and for one input in 16 (picked by a
/// hash of the input) also a grammar-generated valid event seeded by that hash, which must
/// parse to the ids, type and time it was made with.
pub fn fuzz_one(target: Target, data: &[u8]) {
    check(target, data);
    if target == Target::Events {
        let h = hash(data);
        if h % 16 == 0 {
            let (json, expected) = generate::event(&mut Rng::new(h));
            check_generated_event(&json, &expected);
        }
    }
}

/// FNV-1a, to derive a seed from an input.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- a deterministic PRNG -------------------------------------------------------------------

/// SplitMix64: tiny, fast, good enough to pick mutations, and reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5EED_5E65_7EA1_0000)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---- events ---------------------------------------------------------------------------------

/// The reasons `parse_event` itself may give (the others come from the engine and the
/// service).
const PARSER_REASONS: [RejectReason; 6] = [
    RejectReason::InvalidJson,
    RejectReason::NotAnObject,
    RejectReason::MissingField,
    RejectReason::WrongType,
    RejectReason::InvalidValue,
    RejectReason::InvalidTimestamp,
];

/// `parse_event` on arbitrary bytes: no panic; the same answer as the serde-only path (its
/// one-pass reader may only decline, never differ); a rejection has a parser reason and a
/// non-empty detail; an accepted event satisfies the contract.
pub fn check_event(data: &[u8]) {
    let answer = parse_event(data);
    assert_eq!(
        answer,
        parse_event_with_serde(data),
        "the one-pass reader and serde differ on {:?}",
        String::from_utf8_lossy(data)
    );
    match answer {
        Err(e) => {
            assert!(
                PARSER_REASONS.contains(&e.reason),
                "parse_event gave reason {} (not a parser reason)",
                e.reason
            );
            assert!(
                !e.detail.trim().is_empty(),
                "rejection {} without a detail",
                e.reason
            );
        }
        Ok(ev) => {
            for (field, value) in [
                ("event_id", Some(&ev.event_id)),
                ("customer_id", ev.customer_id.as_ref()),
                ("anonymous_id", ev.anonymous_id.as_ref()),
                ("previous_id", ev.previous_id.as_ref()),
                ("type", Some(&ev.event_type)),
            ] {
                if let Some(value) = value {
                    assert!(!value.trim().is_empty(), "accepted an empty `{field}`");
                }
            }
            assert!(
                ev.customer_id.is_some() || ev.anonymous_id.is_some(),
                "accepted an event without an id"
            );
            for id in [&ev.customer_id, &ev.anonymous_id, &ev.previous_id]
                .into_iter()
                .flatten()
            {
                assert!(
                    !id.chars().any(char::is_control),
                    "accepted an id with a control character: {id:?}"
                );
            }
            assert!(
                (0..=MAX_TIMESTAMP_MS).contains(&ev.timestamp),
                "accepted timestamp {} out of range",
                ev.timestamp
            );
            assert_eq!(
                segstream_core::event::EventKind::from_type(&ev.event_type),
                ev.kind,
                "kind does not follow the type"
            );
        }
    }
}

/// What a generated valid event must parse to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEvent {
    pub event_id: String,
    pub customer_id: String,
    pub event_type: String,
    pub timestamp: i64,
}

/// A grammar-generated valid event must parse, to the ids, type and time it was made with.
pub fn check_generated_event(json: &str, expected: &ExpectedEvent) {
    check_event(json.as_bytes());
    let ev = parse_event(json.as_bytes())
        .unwrap_or_else(|e| panic!("a valid generated event was rejected: {e}\n{json}"));
    assert_eq!(ev.event_id, expected.event_id, "event_id of {json}");
    assert_eq!(
        ev.customer_id.as_deref(),
        Some(expected.customer_id.as_str()),
        "customer_id of {json}"
    );
    assert_eq!(ev.event_type, expected.event_type, "type of {json}");
    assert_eq!(ev.timestamp, expected.timestamp, "timestamp of {json}");
}

// ---- definitions ----------------------------------------------------------------------------

/// The file name given to `from_source`.
pub const FILE: &str = "fuzz.toml";

/// Checks one definitions file and returns whether it compiled.
///
/// - no panic;
/// - every diagnostic names the file, has a non-empty message, and a position inside the
///   text: `1 <= line <= lines + 1`, `1 <= column <= characters of that line + 1`;
/// - compiling is deterministic: a file that compiles compiles again (with a fresh and
///   with the same symbol table) to the same `version`; errors are the same again.
pub fn check_definitions(text: &str) -> bool {
    check_definitions_within(text, None)
}

/// [`check_definitions`], and with `lines = Some((first, last))` every diagnostic must
/// also be on a line in `first..=last`.
pub fn check_definitions_within(text: &str, lines: Option<(usize, usize)>) -> bool {
    let mut symbols = Symbols::new();
    let first = Definitions::from_source(FILE, text, &mut symbols);
    match &first {
        Err(diags) => check_diagnostics(text, diags, lines),
        Ok(defs) => {
            assert!(!defs.segments.is_empty(), "compiled without segments");
            assert!(!defs.version.is_empty(), "compiled with an empty version");
        }
    }
    // Determinism: a file that compiles compiles again, with a fresh table and with the
    // one just used, to the same versions. Errors are compared again for one file in
    // eight (picked by a hash of the text), which keeps the fuzzers fast.
    let again: &[(&str, bool)] = match &first {
        Ok(_) => &[("a fresh", true), ("the same", false)],
        Err(_) if hash(text.as_bytes()) % 8 == 0 => &[("the same", false)],
        Err(_) => &[],
    };
    for &(which, fresh) in again {
        let again = if fresh {
            Definitions::from_source(FILE, text, &mut Symbols::new())
        } else {
            Definitions::from_source(FILE, text, &mut symbols)
        };
        match (&first, &again) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    a.version, b.version,
                    "compiling again with {which} symbol table gave another version"
                );
                let va: Vec<&str> = a.segments.iter().map(|s| &*s.version).collect();
                let vb: Vec<&str> = b.segments.iter().map(|s| &*s.version).collect();
                assert_eq!(va, vb, "segment versions differ ({which} symbol table)");
            }
            (Err(a), Err(b)) => assert_eq!(
                a, b,
                "compiling again with {which} symbol table gave other diagnostics"
            ),
            (a, b) => panic!(
                "compiling again with {which} symbol table changed the outcome: {} then {}",
                outcome(a),
                outcome(b)
            ),
        }
    }
    first.is_ok()
}

fn outcome(r: &Result<Definitions, Diagnostics>) -> String {
    match r {
        Ok(d) => format!("ok (version {})", d.version),
        Err(d) => format!("errors:\n{d}"),
    }
}

fn check_diagnostics(text: &str, diags: &Diagnostics, lines: Option<(usize, usize)>) {
    assert!(!diags.is_empty(), "an error without any diagnostic");
    let line_texts: Vec<&str> = text.split('\n').collect();
    for d in &diags.0 {
        let here = format!("diagnostic {d:?}");
        assert_eq!(d.file, FILE, "{here}: wrong file");
        assert!(!d.message.trim().is_empty(), "{here}: empty message");
        assert!(d.line >= 1 && d.column >= 1, "{here}: position not 1-based");
        assert!(
            d.line <= line_texts.len() + 1,
            "{here}: line past the end ({} lines)",
            line_texts.len()
        );
        let width = line_texts.get(d.line - 1).map_or(0, |l| l.chars().count());
        assert!(
            d.column <= width + 1,
            "{here}: column past the end of its line ({width} characters)"
        );
        if let Some((lo, hi)) = lines {
            assert!(
                (lo..=hi).contains(&d.line),
                "{here}: outside lines {lo}..={hi} of the fuzzed text"
            );
        }
    }
}

// ---- conditions -----------------------------------------------------------------------------

/// Segments the fuzzed condition can name with `in_segment`.
pub const HELPER_SEGMENTS: &str = "[segments.a]\ncondition = 'trait.role exists'\n\n\
                                   [segments.b]\ncondition = 'count(page_view, 1d) >= 1'\n";

/// Writes `s` as a TOML string that decodes to `s` exactly: a multi-line literal string
/// when possible, else a basic string with escapes.
pub fn toml_string(s: &str) -> String {
    if !s.contains("'''") && !s.ends_with('\'') && !s.chars().any(is_toml_control) {
        // The newline after the opening quotes is trimmed by TOML, so add one when the
        // text starts with a newline of its own.
        let lead = if s.starts_with('\n') || s.starts_with("\r\n") {
            "\n"
        } else {
            ""
        };
        return format!("'''{lead}{s}'''");
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_toml_control(c) || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters TOML does not allow in a multi-line literal string (tab, LF and CR are).
fn is_toml_control(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n')) || c == '\u{7f}' || c == '\r'
}

/// A condition, in a file with the helper segments, and for one text in four (picked by a
/// hash) the same text as a scoring filter: every property of [`check_definitions`], and
/// every diagnostic on a line of the fuzzed segment (its `[segments.fuzz]` header or its
/// condition) or of the fuzzed scoring rule.
pub fn check_condition(cond: &str) {
    let quoted = toml_string(cond);
    let first = 2;
    let last = 3 + quoted.matches('\n').count();
    let text = format!("# fuzz\n[segments.fuzz]\ncondition = {quoted}\n\n{HELPER_SEGMENTS}");
    check_definitions_within(&text, Some((first, last)));
    if hash(cond.as_bytes()) % 4 != 0 {
        return;
    }

    let first = 1;
    let last = 4 + quoted.matches('\n').count();
    let text = format!(
        "[[scoring.rules]]\nevent = \"any\"\npoints = 1\nwhere = {quoted}\n\n{HELPER_SEGMENTS}"
    );
    check_definitions_within(&text, Some((first, last)));
}
