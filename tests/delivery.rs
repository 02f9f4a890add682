//! Delivery: the live path gives exactly the transitions of the offline replay, keyed by
//! customer with CloudEvents headers; bad input goes to the dead-letter topic with its
//! reason while the consumer goes on; a broker outage loses nothing.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use support::http;
use support::mock::{header, produce, read, setup, start, stop, url, wait_for_readyz, Reader};
use support::{key_of, replayed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_equals_offline_replay_for_the_reference_funnel() {
    let (_cluster, mut cfg, input) = setup(3, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    // Time moves only with event time here, exactly as in the replay.
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;

    // The expected transitions: the offline replay of the same file.
    let events = std::fs::read_to_string("schemas/examples/events/reference-funnel.jsonl").unwrap();
    let expected = replayed(&events, &cfg.segments.file, cfg.engine.clone());
    assert!(!expected.is_empty());

    // Three days of history wait in the topic when the service starts (a backlog: every
    // partition holds the watermark back until it has delivered). See README, "Time", for
    // history dumped on a partition that has been idle.
    let lines: Vec<(Option<String>, Vec<u8>)> = events
        .lines()
        .map(|l| (key_of(l), l.as_bytes().to_vec()))
        .collect();
    produce(&brokers, &input, &lines).await;
    let svc = start(cfg.clone()).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader.until(expected.len(), Duration::from_secs(30)).await;
    // Nothing more arrives.
    let got = reader
        .until(expected.len() + 1, Duration::from_secs(3))
        .await
        .to_vec();
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        dead.is_empty(),
        "nothing is late or invalid: {:?}",
        dead.iter()
            .map(|m| header(m, "segstream_detail"))
            .collect::<Vec<_>>()
    );
    let got_lines: BTreeSet<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "no lost and no invented transitions:\nmissing {:#?}\nextra {:#?}",
        expected.difference(&got_lines).collect::<Vec<_>>(),
        got_lines.difference(&expected).collect::<Vec<_>>()
    );
    let got_set: BTreeSet<String> = got
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got_set, expected);
    // Keyed by customer, with CloudEvents headers.
    for m in &got {
        let t: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(t["customer_id"].as_str().unwrap().as_bytes()));
        assert_eq!(header(m, "ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(header(m, "ce_id").as_deref(), t["transition_id"].as_str());
        assert_eq!(
            header(m, "ce_type"),
            Some(format!(
                "segstream.segment.{}",
                t["direction"].as_str().unwrap()
            ))
        );
        assert!(header(m, "ce_time").is_some() && header(m, "ce_source").is_some());
        assert!(header(m, "ce_subject")
            .unwrap()
            .starts_with(t["customer_id"].as_str().unwrap()));
    }
    stop(svc).await;
}

