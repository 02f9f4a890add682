//! The service against librdkafka's in-process MockCluster: the live path gives the same
//! transitions as the offline replay, bad input goes to the dead-letter topic with its
//! reason, the HTTP API and metrics work, reloads and restarts behave.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use segstream::config::Config;
use segstream::service::{self, Running};
use tokio_util::sync::CancellationToken;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u64(..))
}

/// A running service on a mock cluster; dropping the handle does not stop it: call `stop`.
struct Service {
    running: Running,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    async fn start(config: Config) -> Service {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stop.clone();
        let task = tokio::spawn(service::run(
            config,
            async move { s.cancelled().await },
            Some(tx),
        ));
        let running = match tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("service starts in time")
        {
            Ok(r) => r,
            Err(_) => panic!("service failed to start: {:?}", task.await),
        };
        Service {
            running,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("service stops in time")
            .expect("no panic")
            .expect("clean exit");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.http_addr)
    }
}

fn config(brokers: &str, inputs: &[&str], segments: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = unique("group");
    c.kafka.input_topics = inputs.iter().map(|s| s.to_string()).collect();
    c.kafka.output_topic = unique("transitions");
    c.kafka.dead_letter_topic = unique("dead-letters");
    c.kafka.changelog_topic = unique("changelog");
    c.segments.file = segments.into();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// A mock cluster with an input topic of `partitions` partitions, the output and the
/// dead-letter topic, and a configuration for them.
fn setup(
    partitions: i32,
    segments: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Config,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    let input = unique("events");
    cluster.create_topic(&input, partitions, 1).unwrap();
    let cfg = config(&cluster.bootstrap_servers(), &[&input], segments);
    cluster
        .create_topic(&cfg.kafka.output_topic, partitions, 1)
        .unwrap();
    cluster
        .create_topic(&cfg.kafka.dead_letter_topic, 1, 1)
        .unwrap();
    // The mock cluster does not implement CreateTopics: the changelog is made here.
    cluster
        .create_topic(&cfg.kafka.changelog_topic, partitions, 1)
        .unwrap();
    (cluster, cfg, input)
}

/// Polls `/readyz` until it answers `status` (or fails after 20 s).
async fn wait_for_readyz(svc: &Service, status: u16) {
    wait_for_readyz_within(svc, status, 20).await;
}

/// Polls `/readyz` until it answers `status` (or fails after `secs`).
async fn wait_for_readyz_within(svc: &Service, status: u16, secs: u64) {
    for _ in 0..secs * 10 {
        if reqwest_get(&svc.url("/readyz"), None).await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}");
}

async fn produce(brokers: &str, topic: &str, lines: &[(Option<String>, Vec<u8>)]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in lines {
        let mut r = FutureRecord::to(topic).payload(&payload[..]);
        if let Some(k) = key {
            r = r.key(k.as_bytes());
        }
        p.send(r, Duration::from_secs(5)).await.expect("produced");
    }
}

fn key_of(line: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["customer_id"].as_str().map(String::from))
}

/// A message to produce: key and payload.
type Keyed = (Option<String>, Vec<u8>);

/// Four days of the simulated funnel for `customers` (seeded), as keyed messages, and the
/// transitions of its single-instance (offline replay) run under `cfg`'s engine settings.
fn funnel(customers: usize, seed: u64, cfg: &Config) -> (Vec<Keyed>, BTreeSet<String>) {
    let funnel = segstream::generator::FunnelConfig {
        customers,
        days: 4,
        seed,
        ..Default::default()
    };
    // Closing ticks: every partition's event time passes the end, as the replay's does.
    let events: String = segstream::generator::generate(&funnel)
        .into_iter()
        .chain(segstream::generator::closing_ticks(&funnel, 40))
        .map(|e| format!("{}\n", e.json))
        .collect();
    let text = std::fs::read_to_string(&cfg.segments.file).unwrap();
    let mut engine = segstream_core::engine::Engine::from_source(
        &cfg.segments.file.display().to_string(),
        &text,
        cfg.engine.clone(),
    )
    .unwrap();
    let mut out = Vec::new();
    segstream::replay::replay(&mut engine, events.as_bytes(), &mut out, None).unwrap();
    let expected: BTreeSet<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(
        expected.len() > 100,
        "a stream worth splitting: {}",
        expected.len()
    );
    let lines = events
        .lines()
        .map(|l| (key_of(l), l.as_bytes().to_vec()))
        .collect();
    (lines, expected)
}

/// A consumer of an output topic that keeps what it read.
struct Reader {
    consumer: StreamConsumer,
    got: Vec<rdkafka::message::OwnedMessage>,
}

impl Reader {
    fn new(brokers: &str, topic: &str) -> Reader {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Reader {
            consumer,
            got: Vec::new(),
        }
    }

    /// Reads until `want` messages arrived in all, or `timeout` passed.
    async fn until(&mut self, want: usize, timeout: Duration) -> &[rdkafka::message::OwnedMessage] {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.got.len() < want {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => self.got.push(m.detach()),
                Ok(Err(e)) => panic!("reading: {e}"),
                Err(_) => break,
            }
        }
        &self.got
    }
}

