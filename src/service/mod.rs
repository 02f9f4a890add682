//! The running service: Kafka in, the engine in the middle, Kafka out, HTTP on the side.
//!
//! An instance runs `engine.workers` [`worker`]s (default: see [`worker_count`]), each on a
//! thread of its own with its own consumer in the group, producer and engine, like Kafka
//! Streams' stream threads; the group spreads the partitions over them. A worker's loop
//! reads a batch of messages and applies each to its engine ([`batch`]), then commits the
//! batch: everything it caused (transitions, dead letters, changelog records, position
//! markers) is produced and acknowledged before its input offsets are stored
//! ([`at_least_once`]), or all of it goes into one transaction with the
//! offsets ([`exactly_once`]). When the input is idle, time moves on without events
//! ([`watermarks`]). Reloads ([`reload`]) and shutdown are handled between batches. `main`
//! only parses arguments and signals; tests call [`run`] directly, or start it in the
//! background with [`Background`].
//!
//! State is owned per partition number (all input topics are co-partitioned): when the
//! group assigns partition N, the profiles of partition N are restored from partition N of
//! the changelog before any of its messages is applied ([`assignment`], [`restore`]); when
//! N is revoked, its profiles are dropped and nothing more of it is written.
//!
//! # Parts
//! - [`startup`]: clients and the partitioning check; [`worker`]: one worker's loop.
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
pub mod worker;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use segstream_core::engine::Engine;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use background::Background;
pub use restore::{restore_partitions, Restored};

use crate::config::Config;
use crate::kafka::{KafkaContext, KafkaState};
use crate::metrics::Metrics;
use crate::shared::{Board, Instance, Shared};

/// A handle to a started service: every worker's shared state and the HTTP address.
pub struct Running {
    pub instance: Arc<Instance>,
    pub http_addr: std::net::SocketAddr,
}

/// The Kafka clients of one worker.
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

