//! Client construction: the settings of the service's consumer, producer and changelog
//! reader (what each guarantee needs), with the user's `librdkafka` passthrough on top.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;

use super::KafkaContext;

pub(crate) fn base_config(k: &KafkaConfig) -> ClientConfig {
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

/// Cooperative-sticky for one input topic (or the persons topic): a rebalance moves only the partitions that
/// change owner and the others keep running. With several input topics, `range`: it is the
/// assignor that gives partition N of every co-partitioned topic to the same instance (the
/// customer's events of all topics must meet in one profile); its rebalances are eager, but
/// partitions that come back to the same instance keep their state.
pub fn assignment_strategy(k: &KafkaConfig) -> &'static str {
    // Routed, the segment stage reads one topic (the persons topic).
    if !k.router && k.input_topics.len() > 1 {
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
pub fn consumer(
    k: &KafkaConfig,
    ctx: KafkaContext,
) -> Result<StreamConsumer<KafkaContext>, KafkaError> {
    consumer_config(k).create_with_context(ctx)
}

/// The router's consumer group: `{group_id}-router`.
pub fn router_group(k: &KafkaConfig) -> String {
    format!("{}-router", k.group_id)
}

/// The router's consumer: the service consumer's settings in a group of its own, always
/// cooperative-sticky (the router keeps no state: any partition may go anywhere).
pub fn router_consumer(
    k: &KafkaConfig,
    ctx: KafkaContext,
) -> Result<StreamConsumer<KafkaContext>, KafkaError> {
    let mut c = consumer_config(k);
    c.set("group.id", router_group(k))
        .set("partition.assignment.strategy", "cooperative-sticky");
    c.create_with_context(ctx)
}

/// A producer that waits for all in-sync replicas and keeps per-partition order with one
/// request in flight per connection. Not the idempotent producer: its producer-id state does
/// not survive a broker that lost it (seen with tansu's in-memory storage), and a retried
/// duplicate is recognised by its idempotency key anyway. No compression by default, so
/// that every client can read the topics (set `compression.type` through `librdkafka`).
pub fn producer(
    k: &KafkaConfig,
    ctx: KafkaContext,
) -> Result<FutureProducer<KafkaContext>, KafkaError> {
    producer_with_id(k, ctx, transactional_id(k))
}

/// Worker `worker`'s producer: worker 0's `transactional.id` is the service's, the others'
/// are suffixed `-w{worker}` (each worker commits its own transactions).
pub fn worker_producer(
    k: &KafkaConfig,
    worker: usize,
    ctx: KafkaContext,
) -> Result<FutureProducer<KafkaContext>, KafkaError> {
    let id = match worker {
        0 => transactional_id(k),
        n => format!("{}-w{n}", transactional_id(k)),
    };
    producer_with_id(k, ctx, id)
}

/// The router's producer: like the service's, its `transactional.id` suffixed `-router`.
pub fn router_producer(
    k: &KafkaConfig,
    ctx: KafkaContext,
) -> Result<FutureProducer<KafkaContext>, KafkaError> {
    producer_with_id(k, ctx, format!("{}-router", transactional_id(k)))
}

fn producer_with_id(
    k: &KafkaConfig,
    ctx: KafkaContext,
    transactional_id: String,
) -> Result<FutureProducer<KafkaContext>, KafkaError> {
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
        base.set("transactional.id", transactional_id);
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
