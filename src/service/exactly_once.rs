//! Exactly-once: one Kafka transaction per batch holding its transitions, dead letters,
//! changelog records, position markers and input offsets (`send_offsets_to_transaction`).
//! A failed transaction is aborted and stops the instance: the engine is ahead of what was
//! committed, and its successor (a restart, or another instance after the rebalance)
//! resumes from the last committed transaction with the changelog as of then.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};
use tracing::warn;

use crate::kafka::{self, KafkaContext, Outgoing};
use crate::metrics::Metrics;
use crate::shared::Shared;

use super::batch::Batch;
use super::progress::Progress;
use super::Clients;

/// How long a transaction's begin/commit/abort may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a batch's transaction is tried again with a refused dead letter replaced by
/// its smaller form.
const MAX_ATTEMPTS: usize = 4;

/// Why one attempt failed.
enum Attempt {
    /// `outgoing[index]` was refused for its content and has a smaller form.
    Refused(usize),
    /// Anything else: the instance stops.
    Failed(anyhow::Error),
}

/// Commits a batch in one transaction. A dead letter the producer or broker refuses for its
/// size aborts the attempt; the batch is committed again with that dead letter's smaller
/// form (the engine is not involved: the batch's records are the same).
pub async fn commit(
    clients: &Clients,
    shared: &Shared,
    mut batch: Batch,
    progress: &Progress,
) -> anyhow::Result<()> {
    let tpl = batch.owned_offsets(progress)?;
    if batch.outgoing.is_empty() && tpl.count() == 0 {
        return Ok(());
    }
    for _ in 0..MAX_ATTEMPTS {
        match attempt(clients, shared, &batch, &tpl).await {
            Ok(()) => {
                if let Some(s) = batch.started {
                    shared
                        .metrics
                        .processing_seconds
                        .observe(s.elapsed().as_secs_f64());
                }
                return Ok(());
            }
            Err(Attempt::Refused(index)) => {
                let smaller = batch.outgoing[index].fallback.take();
                if let Some(smaller) = smaller {
                    shared.metrics.dead_letters_degraded.inc();
                    batch.outgoing[index] = *smaller;
                }
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    anyhow::bail!("transaction refused {MAX_ATTEMPTS} times: stopping")
}

/// One transaction: begin, produce, add the offsets, commit; aborted on any failure.
async fn attempt(
    clients: &Clients,
    shared: &Shared,
    batch: &Batch,
    tpl: &rdkafka::TopicPartitionList,
) -> Result<(), Attempt> {
    let producer = &clients.producer;
    let failed = |e: anyhow::Error| {
        let _ = producer.abort_transaction(TIMEOUT);
        Attempt::Failed(e.context(
            "transaction aborted: stopping (a restart resumes from the last committed transaction)",
        ))
    };
    producer
        .begin_transaction()
        .context("beginning a transaction")
        .map_err(Attempt::Failed)?;
    if let Err(f) = kafka::produce_once(producer, &batch.outgoing, &shared.metrics).await {
        if kafka::produce::refused_for_content(&f.error)
            && batch.outgoing[f.index].fallback.is_some()
        {
            warn!(error = %f.error, "a dead letter was refused: committing the batch again with its smaller form");
            producer
                .abort_transaction(TIMEOUT)
                .context("aborting the transaction")
                .map_err(Attempt::Failed)?;
            return Err(Attempt::Refused(f.index));
        }
        return Err(failed(
            anyhow::Error::new(f.error).context("producing in the transaction"),
        ));
    }
    let committed: anyhow::Result<()> = async {
        kafka::produce_once(producer, &batch.markers, &shared.metrics)
            .await
            .map_err(|f| f.error)
            .context("producing position markers in the transaction")?;
        if tpl.count() > 0 {
            let group = clients
                .consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            producer
                .send_offsets_to_transaction(tpl, &group, TIMEOUT)
                .context("adding the input offsets to the transaction")?;
        }
        producer
            .commit_transaction(TIMEOUT)
            .context("committing the transaction")?;
        Ok(())
    }
    .await;
    committed.map_err(failed)
}

/// Produces records in a transaction of their own (aborted on failure): a reload's
/// transitions.
pub async fn produce_transaction(
    producer: &FutureProducer<KafkaContext>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> anyhow::Result<()> {
    producer.begin_transaction()?;
    let r = kafka::produce_once(producer, records, metrics).await;
    match r {
        Ok(()) => Ok(producer.commit_transaction(TIMEOUT)?),
        Err(f) => {
            let _ = producer.abort_transaction(TIMEOUT);
            Err(f.error.into())
        }
    }
}
