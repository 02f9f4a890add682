//! Load test of the whole path through a broker: events in, the real service in the middle,
//! transitions out. See `docs/load.md` for the definitions, the commands and the figures.
//!
//! Workload: the first `--events` events of the seeded reference funnel
//! (`generator::generate`, `--customers` customers, in time order), keyed by customer id.
//! Segments: `segments/library.toml` plus, unless `--no-flip`, a probe segment
//! `load-flip = count(any(lt = "a"), ever) > count(any(lt = "b"), ever)`; the tool adds
//! `"lt": "a"` / `"b"` alternately (per customer) to the properties of every event that has
//! properties (all but `identify`), so almost every event flips the probe segment in or out:
//! about one transition per event, in every phase.
//!
//! Phases, each on fresh topics and fresh consumer groups:
//!
//! 0. **Pre-load** the events into `--topics` input topics of `--partitions` partitions
//!    (a customer's events all go to one topic) and check, by the watermarks, that the
//!    broker holds all of them. The MockCluster keeps at most 5 MB per partition, so with
//!    it the default number of topics is as many as keep each partition under 4 MB.
//! 1. **Raw consume**: a consumer with the service's settings that only counts messages
//!    reads the backlog from the beginning: `BaseConsumer::poll` in a loop (the reference),
//!    then the service's own `StreamConsumer` (`segstream::kafka::consumer`) read with
//!    `recv` under the service's 200 ms timeout. Rate = messages / (time of the last
//!    message - time of the first); the group join before the first message is reported
//!    apart.
//! 2. **Full path**: `segstream::service::run` in-process (fresh group) reads the same
//!    backlog. The clock runs from the moment its `segstream_events_consumed_total` first
//!    moves to the moment every transition the engine emitted is acknowledged by the
//!    broker (`segstream_event_to_transition_latency_seconds` gets one observation per
//!    acknowledged transition; it must reach the engine's transition count after all events
//!    were consumed); both counters are polled every millisecond. For comparison: the
//!    engine alone on the same events (no Kafka), and the service's produce-and-wait alone
//!    (`kafka::produce_all` on batches of as many transitions as a batch of events causes).
//! 3. **Latency**: a fresh service on empty topics (one input topic unless `--topics`); a
//!    producer sends events live at `--rate` (default: half the full-path rate of phase 2)
//!    for `--seconds`, each stamped with the wall clock just before `send`. A separate
//!    consumer reads the output topic; for every transition caused by an event, latency =
//!    wall clock on receipt - the transition's `timestamp` (the causing event's timestamp).
//!    The output message's CreateTime (stamped by the service's producer) splits it in two.
//!
//! Run: `cargo run --release --example load [-- OPTIONS]`; `--help` lists the options.
//! `SEGSTREAM_LOAD_SAMPLES=file.csv` writes every latency sample.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use prometheus::core::Collector;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream::config::{Config, KafkaConfig};
use segstream::generator::{generate, FunnelConfig};
use segstream::kafka::{KafkaContext as Context, KafkaState, Outgoing};
use segstream::metrics::Metrics;
use segstream::service::{self, Running};
use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::time::{format_rfc3339, parse_rfc3339};
use segstream_core::transition::Transition;
use tokio_util::sync::CancellationToken;

/// As in the `segstream` binary: the service's allocation pattern wants mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// MockCluster drops a partition's oldest messages beyond 5 MB; stay well below.
const MOCK_PARTITION_BYTES: usize = 4 << 20;
const LIBRARY: &str = include_str!("../segments/library.toml");
const FLIP_SEGMENT: &str = r#"
# Added by examples/load.rs: flips on every event tagged "lt" = "a" / "b" alternately.
[segments.load-flip]
description = "Load-test probe: in after an `a`, out after a `b`."
condition = 'count(any(lt = "a"), ever) > count(any(lt = "b"), ever)'
"#;

