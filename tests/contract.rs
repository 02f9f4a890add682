//! The engine's parsers and the JSON Schemas in `schemas/` describe the same contract: every
//! example event the schemas accept, the parser accepts, and every example they reject, the
//! parser rejects with a reason. That holds for segstream's own format
//! (`schemas/examples/events/`, `parse_event`) and for the Segment Spec
//! (`schemas/examples/segment/`, `parse_segment_event`).

use std::path::Path;

use segstream::generator::{generate, FunnelConfig};
use segstream_core::event::{parse_event, parse_segment_event, Event, EventError};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `parse` over every line of the `*.jsonl` files in `dir`: lines of `invalid*` files
/// must be rejected with a reason and a detail, all others accepted. (valid, invalid) counts.
fn check_examples(dir: &Path, parse: fn(&[u8]) -> Result<Event<'_>, EventError>) -> (usize, usize) {
    let mut valid = 0;
    let mut invalid = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let is_invalid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("invalid"));
        for line in lines(&path) {
            match (parse(line.as_bytes()), is_invalid) {
                (Ok(_), false) => valid += 1,
                (Err(e), true) => {
                    assert!(!e.detail.is_empty());
                    invalid += 1;
                }
                (Ok(_), true) => panic!("{}: accepted an invalid event: {line}", path.display()),
                (Err(e), false) => {
                    panic!("{}: rejected a valid event ({e}): {line}", path.display())
                }
            }
        }
    }
    (valid, invalid)
}

#[test]
fn the_parser_accepts_exactly_the_valid_examples() {
    let (valid, invalid) = check_examples(Path::new("schemas/examples/events"), parse_event);
    assert!(
        valid >= 40 && invalid >= 40,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn the_segment_parser_accepts_exactly_the_valid_segment_examples() {
    let (valid, invalid) =
        check_examples(Path::new("schemas/examples/segment"), parse_segment_event);
    assert!(
        valid >= 20 && invalid >= 20,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn the_parser_accepts_every_generated_event() {
    let cfg = FunnelConfig {
        customers: 300,
        ..FunnelConfig::default()
    };
    for e in generate(&cfg) {
        parse_event(e.json.as_bytes()).unwrap_or_else(|err| panic!("{err}: {}", e.json));
    }
}

#[test]
fn transition_examples_parse_as_transitions() {
    let path = Path::new("schemas/examples/transitions/reference-funnel.jsonl");
    let all = lines(path);
    assert!(!all.is_empty());
    for line in all {
        let t: segstream_core::transition::Transition = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), line);
    }
}
