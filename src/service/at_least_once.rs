//! At-least-once: a batch's effects are acknowledged before its input offsets are stored
//! (then auto-committed), the pattern of rust-rdkafka's `at_least_once` example. The
//! committer below runs beside the worker's loop: the next batch is applied while one is
//! acknowledged.
//!
//! A [`Pipeline`] hands each applied batch to the [`committer`], which runs beside the
//! worker's loop. Transitions, dead letters and persons-topic records go to the producer
//! at once; the committer then, in rounds of the batches waiting for it (one batch when it
//! keeps up, up to [`ROUND_MAX`] when acknowledgements are slower than the loop), in order:
//! 1. sends the round's changelog records (only after the previous round's position
//!    markers are acknowledged, so a marker never stands behind a later batch's records),
//! 2. waits until every record of the round is acknowledged,
//! 3. sends the round's position markers, the newest one per partition (a batch writes a
//!    marker for every partition it read or wrote state to, so no later record of that
//!    partition is in the round), and waits for them ("everything before this marker is
//!    in the changelog, and its outputs are delivered"),
//! 4. stores the input offsets of the round's newest batch that read each partition.
//!
//! Committing a round costs two acknowledgement round trips whatever its size: batch after
//! batch, those round trips bounded the throughput (the loop waited for the committer).
//!
//! Changelog records and markers of a partition revoked meanwhile are dropped right before
//! they would be sent (its new owner writes that partition now), and a revocation waits
//! for what was already handed to the producer (`KafkaContext::pre_rebalance`). A crash
//! re-reads the uncommitted tail; a transition produced twice carries the same
//! `transition_id`.

use std::time::Instant;

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
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

/// Batches handed over but not taken by the committer yet: while the committer is this
/// many batches behind, the loop waits (and pauses the input if that takes long), so at
/// most `DEPTH` + [`ROUND_MAX`] batches' effects are in flight while one more is applied.
const DEPTH: usize = 8;

/// At most this many batches are committed in one round.
const ROUND_MAX: usize = 8;

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
/// pipeline is dropped. Batches that queued up while a round was committed are committed
/// together in the next: their changelog records in one go, then only the newest marker of
/// each partition, then the newest offsets (what committing them one by one would have
/// left stored), so that a slow acknowledgement makes the rounds larger instead of the
/// input slower.
pub async fn committer(clients: &Clients, shared: &Shared, mut steps: mpsc::Receiver<Step>) {
    while let Some(step) = steps.recv().await {
        let first = match step {
            Step::Drain(reply) => {
                let _ = reply.send(());
                continue;
            }
            Step::Batch(p) => p,
        };
        let mut round = vec![*first];
        let mut drained = None;
        while round.len() < ROUND_MAX {
            match steps.try_recv() {
                Ok(Step::Batch(p)) => round.push(*p),
                // Answered once the batches before it are committed.
                Ok(Step::Drain(reply)) => {
                    drained = Some(reply);
                    break;
                }
                Err(_) => break,
            }
        }
        commit_round(clients, shared, round).await;
        if let Some(reply) = drained {
            let _ = reply.send(());
        }
    }
}

/// Commits consecutive batches as one (see [`committer`]).
async fn commit_round(clients: &Clients, shared: &Shared, round: Vec<Pending>) {
    let m = &shared.metrics;
    let producer = &clients.producer;
    let owned = |o: &Outgoing| o.partition.is_none_or(|p| owns(shared, p));
    let mut states = Vec::with_capacity(round.len());
    for p in &round {
        states.push(send_all(producer, &p.state, &owned, m).await);
    }
    m.commit_round_batches.observe(round.len() as f64);
    let mut newest = Newest::default();
    let mut started = Vec::with_capacity(round.len());
    // Newest first: a partition's newest marker and offset stand for the older ones.
    for (p, state) in round.into_iter().zip(states).rev() {
        p.sent.complete(producer, &p.output, KEEP_ALL, m).await;
        state.complete(producer, &p.state, &owned, m).await;
        newest.add_older(p.markers, &p.offsets);
        started.extend(p.started);
    }
    // Only once every record is acknowledged: a marker never stands for a missing one.
    let markers = newest.markers;
    send_all(producer, &markers, &owned, m)
        .await
        .complete(producer, &markers, &owned, m)
        .await;
    store_offsets(clients, shared, &newest.offsets);
    for s in started {
        m.processing_seconds.observe(s.elapsed().as_secs_f64());
    }
}

/// A round's newest marker and input offset per partition, from its batches given newest
/// first.
#[derive(Default)]
struct Newest {
    markers: Vec<Outgoing>,
    offsets: Vec<(String, i32, Offset)>,
}

impl Newest {
    /// Adds the markers and offsets of a batch older than every one added before.
    fn add_older(&mut self, markers: Vec<Outgoing>, offsets: &TopicPartitionList) {
        for marker in markers {
            if !self.markers.iter().any(|k| k.partition == marker.partition) {
                self.markers.push(marker);
            }
        }
        for e in offsets.elements() {
            if !self
                .offsets
                .iter()
                .any(|(t, q, _)| *q == e.partition() && t == e.topic())
            {
                self.offsets
                    .push((e.topic().to_string(), e.partition(), e.offset()));
            }
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
fn store_offsets(clients: &Clients, shared: &Shared, offsets: &[(String, i32, Offset)]) {
    let owned = crate::shared::lock(&shared.kafka.owned).clone();
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, offset) in offsets {
        if owned.iter().any(|(t, p)| p == partition && t == topic) {
            let _ = tpl.add_partition_offset(topic, *partition, *offset);
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = clients.consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner re-reads from the last commit.
            warn!(error = %e, "storing offsets failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segstream_core::changelog::Position;

    fn marker(partition: i32, watermark: i64) -> Outgoing {
        let pos = Position::new(watermark, watermark, Default::default());
        Outgoing::position("changelog", partition, &pos)
    }

    fn offsets(entries: &[(&str, i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in entries {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
        }
        tpl
    }

    /// Three batches committed in one round: per partition, the newest batch's marker and
    /// offset, and a partition only an older batch touched keeps that batch's.
    #[test]
    fn a_round_keeps_the_newest_marker_and_offset_of_each_partition() {
        let mut newest = Newest::default();
        // Newest first.
        newest.add_older(
            vec![marker(0, 300), marker(2, 300)],
            &offsets(&[("in", 0, 30), ("in", 2, 32)]),
        );
        newest.add_older(
            vec![marker(0, 200), marker(1, 200)],
            &offsets(&[("in", 0, 20), ("in", 1, 21), ("other", 0, 7)]),
        );
        newest.add_older(vec![marker(1, 100)], &offsets(&[("in", 1, 11)]));

        let mut got: Vec<(i32, Vec<u8>)> = newest
            .markers
            .iter()
            .map(|m| (m.partition.unwrap(), m.payload.clone().unwrap()))
            .collect();
        got.sort();
        let mut want: Vec<(i32, Vec<u8>)> = [marker(0, 300), marker(1, 200), marker(2, 300)]
            .into_iter()
            .map(|m| (m.partition.unwrap(), m.payload.unwrap()))
            .collect();
        want.sort();
        assert_eq!(got, want);

        let mut offsets = newest.offsets.clone();
        offsets.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(
            offsets,
            vec![
                ("in".to_string(), 0, Offset::Offset(30)),
                ("in".to_string(), 1, Offset::Offset(21)),
                ("in".to_string(), 2, Offset::Offset(32)),
                ("other".to_string(), 0, Offset::Offset(7)),
            ]
        );
    }
}
