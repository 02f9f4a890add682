//! Producing a set of records until every one is acknowledged (at-least-once), or once
//! inside a transaction (exactly-once).
//!
//! A record the producer or the broker refuses for what it is (too large, invalid) is
//! replaced by its fallback, when it has one (a dead letter's smaller forms); every other
//! failure is retried with backoff. Nothing a message contains can make producing fail
//! for good.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use tracing::{error, warn};

use crate::metrics::Metrics;

use super::{KafkaContext, Outgoing};

/// Whether an error refuses the record itself (retrying the same record cannot succeed).
pub fn refused_for_content(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// A record that failed inside a transaction.
#[derive(Debug)]
pub struct Failed {
    /// Its index in the records given.
    pub index: usize,
    pub error: KafkaError,
}

/// Produces every record and waits until each is acknowledged, re-sending failures with
/// backoff (up to 5 s between rounds); a record refused for its content is replaced by its
/// fallback. Returns when all are delivered: during a broker or topic outage it keeps
/// trying (a shutdown ends it by the shutdown deadline).
pub async fn produce_all(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) {
    // Per record, how many fallbacks down it is.
    let mut level = vec![0usize; records.len()];
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let mut in_flight: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        let mut degraded = Vec::new();
        for &i in &pending {
            match send(producer, form(&records[i], level[i])).await {
                Ok(f) => in_flight.push((i, f)),
                Err(e) => sort_failure(
                    records,
                    &mut level,
                    i,
                    e,
                    metrics,
                    &mut failed,
                    &mut degraded,
                ),
            }
        }
        for (i, f) in in_flight {
            match f.await {
                Ok(Ok(_)) => delivered(form(&records[i], level[i]), metrics),
                Ok(Err((e, _))) => sort_failure(
                    records,
                    &mut level,
                    i,
                    e,
                    metrics,
                    &mut failed,
                    &mut degraded,
                ),
                Err(_) => failed.push(i),
            }
        }
        if !failed.is_empty() {
            metrics.produce_retries.inc_by(failed.len() as u64);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        // A smaller form goes out at once.
        failed.extend(degraded);
        pending = failed;
    }
}

/// Produces `records` once and waits for every acknowledgement; the first failed delivery
/// is the error (inside a transaction, which then has to be aborted).
pub async fn produce_once(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> Result<(), Failed> {
    let mut in_flight = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        match send(producer, r).await {
            Ok(f) => in_flight.push((index, f)),
            Err(error) => return Err(Failed { index, error }),
        }
    }
    for (index, f) in in_flight {
        match f.await {
            Ok(Ok(_)) => delivered(&records[index], metrics),
            Ok(Err((error, _))) => return Err(Failed { index, error }),
            Err(_) => {
                return Err(Failed {
                    index,
                    error: KafkaError::Canceled,
                })
            }
        }
    }
    Ok(())
}

/// The record at fallback `level` (0: the record itself).
fn form(r: &Outgoing, level: usize) -> &Outgoing {
    let mut r = r;
    for _ in 0..level {
        match &r.fallback {
            Some(f) => r = f,
            None => break,
        }
    }
    r
}

/// Hands a record to the producer, waiting while its queue is full.
async fn send(
    producer: &FutureProducer<KafkaContext>,
    r: &Outgoing,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(r.record()) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A failed record: to its next smaller form if it was refused for its content and has
/// one, otherwise to be retried after the backoff.
fn sort_failure(
    records: &[Outgoing],
    level: &mut [usize],
    i: usize,
    e: KafkaError,
    metrics: &Metrics,
    failed: &mut Vec<usize>,
    degraded: &mut Vec<usize>,
) {
    let r = form(&records[i], level[i]);
    if refused_for_content(&e) {
        if r.fallback.is_some() {
            warn!(error = %e, topic = %r.topic, size = r.size(), "record refused; sending its smaller form");
            metrics.dead_letters_degraded.inc();
            level[i] += 1;
            degraded.push(i);
            return;
        }
        error!(error = %e, topic = %r.topic, size = r.size(), "record refused and it has no smaller form; retrying");
    } else {
        warn!(error = %e, topic = %r.topic, "delivery failed; will retry");
    }
    failed.push(i);
}

/// Counts a delivered record.
fn delivered(r: &Outgoing, metrics: &Metrics) {
    if let Some(t) = r.event_time {
        let lag = (crate::clock::now_millis() - t).max(0) as f64 / 1000.0;
        metrics.event_to_transition_seconds.observe(lag);
    }
    if let Some((seg, dir)) = &r.transition {
        metrics
            .transitions
            .with_label_values(&[&**seg, dir.as_str()])
            .inc();
    }
}
