//! Phase 0, pre-load, and phase 1, raw consume: the backlog in the input topics, then read
//! back by consumers with the service's settings that only count messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use segstream::config::KafkaConfig;
use segstream::metrics::Metrics;

use crate::common::kafka::{self, Broker, ServiceTopics};
use crate::common::unique;
use crate::workload::Workload;
use crate::Options;

/// Produces every event to its customer's input topic and checks the watermarks: every
/// message written and still held (with the MockCluster, an error otherwise).
pub async fn preload(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    w: &Workload,
) -> anyhow::Result<()> {
    let n = w.payloads.len();
    let t = Instant::now();
    {
        let (b, inputs, payloads, templates) = (
            broker.bootstrap(),
            topics.inputs.clone(),
            w.payloads.clone(),
            w.templates.clone(),
        );
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let p = kafka::producer(
                &b,
                &[
                    ("linger.ms", "5"),
                    ("queue.buffering.max.messages", "1000000"),
                    ("queue.buffering.max.kbytes", "1048576"),
                ],
            )?;
            for (t, payload) in templates.iter().zip(payloads.iter()) {
                let topic = &inputs[t.customer % inputs.len()];
                kafka::send(&p, BaseRecord::to(topic).key(&t.key).payload(payload))?;
            }
            kafka::finish(&p, Duration::from_secs(120))
        })
        .await??;
    }
    let (mut written, mut held) = (0, 0);
    for input in &topics.inputs {
        for (low, high) in broker.watermarks(input, o.partitions)? {
            written += high;
            held += high - low;
        }
    }
    let stored = written == n as i64 && held == n as i64;
    if !stored {
        match broker {
            Broker::Mock(_) => bail!(
                "the input topics received {written} and still hold {held} of the {n} messages produced \
                 (MockCluster keeps at most 5 MB per partition: raise --topics or --partitions)"
            ),
            // Some brokers report watermarks loosely; the consumers count.
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
    Ok(())
}

/// One raw read of the backlog.
struct Raw {
    /// Subscription to the first message, s.
    join: f64,
    /// First message to the last, s.
    secs: f64,
    events: usize,
    /// StreamConsumer only: `recv` calls that timed out (200 ms without a message) before
    /// the last message.
    stalls: u32,
}

/// Both raw consumers over the backlog of `n` events; prints them and returns the
/// reference rate (`BaseConsumer::poll`), events/s.
pub async fn raw_consume(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    n: usize,
) -> anyhow::Result<f64> {
    let k = KafkaConfig {
        group_id: unique("load-raw"),
        input_topics: topics.inputs.clone(),
        ..kafka::kafka_config(&broker.bootstrap(), &o.rdkafka)
    };
    let raw = {
        let k = k.clone();
        tokio::task::spawn_blocking(move || raw_consume_base(&k, n)).await??
    };
    let rate = raw.events as f64 / raw.secs;
    println!(
        "raw consume:      {rate:.0} events/s   (BaseConsumer::poll: {} events in {:.3} s after the first; group join {:.2} s)",
        raw.events, raw.secs, raw.join
    );
    let k = KafkaConfig {
        group_id: unique("load-raw"),
        ..k
    };
    let raw = raw_consume_stream(&k, n).await?;
    println!(
        "  StreamConsumer: {:.0} events/s   (the service's consumer, recv under its 200 ms timeout: {:.3} s, {} timeouts)",
        raw.events as f64 / raw.secs,
        raw.secs,
        raw.stalls
    );
    Ok(rate)
}

/// `BaseConsumer::poll` in a loop on a thread of its own, with the settings of
/// `segstream::kafka::consumer` (which only builds a `StreamConsumer`).
fn raw_consume_base(k: &KafkaConfig, n: usize) -> anyhow::Result<Raw> {
    // Exactly the service's consumer settings.
    let consumer: BaseConsumer = segstream::kafka::consumer_config(k).create()?;
    let names: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
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
async fn raw_consume_stream(k: &KafkaConfig, n: usize) -> anyhow::Result<Raw> {
    let consumer = segstream::kafka::consumer(k, kafka::context(Arc::new(Metrics::new())))?;
    let names: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
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
