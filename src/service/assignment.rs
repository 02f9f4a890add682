//! Following the consumer group's assignment: the state of partition numbers no longer
//! assigned is dropped; the state of those newly assigned is restored from the changelog
//! before any of their messages is applied (not ready meanwhile).

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use segstream_core::transition::Transition;
use tracing::info;

use crate::shared::Shared;

use super::progress::Progress;
use super::restore::restore_partitions;
use super::Clients;

/// Brings the engine's shards and `progress` in line with the consumer's assignment.
pub async fn on_assignment(
    clients: &Clients,
    shared: &Shared,
    progress: &mut Progress,
    out: &mut Vec<Transition>,
) -> anyhow::Result<()> {
    let assigned = clients
        .consumer
        .assignment()
        .context("reading the consumer's assignment")?;
    let partitions: Vec<(String, i32)> = assigned
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    progress.clocks.sync(&partitions, Instant::now());
    for (_, shard) in &partitions {
        for source in &progress.sources {
            progress.clocks.expect(source, *shard, Instant::now());
        }
    }
    progress
        .applied
        .retain(|k, _| partitions.iter().any(|p| p == k));
    let now: BTreeSet<i32> = partitions.iter().map(|(_, p)| *p).collect();
    let lost: Vec<i32> = progress.owned.difference(&now).copied().collect();
    let gained: Vec<i32> = now.difference(&progress.owned).copied().collect();
    if !lost.is_empty() {
        let dropped = shared
            .engine()
            .drop_shards(&|s| now.contains(&i32::from(s)));
        shared.metrics.state_dropped.inc_by(dropped as u64);
        info!(partitions = ?lost, profiles = dropped, "revoked: state dropped");
    }
    progress.owned.retain(|p| now.contains(p));
    progress.retain_shards(&progress.owned.clone());
    if !gained.is_empty() {
        shared.set_ready(false);
        let started = Instant::now();
        let restored = restore_partitions(
            &clients.restorer,
            &shared.config.kafka.changelog_topic,
            &gained,
            &shared.engine,
            &shared.metrics,
            out,
        )
        .await?;
        // Where the restored state stands: messages up to there are not applied again, and
        // each partition continues from its previous owner's event time.
        let mut engine = shared.engine();
        for (p, pos) in restored.positions {
            engine.set_shard_time(p as u16, pos.watermark, pos.max_event_time);
            for (key, (offset, max_ts)) in pos.inputs {
                progress.restore_input(p, &key, offset, max_ts);
            }
        }
        drop(engine);
        let seconds = started.elapsed().as_secs_f64();
        shared.metrics.restore_seconds.observe(seconds);
        info!(
            partitions = ?gained,
            entries = restored.entries,
            seconds,
            "assigned: state restored from the changelog"
        );
        progress.owned.extend(gained);
    }
    // Which persons live here (links to others go through handoffs).
    shared
        .engine()
        .own_shards(progress.owned.iter().map(|p| *p as u16));
    Ok(())
}
