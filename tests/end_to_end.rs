//! End to end against a real broker process: tansu (a Kafka-API broker) over TCP, the
//! `segstream` binary as its own process, and an independent client (kafka-python) to
//! produce events and read the topics (see `support::tansu`).

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segstream_core::engine::home;
use segstream_core::engine::EngineConfig;
use support::identity::{
    before, check_reference, committed_up_to, cookie, customer, phases, HOUR, PERSONS, T0,
};
use support::tansu::{base_env, consume, create_topics, free_port, produce, Segstream, Tansu};
use support::{funnel_events_with, replayed, Keyed};

#[test]
fn reference_funnel_end_to_end_with_dead_letters_and_valid_metrics() {
    let tansu = Tansu::start_on(free_port());
    create_topics(&tansu);
    let mut env = base_env(&tansu, "segments/library.toml", "e2e-funnel");
    // Time moves only with event time, as in the replay the result is compared with.
    env.push(("SEGSTREAM__ENGINE__IDLE_LAG", "3650d".to_string()));

    // Expected: the offline replay of the same events.
    let events = std::fs::read_to_string("schemas/examples/events/reference-funnel.jsonl").unwrap();
    let expected = replayed(
        &events,
        Path::new("segments/library.toml"),
        EngineConfig::default(),
    );

    // Three days of history are in the topic when the service starts (a backlog: every
    // partition holds the watermark until it has delivered).
    produce(&tansu.broker(), "events", &events);
    let bad = concat!(
        "this is not json\n",
        r#"{"event_id":"b1","customer_id":"c9","type":"purchase","timestamp":"2026-11-19T10:00:00Z","properties":{"amount":"12","currency":"EUR"}}"#,
        "\n",
        r#"{"event_id":"b2","customer_id":"c9","type":"click"}"#,
        "\n",
    );
    produce(&tansu.broker(), "events", bad);
    let svc = Segstream::start(&env);
    svc.wait_ready(true, Duration::from_secs(60));

    let got = consume(&tansu.broker(), "transitions", expected.len() + 1, 25);
    let got_values: BTreeSet<String> = got
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "exactly the expected transitions, none twice"
    );
    assert_eq!(got_values, expected);
    for m in &got {
        let t: serde_json::Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
        assert_eq!(m["key"], t["customer_id"]);
        assert_eq!(m["headers"]["ce_specversion"], "1.0");
        assert_eq!(m["headers"]["ce_id"], t["transition_id"]);
    }

    let dead = consume(&tansu.broker(), "dead-letters", 3, 30);
    // Unkeyed and keyed bad messages sit in different partitions: compare without order.
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|m| m["headers"]["segstream_reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["invalid_json", "missing_field", "wrong_type"]);
    let not_json = dead
        .iter()
        .find(|m| m["headers"]["segstream_reason"] == "invalid_json")
        .unwrap();
    assert_eq!(
        not_json["value"], "this is not json",
        "the message goes unchanged"
    );
    assert_eq!(not_json["headers"]["segstream_source_topic"], "events");
    assert!(not_json["headers"]["segstream_source_offset"].is_string());

    // The metrics are valid Prometheus text (promtool is installed by scripts/setup.sh).
    let (status, metrics) = svc.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("segstream_transitions_total"), "{metrics}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/setup.sh)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_rfc3339(offset_ms: i64) -> String {
    segstream_core::time::format_rfc3339(segstream::clock::now_millis() + offset_ms)
}

fn click(customer: &str, id: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","type":"ad_click","timestamp":"{}","properties":{{"campaign":"q4"}}}}"#,
        now_rfc3339(0)
    ) + "\n"
}