const USAGE: &str = "\
usage: cargo run --release --example load -- [OPTIONS]

  --events N          events pre-loaded for phases 1 and 2 (default 200000)
  --customers N       simulated customers (default 20000)
  --partitions N      partitions of each input topic and of the output topic (default 4)
  --topics N          input topics; each customer's events go to one of them (default 1,
                      with the MockCluster as many as keep every partition under 4 MB:
                      it keeps at most 5 MB per partition and drops older messages)
  --brokers HOST:PORT an existing broker (topics created with the admin API);
                      default: an in-process rdkafka MockCluster
  --rate N            events/s in the latency phase (default: half the full-path rate)
  --seconds N         length of the latency phase (default 20)
  --linger-ms N       linger.ms of the load producer in the latency phase (default 5,
                      librdkafka's default); part of the measured latency
  --no-flip           only segments/library.toml, no probe segment and no \"lt\" tags
  --only PHASES       comma list of raw,full,latency (default: all three)
  --batch-size N      service kafka.batch_size (default: the service default, 1000)
  --batch-timeout MS  service kafka.batch_timeout (default: the service default, 50)
  --rdkafka KEY=VALUE librdkafka setting for the service's consumer and producer
                      (kafka.librdkafka; repeatable), e.g. --rdkafka linger.ms=0
";

#[derive(Debug, Clone)]
struct Options {
    events: usize,
    customers: usize,
    partitions: i32,
    topics: Option<usize>,
    brokers: Option<String>,
    rate: Option<f64>,
    seconds: f64,
    linger_ms: u32,
    flip: bool,
    raw: bool,
    full: bool,
    latency: bool,
    batch_size: Option<usize>,
    batch_timeout: Option<i64>,
    rdkafka: Vec<(String, String)>,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        events: 200_000,
        customers: 20_000,
        partitions: 4,
        topics: None,
        brokers: None,
        rate: None,
        seconds: 20.0,
        linger_ms: 5,
        flip: true,
        raw: true,
        full: true,
        latency: true,
        batch_size: None,
        batch_timeout: None,
        rdkafka: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--events" => o.events = value()?.parse()?,
            "--customers" => o.customers = value()?.parse()?,
            "--partitions" => o.partitions = value()?.parse()?,
            "--topics" => o.topics = Some(value()?.parse()?),
            "--brokers" => o.brokers = Some(value()?),
            "--rate" => o.rate = Some(value()?.parse()?),
            "--seconds" => o.seconds = value()?.parse()?,
            "--linger-ms" => o.linger_ms = value()?.parse()?,
            "--no-flip" => o.flip = false,
            "--only" => {
                let v = value()?;
                (o.raw, o.full, o.latency) = (false, false, false);
                for p in v.split(',') {
                    match p.trim() {
                        "raw" => o.raw = true,
                        "full" => o.full = true,
                        "latency" => o.latency = true,
                        other => bail!("--only: unknown phase `{other}`\n\n{USAGE}"),
                    }
                }
            }
            "--batch-size" => o.batch_size = Some(value()?.parse()?),
            "--batch-timeout" => o.batch_timeout = Some(value()?.parse()?),
            "--rdkafka" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--rdkafka wants KEY=VALUE, got `{v}`"))?;
                o.rdkafka.push((k.to_string(), val.to_string()));
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if o.events == 0
        || o.customers == 0
        || o.partitions < 1
        || o.topics == Some(0)
        || o.seconds <= 0.0
    {
        bail!("--events, --customers, --partitions, --topics and --seconds must be positive");
    }
    if o.rate.is_some_and(|r| r <= 0.0) {
        bail!("--rate must be positive");
    }
    if o.latency && o.rate.is_none() && !o.full {
        bail!("the latency phase without the full-path phase needs --rate");
    }
    Ok(o)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Wall clock in milliseconds with microsecond resolution.
fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---- broker ---------------------------------------------------------------------------------

enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    External(String),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(c) => c.bootstrap_servers(),
            Broker::External(b) => b.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::Mock(_) => "MockCluster".into(),
            Broker::External(b) => format!("broker {b}"),
        }
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            // The mock broker has no admin API.
            Broker::Mock(c) => c
                .create_topic(name, partitions, 1)
                .with_context(|| format!("creating topic {name}"))?,
            Broker::External(b) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", b)
                    .create()
                    .context("creating the admin client")?;
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                for r in admin.create_topics([&topic], &opts).await? {
                    r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

/// The topics of one phase.
struct Topics {
    /// Input topics; a customer's events all go to `inputs[customer % inputs.len()]`.
    inputs: Vec<String>,
    output: String,
    dead: String,
}

async fn create_topics(
    broker: &Broker,
    tag: &str,
    inputs: usize,
    partitions: i32,
) -> anyhow::Result<Topics> {
    let t = Topics {
        inputs: (0..inputs)
            .map(|i| unique(&format!("load-{tag}-events{i}")))
            .collect(),
        output: unique(&format!("load-{tag}-transitions")),
        dead: unique(&format!("load-{tag}-dead-letters")),
    };
    for input in &t.inputs {
        broker.create_topic(input, partitions).await?;
    }
    broker.create_topic(&t.output, partitions).await?;
    broker.create_topic(&t.dead, 1).await?;
    Ok(t)
}

/// (messages written, messages still held) over the partitions of `topics`: the sums of
/// the high watermarks and of high - low.
fn topic_messages(brokers: &str, topics: &[String], partitions: i32) -> anyhow::Result<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("load-watermarks"))
        .create()?;
    let (mut written, mut held) = (0, 0);
    for topic in topics {
        for p in 0..partitions {
            let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            written += high;
            held += high - low;
        }
    }
    Ok((written, held))
}

// ---- events ---------------------------------------------------------------------------------

/// A generated event split so that id, timestamp and the probe tag can be filled in cheaply.
struct Template {
    customer: usize,
    key: String,
    /// The JSON members other than event_id, timestamp and properties, without braces.
    head: String,
    /// The members of `properties`, without braces.
    props: Option<String>,
    ts: i64,
}

fn templates(events: &[segstream::generator::GeneratedEvent]) -> anyhow::Result<Vec<Template>> {
    use serde_json::Value;
    let mut customers: HashMap<String, usize> = HashMap::new();
    let inner = |v: Value| {
        let s = v.to_string();
        s[1..s.len() - 1].to_string()
    };
    events
        .iter()
        .map(|e| {
            let Value::Object(mut map) = serde_json::from_str(&e.json)? else {
                bail!("generated event is not an object");
            };
            map.remove("event_id");
            map.remove("timestamp");
            let props = match map.remove("properties") {
                Some(p @ Value::Object(_)) => Some(inner(p)),
                Some(_) => bail!("properties is not an object"),
                None => None,
            };
            let next = customers.len();
            let customer = *customers.entry(e.customer_id.clone()).or_insert(next);
            Ok(Template {
                customer,
                key: e.customer_id.clone(),
                head: inner(Value::Object(map)),
                props,
                ts: e.timestamp_ms,
            })
        })
        .collect()
}

