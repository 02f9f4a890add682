//! Backpressure: while a batch's output cannot be delivered (the output, dead-letter or
//! changelog topic is unavailable or slow), the input is paused instead of read on into
//! memory.
//!
//! A commit normally takes milliseconds. One that takes longer than [`PAUSE_AFTER`] pauses
//! every assigned input partition of its worker, and the worker counts as stalled on the
//! instance's `Board`: the other workers pause their input too before their next batch
//! ([`while_others_stalled`]), so the instance reads nothing while its output is
//! unavailable, however the partitions are spread over the workers. The consumers keep
//! being polled meanwhile, so the group session and the poll interval stay alive and
//! rebalances are still served. A message a consumer had fetched before the pause and hands
//! out during it is not applied: its partition is rewound to it when the input resumes.
//! Memory therefore stays at the batches already read however long the outage lasts (at
//! most 17 per worker: a round of 8 being committed, 8 waiting for the committer, one being
//! applied; see `at_least_once`), and nothing is lost: the batches are delivered when the
//! topic returns, then the input resumes where it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::kafka::KafkaContext;
use crate::shared::Shared;

/// A commit slower than this pauses the input.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Why the input is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// This worker's own output is stalled.
    Stalled,
    /// Another worker's is.
    Sympathy,
}

/// Runs `commit` to its end, pausing `consumer`'s input while it takes longer than
/// [`PAUSE_AFTER`] (the worker then counts as stalled).
pub async fn while_committing(
    consumer: &StreamConsumer<KafkaContext>,
    shared: &Shared,
    commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    paused_while(consumer, shared, commit, PAUSE_AFTER, Cause::Stalled).await
}

/// Keeps `consumer`'s input paused while another worker of the instance is stalled (or
/// until `stop`); returns at once when none is.
pub async fn while_others_stalled(
    consumer: &StreamConsumer<KafkaContext>,
    shared: &Shared,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    if shared.board.stalled() == 0 {
        return Ok(());
    }
    let board = shared.board.clone();
    let wait = async move {
        while board.stalled() > 0 && !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    };
    paused_while(consumer, shared, wait, Duration::ZERO, Cause::Sympathy).await
}

async fn paused_while(
    consumer: &StreamConsumer<KafkaContext>,
    shared: &Shared,
    work: impl Future<Output = anyhow::Result<()>>,
    after: Duration,
    cause: Cause,
) -> anyhow::Result<()> {
    tokio::pin!(work);
    let slow = tokio::time::sleep(after);
    tokio::pin!(slow);
    let mut paused: Option<TopicPartitionList> = None;
    // Per partition, the first offset handed out during the pause: read again on resume.
    let mut rewind: HashMap<(String, i32), i64> = HashMap::new();
    let result = loop {
        tokio::select! {
            biased;
            r = &mut work => break r,
            _ = &mut slow, if paused.is_none() => {
                match consumer.assignment() {
                    Ok(tpl) => {
                        if let Err(e) = consumer.pause(&tpl) {
                            warn!(error = %e, "pausing the input failed");
                        }
                        if cause == Cause::Stalled {
                            warn!(
                                worker = shared.worker,
                                partitions = tpl.count(),
                                "output slow or unavailable: input paused until the batch is delivered"
                            );
                            shared.board.set_stalled(true);
                            shared.metrics.input_pauses.inc();
                        } else {
                            info!(
                                worker = shared.worker,
                                partitions = tpl.count(),
                                "another worker's output is stalled: input paused with it"
                            );
                        }
                        shared.metrics.input_paused.set(1);
                        shared.set_ready(false);
                        paused = Some(tpl);
                    }
                    Err(e) => warn!(error = %e, "reading the assignment to pause it failed"),
                }
            }
            m = consumer.recv(), if paused.is_some() => {
                if let Ok(m) = m {
                    rewind
                        .entry((m.topic().to_string(), m.partition()))
                        .and_modify(|o| *o = (*o).min(m.offset()))
                        .or_insert(m.offset());
                }
            }
        }
    };
    if let Some(tpl) = paused {
        for ((topic, partition), offset) in rewind {
            if let Err(e) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                // A partition revoked meanwhile: its new owner reads it from the commit.
                warn!(error = %e, %topic, partition, "rewinding after the pause failed");
            }
        }
        if let Err(e) = consumer.resume(&tpl) {
            warn!(error = %e, "resuming the input failed");
        }
        let still = if cause == Cause::Stalled {
            shared.board.set_stalled(false)
        } else {
            shared.board.stalled()
        };
        if still == 0 {
            shared.metrics.input_paused.set(0);
        }
        if cause == Cause::Stalled {
            info!(worker = shared.worker, "output delivered: input resumed");
        }
    }
    result
}
