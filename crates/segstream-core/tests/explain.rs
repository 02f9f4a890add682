//! `Engine::explain`: every condition kind as a node with its canonical text, value, what
//! it needs, its result and when it next changes; errors for unknown segments and
//! profiles; and, as a property over generated streams, the explained result equals the
//! membership the engine recorded.

mod common;

use common::{at, Harness};
use proptest::prelude::*;
use segstream_core::engine::{
    Engine, EngineConfig, ExplainError, ExplainKind as Kind, ExplainNode as Node, Explanation,
};
use segstream_core::time::{format_rfc3339, Millis, HOUR, MINUTE};
use serde_json::json;

fn one(name: &str, condition: &str) -> String {
    format!("[segments.{name}]\ncondition = '''{condition}'''\n")
}

fn explain(h: &Harness, id: &str, segment: &str) -> Explanation {
    h.engine
        .explain_now(id, segment)
        .unwrap_or_else(|e| panic!("explain {id} {segment}: {e}"))
}

/// The explanation's result agrees with the recorded membership, and the root node is
/// the explanation's result.
fn consistent(e: &Explanation) {
    assert_eq!(e.result, e.member, "{e:#?}");
    assert_eq!(e.condition.result, e.result);
    assert_eq!(e.condition.next_change, e.next_change);
}

fn next_at(n: &Node) -> Option<(String, &'static str)> {
    n.next_change.as_ref().map(|c| (c.at.clone(), c.kind))
}

#[test]
fn count_shows_the_count_what_it_needs_and_when_an_event_leaves_the_window() {
    let mut h = Harness::new(&one("engaged", "count(email_open, 30d) >= 3"));
    h.send("c1", "email_open", "2026-11-01T10:00:00Z", json!({}));
    h.send("c1", "email_open", "2026-11-02T10:00:00Z", json!({}));
    let e = explain(&h, "c1", "engaged");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(n.text, "count(email_open,4w2d)>=3");
    assert_eq!(n.kind, Kind::Count);
    assert_eq!(n.value, json!(2));
    assert_eq!(n.needs, ">= 3");
    assert!(!n.result);
    // The oldest open leaves the 30-day window (buckets of one day) at the end of its
    // bucket plus 30 days.
    assert_eq!(
        next_at(n),
        Some(("2026-12-02T00:00:00.000Z".to_string(), "window"))
    );
    assert_eq!(e.at, "2026-11-02T10:00:00.000Z");
    assert!(e.causes.is_empty());

    h.send("c1", "email_open", "2026-11-03T10:00:00Z", json!({}));
    let e = explain(&h, "c1", "engaged");
    consistent(&e);
    assert!(e.member && e.result);
    assert_eq!(e.condition.value, json!(3));
}

#[test]
fn sum_shows_the_total() {
    let mut h = Harness::new(&one("spender", "sum(purchase, amount, 365d) >= 100"));
    h.send(
        "c1",
        "purchase",
        "2026-11-01T10:00:00Z",
        json!({"amount": 40.5, "currency": "EUR"}),
    );
    let e = explain(&h, "c1", "spender");
    consistent(&e);
    assert_eq!(e.condition.kind, Kind::Sum);
    assert_eq!(e.condition.text, "sum(purchase,amount,52w1d)>=100");
    assert_eq!(e.condition.value, json!(40.5));
    assert_eq!(e.condition.needs, ">= 100");
    assert_eq!(next_at(&e.condition).unwrap().1, "window");
}

