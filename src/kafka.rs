//! Kafka adapters: client construction, the client context (statistics and rebalances into
//! metrics), outgoing records (transitions with CloudEvents headers, dead letters with their
//! reason), and producing a set of records until every one is acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use segstream_core::time::format_rfc3339;
use segstream_core::transition::Transition;

/// State the Kafka callbacks update.
pub struct KafkaState {
    pub metrics: Arc<Metrics>,
    /// Partitions currently assigned to this instance.
    pub assigned: AtomicUsize,
    /// Set on every assignment change; the service clears it when it has looked.
    pub assignment_changed: AtomicBool,
    /// The assigned (topic, partition)s, as the rebalance callbacks listed them.
    pub owned: std::sync::Mutex<std::collections::HashSet<(String, i32)>>,
    /// When librdkafka last reported a client-level error (broker down, transport), in
    /// Unix milliseconds; 0 = never.
    pub last_error_ms: std::sync::atomic::AtomicI64,
}

impl KafkaState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        KafkaState {
            metrics,
            assigned: AtomicUsize::new(0),
            assignment_changed: AtomicBool::new(false),
            owned: Default::default(),
            last_error_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Whether the brokers have been healthy for the last `window_ms`.
    pub fn healthy(&self, window_ms: i64) -> bool {
        let last = self.last_error_ms.load(Ordering::SeqCst);
        last == 0 || crate::clock::now_millis() - last > window_ms
    }
}

/// The client context shared by consumer and producer.
#[derive(Clone)]
pub struct Context(pub Arc<KafkaState>);

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .last_error_ms
            .store(crate::clock::now_millis(), Ordering::SeqCst);
        warn!(%error, reason, "kafka client error");
    }

    fn stats(&self, stats: Statistics) {
        let lag = &self.0.metrics.consumer_lag;
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if p.partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                lag.with_label_values(&[topic.as_str(), &id.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let kind = match rebalance {
            Rebalance::Assign(_) => "assign",
            Rebalance::Revoke(_) => "revoke",
            Rebalance::Error(_) => "error",
        };
        self.0.metrics.rebalances.with_label_values(&[kind]).inc();
        if let Rebalance::Revoke(tpl) = rebalance {
            // Lag series of partitions this instance no longer owns would go stale.
            for e in tpl.elements() {
                let _ = self
                    .0
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[e.topic(), &e.partition().to_string()]);
            }
        }
        info!(kind, "rebalance");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Counted from the lists themselves: asking the consumer for its assignment here
        // deadlocks when the rebalance runs inside the consumer's close.
        let n = {
            let mut owned = self
                .0
                .owned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match rebalance {
                Rebalance::Assign(tpl) => {
                    for e in tpl.elements() {
                        owned.insert((e.topic().to_string(), e.partition()));
                    }
                }
                Rebalance::Revoke(tpl) => {
                    for e in tpl.elements() {
                        owned.remove(&(e.topic().to_string(), e.partition()));
                    }
                }
                Rebalance::Error(_) => {}
            }
            owned.len()
        };
        self.0.assigned.store(n, Ordering::SeqCst);
        self.0.assignment_changed.store(true, Ordering::SeqCst);
        info!(partitions = n, "assignment");
    }
}

fn base_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("statistics.interval.ms", "5000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000");
    for (key, value) in &k.librdkafka {
        c.set(key, value);
    }
    c
}

/// The consumer settings for at-least-once processing: offsets are stored by the service
/// only after everything an input message caused has been acknowledged, and auto-committed
/// from there (the pattern of rust-rdkafka's `at_least_once` example). `librdkafka`
/// passthrough settings win, except the group.
pub fn consumer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", assignment_strategy(k))
        .set("max.poll.interval.ms", "600000")
        // Answer a fetch as soon as there is data or after 10 ms: the default 500 ms is the
        // latency floor with brokers that hold empty fetches that long.
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "10000")
        // Never read what an aborted transaction wrote (the changelog with exactly-once).
        .set("isolation.level", "read_committed");
    if k.exactly_once {
        // Offsets go into each batch's transaction instead.
        c.set("enable.auto.commit", "false");
    }
    let mut base = base_config(k);
    for (key, value) in c.config_map() {
        if !k.librdkafka.contains_key(key) || key == "group.id" {
            base.set(key, value);
        }
    }
    base
}

/// The producer's `transactional.id` (see `KafkaConfig::transactional_id`).
pub fn transactional_id(k: &KafkaConfig) -> String {
    k.transactional_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{}-{}", k.group_id, host.trim())
    })
}

/// Cooperative-sticky for one input topic: a rebalance moves only the partitions that
/// change owner and the others keep running. With several input topics, `range`: it is the
/// assignor that gives partition N of every co-partitioned topic to the same instance (the
/// customer's events of all topics must meet in one profile); its rebalances are eager, but
/// partitions that come back to the same instance keep their state.
pub fn assignment_strategy(k: &KafkaConfig) -> &'static str {
    if k.input_topics.len() > 1 {
        "range"
    } else {
        "cooperative-sticky"
    }
}