/// Alternates the probe tag per customer.
struct Flipper {
    on: bool,
    seen: Vec<u32>,
}

impl Flipper {
    fn new(on: bool) -> Self {
        Flipper {
            on,
            seen: Vec::new(),
        }
    }

    fn next(&mut self, t: &Template) -> Option<&'static str> {
        if !self.on || t.props.is_none() {
            return None;
        }
        if self.seen.len() <= t.customer {
            self.seen.resize(t.customer + 1, 0);
        }
        let n = self.seen[t.customer];
        self.seen[t.customer] += 1;
        Some(if n % 2 == 0 { "a" } else { "b" })
    }
}

fn render(out: &mut String, t: &Template, id: std::fmt::Arguments<'_>, ts: i64, tag: Option<&str>) {
    out.clear();
    out.push_str("{\"event_id\":\"");
    let _ = out.write_fmt(id);
    out.push_str("\",\"timestamp\":\"");
    out.push_str(&format_rfc3339(ts));
    out.push_str("\",");
    out.push_str(&t.head);
    if let Some(props) = &t.props {
        out.push_str(",\"properties\":{");
        if let Some(tag) = tag {
            out.push_str("\"lt\":\"");
            out.push_str(tag);
            out.push('"');
            if !props.is_empty() {
                out.push(',');
            }
        }
        out.push_str(props);
        out.push('}');
    }
    out.push('}');
}

// ---- producing ------------------------------------------------------------------------------

/// Counts failed deliveries (a `DefaultProducerContext` drops them silently).
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
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

type LoadProducer = ThreadedProducer<Deliveries>;

fn producer(brokers: &str, linger_ms: u32) -> anyhow::Result<LoadProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Deliveries::default())
        .context("creating the load producer")
}

/// Waits for every outstanding delivery; `Err` if any message failed.
fn finish(p: &LoadProducer) -> anyhow::Result<()> {
    p.flush(Duration::from_secs(120))?;
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

fn send(p: &LoadProducer, topic: &str, key: &str, payload: &str) -> anyhow::Result<()> {
    loop {
        match p.send(BaseRecord::to(topic).key(key).payload(payload)) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

// ---- the service ----------------------------------------------------------------------------

fn service_config(
    o: &Options,
    brokers: &str,
    topics: &Topics,
    segments: &std::path::Path,
) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = unique("load-segstream");
    c.kafka.input_topics = topics.inputs.clone();
    c.kafka.output_topic = topics.output.clone();
    c.kafka.dead_letter_topic = topics.dead.clone();
    if let Some(n) = o.batch_size {
        c.kafka.batch_size = n;
    }
    if let Some(ms) = o.batch_timeout {
        c.kafka.batch_timeout = ms;
    }
    for (k, v) in &o.rdkafka {
        c.kafka.librdkafka.insert(k.clone(), v.clone());
    }
    c.segments.file = segments.to_path_buf();
    c.http.listen = "127.0.0.1:0".parse().expect("valid address");
    c
}

struct Service {
    running: Running,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    async fn start(config: Config) -> anyhow::Result<Service> {
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stop.clone();
        let task = tokio::spawn(service::run(
            config,
            async move { s.cancelled().await },
            Some(tx),
        ));
        let running = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(r)) => r,
            _ => {
                stop.cancel();
                return Err(match task.await {
                    Ok(Err(e)) => e.context("the service did not start"),
                    _ => anyhow!("the service did not start within 60 s"),
                });
            }
        };
        Ok(Service {
            running,
            stop,
            task,
        })
    }

    fn metrics(&self) -> &Metrics {
        &self.running.shared.metrics
    }

    /// (accepted, rejected or late) input messages so far.
    fn consumed(&self, topics: &[String]) -> (u64, u64) {
        let c = &self.metrics().events_consumed;
        let (mut accepted, mut other) = (0, 0);
        for topic in topics {
            accepted += c.with_label_values(&[topic.as_str(), "accepted"]).get();
            other += c.with_label_values(&[topic.as_str(), "rejected"]).get()
                + c.with_label_values(&[topic.as_str(), "late"]).get();
        }
        (accepted, other)
    }

    /// `reason=count` of the dead letters so far.
    fn dead_letter_reasons(&self) -> String {
        let mut out = Vec::new();
        for family in self.metrics().dead_letters.collect() {
            for m in family.get_metric() {
                let reason = m.get_label().first().map_or("?", |l| l.value());
                let count = m.get_counter().get_value();
                if count > 0.0 {
                    out.push(format!("{reason}={count}"));
                }
            }
        }
        out.join(" ")
    }

    /// Transitions acknowledged by the broker (one latency observation each).
    fn acked(&self) -> u64 {
        self.metrics()
            .event_to_transition_seconds
            .get_sample_count()
    }

    /// Transitions the engine emitted.
    fn emitted(&self) -> u64 {
        self.running.shared.engine().stats().transitions
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the service did not stop within 60 s")??
    }
}

/// Polls `done` every millisecond until it holds; `Err` after `limit`.
async fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- phase 1: raw consume -------------------------------------------------------------------

struct Raw {
    join: f64,
    secs: f64,
    events: usize,
    /// StreamConsumer only: `recv` calls that timed out (200 ms without a message) before
    /// the last message.
    stalls: u32,
}

