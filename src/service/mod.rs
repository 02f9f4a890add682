//! The running service: Kafka in, the engine in the middle, Kafka out, HTTP on the side.
//!
//! One loop owns the consumer. It reads a batch of messages and applies each to the
//! engine ([`batch`]), then commits the batch: everything it caused (transitions, dead
//! letters, changelog records, position markers) is produced and acknowledged before its
//! input offsets are stored ([`at_least_once`]), or all of it goes into one transaction
//! with the offsets ([`exactly_once`]). When the input is idle, time moves on without
//! events ([`watermarks`]). Reloads ([`reload`]) and shutdown are handled between
//! batches. `main` only parses arguments and signals; tests call [`run`] directly, or
//! start it in the background with [`Background`].
//!
//! State is owned per partition number (all input topics are co-partitioned): when the
//! group assigns partition N, the profiles of partition N are restored from partition N of
//! the changelog before any of its messages is applied ([`assignment`], [`restore`]); when
//! N is revoked, its profiles are dropped and nothing more of it is written.
//!
//! # Parts
//! - [`startup`]: clients and the partitioning check.
//! - [`progress`], [`watermarks`]: what the loop knows about its input.
//! - [`batch`]: reading and applying one batch.
//! - [`at_least_once`], [`exactly_once`]: committing a batch, by guarantee;
//!   [`backpressure`]: input paused while a commit waits for a slow or absent output.
//! - [`assignment`], [`restore`]: following the group's assignment.
//! - [`router`], [`persons`], [`handoffs`]: with `kafka.router` (the default), the router
//!   stage that puts every event on its person's partition of the persons topic, and the
//!   segment stage's side of that topic (forwarded events, merge handoffs).
//! - [`reload`], [`gauges`]: reloads and the gauges that scan the engine.
//! - [`background`]: the service as a task of the current runtime (tests, demo, benches).

pub mod assignment;
pub mod at_least_once;
pub mod background;
pub mod backpressure;
pub mod batch;
pub mod exactly_once;
pub mod gauges;
pub mod handoffs;
pub mod persons;
pub mod progress;
pub mod reload;
pub mod restore;
pub mod router;
pub mod startup;
pub mod watermarks;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer};
use segstream_core::engine::Engine;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use background::Background;
pub use restore::{restore_partitions, Restored};

use crate::config::Config;
use crate::kafka::{KafkaContext, KafkaState};
use crate::metrics::Metrics;
use crate::shared::Shared;

/// A handle to a started service: its shared state and its HTTP address.
pub struct Running {
    pub shared: Arc<Shared>,
    pub http_addr: std::net::SocketAddr,
}

/// The Kafka clients of one instance.
pub struct Clients {
    /// Reads the input topics (the consumer group member).
    pub consumer: StreamConsumer<KafkaContext>,
    /// Writes transitions, dead letters, changelog records and markers.
    pub producer: FutureProducer<KafkaContext>,
    /// Reads the changelog when partitions are assigned (outside any group).
    pub restorer: BaseConsumer<KafkaContext>,
}

/// Reads and compiles the definitions file; every error is in the message.
pub fn load_engine(config: &Config) -> anyhow::Result<Engine> {
    crate::definitions::load_engine(&config.segments.file, config.engine.clone())
        .map_err(|d| anyhow::anyhow!("invalid segment definitions ({} errors):\n{d}", d.len()))
}

