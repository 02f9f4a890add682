//! Kafka for the benchmarks: the broker (librdkafka's in-process MockCluster, or an
//! existing broker given with `--brokers`), topics, watermarks, a producer that counts
//! failed deliveries, and the service's client configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use segstream::config::KafkaConfig;
use segstream::kafka::{KafkaContext, KafkaState};
use segstream::metrics::Metrics;

use super::unique;

/// MockCluster drops a partition's oldest message sets beyond 5 MB; the benchmarks keep
/// every partition below this.
pub const MOCK_PARTITION_BYTES: usize = 4 << 20;

/// Where the topics live.
pub enum Broker {
    /// In this process; it lives as long as this value, on the thread that created it.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// `bootstrap.servers` of an existing broker; topics are created with the admin API.
    External(String),
}

impl Broker {
    /// The broker at `brokers`, or a fresh one-broker MockCluster.
    pub fn new(brokers: Option<&str>) -> anyhow::Result<Broker> {
        Ok(match brokers {
            Some(b) => Broker::External(b.to_string()),
            None => Broker::Mock(MockCluster::new(1).context("starting the MockCluster")?),
        })
    }

    pub fn is_mock(&self) -> bool {
        matches!(self, Broker::Mock(_))
    }

    /// `bootstrap.servers` for the clients.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(c) => c.bootstrap_servers(),
            Broker::External(b) => b.clone(),
        }
    }

    /// "MockCluster" or "broker HOST:PORT".
    pub fn describe(&self) -> String {
        match self {
            Broker::Mock(_) => "MockCluster".into(),
            Broker::External(b) => format!("broker {b}"),
        }
    }

    /// Creates a topic of `partitions` partitions (replication 1); `compacted` sets
    /// `cleanup.policy=compact` on an existing broker (the MockCluster has no topic
    /// configuration, and no CreateTopics: its topics are made directly).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> anyhow::Result<()> {
        match self {
            Broker::Mock(c) => c
                .create_topic(name, partitions, 1)
                .with_context(|| format!("creating topic {name}"))?,
            Broker::External(b) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", b)
                    .create()
                    .context("creating the admin client")?;
                let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                if compacted {
                    topic = topic.set("cleanup.policy", "compact");
                }
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                for r in admin.create_topics([&topic], &opts).await? {
                    r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// The (low, high) watermarks of partitions `0..partitions` of `topic`.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<(i64, i64)>> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", unique("watermarks"))
            .create()?;
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .with_context(|| format!("watermarks of {topic} [{p}]"))
            })
            .collect()
    }
}

/// The topics of one service instance, named `{prefix}-{tag}-...` plus a random suffix.
pub struct ServiceTopics {
    /// Input topics, co-partitioned.
    pub inputs: Vec<String>,
    pub output: String,
    pub dead: String,
    /// As many partitions as each input topic (the service checks that at start-up).
    pub changelog: String,
    /// The persons topic (`kafka.router`), as many partitions as the changelog.
    pub persons: String,
    /// The current-membership topic (compacted).
    pub membership: String,
}

impl ServiceTopics {
    /// Creates `inputs` input topics of `partitions` partitions, a dead-letter topic of one
    /// partition, and the output, changelog (compacted), persons and membership topics of
    /// `shards` partitions (the service would create the internal ones itself, but the
    /// MockCluster does not implement CreateTopics). Without the router `shards` must be
    /// `partitions` (the service checks the co-partitioning at start-up).
    pub async fn create(
        broker: &Broker,
        prefix: &str,
        inputs: usize,
        partitions: i32,
        shards: i32,
    ) -> anyhow::Result<ServiceTopics> {
        let t = ServiceTopics {
            inputs: (0..inputs)
                .map(|i| unique(&format!("{prefix}-events{i}")))
                .collect(),
            output: unique(&format!("{prefix}-transitions")),
            dead: unique(&format!("{prefix}-dead-letters")),
            changelog: unique(&format!("{prefix}-changelog")),
            persons: unique(&format!("{prefix}-persons")),
            membership: unique(&format!("{prefix}-membership")),
        };
        for input in &t.inputs {
            broker.create_topic(input, partitions, false).await?;
        }
        broker.create_topic(&t.output, shards, false).await?;
        broker.create_topic(&t.dead, 1, false).await?;
        broker.create_topic(&t.changelog, shards, true).await?;
        broker.create_topic(&t.persons, shards, false).await?;
        broker.create_topic(&t.membership, shards, true).await?;
        Ok(t)
    }

    /// Points the service's configuration at these topics.
    pub fn configure(&self, k: &mut KafkaConfig) {
        k.input_topics = self.inputs.clone();
        k.output_topic = self.output.clone();
        k.dead_letter_topic = self.dead.clone();
        k.changelog_topic = self.changelog.clone();
        k.persons_topic = self.persons.clone();
        k.membership_topic = self.membership.clone();
    }
}

// ---- the service's clients ------------------------------------------------------------------

/// The service's Kafka settings for `brokers`, with `librdkafka` settings (`--rdkafka`).
pub fn kafka_config(brokers: &str, librdkafka: &[(String, String)]) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        librdkafka: librdkafka.iter().cloned().collect(),
        ..KafkaConfig::default()
    }
}

/// The service's client context, reporting into `metrics`.
pub fn context(metrics: Arc<Metrics>) -> KafkaContext {
    KafkaContext(Arc::new(KafkaState::new(metrics)))
}

// ---- producing ------------------------------------------------------------------------------

/// Counts failed deliveries (a `DefaultProducerContext` drops them silently).
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The benchmarks' own producer (not the service's).
pub type LoadProducer = ThreadedProducer<Deliveries>;

/// A producer for `brokers` with `settings` on top of librdkafka's defaults.
pub fn producer(brokers: &str, settings: &[(&str, &str)]) -> anyhow::Result<LoadProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create_with_context(Deliveries::default())
        .context("creating the load producer")
}

/// Enqueues `record`, waiting while the producer's queue is full.
pub fn send<K, P>(p: &LoadProducer, mut record: BaseRecord<'_, K, P>) -> anyhow::Result<()>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits (at most `timeout`) for every outstanding delivery; `Err` if any message failed.
pub fn finish(p: &LoadProducer, timeout: Duration) -> anyhow::Result<()> {
    p.flush(timeout)?;
    let failed = p.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = p.context().first_error.lock().ok().and_then(|e| e.clone());
        bail!(
            "{failed} messages were not delivered (first error: {})",
            first.unwrap_or_default()
        );
    }
    Ok(())
}