fn raw_kafka_config(o: &Options, brokers: &str, topics: &[String]) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        group_id: unique("load-raw"),
        input_topics: topics.to_vec(),
        librdkafka: o.rdkafka.iter().cloned().collect(),
        ..KafkaConfig::default()
    }
}

/// `BaseConsumer::poll` in a loop on a thread of its own, with the settings of
/// `segstream::kafka::consumer` (which only builds a `StreamConsumer`).
fn raw_consume_base(
    o: &Options,
    brokers: &str,
    topics: &[String],
    n: usize,
) -> anyhow::Result<Raw> {
    let k = raw_kafka_config(o, brokers, topics);
    // Exactly the service's consumer settings.
    let c = segstream::kafka::consumer_config(&k);
    let consumer: BaseConsumer = c.create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let subscribed = Instant::now();
    let mut first = None;
    let mut count = 0usize;
    let mut last_message = Instant::now();
    while count < n {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                if last_message.elapsed() > Duration::from_secs(60) {
                    bail!("raw consumer: {count} of {n} messages, then 60 s of silence");
                }
            }
            Some(Err(e)) => bail!("raw consumer: {e}"),
            Some(Ok(_)) => {
                last_message = Instant::now();
                first.get_or_insert(last_message);
                count += 1;
            }
        }
    }
    let last = Instant::now();
    let first = first.unwrap_or(last);
    Ok(Raw {
        join: (first - subscribed).as_secs_f64(),
        secs: (last - first).as_secs_f64(),
        events: count,
        stalls: 0,
    })
}

/// The consumer `segstream::kafka::consumer` builds (a `StreamConsumer`), read the way the
/// service reads it: `recv` under a timeout (the service's `idle_after`, 200 ms); the
/// timeouts before the last message are counted.
async fn raw_consume_stream(
    o: &Options,
    brokers: &str,
    topics: &[String],
    n: usize,
) -> anyhow::Result<Raw> {
    let k = raw_kafka_config(o, brokers, topics);
    let ctx = Context(Arc::new(KafkaState::new(Arc::new(Metrics::new()))));
    let consumer = segstream::kafka::consumer(&k, ctx)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let subscribed = Instant::now();
    let mut first = None;
    let mut count = 0usize;
    let mut stalls = 0;
    let mut last_message = Instant::now();
    let idle = Duration::from_millis(k.idle_after as u64);
    while count < n {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => {
                if first.is_some() {
                    stalls += 1;
                }
                if last_message.elapsed() > Duration::from_secs(60) {
                    bail!("raw consumer: {count} of {n} messages, then 60 s of silence");
                }
            }
            Ok(Err(e)) => bail!("raw consumer: {e}"),
            Ok(Ok(_)) => {
                last_message = Instant::now();
                first.get_or_insert(last_message);
                count += 1;
            }
        }
    }
    let last = Instant::now();
    let first = first.unwrap_or(last);
    Ok(Raw {
        join: (first - subscribed).as_secs_f64(),
        secs: (last - first).as_secs_f64(),
        events: count,
        stalls,
    })
}

// ---- phase 2: full path ---------------------------------------------------------------------

struct Full {
    join: f64,
    consumed_secs: f64,
    acked_secs: f64,
    longest_pause: f64,
    transitions: u64,
    rejected: u64,
    reasons: String,
    batches: u64,
    batch_secs: f64,
}