#[test]
fn since_shows_the_time_passed_and_when_the_threshold_is_crossed() {
    let toml = [
        one("lapsed", "since(page_view) > 60d"),
        one("new", "since_first(any) <= 1d"),
        one(
            "pricing-lapsed",
            r#"since(page_view(url prefix "/pricing")) > 2h"#,
        ),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T10:00:00Z",
        json!({"url": "/pricing"}),
    );
    h.send("c1", "click", "2026-11-01T12:30:00Z", json!({}));
    let e = explain(&h, "c1", "lapsed");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(n.kind, Kind::Since);
    assert_eq!(n.text, "since(page_view)>8w4d");
    assert_eq!(n.value, json!("2h30m"));
    assert_eq!(n.needs, "> 8w4d");
    assert!(!n.result);
    // Sixty days after the view the elapsed time reaches 60d (and passes it a second
    // later): the first moment the comparison is checked again.
    assert_eq!(
        next_at(n),
        Some(("2026-12-31T10:00:00.000Z".to_string(), "recency"))
    );

    let e = explain(&h, "c1", "new");
    consistent(&e);
    assert_eq!(e.condition.kind, Kind::SinceFirst);
    assert_eq!(e.condition.text, "since_first(any)<=1d");
    assert!(e.result);
    assert_eq!(
        next_at(&e.condition),
        Some(("2026-11-02T10:00:00.000Z".to_string(), "recency"))
    );

    let e = explain(&h, "c1", "pricing-lapsed");
    consistent(&e);
    assert_eq!(
        e.condition.text,
        r#"since(page_view(url prefix "/pricing"))>2h"#
    );
    assert_eq!(e.condition.value, json!("2h30m"));
    assert!(e.result);
}

#[test]
fn since_with_no_matching_event_is_missing() {
    let mut h = Harness::new(&one("lapsed", "since(purchase) > 1d"));
    h.send("c1", "click", "2026-11-01T10:00:00Z", json!({}));
    let e = explain(&h, "c1", "lapsed");
    consistent(&e);
    assert_eq!(e.condition.value, serde_json::Value::Null);
    assert!(!e.result);
    assert_eq!(e.condition.next_change, None);
}

#[test]
fn score_shows_the_decayed_score_and_when_it_falls_below_the_threshold() {
    let toml = format!(
        "[scoring]\nhalf_life = \"1d\"\n[[scoring.rules]]\nevent = \"page_view\"\npoints = 30\n{}",
        one("hot", "score >= 50")
    );
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    let e = explain(&h, "c1", "hot");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(n.kind, Kind::Score);
    assert_eq!(n.text, "score>=50");
    assert_eq!(n.value, json!(60));
    assert_eq!(n.needs, ">= 50");
    assert!(n.result);
    // 60 halves to 50 after log2(60/50) days = 0.263 d = 6h18m45.8s, then a second past
    // it in whole seconds.
    let (when, kind) = next_at(n).unwrap();
    assert_eq!(kind, "score");
    assert_eq!(when, "2026-11-01T06:18:47.000Z");
    // Explained a day later (no event: the caller's time), the score has decayed.
    let later = h
        .engine
        .explain("c1", "hot", at("2026-11-02T00:00:00Z"))
        .unwrap();
    assert_eq!(later.condition.value, json!(30));
    assert!(!later.result);
    assert!(
        later.member,
        "the recorded membership is the engine's, not the caller's"
    );
}

