//! Kafka adapters around the engine.
//!
//! - [`client`]: how the consumer, the producer and the changelog reader are configured.
//! - [`callbacks`]: librdkafka's callbacks (errors, statistics, rebalances) into metrics and
//!   shared state; [`KafkaContext`] is the client context.
//! - [`records`]: what the service writes ([`Outgoing`]): transitions, dead letters,
//!   changelog records, position markers, and the persons topic's records (routed and
//!   forwarded events, handoffs).
//! - [`produce`]: producing records until acknowledged, or once in a transaction.
//! - [`admin`]: the partitioning check and creating the internal topics at start-up.

pub mod admin;
pub mod callbacks;
pub mod client;
pub mod produce;
pub mod records;

pub use admin::{check_partitioning, Partitioning};
pub use callbacks::{KafkaContext, KafkaState, BROKER_HEALTH_WINDOW_MS};
pub use client::{
    assignment_strategy, consumer, consumer_config, producer, restorer_config, router_consumer,
    router_group, router_producer, transactional_id, worker_producer,
};
pub use produce::{produce_all, produce_once};
pub use records::Outgoing;
