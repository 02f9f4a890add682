//! The service under test: `segstream::service::Background` (the same `service::run` as
//! the binary) with the options' settings, and the counters the phases poll.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use prometheus::core::Collector;
use segstream::config::Config;
use segstream::metrics::Metrics;
use segstream::service::Background;
use segstream::shared::Instance;

use crate::common::kafka::{kafka_config, ServiceTopics};
use crate::common::unique;
use crate::Options;

/// The service's configuration: the options' Kafka settings, fresh group, `topics`, the
/// segments file, HTTP on a free port.
pub fn config(o: &Options, brokers: &str, topics: &ServiceTopics, segments: &Path) -> Config {
    let mut c = Config {
        kafka: kafka_config(brokers, &o.rdkafka),
        ..Config::default()
    };
    c.kafka.group_id = unique("load-segstream");
    topics.configure(&mut c.kafka);
    c.kafka.batch_size = o.batch_size;
    c.kafka.batch_timeout = o.batch_timeout;
    c.kafka.router = !o.no_router;
    c.engine.workers = o.workers;
    c.segments.file = segments.to_path_buf();
    c.http.listen = "127.0.0.1:0".parse().expect("valid address");
    c
}

/// A started service and the counters the phases read.
pub struct Service {
    bg: Background,
    inputs: Vec<String>,
}

impl Service {
    pub async fn start(config: Config) -> anyhow::Result<Service> {
        let inputs = config.kafka.input_topics.clone();
        let bg = Background::start(config, Duration::from_secs(60)).await?;
        Ok(Service { bg, inputs })
    }

    pub fn instance(&self) -> &Instance {
        &self.bg.running.instance
    }

    pub fn metrics(&self) -> &Metrics {
        &self.instance().metrics
    }

    /// (accepted, rejected or late) input messages so far.
    pub fn consumed(&self) -> (u64, u64) {
        let c = &self.metrics().events_consumed;
        let (mut accepted, mut other) = (0, 0);
        for topic in &self.inputs {
            accepted += c.with_label_values(&[topic.as_str(), "accepted"]).get();
            other += c.with_label_values(&[topic.as_str(), "rejected"]).get()
                + c.with_label_values(&[topic.as_str(), "late"]).get();
        }
        (accepted, other)
    }

    /// Events the router has put on the persons topic so far.
    pub fn routed(&self) -> u64 {
        self.metrics()
            .persons_records
            .with_label_values(&["event"])
            .get()
    }

    /// Input messages consumed so far, whatever became of them.
    pub fn total(&self) -> u64 {
        let (a, r) = self.consumed();
        a + r
    }

    /// `reason=count` of the dead letters so far.
    pub fn dead_letter_reasons(&self) -> String {
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
    pub fn acked(&self) -> u64 {
        self.metrics()
            .event_to_transition_seconds
            .get_sample_count()
    }

    /// Transitions the engine emitted.
    pub fn emitted(&self) -> u64 {
        self.instance()
            .workers
            .iter()
            .map(|w| w.engine().stats().transitions)
            .sum::<u64>()
    }

    /// Batches processed and the seconds spent in them.
    pub fn batches(&self) -> (u64, f64) {
        let h = &self.metrics().processing_seconds;
        (h.get_sample_count(), h.get_sample_sum())
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.bg.stop(Duration::from_secs(60)).await
    }
}

/// Polls `done` every millisecond until it holds; `Err` after `limit`.
pub async fn wait_for(
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