/// The number of workers: `engine.workers`; if unset, the available cores without the
/// router, one with it. With the router, the workers of one instance merge persons across
/// their shards through handoffs on the persons topic, as instances do, where one engine
/// merges them in memory: on the reference funnel (40 % anonymous visitors, 4 partitions,
/// `cargo run --release --example load`) two workers ran at 11.6 k events/s against
/// 58.4 k for one, while without the router two ran at 100.5 k against 73.0 k.
pub fn worker_count(config: &Config) -> usize {
    config.engine.workers.unwrap_or_else(|| {
        if config.kafka.router {
            1
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    })
}

/// Runs the service until `shutdown` completes, then drains and commits. `started` (if
/// given) receives the shared state and the bound HTTP address once serving.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    started: Option<oneshot::Sender<Running>>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let workers = worker_count(&config).max(1);
    let metrics = Arc::new(Metrics::new());
    metrics.init_series();
    let board = Arc::new(Board::new(workers));
    let mut engine_config = config.engine.clone();
    // The profile limit is the instance's: each worker keeps its share.
    engine_config.max_profiles = engine_config.max_profiles.map(|n| n.div_ceil(workers));
    let mut shareds = Vec::with_capacity(workers);
    let mut reload_rxs = Vec::with_capacity(workers);
    for worker in 0..workers {
        let engine = crate::definitions::load_engine(&config.segments.file, engine_config.clone())
            .map_err(|d| anyhow::anyhow!("invalid segment definitions ({} errors):\n{d}", d.len()))?
            .with_change_tracking();
        let (reload_tx, reload_rx) = mpsc::channel(4);
        reload_rxs.push(reload_rx);
        shareds.push(Arc::new(Shared {
            worker,
            engine: Mutex::new(engine),
            metrics: metrics.clone(),
            config: config.clone(),
            ready: AtomicBool::new(false),
            reloads: reload_tx,
            kafka: Arc::new(KafkaState::new(metrics.clone())),
            board: board.clone(),
            activity: Default::default(),
        }));
    }
    let instance = Arc::new(Instance {
        workers: shareds.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let http_stop = tokio_util::sync::CancellationToken::new();
    let http_task = tokio::spawn(crate::http::serve(
        listener,
        instance.clone(),
        http_stop.clone(),
    ));
    info!(%http_addr, workers, "http listening");

    let mut clients = Vec::with_capacity(workers);
    for s in &shareds {
        clients.push(startup::clients(
            &config.kafka,
            s.worker,
            KafkaContext(s.kafka.clone()),
        )?);
    }
    // The router's clients report to metrics like the others, but their rebalances are
    // their own (the segment stage follows only its consumers' assignments).
    let router_state = Arc::new(KafkaState::new(metrics.clone()));
    let Some(partitioning) =
        startup::check_topics(&config, &clients[0].restorer, shutdown.as_mut()).await?
    else {
        http_stop.cancel();
        return Ok(());
    };
    let partitions = partitioning.shards;
    info!(
        partitions,
        workers,
        changelog = %config.kafka.changelog_topic,
        strategy = crate::kafka::assignment_strategy(&config.kafka),
        "partitioning checked"
    );
    let router_stop = tokio_util::sync::CancellationToken::new();
    let mut router_task = if config.kafka.router {
        let shards = u16::try_from(partitions).context("too many partitions")?;
        for s in &shareds {
            s.engine().set_partitions(shards);
        }
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
            router::run(router, shareds[0].clone(), router_stop.clone()),
        )))
    } else {
        None
    };
    if config.kafka.exactly_once {
        info!(
            transactional_id = %crate::kafka::transactional_id(&config.kafka),
            workers,
            "exactly-once: one transaction per batch and worker"
        );
    }
    let topics: Vec<String> = if config.kafka.router {
        vec![config.kafka.persons_topic.clone()]
    } else {
        config.kafka.input_topics.clone()
    };
    // Every input partition's events can reach every shard: each holds a shard's time
    // back until it delivered there, or has been quiet for the idle time.
    let sources: Vec<String> = if config.kafka.router {
        partitioning
            .inputs
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| progress::source_sequence(t, p)))
            .collect()
    } else {
        Vec::new()
    };
    info!(topics = ?topics, group = %config.kafka.group_id, workers, "consuming");

    // Each worker on a thread of its own; `stop` drains them, `kill` (this future dropped
    // mid-way, as a crash) ends them at their next await without draining.
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let _kill_on_drop = kill.clone().drop_guard();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, anyhow::Result<()>)>();
    let mut threads = Vec::with_capacity(workers);
    for ((shared, clients), reloads) in shareds.iter().cloned().zip(clients).zip(reload_rxs) {
        let w = worker::Worker {
            shared,
            clients,
            reloads,
            topics: topics.clone(),
            sources: sources.clone(),
        };
        let n = w.shared.worker;
        let (stop, kill, done) = (stop.clone(), kill.clone(), done_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("segstream-worker-{n}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = done.send((n, Err(anyhow::anyhow!("worker runtime: {e}"))));
                        return;
                    }
                };
                let result = rt.block_on(async move {
                    tokio::select! {
                        r = worker::run(w, stop) => Some(r),
                        _ = kill.cancelled() => None,
                    }
                });
                if let Some(r) = result {
                    let _ = done.send((n, r));
                }
            })
            .context("starting a worker thread")?;
        threads.push(thread);
    }
    drop(done_tx);
    if let Some(tx) = started {
        let _ = tx.send(Running {
            instance: instance.clone(),
            http_addr,
        });
    }

    let mut finished = 0;
    let result: anyhow::Result<()> = async {
        tokio::select! {
            biased;
            _ = &mut shutdown => Ok(()),
            r = async { router_task.as_mut().expect("guarded").await }, if router_task.is_some() => {
                router_task = None;
                match r {
                    Ok(Ok(())) => anyhow::bail!("the router stopped"),
                    Ok(Err(e)) => Err(e.context("the router failed")),
                    Err(e) => anyhow::bail!("the router panicked: {e}"),
                }
            }
            d = done_rx.recv() => {
                finished += 1;
                match d {
                    Some((n, Ok(()))) => anyhow::bail!("worker {n} stopped"),
                    Some((n, Err(e))) => Err(e.context(format!("worker {n} failed"))),
                    None => anyhow::bail!("every worker stopped"),
                }
            }
        }
    }
    .await;

    info!("shutting down: draining the workers");
    instance.workers.iter().for_each(|w| w.set_ready(false));
    stop.cancel();
    // The workers first (their last batches may still need the router's input).
    let mut worker_errors = Vec::new();
    while finished < workers {
        match done_rx.recv().await {
            Some((_, Ok(()))) => {}
            Some((n, Err(e))) => worker_errors.push(e.context(format!("worker {n} failed"))),
            None => break,
        }
        finished += 1;
    }
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    router_stop.cancel();
    if let Some(task) = router_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "the router stopped with an error"),
            Err(e) => warn!(error = %e, "the router panicked"),
        }
    }
    http_stop.cancel();
    let _ = http_task.await;
    match (result, worker_errors.into_iter().next()) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}