/// A service restart (SIGTERM: drain, commit, exit 0) between a click and its deadline: the
/// state is rebuilt from the input and the deadline still fires, once.
///
/// The broker restart is tested against MockCluster (`tests/service_mock.rs`): tansu 0.6
/// with in-memory storage loses its topics on restart, and librdkafka crashes on the
/// restarted broker's metadata (SIGSEGV in `rd_kafka_metadata_cache_find`).
#[test]
fn service_restart_loses_no_transition() {
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments.toml");
    std::fs::write(
        &segments,
        "[segments.clicked-but-not-registered]\ncondition = 'ad_click(campaign = \"q4\") then no webinar_registered within 8s'\n",
    )
    .unwrap();
    let tansu = Tansu::start_on(free_port());
    create_topics(&tansu);
    let env = base_env(&tansu, segments.to_str().unwrap(), "e2e-restart");
    let mut svc = Segstream::start(&env);
    svc.wait_ready(true, Duration::from_secs(60));

    // c1's deadline passes while the service runs.
    produce(&tansu.broker(), "events", &click("c1", "k1"));
    let got = consume(&tansu.broker(), "transitions", 1, 30);
    assert_eq!(got.len(), 1);

    // c2 clicks; the service is restarted before c2's deadline.
    produce(&tansu.broker(), "events", &click("c2", "k2"));
    std::thread::sleep(Duration::from_secs(2));
    svc.terminate();
    let svc = Segstream::start(&env);
    svc.wait_ready(true, Duration::from_secs(60));
    let got = consume(&tansu.broker(), "transitions", 4, 30);
    // At-least-once: c1's timer may be produced again after the restart (its deadline was
    // already past when the state was rebuilt), but with the same idempotency key.
    let mut seen: Vec<(String, String)> = Vec::new();
    for m in &got {
        let t: serde_json::Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
        let entry = (
            t["customer_id"].as_str().unwrap().to_string(),
            m["value"].as_str().unwrap().to_string(),
        );
        match seen.iter().find(|(c, _)| *c == entry.0) {
            Some((_, v)) => assert_eq!(v, &entry.1, "a duplicate is the same transition, same key"),
            None => seen.push(entry),
        }
    }
    let customers: Vec<&str> = seen.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        customers,
        ["c1", "c2"],
        "c1 before, c2's deadline after the restart: none lost, none invented"
    );

    // SIGHUP reloads the definitions: an invalid file is rejected (the running set stays),
    // a valid one is taken.
    std::fs::write(
        &segments,
        "[segments.broken]\ncondition = 'count(page_view) >= 1'\n",
    )
    .unwrap();
    svc.signal("-HUP");
    let reloads = |outcome: &str| {
        svc.metric(&format!(
            "segstream_segment_reloads_total{{outcome=\"{outcome}\"}}"
        ))
    };
    let start = Instant::now();
    while reloads("rejected").as_deref() != Some("1") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bad reload is counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(
        &segments,
        "[segments.clicked-but-not-registered]\ncondition = 'ad_click(campaign = \"q4\") then no webinar_registered within 8s'\n[segments.clicker]\ncondition = 'count(ad_click, 1d) >= 1'\n",
    )
    .unwrap();
    svc.signal("-HUP");
    let start = Instant::now();
    while reloads("ok").as_deref() != Some("1") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the good reload is counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = svc.get("/segments");
    assert_eq!(status, 200);
    assert!(body.contains("\"clicker\""), "{body}");
    drop(svc);
}

/// Reads the whole topic again and again until every `expected` value is there and nothing
/// new arrives; returns every message read (duplicates included).
fn consume_until_complete(
    broker: &str,
    topic: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    let mut last = 0;
    loop {
        let got = consume(broker, topic, expected.len() * 3, 8);
        let values: BTreeSet<String> = got
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect();
        if values.is_superset(expected) && got.len() == last {
            return got;
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?}, {} of {} expected transitions (missing e.g. {:?})",
            expected.intersection(&values).count(),
            expected.len(),
            expected.difference(&values).next()
        );
        last = got.len();
    }
}

