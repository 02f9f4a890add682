//! One worker: a member of the consumer group with its own consumer, producer, changelog
//! reader and engine, on a thread of its own (Kafka Streams' stream thread). The instance
//! starts `engine.workers` of them ([`super::run`]); the group spreads the partitions over
//! them as over instances, so rebalances, restores, position markers, exactly-once and the
//! identity handoffs work per worker exactly as they do between instances.
//!
//! The loop reads a batch and applies it ([`super::batch`]), then hands it to the commit
//! path: at-least-once pipelines the produce ([`super::at_least_once::Pipeline`]: the next
//! batch is applied while the previous one is acknowledged), exactly-once commits one
//! transaction per batch. Reloads and shutdown are handled between batches.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::shared::{ReloadRequest, Shared};

use super::{at_least_once, backpressure, batch, exactly_once, progress, reload, Clients};

/// Everything a worker needs to run.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub clients: Clients,
    pub reloads: mpsc::Receiver<ReloadRequest>,
    /// The input topics it subscribes to (the persons topic with the router).
    pub topics: Vec<String>,
    /// With the router: every input partition's sequence (each a clock of every shard).
    pub sources: Vec<String>,
}

/// Runs the worker until `stop` is cancelled, then drains, commits and returns.
pub async fn run(worker: Worker, stop: CancellationToken) -> anyhow::Result<()> {
    let Worker {
        shared,
        clients,
        mut reloads,
        topics,
        sources,
    } = worker;
    let config = &shared.config;
    if config.kafka.exactly_once {
        clients
            .producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| {
                anyhow::anyhow!("initialising transactions (does the broker support them?): {e}")
            })?;
    }
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    clients
        .consumer
        .subscribe(&topic_refs)
        .map_err(|e| anyhow::anyhow!("subscribing to the input topics: {e}"))?;
    *crate::shared::lock(&shared.kafka.producer) = Some(clients.producer.clone());
    let mut progress = progress::Progress::new(sources);
    let (pipeline, steps) = at_least_once::Pipeline::new();
    let committer = at_least_once::committer(&clients, &shared, steps);
    let processing = process(
        &clients,
        &shared,
        &mut progress,
        &mut reloads,
        pipeline,
        &stop,
    );
    let ((), result) = tokio::join!(committer, processing);
    info!(
        worker = shared.worker,
        "worker stopping: flushing and committing"
    );
    shared.set_ready(false);
    let _ = clients
        .producer
        .flush(Duration::from_millis(config.shutdown_deadline as u64 / 2));
    match clients.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => info!(worker = shared.worker, "offsets committed"),
        // Nothing stored since the last automatic commit: nothing to do.
        Err(e) if super::router::nothing_to_commit(&e) => {}
        Err(e) => warn!(error = %e, "final commit failed (offsets stored earlier stay)"),
    }
    clients.consumer.unsubscribe();
    *crate::shared::lock(&shared.kafka.producer) = None;
    result
}

/// The loop: batches until `stop`, reloads between them; at the end, what was handed to
/// the committer is committed (within half the shutdown deadline) and the pipeline closed.
async fn process(
    clients: &Clients,
    shared: &Shared,
    progress: &mut progress::Progress,
    reloads: &mut mpsc::Receiver<ReloadRequest>,
    pipeline: at_least_once::Pipeline,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let exactly_once = shared.config.kafka.exactly_once;
    let result: anyhow::Result<()> = async {
        loop {
            // Another worker's output stalled: this one reads nothing either.
            backpressure::while_others_stalled(&clients.consumer, shared, stop).await?;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(req) = reloads.recv() => {
                    // The reload's transitions follow everything produced before it.
                    pipeline.drain().await?;
                    let outcome = reload::reload(clients, shared, &req.file, &req.text).await;
                    let _ = req.reply.send(outcome);
                }
                batch = batch::read_batch(clients, shared, progress) => {
                    let batch = batch?;
                    if exactly_once {
                        let commit = exactly_once::commit(clients, shared, batch, progress);
                        backpressure::while_committing(&clients.consumer, shared, commit).await?;
                    } else {
                        // The next batches are read and applied while this one is
                        // acknowledged; `push` waits only while the committer is several
                        // batches behind (then the input is paused if that takes long).
                        let step = pipeline.push(clients, shared, batch, progress);
                        backpressure::while_committing(&clients.consumer, shared, step).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    if result.is_ok() {
        let deadline = Duration::from_millis(shared.config.shutdown_deadline as u64 / 2);
        if tokio::time::timeout(deadline, pipeline.drain())
            .await
            .is_err()
        {
            warn!("the last batches were not acknowledged before the shutdown deadline");
        }
    }
    result
}
