//! Producing a set of records until every one is acknowledged (at-least-once), or once
//! inside a transaction (exactly-once).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use tracing::warn;

use crate::metrics::Metrics;

use super::{KafkaContext, Outgoing};

/// Produces every record and waits until each is acknowledged, re-sending failures with
/// backoff (up to 5 s between rounds): it returns only when all are delivered, or on an
/// error that retrying cannot fix (an invalid record). A shutdown during a broker outage
/// ends by the shutdown deadline.
pub async fn produce_all(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    produce(producer, records, metrics, true).await
}

/// Produces `records` once and waits for every acknowledgement; the first failed delivery
/// is the error (inside a transaction, which then has to be aborted: no retry).
pub async fn produce_once(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> Result<(), KafkaError> {
    produce(producer, records, metrics, false).await
}

async fn produce(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
    retry: bool,
) -> Result<(), KafkaError> {
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        let mut in_flight: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(pending.len());
        for &i in &pending {
            loop {
                match producer.send_result(records[i].record()) {
                    Ok(f) => {
                        in_flight.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(10));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let mut failed = Vec::new();
        for (i, f) in in_flight {
            match f.await {
                Ok(Ok(_)) => {
                    let r = &records[i];
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
                Ok(Err((e, _))) if !retry => return Err(e),
                Ok(Err((e, _))) => {
                    warn!(error = %e, topic = %records[i].topic, "delivery failed; will retry");
                    failed.push(i);
                }
                Err(_) if !retry => return Err(KafkaError::Canceled),
                Err(_) => failed.push(i),
            }
        }
        if !failed.is_empty() {
            metrics.produce_retries.inc_by(failed.len() as u64);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        pending = failed;
    }
    Ok(())
}
