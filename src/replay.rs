//! Offline replay: run the engine over a file of events, exactly as the live path would.
//!
//! Events are processed in input order with event-time semantics; transitions are written
//! as JSON lines; the final profiles optionally as JSON lines; a summary counts what was
//! read, accepted, rejected (by reason), late, and the transitions per segment. With
//! `--explain ID`, the customer's segments are explained after the replay
//! ([`explanations`]), with the customer's transitions collected during it as causes.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::Serialize;

use segstream_core::engine::{
    Cursor, Engine, ExplainError, Explanation, Preview, PreviewAnswer, Tally,
};
use segstream_core::event::InputFormat;
use segstream_core::time::{format_rfc3339, Millis};
use segstream_core::transition::{Direction, Transition};

mod chunks;
mod workers;
pub use workers::{replay_workers, write_profiles_of, CHUNK_LINES};

/// Largest accepted line (the live path has the same limit per message).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Lines the one-engine replay reads at a time: about 64 KiB of typical events, so that a
/// line is still in the core's cache when it is parsed after the newline search.
const SEQUENTIAL_CHUNK_LINES: usize = 256;

/// A rejected line, for the summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub line: u64,
    pub reason: String,
    pub detail: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    pub events_read: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The first rejections, with line numbers (at most 20).
    pub rejections: Vec<Rejection>,
    pub late: u64,
    /// Events that linked two ids; persons merged; links refused (the events themselves
    /// were applied), with the first refusals.
    pub links: u64,
    pub merges: u64,
    pub links_refused: u64,
    pub transitions: u64,
    /// Per segment: [entered, exited].
    pub transitions_by_segment: BTreeMap<String, [u64; 2]>,
    pub profiles: usize,
    /// Profiles evicted to stay within `max_profiles`.
    pub profiles_evicted: u64,
    /// The process's peak resident memory (Linux `VmHWM`), when known.
    pub peak_resident_bytes: Option<u64>,
    pub watermark: Option<String>,
    /// With several workers: an engine's symbol table filled up in some class, so the
    /// transitions may differ from one worker's (see `replay::workers`). Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub symbol_cap_reached: bool,
}

impl ReplaySummary {
    fn count(&mut self, ts: &[Transition]) {
        for t in ts {
            let e = self
                .transitions_by_segment
                .entry(t.segment.to_string())
                .or_default();
            e[usize::from(t.direction == Direction::Exited)] += 1;
        }
        self.transitions += ts.len() as u64;
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "events read:  {}", self.events_read);
        let _ = writeln!(s, "accepted:     {}", self.accepted);
        let _ = writeln!(s, "rejected:     {}", self.rejected);
        for (r, n) in &self.rejected_by_reason {
            let _ = writeln!(s, "  {r:<20} {n}");
        }
        for r in &self.rejections {
            let _ = writeln!(s, "  line {}: {}: {}", r.line, r.reason, r.detail);
        }
        let _ = writeln!(s, "late:         {}", self.late);
        if self.links > 0 || self.links_refused > 0 {
            let _ = writeln!(
                s,
                "identity:     {} links, {} merges, {} refused",
                self.links, self.merges, self.links_refused
            );
        }
        let _ = writeln!(s, "profiles:     {}", self.profiles);
        if self.profiles_evicted > 0 {
            let _ = writeln!(s, "  evicted:    {}", self.profiles_evicted);
        }
        if let Some(b) = self.peak_resident_bytes {
            let _ = writeln!(s, "peak memory:  {} MiB", b >> 20);
        }
        if let Some(w) = &self.watermark {
            let _ = writeln!(s, "watermark:    {w}");
        }
        let _ = writeln!(s, "transitions:  {}", self.transitions);
        let _ = writeln!(s, "  {:<32} {:>8} {:>8}", "segment", "entered", "exited");
        for (seg, [en, ex]) in &self.transitions_by_segment {
            let _ = writeln!(s, "  {seg:<32} {en:>8} {ex:>8}");
        }
        s
    }
}

