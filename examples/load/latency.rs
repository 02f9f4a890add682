//! Phase 3, latency: a fresh service on empty topics, events sent live at a fixed rate,
//! each transition timed on receipt by a separate reader of the output topic.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use prometheus::core::Collector;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_core::time::parse_rfc3339;

use crate::common::kafka::{self, Broker, ServiceTopics};
use crate::common::{percentile, unique};
use crate::service::{self, wait_for, Service};
use crate::workload::{render, Flipper, Template, Workload};
use crate::Options;

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
    let p = kafka::producer(
        brokers,
        &[
            ("linger.ms", &linger_ms.to_string()),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ],
    )?;
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
            let topic = &topics[t.customer % topics.len()];
            kafka::send(&p, BaseRecord::to(topic).key(&t.key).payload(&buf))?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    kafka::finish(&p, Duration::from_secs(120))?;
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

async fn measure(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    segments: &Path,
    w: &Workload,
    rate: f64,
) -> anyhow::Result<Latency> {
    let brokers = broker.bootstrap();
    let svc = Service::start(service::config(o, &brokers, topics, segments)).await?;
    wait_for(
        Duration::from_secs(60),
        "the service to become ready",
        || svc.instance().ready(),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let (b, t, p, stop) = (
            brokers.clone(),
            topics.output.clone(),
            o.partitions,
            stop.clone(),
        );
        std::thread::spawn(move || read_output(&b, &t, p, &stop, ready_tx))
    };
    let _ =
        tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(30))).await;

    let driver = {
        let (b, t, templates, secs, flip, linger) = (
            brokers.clone(),
            topics.inputs.clone(),
            w.templates.clone(),
            o.seconds,
            w.flip,
            o.linger_ms,
        );
        tokio::task::spawn_blocking(move || drive(&b, &t, &templates, rate, secs, flip, linger))
    };
    let (sent, send_secs) = driver.await??;
    let caught_up = wait_for(
        Duration::from_secs(120),
        "the service to consume every event",
        || svc.total() >= sent,
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
    let family = svc.metrics().event_to_transition_seconds.collect();
    let h = family[0].get_metric()[0].get_histogram();
    let ack_buckets = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    let (consumed, rejected) = svc.consumed();
    let (batches, batch_secs) = svc.batches();
    let out = Latency {
        sent,
        send_secs,
        readings,
        emitted,
        consumed: consumed + rejected,
        rejected,
        batches,
        batch_secs,
        ack_buckets,
        ack_count: h.get_sample_count(),
        ack_sum: h.get_sample_sum(),
        problems,
    };
    svc.stop().await?;
    Ok(out)
}

/// Runs the latency phase at `rate` events/s and prints its figures.
pub async fn latency(
    o: &Options,
    broker: &Broker,
    topics: &ServiceTopics,
    segments: &Path,
    w: &Workload,
    rate: f64,
) -> anyhow::Result<()> {
    let l = measure(o, broker, topics, segments, w, rate).await?;
    let r = &l.readings;
    if let Ok(path) = std::env::var("SEGSTREAM_LOAD_SAMPLES") {
        // ms since the reader started, latency ms, event -> service send ms
        let mut csv = String::from("t_ms,latency_ms,until_sent_ms\n");
        for (s, u) in r.samples.iter().zip(&r.until_sent) {
            let _ = writeln!(csv, "{:.3},{:.3},{u}", s.0, s.1);
        }
        std::fs::write(&path, csv).with_context(|| format!("writing {path}"))?;
    }
    let sorted = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
    let pct = |v: &[f64], q: f64| fmt_ms(percentile(v, q).unwrap_or(f64::NAN));
    let max = |v: &[f64]| fmt_ms(v.last().copied().unwrap_or(f64::NAN));

    let mut lat: Vec<f64> = r.samples.iter().map(|s| s.1).collect();
    sorted(&mut lat);
    println!(
        "latency @ {rate:.0} events/s for {} s: p50 {}  p99 {}  max {}  (n={})",
        o.seconds,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        max(&lat),
        lat.len()
    );
    println!(
        "  p90 {}  p99.9 {}  mean {}",
        pct(&lat, 0.90),
        pct(&lat, 0.999),
        fmt_ms(lat.iter().sum::<f64>() / lat.len().max(1) as f64)
    );
    // Steady state: without the first second (the first fetches of an idle consumer).
    let mut steady: Vec<f64> = r
        .samples
        .iter()
        .filter(|s| s.0 >= 1000.0)
        .map(|s| s.1)
        .collect();
    sorted(&mut steady);
    println!(
        "  after the first second: p50 {}  p99 {}  max {}  (n={})",
        pct(&steady, 0.50),
        pct(&steady, 0.99),
        max(&steady),
        steady.len()
    );
    let mut sent_part: Vec<f64> = r
        .until_sent
        .iter()
        .copied()
        .filter(|u| !u.is_nan())
        .collect();
    sorted(&mut sent_part);
    let mut rest: Vec<f64> = r
        .samples
        .iter()
        .zip(&r.until_sent)
        .filter(|(_, u)| !u.is_nan())
        .map(|(s, u)| s.1 - u)
        .collect();
    sorted(&mut rest);
    println!(
        "  split at the service's send (output CreateTime): event -> send p50 {} p99 {}; send -> received p50 {} p99 {}",
        pct(&sent_part, 0.50),
        pct(&sent_part, 0.99),
        pct(&rest, 0.50),
        pct(&rest, 0.99),
    );
    println!(
        "  sent {} events in {:.1} s ({:.0} events/s); service consumed {} ({} rejected or late); {} transitions emitted, {} read ({} by timers, {} unreadable)",
        l.sent,
        l.send_secs,
        l.sent as f64 / l.send_secs,
        l.consumed,
        l.rejected,
        l.emitted,
        r.samples.len() as u64 + r.timers + r.unreadable,
        r.timers,
        r.unreadable
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
    Ok(())
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