/// Runs the service until `shutdown` completes, then drains and commits. `started` (if
/// given) receives the shared state and the bound HTTP address once serving.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    started: Option<oneshot::Sender<Running>>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let engine = load_engine(&config)?.with_change_tracking();
    let metrics = Arc::new(Metrics::new());
    metrics.init_series();
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let kstate = Arc::new(KafkaState::new(metrics.clone()));
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        metrics: metrics.clone(),
        config: config.clone(),
        ready: AtomicBool::new(false),
        reloads: reload_tx,
        kafka: kstate.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let http_stop = tokio_util::sync::CancellationToken::new();
    let http_task = tokio::spawn(crate::http::serve(
        listener,
        shared.clone(),
        http_stop.clone(),
    ));
    info!(%http_addr, "http listening");

    let clients = startup::clients(&config.kafka, KafkaContext(kstate))?;
    // The router's clients report to metrics like the others, but their rebalances are
    // their own (the segment stage follows only its consumer's assignment).
    let router_state = Arc::new(KafkaState::new(metrics.clone()));
    let Some(partitioning) =
        startup::check_topics(&config, &clients.restorer, shutdown.as_mut()).await?
    else {
        http_stop.cancel();
        return Ok(());
    };
    let partitions = partitioning.shards;
    info!(
        partitions,
        changelog = %config.kafka.changelog_topic,
        strategy = crate::kafka::assignment_strategy(&config.kafka),
        "partitioning checked"
    );
    let router_stop = tokio_util::sync::CancellationToken::new();
    let mut router_task = if config.kafka.router {
        let shards = u16::try_from(partitions).context("too many partitions")?;
        shared.engine().set_partitions(shards);
        let router = router::Router {
            consumer: crate::kafka::router_consumer(
                &config.kafka,
                KafkaContext(router_state.clone()),
            )
            .context("creating the router's consumer")?,
            producer: crate::kafka::router_producer(&config.kafka, KafkaContext(router_state))
                .context("creating the router's producer")?,
            partitions: shards,
        };
        // Aborted with this task (a crash takes the router down with the segment stage).
        Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            router::run(router, shared.clone(), router_stop.clone()),
        )))
    } else {
        None
    };
    if config.kafka.exactly_once {
        clients
            .producer
            .init_transactions(Duration::from_secs(30))
            .context("initialising transactions (does the broker support them?)")?;
        info!(
            transactional_id = %crate::kafka::transactional_id(&config.kafka),
            "exactly-once: one transaction per batch"
        );
    }
    let topics: Vec<&str> = if config.kafka.router {
        vec![config.kafka.persons_topic.as_str()]
    } else {
        config
            .kafka
            .input_topics
            .iter()
            .map(String::as_str)
            .collect()
    };
    clients
        .consumer
        .subscribe(&topics)
        .context("subscribing to the input topics")?;
    info!(topics = ?topics, group = %config.kafka.group_id, "consuming");
    if let Some(tx) = started {
        let _ = tx.send(Running {
            shared: shared.clone(),
            http_addr,
        });
    }

    let mut progress = progress::Progress::default();
    if config.kafka.router {
        // Every input partition's events can reach every shard: each holds a shard's time
        // back until it delivered there, or has been quiet for the idle time.
        progress.sources = partitioning
            .inputs
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| progress::source_sequence(t, p)))
            .collect();
    }
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = async { router_task.as_mut().expect("guarded").await }, if router_task.is_some() => {
                    router_task = None;
                    match r {
                        Ok(Ok(())) => anyhow::bail!("the router stopped"),
                        Ok(Err(e)) => return Err(e.context("the router failed")),
                        Err(e) => anyhow::bail!("the router panicked: {e}"),
                    }
                }
                Some(req) = reload_rx.recv() => {
                    let outcome = reload::reload(&clients, &shared).await;
                    let _ = req.reply.send(outcome);
                }
                batch = batch::read_batch(&clients, &shared, &mut progress) => {
                    let batch = batch?;
                    if config.kafka.exactly_once {
                        let commit = exactly_once::commit(&clients, &shared, batch, &progress);
                        backpressure::while_committing(&clients.consumer, &shared, commit).await?;
                    } else {
                        let commit = at_least_once::commit(&clients, &shared, batch, &progress);
                        backpressure::while_committing(&clients.consumer, &shared, commit).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;

    info!("shutting down: flushing and committing");
    shared.set_ready(false);
    router_stop.cancel();
    if let Some(task) = router_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "the router stopped with an error"),
            Err(e) => warn!(error = %e, "the router panicked"),
        }
    }
    let _ = clients
        .producer
        .flush(Duration::from_millis(config.shutdown_deadline as u64 / 2));
    match clients.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => info!("offsets committed"),
        Err(e) => warn!(error = %e, "final commit failed (offsets stored earlier stay)"),
    }
    clients.consumer.unsubscribe();
    http_stop.cancel();
    let _ = http_task.await;
    result
}
