//! Phase 2, the full path: the service over the backlog; then, for comparison, the engine
//! alone and the service's produce-and-wait alone.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use segstream::kafka::Outgoing;
use segstream::metrics::Metrics;
use segstream_core::transition::Transition;

use crate::common::kafka::{self, Broker, ServiceTopics};
use crate::common::{self, percentile, unique};
use crate::service::{self, wait_for, Service};
use crate::workload::Workload;
use crate::Options;

struct Full {
    /// Start of the service to its first consumed event, s.
    join: f64,
    consumed_secs: f64,
    /// With the router: first event consumed to every event routed, s.
    routed_secs: Option<f64>,
    acked_secs: f64,
    longest_pause: f64,
    transitions: u64,
    rejected: u64,
    reasons: String,
    batches: u64,
    batch_secs: f64,
    /// Ids linked to another person's canonical id, and the identity map's bytes.
    linked: (usize, usize),
}

/// The service over the backlog; prints the figures (against the raw rate, if measured)
/// and returns the full-path rate, events/s.
pub async fn full_path(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    segments: &Path,
    w: &Workload,
    raw_rate: Option<f64>,
) -> anyhow::Result<f64> {
    let n = w.payloads.len();
    let full = measure(o, broker, topics, segments, n as u64).await?;
    let rate = n as f64 / full.acked_secs;
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
    if let Some(r) = full.routed_secs {
        println!(
            "  routed:         {:.0} events/s ({:.3} s: every event on the persons topic, acknowledged or not)",
            n as f64 / r,
            r
        );
    }
    println!(
        "  identity:       router {}; {} ids linked to a person, identity map {} bytes ({:.0} bytes per linked id)",
        if o.no_router { "off" } else { "on" },
        full.linked.0,
        full.linked.1,
        full.linked.1 as f64 / full.linked.0.max(1) as f64
    );
    if full.rejected > 0 {
        println!(
            "  WARNING: {} events rejected or late (dead letters: {})",
            full.rejected, full.reasons
        );
    }
    Ok(rate)
}

async fn measure(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    segments: &Path,
    n: u64,
) -> anyhow::Result<Full> {
    let mut config = service::config(o, &broker.bootstrap(), topics, segments);
    // Time moves only with event time (the backlog is weeks old): no wall-clock timers.
    config.engine.idle_lag = 10 * 365 * 86_400_000;
    let started = Instant::now();
    let svc = Service::start(config).await?;
    let first = wait_for(Duration::from_secs(120), "the first event", || {
        svc.total() > 0
    })
    .await?;
    // Every millisecond: progress, and the longest time without any.
    let mut seen = svc.total();
    let mut moved = first;
    let mut longest_pause = Duration::ZERO;
    let mut routed: Option<Instant> = None;
    let consumed = loop {
        let now_total = svc.total();
        let now = Instant::now();
        if routed.is_none() && !o.no_router && svc.routed() >= n {
            routed = Some(now);
        }
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
    let (batches, batch_secs) = svc.batches();
    let out = Full {
        join: (first - started).as_secs_f64(),
        consumed_secs: (consumed - first).as_secs_f64(),
        routed_secs: routed.map(|r| (r - first).as_secs_f64()),
        acked_secs: (acked - first).as_secs_f64(),
        longest_pause: longest_pause.as_secs_f64(),
        transitions: emitted,
        rejected: svc.consumed().1,
        reasons: svc.dead_letter_reasons(),
        batches,
        batch_secs,
        linked: {
            let (mut ids, mut bytes) = (0, 0);
            svc.instance().each(|engine| {
                ids += engine.linked_ids();
                bytes += engine.identity_bytes();
            });
            (ids, bytes)
        },
    };
    svc.stop().await?;
    Ok(out)
}

/// The comparisons: the engine alone (parse and apply, then also encode), and the
/// service's produce-and-wait alone on batches of as many transitions as a batch of events
/// causes on average.
pub async fn without_the_service(o: &Options, broker: &Broker, w: &Workload) -> anyhow::Result<()> {
    let n = w.payloads.len();
    let (plain, encoded, transitions, kept) =
        engine_only(&w.payloads, &w.segments, 21 * o.batch_size)?;
    println!(
        "engine only:      {:.0} events/s parse+apply, {:.0} events/s with encoding the {transitions} transitions (one thread, no Kafka)",
        n as f64 / plain,
        n as f64 / encoded
    );
    // As many transitions per batch as a full batch of events causes on average.
    let per_batch = ((transitions as f64 / n as f64) * o.batch_size as f64).round() as usize;
    if per_batch > 0 {
        let mut times = produce_wait(o, broker, &kept, per_batch).await?;
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        println!(
            "produce+ack only: {:.1} ms mean, {:.1} ms p50, {:.1} ms max per batch of {per_batch} transitions ({} batches; the service's producer and produce_all), i.e. {:.0} batches/s",
            mean * 1000.0,
            percentile(&times, 0.5).unwrap_or(f64::NAN) * 1000.0,
            times.last().copied().unwrap_or(f64::NAN) * 1000.0,
            times.len(),
            1.0 / mean
        );
    }
    Ok(())
}

/// Parse, apply and encode the backlog with no Kafka at all: the engine's share, in
/// seconds without and with encoding. Also returns the transition count and the first
/// `keep` transitions.
fn engine_only(
    payloads: &[String],
    segments: &str,
    keep: usize,
) -> anyhow::Result<(f64, f64, u64, Vec<Transition>)> {
    let mut kept = Vec::new();
    let mut run = |encode: bool| -> anyhow::Result<(f64, u64)> {
        let mut engine = common::engine("load-segments.toml", segments)?;
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
    transitions: &[Transition],
    per_batch: usize,
) -> anyhow::Result<Vec<f64>> {
    let topic = unique("load-produce-probe");
    broker.create_topic(&topic, o.partitions, false).await?;
    let k = kafka::kafka_config(&broker.bootstrap(), &o.rdkafka);
    let metrics = Arc::new(Metrics::new());
    let producer = segstream::kafka::producer(&k, kafka::context(metrics.clone()))?;
    let outgoing: Vec<Outgoing> = transitions
        .iter()
        .map(|t| Outgoing::transition(t, &topic, &k.cloudevents_source))
        .collect();
    let mut times = Vec::new();
    for (i, batch) in outgoing.chunks(per_batch.max(1)).enumerate() {
        let start = Instant::now();
        // Returns when every record is acknowledged.
        segstream::kafka::produce_all(&producer, batch, &metrics).await;
        // The first batch pays for connecting and metadata.
        if i > 0 && batch.len() == per_batch {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}
