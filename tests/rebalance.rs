//! Scale-out and rebalances: instances crashing and joining mid-stream give exactly the
//! single-instance transitions; the partitioning contract is checked at start-up.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use segstream::service;
use support::mock::{produce, read, setup, start, stop, Reader};
use support::{known_funnel, unique};

/// Scale-out: two instances in one group share the partitions; one crashes (its task is
/// dropped mid-stream, nothing flushed or committed beyond what was acknowledged) and a
/// third joins. The union of the transitions equals the single-instance (offline replay)
/// run of the same events: nothing lost, nothing invented; duplicates are whole copies
/// with the same transition_id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_and_added_mid_stream_give_the_single_instance_transitions() {
    let (_cluster, mut cfg, input) = setup(4, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.kafka.batch_size = 50;

    // Four days of the simulated funnel, 400 customers.
    let (lines, expected) = known_funnel(400, 42, &cfg);
    let (first, second) = lines.split_at(lines.len() / 2);

    let a = start(cfg.clone()).await;
    let b = start(cfg.clone()).await;
    produce(&brokers, &input, first).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader
        .until(expected.len() / 4, Duration::from_secs(30))
        .await;
    // Crash A: its task is dropped where it stands.
    a.kill();
    let c = start(cfg.clone()).await;
    produce(&brokers, &input, second).await;
    assert_single_instance_transitions(&mut reader, &expected).await;
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing is late after the moves");
    stop(b).await;
    stop(c).await;
}

/// Slow acknowledgements (20 ms per broker round trip): the committer falls behind the
/// loop, and the batches that queue meanwhile are committed in rounds of several (one
/// changelog send, the newest marker per partition, the newest offsets). An instance that
/// crashes between rounds and its successor, which restores the state those rounds wrote,
/// give exactly the single-instance transitions: nothing lost, nothing invented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_of_several_batches_survive_a_crash_with_the_single_instance_transitions() {
    let (cluster, mut cfg, input) = setup(4, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    cfg.kafka.batch_size = 20;
    // Offsets committed soon after they are stored: a crash finds them where the last
    // round left them (a marker older than its round's offsets would lose state).
    cfg.kafka
        .librdkafka
        .insert("auto.commit.interval.ms".into(), "20".into());
    let (lines, expected) = known_funnel(400, 7, &cfg);
    let (first, second) = lines.split_at(lines.len() / 2);
    produce_at_once(&brokers, &input, first).await;
    cluster
        .broker_round_trip_time(1, Duration::from_millis(20))
        .unwrap();

    let a = start(cfg.clone()).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader
        .until(expected.len() / 8, Duration::from_secs(60))
        .await;
    let rounds = &a.running.instance.metrics.commit_round_batches;
    let (count, sum) = (rounds.get_sample_count(), rounds.get_sample_sum());
    assert!(
        sum > count as f64,
        "some round committed several batches ({sum} batches in {count} rounds)"
    );
    a.kill();
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();

    produce_at_once(&brokers, &input, second).await;
    let b = start(cfg.clone()).await;
    eprintln!("before the crash: {sum} batches in {count} rounds");
    assert_single_instance_transitions(&mut reader, &expected).await;
    stop(b).await;
}

/// Waits until every expected transition has arrived (duplicates allowed) and nothing new
/// comes for 3 s (at most 90 s), then checks that nothing was invented and that duplicates
/// are exact copies (one payload per transition_id).
async fn assert_single_instance_transitions(reader: &mut Reader, expected: &BTreeSet<String>) {
    let payloads = |reader: &Reader| -> BTreeSet<String> {
        reader
            .got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let n = reader.got.len();
        reader.until(n + 1, Duration::from_secs(3)).await;
        let got = payloads(reader);
        if got.is_superset(expected) && reader.got.len() == n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing after 90 s: {:#?}",
            expected.difference(&got).take(10).collect::<Vec<_>>()
        );
    }
    let got = payloads(reader);
    assert_eq!(
        &got,
        expected,
        "invented: {:#?}",
        got.difference(expected).collect::<Vec<_>>()
    );
    let mut by_id: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
    for m in &reader.got {
        let p = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        by_id
            .entry(v["transition_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(p);
    }
    assert!(by_id.values().all(|s| s.len() == 1));
    eprintln!(
        "{} transitions expected, {} received ({} duplicates)",
        expected.len(),
        reader.got.len(),
        reader.got.len() - expected.len()
    );
}

/// Produces `lines` in order (per partition: idempotent producer), all handed over before
/// the first acknowledgement is awaited.
async fn produce_at_once(brokers: &str, topic: &str, lines: &[support::Keyed]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut sent = Vec::with_capacity(lines.len());
    for (key, payload) in lines {
        let mut r = FutureRecord::to(topic).payload(&payload[..]);
        if let Some(k) = key {
            r = r.key(k.as_bytes());
        }
        sent.push(p.send_result(r).map_err(|(e, _)| e).expect("queued"));
    }
    for s in sent {
        s.await.expect("delivered").expect("produced");
    }
}

/// The partitioning contract is checked at start-up, every violation listed: read directly,
/// input topics with different partition counts, a changelog with another count than the
/// inputs; routed, a changelog with another count than the persons topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_inputs_that_are_not_co_partitioned() {
    let (cluster, mut cfg, input) = setup(2, "segments/library.toml");
    let other = unique("other");
    cluster.create_topic(&other, 3, 1).unwrap();
    // Read directly (no router), the inputs must be co-partitioned.
    cfg.kafka.router = false;
    cfg.kafka.input_topics = vec![input.clone(), other.clone()];
    let err = service::run(cfg.clone(), std::future::pending(), None)
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("not co-partitioned"), "{msg}");
    assert!(
        msg.contains(&format!("{input}: 2")) && msg.contains(&format!("{other}: 3")),
        "{msg}"
    );

    // Co-partitioned inputs, but a changelog with another partition count.
    let changelog = unique("changelog");
    cluster.create_topic(&changelog, 5, 1).unwrap();
    cfg.kafka.input_topics = vec![input];
    cfg.kafka.changelog_topic = changelog.clone();
    let err = service::run(cfg.clone(), std::future::pending(), None)
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "changelog topic `{changelog}` has 5 partitions; the input topics have 2"
        )),
        "{msg}"
    );

    // Routed, inputs of any counts are fine, but the persons topic and the changelog must
    // have as many partitions as each other.
    cfg.kafka.router = true;
    cfg.kafka.input_topics = vec![other];
    let err = service::run(cfg, std::future::pending(), None)
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "changelog topic `{changelog}` has 5 partitions, but the persons topic has 2"
        )),
        "{msg}"
    );
}
