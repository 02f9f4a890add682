//! Resilience against a real broker process (tansu over TCP, the `segstream` binary,
//! kafka-python as the independent client): a message too large to forward cannot stop
//! the service or make it crash-loop, and an output topic that is missing for a while
//! pauses the input instead of growing memory, losing nothing.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use segstream_core::engine::EngineConfig;
use support::tansu::{
    base_env, consume, consume_with, free_port, produce, produce_large, Segstream, Tansu,
};
use support::{funnel_events_with, replayed};

fn identify(id: &str, customer: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","type":"identify","timestamp":"2026-11-22T10:00:00Z","traits":{{"country":"DE","role":"ceo"}}}}"#
    )
}

/// A 1.2 MB message on an input topic that allows it: larger than what the producer may
/// forward (1 MB). It becomes a dead letter cut to `dead_letter_max_bytes`, the next event
/// is processed, and a restart neither crashes nor reads the message again.
#[test]
fn a_message_too_large_to_forward_is_cut_and_never_stops_the_service() {
    let tansu = Tansu::start_on(free_port());
    tansu.create_topic("events", 1);
    tansu.create_topic("transitions", 1);
    tansu.create_topic("dead-letters", 1);
    tansu.create_topic("segstream-changelog", 1);
    let env = base_env(&tansu, "segments/library.toml", "e2e-big");
    let mut svc = Segstream::start(&env);
    svc.wait_ready(true, Duration::from_secs(60));

    let filler = "x".repeat(1_200_000);
    let big = format!(
        r#"{{"event_id":"big","customer_id":"c-big","type":"click","timestamp":"2026-11-22T10:00:00Z","properties":{{"blob":"{filler}"}}}}"#
    );
    let size = big.len();
    produce_large(&tansu.broker(), "events", &(big.clone() + "\n"), 2 << 20);
    produce(&tansu.broker(), "events", &identify("after-big", "c-ok"));

    let dead = consume_with(
        &tansu.broker(),
        "dead-letters",
        1,
        40,
        &["--max-value-chars", "64"],
    );
    assert_eq!(dead.len(), 1, "one dead letter");
    let d = &dead[0];
    let h = &d["headers"];
    assert_eq!(h["segstream_reason"], "too_large");
    assert_eq!(h["segstream_truncated"], "true");
    assert_eq!(h["segstream_original_size"], size.to_string());
    assert_eq!(d["key"], "c-big");
    let len = d["value_len"].as_u64().unwrap() as usize;
    assert!(
        (800_000..=900_000).contains(&len),
        "cut to the dead-letter limit: {len}"
    );
    assert!(
        big.starts_with(d["value"].as_str().unwrap()),
        "a prefix of the original"
    );
    let out = consume(&tansu.broker(), "transitions", 1, 30);
    assert_eq!(out.len(), 1, "the event after it was processed");
    assert!(svc.alive(), "the service runs on");

    // A restart: no crash loop, the big message is not read again.
    svc.terminate();
    let mut svc = Segstream::start(&env);
    svc.wait_ready(true, Duration::from_secs(60));
    produce(
        &tansu.broker(),
        "events",
        &identify("after-restart", "c-ok2"),
    );
    let out = consume(&tansu.broker(), "transitions", 2, 30);
    assert_eq!(out.len(), 2, "processing goes on after the restart");
    let dead = consume_with(
        &tansu.broker(),
        "dead-letters",
        2,
        5,
        &["--max-value-chars", "64"],
    );
    assert_eq!(dead.len(), 1, "the big message was not processed again");
    assert!(svc.alive());
    assert_eq!(
        svc.metric("segstream_dead_letters_total{reason=\"too_large\"}")
            .as_deref(),
        Some("0"),
        "the restarted instance read nothing too large"
    );
}

/// The output topic is missing when the service starts and for a while after: the first
/// batch cannot be delivered, the input is paused (memory stays flat while the producer
/// goes on writing), and once the topic exists every transition arrives.
#[test]
fn a_missing_output_topic_pauses_the_input_and_loses_nothing() {
    let tansu = Tansu::start_on(free_port());
    tansu.create_topic("events", 2);
    tansu.create_topic("dead-letters", 1);
    tansu.create_topic("segstream-changelog", 2);
    // "transitions" is created only later.
    let mut env = base_env(&tansu, "segments/library.toml", "e2e-outage");
    env.push(("SEGSTREAM__ENGINE__IDLE_LAG", "3650d".to_string()));
    env.push(("SEGSTREAM__KAFKA__BATCH_SIZE", "200".to_string()));
    // Every customer known from the start (see `support::known_funnel`).
    let events = funnel_events_with(400, 3, 0.0);
    let expected = replayed(
        &events,
        Path::new("segments/library.toml"),
        EngineConfig {
            idle_lag: 10 * 365 * 86_400_000,
            ..Default::default()
        },
    );
    let lines: Vec<&str> = events.lines().collect();
    let chunks: Vec<String> = lines
        .chunks(lines.len() / 8 + 1)
        .map(|c| c.join("\n"))
        .collect();

    // Two workers whatever the machine: the stalled worker pauses the other one too.
    env.push(("SEGSTREAM__ENGINE__WORKERS", "2".to_string()));
    let mut svc = Segstream::start(&env);
    svc.wait_settled(Duration::from_secs(5), Duration::from_secs(60));
    produce(&tansu.broker(), "events", &chunks[0]);
    // The first batch waits for the missing topic: the input is paused.
    let start = Instant::now();
    while svc.metric("segstream_input_paused").as_deref() != Some("1") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the input was never paused"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let consumed = |s: &Segstream| s.metric_sum("segstream_events_consumed_total");
    let paused_at = consumed(&svc);
    let rss_paused = svc.resident_bytes();
    let mut rss_max = rss_paused;
    // The producer goes on: the rest of the stream while the topic is missing.
    for chunk in &chunks[1..] {
        produce(&tansu.broker(), "events", chunk);
        rss_max = rss_max.max(svc.resident_bytes());
    }
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(svc.resident_bytes());
    }
    let consumed_while_paused = consumed(&svc) - paused_at;
    eprintln!(
        "paused after {paused_at} events; {consumed_while_paused} more consumed while paused; resident {} MiB when paused, at most {} MiB during the outage",
        rss_paused >> 20,
        rss_max >> 20
    );
    assert_eq!(
        consumed_while_paused, 0,
        "nothing is read while the output is unavailable"
    );
    assert!(
        rss_max <= rss_paused + (32 << 20),
        "memory stayed flat: {} -> {} MiB",
        rss_paused >> 20,
        rss_max >> 20
    );
    assert!(svc.alive());

    // The topic appears: everything is delivered, nothing lost, nothing invented.
    tansu.create_topic("transitions", 2);
    consume(&tansu.broker(), "transitions", expected.len(), 90);
    // Everything is there: read it all again, waiting a while for anything more.
    let got = consume(&tansu.broker(), "transitions", expected.len() + 1, 30);
    let values: BTreeSet<String> = got
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        values,
        expected,
        "missing {:#?}\ninvented {:#?}",
        expected.difference(&values).take(5).collect::<Vec<_>>(),
        values.difference(&expected).take(5).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), expected.len(), "no duplicates");
    assert_eq!(svc.metric("segstream_input_paused").as_deref(), Some("0"));
    svc.terminate();
}