/// How a replay treats time beyond the events themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// After the last event, move time to this instant so that timers due until then fire
    /// (as they would have in a live system by then).
    pub advance_to: Option<Millis>,
    /// "Now" for the future guard: events stamped more than the engine's
    /// `max_future_skew` after it are rejected (`future_timestamp`), as the live service
    /// rejects them against the wall clock. `None`: no guard.
    pub now: Option<Millis>,
    /// The format of the events: segstream's own (the default) or the Segment Spec.
    pub format: InputFormat,
}

/// Runs `engine` over `events` (one JSON event per line, in `options.format`), writing
/// transitions to `transitions`.
pub fn replay(
    engine: &mut Engine,
    events: impl BufRead,
    transitions: &mut dyn Write,
    options: ReplayOptions,
) -> std::io::Result<ReplaySummary> {
    replay_observed(engine, events, transitions, options, &mut |_| {})
}

/// [`replay`], showing `observe` every transition as it is written.
pub fn replay_observed(
    engine: &mut Engine,
    events: impl BufRead,
    transitions: &mut dyn Write,
    options: ReplayOptions,
    observe: &mut dyn FnMut(&Transition),
) -> std::io::Result<ReplaySummary> {
    let skew = engine.config().max_future_skew;
    let mut summary = ReplaySummary::default();
    let mut out = Vec::new();
    let mut line_no = 0u64;
    let mut reader = chunks::ChunkReader::new(events, SEQUENTIAL_CHUNK_LINES);
    let (mut buf, mut ranges) = (Vec::new(), Vec::new());
    // The JSON of the transitions being written (kept across lines).
    let mut json = Vec::new();
    loop {
        reader.read_chunk(&mut buf, &mut ranges)?;
        if ranges.is_empty() {
            break;
        }
        for &(start, end) in &ranges {
            line_no += 1;
            let line = trim(&buf[start..end]);
            if line.is_empty() {
                continue;
            }
            summary.events_read += 1;
            let result = if line.len() > MAX_EVENT_BYTES {
                Err(segstream_core::event::EventError::new(
                    segstream_core::event::RejectReason::TooLarge,
                    format!(
                        "{} bytes exceed the {MAX_EVENT_BYTES}-byte limit",
                        line.len()
                    ),
                ))
            } else {
                parse_checked(options.format, line, options.now, skew)
                    .and_then(|event| engine.apply_and_advance(0, &event, &mut out))
            };
            match result {
                Ok(applied) => {
                    summary.accepted += 1;
                    if let segstream_core::engine::Link::Refused(r) = applied.link {
                        summary.links_refused += 1;
                        if summary.rejections.len() < 20 {
                            summary.rejections.push(Rejection {
                                line: line_no,
                                reason: segstream_core::event::RejectReason::LinkRefused
                                    .as_str()
                                    .to_string(),
                                detail: format!("{r} (the event itself was applied)"),
                            });
                        }
                    }
                }
                Err(e) => {
                    summary.rejected += 1;
                    if e.reason == segstream_core::event::RejectReason::Late {
                        summary.late += 1;
                    }
                    *summary
                        .rejected_by_reason
                        .entry(e.reason.as_str().to_string())
                        .or_default() += 1;
                    if summary.rejections.len() < 20 {
                        summary.rejections.push(Rejection {
                            line: line_no,
                            reason: e.reason.as_str().to_string(),
                            detail: e.detail,
                        });
                    }
                }
            }
            flush(&mut summary, &mut out, transitions, observe, &mut json)?;
        }
    }
    if let Some(t) = options.advance_to {
        engine.advance_watermark(t, &mut out);
        flush(&mut summary, &mut out, transitions, observe, &mut json)?;
    }
    summary.profiles = engine.profile_count();
    summary.links = engine.stats().links;
    summary.merges = engine.stats().merges;
    summary.profiles_evicted = engine.stats().profiles_evicted;
    summary.peak_resident_bytes = peak_resident_bytes();
    let wm = engine.watermark();
    summary.watermark = (wm != Millis::MIN).then(|| format_rfc3339(wm));
    transitions.flush()?;
    Ok(summary)
}

