//! Exactly-once: one Kafka transaction per batch holding its transitions, dead letters,
//! changelog records, position markers and input offsets (`send_offsets_to_transaction`).
//! A failed transaction is aborted and stops the instance: the engine is ahead of what was
//! committed, and its successor (a restart, or another instance after the rebalance)
//! resumes from the last committed transaction with the changelog as of then.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};

use crate::kafka::{self, KafkaContext, Outgoing};
use crate::metrics::Metrics;
use crate::shared::Shared;

use super::batch::Batch;
use super::progress::Progress;
use super::Clients;

/// How long a transaction's begin/commit/abort may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Commits a batch in one transaction.
pub async fn commit(
    clients: &Clients,
    shared: &Shared,
    batch: Batch,
    progress: &Progress,
) -> anyhow::Result<()> {
    let producer = &clients.producer;
    let tpl = batch.owned_offsets(&progress.owned)?;
    if batch.outgoing.is_empty() && tpl.count() == 0 {
        return Ok(());
    }
    producer
        .begin_transaction()
        .context("beginning a transaction")?;
    let committed: anyhow::Result<()> = async {
        kafka::produce_once(producer, &batch.outgoing, &shared.metrics)
            .await
            .context("producing in the transaction")?;
        kafka::produce_once(producer, &batch.markers, &shared.metrics)
            .await
            .context("producing position markers in the transaction")?;
        if tpl.count() > 0 {
            let group = clients
                .consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &group, TIMEOUT)
                .context("adding the input offsets to the transaction")?;
        }
        producer
            .commit_transaction(TIMEOUT)
            .context("committing the transaction")?;
        Ok(())
    }
    .await;
    if let Err(e) = committed {
        let _ = producer.abort_transaction(TIMEOUT);
        return Err(e.context(
            "transaction aborted: stopping (a restart resumes from the last committed transaction)",
        ));
    }
    if let Some(s) = batch.started {
        shared
            .metrics
            .processing_seconds
            .observe(s.elapsed().as_secs_f64());
    }
    Ok(())
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
        Err(e) => {
            let _ = producer.abort_transaction(TIMEOUT);
            Err(e.into())
        }
    }
}