/// Every transition read is one of `expected` (none invented), keyed by its customer id;
/// every expected one arrived; a duplicate is an exact copy (same transition_id, same value).
fn assert_exactly(got: &[serde_json::Value], expected: &BTreeSet<String>) {
    let mut by_id: std::collections::HashMap<String, BTreeSet<String>> = Default::default();
    for m in got {
        let v = m["value"].as_str().unwrap().to_string();
        assert!(
            expected.contains(&v),
            "invented: {v} (not in the single-instance run)"
        );
        let t: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(m["key"], t["customer_id"]);
        by_id
            .entry(t["transition_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(v);
    }
    assert_eq!(by_id.len(), expected.len());
    assert!(
        by_id.values().all(|s| s.len() == 1),
        "a duplicate is an exact copy"
    );
}

/// Real processes, real broker: two instances share the input; one is killed with SIGKILL
/// mid-stream (no shutdown, no flush, no commit), a third one joins. Every transition of
/// the single-instance run of the same events arrives, none is invented, and duplicates are
/// exact copies with the same key.
#[test]
fn kill_9_and_scale_out_lose_and_invent_nothing() {
    let tansu = Tansu::start_on(free_port());
    create_topics(&tansu);
    let mut env = base_env(&tansu, "segments/library.toml", "e2e-kill");
    env.push(("SEGSTREAM__ENGINE__IDLE_LAG", "3650d".to_string()));
    env.push(("SEGSTREAM__KAFKA__BATCH_SIZE", "50".to_string()));

    // Every customer known from the start (see `support::known_funnel`).
    let events = funnel_events_with(300, 7, 0.0);
    let expected = replayed(
        &events,
        Path::new("segments/library.toml"),
        EngineConfig {
            idle_lag: 10 * 365 * 86_400_000,
            ..Default::default()
        },
    );
    assert!(expected.len() > 100, "{}", expected.len());
    let lines: Vec<&str> = events.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);

    let mut a = Segstream::start(&env);
    let b = Segstream::start(&env);
    produce(&tansu.broker(), "events", &first.join("\n"));
    // Wait until A is mid-stream: some transitions are out.
    let start = Instant::now();
    while consume(&tansu.broker(), "transitions", expected.len() / 5, 5).len() < expected.len() / 5
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "processing started"
        );
    }
    a.signal("-KILL");
    let _ = a.child.take().unwrap().wait();
    let c = Segstream::start(&env);
    produce(&tansu.broker(), "events", &second.join("\n"));

    let got = consume_until_complete(
        &tansu.broker(),
        "transitions",
        &expected,
        Duration::from_secs(180),
    );
    assert_exactly(&got, &expected);
    eprintln!(
        "kill -9: {} transitions expected, {} read ({} duplicates)",
        expected.len(),
        got.len(),
        got.len() - expected.len()
    );
    let dead = consume(&tansu.broker(), "dead-letters", 1, 3);
    assert!(dead.is_empty(), "nothing late or invalid: {dead:?}");

    // The membership topic, read from the start by kafka-python and folded by key (what
    // compaction keeps), is exactly the audience the transitions give, kill -9 and all.
    let members = support::members_of(&expected);
    let records = consume(
        &tansu.broker(),
        "segstream-membership",
        expected.len() * 3,
        15,
    );
    assert!(
        records.len() >= expected.len(),
        "one record per transition at least"
    );
    let mut folded: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        match r["value"].as_str() {
            Some(v) => {
                folded.insert(key, serde_json::from_str(v).unwrap());
            }
            None => {
                folded.remove(&key);
            }
        }
    }
    assert_eq!(
        folded.keys().collect::<Vec<_>>(),
        members.keys().collect::<Vec<_>>()
    );
    for (key, (since, _)) in &members {
        assert_eq!(folded[key]["since"].as_str(), Some(since.as_str()), "{key}");
    }
    eprintln!(
        "membership topic: {} records, {} members",
        records.len(),
        folded.len()
    );
    drop(b);
    drop(c);
}

