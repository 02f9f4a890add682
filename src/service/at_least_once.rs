//! At-least-once: a batch's records are produced and acknowledged before its input offsets
//! are stored (then auto-committed), the pattern of rust-rdkafka's `at_least_once`
//! example. A crash re-reads the uncommitted tail; a transition produced twice carries the
//! same `transition_id`.

use rdkafka::consumer::Consumer;
use tracing::warn;

use crate::kafka;
use crate::shared::Shared;

use super::batch::Batch;
use super::progress::Progress;
use super::Clients;

/// Produces what a batch caused, waits for every acknowledgement, then the position
/// markers, then stores the batch's offsets.
pub async fn commit(
    clients: &Clients,
    shared: &Shared,
    batch: Batch,
    progress: &Progress,
) -> anyhow::Result<()> {
    kafka::produce_all(&clients.producer, &batch.outgoing, &shared.metrics).await;
    // Only once every record is acknowledged: a marker never stands for a missing record.
    kafka::produce_all(&clients.producer, &batch.markers, &shared.metrics).await;
    let tpl = batch.owned_offsets(progress)?;
    if tpl.count() > 0 {
        if let Err(e) = clients.consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner re-reads from the last commit.
            warn!(error = %e, "storing offsets failed");
        }
    }
    if let Some(s) = batch.started {
        shared
            .metrics
            .processing_seconds
            .observe(s.elapsed().as_secs_f64());
    }
    Ok(())
}
