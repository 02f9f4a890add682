//! Segment definitions: validation (every error at once, with file, line and column),
//! versions, and replacing definitions while running.

mod common;

use common::Harness;
use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::segment::compile::Definitions;
use segstream_core::symbols::Symbols;
use segstream_core::transition::{Cause, Direction};
use serde_json::json;

fn errors(text: &str) -> Vec<String> {
    let mut symbols = Symbols::new();
    match Definitions::from_source("defs.toml", text, &mut symbols) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn the_shipped_library_compiles_with_every_required_segment() {
    let text = common::repo_file("segments/library.toml");
    let mut symbols = Symbols::new();
    let defs = Definitions::from_source("segments/library.toml", &text, &mut symbols)
        .unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "clicked-but-not-registered",
        "registered-not-attended",
        "webinar-attendee",
        "engaged-reader",
        "unsubscribed",
        "sales-ready-lead",
        "key-account",
        "new-customer",
        "at-risk",
        "effort-heavy-low-value",
    ] {
        assert!(defs.segment_index(name).is_some(), "{name} missing");
    }
}

#[test]
fn every_error_is_reported_at_once_with_line_and_column() {
    let text = r#"[segments.a]
condition = 'count(email_opne, 30d) >= 3'

[segments.b]
conditon = 'score > 1'

[segments.c]
condition = 'count(page_view, 0d) >= 1'

[segments.d]
condition = 'since(page_view) > 5'

[segments.e]
condition = 'in_segment("f")'

[segments.f]
condition = 'in_segment("e")'

[segments.g]
condition = 'in_segment("nope") and trait.role = "x"'

[segments.h]
condition = 'count(purchase(amount = "12"), 30d) >= 1'

[segments.i]
condition = 'count(page_view, 30d) >= "many"'

[segments.j]
condition = 'ad_click then webinar_registered within 24h'
"#;
    let errs = errors(text);
    let expect = [
        "defs.toml:2:20: unknown event type `email_opne`; did you mean `email_open`?",
        "defs.toml:5:1: unknown field `conditon` in segment `b`",
        "defs.toml:8:31: an empty window can never hold an event",
        "defs.toml:11:33: cannot compare a duration with a number",
        "defs.toml:13:11: segments depend on each other in a cycle: e -> f -> e",
        "defs.toml:20:25: segment `g` uses unknown segment `nope`",
        "defs.toml:23:38: `amount` of `purchase` is a number; it cannot be compared with a string",
        "defs.toml:26:39: cannot compare a number with a string",
        "defs.toml:29:28: expected `no` after `then`",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in\n{}",
            errs.join("\n")
        );
    }
    assert!(errs.len() >= expect.len());
}

#[test]
fn the_fixture_with_many_errors_lists_them_all() {
    let text = common::repo_file("crates/segstream-core/tests/fixtures/segments/invalid.toml");
    let mut symbols = Symbols::new();
    let err = Definitions::from_source("invalid.toml", &text, &mut symbols).unwrap_err();
    assert!(err.len() >= 8, "{err}");
    for d in &err.0 {
        assert!(d.line >= 1 && d.column >= 1, "{d}");
    }
}

#[test]
fn versions_are_content_hashes_that_ignore_layout_but_follow_dependencies() {
    let v = |text: &str, name: &str| {
        let mut symbols = Symbols::new();
        let d = Definitions::from_source("x.toml", text, &mut symbols).unwrap();
        d.segments[d.segment_index(name).unwrap()]
            .version
            .to_string()
    };
    let a = "[segments.x]\ncondition = 'count(page_view, 7d) >= 1'\n[segments.y]\ncondition = 'in_segment(\"x\")'\n";
    let b = "# comment\n[segments.x]\ncondition = '''\n  count( page_view , 7d )  >=  1  # same\n'''\n[segments.y]\ncondition = 'in_segment(\"x\")'\n";
    let c = "[segments.x]\ncondition = 'count(page_view, 7d) >= 2'\n[segments.y]\ncondition = 'in_segment(\"x\")'\n";
    assert_eq!(v(a, "x"), v(b, "x"));
    assert_ne!(v(a, "x"), v(c, "x"));
    // y did not change textually, but what it means did.
    assert_ne!(v(a, "y"), v(c, "y"));
    assert_eq!(v(a, "y").len(), 12);
}

