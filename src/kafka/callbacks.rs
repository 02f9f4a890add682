//! The client context shared by the service's consumer and producer: librdkafka's callbacks
//! (client errors, statistics, rebalances) turned into metrics and into state the
//! processing loop and the readiness check read.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::metrics::{series, Label, Metrics, RebalanceKind};

/// After a broker error, the service reports not ready for this long.
pub const BROKER_HEALTH_WINDOW_MS: i64 = 5_000;

/// State the Kafka callbacks update.
pub struct KafkaState {
    pub metrics: Arc<Metrics>,
    /// Partitions currently assigned to this instance.
    pub assigned: AtomicUsize,
    /// Set on every assignment change; the service clears it when it has looked.
    pub assignment_changed: AtomicBool,
    /// The assigned (topic, partition)s, as the rebalance callbacks listed them.
    pub owned: std::sync::Mutex<std::collections::HashSet<(String, i32)>>,
    /// When librdkafka last reported a client-level error (broker down, transport), in
    /// Unix milliseconds; 0 = never.
    pub last_error_ms: AtomicI64,
    /// The producer of the consumer's worker (while it runs): a revocation waits until
    /// what it was handed is delivered, so that nothing of a revoked partition lands after
    /// its new owner has started (see `service::at_least_once`).
    pub producer: std::sync::Mutex<Option<rdkafka::producer::FutureProducer<KafkaContext>>>,
}

impl KafkaState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        KafkaState {
            metrics,
            assigned: AtomicUsize::new(0),
            assignment_changed: AtomicBool::new(false),
            owned: Default::default(),
            last_error_ms: AtomicI64::new(0),
            producer: Default::default(),
        }
    }

    /// Whether the brokers have been healthy for the last [`BROKER_HEALTH_WINDOW_MS`].
    pub fn healthy(&self) -> bool {
        let last = self.last_error_ms.load(Ordering::SeqCst);
        last == 0 || crate::clock::now_millis() - last > BROKER_HEALTH_WINDOW_MS
    }
}

/// The client context shared by consumer and producer.
#[derive(Clone)]
pub struct KafkaContext(pub Arc<KafkaState>);

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .last_error_ms
            .store(crate::clock::now_millis(), Ordering::SeqCst);
        warn!(%error, reason, "kafka client error");
    }

    fn stats(&self, stats: Statistics) {
        let lag = &self.0.metrics.consumer_lag;
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if p.partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                lag.with_label_values(&[topic.as_str(), &id.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let kind = match rebalance {
            Rebalance::Assign(_) => RebalanceKind::Assign,
            Rebalance::Revoke(_) => RebalanceKind::Revoke,
            Rebalance::Error(_) => RebalanceKind::Error,
        };
        series(&self.0.metrics.rebalances, kind).inc();
        if let Rebalance::Revoke(tpl) = rebalance {
            {
                // Nothing more is written for these partitions (the committer checks before
                // each record), and what was handed to the producer is delivered first.
                let mut owned = self
                    .0
                    .owned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for e in tpl.elements() {
                    owned.remove(&(e.topic().to_string(), e.partition()));
                }
            }
            let producer = self
                .0
                .producer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(p) = producer {
                use rdkafka::producer::Producer as _;
                if let Err(e) = p.flush(std::time::Duration::from_secs(10)) {
                    warn!(error = %e, "revocation: the producer did not deliver everything in time");
                }
            }
            // Lag series of partitions this instance no longer owns would go stale.
            for e in tpl.elements() {
                let _ = self
                    .0
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[e.topic(), &e.partition().to_string()]);
            }
        }
        info!(kind = kind.as_str(), "rebalance");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Counted from the lists themselves: asking the consumer for its assignment here
        // deadlocks when the rebalance runs inside the consumer's close.
        let n = {
            let mut owned = self
                .0
                .owned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match rebalance {
                Rebalance::Assign(tpl) => {
                    for e in tpl.elements() {
                        owned.insert((e.topic().to_string(), e.partition()));
                    }
                }
                Rebalance::Revoke(tpl) => {
                    for e in tpl.elements() {
                        owned.remove(&(e.topic().to_string(), e.partition()));
                    }
                }
                Rebalance::Error(_) => {}
            }
            owned.len()
        };
        self.0.assigned.store(n, Ordering::SeqCst);
        self.0.assignment_changed.store(true, Ordering::SeqCst);
        info!(partitions = n, "assignment");
    }
}