async fn full_path(
    o: &Options,
    brokers: &str,
    topics: &Topics,
    segments: &std::path::Path,
    n: u64,
) -> anyhow::Result<Full> {
    let mut config = service_config(o, brokers, topics, segments);
    // Time moves only with event time (the backlog is weeks old): no wall-clock timers.
    config.engine.idle_lag = 10 * 365 * 86_400_000;
    let started = Instant::now();
    let svc = Service::start(config).await?;
    let total = |s: &Service| {
        let (a, r) = s.consumed(&topics.inputs);
        a + r
    };
    let first = wait_for(Duration::from_secs(120), "the first event", || {
        total(&svc) > 0
    })
    .await?;
    // Every millisecond: progress, and the longest time without any.
    let mut seen = total(&svc);
    let mut moved = first;
    let mut longest_pause = Duration::ZERO;
    let consumed = loop {
        let now_total = total(&svc);
        let now = Instant::now();
        if now_total != seen {
            longest_pause = longest_pause.max(now - moved);
            seen = now_total;
            moved = now;
        }
        if now_total >= n {
            break now;
        }
        if now - moved > Duration::from_secs(120) {
            bail!("the service consumed {now_total} of {n} events, then nothing for 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let emitted = svc.emitted();
    let acked = wait_for(
        Duration::from_secs(120),
        "all transitions acknowledged",
        || svc.acked() >= emitted,
    )
    .await?;
    let m = svc.metrics();
    let out = Full {
        join: (first - started).as_secs_f64(),
        consumed_secs: (consumed - first).as_secs_f64(),
        acked_secs: (acked - first).as_secs_f64(),
        longest_pause: longest_pause.as_secs_f64(),
        transitions: emitted,
        rejected: svc.consumed(&topics.inputs).1,
        reasons: svc.dead_letter_reasons(),
        batches: m.processing_seconds.get_sample_count(),
        batch_secs: m.processing_seconds.get_sample_sum(),
    };
    svc.stop().await?;
    Ok(out)
}

/// Parse, apply and encode the backlog with no Kafka at all: the engine's share. Also
/// returns the first `keep` transitions.
fn engine_only(
    payloads: &[String],
    segments: &str,
    keep: usize,
) -> anyhow::Result<(f64, f64, u64, Vec<Transition>)> {
    let mut kept = Vec::new();
    let mut run = |encode: bool| -> anyhow::Result<(f64, u64)> {
        let mut engine =
            Engine::from_source("load-segments.toml", segments, EngineConfig::default())
                .map_err(|d| anyhow!("invalid segments: {d}"))?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = Instant::now();
        for p in payloads {
            let _ = engine.process(p.as_bytes(), &mut out);
            if encode {
                for t in out.drain(..) {
                    bytes += Outgoing::transition(&t, "out", "/segstream")
                        .payload
                        .map_or(0, |p| p.len());
                    if kept.len() < keep {
                        kept.push(t);
                    }
                }
            } else {
                out.clear();
            }
        }
        std::hint::black_box(bytes);
        Ok((start.elapsed().as_secs_f64(), engine.stats().transitions))
    };
    let (plain, transitions) = run(false)?;
    let (encoded, _) = run(true)?;
    Ok((plain, encoded, transitions, kept))
}

/// The service's produce-and-wait alone: `segstream::kafka::produce_all` with the
/// service's producer (`segstream::kafka::producer`) on batches of `per_batch`
/// transitions, one batch after the other, to a topic of its own. Seconds per batch.
async fn produce_wait(
    o: &Options,
    broker: &Broker,
    brokers: &str,
    transitions: &[Transition],
    per_batch: usize,
) -> anyhow::Result<Vec<f64>> {
    let topic = unique("load-produce-probe");
    broker.create_topic(&topic, o.partitions).await?;
    let k = KafkaConfig {
        brokers: brokers.to_string(),
        librdkafka: o.rdkafka.iter().cloned().collect(),
        ..KafkaConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let producer =
        segstream::kafka::producer(&k, Context(Arc::new(KafkaState::new(metrics.clone()))))?;
    let outgoing: Vec<Outgoing> = transitions
        .iter()
        .map(|t| Outgoing::transition(t, &topic, &k.cloudevents_source))
        .collect();
    let mut times = Vec::new();
    for (i, batch) in outgoing.chunks(per_batch.max(1)).enumerate() {
        let start = Instant::now();
        segstream::kafka::produce_all(&producer, batch, &metrics).await?;
        // The first batch pays for connecting and metadata.
        if i > 0 && batch.len() == per_batch {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

// ---- phase 3: latency -----------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Probe<'a> {
    timestamp: &'a str,
    cause: &'a str,
}

#[derive(Default)]
struct Readings {
    /// (ms since the reader started, latency ms) per event-caused transition.
    samples: Vec<(f64, f64)>,
    /// Per sample: the output message's CreateTime (set by the service's producer when
    /// it hands the transition to librdkafka) - the event time, ms (NaN if absent).
    until_sent: Vec<f64>,
    timers: u64,
    unreadable: u64,
}

/// Reads the output topic from the beginning until `stop`; measures on receipt.
fn read_output(
    brokers: &str,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    ready: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<Readings> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("load-reader"))
        .set("enable.auto.commit", "false")
        // The mock broker answers an empty fetch only after fetch.wait.max.ms, even when
        // data arrives meanwhile: keep the reader's own share small.
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    // Ready once every partition has a concrete fetch position (the offset lookup for
    // `Beginning` is done), so the first transitions do not wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(10));
        let positions = c.position()?;
        if positions
            .elements()
            .iter()
            .all(|e| matches!(e.offset(), Offset::Offset(_)))
        {
            break;
        }
    }
    let _ = c.poll(Duration::from_millis(50));
    let _ = ready.send(());
    let start = now_ms_f64();
    let mut r = Readings::default();
    while !stop.load(Ordering::SeqCst) {
        let Some(m) = c.poll(Duration::from_millis(20)) else {
            continue;
        };
        let now = now_ms_f64();
        let m = m?;
        let probe = m
            .payload()
            .and_then(|p| serde_json::from_slice::<Probe<'_>>(p).ok());
        match probe.and_then(|p| Some((parse_rfc3339(p.timestamp)?, p.cause))) {
            Some((ts, cause)) if cause.starts_with("event:") => {
                r.samples.push((now - start, now - ts as f64));
                let created = m.timestamp().to_millis();
                r.until_sent
                    .push(created.map_or(f64::NAN, |c| (c - ts) as f64));
            }
            Some(_) => r.timers += 1,
            None => r.unreadable += 1,
        }
    }
    Ok(r)
}

/// Sends at `rate` for `secs`, stamping each event with the wall clock; (sent, seconds).
fn drive(
    brokers: &str,
    topics: &[String],
    templates: &[Template],
    rate: f64,
    secs: f64,
    flip: bool,
    linger_ms: u32,
) -> anyhow::Result<(u64, f64)> {
    let p = producer(brokers, linger_ms)?;
    // Connected and with the partition leaders known before the clock starts.
    for topic in topics {
        p.client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
    }
    let mut flipper = Flipper::new(flip);
    let mut buf = String::with_capacity(512);
    let run = unique("live");
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        let due = (rate * elapsed) as u64;
        while sent < due {
            let t = &templates[sent as usize % templates.len()];
            let tag = flipper.next(t);
            render(&mut buf, t, format_args!("{run}-{sent}"), now_ms(), tag);
            send(&p, &topics[t.customer % topics.len()], &t.key, &buf)?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    finish(&p)?;
    Ok((sent, secs))
}

struct Latency {
    sent: u64,
    send_secs: f64,
    readings: Readings,
    emitted: u64,
    consumed: u64,
    rejected: u64,
    batches: u64,
    batch_secs: f64,
    /// The service's own event-to-acknowledgement histogram: (upper bound s, cumulative).
    ack_buckets: Vec<(f64, u64)>,
    ack_count: u64,
    ack_sum: f64,
    /// Time-outs while waiting for the service to finish (it fell behind).
    problems: Vec<String>,
}

async fn latency(
    o: &Options,
    brokers: &str,
    topics: &Topics,
    segments: &std::path::Path,
    templates: Arc<Vec<Template>>,
    rate: f64,
) -> anyhow::Result<Latency> {
    let config = service_config(o, brokers, topics, segments);
    let svc = Service::start(config).await?;
    let shared = svc.running.shared.clone();
    wait_for(
        Duration::from_secs(60),
        "the service to become ready",
        || shared.ready.load(Ordering::SeqCst),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let (b, t, p, stop) = (
            brokers.to_string(),
            topics.output.clone(),
            o.partitions,
            stop.clone(),
        );
        std::thread::spawn(move || read_output(&b, &t, p, &stop, ready_tx))
    };
    let _ =
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(30))).await;

    let driver = {
        let (b, t, secs, flip, linger) = (
            brokers.to_string(),
            topics.inputs.clone(),
            o.seconds,
            o.flip,
            o.linger_ms,
        );
        tokio::task::spawn_blocking(move || drive(&b, &t, &templates, rate, secs, flip, linger))
    };
    let (sent, send_secs) = driver.await??;
    let total = |s: &Service| {
        let (a, r) = s.consumed(&topics.inputs);
        a + r
    };
    let caught_up = wait_for(
        Duration::from_secs(120),
        "the service to consume every event",
        || total(&svc) >= sent,
    )
    .await;
    let emitted = svc.emitted();
    let acked = wait_for(
        Duration::from_secs(60),
        "all transitions acknowledged",
        || svc.acked() >= emitted,
    )
    .await;
    // Let the reader catch up with the last acknowledged transitions.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let readings = reader
        .join()
        .map_err(|_| anyhow!("the output reader panicked"))??;
    let problems: Vec<String> = [caught_up.err(), acked.err()]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    let m = svc.metrics();
    let family = m.event_to_transition_seconds.collect();
    let h = family[0].get_metric()[0].get_histogram();
    let ack_buckets = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    let (consumed, rejected) = svc.consumed(&topics.inputs);
    let out = Latency {
        sent,
        send_secs,
        readings,
        emitted,
        consumed: consumed + rejected,
        rejected,
        batches: m.processing_seconds.get_sample_count(),
        batch_secs: m.processing_seconds.get_sample_sum(),
        ack_buckets,
        ack_count: h.get_sample_count(),
        ack_sum: h.get_sample_sum(),
        problems,
    };
    svc.stop().await?;
    Ok(out)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The upper bound of the histogram bucket holding quantile `q` ("<= x s").
fn bucket_quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> String {
    let want = (q * count as f64).ceil() as u64;
    match buckets.iter().find(|(_, c)| *c >= want) {
        Some((le, _)) => format!("<= {} ms", le * 1000.0),
        None => format!("> {} ms", buckets.last().map_or(0.0, |b| b.0 * 1000.0)),
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

// ---- main -----------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The mock cluster lives on this thread for the whole run.
    let broker = match &o.brokers {
        Some(b) => Broker::External(b.clone()),
        None => Broker::Mock(MockCluster::new(1).context("starting the MockCluster")?),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(o, broker))
}

async fn run(o: Options, broker: Broker) -> anyhow::Result<()> {
    let brokers = broker.bootstrap();
    println!(
        "segstream load: {} events, {} customers, {} partitions, {}{}",
        o.events,
        o.customers,
        o.partitions,
        broker.describe(),
        if o.flip {
            ", library + load-flip segments"
        } else {
            ", library segments"
        }
    );
    let mut service_notes = Vec::new();
    if let Some(n) = o.batch_size {
        service_notes.push(format!("batch_size={n}"));
    }
    if let Some(n) = o.batch_timeout {
        service_notes.push(format!("batch_timeout={n}ms"));
    }
    for (k, v) in &o.rdkafka {
        service_notes.push(format!("{k}={v}"));
    }
    if !service_notes.is_empty() {
        println!("service settings: {}", service_notes.join(" "));
    }

    // The workload: the first --events events of the funnel, in time order.
    let t = Instant::now();
    let mut days = 7;
    let events = loop {
        let events = generate(&FunnelConfig {
            customers: o.customers,
            days,
            ..FunnelConfig::default()
        });
        if events.len() >= o.events || days >= 364 {
            break events;
        }
        days *= 2;
    };
    let n = o.events.min(events.len());
    let templates = Arc::new(templates(&events[..n])?);
    drop(events);
    let mut flipper = Flipper::new(o.flip);
    let mut buf = String::new();
    let payloads: Vec<String> = templates
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tag = flipper.next(t);
            render(&mut buf, t, format_args!("load-{i}"), t.ts, tag);
            buf.clone()
        })
        .collect();
    let bytes: usize = payloads.iter().map(String::len).sum();
    // On the broker: payload, key and about 30 bytes of record framing per message.
    let stored_bytes = bytes + n * (8 + 30);
    let inputs = match (o.topics, &broker) {
        (Some(t), _) => t,
        (None, Broker::Mock(_)) => {
            stored_bytes.div_ceil(o.partitions as usize * MOCK_PARTITION_BYTES)
        }
        (None, Broker::External(_)) => 1,
    }
    .max(1);
    println!(
        "workload:         {n} events ({} bytes mean, generated in {:.1} s); input topics x partitions: backlog {inputs} x {p}, live {} x {p}",
        bytes / n.max(1),
        t.elapsed().as_secs_f64(),
        o.topics.unwrap_or(1),
        p = o.partitions
    );
    let segments_text = if o.flip {
        format!("{LIBRARY}\n{FLIP_SEGMENT}")
    } else {
        LIBRARY.to_string()
    };
    let segments = std::env::temp_dir().join(format!("segstream-load-{}.toml", std::process::id()));
    std::fs::write(&segments, &segments_text).context("writing the segments file")?;
    let result = phases(
        &o,
        &broker,
        &brokers,
        &segments,
        &segments_text,
        templates,
        &payloads,
        inputs,
    )
    .await;
    let _ = std::fs::remove_file(&segments);
    result
}

async fn phases(
    o: &Options,
    broker: &Broker,
    brokers: &str,
    segments: &std::path::Path,
    segments_text: &str,
    templates: Arc<Vec<Template>>,
    payloads: &[String],
    inputs: usize,
) -> anyhow::Result<()> {
    let n = payloads.len();
    let mut full_rate = None;
    if o.raw || o.full {
        let topics = create_topics(broker, "backlog", inputs, o.partitions).await?;
        let t = Instant::now();
        {
            let (b, inputs, payloads, templates) = (
                brokers.to_string(),
                topics.inputs.clone(),
                payloads.to_vec(),
                templates.clone(),
            );
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let p = producer(&b, 5)?;
                for (t, payload) in templates.iter().zip(&payloads) {
                    send(&p, &inputs[t.customer % inputs.len()], &t.key, payload)?;
                }
                finish(&p)?;
                Ok(())
            })
            .await??;
        }
        let (written, held) = topic_messages(brokers, &topics.inputs, o.partitions)?;
        let stored = written == n as i64 && held == n as i64;
        if !stored {
            match broker {
                Broker::Mock(_) => bail!(
                    "the input topics received {written} and still hold {held} of the {n} messages produced \
                     (MockCluster keeps at most 5 MB per partition: raise --topics or --partitions)"
                ),
                // Some brokers report watermarks loosely; the consumers below count.
                Broker::External(_) => println!(
                    "  WARNING: the broker reports {written} messages written and {held} held of the {n} produced"
                ),
            }
        }
        println!(
            "pre-load:         {:.0} events/s ({n} events in {:.2} s{})",
            n as f64 / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64(),
            if stored { ", all stored" } else { "" }
        );

        let mut raw_rate = None;
        if o.raw {
            let raw = {
                let (o, b, t) = (o.clone(), brokers.to_string(), topics.inputs.clone());
                tokio::task::spawn_blocking(move || raw_consume_base(&o, &b, &t, n)).await??
            };
            let rate = raw.events as f64 / raw.secs;
            raw_rate = Some(rate);
            println!(
                "raw consume:      {rate:.0} events/s   (BaseConsumer::poll: {} events in {:.3} s after the first; group join {:.2} s)",
                raw.events, raw.secs, raw.join
            );
            let raw = raw_consume_stream(o, brokers, &topics.inputs, n).await?;
            println!(
                "  StreamConsumer: {:.0} events/s   (the service's consumer, recv under its 200 ms timeout: {:.3} s, {} timeouts)",
                raw.events as f64 / raw.secs,
                raw.secs,
                raw.stalls
            );
        }
        if o.full {
            let full = full_path(o, brokers, &topics, segments, n as u64).await?;
            let rate = n as f64 / full.acked_secs;
            full_rate = Some(rate);
            let ratio = raw_rate.map_or(String::new(), |r| format!("   ({:.2} of raw)", rate / r));
            println!(
                "full path:        {rate:.0} events/s{ratio}   ({n} events consumed and {} transitions acknowledged in {:.3} s after the first event; group join {:.2} s)",
                full.transitions, full.acked_secs, full.join
            );
            println!(
                "  all consumed:   {:.0} events/s ({:.3} s); {} batches, mean {:.0} events and {:.1} ms each (poll to offsets stored), {:.0} % of the time in batches; longest pause in consumption {:.0} ms",
                n as f64 / full.consumed_secs,
                full.consumed_secs,
                full.batches,
                n as f64 / full.batches.max(1) as f64,
                full.batch_secs * 1000.0 / full.batches.max(1) as f64,
                100.0 * full.batch_secs / full.acked_secs,
                full.longest_pause * 1000.0
            );
            if full.rejected > 0 {
                println!(
                    "  WARNING: {} events rejected or late (dead letters: {})",
                    full.rejected, full.reasons
                );
            }
        }
    }
    if o.full {
        let batch_size = o
            .batch_size
            .unwrap_or_else(|| KafkaConfig::default().batch_size);
        let (plain, encoded, transitions, kept) =
            engine_only(payloads, segments_text, 21 * batch_size)?;
        println!(
            "engine only:      {:.0} events/s parse+apply, {:.0} events/s with encoding the {transitions} transitions (one thread, no Kafka)",
            n as f64 / plain,
            n as f64 / encoded
        );
        // As many transitions per batch as a full batch of events causes on average.
        let per_batch = ((transitions as f64 / n as f64) * batch_size as f64).round() as usize;
        if per_batch > 0 {
            let mut times = produce_wait(o, broker, brokers, &kept, per_batch).await?;
            times.sort_by(f64::total_cmp);
            let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
            println!(
                "produce+ack only: {:.1} ms mean, {:.1} ms p50, {:.1} ms max per batch of {per_batch} transitions ({} batches; the service's producer and produce_all), i.e. {:.0} batches/s",
                mean * 1000.0,
                percentile(&times, 0.5) * 1000.0,
                times.last().copied().unwrap_or(f64::NAN) * 1000.0,
                times.len(),
                1.0 / mean
            );
        }
    }

    if o.latency {
        let rate = match (o.rate, full_rate) {
            (Some(r), _) => r,
            (None, Some(f)) => (f / 2.0).round(),
            (None, None) => bail!("no rate for the latency phase"),
        };
        // One input topic unless told otherwise: live, the retention limit of the
        // MockCluster does not matter, and fewer, larger message sets keep its fetch
        // handler (a linear search through a partition's message sets) cheap.
        let topics = create_topics(broker, "live", o.topics.unwrap_or(1), o.partitions).await?;
        let l = latency(o, brokers, &topics, segments, templates, rate).await?;
        if let Ok(path) = std::env::var("SEGSTREAM_LOAD_SAMPLES") {
            // ms since the reader started, latency ms, event -> service send ms
            let mut csv = String::from("t_ms,latency_ms,until_sent_ms\n");
            for (s, u) in l.readings.samples.iter().zip(&l.readings.until_sent) {
                let _ = writeln!(csv, "{:.3},{:.3},{u}", s.0, s.1);
            }
            std::fs::write(&path, csv).with_context(|| format!("writing {path}"))?;
        }
        let mut lat: Vec<f64> = l.readings.samples.iter().map(|s| s.1).collect();
        lat.sort_by(f64::total_cmp);
        println!(
            "latency @ {rate:.0} events/s for {} s: p50 {}  p99 {}  max {}  (n={})",
            o.seconds,
            fmt_ms(percentile(&lat, 0.50)),
            fmt_ms(percentile(&lat, 0.99)),
            fmt_ms(lat.last().copied().unwrap_or(f64::NAN)),
            lat.len()
        );
        println!(
            "  p90 {}  p99.9 {}  mean {}",
            fmt_ms(percentile(&lat, 0.90)),
            fmt_ms(percentile(&lat, 0.999)),
            fmt_ms(lat.iter().sum::<f64>() / lat.len().max(1) as f64)
        );
        // Steady state: without the first second (the first fetches of an idle consumer).
        let mut steady: Vec<f64> = l
            .readings
            .samples
            .iter()
            .filter(|s| s.0 >= 1000.0)
            .map(|s| s.1)
            .collect();
        steady.sort_by(f64::total_cmp);
        println!(
            "  after the first second: p50 {}  p99 {}  max {}  (n={})",
            fmt_ms(percentile(&steady, 0.50)),
            fmt_ms(percentile(&steady, 0.99)),
            fmt_ms(steady.last().copied().unwrap_or(f64::NAN)),
            steady.len()
        );
        let mut sent_part: Vec<f64> = l
            .readings
            .until_sent
            .iter()
            .copied()
            .filter(|u| !u.is_nan())
            .collect();
        sent_part.sort_by(f64::total_cmp);
        let mut rest: Vec<f64> = l
            .readings
            .samples
            .iter()
            .zip(&l.readings.until_sent)
            .filter(|(_, u)| !u.is_nan())
            .map(|(s, u)| s.1 - u)
            .collect();
        rest.sort_by(f64::total_cmp);
        println!(
            "  split at the service's send (output CreateTime): event -> send p50 {} p99 {}; send -> received p50 {} p99 {}",
            fmt_ms(percentile(&sent_part, 0.50)),
            fmt_ms(percentile(&sent_part, 0.99)),
            fmt_ms(percentile(&rest, 0.50)),
            fmt_ms(percentile(&rest, 0.99)),
        );
        println!(
            "  sent {} events in {:.1} s ({:.0} events/s); service consumed {} ({} rejected or late); {} transitions emitted, {} read ({} by timers, {} unreadable)",
            l.sent,
            l.send_secs,
            l.sent as f64 / l.send_secs,
            l.consumed,
            l.rejected,
            l.emitted,
            l.readings.samples.len() as u64 + l.readings.timers + l.readings.unreadable,
            l.readings.timers,
            l.readings.unreadable
        );
        println!(
            "  service: {} batches, mean {:.0} events and {:.1} ms each; its event-to-acknowledgement histogram: mean {}, p50 {}, p99 {}",
            l.batches,
            l.consumed as f64 / l.batches.max(1) as f64,
            l.batch_secs * 1000.0 / l.batches.max(1) as f64,
            fmt_ms(l.ack_sum * 1000.0 / l.ack_count.max(1) as f64),
            bucket_quantile(&l.ack_buckets, l.ack_count, 0.5),
            bucket_quantile(&l.ack_buckets, l.ack_count, 0.99),
        );
        for p in &l.problems {
            println!("  WARNING: {p} (the service fell behind)");
        }
    }
    Ok(())
}
