//! Load test of the whole path through a broker: events in, the real service in the middle,
//! transitions out. See `docs/load.md` for the definitions, the commands and the figures.
//!
//! Workload: the first `--events` events of the seeded reference funnel
//! (`generator::generate`, `--customers` customers, in time order), keyed by customer id.
//! Segments: `segments/library.toml` plus, unless `--no-flip`, a probe segment
//! `load-flip = count(any(lt = "a"), ever) > count(any(lt = "b"), ever)`; the tool adds
//! `"lt": "a"` / `"b"` alternately (per customer) to the properties of every event that has
//! properties (all but `identify`), so almost every event flips the probe segment in or out:
//! about one transition per event, in every phase ([`workload`]).
//!
//! Phases, each on fresh topics (inputs, output, dead letters, changelog) and fresh
//! consumer groups:
//!
//! 0. **Pre-load** the events into `--topics` input topics of `--partitions` partitions
//!    (a customer's events all go to one topic) and check, by the watermarks, that the
//!    broker holds all of them. The MockCluster keeps at most 5 MB per partition, so with
//!    it the default number of topics is as many as keep each partition under 4 MB
//!    ([`backlog`]). With the router the persons and changelog topics get as many
//!    partitions (shards) as hold the whole routed backlog on the MockCluster (the router
//!    can run that far ahead of the segment stage), at least `--partitions`.
//! 1. **Raw consume**: a consumer with the service's settings that only counts messages
//!    reads the backlog from the beginning: `BaseConsumer::poll` in a loop (the reference),
//!    then the service's own `StreamConsumer` (`segstream::kafka::consumer`) read with
//!    `recv` under the service's 200 ms timeout. Rate = messages / (time of the last
//!    message - time of the first); the group join before the first message is reported
//!    apart ([`backlog`]).
//! 2. **Full path**: `segstream::service::run` in-process (fresh group, started with
//!    `service::Background`) reads the same backlog. The clock runs from the moment its
//!    `segstream_events_consumed_total` first moves to the moment every transition the
//!    engine emitted is acknowledged by the broker
//!    (`segstream_event_to_transition_latency_seconds` gets one observation per
//!    acknowledged transition; it must reach the engine's transition count after all
//!    events were consumed); both counters are polled every millisecond. For comparison:
//!    the engine alone on the same events (no Kafka), and the service's produce-and-wait
//!    alone (`kafka::produce_all` on batches of as many transitions as a batch of events
//!    causes) ([`full`]).
//! 3. **Latency**: a fresh service on empty topics (one input topic unless `--topics`); a
//!    producer sends events live at `--rate` (default: half the full-path rate of phase 2)
//!    for `--seconds`, each stamped with the wall clock just before `send`. A separate
//!    consumer reads the output topic; for every transition caused by an event, latency =
//!    wall clock on receipt - the transition's `timestamp` (the causing event's timestamp).
//!    The output message's CreateTime (stamped by the service's producer) splits it in two
//!    ([`latency`]).
//!
//! Run: `cargo run --release --example load [-- OPTIONS]`; `--help` lists the options.
//! `SEGSTREAM_LOAD_SAMPLES=file.csv` writes every latency sample.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod full;
mod latency;
mod service;
mod workload;

use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, Parser};
use segstream::config::KafkaConfig;

use common::kafka::{Broker, ServiceTopics, MOCK_PARTITION_BYTES};
use workload::Workload;

/// As in the `segstream` binary: the service's allocation pattern wants mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load test of the whole path through a broker (see docs/load.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "load", long_about = None)]
#[command(override_usage = "cargo run --release --example load -- [OPTIONS]")]
pub struct Options {
    /// Events pre-loaded for phases 1 and 2
    #[arg(long, value_name = "N", default_value_t = 200_000, value_parser = common::count)]
    pub events: usize,
    /// Simulated customers
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = common::count)]
    pub customers: usize,
    /// Partitions of each input topic and of the output topic (and of the changelog)
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Input topics; each customer's events go to one of them [default: 1, with the
    /// MockCluster as many as keep every partition under 4 MB: it keeps at most 5 MB per
    /// partition and drops older messages]
    #[arg(long, value_name = "N", value_parser = common::count)]
    pub topics: Option<usize>,
    /// An existing broker (topics created with the admin API) [default: an in-process
    /// rdkafka MockCluster]
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: Option<String>,
    /// Events/s in the latency phase [default: half the full-path rate]
    #[arg(long, value_name = "N", value_parser = common::positive)]
    pub rate: Option<f64>,
    /// Length of the latency phase, seconds
    #[arg(long, value_name = "N", default_value_t = 20.0, value_parser = common::positive)]
    pub seconds: f64,
    /// linger.ms of the load producer in the latency phase (librdkafka's default); part of
    /// the measured latency
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub linger_ms: u32,
    /// Only segments/library.toml: no probe segment and no "lt" tags
    #[arg(long)]
    pub no_flip: bool,
    /// The service with kafka.router = false: no identity stage, events read straight from
    /// the inputs (persons are merged only within a partition). For the cost of identity
    /// resolution across partitions on the same events
    #[arg(long)]
    pub no_router: bool,
    /// Service engine.workers [default: the service default: 1 with the router, the
    /// available cores with --no-router]
    #[arg(long, value_name = "N", value_parser = common::count)]
    pub workers: Option<usize>,
    /// Comma list of the phases to run: raw consume, full path (with engine only and
    /// produce+ack only), latency [default: all three]
    #[arg(long, value_name = "PHASES", value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// Service kafka.batch_size (the service default)
    #[arg(long, value_name = "N", default_value_t = KafkaConfig::default().batch_size,
          value_parser = common::count)]
    pub batch_size: usize,
    /// Service kafka.batch_timeout, ms (the service default)
    #[arg(long, value_name = "MS", default_value_t = KafkaConfig::default().batch_timeout)]
    pub batch_timeout: i64,
    /// librdkafka setting for the service's consumer and producer and the raw consumers
    /// (kafka.librdkafka; repeatable), e.g. --rdkafka linger.ms=0
    #[arg(long, value_name = "KEY=VALUE", value_parser = common::key_value)]
    pub rdkafka: Vec<(String, String)>,
}

