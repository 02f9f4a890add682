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

/// Records handed to the producer and not yet acknowledged ([`send_all`]); finish with
/// [`InFlight::complete`].
#[derive(Default)]
pub struct InFlight {
    /// Per record, how many fallbacks down it is.
    level: Vec<usize>,
    sent: Vec<(usize, DeliveryFuture)>,
    /// Records the producer would not take (to be retried).
    failed: Vec<usize>,
    /// Records refused for their content, to be sent at once in a smaller form.
    degraded: Vec<usize>,
}

/// Which records to (still) send: checked right before each record is handed to the
/// producer, first time and retries alike (a changelog record of a partition revoked
/// meanwhile is dropped: its new owner writes that partition now).
pub type Keep<'a> = &'a (dyn Fn(&Outgoing) -> bool + Sync);

/// Sends everything.
pub const KEEP_ALL: Keep<'static> = &|_| true;

/// Hands every record to the producer without waiting for acknowledgements (only while
/// its queue is full).
pub async fn send_all(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    keep: Keep<'_>,
    metrics: &Metrics,
) -> InFlight {
    let mut f = InFlight {
        level: vec![0; records.len()],
        ..Default::default()
    };
    f.send(
        producer,
        records,
        (0..records.len()).collect(),
        keep,
        metrics,
    )
    .await;
    f
}

impl InFlight {
    async fn send(
        &mut self,
        producer: &FutureProducer<KafkaContext>,
        records: &[Outgoing],
        pending: Vec<usize>,
        keep: Keep<'_>,
        metrics: &Metrics,
    ) {
        self.sent.reserve(pending.len());
        for i in pending {
            let r = form(&records[i], self.level[i]);
            if !keep(r) {
                continue;
            }
            match send(producer, r).await {
                Ok(f) => self.sent.push((i, f)),
                Err(e) => sort_failure(
                    records,
                    &mut self.level,
                    i,
                    e,
                    metrics,
                    &mut self.failed,
                    &mut self.degraded,
                ),
            }
        }
    }

    /// Waits until every record is acknowledged, re-sending failures with backoff (up to
    /// 5 s between rounds); a record refused for its content is replaced by its fallback.
    /// `records` are the ones given to [`send_all`].
    pub async fn complete(
        mut self,
        producer: &FutureProducer<KafkaContext>,
        records: &[Outgoing],
        keep: Keep<'_>,
        metrics: &Metrics,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            for (i, f) in std::mem::take(&mut self.sent) {
                match f.await {
                    Ok(Ok(_)) => delivered(form(&records[i], self.level[i]), metrics),
                    Ok(Err((e, _))) => sort_failure(
                        records,
                        &mut self.level,
                        i,
                        e,
                        metrics,
                        &mut self.failed,
                        &mut self.degraded,
                    ),
                    Err(_) => self.failed.push(i),
                }
            }
            if self.failed.is_empty() && self.degraded.is_empty() {
                return;
            }
            if !self.failed.is_empty() {
                metrics.produce_retries.inc_by(self.failed.len() as u64);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            // A smaller form goes out at once.
            let mut pending = std::mem::take(&mut self.failed);
            pending.append(&mut self.degraded);
            self.send(producer, records, pending, keep, metrics).await;
        }
    }
}

/// Produces every record and waits until each is acknowledged ([`send_all`], then
/// [`InFlight::complete`]). Returns when all are delivered: during a broker or topic
/// outage it keeps trying (a shutdown ends it by the shutdown deadline).
pub async fn produce_all(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) {
    send_all(producer, records, KEEP_ALL, metrics)
        .await
        .complete(producer, records, KEEP_ALL, metrics)
        .await;
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
