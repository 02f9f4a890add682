//! Exactly-once (Kafka transactions; the mock cluster supports them, tansu does not).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use support::mock::{produce, setup, start, stop, Reader};
use support::{known_funnel, unique};

/// Exactly-once (transactions; the mock cluster supports them): a crash mid-stream and a
/// restart with the same transactional id give every transition exactly once to a
/// read_committed reader, no duplicate at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_a_crash_without_duplicates() {
    let (_cluster, mut cfg, input) = setup(3, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.kafka.batch_size = 50;
    cfg.kafka.exactly_once = true;
    cfg.kafka.transactional_id = Some(unique("txn"));

    let (lines, expected) = known_funnel(300, 11, &cfg);
    let (first, second) = lines.split_at(lines.len() / 2);

    let mut reader = Reader::with(
        &brokers,
        &cfg.kafka.output_topic,
        &[("isolation.level", "read_committed")],
    );

    let a = start(cfg.clone()).await;
    produce(&brokers, &input, first).await;
    reader
        .until(expected.len() / 5, Duration::from_secs(30))
        .await;
    a.kill();
    let b = start(cfg.clone()).await;
    produce(&brokers, &input, second).await;
    reader.until(expected.len(), Duration::from_secs(60)).await;
    // Nothing more (no duplicate) arrives.
    reader
        .until(expected.len() + 1, Duration::from_secs(5))
        .await;
    let got: Vec<String> = reader
        .got
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(
        got_set,
        expected,
        "missing {:#?}, invented {:#?}",
        expected.difference(&got_set).take(5).collect::<Vec<_>>(),
        got_set.difference(&expected).take(5).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), expected.len(), "no duplicate");
    stop(b).await;
}
