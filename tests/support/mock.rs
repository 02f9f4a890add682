//! The service against librdkafka's in-process MockCluster: a cluster with the topics of
//! one test, the service started in the background (the same `segstream::service::run`
//! that `main` runs), and clients to feed the inputs and read the outputs.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use segstream::config::Config;
use segstream::service::Background;

use super::{http, unique, Keyed};

/// The in-process cluster.
pub type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A configuration for fresh topics on `brokers`.
pub fn config(brokers: &str, inputs: &[&str], segments: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = unique("group");
    c.kafka.input_topics = inputs.iter().map(|s| s.to_string()).collect();
    c.kafka.output_topic = unique("transitions");
    c.kafka.dead_letter_topic = unique("dead-letters");
    c.kafka.changelog_topic = unique("changelog");
    c.kafka.persons_topic = unique("persons");
    c.kafka.membership_topic = unique("membership");
    c.segments.file = segments.into();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// A mock cluster with an input topic of `partitions` partitions, the output, dead-letter,
/// changelog and persons topics, and a configuration for them. Returns the input topic's name.
pub fn setup(partitions: i32, segments: &str) -> (Cluster, Config, String) {
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
    // The mock cluster does not implement CreateTopics: the internal topics are made here.
    cluster
        .create_topic(&cfg.kafka.changelog_topic, partitions, 1)
        .unwrap();
    cluster
        .create_topic(&cfg.kafka.persons_topic, partitions, 1)
        .unwrap();
    cluster
        .create_topic(&cfg.kafka.membership_topic, partitions, 1)
        .unwrap();
    (cluster, cfg, input)
}

/// Starts the service in the background; panics if it does not serve within 20 s.
pub async fn start(config: Config) -> Background {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Background::start(config, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Stops the service; it must drain and exit cleanly within 30 s.
pub async fn stop(svc: Background) {
    svc.stop(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("clean exit: {e:#}"));
}

/// The service's URL for `path`.
pub fn url(svc: &Background, path: &str) -> String {
    format!("{}{path}", svc.url())
}

/// Polls `/readyz` until it answers `status` (or fails after `secs`).
pub async fn wait_for_readyz(svc: &Background, status: u16, secs: u64) {
    for _ in 0..secs * 10 {
        if http::get(&url(svc, "/readyz"), None).await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}");
}

/// Produces `lines` (key, payload) to `topic`, each acknowledged.
pub async fn produce(brokers: &str, topic: &str, lines: &[Keyed]) {
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

/// A consumer of an output topic that keeps what it read.
pub struct Reader {
    consumer: StreamConsumer,
    pub got: Vec<OwnedMessage>,
}

impl Reader {
    /// Reads `topic` from the beginning.
    pub fn new(brokers: &str, topic: &str) -> Reader {
        Self::with(brokers, topic, &[])
    }

    /// Reads `topic` from the beginning with extra client settings.
    pub fn with(brokers: &str, topic: &str, settings: &[(&str, &str)]) -> Reader {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest");
        for (k, v) in settings {
            c.set(*k, *v);
        }
        let consumer: StreamConsumer = c.create().unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Reader {
            consumer,
            got: Vec::new(),
        }
    }

    /// Reads until `want` messages arrived in all, or `timeout` passed.
    pub async fn until(&mut self, want: usize, timeout: Duration) -> &[OwnedMessage] {
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

    /// The payloads read so far, as text.
    pub fn payloads(&self) -> Vec<String> {
        self.got.iter().map(payload).collect()
    }
}

/// Reads messages from `topic` until `want` arrived or `timeout` passed.
pub async fn read(brokers: &str, topic: &str, want: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let mut r = Reader::new(brokers, topic);
    r.until(want, timeout).await;
    r.got
}

/// A header's value as text.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// A message's payload as text (empty for a tombstone).
pub fn payload(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}