#[test]
fn trait_tests_of_every_form() {
    let toml = [
        one("big", "trait.company_size >= 500"),
        one("dach", r#"trait.country in ["DE", "AT", "CH"]"#),
        one("soft", r#"trait.industry contains "soft""#),
        one("sales", r#"trait.email prefix "sales@""#),
        one("has-role", "trait.role exists"),
        one("opt-in", "trait.email_opt_in"),
        one("same", "trait.a = trait.b"),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "identify",
        "2026-11-01T10:00:00Z",
        json!({"company_size": 120, "country": "FR", "industry": "software", "email": "sales@x.io", "email_opt_in": true, "a": 1, "b": 2}),
    );
    let cases: &[(&str, &str, serde_json::Value, &str, bool)] = &[
        (
            "big",
            "trait.company_size>=500",
            json!(120),
            ">= 500",
            false,
        ),
        (
            "dach",
            r#"trait.country in ["DE","AT","CH"]"#,
            json!("FR"),
            r#"in ["DE","AT","CH"]"#,
            false,
        ),
        (
            "soft",
            r#"trait.industry contains "soft""#,
            json!("software"),
            r#"contains "soft""#,
            true,
        ),
        (
            "sales",
            r#"trait.email prefix "sales@""#,
            json!("sales@x.io"),
            r#"prefix "sales@""#,
            true,
        ),
        (
            "has-role",
            "trait.role exists",
            serde_json::Value::Null,
            "exists",
            false,
        ),
        ("opt-in", "trait.email_opt_in", json!(true), "= true", true),
        ("same", "trait.a=trait.b", json!(1), "= trait.b", false),
    ];
    for (seg, text, value, needs, result) in cases {
        let e = explain(&h, "c1", seg);
        consistent(&e);
        let n = &e.condition;
        assert_eq!(n.kind, Kind::Trait, "{seg}");
        assert_eq!(&n.text, text, "{seg}");
        assert_eq!(&n.value, value, "{seg}");
        assert_eq!(&n.needs, needs, "{seg}");
        assert_eq!(n.result, *result, "{seg}");
        assert_eq!(
            n.next_change, None,
            "{seg}: a trait does not change with time"
        );
    }
    // Two operands: both values are shown.
    let e = explain(&h, "c1", "same");
    let operands: Vec<_> = e
        .condition
        .operands
        .iter()
        .map(|o| (o.text.as_str(), o.value.clone()))
        .collect();
    assert_eq!(operands, [("trait.a", json!(1)), ("trait.b", json!(2))]);
}

#[test]
fn attributes_and_literals() {
    let toml = [
        one("opted-out", "profile.opted_out"),
        one("buyer", "profile.revenue >= 100"),
        one("reversed", "2 <= profile.purchases"),
        one("always", "true"),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "purchase",
        "2026-11-01T10:00:00Z",
        json!({"amount": 120, "currency": "EUR"}),
    );
    h.send("c1", "unsubscribe", "2026-11-01T11:00:00Z", json!({}));
    let e = explain(&h, "c1", "opted-out");
    consistent(&e);
    assert_eq!(
        (e.condition.kind, e.condition.text.as_str()),
        (Kind::Attribute, "profile.opted_out")
    );
    assert_eq!(e.condition.value, json!(true));
    let e = explain(&h, "c1", "buyer");
    consistent(&e);
    assert_eq!(e.condition.value, json!(120));
    assert!(e.result);
    // A literal on the left is read the other way round.
    let e = explain(&h, "c1", "reversed");
    consistent(&e);
    assert_eq!(e.condition.text, "2<=profile.purchases");
    assert_eq!(e.condition.value, json!(1));
    assert_eq!(e.condition.needs, ">= 2");
    assert!(!e.result);
    let e = explain(&h, "c1", "always");
    consistent(&e);
    assert_eq!(e.condition.kind, Kind::Constant);
    assert_eq!(e.condition.value, json!(true));
}

#[test]
fn arithmetic_lists_its_operands() {
    let mut h = Harness::new(&one(
        "mixed",
        "count(page_view, 7d) + 5 * count(purchase, ever) >= 12.5",
    ));
    h.send(
        "c1",
        "page_view",
        "2026-11-01T10:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c1",
        "purchase",
        "2026-11-01T10:05:00Z",
        json!({"amount": 1, "currency": "EUR"}),
    );
    let e = explain(&h, "c1", "mixed");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(n.kind, Kind::Arithmetic);
    assert_eq!(
        n.text,
        "(count(page_view,1w)+(5*count(purchase,ever)))>=12.5"
    );
    assert_eq!(n.value, json!(6));
    assert_eq!(n.needs, ">= 12.5");
    let operands: Vec<_> = n
        .operands
        .iter()
        .map(|o| (o.text.as_str(), o.value.clone()))
        .collect();
    assert_eq!(
        operands,
        [
            ("count(page_view,1w)", json!(1)),
            ("count(purchase,ever)", json!(1))
        ]
    );
}

#[test]
fn and_or_not_and_segment_references() {
    let toml = [
        one("viewer", "count(page_view, 7d) >= 1"),
        one("vip", r#"trait.tier = "vip""#),
        one(
            "both",
            r#"in_segment("viewer") and (in_segment("vip") or not trait.role exists)"#,
        ),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T10:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c1",
        "identify",
        "2026-11-01T10:01:00Z",
        json!({"tier": "basic", "role": "cto"}),
    );
    let e = explain(&h, "c1", "both");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(
        n.text,
        r#"(in_segment("viewer") and (in_segment("vip") or not trait.role exists))"#
    );
    assert_eq!(n.kind, Kind::And);
    assert_eq!(n.needs, "all of 2");
    assert_eq!(n.value, json!(1));
    assert!(!n.result);
    let viewer = &n.children[0];
    assert_eq!(viewer.kind, Kind::Segment);
    assert_eq!(viewer.value, json!(true));
    assert_eq!(viewer.needs, "member");
    let or = &n.children[1];
    assert_eq!(or.kind, Kind::Or);
    assert_eq!(or.needs, "at least 1 of 2");
    assert_eq!(or.value, json!(0));
    let not = &or.children[1];
    assert_eq!(not.kind, Kind::Not);
    assert_eq!(not.text, "not trait.role exists");
    assert_eq!(not.value, json!(true));
    assert!(!not.result);
    assert_eq!(not.children[0].value, json!("cto"));
    // The reference to a time-dependent segment does not itself change with time; the
    // referenced segment's own explanation says when it does (the view's hour bucket
    // leaves the 7-day window).
    assert_eq!(viewer.next_change, None);
    let v = explain(&h, "c1", "viewer");
    assert_eq!(
        next_at(&v.condition),
        Some(("2026-11-08T11:00:00.000Z".to_string(), "window"))
    );
}

#[test]
fn absence_within_shows_the_pending_deadline_and_fires_after_it() {
    let mut h = Harness::new(&one(
        "clicked-not-registered",
        r#"ad_click(campaign = "q4") then no webinar_registered within 24h"#,
    ));
    h.send(
        "c1",
        "ad_click",
        "2026-11-01T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    let e = explain(&h, "c1", "clicked-not-registered");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(n.kind, Kind::Absence);
    assert_eq!(
        n.text,
        r#"ad_click(campaign="q4") then no webinar_registered within 1d"#
    );
    assert_eq!(
        n.value,
        json!({"pending": [{"triggered_at": "2026-11-01T10:00:00.000Z", "deadline": "2026-11-02T10:00:00.000Z", "passed": false}]})
    );
    assert_eq!(n.needs, "a trigger with no cancel within 1d after it");
    assert!(!n.result);
    assert_eq!(
        next_at(n),
        Some(("2026-11-02T10:00:00.000Z".to_string(), "absence"))
    );
    // The deadline passes: the customer enters, and the explanation agrees.
    h.advance("2026-11-02T10:00:01Z");
    let e = explain(&h, "c1", "clicked-not-registered");
    consistent(&e);
    assert!(e.result);
    assert_eq!(e.condition.value["pending"][0]["passed"], json!(true));
    assert_eq!(e.next_change, None);
}

#[test]
fn absence_until_a_property_of_the_trigger() {
    let mut h = Harness::new(&one(
        "registered-not-attended",
        "webinar_registered then no webinar_attended with same webinar_id until ends_at",
    ));
    h.send(
        "c1",
        "webinar_registered",
        "2026-11-01T10:00:00Z",
        json!({"webinar_id": "W1", "ends_at": "2026-11-03T18:00:00Z"}),
    );
    h.send(
        "c1",
        "webinar_registered",
        "2026-11-01T11:00:00Z",
        json!({"webinar_id": "W2", "ends_at": "2026-11-02T18:00:00Z"}),
    );
    h.send(
        "c1",
        "webinar_attended",
        "2026-11-01T12:00:00Z",
        json!({"webinar_id": "W2"}),
    );
    let e = explain(&h, "c1", "registered-not-attended");
    consistent(&e);
    let n = &e.condition;
    assert_eq!(
        n.text,
        "webinar_registered then no webinar_attended with same webinar_id until ends_at"
    );
    assert_eq!(n.needs, "a trigger with no cancel until its ends_at");
    // W2 was attended (no pending trigger); W1's deadline is pending.
    assert_eq!(n.value["pending"].as_array().unwrap().len(), 1);
    assert_eq!(
        n.value["pending"][0]["deadline"],
        json!("2026-11-03T18:00:00.000Z")
    );
    assert_eq!(
        next_at(n),
        Some(("2026-11-03T18:00:00.000Z".to_string(), "absence"))
    );
}

#[test]
fn canonical_text_matches_the_rule_version_text() {
    // The canonical texts of `segment/compile/canonical.rs`'s tests, written here from
    // the compiled form.
    let cases = [
        ("count(email_open, 30d) >= 3", "count(email_open,4w2d)>=3"),
        (
            r#"count(page_view(url prefix "/pricing" and not utm_source = "email"), 7d) >= 1"#,
            r#"count(page_view((url prefix "/pricing" and not utm_source="email")),1w)>=1"#,
        ),
        (
            "sum(purchase, amount, 365d) >= 10000",
            "sum(purchase,amount,52w1d)>=10000",
        ),
        (
            "since(page_view) > 60d or since_first(any) <= 90m",
            "(since(page_view)>8w4d or since_first(any)<=1h30m)",
        ),
        (
            "count(page_view, 90d) + 5 * count(click, ever) >= 12.5",
            "(count(page_view,12w6d)+(5*count(click,ever)))>=12.5",
        ),
        (
            r#"trait.country in ["DE", "AT"] and not trait.role exists"#,
            r#"(trait.country in ["DE","AT"] and not trait.role exists)"#,
        ),
        (
            r#"trait.industry contains "soft" or trait.email prefix "sales@""#,
            r#"(trait.industry contains "soft" or trait.email prefix "sales@")"#,
        ),
        (
            r#"ad_click(campaign = "q4") then no webinar_registered within 24h"#,
            r#"ad_click(campaign="q4") then no webinar_registered within 1d"#,
        ),
        (
            r#"count(purchase(category in ["a", "b"] or amount > 1.50), ever) >= 1"#,
            r#"count(purchase((category in ["a","b"] or amount>1.5)),ever)>=1"#,
        ),
        (
            r#"sum(purchase(category = "x"), amount, 7d) >= 1 and since_first(purchase(amount > 5)) > 1h"#,
            r#"(sum(purchase(category="x"),amount,1w)>=1 and since_first(purchase(amount>5))>1h)"#,
        ),
    ];
    for (condition, want) in cases {
        let mut h = Harness::new(&one("s", condition));
        h.send("c1", "click", "2026-11-01T10:00:00Z", json!({}));
        assert_eq!(explain(&h, "c1", "s").condition.text, want, "{condition}");
    }
}

/// The rule version hashes the canonical text the compiler writes from the syntax tree
/// (with the versions of the segments it uses and the scoring table if it reads the
/// score): the text explain writes from the compiled form hashes to the same version for
/// every segment of the shipped files.
#[test]
fn canonical_text_hashes_to_the_rule_version_for_every_shipped_segment() {
    fn walk<'n>(n: &'n Node, refs: &mut Vec<&'n str>, score: &mut bool) {
        match n.kind {
            Kind::Segment => refs.push(
                n.text
                    .strip_prefix("in_segment(\"")
                    .and_then(|t| t.strip_suffix("\")"))
                    .unwrap(),
            ),
            Kind::Score => *score = true,
            _ => {}
        }
        for c in &n.children {
            walk(c, refs, score);
        }
    }
    let files = [
        "segments/library.toml",
        "segments/demo.toml",
        "crates/segstream-core/tests/fixtures/segments/properties.toml",
    ];
    let mut checked = 0;
    for file in files {
        let mut h = Harness::new(&common::repo_file(file));
        h.send("c1", "click", "2026-11-01T10:00:00Z", json!({}));
        let defs = h.engine.definitions().clone();
        let version = |name: &str| {
            defs.segments[defs.segment_index(name).unwrap()]
                .version
                .to_string()
        };
        for seg in &defs.segments {
            let e = explain(&h, "c1", &seg.name);
            let (mut refs, mut score) = (Vec::new(), false);
            walk(&e.condition, &mut refs, &mut score);
            let mut data = e.condition.text.clone();
            for r in refs {
                data.push('|');
                data.push_str(&version(r));
            }
            if score {
                data.push('|');
                data.push_str(&format!("{:?}", defs.scoring));
            }
            let hash = format!("{:012x}", xxhash_rust::xxh3::xxh3_64(data.as_bytes()) >> 16);
            assert_eq!(
                hash, e.rule_version,
                "{file}: {}: {}",
                seg.name, e.condition.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked}");
}

#[test]
fn unknown_segments_suggest_a_name_and_unknown_profiles_are_errors() {
    let mut h = Harness::new(&one("engaged-reader", "count(email_open, 7d) >= 1"));
    h.send("c1", "email_open", "2026-11-01T10:00:00Z", json!({}));
    let err = h.engine.explain_now("c1", "engaged-raeder").unwrap_err();
    assert_eq!(
        err,
        ExplainError::UnknownSegment {
            name: "engaged-raeder".into(),
            suggestion: Some("engaged-reader".into())
        }
    );
    assert_eq!(
        err.to_string(),
        r#"unknown segment "engaged-raeder"; did you mean "engaged-reader"?"#
    );
    let err = h.engine.explain_now("c1", "whatever").unwrap_err();
    assert_eq!(err.to_string(), r#"unknown segment "whatever""#);
    assert_eq!(
        h.engine
            .explain_now("nobody", "engaged-reader")
            .unwrap_err(),
        ExplainError::UnknownProfile("nobody".into())
    );
}

#[test]
fn any_id_of_a_person_explains_its_profile() {
    let mut h = Harness::new(&one("viewer", "count(page_view, 7d) >= 2"));
    let anon = json!({"event_id": "a1", "anonymous_id": "cookie-1", "type": "page_view",
        "timestamp": "2026-11-01T10:00:00Z", "properties": {"url": "/"}});
    let mut out = Vec::new();
    h.engine
        .process(anon.to_string().as_bytes(), &mut out)
        .unwrap();
    let link = json!({"event_id": "a2", "anonymous_id": "cookie-1", "customer_id": "c1",
        "type": "page_view", "timestamp": "2026-11-01T10:01:00Z", "properties": {"url": "/"}});
    h.engine
        .process(link.to_string().as_bytes(), &mut out)
        .unwrap();
    let e = explain(&h, "cookie-1", "viewer");
    consistent(&e);
    assert_eq!(e.customer_id, "c1");
    assert_eq!(e.condition.value, json!(2));
    assert!(e.member);
    // Causes are the caller's to add: the person's transitions of this segment.
    let mut e = e;
    e.add_causes(out.iter().filter(|t| &*t.customer_id == "c1"));
    assert_eq!(e.causes.len(), 1);
    assert_eq!(e.causes[0].direction, "entered");
    assert_eq!(e.causes[0].cause, "event:a2");
    assert_eq!(e.causes[0].at, "2026-11-01T10:01:00.000Z");
}

#[test]
fn explanations_serialise_as_json() {
    let mut h = Harness::new(&one("engaged", "count(email_open, 30d) >= 3"));
    h.send("c1", "email_open", "2026-11-01T10:00:00Z", json!({}));
    let v = serde_json::to_value(explain(&h, "c1", "engaged")).unwrap();
    assert_eq!(v["segment"], "engaged");
    assert_eq!(v["customer_id"], "c1");
    assert_eq!(v["condition"]["kind"], "count");
    assert_eq!(v["condition"]["value"], 1.0);
    assert_eq!(v["condition"]["needs"], ">= 3");
    assert_eq!(v["next_change"]["kind"], "window");
    assert_eq!(v["causes"], json!([]));
    assert!(v["condition"].get("children").is_none());
}

// ---- property: explained result == recorded membership ------------------------------------

const DEFS: &str = include_str!("fixtures/segments/properties.toml");
const START: Millis = 1_795_000_000_000;

fn generated_events(steps: &[(u8, u8, u16, u16, u8)]) -> Vec<String> {
    let mut t = START;
    steps
        .iter()
        .enumerate()
        .map(|(i, &(customer, kind, gap_min, back_min, value))| {
            t += Millis::from(gap_min) * MINUTE;
            let ts = t - Millis::from(back_min) * MINUTE;
            let w = if value % 2 == 0 { "W1" } else { "W2" };
            let (ty, props) = match kind {
                0 | 1 => ("page_view", json!({"url": "/"})),
                2 => ("page_view", json!({"url": "/pricing"})),
                3 => (
                    "ad_click",
                    json!({"campaign": if value % 3 == 0 { "other" } else { "q4" }}),
                ),
                4 => (
                    "webinar_registered",
                    json!({"webinar_id": w, "ends_at": format_rfc3339(ts + Millis::from(value % 90) * MINUTE)}),
                ),
                5 => ("webinar_attended", json!({"webinar_id": w})),
                6 => ("purchase", json!({"amount": value, "currency": "EUR"})),
                7 => {
                    let country = ["DE", "FR", "AT"][usize::from(value % 3)];
                    ("identify", json!({ "country": country }))
                }
                8 => ("unsubscribe", json!({})),
                9 => ("subscribe", json!({})),
                10 => ("email_open", json!({})),
                _ if value % 4 == 0 => ("forget", serde_json::Value::Null),
                _ => ("click", json!({})),
            };
            let mut e = json!({
                "event_id": format!("e{i}"),
                "customer_id": format!("c{customer}"),
                "type": ty,
                "timestamp": format_rfc3339(ts),
            });
            if ty == "identify" {
                e["traits"] = props;
            } else if !props.is_null() {
                e["properties"] = props;
            }
            e.to_string()
        })
        .collect()
}

fn check_all(engine: &Engine) -> Result<(), TestCaseError> {
    let ids: Vec<String> = engine.profiles().map(|(k, _)| k.to_string()).collect();
    for id in ids {
        let now = engine.evaluation_time(&id).expect("a profile");
        for e in engine.explain_all(&id, now).expect("known id") {
            prop_assert_eq!(
                e.result,
                e.member,
                "{} {} at {}: {:#?}",
                id,
                e.segment,
                e.at,
                e.condition
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// For every profile and segment, after every event and after time passes without
    /// events, the explanation's result is the membership the engine recorded.
    #[test]
    fn the_explained_result_is_the_recorded_membership(
        steps in prop::collection::vec(
            (0u8..4, 0u8..12, 0u16..45, prop_oneof![8 => Just(0u16), 2 => 1u16..12], any::<u8>()),
            1..150,
        ),
        idle_steps in prop::collection::vec(1u16..120, 0..6),
    ) {
        let config = EngineConfig {
            allowed_lateness: 5 * MINUTE,
            profile_ttl: Some(6 * HOUR),
            ..EngineConfig::default()
        };
        let mut engine = Engine::from_source("properties.toml", DEFS, config).unwrap();
        let mut out = Vec::new();
        for e in generated_events(&steps) {
            let _ = engine.process(e.as_bytes(), &mut out);
            check_all(&engine)?;
        }
        // Time passes without events: timers fire as the watermark passes them, or, as
        // in the live service with idle input, by the shard's time beyond the watermark.
        let mut wm = engine.watermark();
        for (i, gap) in idle_steps.into_iter().enumerate() {
            wm += Millis::from(gap) * MINUTE;
            if i % 2 == 0 {
                engine.on_idle(0, wm, &mut out);
            } else {
                engine.advance_watermark(wm, &mut out);
            }
            check_all(&engine)?;
        }
    }
}
