//! Start-up: the Kafka clients, and the partitioning contract checked against the broker
//! (retried with backoff while the broker is unavailable).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::BaseConsumer;
use tracing::warn;

use crate::config::{Config, KafkaConfig};
use crate::kafka::{self, KafkaContext};

use super::Clients;

/// Worker `worker`'s consumer, producer and changelog reader, sharing one client context.
pub fn clients(k: &KafkaConfig, worker: usize, ctx: KafkaContext) -> anyhow::Result<Clients> {
    Ok(Clients {
        consumer: kafka::consumer(k, ctx.clone()).context("creating the consumer")?,
        producer: kafka::worker_producer(k, worker, ctx.clone())
            .context("creating the producer")?,
        restorer: kafka::restorer_config(k)
            .create_with_context(ctx)
            .context("creating the changelog reader")?,
    })
}

/// Checks the partitioning contract and creates the changelog topic if needed, waiting
/// (retrying) while the broker is unavailable. `None` if shut down meanwhile.
pub async fn check_topics(
    config: &Config,
    client: &BaseConsumer<KafkaContext>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> anyhow::Result<Option<kafka::Partitioning>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match kafka::check_partitioning(&config.kafka, client, Duration::from_secs(5)).await {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.downcast_ref::<rdkafka::error::KafkaError>().is_some() => {
                warn!(error = %e, "broker unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.as_mut() => return Ok(None),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}
