//! Start-up checks against the broker: the partitioning contract, and creating the
//! internal topics (changelog, persons) if they are missing.
//!
//! - Direct (`kafka.router = false`): every input topic has the same number of partitions
//!   (they are co-partitioned by person) and the changelog has exactly as many.
//! - Routed (the default): the input topics may have any counts; the persons topic and the
//!   changelog have the same count, `kafka.partitions` if set.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::info;

use crate::config::KafkaConfig;

use super::client::base_config;
use super::KafkaContext;

/// What the partitioning check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The number of shards: the partition count of the changelog (and persons) topic.
    pub shards: i32,
    /// Every input topic with its partition count.
    pub inputs: Vec<(String, i32)>,
}

/// Checks the partitioning contract (see the module documentation) and creates the
/// internal topics that are missing. Every violation is listed in the error.
pub async fn check_partitioning(
    k: &KafkaConfig,
    client: &impl Consumer<KafkaContext>,
    timeout: Duration,
) -> anyhow::Result<Partitioning> {
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
    let changelog = count(&k.changelog_topic)?;
    let mut create: Vec<(&str, bool)> = Vec::new();
    let n = if k.router {
        let persons = count(&k.persons_topic)?;
        let widest = counts.iter().map(|c| c.1).max().unwrap_or(0);
        let n = k.partitions.or(persons).or(changelog).unwrap_or(widest);
        for (name, topic, found) in [
            ("persons", &k.persons_topic, persons),
            ("changelog", &k.changelog_topic, changelog),
        ] {
            match found {
                Some(c) if c == n => {}
                Some(c) => errors.push(format!(
                    "{name} topic `{topic}` has {c} partitions, but {}: the persons and changelog topics must have as many (recreate it, or set kafka.{name}_topic to a new name)",
                    match (k.partitions, persons, changelog) {
                        (Some(p), _, _) => format!("kafka.partitions is {p}"),
                        (None, Some(p), _) => format!("the persons topic has {p}"),
                        (None, None, Some(c)) => format!("the changelog has {c}"),
                        _ => format!("{n} are wanted"),
                    }
                )),
                None => create.push((topic, name == "changelog")),
            }
        }
        n
    } else {
        let n = counts.first().map_or(0, |c| c.1);
        if counts.iter().any(|c| c.1 != n) {
            let list: Vec<String> = counts.iter().map(|(t, c)| format!("{t}: {c}")).collect();
            errors.push(format!(
                "input topics are not co-partitioned: they must all have the same number of partitions, keyed by customer id ({}); or leave kafka.router on",
                list.join(", ")
            ));
        }
        match changelog {
            Some(c) if c == n => {}
            Some(c) => errors.push(format!(
                "changelog topic `{}` has {c} partitions; the input topics have {n}: it must have exactly as many (recreate it, or set kafka.changelog_topic to a new name)",
                k.changelog_topic
            )),
            None => create.push((&k.changelog_topic, true)),
        }
        n
    };
    // Keyed by segment and customer: any partition count serves; created like the
    // changelog when missing.
    if count(&k.membership_topic)?.is_none() {
        create.push((&k.membership_topic, true));
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "the partitioning contract is violated:\n  - {}",
            errors.join("\n  - ")
        );
    }
    if n < 1 {
        anyhow::bail!("the input topics have no partitions");
    }
    for (topic, compacted) in create {
        create_topic(k, topic, n, compacted, timeout)
            .await
            .with_context(|| format!("creating topic `{topic}`"))?;
        info!(topic, partitions = n, compacted, "topic created");
    }
    Ok(Partitioning {
        shards: n,
        inputs: counts.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
    })
}

/// Creates `topic` with `partitions` partitions (compacted: the changelog and the
/// membership topic), unless it
/// exists.
async fn create_topic(
    k: &KafkaConfig,
    topic: &str,
    partitions: i32,
    compacted: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = base_config(k).create()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    // Bounded: a broker that does not implement CreateTopics must not hang the start-up.
    let results = tokio::time::timeout(timeout * 2, admin.create_topics([&new], &opts))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer to CreateTopics within {timeout:?}: create the topic yourself ({partitions} partitions{})",
                if compacted { ", compacted" } else { "" }
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
