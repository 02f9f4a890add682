//! One test (at least) per condition kind of the segment language, driven through the
//! public engine API exactly as the service and the replay drive it.

mod common;

use common::{at, brief, entered, exited, Harness};
use segstream_core::engine::EngineConfig;
use segstream_core::event::RejectReason;
use segstream_core::time::{HOUR, MINUTE, SECOND};
use segstream_core::transition::{Cause, Direction, TimerKind};
use serde_json::json;

fn one(name: &str, condition: &str) -> String {
    format!("[segments.{name}]\ncondition = '''{condition}'''\n")
}

#[test]
fn trait_comparisons_all_operators() {
    let toml = [
        one("eq", r#"trait.role = "cmo""#),
        one("ne", r#"trait.role != "cmo""#),
        one("lt", "trait.company_size < 50"),
        one("le", "trait.company_size <= 50"),
        one("gt", "trait.company_size > 50"),
        one("ge", "trait.company_size >= 50"),
        one("in-list", r#"trait.country in ["DE", "AT", "CH"]"#),
        one("has-role", "trait.role exists"),
        one("contains", r#"trait.industry contains "soft""#),
        one("prefix", r#"trait.email prefix "sales@""#),
        one("truthy", "trait.email_opt_in"),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    let t = h.send(
        "c1",
        "identify",
        "2026-11-22T10:00:00Z",
        json!({"role": "cmo", "company_size": 50, "country": "AT", "industry": "software", "email": "sales@example.com", "email_opt_in": true}),
    );
    let mut got: Vec<String> = t.iter().map(|t| t.segment.to_string()).collect();
    got.sort();
    assert_eq!(
        got,
        ["contains", "eq", "ge", "has-role", "in-list", "le", "prefix", "truthy"]
    );
    // Changing traits moves the customer; null removes a trait.
    let t = h.send(
        "c1",
        "identify",
        "2026-11-22T10:01:00Z",
        json!({"role": null, "company_size": 51, "country": "FR"}),
    );
    let mut moves: Vec<(String, &str)> = t
        .iter()
        .map(|t| (t.segment.to_string(), t.direction.as_str()))
        .collect();
    moves.sort();
    assert_eq!(
        moves,
        [
            ("eq".to_string(), "exited"),
            ("gt".to_string(), "entered"),
            ("has-role".to_string(), "exited"),
            ("in-list".to_string(), "exited"),
            ("le".to_string(), "exited"),
        ]
    );
    // `!=` on a missing trait is false (missing values never compare).
    assert!(!h.members("c1").contains(&"ne".to_string()));
}

#[test]
fn count_in_sliding_window_with_filter_enters_and_exits_by_time_alone() {
    let mut h = Harness::new(&one(
        "engaged",
        r#"count(email_open(campaign = "nl"), 30d) >= 3"#,
    ));
    h.send(
        "c1",
        "email_open",
        "2026-10-01T10:00:00Z",
        json!({"campaign": "nl"}),
    );
    h.send(
        "c1",
        "email_open",
        "2026-10-02T10:00:00Z",
        json!({"campaign": "other"}),
    );
    h.send(
        "c1",
        "email_open",
        "2026-10-05T10:00:00Z",
        json!({"campaign": "nl"}),
    );
    let t = h.send(
        "c1",
        "email_open",
        "2026-10-10T10:00:00Z",
        json!({"campaign": "nl"}),
    );
    assert_eq!(
        brief(&t),
        [("c1".into(), "engaged".into(), "entered", "event:e4".into())]
    );
    // No more events: the first open leaves the 30-day window (day resolution) and the
    // customer exits on a timer.
    assert!(h.advance("2026-10-31T00:00:00Z").is_empty());
    let t = h.advance("2026-11-02T00:00:00Z");
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].direction, Direction::Exited);
    assert!(
        matches!(t[0].cause, Cause::Timer { kind: TimerKind::Window, deadline } if deadline == at("2026-11-01T00:00:00Z"))
    );
    assert_eq!(t[0].timestamp, at("2026-11-01T00:00:00Z"));
}

#[test]
fn sum_over_window() {
    let mut h = Harness::new(&one("key-account", "sum(purchase, amount, 365d) >= 10000"));
    let buy = |h: &mut Harness, time: &str, amount: f64| {
        h.send(
            "c1",
            "purchase",
            time,
            json!({"amount": amount, "currency": "EUR"}),
        )
    };
    assert!(buy(&mut h, "2025-12-01T00:00:00Z", 6000.0).is_empty());
    let t = buy(&mut h, "2026-06-01T00:00:00Z", 4000.0);
    assert!(entered(&t, "key-account"));
    // A refund-like negative amount counts too.
    let t = buy(&mut h, "2026-06-02T00:00:00Z", -1.0);
    assert!(exited(&t, "key-account"));
}

#[test]
fn recency_fires_without_further_events() {
    let mut h = Harness::new(&one("inactive", "since(page_view) > 60d"));
    assert!(h
        .send(
            "c1",
            "page_view",
            "2026-01-01T00:00:00Z",
            json!({"url": "/"})
        )
        .is_empty());
    assert!(h.advance("2026-03-02T00:00:00Z").is_empty());
    let t = h.advance("2026-03-03T00:00:00Z");
    assert_eq!(t.len(), 1);
    assert!(matches!(
        t[0].cause,
        Cause::Timer {
            kind: TimerKind::Recency,
            ..
        }
    ));
    assert_eq!(t[0].timestamp, at("2026-03-02T00:00:01Z"));
    let t = h.send(
        "c1",
        "page_view",
        "2026-03-05T00:00:00Z",
        json!({"url": "/"}),
    );
    assert!(exited(&t, "inactive"));
}

#[test]
fn recency_first_and_filtered() {
    let toml = [
        one("new-customer", "since_first(purchase) <= 30d"),
        one(
            "pricing-recent",
            r#"since(page_view(url prefix "/pricing")) < 1h"#,
        ),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    let t = h.send(
        "c1",
        "purchase",
        "2026-01-01T00:00:00Z",
        json!({"amount": 1, "currency": "EUR"}),
    );
    assert!(entered(&t, "new-customer"));
    h.send(
        "c1",
        "purchase",
        "2026-01-20T00:00:00Z",
        json!({"amount": 1, "currency": "EUR"}),
    );
    let t = h.advance("2026-02-01T00:00:00Z");
    assert!(exited(&t, "new-customer"), "{t:?}");
    let t = h.send(
        "c1",
        "page_view",
        "2026-02-01T10:00:00Z",
        json!({"url": "/blog"}),
    );
    assert!(t.is_empty());
    let t = h.send(
        "c1",
        "page_view",
        "2026-02-01T10:05:00Z",
        json!({"url": "/pricing/team"}),
    );
    assert!(entered(&t, "pricing-recent"));
    let t = h.advance("2026-02-01T11:10:00Z");
    assert!(exited(&t, "pricing-recent"));
}

const FUNNEL: &str = r#"
[segments.clicked-but-not-registered]
condition = '''
ad_click(campaign = "q4") then no webinar_registered(webinar_id = "W1") within 24h
'''
"#;

#[test]
fn absence_deadline_fires_with_no_further_events() {
    let mut h = Harness::new(FUNNEL);
    assert!(h
        .send(
            "c1",
            "ad_click",
            "2026-11-22T10:00:00Z",
            json!({"campaign": "q4"})
        )
        .is_empty());
    assert!(h.advance("2026-11-23T09:59:59Z").is_empty());
    let t = h.advance("2026-11-23T10:00:00Z");
    assert_eq!(
        brief(&t),
        [(
            "c1".into(),
            "clicked-but-not-registered".into(),
            "entered",
            "timer:absence@2026-11-23T10:00:00.000Z".into()
        )]
    );
    assert_eq!(t[0].timestamp, at("2026-11-23T10:00:00Z"));
    // Registering later ends the membership.
    let t = h.send(
        "c1",
        "webinar_registered",
        "2026-11-24T08:00:00Z",
        json!({"webinar_id": "W1"}),
    );
    assert!(exited(&t, "clicked-but-not-registered"));
}

#[test]
fn absence_is_cancelled_only_by_the_matching_event_within_the_deadline() {
    let mut h = Harness::new(FUNNEL);
    h.send(
        "c1",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    h.send(
        "c2",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    h.send(
        "c3",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "other"}),
    );
    h.send(
        "c1",
        "webinar_registered",
        "2026-11-22T12:00:00Z",
        json!({"webinar_id": "W1"}),
    );
    h.send(
        "c2",
        "webinar_registered",
        "2026-11-22T12:00:00Z",
        json!({"webinar_id": "W2"}),
    );
    let t = h.advance("2026-11-24T00:00:00Z");
    assert_eq!(
        brief(&t),
        [(
            "c2".into(),
            "clicked-but-not-registered".into(),
            "entered",
            "timer:absence@2026-11-23T10:00:00.000Z".into()
        )]
    );
}

#[test]
fn absence_deadline_fires_from_the_customers_next_event_the_same_way() {
    // Whether the watermark or the customer's own later event passes the deadline first,
    // the transition is the same: same cause, same time.
    let mut a = Harness::new(FUNNEL);
    a.send(
        "c1",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    let ta = a.advance("2026-11-23T11:00:00Z");
    let mut b = Harness::new(FUNNEL);
    b.send(
        "c1",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    let tb = b.send(
        "c1",
        "page_view",
        "2026-11-23T10:30:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(ta, tb);
}

#[test]
fn registered_not_attended_until_the_webinar_ends_per_webinar() {
    let mut h = Harness::new(&one(
        "registered-not-attended",
        "webinar_registered then no webinar_attended with same webinar_id until ends_at",
    ));
    h.send(
        "c1",
        "webinar_registered",
        "2026-11-20T10:00:00Z",
        json!({"webinar_id": "W1", "ends_at": "2026-11-25T16:00:00Z"}),
    );
    h.send(
        "c1",
        "webinar_registered",
        "2026-11-20T10:05:00Z",
        json!({"webinar_id": "W2", "ends_at": "2026-11-26T16:00:00Z"}),
    );
    // Attending W2 does not count for W1.
    h.send(
        "c1",
        "webinar_attended",
        "2026-11-26T15:00:00Z",
        json!({"webinar_id": "W2"}),
    );
    let t = h.advance("2026-11-27T00:00:00Z");
    assert!(
        t.is_empty(),
        "the W1 deadline fired at the customer's event: {t:?}"
    );
    assert_eq!(h.members("c1"), ["registered-not-attended"]);
    let mut h = Harness::new(&one(
        "registered-not-attended",
        "webinar_registered then no webinar_attended with same webinar_id until ends_at",
    ));
    h.send(
        "c2",
        "webinar_registered",
        "2026-11-20T10:00:00Z",
        json!({"webinar_id": "W1", "ends_at": "2026-11-25T16:00:00Z"}),
    );
    h.send(
        "c2",
        "webinar_attended",
        "2026-11-25T15:00:00Z",
        json!({"webinar_id": "W1"}),
    );
    assert!(h.advance("2026-11-27T00:00:00Z").is_empty());
    let mut h = Harness::new(&one(
        "registered-not-attended",
        "webinar_registered then no webinar_attended with same webinar_id until ends_at",
    ));
    h.send(
        "c3",
        "webinar_registered",
        "2026-11-20T10:00:00Z",
        json!({"webinar_id": "W1", "ends_at": "2026-11-25T16:00:00Z"}),
    );
    let t = h.advance("2026-11-27T00:00:00Z");
    assert!(
        matches!(t[..], [ref x] if x.cause == Cause::Timer { kind: TimerKind::Absence, deadline: at("2026-11-25T16:00:00Z") })
    );
}

#[test]
fn lead_score_threshold_with_decay() {
    let toml = r#"
[scoring]
half_life = "1d"
[[scoring.rules]]
event = "webinar_attended"
points = 40
[[scoring.rules]]
event = "page_view"
where = 'url prefix "/pricing"'
points = 20

[segments.sales-ready]
condition = 'score >= 50'
"#;
    let mut h = Harness::new(toml);
    assert!(h
        .send(
            "c1",
            "webinar_attended",
            "2026-11-01T00:00:00Z",
            json!({"webinar_id": "W"})
        )
        .is_empty());
    assert!(h
        .send(
            "c1",
            "page_view",
            "2026-11-01T00:00:00Z",
            json!({"url": "/blog"})
        )
        .is_empty());
    let t = h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/pricing"}),
    );
    assert!(entered(&t, "sales-ready"));
    // 60 points halve to 30 after a day: the score falls below 50 at log2(60/50) days.
    let t = h.advance("2026-11-02T00:00:00Z");
    assert_eq!(t.len(), 1);
    assert!(matches!(
        t[0].cause,
        Cause::Timer {
            kind: TimerKind::Score,
            ..
        }
    ));
    let expected = at("2026-11-01T00:00:00Z") + ((60f64 / 50.0).log2() * 86_400_000.0) as i64;
    assert!(
        (t[0].timestamp - expected).abs() <= 2 * SECOND,
        "{} vs {expected}",
        t[0].timestamp
    );
}

#[test]
fn segment_membership_of_another_segment_cascades() {
    let toml = [
        one("dach", r#"trait.country in ["DE", "AT", "CH"]"#),
        one("buyer", "count(purchase, 365d) >= 1"),
        one(
            "dach-buyer",
            r#"in_segment("dach") and in_segment("buyer")"#,
        ),
        one("not-dach-buyer", r#"not in_segment("dach-buyer")"#),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    let t = h.send(
        "c1",
        "identify",
        "2026-11-01T00:00:00Z",
        json!({"country": "DE"}),
    );
    assert_eq!(
        t.iter().map(|t| &*t.segment).collect::<Vec<_>>(),
        ["dach", "not-dach-buyer"]
    );
    let t = h.send(
        "c1",
        "purchase",
        "2026-11-01T01:00:00Z",
        json!({"amount": 5, "currency": "EUR"}),
    );
    assert_eq!(
        brief(&t)
            .iter()
            .map(|b| (b.1.as_str(), b.2))
            .collect::<Vec<_>>(),
        [
            ("buyer", "entered"),
            ("dach-buyer", "entered"),
            ("not-dach-buyer", "exited")
        ]
    );
    // The window expires: buyer exits on a timer and the dependents follow in order.
    let t = h.advance("2027-11-10T00:00:00Z");
    assert_eq!(
        brief(&t)
            .iter()
            .map(|b| (b.1.as_str(), b.2))
            .collect::<Vec<_>>(),
        [
            ("buyer", "exited"),
            ("dach-buyer", "exited"),
            ("not-dach-buyer", "entered")
        ]
    );
}

#[test]
fn arithmetic_attributes_and_ratios() {
    let toml = [
        one(
            "discount-buyer",
            "count(purchase(discount_code exists), 365d) / count(purchase, 365d) >= 0.5",
        ),
        one("opted-out", "profile.opted_out"),
        one("likes-shoes", r#"profile.favourite_category = "shoes""#),
        one(
            "effort",
            "count(email_sent, 90d) + 5 * count(webinar_attended, 90d) >= 6",
        ),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    let p = |cat: &str, code: Option<&str>| {
        let mut v = json!({"amount": 10, "currency": "EUR", "category": cat});
        if let Some(c) = code {
            v["discount_code"] = json!(c);
        }
        v
    };
    let t = h.send(
        "c1",
        "purchase",
        "2026-11-01T00:00:00Z",
        p("shoes", Some("X")),
    );
    assert!(entered(&t, "discount-buyer") && entered(&t, "likes-shoes"));
    h.send("c1", "purchase", "2026-11-02T00:00:00Z", p("hats", None));
    let t = h.send("c1", "purchase", "2026-11-03T00:00:00Z", p("hats", None));
    assert!(exited(&t, "discount-buyer") && exited(&t, "likes-shoes"));
    assert_eq!(h.members("c1"), Vec::<String>::new());
    let t = h.send("c1", "unsubscribe", "2026-11-04T00:00:00Z", json!({}));
    assert!(entered(&t, "opted-out"));
    let t = h.send("c1", "subscribe", "2026-11-05T00:00:00Z", json!({}));
    assert!(exited(&t, "opted-out"));
    h.send("c1", "email_sent", "2026-11-05T00:00:00Z", json!({}));
    let t = h.send(
        "c1",
        "webinar_attended",
        "2026-11-06T00:00:00Z",
        json!({"webinar_id": "W"}),
    );
    assert!(entered(&t, "effort"));
}

#[test]
fn no_transition_when_membership_does_not_change() {
    let mut h = Harness::new(&one("viewer", "count(page_view, 7d) >= 1"));
    let t = h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(t.len(), 1);
    for i in 1..10 {
        let t = h.send(
            "c1",
            "page_view",
            &format!("2026-11-01T0{i}:00:00Z"),
            json!({"url": "/"}),
        );
        assert!(t.is_empty());
    }
}

#[test]
fn only_segments_an_event_can_affect_are_evaluated() {
    let toml = [
        one("a", "count(page_view, 7d) >= 1"),
        one("b", "count(email_open, 7d) >= 1"),
        one("c", r#"trait.role = "cmo""#),
        one("d", "count(purchase, 7d) >= 1"),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    // A new customer is evaluated against every segment once.
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(h.engine.stats().evaluations, 4);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    assert_eq!(h.engine.stats().evaluations, 5);
    h.send(
        "c1",
        "identify",
        "2026-11-01T00:00:01Z",
        json!({"role": "cmo"}),
    );
    assert_eq!(h.engine.stats().evaluations, 6);
    h.send(
        "c1",
        "identify",
        "2026-11-01T00:00:02Z",
        json!({"industry": "x"}),
    );
    assert_eq!(
        h.engine.stats().evaluations,
        6,
        "an unrelated trait evaluates nothing"
    );
    h.send("c1", "click", "2026-11-01T00:00:03Z", json!({}));
    assert_eq!(h.engine.stats().evaluations, 6);
}

#[test]
fn late_events_are_rejected_and_counted_never_merged() {
    let mut h = Harness::with_config(
        &one("viewer", "count(page_view, 7d) >= 2"),
        EngineConfig {
            allowed_lateness: 5 * MINUTE,
            ..EngineConfig::default()
        },
    );
    h.send(
        "c1",
        "page_view",
        "2026-11-01T10:00:00Z",
        json!({"url": "/"}),
    );
    // 4 minutes out of order: within the allowed lateness, applied.
    let t = h.send(
        "c1",
        "page_view",
        "2026-11-01T09:56:00Z",
        json!({"url": "/"}),
    );
    assert!(entered(&t, "viewer"));
    let err = h
        .try_send(
            "c2",
            "page_view",
            "2026-11-01T09:54:00Z",
            json!({"url": "/"}),
        )
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::Late);
    assert!(err.detail.contains("watermark"), "{}", err.detail);
    assert_eq!(h.engine.stats().events_late, 1);
    assert!(h.engine.profile("c2").is_none());
}

#[test]
fn forget_exits_every_segment_and_erases_the_profile() {
    let toml = [
        one("viewer", "count(page_view, 7d) >= 1"),
        one("dach", r#"trait.country = "DE""#),
    ]
    .concat();
    let mut h = Harness::new(&toml);
    h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:00Z",
        json!({"url": "/"}),
    );
    h.send(
        "c1",
        "identify",
        "2026-11-01T00:00:01Z",
        json!({"country": "DE"}),
    );
    let t = h.send("c1", "forget", "2026-11-01T00:00:02Z", json!(null));
    assert_eq!(t.len(), 2);
    assert!(t
        .iter()
        .all(|t| t.direction == Direction::Exited && t.cause == Cause::Event("e3".into())));
    assert!(h.engine.profile("c1").is_none());
    // Forgetting an unknown customer is accepted and does nothing.
    assert!(h
        .send("nobody", "forget", "2026-11-01T00:00:03Z", json!(null))
        .is_empty());
    // A returning customer starts from scratch.
    let t = h.send(
        "c1",
        "page_view",
        "2026-11-01T00:00:04Z",
        json!({"url": "/"}),
    );
    assert_eq!(t[0].sequence, 1);
    assert_eq!(h.engine.profile("c1").unwrap().trait_count(), 0);
}

#[test]
fn profiles_expire_after_the_ttl_and_exit_their_segments() {
    let mut h = Harness::with_config(
        &one("dach", r#"trait.country = "DE""#),
        EngineConfig {
            profile_ttl: Some(30 * 24 * HOUR),
            ..EngineConfig::default()
        },
    );
    h.send(
        "c1",
        "identify",
        "2026-11-01T00:00:00Z",
        json!({"country": "DE"}),
    );
    assert!(h.advance("2026-11-30T00:00:00Z").is_empty());
    let t = h.advance("2026-12-02T00:00:00Z");
    assert_eq!(
        brief(&t),
        [(
            "c1".into(),
            "dach".into(),
            "exited",
            "timer:ttl@2026-12-01T00:00:00.000Z".into()
        )]
    );
    assert_eq!(h.engine.profile_count(), 0);
    assert_eq!(h.engine.stats().profiles_expired, 1);
}

#[test]
fn idle_input_lets_the_clock_fire_deadlines_within_a_second() {
    let mut h = Harness::new(FUNNEL);
    h.send(
        "c1",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    let mut out = Vec::new();
    h.engine
        .on_idle(0, at("2026-11-23T10:00:00.500Z"), &mut out);
    assert!(out.is_empty(), "idle lag of 1s not yet passed");
    h.engine.on_idle(0, at("2026-11-23T10:00:01Z"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].timestamp, at("2026-11-23T10:00:00Z"));
}

#[test]
fn sequence_numbers_and_versions_are_in_every_transition() {
    let mut h = Harness::new(FUNNEL);
    h.send(
        "c1",
        "ad_click",
        "2026-11-22T10:00:00Z",
        json!({"campaign": "q4"}),
    );
    let mut t = h.advance("2026-11-24T00:00:00Z");
    t.extend(h.send(
        "c1",
        "webinar_registered",
        "2026-11-24T01:00:00Z",
        json!({"webinar_id": "W1"}),
    ));
    assert_eq!(t.iter().map(|t| t.sequence).collect::<Vec<_>>(), [1, 2]);
    let version = &h.engine.definitions().segments[0].version;
    assert!(t.iter().all(|x| &x.rule_version == version));
    assert_ne!(t[0].transition_id, t[1].transition_id);
}
