//! The identity scenario shared by `tests/identity.rs` (MockCluster) and
//! `tests/end_to_end.rs` (tansu): anonymous visitors who click a webinar ad, some of whom
//! register and link within 24 h, some after the deadline, some with a second device; in
//! phases, so that the order of events relative to links is the same live and in replay.

use segstream_core::time::format_rfc3339;

use super::Keyed;

/// 2026-11-02T08:00:00Z.
pub const T0: i64 = 1_793_606_400_000;
pub const HOUR: i64 = 3_600_000;
pub const PERSONS: usize = 160;

pub fn event(
    id: &str,
    customer: Option<&str>,
    anonymous: Option<&str>,
    ty: &str,
    at: i64,
    extra: &str,
) -> Keyed {
    let mut v = serde_json::json!({
        "event_id": id,
        "type": ty,
        "timestamp": format_rfc3339(at),
    });
    if let Some(c) = customer {
        v["customer_id"] = c.into();
    }
    if let Some(a) = anonymous {
        v["anonymous_id"] = a.into();
    }
    if !extra.is_empty() {
        let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
    }
    // Keyed as producers key events: by the customer id, else the anonymous id.
    let key = customer.or(anonymous).map(String::from);
    (key, serde_json::to_vec(&v).unwrap())
}

/// A cookie-like anonymous id.
pub fn cookie(i: usize) -> String {
    format!(
        "{:016x}",
        (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

pub fn customer(i: usize) -> String {
    format!("c-{i:05}")
}

/// Events that move every partition's time to `at` (one per tick customer).
pub fn ticks(phase: &str, at: i64) -> Vec<Keyed> {
    (0..24)
        .map(|t| {
            event(
                &format!("{phase}-tick-{t}"),
                Some(&format!("tick-{t}")),
                None,
                "page_view",
                at,
                r#"{"properties":{"url":"https://segstream.dev/"}}"#,
            )
        })
        .collect()
}

/// The phases: anonymous ad clicks; registrations that link within 24 h (a business event
/// with both ids, or an `alias` and then the registration), registrations without a link;
/// time passing the deadlines; late links (after the deadline) and a chain (a second
/// device joining a known person); time passing again.
pub fn phases() -> Vec<Vec<Keyed>> {
    let webinar_ad =
        r#"{"properties":{"campaign":"webinar-q4-ads","url":"https://segstream.dev/webinar"}}"#;
    let pricing = r#"{"properties":{"url":"https://segstream.dev/pricing"}}"#;
    let registered = r#"{"properties":{"webinar_id":"W-2026-12"}}"#;
    let mut clicks = Vec::new();
    let mut links = Vec::new();
    let mut late = Vec::new();
    for i in 0..PERSONS {
        let (a, c) = (cookie(i), customer(i));
        let t = T0 + i as i64 * 7_000;
        clicks.push(event(
            &format!("click-{i}"),
            None,
            Some(&a),
            "ad_click",
            t,
            webinar_ad,
        ));
        clicks.push(event(
            &format!("view-{i}"),
            None,
            Some(&a),
            "page_view",
            t + 5_000,
            pricing,
        ));
        let t2 = t + 2 * HOUR;
        match i % 4 {
            0 => links.push(event(
                &format!("reg-{i}"),
                Some(&c),
                Some(&a),
                "webinar_registered",
                t2,
                registered,
            )),
            1 => {
                let alias = format!(r#"{{"previous_id":"{a}"}}"#);
                links.push(event(
                    &format!("alias-{i}"),
                    Some(&c),
                    None,
                    "alias",
                    t2,
                    &alias,
                ));
                links.push(event(
                    &format!("reg-{i}"),
                    Some(&c),
                    None,
                    "webinar_registered",
                    t2 + 3_000,
                    registered,
                ));
            }
            2 => {
                links.push(event(
                    &format!("reg-{i}"),
                    Some(&c),
                    None,
                    "webinar_registered",
                    t2,
                    registered,
                ));
                // The late link, and a second device of the same person.
                let t4 = t + 31 * HOUR;
                late.push(event(
                    &format!("login-{i}"),
                    Some(&c),
                    Some(&a),
                    "page_view",
                    t4,
                    pricing,
                ));
                let device = format!("dev-{}", cookie(i + 10_000));
                late.push(event(
                    &format!("app-{i}"),
                    None,
                    Some(&device),
                    "page_view",
                    t4 + 60_000,
                    pricing,
                ));
                let alias = format!(r#"{{"previous_id":"{device}"}}"#);
                late.push(event(
                    &format!("alias2-{i}"),
                    Some(&c),
                    None,
                    "alias",
                    t4 + 120_000,
                    &alias,
                ));
            }
            _ => {
                late.push(event(
                    &format!("login-{i}"),
                    Some(&c),
                    Some(&a),
                    "page_view",
                    t + 31 * HOUR,
                    pricing,
                ));
            }
        }
    }
    vec![
        clicks,
        links,
        ticks("deadlines", T0 + 30 * HOUR),
        late,
        ticks("end", T0 + 60 * HOUR),
    ]
}

/// Checks that the replay's transitions show the reference case: nobody who registered
/// within 24 h enters clicked-but-not-registered; each unlinked clicker enters by the
/// deadline (as the anonymous visitor); each late link makes the cookie's profile exit with
/// cause `merge:<customer id>`, and the person who never registered enters again as known.
pub fn check_reference(expected: &std::collections::BTreeSet<String>) {
    let values: Vec<serde_json::Value> = expected
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let of = |segment: &str, direction: &str| {
        values
            .iter()
            .filter(|t| t["segment"] == segment && t["direction"] == direction)
            .collect::<Vec<_>>()
    };
    // The replay itself shows the reference case.
    let person = |t: &serde_json::Value| {
        let id = t["customer_id"].as_str().unwrap();
        (0..PERSONS)
            .find(|&i| cookie(i) == id || customer(i) == id)
            .expect("a person of the scenario")
    };
    let entered = of("clicked-but-not-registered", "entered");
    for t in &entered {
        let i = person(t);
        assert!(
            i % 4 >= 2,
            "person {i} registered within 24 h, yet entered: {t}"
        );
        if t["cause"].as_str().unwrap().starts_with("timer:") {
            assert_eq!(
                t["customer_id"],
                cookie(i).as_str(),
                "an anonymous visitor: {t}"
            );
            assert_eq!(t["known"], false);
        } else {
            // A late link of someone who never registered: the person enters again.
            assert_eq!(i % 4, 3, "{t}");
            assert_eq!(t["cause"], format!("merge:{}", customer(i)).as_str());
            assert_eq!(t["anonymous_ids"], serde_json::json!([cookie(i)]));
        }
    }
    assert_eq!(entered.len(), PERSONS / 2 + PERSONS / 4);
    let merged_out: Vec<_> = of("clicked-but-not-registered", "exited")
        .into_iter()
        .filter(|t| t["cause"].as_str().unwrap().starts_with("merge:"))
        .collect();
    assert_eq!(
        merged_out.len(),
        PERSONS / 2,
        "each late link: the cookie's profile exits"
    );
}

/// Whether consumer group `group` has committed the end of every partition of `topic`
/// (`ends`: those offsets; `None`: the current end). Returns the current ends too.
pub fn committed_up_to(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: Option<&[i64]>,
) -> (bool, Vec<i64>) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use std::time::Duration;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let highs: Vec<i64> = (0..n)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let ends = ends.unwrap_or(&highs);
    let done = (0..n).all(|p| {
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        at >= ends[p as usize]
    });
    (done, highs)
}

/// The transitions of `expected` stamped before `limit`.
pub fn before(
    expected: &std::collections::BTreeSet<String>,
    limit: i64,
) -> std::collections::BTreeSet<String> {
    expected
        .iter()
        .filter(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            segstream_core::time::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap() < limit
        })
        .cloned()
        .collect()
}