/// Waits until the processes have routed and applied everything produced so far and no
/// merge is pending (see `tests/identity.rs`), reading the metrics over HTTP.
fn drained(tansu: &Tansu, group: &str, instances: &[&Segstream]) {
    let start = Instant::now();
    let broker = tansu.broker();
    let router = format!("{group}-router");
    let wait = || {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not drained after 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    loop {
        wait();
        if !committed_up_to(&broker, &router, "events", None).0 {
            continue;
        }
        let (_, ends) = committed_up_to(&broker, group, "segstream-persons", None);
        while !committed_up_to(&broker, group, "segstream-persons", Some(&ends)).0 {
            wait();
        }
        let quiet = instances.iter().all(|s| {
            s.metric("segstream_identity_waiting_persons ").as_deref() == Some("0")
                && s.metric("segstream_identity_held_events ").as_deref() == Some("0")
        });
        if quiet {
            return;
        }
    }
}

/// Identity end to end: two segstream processes against tansu, events produced by
/// kafka-python keyed by whatever id they carry (the cookie's and the customer id's homes
/// differ for most persons). One process gets SIGKILL while persons wait for merges, a
/// third joins. The transitions equal the single-process replay of the same events:
/// nothing lost, nothing invented, duplicates are exact copies.
#[test]
fn anonymous_visitors_linked_across_processes_through_kill_9_give_the_replay_transitions() {
    let tansu = Tansu::start_on(free_port());
    create_topics(&tansu);
    let group = "e2e-identity";
    let mut env = base_env(&tansu, "segments/library.toml", group);
    env.push(("SEGSTREAM__ENGINE__IDLE_LAG", "3650d".to_string()));
    env.push(("SEGSTREAM__KAFKA__BATCH_SIZE", "20".to_string()));

    let phases = phases();
    let text = |p: &[Keyed]| -> String {
        p.iter()
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap() + "\n")
            .collect()
    };
    let all: String = phases.iter().map(|p| text(p)).collect();
    let expected = replayed(
        &all,
        Path::new("segments/library.toml"),
        EngineConfig {
            idle_lag: 10 * 365 * 86_400_000,
            ..Default::default()
        },
    );
    check_reference(&expected);
    let split = (0..PERSONS)
        .filter(|&i| home(&cookie(i), 3) != home(&customer(i), 3))
        .count();
    assert!(
        split > PERSONS / 2,
        "{split} persons start on two partitions"
    );

    let mut a = Segstream::start(&env);
    let b = Segstream::start(&env);
    a.wait_ready(true, Duration::from_secs(60));
    b.wait_ready(true, Duration::from_secs(60));
    let broker = tansu.broker();
    produce(&broker, "events", &text(&phases[0]));
    consume_until_complete(
        &broker,
        "transitions",
        &before(&expected, T0 + 2 * HOUR),
        Duration::from_secs(120),
    );
    drained(&tansu, group, &[&a, &b]);
    produce(&broker, "events", &text(&phases[1]));
    // SIGKILL A while persons wait for merges (or once the links are through).
    let waiting = |s: &Segstream| {
        s.metric("segstream_identity_waiting_persons ")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let start = Instant::now();
    let mut merging = 0.0;
    while start.elapsed() < Duration::from_secs(5) {
        merging = waiting(&a) + waiting(&b);
        if merging > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    a.signal("-KILL");
    let _ = a.child.take().unwrap().wait();
    let c = Segstream::start(&env);
    drained(&tansu, group, &[&b, &c]);
    produce(&broker, "events", &text(&phases[2]));
    consume_until_complete(
        &broker,
        "transitions",
        &before(&expected, T0 + 31 * HOUR),
        Duration::from_secs(120),
    );
    produce(&broker, "events", &text(&phases[3]));
    consume_until_complete(
        &broker,
        "transitions",
        &before(&expected, T0 + 60 * HOUR),
        Duration::from_secs(120),
    );
    drained(&tansu, group, &[&b, &c]);
    produce(&broker, "events", &text(&phases[4]));
    let got = consume_until_complete(&broker, "transitions", &expected, Duration::from_secs(120));
    assert_exactly(&got, &expected);
    eprintln!(
        "identity kill -9: {merging} persons waiting for a merge at the kill; {} transitions expected, {} read",
        expected.len(),
        got.len()
    );
    let dead = consume(&broker, "dead-letters", 1, 3);
    assert!(dead.is_empty(), "nothing late or invalid: {dead:?}");
    drop(b);
    drop(c);
}
