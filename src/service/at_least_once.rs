//! At-least-once: a batch's effects are acknowledged before its input offsets are stored
//! (then auto-committed), the pattern of rust-rdkafka's `at_least_once` example. The
//! committer below runs beside the worker's loop: the next batch is applied while one is
//! acknowledged.
//!
//! A [`Pipeline`] hands each applied batch to the [`committer`], which runs beside the
//! worker's loop. Transitions, dead letters and persons-topic records go to the producer
//! at once; the committer then, batch after batch in order:
//! 1. sends the batch's changelog records (only after the previous batch's position
//!    markers are acknowledged, so a marker never stands behind a later batch's records),
//! 2. waits until every record of the batch is acknowledged,
//! 3. sends its position markers and waits for them ("everything before this marker is
//!    in the changelog, and its outputs are delivered"),
//! 4. stores the batch's input offsets.
//!
//! Changelog records and markers of a partition revoked meanwhile are dropped right before
//! they would be sent (its new owner writes that partition now), and a revocation waits
//! for what was already handed to the producer (`KafkaContext::pre_rebalance`). A crash
//! re-reads the uncommitted tail; a transition produced twice carries the same
//! `transition_id`.

use std::time::Instant;

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::kafka::produce::{send_all, InFlight, KEEP_ALL};
use crate::kafka::Outgoing;
use crate::shared::Shared;

use super::batch::Batch;
use super::progress::Progress;
use super::Clients;

/// One applied batch on its way through the [`committer`].
pub struct Pending {
    /// Transitions, dead letters, persons-topic records: already handed to the producer.
    output: Vec<Outgoing>,
    sent: InFlight,
    /// Changelog records, sent by the committer in order.
    state: Vec<Outgoing>,
    markers: Vec<Outgoing>,
    offsets: TopicPartitionList,
    started: Option<Instant>,
}

/// What the loop hands the committer.
pub enum Step {
    Batch(Box<Pending>),
    /// Answered once everything handed over before it is committed.
    Drain(oneshot::Sender<()>),
}

/// The loop's end of the pipeline.
pub struct Pipeline {
    tx: mpsc::Sender<Step>,
}

/// Batches handed over but not taken by the committer yet: one, so at most two batches'
/// effects are in flight while a third is applied.
const DEPTH: usize = 1;

impl Pipeline {
    /// A pipeline and the receiving end for [`committer`].
    pub fn new() -> (Pipeline, mpsc::Receiver<Step>) {
        let (tx, rx) = mpsc::channel(DEPTH);
        (Pipeline { tx }, rx)
    }

    /// Hands a batch over: its outputs go to the producer now, the rest to the committer.
    /// Waits only while the committer is a whole batch behind (backpressure).
    pub async fn push(
        &self,
        clients: &Clients,
        shared: &Shared,
        batch: Batch,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        let offsets = batch.owned_offsets(progress)?;
        if batch.outgoing.is_empty() && batch.markers.is_empty() && offsets.count() == 0 {
            return Ok(());
        }
        let changelog = &shared.config.kafka.changelog_topic;
        let (state, output): (Vec<Outgoing>, Vec<Outgoing>) = batch
            .outgoing
            .into_iter()
            .partition(|o| &o.topic == changelog);
        let sent = send_all(&clients.producer, &output, KEEP_ALL, &shared.metrics).await;
        let pending = Pending {
            output,
            sent,
            state,
            markers: batch.markers,
            offsets,
            started: batch.started,
        };
        self.tx
            .send(Step::Batch(Box::new(pending)))
            .await
            .map_err(|_| anyhow::anyhow!("the committer stopped"))
    }

    /// Waits until everything handed over is committed.
    pub async fn drain(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Step::Drain(tx))
            .await
            .map_err(|_| anyhow::anyhow!("the committer stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the committer stopped"))
    }
}

/// Commits the batches handed over, in order (see the module documentation), until the
/// pipeline is dropped.
pub async fn committer(clients: &Clients, shared: &Shared, mut steps: mpsc::Receiver<Step>) {
    let m = &shared.metrics;
    let producer = &clients.producer;
    let owned = |o: &Outgoing| o.partition.is_none_or(|p| owns(shared, p));
    while let Some(step) = steps.recv().await {
        let p = match step {
            Step::Drain(reply) => {
                let _ = reply.send(());
                continue;
            }
            Step::Batch(p) => p,
        };
        let state = send_all(producer, &p.state, &owned, m).await;
        p.sent.complete(producer, &p.output, KEEP_ALL, m).await;
        state.complete(producer, &p.state, &owned, m).await;
        // Only once every record is acknowledged: a marker never stands for a missing one.
        send_all(producer, &p.markers, &owned, m)
            .await
            .complete(producer, &p.markers, &owned, m)
            .await;
        store_offsets(clients, shared, &p.offsets);
        if let Some(s) = p.started {
            m.processing_seconds.observe(s.elapsed().as_secs_f64());
        }
    }
}

/// Whether the worker's consumer still owns partition number `p`.
fn owns(shared: &Shared, p: i32) -> bool {
    crate::shared::lock(&shared.kafka.owned)
        .iter()
        .any(|(_, q)| *q == p)
}

/// Stores the offsets of the partitions still owned (a revoked one is read again by its
/// new owner from its last commit).
fn store_offsets(clients: &Clients, shared: &Shared, offsets: &TopicPartitionList) {
    let owned = crate::shared::lock(&shared.kafka.owned).clone();
    let mut tpl = TopicPartitionList::with_capacity(offsets.count());
    for e in offsets.elements() {
        if owned.contains(&(e.topic().to_string(), e.partition())) {
            let _ = tpl.add_partition_offset(e.topic(), e.partition(), e.offset());
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = clients.consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner re-reads from the last commit.
            warn!(error = %e, "storing offsets failed");
        }
    }
}
