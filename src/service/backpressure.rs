//! Backpressure: while a batch's output cannot be delivered (the output, dead-letter or
//! changelog topic is unavailable or slow), the input is paused instead of read on into
//! memory.
//!
//! A commit normally takes milliseconds. One that takes longer than [`PAUSE_AFTER`] pauses
//! every assigned input partition; the consumer keeps being polled meanwhile, so the group
//! session and the poll interval stay alive and rebalances are still served. A message the
//! consumer had fetched before the pause and hands out during it is not applied: its
//! partition is rewound to it when the input resumes. Memory therefore stays at one batch
//! however long the outage lasts, and nothing is lost: the batch is delivered when the
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

/// Runs `commit` to its end, pausing `consumer`'s input while it takes longer than
/// [`PAUSE_AFTER`].
pub async fn while_committing(
    consumer: &StreamConsumer<KafkaContext>,
    shared: &Shared,
    commit: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::pin!(commit);
    let slow = tokio::time::sleep(PAUSE_AFTER);
    tokio::pin!(slow);
    let mut paused: Option<TopicPartitionList> = None;
    // Per partition, the first offset handed out during the pause: read again on resume.
    let mut rewind: HashMap<(String, i32), i64> = HashMap::new();
    let result = loop {
        tokio::select! {
            r = &mut commit => break r,
            _ = &mut slow, if paused.is_none() => {
                match consumer.assignment() {
                    Ok(tpl) => {
                        if let Err(e) = consumer.pause(&tpl) {
                            warn!(error = %e, "pausing the input failed");
                        }
                        warn!(
                            partitions = tpl.count(),
                            "output slow or unavailable: input paused until the batch is delivered"
                        );
                        shared.metrics.input_paused.set(1);
                        shared.metrics.input_pauses.inc();
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
        shared.metrics.input_paused.set(0);
        info!("output delivered: input resumed");
    }
    result
}
