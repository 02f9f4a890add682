//! Identity through the service: anonymous visitors become known customers while their
//! events and state start out on different partitions and instances, and an instance is
//! killed in the middle of the merges.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use support::identity::{before, check_reference, committed_up_to, phases, HOUR, T0};
use support::mock::{produce, setup, start, Reader};
use support::replayed;

/// Waits until the instances have routed and applied everything produced so far and no
/// merge is pending: the router's group has committed the input's end, the segment
/// stage's group the persons topic's end as it was then, and no instance waits for a
/// merge or holds an event.
async fn drained(cfg: &segstream::config::Config, instances: &[&segstream::service::Background]) {
    let k = &cfg.kafka;
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
            .all(|t| committed_up_to(&k.brokers, &router_group, t, None).0);
        if !routed {
            continue;
        }
        let (_, ends) = committed_up_to(&k.brokers, &k.group_id, &k.persons_topic, None);
        while !committed_up_to(&k.brokers, &k.group_id, &k.persons_topic, Some(&ends)).0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not drained after 90 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let idle = instances.iter().all(|s| {
            let m = &s.running.instance.metrics;
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
    check_reference(&expected);

    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
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
    settle(&mut reader, &before(&expected, T0 + 2 * HOUR), "the clicks").await;
    drained(&cfg, &[&a, &b]).await;
    produce(&brokers, &input, &phases[1]).await;
    // Crash A while persons wait for merges (or once the links are through).
    let waiting = |a: &segstream::service::Background, b: &segstream::service::Background| {
        a.running.instance.metrics.waiting_persons.get()
            + b.running.instance.metrics.waiting_persons.get()
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
    settle(
        &mut reader,
        &before(&expected, T0 + 31 * HOUR),
        "the deadlines",
    )
    .await;
    produce(&brokers, &input, &phases[3]).await;
    settle(
        &mut reader,
        &before(&expected, T0 + 60 * HOUR),
        "the late links",
    )
    .await;
    produce(&brokers, &input, &phases[4]).await;
    settle(&mut reader, &expected, "the end").await;

    let have = got(&reader);
    eprintln!(
        "identity: {} transitions, {} read, {} duplicate events skipped",
        expected.len(),
        reader.got.len(),
        b.running.instance.metrics.duplicates_skipped.get()
            + c.running.instance.metrics.duplicates_skipped.get()
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