const V1: &str = r#"
[segments.viewer]
condition = 'count(page_view, 30d) >= 2'
[segments.dach]
condition = 'trait.country = "DE"'
[segments.gone]
condition = 'count(click, 30d) >= 1'
"#;

const V2: &str = r#"
[segments.viewer]
condition = 'count(page_view, 30d) >= 1'
[segments.dach]
condition = 'trait.country = "DE"'
[segments.buyer]
condition = 'count(page_view, 30d) >= 1 and trait.country = "DE"'
"#;

#[test]
fn reload_reevaluates_from_profiles_and_emits_the_differences() {
    let mut h = Harness::new(V1);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c1",
        "identify",
        "2026-11-01T00:01:00Z",
        json!({"country": "DE"}),
    );
    h.send("c1", "click", "2026-11-01T00:02:00Z", json!({}));
    h.send(
        "c2",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c2",
        "page_view",
        "2026-11-01T00:03:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(h.members("c1"), ["dach", "gone"]);
    assert_eq!(h.members("c2"), ["viewer"]);
    let mut out = Vec::new();
    let report = h.engine.reload_source("v2.toml", V2, &mut out).unwrap();
    assert_eq!(report.added, ["buyer"]);
    assert_eq!(report.changed, ["viewer"]);
    assert_eq!(report.removed, ["gone"]);
    assert_eq!(report.unchanged, ["dach"]);
    // The page_view window was kept (same aggregate), so c1's single view counts now.
    let mut got: Vec<(String, String, Direction)> = out
        .iter()
        .map(|t| {
            (
                t.customer_id.to_string(),
                t.segment.to_string(),
                t.direction,
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("c1".into(), "buyer".into(), Direction::Entered),
            ("c1".into(), "gone".into(), Direction::Exited),
            ("c1".into(), "viewer".into(), Direction::Entered),
        ]
    );
    let defs = h.engine.definitions().clone();
    for t in &out {
        assert!(matches!(&t.cause, Cause::Reload(v) if *v == defs.version));
        if let Some(i) = defs.segment_index(&t.segment) {
            assert_eq!(t.rule_version, defs.segments[i].version);
        }
    }
    // Sequences continue per customer.
    let c1: Vec<u32> = out
        .iter()
        .filter(|t| &*t.customer_id == "c1")
        .map(|t| t.sequence)
        .collect();
    assert_eq!(c1, [3, 4, 5]);
    // And processing goes on under the new set.
    let t = h.send(
        "c3",
        "page_view",
        "2026-11-01T00:04:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn an_invalid_reload_is_rejected_whole_and_the_running_set_stays() {
    let mut h = Harness::new(V1);
    let before = h.engine.definitions().version.clone();
    let mut out = Vec::new();
    let err = h
        .engine
        .reload_source("bad.toml", "[segments.x]\ncondition = 'count(page_view) >= 1'\n[segments.y]\ncondition = 'score >'\n", &mut out)
        .unwrap_err();
    assert_eq!(err.len(), 2, "{err}");
    assert!(out.is_empty());
    assert_eq!(h.engine.definitions().version, before);
}

#[test]
fn engine_from_library_runs_the_reference_funnel_file() {
    let text = common::repo_file("segments/library.toml");
    let mut engine =
        Engine::from_source("segments/library.toml", &text, EngineConfig::default()).unwrap();
    let events = common::repo_file("schemas/examples/events/reference-funnel.jsonl");
    let mut out = Vec::new();
    for line in events.lines() {
        engine
            .process(line.as_bytes(), &mut out)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    assert!(out.iter().any(|t| &*t.segment == "webinar-attendee"));
}