/// More workers than cores and fewer than partitions: the group spreads the partitions
/// over the workers, every worker holds some, the transitions are exactly the replay's, and
/// HTTP finds every customer whichever worker holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_partitions_and_give_the_replay_transitions() {
    let (_cluster, mut cfg, input) = setup(5, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.engine.workers = Some(3);
    let events = std::fs::read_to_string("schemas/examples/events/reference-funnel.jsonl").unwrap();
    let expected = replayed(&events, &cfg.segments.file, cfg.engine.clone());
    let lines: Vec<(Option<String>, Vec<u8>)> = events
        .lines()
        .map(|l| (key_of(l), l.as_bytes().to_vec()))
        .collect();
    produce(&brokers, &input, &lines).await;
    let svc = start(cfg.clone()).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader.until(expected.len(), Duration::from_secs(30)).await;
    let got: BTreeSet<String> = reader
        .until(expected.len() + 1, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(got, expected, "exactly the replay's transitions");
    let instance = &svc.running.instance;
    assert_eq!(instance.workers.len(), 3);
    let per_worker: Vec<usize> = instance
        .workers
        .iter()
        .map(|w| w.kafka.assigned.load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 5, "{per_worker:?}");
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
    let holding: Vec<usize> = instance
        .workers
        .iter()
        .map(|w| w.engine().profile_count())
        .collect();
    assert!(
        holding.iter().filter(|&&n| n > 0).count() >= 2,
        "profiles spread over the workers: {holding:?}"
    );
    let forgotten: BTreeSet<String> = events
        .lines()
        .filter(|l| l.contains(r#""type": "forget""#))
        .filter_map(key_of)
        .collect();
    let customers: BTreeSet<String> = events.lines().filter_map(key_of).collect();
    assert!(!forgotten.is_empty() && customers.len() > forgotten.len() + 3);
    for c in customers.difference(&forgotten) {
        let (status, body) = http::get(&url(&svc, &format!("/profiles/{c}")), None).await;
        assert_eq!(status, 200, "{c}: {body}");
    }
    let (_, segments) = http::get(&url(&svc, "/segments"), None).await;
    let segments: serde_json::Value = serde_json::from_str(&segments).unwrap();
    let total: u64 = segments["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["population"].as_u64().unwrap())
        .sum();
    let mut members = 0;
    instance.each(|e| members += e.populations().iter().map(|(_, n)| n).sum::<usize>());
    assert_eq!(
        total as usize, members,
        "populations summed over the workers"
    );
    assert!(total > 0);
    stop(svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_goes_to_the_dead_letter_topic_with_its_reason() {
    let (_cluster, mut cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.kafka.max_message_bytes = 2000;
    let svc = start(cfg.clone()).await;
    let big = format!(
        r#"{{"event_id":"big","customer_id":"c1","type":"click","timestamp":"2026-11-22T10:00:00Z","properties":{{"x":"{}"}}}}"#,
        "a".repeat(3000)
    );
    let bad: Vec<(Option<String>, Vec<u8>)> = vec![
        (Some("c1".into()), b"not json at all".to_vec()),
        (Some("c1".into()), br#"{"event_id":"e1","customer_id":"c1","type":"purchase","timestamp":"2026-11-22T10:00:00Z","properties":{"amount":"12","currency":"EUR"}}"#.to_vec()),
        (Some("c1".into()), br#"{"event_id":"e2","customer_id":"c1","type":"click","timestamp":"yesterday"}"#.to_vec()),
        (Some("c1".into()), big.into_bytes()),
        (Some("c2".into()), br#"{"event_id":"ok","customer_id":"c2","type":"identify","timestamp":"2026-11-22T10:00:00Z","traits":{"country":"DE","role":"ceo"}}"#.to_vec()),
    ];
    produce(&brokers, &input, &bad).await;
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        4,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 4);
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| header(m, "segstream_reason").unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "invalid_json",
            "wrong_type",
            "invalid_timestamp",
            "too_large"
        ]
    );
    for (m, (_, original)) in dead.iter().zip(&bad) {
        assert_eq!(
            m.payload(),
            Some(&original[..]),
            "the message goes unchanged"
        );
        assert_eq!(
            header(m, "segstream_source_topic").as_deref(),
            Some(input.as_str())
        );
        assert_eq!(
            header(m, "segstream_source_partition").as_deref(),
            Some("0")
        );
        assert!(header(m, "segstream_source_offset").is_some());
        assert!(!header(m, "segstream_detail").unwrap().is_empty());
    }
    // The consumer did not stop: the good event after the bad ones was processed.
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), 1);
    // And the metrics counted every dead letter by reason.
    let metrics = http::get(&url(&svc, "/metrics"), None).await.1;
    assert!(
        metrics.contains(r#"segstream_dead_letters_total{reason="invalid_json"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"segstream_dead_letters_total{reason="too_large"} 1"#));
    stop(svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_reports_not_ready_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("segments.toml");
    std::fs::write(
        &defs,
        "[segments.clicked-but-not-registered]\ncondition = 'ad_click(campaign = \"q4\") then no webinar_registered within 5s'\n",
    )
    .unwrap();
    let (cluster, cfg, input) = setup(1, defs.to_str().unwrap());
    let brokers = cfg.kafka.brokers.clone();
    let svc = start(cfg.clone()).await;
    wait_for_readyz(&svc, 200, 20).await;
    let now = { segstream::clock::now_millis() };
    let click = format!(
        r#"{{"event_id":"k1","customer_id":"c1","type":"ad_click","timestamp":"{}","properties":{{"campaign":"q4"}}}}"#,
        segstream_core::time::format_rfc3339(now)
    );
    produce(&brokers, &input, &[(Some("c1".into()), click.into_bytes())]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The broker goes down; the deadline passes during the outage.
    cluster.broker_down(1).unwrap();
    wait_for_readyz(&svc, 503, 20).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    cluster.broker_up(1).unwrap();

    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader.until(1, Duration::from_secs(60)).await;
    let got = reader.until(2, Duration::from_secs(3)).await.to_vec();
    assert_eq!(
        got.len(),
        1,
        "the transition arrives after the outage, once"
    );
    let t: serde_json::Value = serde_json::from_slice(got[0].payload().unwrap()).unwrap();
    assert_eq!(t["customer_id"], "c1");
    assert!(t["cause"].as_str().unwrap().starts_with("timer:absence@"));
    // Ready again: after an outage that cost the group session, that includes restoring the
    // partition from the changelog and 5 s without client errors.
    wait_for_readyz(&svc, 200, 60).await;
    stop(svc).await;
}