/// The measured phases (phase 0, the pre-load, runs with `raw` and `full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Raw,
    Full,
    Latency,
}

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }

    /// The service settings that differ from its defaults, for the heading.
    fn service_notes(&self) -> Vec<String> {
        let defaults = KafkaConfig::default();
        let mut notes = Vec::new();
        if self.batch_size != defaults.batch_size {
            notes.push(format!("batch_size={}", self.batch_size));
        }
        if self.batch_timeout != defaults.batch_timeout {
            notes.push(format!("batch_timeout={}ms", self.batch_timeout));
        }
        if let Some(w) = self.workers {
            notes.push(format!("workers={w}"));
        }
        notes.extend(self.rdkafka.iter().map(|(k, v)| format!("{k}={v}")));
        notes
    }
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    if o.runs(Phase::Latency) && o.rate.is_none() && !o.runs(Phase::Full) {
        Options::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the latency phase without the full-path phase needs --rate",
            )
            .exit();
    }
    common::init_tracing();
    // The mock cluster lives on this thread for the whole run.
    let broker = Broker::new(o.brokers.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(o, broker))
}

async fn run(o: Options, broker: Broker) -> anyhow::Result<()> {
    println!(
        "segstream load: {} events, {} customers, {} partitions, {}{}",
        o.events,
        o.customers,
        o.partitions,
        broker.describe(),
        if o.no_flip {
            ", library segments"
        } else {
            ", library + load-flip segments"
        }
    );
    let notes = o.service_notes();
    if !notes.is_empty() {
        println!("service settings: {}", notes.join(" "));
    }

    let t = Instant::now();
    let w = Workload::new(o.customers, o.events, !o.no_flip)?;
    let n = w.payloads.len();
    let bytes: usize = w.payloads.iter().map(String::len).sum();
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
    // With the router the whole backlog passes through the persons topic, and the router
    // can run far ahead of the segment stage: on the MockCluster (5 MB per partition, older
    // records dropped) it gets enough partitions to hold all of it (routed records carry
    // about 200 bytes of routing headers more). Without the router, the input's partitions.
    let shards = match &broker {
        Broker::Mock(_) if !o.no_router => {
            let routed = stored_bytes + n * 200;
            (routed.div_ceil(MOCK_PARTITION_BYTES) as i32).max(o.partitions)
        }
        _ => o.partitions,
    };
    println!(
        "workload:         {n} events ({} bytes mean, generated in {:.1} s); input topics x partitions: backlog {inputs} x {p}, live {} x {p}; backlog shards (persons, changelog partitions): {shards}",
        bytes / n.max(1),
        t.elapsed().as_secs_f64(),
        o.topics.unwrap_or(1),
        p = o.partitions
    );
    let segments = std::env::temp_dir().join(format!("segstream-load-{}.toml", std::process::id()));
    std::fs::write(&segments, &w.segments).context("writing the segments file")?;
    let result = phases(&o, &broker, &w, &segments, inputs, shards).await;
    let _ = std::fs::remove_file(&segments);
    result
}

async fn phases(
    o: &Options,
    broker: &Broker,
    w: &Workload,
    segments: &std::path::Path,
    inputs: usize,
    shards: i32,
) -> anyhow::Result<()> {
    let mut full_rate = None;
    if o.runs(Phase::Raw) || o.runs(Phase::Full) {
        let topics =
            ServiceTopics::create(broker, "load-backlog", inputs, o.partitions, shards).await?;
        backlog::preload(o, broker, &topics, w).await?;
        let raw_rate = if o.runs(Phase::Raw) {
            Some(backlog::raw_consume(o, broker, &topics, w.payloads.len()).await?)
        } else {
            None
        };
        if o.runs(Phase::Full) {
            full_rate = Some(full::full_path(o, broker, &topics, segments, w, raw_rate).await?);
        }
    }
    if o.runs(Phase::Full) {
        full::without_the_service(o, broker, w).await?;
    }
    if o.runs(Phase::Latency) {
        let rate = match (o.rate, full_rate) {
            (Some(r), _) => r,
            (None, Some(f)) => (f / 2.0).round(),
            (None, None) => bail!("no rate for the latency phase"),
        };
        // One input topic unless told otherwise: live, the retention limit of the
        // MockCluster does not matter, and fewer, larger message sets keep its fetch
        // handler (a linear search through a partition's message sets) cheap.
        let topics = ServiceTopics::create(
            broker,
            "load-live",
            o.topics.unwrap_or(1),
            o.partitions,
            o.partitions,
        )
        .await?;
        latency::latency(o, broker, &topics, segments, w, rate).await?;
    }
    Ok(())
}