/// Reads messages from `topic` until `want` arrived or `timeout` passed.
async fn read(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let mut r = Reader::new(brokers, topic);
    r.until(want, timeout).await;
    r.got
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_path_equals_offline_replay_for_the_reference_funnel() {
    let (_cluster, mut cfg, input) = setup(3, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    // Time moves only with event time here, exactly as in the replay.
    cfg.engine.idle_lag = 10 * 365 * 86_400_000;

    // The expected transitions: the offline replay of the same file.
    let text = std::fs::read_to_string("segments/library.toml").unwrap();
    let mut engine = segstream_core::engine::Engine::from_source(
        "segments/library.toml",
        &text,
        cfg.engine.clone(),
    )
    .unwrap();
    let events = std::fs::read_to_string("schemas/examples/events/reference-funnel.jsonl").unwrap();
    let mut expected_out = Vec::new();
    let summary =
        segstream::replay::replay(&mut engine, events.as_bytes(), &mut expected_out, None).unwrap();
    let expected: BTreeSet<String> = String::from_utf8(expected_out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(!expected.is_empty());

    // Three days of history wait in the topic when the service starts (a backlog: every
    // partition holds the watermark back until it has delivered). See README, "Time", for
    // history dumped on a partition that has been idle.
    let lines: Vec<(Option<String>, Vec<u8>)> = events
        .lines()
        .map(|l| (key_of(l), l.as_bytes().to_vec()))
        .collect();
    produce(&brokers, &input, &lines).await;
    let svc = Service::start(cfg.clone()).await;
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
    assert_eq!(summary.transitions as usize, expected.len());
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
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_goes_to_the_dead_letter_topic_with_its_reason() {
    let (_cluster, mut cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    cfg.kafka.max_message_bytes = 2000;
    let svc = Service::start(cfg.clone()).await;
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
    let metrics = reqwest_get(&svc.url("/metrics"), None).await.1;
    assert!(
        metrics.contains(r#"segstream_dead_letters_total{reason="invalid_json"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"segstream_dead_letters_total{reason="too_large"} 1"#));
    svc.stop().await;
}

/// A tiny HTTP client (the test needs nothing more): (status, body).
async fn reqwest_get(url: &str, token: Option<&str>) -> (u16, String) {
    http_request("GET", url, token).await
}

async fn http_request(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    // A service that stopped answering fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), http_exchange(method, url, token))
        .await
        .unwrap_or_else(|_| panic!("no HTTP answer from {url} within 30 s"))
}

async fn http_exchange(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_health_profiles_with_token_segments_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("segments.toml");
    std::fs::write(
        &defs,
        "[segments.dach]\ncondition = 'trait.country = \"DE\"'\n",
    )
    .unwrap();
    let (_cluster, mut cfg, input) = setup(2, defs.to_str().unwrap());
    let brokers = cfg.kafka.brokers.clone();
    cfg.http.token = Some("0123456789abcdef-token".into());
    let svc = Service::start(cfg.clone()).await;
    let token = cfg.http.token.as_deref();

    assert_eq!(reqwest_get(&svc.url("/healthz"), None).await.0, 200);
    // Ready once partitions are assigned and the input is caught up.
    wait_for_readyz(&svc, 200).await;

    produce(&brokers, &input, &[(Some("c1".into()), br#"{"event_id":"a","customer_id":"c1","type":"identify","timestamp":"2026-11-22T10:00:00Z","traits":{"country":"DE"}}"#.to_vec())]).await;
    assert_eq!(
        read(
            &brokers,
            &cfg.kafka.output_topic,
            1,
            Duration::from_secs(30)
        )
        .await
        .len(),
        1
    );

    // The profile API needs the token; metrics and health do not.
    assert_eq!(reqwest_get(&svc.url("/profiles/c1"), None).await.0, 401);
    assert_eq!(
        reqwest_get(&svc.url("/profiles/c1"), Some("wrong-token-0000000000"))
            .await
            .0,
        401
    );
    let (status, body) = reqwest_get(&svc.url("/profiles/c1"), token).await;
    assert_eq!(status, 200);
    let profile: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(profile["segments"], serde_json::json!(["dach"]));
    assert_eq!(profile["traits"]["country"], "DE");
    assert_eq!(
        reqwest_get(&svc.url("/profiles/nobody"), token).await.0,
        404
    );
    let (status, body) = reqwest_get(&svc.url("/segments"), token).await;
    assert_eq!(status, 200);
    let segs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(segs["segments"][0]["population"], 1);

    // An invalid file is rejected and the running set stays.
    std::fs::write(&defs, "[segments.dach]\ncondition = 'trait.country ='\n").unwrap();
    let (status, body) = http_request("POST", &svc.url("/segments/reload"), token).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("segments.toml:2:"), "{body}");
    // A valid one takes effect, with its transitions.
    std::fs::write(&defs, "[segments.dach]\ncondition = 'trait.country = \"DE\"'\n[segments.not-dach]\ncondition = 'not in_segment(\"dach\")'\n[segments.german]\ncondition = 'trait.country in [\"DE\", \"AT\"]'\n").unwrap();
    let (status, body) = http_request("POST", &svc.url("/segments/reload"), token).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["added"], serde_json::json!(["not-dach", "german"]));
    let out = read(
        &brokers,
        &cfg.kafka.output_topic,
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.len(), 2, "dach (before) and german (reload)");
    let metrics = reqwest_get(&svc.url("/metrics"), None).await.1;
    assert!(
        metrics.contains(r#"segstream_segment_reloads_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"segstream_segment_reloads_total{outcome="rejected"} 1"#));
    svc.stop().await;
}

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
    let svc = Service::start(cfg.clone()).await;
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
    svc.stop().await;

    // Same group: the committed offsets hold and the profiles are rebuilt from the input.
    let svc = Service::start(cfg.clone()).await;
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
    svc.stop().await;
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
    let svc = Service::start(cfg.clone()).await;
    wait_for_readyz(&svc, 200).await;
    let now = { segstream::clock::now_millis() };
    let click = format!(
        r#"{{"event_id":"k1","customer_id":"c1","type":"ad_click","timestamp":"{}","properties":{{"campaign":"q4"}}}}"#,
        segstream_core::time::format_rfc3339(now)
    );
    produce(&brokers, &input, &[(Some("c1".into()), click.into_bytes())]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The broker goes down; the deadline passes during the outage.
    cluster.broker_down(1).unwrap();
    wait_for_readyz(&svc, 503).await;
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
    wait_for_readyz_within(&svc, 200, 60).await;
    svc.stop().await;
}

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
    let (lines, expected) = funnel(400, 42, &cfg);
    let (first, second) = lines.split_at(lines.len() / 2);

    let a = Service::start(cfg.clone()).await;
    let b = Service::start(cfg.clone()).await;
    produce(&brokers, &input, first).await;
    let mut reader = Reader::new(&brokers, &cfg.kafka.output_topic);
    reader
        .until(expected.len() / 4, Duration::from_secs(30))
        .await;
    // Crash A: its task is dropped where it stands.
    a.task.abort();
    let c = Service::start(cfg.clone()).await;
    produce(&brokers, &input, second).await;
    // Every expected transition arrives (duplicates allowed), then nothing new.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let n = reader.got.len();
        reader.until(n + 1, Duration::from_secs(3)).await;
        let got: BTreeSet<String> = reader
            .got
            .iter()
            .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
            .collect();
        if got.is_superset(&expected) && reader.got.len() == n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing after 90 s: {:#?}",
            expected.difference(&got).take(10).collect::<Vec<_>>()
        );
    }
    let got: BTreeSet<String> = reader
        .got
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(
        got,
        expected,
        "invented: {:#?}",
        got.difference(&expected).collect::<Vec<_>>()
    );
    // Duplicates are exact copies: one payload per transition_id.
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
    let dead = read(
        &brokers,
        &cfg.kafka.dead_letter_topic,
        1,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing is late after the moves");
    b.stop().await;
    c.stop().await;
}

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

    let (lines, expected) = funnel(300, 11, &cfg);
    let (first, second) = lines.split_at(lines.len() / 2);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[&cfg.kafka.output_topic]).unwrap();
    let mut reader = Reader {
        consumer,
        got: Vec::new(),
    };

    let a = Service::start(cfg.clone()).await;
    produce(&brokers, &input, first).await;
    reader
        .until(expected.len() / 5, Duration::from_secs(30))
        .await;
    a.task.abort();
    let b = Service::start(cfg.clone()).await;
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
    b.stop().await;
}

/// The partitioning contract is checked at start-up, every violation listed: input topics
/// with different partition counts, a changelog with another count than the inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_inputs_that_are_not_co_partitioned() {
    let (cluster, mut cfg, input) = setup(2, "segments/library.toml");
    let other = unique("other");
    cluster.create_topic(&other, 3, 1).unwrap();
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
    let err = service::run(cfg, std::future::pending(), None)
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "changelog topic `{changelog}` has 5 partitions; the input topics have 2"
        )),
        "{msg}"
    );
}

/// The changelog: one record per customer a batch changed, a tombstone when the customer is
/// forgotten, and a position marker per partition after each batch's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changelog_holds_records_tombstones_and_position_markers() {
    let (_cluster, cfg, input) = setup(1, "segments/library.toml");
    let brokers = cfg.kafka.brokers.clone();
    let svc = Service::start(cfg.clone()).await;
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
    let marker = service::POSITION_KEY.to_string();
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
    let pos: service::Position = serde_json::from_slice(got[3].payload().unwrap()).unwrap();
    assert_eq!(
        pos.inputs.get(&input).map(|p| p.0),
        Some(2),
        "two input messages applied"
    );
    svc.stop().await;
}
