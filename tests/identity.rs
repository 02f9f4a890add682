//! Identity through the service: anonymous visitors become known customers while their
//! events and state start out on different partitions and instances, and an instance is
//! killed in the middle of the merges.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use segstream_core::time::format_rfc3339;
use support::mock::{produce, setup, start, Reader};
use support::{replayed, Keyed};

/// 2026-11-02T08:00:00Z.
const T0: i64 = 1_793_606_400_000;
const HOUR: i64 = 3_600_000;
const PERSONS: usize = 160;

fn event(
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
fn cookie(i: usize) -> String {
    format!(
        "{:016x}",
        (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

fn customer(i: usize) -> String {
    format!("c-{i:05}")
}

/// Events that move every partition's time to `at` (one per tick customer).
fn ticks(phase: &str, at: i64) -> Vec<Keyed> {
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
fn phases() -> Vec<Vec<Keyed>> {
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

/// Waits until the instances have routed and applied everything produced so far and no
/// merge is pending: the router's group has committed the input's end, the segment
/// stage's group the persons topic's end as it was then, and no instance waits for a
/// merge or holds an event.
async fn drained(cfg: &segstream::config::Config, instances: &[&segstream::service::Background]) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let k = &cfg.kafka;
    let caught_up = |group: &str, topic: &str, ends: Option<&Vec<i64>>| -> (bool, Vec<i64>) {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &k.brokers)
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
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let router_group = format!("{}-router", k.group_id);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let routed = k
            .input_topics
            .iter()
            .all(|t| caught_up(&router_group, t, None).0);
        if !routed {
            continue;
        }
        let (_, ends) = caught_up(&k.group_id, &k.persons_topic, None);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not drained after 90 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            if caught_up(&k.group_id, &k.persons_topic, Some(&ends)).0 {
                break;
            }
        }
        let idle = instances.iter().all(|s| {
            let m = &s.running.shared.metrics;
            m.waiting_persons.get() == 0 && m.held_events.get() == 0
        });
        if idle {
            return;
        }
    }
}

/// Two instances share four partitions; persons start out split over them (a cookie's
/// events on one partition, the customer id's on another). One instance is killed while
/// the links of phase 2 are being merged, a third one joins. The transitions are exactly
/// those of the single-engine replay of the same events: nobody who registered within 24 h
/// enters clicked-but-not-registered, a late link makes the anonymous profile exit with
/// cause `merge:<customer id>`, and nothing is lost or invented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitors_linked_across_instances_through_a_crash_give_the_replay_transitions() {
    let (_cluster, mut cfg, input) = setup(4, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.kafka.batch_size = 20;

    let phases = phases();
    let all: String = phases
        .iter()
        .flatten()
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap() + "\n")
        .collect();
    let expected = replayed(&all, &cfg.segments.file, cfg.engine.clone());
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

    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    let before = |limit: i64| -> BTreeSet<String> {
        expected
            .iter()
            .filter(|t| {
                let v: serde_json::Value = serde_json::from_str(t).unwrap();
                segstream_core::time::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap()
                    < limit
            })
            .cloned()
            .collect()
    };
    let got = |reader: &Reader| -> BTreeSet<String> {
        reader
            .got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect()
    };
    // Waits until `want` has arrived, then for quiet.
    async fn settle(reader: &mut Reader, want: &BTreeSet<String>, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let n = reader.got.len();
            reader.until(n + 1, Duration::from_secs(2)).await;
            let have: BTreeSet<String> = reader
                .got
                .iter()
                .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
                .collect();
            if have.is_superset(want) && reader.got.len() == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: missing after 90 s: {:#?}",
                want.difference(&have).take(5).collect::<Vec<_>>()
            );
        }
    }

    let a = start(cfg.clone()).await;
    let b = start(cfg.clone()).await;
    produce(&brokers, &input, &phases[0]).await;
    settle(&mut reader, &before(T0 + 2 * HOUR), "the clicks").await;
    drained(&cfg, &[&a, &b]).await;
    produce(&brokers, &input, &phases[1]).await;
    // Crash A while persons wait for merges (or once the links are through).
    let waiting = |a: &segstream::service::Background, b: &segstream::service::Background| {
        a.running.shared.metrics.waiting_persons.get()
            + b.running.shared.metrics.waiting_persons.get()
    };
    let mut merging = 0;
    for _ in 0..500 {
        merging = waiting(&a, &b);
        if merging > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill();
    let c = start(cfg.clone()).await;
    // The links made no transition: wait until every merge is done.
    drained(&cfg, &[&b, &c]).await;
    eprintln!("identity: {merging} persons were waiting for a merge at the crash");
    produce(&brokers, &input, &phases[2]).await;
    settle(&mut reader, &before(T0 + 31 * HOUR), "the deadlines").await;
    produce(&brokers, &input, &phases[3]).await;
    settle(&mut reader, &before(T0 + 60 * HOUR), "the late links").await;
    produce(&brokers, &input, &phases[4]).await;
    settle(&mut reader, &expected, "the end").await;

    let have = got(&reader);
    eprintln!(
        "identity: {} transitions, {} read, {} duplicate events skipped",
        expected.len(),
        reader.got.len(),
        b.running.shared.metrics.duplicates_skipped.get()
            + c.running.shared.metrics.duplicates_skipped.get()
    );
    assert_eq!(
        have,
        expected,
        "invented: {:#?}",
        have.difference(&expected).take(5).collect::<Vec<_>>()
    );
    // Duplicates (at-least-once, after the crash) are exact copies.
    let ids: BTreeSet<String> = reader
        .got
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            v["transition_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), expected.len());
    drop(b);
    drop(c);
}