/// The changelog reader: the consumer's settings without group commits, and a deep
/// prefetch (up to 1 M messages / 1 GiB queued, 100 MB per fetch) so that the broker keeps
/// delivering while the engine decodes (the default refills too late: restores ran at half
/// the speed).
pub fn restorer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = consumer_config(k);
    c.set("enable.auto.commit", "false");
    for (key, value) in [
        ("queued.min.messages", "1000000"),
        ("queued.max.messages.kbytes", "1048576"),
        ("fetch.max.bytes", "104857600"),
    ] {
        if !k.librdkafka.contains_key(key) {
            c.set(key, value);
        }
    }
    c
}

/// The service's consumer (see [`consumer_config`]).
pub fn consumer(k: &KafkaConfig, ctx: Context) -> Result<StreamConsumer<Context>, KafkaError> {
    consumer_config(k).create_with_context(ctx)
}

/// A producer that waits for all in-sync replicas and keeps per-partition order with one
/// request in flight per connection. Not the idempotent producer: its producer-id state does
/// not survive a broker that lost it (seen with tansu's in-memory storage), and a retried
/// duplicate is recognised by its idempotency key anyway. No compression by default, so
/// that every client can read the topics (set `compression.type` through `librdkafka`).
pub fn producer(k: &KafkaConfig, ctx: Context) -> Result<FutureProducer<Context>, KafkaError> {
    let mut base = base_config(k);
    for (key, value) in [
        ("acks", "all"),
        ("max.in.flight.requests.per.connection", "1"),
        ("linger.ms", "0"),
        ("message.timeout.ms", "30000"),
    ] {
        if !k.librdkafka.contains_key(key) {
            base.set(key, value);
        }
    }
    if k.exactly_once {
        base.set("transactional.id", transactional_id(k));
        if !k.librdkafka.contains_key("transaction.timeout.ms") {
            // Bounds how long a crashed instance's open transaction holds readers back.
            base.set("transaction.timeout.ms", "10000");
            if !k.librdkafka.contains_key("message.timeout.ms") {
                base.set("message.timeout.ms", "10000");
            }
        }
        // Idempotence (implied by transactions) allows up to 5 requests in flight.
        if !k
            .librdkafka
            .contains_key("max.in.flight.requests.per.connection")
        {
            base.set("max.in.flight.requests.per.connection", "5");
        }
    }
    base.create_with_context(ctx)
}

/// A record to produce, owned so that it can be sent again after a failure.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    /// An explicit partition (changelog records go to their input partition's number).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// For the latency histogram: the event time (or deadline) the record reports on.
    pub event_time: Option<i64>,
    /// For the transition counters.
    pub transition: Option<(Arc<str>, &'static str)>,
}

impl Outgoing {
    /// A transition, keyed by customer id, with CloudEvents 1.0 binary-mode headers.
    pub fn transition(t: &Transition, topic: &str, source: &str) -> Self {
        let payload = serde_json::to_vec(t).unwrap_or_default();
        let ce_type = match t.direction {
            segstream_core::transition::Direction::Entered => "segstream.segment.entered",
            segstream_core::transition::Direction::Exited => "segstream.segment.exited",
        };
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: Some(t.customer_id.as_bytes().to_vec()),
            payload: Some(payload),
            headers: vec![
                ("ce_specversion", b"1.0".to_vec()),
                ("ce_id", t.transition_id.as_bytes().to_vec()),
                ("ce_source", source.as_bytes().to_vec()),
                ("ce_type", ce_type.as_bytes().to_vec()),
                ("ce_time", format_rfc3339(t.timestamp).into_bytes()),
                (
                    "ce_subject",
                    format!("{}/{}", t.customer_id, t.segment).into_bytes(),
                ),
                ("content-type", b"application/json".to_vec()),
                ("segstream_segment", t.segment.as_bytes().to_vec()),
                ("segstream_rule_version", t.rule_version.as_bytes().to_vec()),
            ],
            event_time: Some(t.timestamp),
            transition: Some((t.segment.clone(), t.direction.as_str())),
        }
    }

    /// A dead letter: the original message unchanged, the reason and origin in headers.
    #[allow(clippy::too_many_arguments)]
    pub fn dead_letter(
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        detail: &str,
        source_topic: &str,
        partition: i32,
        offset: i64,
    ) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: key.map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            headers: vec![
                ("segstream_reason", reason.as_bytes().to_vec()),
                ("segstream_detail", detail.as_bytes().to_vec()),
                ("segstream_source_topic", source_topic.as_bytes().to_vec()),
                (
                    "segstream_source_partition",
                    partition.to_string().into_bytes(),
                ),
                ("segstream_source_offset", offset.to_string().into_bytes()),
            ],
            event_time: None,
            transition: None,
        }
    }

    /// A changelog entry: the customer's record (or tombstone) in the partition numbered
    /// like the input partition its events arrive on.
    pub fn changelog(topic: &str, change: &segstream_core::engine::StateChange) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: Some(i32::from(change.shard)),
            key: Some(change.customer_id.as_bytes().to_vec()),
            payload: change.record.clone(),
            headers: Vec::new(),
            event_time: None,
            transition: None,
        }
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut r = FutureRecord::to(&self.topic);
        if !self.headers.is_empty() {
            r = r.headers(headers);
        }
        if let Some(p) = &self.payload {
            r = r.payload(&p[..]);
        }
        if let Some(k) = &self.key {
            r = r.key(&k[..]);
        }
        if let Some(p) = self.partition {
            r = r.partition(p);
        }
        r
    }
}