/// Parses an event in `format` and applies the future guard (when `now` is given).
fn parse_checked(
    format: InputFormat,
    line: &[u8],
    now: Option<Millis>,
    skew: Option<Millis>,
) -> Result<segstream_core::event::Event<'_>, segstream_core::event::EventError> {
    let event = format.parse(line)?;
    if let Some(now) = now {
        segstream_core::event::check_not_future(event.timestamp, now, skew)?;
    }
    Ok(event)
}

fn flush(
    summary: &mut ReplaySummary,
    out: &mut Vec<Transition>,
    w: &mut dyn Write,
    observe: &mut dyn FnMut(&Transition),
    json: &mut Vec<u8>,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    summary.count(out);
    json.clear();
    for t in out.drain(..) {
        observe(&t);
        t.write_json(json);
        json.push(b'\n');
    }
    w.write_all(json)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// The answer to a preview over all of the engine's profiles (e.g. after a replay): what
/// `POST /segments/preview` answers, with up to `sample` member ids.
pub fn preview_answer(engine: &Engine, preview: &Preview, sample: usize) -> PreviewAnswer {
    let mut tally = Tally::new(preview, sample);
    let mut cursor = Cursor::default();
    // One scan to the end; the definitions cannot change under it (`engine` is borrowed).
    let scanned = preview.scan(engine, &mut tally, &mut cursor, usize::MAX);
    debug_assert_eq!(scanned, Ok(true));
    tally.finish()
}

/// The transitions of one customer during a replay (for `--explain`): those for the id
/// itself or naming it among the person's other ids.
#[derive(Debug, Clone)]
pub struct CustomerTransitions {
    pub id: String,
    pub transitions: Vec<Transition>,
}

impl CustomerTransitions {
    pub fn new(id: &str) -> Self {
        CustomerTransitions {
            id: id.to_string(),
            transitions: Vec::new(),
        }
    }

    /// Keeps `t` if it is the customer's.
    pub fn observe(&mut self, t: &Transition) {
        if *t.customer_id == *self.id || t.anonymous_ids.iter().any(|i| **i == *self.id) {
            self.transitions.push(t.clone());
        }
    }
}

/// The customer's segments explained after a replay (`segment`: only that one), at the
/// engine's time for the customer ([`Engine::explain_now`]: the later of its clock and
/// the watermark), each with the customer's transitions of it as causes: those
/// collected for any id of the person.
pub fn explanations(
    engine: &Engine,
    collected: &CustomerTransitions,
    segment: Option<&str>,
) -> Result<Vec<Explanation>, ExplainError> {
    let id = collected.id.as_str();
    let mut list = match segment {
        Some(name) => vec![engine.explain_now(id, name)?],
        None => {
            let now = engine
                .evaluation_time(id)
                .ok_or_else(|| ExplainError::UnknownProfile(id.to_string()))?;
            engine.explain_all(id, now)?
        }
    };
    let canonical = engine.canonical_id(id);
    let others = engine.other_ids(canonical);
    let of_person = |t: &&Transition| {
        *t.customer_id == *canonical || others.iter().any(|o| **o == *t.customer_id)
    };
    for e in &mut list {
        e.add_causes(collected.transitions.iter().filter(of_person));
    }
    Ok(list)
}

/// Writes every profile as one JSON line, ordered by customer id.
pub fn write_profiles(engine: &Engine, w: &mut dyn Write) -> std::io::Result<()> {
    let mut ids: Vec<&str> = engine.profiles().map(|(k, _)| k).collect();
    ids.sort_unstable();
    for id in ids {
        if let Some(v) = crate::profile_view::profile_json(engine, id) {
            serde_json::to_writer(&mut *w, &v)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), on Linux.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
