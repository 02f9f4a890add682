//! Hostile input on the in-process broker: nothing on a topic can stop the service or make
//! it lose events. Dead letters keep the original message whole; a dead letter the broker
//! refuses goes out in its smallest form; an event from the future does not poison event
//! time; history streamed in slower than it is consumed stays on its own time.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::http;
use support::known_funnel;
use support::mock::{header, payload, produce, read, setup, start, stop, url, Reader};

fn event(id: &str, customer: &str, ty: &str, at: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","type":"{ty}","timestamp":"{at}","traits":{{"country":"DE","role":"ceo"}}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_the_original_key_value_headers_and_timestamp() {
    let (_cluster, cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    let svc = start(cfg.clone()).await;
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header::<&[u8]> {
            key: "no-value",
            value: None,
        });
    let record = FutureRecord::to(&input)
        .key("c-7")
        .payload("{\"customer_id\": ")
        .headers(headers)
        .timestamp(1_700_000_000_042);
    p.send(record, Duration::from_secs(5)).await.unwrap();

    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.key(), Some(&b"c-7"[..]));
    assert_eq!(payload(d), "{\"customer_id\": ");
    assert_eq!(d.timestamp().to_millis(), Some(1_700_000_000_042));
    assert_eq!(
        header(d, "traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        header(d, "content-type").as_deref(),
        Some("application/json")
    );
    let names: Vec<String> = {
        use rdkafka::message::Headers;
        d.headers()
            .unwrap()
            .iter()
            .map(|h| h.key.to_string())
            .collect()
    };
    assert_eq!(
        names[..3],
        ["traceparent", "content-type", "no-value"],
        "the original headers first, in order"
    );
    assert_eq!(
        header(d, "segstream_reason").as_deref(),
        Some("invalid_json")
    );
    assert_eq!(
        header(d, "segstream_source_topic").as_deref(),
        Some(input.as_str())
    );
    assert_eq!(header(d, "segstream_source_offset").as_deref(), Some("0"));
    stop(svc).await;
}

/// The broker refuses a dead letter (as a topic with a smaller `max.message.bytes` does):
/// it goes out without its value, with the origin and the original size, and the service
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_broker_refuses_goes_out_without_its_value() {
    let (cluster, cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    produce(&brokers, &input, &[(Some("c1".into()), b"x".repeat(5000))]).await;
    // The next produce request anyone sends fails: the service's dead letter.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let svc = start(cfg.clone()).await;
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(payload(d), "", "the value was left out");
    assert_eq!(
        header(d, "segstream_value_dropped").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(d, "segstream_original_size").as_deref(),
        Some("5000")
    );
    assert_eq!(
        header(d, "segstream_reason").as_deref(),
        Some("invalid_json")
    );
    assert_eq!(header(d, "segstream_source_offset").as_deref(), Some("0"));
    // The service goes on with the next message.
    produce(
        &brokers,
        &input,
        &[(
            Some("c2".into()),
            event("ok", "c2", "identify", "2026-11-22T10:00:00Z"),
        )],
    )
    .await;
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), 1);
    let metrics = http::get(&url(&svc, "/metrics"), None).await.1;
    assert!(
        metrics.contains("segstream_dead_letters_degraded_total 1"),
        "{metrics}"
    );
    stop(svc).await;
}

/// One event dated 2099 in the middle of a stream: rejected as `future_timestamp`, and
/// every later event is applied (it did not move event time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_the_future_is_a_dead_letter_and_does_not_poison_event_time() {
    let (_cluster, cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    let svc = start(cfg.clone()).await;
    let lines = vec![
        (
            Some("a".into()),
            event("1", "a", "identify", "2026-11-22T10:00:00Z"),
        ),
        (
            Some("b".into()),
            event("2", "b", "identify", "2099-01-01T00:00:00Z"),
        ),
        (
            Some("c".into()),
            event("3", "c", "identify", "2026-11-22T10:00:01Z"),
        ),
        (
            Some("d".into()),
            event("4", "d", "identify", "2026-11-22T10:00:02Z"),
        ),
    ];
    produce(&brokers, &input, &lines).await;
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dead.len(), 1, "only the future event is a dead letter");
    assert_eq!(
        header(&dead[0], "segstream_reason").as_deref(),
        Some("future_timestamp")
    );
    assert!(header(&dead[0], "segstream_detail")
        .unwrap()
        .contains("ahead of the clock"));
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        3,
        Duration::from_secs(30),
    )
    .await;
    let customers: BTreeSet<String> = out
        .iter()
        .map(|m| String::from_utf8_lossy(m.key().unwrap()).into_owned())
        .collect();
    assert_eq!(customers, BTreeSet::from(["a", "c", "d"].map(String::from)));
    let metrics = http::get(&url(&svc, "/metrics"), None).await.1;
    assert!(
        metrics.contains(r#"segstream_dead_letters_total{reason="future_timestamp"} 1"#),
        "{metrics}"
    );
    stop(svc).await;
}

/// A backfill: four days of history produced more slowly than the service consumes it, so
/// the input goes idle between chunks. With the default `idle_lag`, idle time moves a
/// partition's event time only as far as real time passes since its last event: every
/// transition of the replay arrives, and the only others are timers due within the few
/// seconds of real time after the last event (live, time goes on; the replay stops at the
/// watermark). Before, idle input followed the wall clock and history jumped to today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_streamed_slower_than_it_is_consumed_stays_on_its_own_time() {
    let (_cluster, mut cfg, input) = setup(2, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    // Quiet partitions follow the others quickly: the backfill pauses are long enough.
    cfg.kafka.partition_idle_after = 300;
    let (lines, expected) = known_funnel(150, 5, &cfg);
    let last_event = lines
        .iter()
        .filter_map(|(_, l)| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["timestamp"]
                .as_str()
                .and_then(segstream_core::time::parse_rfc3339)
        })
        .max()
        .unwrap();
    let svc = start(cfg.clone()).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    for chunk in lines.chunks(lines.len() / 12 + 1) {
        produce(&brokers, &input, chunk).await;
        // Longer than idle_after and partition_idle_after: the service catches up and idles.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let produced_all = std::time::Instant::now();
    reader.until(expected.len(), Duration::from_secs(60)).await;
    reader
        .until(expected.len() + 10_000, Duration::from_secs(3))
        .await;
    let real_time_since = produced_all.elapsed().as_millis() as i64 + 1_000;
    let got: BTreeSet<String> = reader.payloads().into_iter().collect();
    let missing: Vec<&String> = expected.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "missing {:#?}",
        &missing[..missing.len().min(8)]
    );
    // Anything more is a timer the last event's time plus the real time since has passed.
    let lateness = cfg.engine.allowed_lateness;
    for extra in got.difference(&expected) {
        let t: segstream_core::transition::Transition = serde_json::from_str(extra).unwrap();
        let ok = match &t.cause {
            segstream_core::transition::Cause::Timer { deadline, .. } => {
                *deadline > last_event - lateness && *deadline <= last_event + real_time_since
            }
            _ => false,
        };
        assert!(
            ok,
            "a transition the replay does not have, and not a timer due just now: {extra}"
        );
    }
    assert_eq!(reader.got.len(), got.len(), "no duplicates");
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        dead.is_empty(),
        "nothing late: {:?}",
        dead.iter()
            .map(|m| header(m, "segstream_detail"))
            .collect::<Vec<_>>()
    );
    stop(svc).await;
}