/// Produces every record and waits until each is acknowledged, re-sending failures with
/// backoff (up to 5 s between rounds): it returns only when all are delivered, or on an
/// error that retrying cannot fix (an invalid record). A shutdown during a broker outage
/// ends by the shutdown deadline.
pub async fn produce_all(
    producer: &FutureProducer<Context>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    produce(producer, records, metrics, true).await
}

/// Produces `records` once and waits for every acknowledgement; the first failed delivery
/// is the error (inside a transaction, which then has to be aborted: no retry).
pub async fn produce_once(
    producer: &FutureProducer<Context>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    produce(producer, records, metrics, false).await
}

async fn produce(
    producer: &FutureProducer<Context>,
    records: &[Outgoing],
    metrics: &Metrics,
    retry: bool,
) -> Result<(), KafkaError> {
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let mut in_flight: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(pending.len());
        for &i in &pending {
            loop {
                match producer.send_result(records[i].record()) {
                    Ok(f) => {
                        in_flight.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(10));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let mut failed = Vec::new();
        for (i, f) in in_flight {
            match f.await {
                Ok(Ok(_)) => {
                    let r = &records[i];
                    if let Some(t) = r.event_time {
                        let lag = (crate::clock::now_millis() - t).max(0) as f64 / 1000.0;
                        metrics.event_to_transition_seconds.observe(lag);
                    }
                    if let Some((seg, dir)) = &r.transition {
                        metrics.transitions.with_label_values(&[&**seg, *dir]).inc();
                    }
                }
                Ok(Err((e, _))) if !retry => return Err(e),
                Ok(Err((e, _))) => {
                    warn!(error = %e, topic = %records[i].topic, "delivery failed; will retry");
                    failed.push(i);
                }
                Err(_) if !retry => return Err(KafkaError::Canceled),
                Err(_) => failed.push(i),
            }
        }
        if !failed.is_empty() {
            metrics.produce_retries.inc_by(failed.len() as u64);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        pending = failed;
    }
    Ok(())
}

/// The partition counts of the input topics and the changelog topic, checked against the
/// partitioning contract: every input topic has the same number of partitions (they are
/// co-partitioned by customer id) and the changelog has exactly as many. A missing
/// changelog is created (compacted). Returns the partition count; every violation is
/// listed in the error.
pub async fn check_partitioning(
    k: &KafkaConfig,
    client: &impl Consumer<Context>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let count = |topic: &str| -> Result<Option<i32>, KafkaError> {
        let md = client.fetch_metadata(Some(topic), timeout)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    };
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for t in &k.input_topics {
        match count(t)? {
            Some(n) => counts.push((t.as_str(), n)),
            None => errors.push(format!("input topic `{t}` does not exist")),
        }
    }
    let n = counts.first().map_or(0, |c| c.1);
    if counts.iter().any(|c| c.1 != n) {
        let list: Vec<String> = counts.iter().map(|(t, c)| format!("{t}: {c}")).collect();
        errors.push(format!(
            "input topics are not co-partitioned: they must all have the same number of partitions, keyed by customer id ({})",
            list.join(", ")
        ));
    }
    if errors.is_empty() {
        match count(&k.changelog_topic)? {
            Some(c) if c == n => {}
            Some(c) => errors.push(format!(
                "changelog topic `{}` has {c} partitions; the input topics have {n}: it must have exactly as many (recreate it, or set kafka.changelog_topic to a new name)",
                k.changelog_topic
            )),
            None => {
                create_changelog(k, n, timeout)
                    .await
                    .with_context(|| format!("creating changelog topic `{}`", k.changelog_topic))?;
                info!(topic = %k.changelog_topic, partitions = n, "changelog topic created");
            }
        }
    }
    if errors.is_empty() {
        Ok(n)
    } else {
        anyhow::bail!(
            "the partitioning contract is violated:\n  - {}",
            errors.join("\n  - ")
        )
    }
}

async fn create_changelog(
    k: &KafkaConfig,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = base_config(k).create()?;
    let topic = NewTopic::new(&k.changelog_topic, partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    // Bounded: a broker that does not implement CreateTopics must not hang the start-up.
    let results = tokio::time::timeout(timeout * 2, admin.create_topics([&topic], &opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer to CreateTopics within {timeout:?}: create the topic yourself (compacted, as many partitions as the inputs)"
            )
        })??;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("{t}: {e}"),
        }
    }
    Ok(())
}
