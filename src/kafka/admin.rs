//! Start-up checks against the broker: the partitioning contract (co-partitioned inputs, a
//! changelog with as many partitions) and creating the changelog topic if it is missing.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::info;

use crate::config::KafkaConfig;

use super::client::base_config;
use super::KafkaContext;

/// The partition counts of the input topics and the changelog topic, checked against the
/// partitioning contract: every input topic has the same number of partitions (they are
/// co-partitioned by customer id) and the changelog has exactly as many. A missing
/// changelog is created (compacted). Returns the partition count; every violation is
/// listed in the error.
pub async fn check_partitioning(
    k: &KafkaConfig,
    client: &impl Consumer<KafkaContext>,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let count = |topic: &str| -> Result<Option<i32>, KafkaError> {
        let md = client.fetch_metadata(Some(topic), timeout)?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32))
    };
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for t in &k.input_topics {
        match count(t)? {
            Some(n) => counts.push((t.as_str(), n)),
            None => errors.push(format!("input topic `{t}` does not exist")),
        }
    }
    let n = counts.first().map_or(0, |c| c.1);
    if counts.iter().any(|c| c.1 != n) {
        let list: Vec<String> = counts.iter().map(|(t, c)| format!("{t}: {c}")).collect();
        errors.push(format!(
            "input topics are not co-partitioned: they must all have the same number of partitions, keyed by customer id ({})",
            list.join(", ")
        ));
    }
    if errors.is_empty() {
        match count(&k.changelog_topic)? {
            Some(c) if c == n => {}
            Some(c) => errors.push(format!(
                "changelog topic `{}` has {c} partitions; the input topics have {n}: it must have exactly as many (recreate it, or set kafka.changelog_topic to a new name)",
                k.changelog_topic
            )),
            None => {
                create_changelog(k, n, timeout)
                    .await
                    .with_context(|| format!("creating changelog topic `{}`", k.changelog_topic))?;
                info!(topic = %k.changelog_topic, partitions = n, "changelog topic created");
            }
        }
    }
    if errors.is_empty() {
        Ok(n)
    } else {
        anyhow::bail!(
            "the partitioning contract is violated:\n  - {}",
            errors.join("\n  - ")
        )
    }
}

async fn create_changelog(
    k: &KafkaConfig,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = base_config(k).create()?;
    let topic = NewTopic::new(&k.changelog_topic, partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    // Bounded: a broker that does not implement CreateTopics must not hang the start-up.
    let results = tokio::time::timeout(timeout * 2, admin.create_topics([&topic], &opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer to CreateTopics within {timeout:?}: create the topic yourself (compacted, as many partitions as the inputs)"
            )
        })??;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("{t}: {e}"),
        }
    }
    Ok(())
}
