//! Steps 3 to 5: the raw readers, the restore through `service::restore_partitions`, and
//! the engine alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream::config::KafkaConfig;
use segstream::kafka::KafkaContext;
use segstream::metrics::Metrics;
use segstream_core::transition::Transition;

use crate::common::{self, kafka, rss, unique};
use crate::Options;

/// A reader configured exactly like the service's `restorer`.
fn reader_config(o: &Options, brokers: &str, topic: &str) -> ClientConfig {
    segstream::kafka::restorer_config(&KafkaConfig {
        group_id: unique("restore-bench"),
        input_topics: vec![topic.to_string()],
        changelog_topic: topic.to_string(),
        ..kafka::kafka_config(brokers, &o.rdkafka)
    })
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub messages: u64,
    pub bytes: u64,
    /// First watermark request to the last message.
    pub secs: f64,
    /// Watermark requests and assignment, before the first message is asked for.
    pub setup_secs: f64,
}

impl Read {
    /// Counts `m`; true once it was the last message of the partitions still open.
    fn count(&mut self, m: &BorrowedMessage<'_>, ends: &mut HashMap<i32, i64>) -> bool {
        self.messages += 1;
        self.bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
        ends.is_empty()
    }
}

/// Watermarks of every partition (as `restore_partitions` asks for them) and the assignment
/// from the beginning.
fn assign_all<C: ConsumerContext>(
    c: &impl Consumer<C>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    Ok(ends)
}

fn fresh_context() -> KafkaContext {
    kafka::context(Arc::new(Metrics::new()))
}

/// `BaseConsumer::poll` in a loop: counts messages and payload bytes, nothing else.
pub fn raw_base(o: &Options, brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Read> {
    let c: BaseConsumer<KafkaContext> =
        reader_config(o, brokers, topic).create_with_context(fresh_context())?;
    let started = Instant::now();
    let mut ends = assign_all(&c, topic, partitions)?;
    let setup_secs = started.elapsed().as_secs_f64();
    let mut r = Read::default();
    while !ends.is_empty() {
        match c.poll(Duration::from_secs(10)) {
            None => bail!(
                "raw consumer: {} messages, then 10 s of silence",
                r.messages
            ),
            Some(Err(e)) => bail!("raw consumer: {e}"),
            Some(Ok(m)) => r.count(&m, &mut ends),
        };
    }
    r.secs = started.elapsed().as_secs_f64();
    r.setup_secs = setup_secs;
    Ok(r)
}

/// `StreamConsumer::recv` in a loop: counts messages and payload bytes, nothing else.
pub async fn raw_stream(
    o: &Options,
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Read> {
    let c: StreamConsumer<KafkaContext> =
        reader_config(o, brokers, topic).create_with_context(fresh_context())?;
    let started = Instant::now();
    let mut ends = assign_all(&c, topic, partitions)?;
    let setup_secs = started.elapsed().as_secs_f64();
    let mut r = Read::default();
    while !ends.is_empty() {
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Err(_) => bail!(
                "raw consumer: {} messages, then 10 s of silence",
                r.messages
            ),
            Ok(Err(e)) => bail!("raw consumer: {e}"),
            Ok(Ok(m)) => r.count(&m, &mut ends),
        };
    }
    r.secs = started.elapsed().as_secs_f64();
    r.setup_secs = setup_secs;
    Ok(r)
}

pub struct Restored {
    pub entries: u64,
    pub secs: f64,
    pub profiles: usize,
    pub profile_bytes: usize,
    pub transitions: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub restored_metric: u64,
}

/// `service::restore_partitions` over every partition into a fresh engine.
pub async fn restore(
    o: &Options,
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Restored> {
    let metrics = Arc::new(Metrics::new());
    // As `service::run` creates its `restorer`.
    let restorer: BaseConsumer<KafkaContext> = reader_config(o, brokers, topic)
        .create_with_context(kafka::context(metrics.clone()))
        .context("creating the changelog reader")?;
    let (rss_before, _) = rss();
    let engine = Mutex::new(common::library_engine()?.with_change_tracking());
    let parts: Vec<i32> = (0..partitions).collect();
    let mut out: Vec<Transition> = Vec::new();
    let started = Instant::now();
    let entries = segstream::service::restore_partitions(
        &restorer, topic, &parts, &engine, &metrics, &mut out,
    )
    .await?
    .entries;
    let secs = started.elapsed().as_secs_f64();
    drop(restorer);
    let e = engine.into_inner().unwrap_or_else(|p| p.into_inner());
    let (rss_after, _) = rss();
    let r = Restored {
        entries,
        secs,
        profiles: e.profile_count(),
        profile_bytes: e.profile_bytes(),
        transitions: out.len(),
        rss_before,
        rss_after,
        restored_metric: metrics
            .restore_records
            .with_label_values(&["restored"])
            .get(),
    };
    // Keep the engine alive until RSS was read; dropping 10 M profiles takes a while.
    std::mem::forget(e);
    Ok(r)
}

pub struct EngineOnly {
    pub secs: f64,
    pub profiles: usize,
    pub profile_bytes: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub hwm_after: u64,
}

/// N records decoded straight into a fresh engine: no Kafka, no lock, no metrics.
pub fn engine_only(
    n: usize,
    partitions: i32,
    pool: &[Vec<u8>],
    uuid_ids: bool,
) -> anyhow::Result<EngineOnly> {
    let (rss_before, _) = rss();
    let mut e = common::library_engine()?;
    let mut out: Vec<Transition> = Vec::new();
    let mut key = String::new();
    let started = Instant::now();
    for i in 0..n {
        key.clear();
        if uuid_ids {
            // Distinct per i, spread like random UUIDs (version 4 layout).
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            std::fmt::Write::write_fmt(
                &mut key,
                format_args!(
                    "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                    h >> 32,
                    (h >> 16) & 0xffff,
                    h & 0xfff,
                    (i >> 12) & 0xfff,
                    i
                ),
            )?;
        } else {
            std::fmt::Write::write_fmt(&mut key, format_args!("c-{i:09}"))?;
        }
        e.restore_record(
            (i % partitions as usize) as u16,
            &key,
            Some(&pool[i % pool.len()]),
            &mut out,
        )
        .map_err(|err| anyhow!("record {i}: {err}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rss_after, hwm_after) = rss();
    let r = EngineOnly {
        secs,
        profiles: e.profile_count(),
        profile_bytes: e.profile_bytes(),
        rss_before,
        rss_after,
        hwm_after,
    };
    std::mem::forget(e);
    Ok(r)
}
