//! State and restore: a restarted service restores its profiles from the changelog and
//! resumes without duplicates; the changelog holds records, tombstones and position
//! markers.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::Message;
use segstream_core::changelog::Position;
use support::mock::{produce, setup, start, stop, Reader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_restores_its_state_and_resumes_without_duplicates() {
    let (_cluster, mut cfg, input) = setup(2, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;
    let identify = |i: usize, at: &str| {
        (
            Some(format!("c{i}")),
            format!(r#"{{"event_id":"i{i}","customer_id":"c{i}","type":"identify","timestamp":"{at}","traits":{{"country":"DE","role":"ceo"}}}}"#).into_bytes(),
        )
    };
    let svc = start(cfg.clone()).await;
    let mut before: Vec<_> = (0..20)
        .map(|i| identify(i, "2026-11-22T10:00:00Z"))
        .collect();
    // A click whose 24 h registration deadline passes only after the restart.
    before.push((
        Some("clicker".into()),
        br#"{"event_id":"click","customer_id":"clicker","type":"ad_click","timestamp":"2026-11-22T10:00:00Z","properties":{"campaign":"webinar-q4-ads"}}"#.to_vec(),
    ));
    produce(&brokers, &input, &before).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    assert_eq!(reader.until(20, Duration::from_secs(30)).await.len(), 20);
    stop(svc).await;

    // Same group: the committed offsets hold and the profiles are rebuilt from the input.
    let svc = start(cfg.clone()).await;
    let after: Vec<_> = (20..30)
        .map(|i| identify(i, "2026-11-23T12:00:00Z"))
        .collect();
    produce(&brokers, &input, &after).await;
    let all = reader.until(32, Duration::from_secs(30)).await.to_vec();
    let lines: Vec<serde_json::Value> = all
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        31,
        "20 before, 10 after, the deadline, none twice: {lines:#?}"
    );
    let clicked: Vec<_> = lines
        .iter()
        .filter(|t| t["segment"] == "clicked-but-not-registered")
        .collect();
    assert_eq!(clicked.len(), 1, "the restored click fired its deadline");
    assert_eq!(clicked[0]["customer_id"], "clicker");
    assert_eq!(
        clicked[0]["cause"],
        "timer:absence@2026-11-23T10:00:00.000Z"
    );
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|t| t["transition_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 31);
    stop(svc).await;
}

/// The changelog: one record per customer a batch changed, a tombstone when the customer is
/// forgotten, and a position marker per partition after each batch's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changelog_holds_records_tombstones_and_position_markers() {
    let (_cluster, cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    let svc = start(cfg.clone()).await;
    let ev = |id: &str, ty: &str| {
        (
            Some("c1".to_string()),
            format!(r#"{{"event_id":"{id}","customer_id":"c1","type":"{ty}","timestamp":"2026-11-22T10:00:00Z","traits":{{"country":"DE"}}}}"#).into_bytes(),
        )
    };
    produce(&brokers, &input, &[ev("e1", "identify")]).await;
    let mut log = Reader::new(&brokers, &cfg.kafka.changelog_topic);
    log.until(2, Duration::from_secs(30)).await;
    produce(&brokers, &input, &[ev("e2", "forget")]).await;
    let got = log.until(4, Duration::from_secs(30)).await.to_vec();
    let entries: Vec<(String, bool)> = got
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
                m.payload().is_some(),
            )
        })
        .collect();
    let marker = segstream_core::changelog::POSITION_KEY.to_string();
    assert_eq!(
        entries,
        [
            ("c1".to_string(), true),
            (marker.clone(), true),
            ("c1".to_string(), false),
            (marker, true)
        ],
        "record, marker, tombstone, marker"
    );
    let pos = Position::decode(got[3].payload().unwrap()).expect("a position marker");
    // With the router: the persons topic's next offset, and the input partition's last
    // applied offset (its routed sequence).
    assert_eq!(
        pos.inputs.get(&cfg.kafka.persons_topic).map(|p| p.0),
        Some(2),
        "two routed records applied: {:?}",
        pos.inputs
    );
    assert_eq!(
        pos.inputs.get(&format!("src:{input}:0")).map(|p| p.0),
        Some(1),
        "up to input offset 1: {:?}",
        pos.inputs
    );
    stop(svc).await;
}
