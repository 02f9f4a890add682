//! The running service: Kafka in, the engine in the middle, Kafka out, HTTP on the side.
//!
//! One loop owns the consumer. It reads a batch of messages, applies each to the engine
//! (rejects go to the dead-letter topic), produces everything the batch caused (transitions,
//! dead letters, and one changelog record per customer the batch changed), waits until the
//! broker acknowledged all of it, and only then stores the batch's offsets (committed by
//! librdkafka's auto-commit): at-least-once. When the input is idle the watermark follows
//! the wall clock so that deadlines fire on time. Reloads and shutdown are handled between
//! batches. `main` only parses arguments and signals; tests call [`run`] directly.
//!
//! State is owned per partition number (all input topics are co-partitioned): when the
//! group assigns partition N, the profiles of partition N are restored from partition N of
//! the changelog before any of its messages is applied; when N is revoked, its profiles are
//! dropped and nothing more of it is written to the changelog.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::kafka::{self, Context, KafkaState, Outgoing};
use crate::metrics::Metrics;
use segstream_core::engine::{Engine, ReloadReport, StateChange};
use segstream_core::event::{EventError, RejectReason};
use segstream_core::transition::Transition;

/// After a broker error, the service reports not ready for this long.
pub const BROKER_HEALTH_WINDOW_MS: i64 = 5_000;

/// A request to reload the segment definitions; the reply carries the report or every
/// error of the rejected file.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<ReloadReport, String>>,
}

/// State shared between the processing loop and the HTTP handlers.
pub struct Shared {
    /// The engine. A std mutex: nothing awaits while holding it.
    pub engine: Mutex<Engine>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub ready: AtomicBool,
    pub reloads: mpsc::Sender<ReloadRequest>,
    pub kafka: Arc<KafkaState>,
}

impl Shared {
    /// Asks the processing loop to reload the definitions and waits for the outcome.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let (tx, rx) = oneshot::channel();
        self.reloads
            .send(ReloadRequest { reply: tx })
            .await
            .map_err(|_| "the service is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the service is shutting down".to_string())?
    }
}

/// Reads and compiles the definitions file; every error is in the message.
pub fn load_engine(config: &Config) -> anyhow::Result<Engine> {
    crate::definitions::load_engine(&config.segments.file, config.engine.clone())
        .map_err(|d| anyhow::anyhow!("invalid segment definitions ({} errors):\n{d}", d.len()))
}

/// A handle to a started service: its shared state and its HTTP address.
pub struct Running {
    pub shared: Arc<Shared>,
    pub http_addr: std::net::SocketAddr,
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

    let ctx = Context(kstate.clone());
    let consumer = kafka::consumer(&config.kafka, ctx.clone()).context("creating the consumer")?;
    let producer = kafka::producer(&config.kafka, ctx.clone()).context("creating the producer")?;
    let restorer: BaseConsumer<Context> = kafka::restorer_config(&config.kafka)
        .create_with_context(ctx)
        .context("creating the changelog reader")?;
    let Some(partitions) = check_topics(&config, &restorer, &mut shutdown).await? else {
        http_stop.cancel();
        return Ok(());
    };
    info!(
        partitions,
        changelog = %config.kafka.changelog_topic,
        strategy = kafka::assignment_strategy(&config.kafka),
        "partitioning checked"
    );
    if config.kafka.exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .context("initialising transactions (does the broker support them?)")?;
        info!(
            transactional_id = %kafka::transactional_id(&config.kafka),
            "exactly-once: one transaction per batch"
        );
    }
    let topics: Vec<&str> = config
        .kafka
        .input_topics
        .iter()
        .map(String::as_str)
        .collect();
    consumer
        .subscribe(&topics)
        .context("subscribing to the input topics")?;
    info!(topics = ?topics, group = %config.kafka.group_id, "consuming");
    if let Some(tx) = started {
        let _ = tx.send(Running {
            shared: shared.clone(),
            http_addr,
        });
    }

    let mut loop_state = LoopState::default();
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(req) = reload_rx.recv() => {
                    let outcome = reload(&shared, &producer).await;
                    let _ = req.reply.send(outcome);
                }
                batch = read_batch(&consumer, &restorer, &config, &shared, &mut loop_state) => {
                    let batch = batch?;
                    finish_batch(&consumer, &producer, &shared, batch, &loop_state).await?;
                }
            }
        }
        Ok(())
    }
    .await;

    info!("shutting down: flushing and committing");
    shared.ready.store(false, Ordering::SeqCst);
    metrics.ready.set(0);
    let _ = producer.flush(Duration::from_millis(config.shutdown_deadline as u64 / 2));
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => info!("offsets committed"),
        Err(e) => warn!(error = %e, "final commit failed (offsets stored earlier stay)"),
    }
    consumer.unsubscribe();
    http_stop.cancel();
    let _ = http_task.await;
    result
}

/// What one batch produced and which offsets it covers.
#[derive(Default)]
struct Batch {
    outgoing: Vec<Outgoing>,
    /// Position markers, produced after everything else (see [`Position`]).
    markers: Vec<Outgoing>,
    /// Next offset to commit per (topic, partition).
    offsets: HashMap<(String, i32), i64>,
    messages: usize,
    started: Option<Instant>,
}

impl Batch {
    /// The offsets to commit, for the partitions still owned (a revoked one is read again
    /// by its new owner from its last commit).
    fn owned_offsets(&self, owned: &BTreeSet<i32>) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.offsets.len());
        for ((topic, partition), offset) in &self.offsets {
            if owned.contains(partition) {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
        }
        Ok(tpl)
    }
}

#[derive(Default)]
struct LoopState {
    /// Partition numbers whose state this instance holds (restored from the changelog).
    owned: BTreeSet<i32>,
    /// Highest offset applied to the engine per partition: a message seen again after a
    /// failure before its offset was stored is not applied twice.
    applied: HashMap<(String, i32), i64>,
    /// Per partition: the largest event time seen and when the partition last delivered.
    partitions: HashMap<(String, i32), (i64, Instant)>,
    last_gauges: Option<Instant>,
}

impl LoopState {
    /// The event-time watermark of partition number `shard`: over the input topics'
    /// partitions of that number, the minimum of the largest event time of those that
    /// delivered recently, minus the allowed lateness. A topic's partition that has not
    /// delivered yet holds it back until it has been idle for `idle` (so one topic read
    /// ahead of another does not make the other's events late); an idle one does not hold
    /// time back. Each partition number has its own time: a partition that moves to
    /// another instance is not judged by that instance's other partitions.
    fn watermark(&self, shard: i32, lateness: i64, idle: Duration) -> Option<i64> {
        let of_shard = || {
            self.partitions
                .iter()
                .filter(move |((_, p), _)| *p == shard)
                .map(|(_, v)| v)
        };
        let mut active = of_shard()
            .filter(|(_, seen)| seen.elapsed() < idle)
            .map(|(ts, _)| *ts)
            .peekable();
        let t = if active.peek().is_some() {
            active.min()?
        } else {
            of_shard().map(|(ts, _)| *ts).max()?
        };
        (t != i64::MIN).then(|| t.saturating_sub(lateness))
    }

    /// The instance-wide watermark: the minimum over the partitions that delivered
    /// recently (or the maximum when all are idle), minus the allowed lateness. A shard
    /// whose partitions are all idle follows it, so quiet partitions' timers still fire as
    /// the others' event time passes.
    fn global_watermark(&self, lateness: i64, idle: Duration) -> Option<i64> {
        let mut active = self
            .partitions
            .values()
            .filter(|(_, seen)| seen.elapsed() < idle)
            .map(|(ts, _)| *ts)
            .peekable();
        let t = if active.peek().is_some() {
            active.min()?
        } else {
            self.partitions.values().map(|(ts, _)| *ts).max()?
        };
        (t != i64::MIN).then(|| t.saturating_sub(lateness))
    }

    fn shard_idle(&self, shard: i32, idle: Duration) -> bool {
        self.partitions
            .iter()
            .filter(|((_, p), _)| *p == shard)
            .all(|(_, (_, seen))| seen.elapsed() >= idle)
    }

    /// Tracks exactly the assigned partitions; a new one starts as "not delivered yet".
    fn sync_assignment(&mut self, assigned: &TopicPartitionList) {
        let now: Vec<(String, i32)> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.partitions.retain(|k, _| now.contains(k));
        self.applied.retain(|k, _| now.contains(k));
        for k in now {
            self.partitions
                .entry(k)
                .or_insert((i64::MIN, Instant::now()));
        }
    }

    fn delivered(&mut self, key: (String, i32), ts: i64) {
        let entry = self.partitions.entry(key).or_insert((ts, Instant::now()));
        entry.0 = entry.0.max(ts);
        entry.1 = Instant::now();
    }
}

fn dead_letter_for(
    config: &Config,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    payload: &[u8],
    err: &EventError,
) -> Outgoing {
    Outgoing::dead_letter(
        &config.kafka.dead_letter_topic,
        msg.key(),
        payload,
        err.reason.as_str(),
        &err.detail,
        msg.topic(),
        msg.partition(),
        msg.offset(),
    )
}

/// Reads and applies up to `batch_size` messages; returns early when the input is idle
/// (then the watermark follows the clock).
async fn read_batch(
    consumer: &StreamConsumer<Context>,
    restorer: &BaseConsumer<Context>,
    config: &Config,
    shared: &Shared,
    state: &mut LoopState,
) -> anyhow::Result<Batch> {
    let k = &config.kafka;
    let mut batch = Batch::default();
    let mut transitions: Vec<Transition> = Vec::new();
    if shared
        .kafka
        .assignment_changed
        .swap(false, Ordering::SeqCst)
    {
        on_assignment(consumer, restorer, config, shared, state, &mut transitions).await?;
    }
    let idle = Duration::from_millis(k.idle_after as u64);
    let partition_idle = Duration::from_millis(k.partition_idle_after as u64);
    let batch_timeout = Duration::from_millis(k.batch_timeout as u64);
    loop {
        let wait = match batch.started {
            None => idle,
            Some(s) => batch_timeout.saturating_sub(s.elapsed()),
        };
        if batch.started.is_some() && wait.is_zero() {
            break;
        }
        let msg = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => {
                if batch.started.is_none() {
                    // Idle and caught up: time moves on without events.
                    let ready = shared.kafka.assigned.load(Ordering::SeqCst) > 0
                        && shared.kafka.healthy(BROKER_HEALTH_WINDOW_MS);
                    shared.ready.store(ready, Ordering::SeqCst);
                    shared.metrics.ready.set(i64::from(ready));
                    let mut engine = lock(&shared.engine);
                    // Partitions gone idle stop holding the watermark back.
                    let lateness = config.engine.allowed_lateness;
                    let global = state.global_watermark(lateness, partition_idle);
                    for &p in &state.owned {
                        let own = state.watermark(p, lateness, partition_idle);
                        let wm = if state.shard_idle(p, partition_idle) {
                            own.max(global)
                        } else {
                            own
                        };
                        if let Some(wm) = wm {
                            engine.advance_shard_watermark(p as u16, wm, &mut transitions);
                        }
                    }
                    engine.on_idle(crate::clock::now_millis(), &mut transitions);
                }
                break;
            }
            Ok(Err(e)) => {
                // Broker or transport trouble: librdkafka reconnects by itself.
                warn!(error = %e, "consumer error");
                shared.ready.store(false, Ordering::SeqCst);
                shared.metrics.ready.set(0);
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            Ok(Ok(m)) => m,
        };
        // A rebalance runs inside `recv`: before this message is applied, drop what was
        // revoked and restore what was assigned (this message's partition among them).
        let key = (msg.topic().to_string(), msg.partition());
        if shared
            .kafka
            .assignment_changed
            .swap(false, Ordering::SeqCst)
            || !state.partitions.contains_key(&key)
        {
            on_assignment(consumer, restorer, config, shared, state, &mut transitions).await?;
        }
        if !state.owned.contains(&msg.partition()) {
            // Revoked between its fetch and now: the new owner reads it again.
            continue;
        }
        batch.started.get_or_insert_with(Instant::now);
        batch.messages += 1;
        batch.offsets.insert(key.clone(), msg.offset() + 1);
        if state.applied.get(&key).is_some_and(|a| msg.offset() <= *a) {
            continue;
        }
        state.applied.insert(key.clone(), msg.offset());
        let payload = msg.payload().unwrap_or(&[]);
        let result = if msg.payload().is_none() {
            Err(EventError::new(
                RejectReason::InvalidJson,
                "message has no payload",
            ))
        } else if payload.len() > k.max_message_bytes {
            Err(EventError::new(
                RejectReason::TooLarge,
                format!(
                    "{} bytes exceed max_message_bytes {}",
                    payload.len(),
                    k.max_message_bytes
                ),
            ))
        } else {
            let mut engine = lock(&shared.engine);
            let event = segstream_core::event::parse_event(payload);
            match event {
                Err(e) => Err(e),
                Ok(event) => {
                    let r = engine.apply(msg.partition() as u16, &event, &mut transitions);
                    state.delivered(key, event.timestamp);
                    let p = msg.partition();
                    if let Some(wm) =
                        state.watermark(p, config.engine.allowed_lateness, partition_idle)
                    {
                        engine.advance_shard_watermark(p as u16, wm, &mut transitions);
                    }
                    r
                }
            }
        };
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(e) if e.reason == RejectReason::Late => "late",
            Err(_) => "rejected",
        };
        shared
            .metrics
            .events_consumed
            .with_label_values(&[msg.topic(), outcome])
            .inc();
        if let Err(e) = result {
            if e.reason == RejectReason::Late {
                shared.metrics.late_events.inc();
            }
            shared
                .metrics
                .dead_letters
                .with_label_values(&[e.reason.as_str()])
                .inc();
            batch
                .outgoing
                .push(dead_letter_for(config, &msg, payload, &e));
        }
        if batch.messages >= k.batch_size {
            shared.ready.store(false, Ordering::SeqCst);
            break;
        }
    }
    for t in &transitions {
        batch.outgoing.push(Outgoing::transition(
            t,
            &k.output_topic,
            &k.cloudevents_source,
        ));
    }
    // One changelog entry per customer the batch changed (coalesced), after the
    // transitions it caused; only for partitions still owned.
    let mut changes: Vec<StateChange> = Vec::new();
    lock(&shared.engine).drain_changes(&mut changes);
    for c in changes {
        if state.owned.contains(&i32::from(c.shard)) {
            let kind = if c.record.is_some() {
                "record"
            } else {
                "tombstone"
            };
            shared
                .metrics
                .changelog_records
                .with_label_values(&[kind])
                .inc();
            batch
                .outgoing
                .push(Outgoing::changelog(&k.changelog_topic, &c));
        }
    }
    // Then, per partition number the batch read, where its input stands.
    let shards: BTreeSet<i32> = batch
        .offsets
        .keys()
        .map(|(_, p)| *p)
        .filter(|p| state.owned.contains(p))
        .collect();
    if !shards.is_empty() {
        let engine = lock(&shared.engine);
        for p in shards {
            let (watermark, max_event_time) = engine.shard_time(p as u16);
            let inputs = state
                .applied
                .iter()
                .filter(|((_, q), _)| *q == p)
                .map(|((t, _), o)| {
                    let ts = state
                        .partitions
                        .get(&(t.clone(), p))
                        .map_or(i64::MIN, |v| v.0);
                    (t.clone(), (o + 1, ts))
                })
                .collect();
            let pos = Position {
                v: 1,
                watermark,
                max_event_time,
                inputs,
            };
            batch.markers.push(pos.outgoing(&k.changelog_topic, p));
        }
    }
    if state
        .last_gauges
        .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
    {
        refresh_gauges(shared);
        state.last_gauges = Some(Instant::now());
    }
    Ok(batch)
}

/// Produces what a batch caused, waits for every acknowledgement, then stores its offsets.
async fn finish_batch(
    consumer: &StreamConsumer<Context>,
    producer: &rdkafka::producer::FutureProducer<Context>,
    shared: &Shared,
    batch: Batch,
    state: &LoopState,
) -> anyhow::Result<()> {
    if shared.config.kafka.exactly_once {
        return finish_batch_transactional(consumer, producer, shared, batch, state).await;
    }
    if !batch.outgoing.is_empty() {
        kafka::produce_all(producer, &batch.outgoing, &shared.metrics)
            .await
            .context("producing transitions")?;
    }
    // Only once every record is acknowledged: a marker never stands for a missing record.
    if !batch.markers.is_empty() {
        kafka::produce_all(producer, &batch.markers, &shared.metrics)
            .await
            .context("producing position markers")?;
    }
    let tpl = batch.owned_offsets(&state.owned)?;
    if tpl.count() > 0 {
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its new owner re-reads from the last commit.
            warn!(error = %e, "storing offsets failed");
        }
    }
    if let Some(s) = batch.started {
        shared
            .metrics
            .processing_seconds
            .observe(s.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Exactly-once: the batch's records and its input offsets in one transaction. A failed
/// transaction is aborted and stops the service: the engine is ahead of what was committed,
/// and its successor (a restart, or another instance after the rebalance) resumes from the
/// last committed transaction with the changelog as of then.
async fn finish_batch_transactional(
    consumer: &StreamConsumer<Context>,
    producer: &rdkafka::producer::FutureProducer<Context>,
    shared: &Shared,
    batch: Batch,
    state: &LoopState,
) -> anyhow::Result<()> {
    let tpl = batch.owned_offsets(&state.owned)?;
    if batch.outgoing.is_empty() && tpl.count() == 0 {
        return Ok(());
    }
    let timeout = Duration::from_secs(30);
    producer
        .begin_transaction()
        .context("beginning a transaction")?;
    let committed: anyhow::Result<()> = async {
        kafka::produce_once(producer, &batch.outgoing, &shared.metrics)
            .await
            .context("producing in the transaction")?;
        kafka::produce_once(producer, &batch.markers, &shared.metrics)
            .await
            .context("producing position markers in the transaction")?;
        if tpl.count() > 0 {
            let group = consumer
                .group_metadata()
                .context("no consumer group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &group, timeout)
                .context("adding the input offsets to the transaction")?;
        }
        producer
            .commit_transaction(timeout)
            .context("committing the transaction")?;
        Ok(())
    }
    .await;
    if let Err(e) = committed {
        let _ = producer.abort_transaction(timeout);
        return Err(e.context(
            "transaction aborted: stopping (a restart resumes from the last committed transaction)",
        ));
    }
    if let Some(s) = batch.started {
        shared
            .metrics
            .processing_seconds
            .observe(s.elapsed().as_secs_f64());
    }
    Ok(())
}

async fn reload(
    shared: &Shared,
    producer: &rdkafka::producer::FutureProducer<Context>,
) -> Result<ReloadReport, String> {
    let path = &shared.config.segments.file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            shared
                .metrics
                .reloads
                .with_label_values(&["rejected"])
                .inc();
            return Err(format!("cannot read {}: {e}", path.display()));
        }
    };
    let mut transitions = Vec::new();
    let outcome =
        lock(&shared.engine).reload_source(&path.display().to_string(), &text, &mut transitions);
    match outcome {
        Err(diags) => {
            shared
                .metrics
                .reloads
                .with_label_values(&["rejected"])
                .inc();
            error!(
                errors = diags.len(),
                "segment reload rejected; the running definitions stay:\n{diags}"
            );
            Err(diags.to_string())
        }
        Ok(report) => {
            shared.metrics.reloads.with_label_values(&["ok"]).inc();
            info!(
                version = %report.version,
                added = ?report.added,
                changed = ?report.changed,
                removed = ?report.removed,
                transitions = report.transitions,
                "segment definitions reloaded"
            );
            let k = &shared.config.kafka;
            let outgoing: Vec<Outgoing> = transitions
                .iter()
                .map(|t| Outgoing::transition(t, &k.output_topic, &k.cloudevents_source))
                .collect();
            let produced = if k.exactly_once {
                produce_transaction(producer, &outgoing, &shared.metrics).await
            } else {
                kafka::produce_all(producer, &outgoing, &shared.metrics)
                    .await
                    .map_err(anyhow::Error::from)
            };
            if let Err(e) = produced {
                return Err(format!(
                    "reloaded, but producing its transitions failed: {e:#}"
                ));
            }
            refresh_gauges(shared);
            Ok(report)
        }
    }
}

/// Produces records in a transaction of their own (aborted on failure).
async fn produce_transaction(
    producer: &rdkafka::producer::FutureProducer<Context>,
    records: &[Outgoing],
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    producer.begin_transaction()?;
    let r = kafka::produce_once(producer, records, metrics).await;
    match r {
        Ok(()) => Ok(producer.commit_transaction(timeout)?),
        Err(e) => {
            let _ = producer.abort_transaction(timeout);
            Err(e.into())
        }
    }
}

/// The changelog key of position markers (no customer id starts with a NUL).
pub const POSITION_KEY: &str = "\u{0}segstream.position";

/// A position marker: written to changelog partition N after the records of every batch
/// that read partition N, it says up to which input offsets (and event time) the records
/// before it reflect. A restore applies records only up to the last marker (a batch cut
/// short by a crash is read again from the input instead) and skips input messages the
/// restored state already contains: a crash neither loses nor double-counts an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub v: u8,
    pub watermark: i64,
    pub max_event_time: i64,
    /// Per input topic: the next offset to apply and the largest event time seen.
    pub inputs: std::collections::BTreeMap<String, (i64, i64)>,
}

impl Position {
    fn outgoing(&self, topic: &str, partition: i32) -> Outgoing {
        Outgoing {
            topic: topic.to_string(),
            partition: Some(partition),
            key: Some(POSITION_KEY.as_bytes().to_vec()),
            payload: Some(serde_json::to_vec(self).unwrap_or_default()),
            headers: Vec::new(),
            event_time: None,
            transition: None,
        }
    }
}

/// What a restore read.
#[derive(Debug, Default)]
pub struct Restored {
    /// Changelog entries read (records, tombstones, markers, skipped tail).
    pub entries: u64,
    /// The last position marker per partition.
    pub positions: HashMap<i32, Position>,
}

/// Checks the partitioning contract and creates the changelog topic if needed, waiting
/// (retrying) while the broker is unavailable. `None` if shut down meanwhile.
async fn check_topics(
    config: &Config,
    client: &BaseConsumer<Context>,
    shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> anyhow::Result<Option<i32>> {
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

/// Follows the consumer's assignment: drops the state of partition numbers no longer
/// assigned, restores those newly assigned from the changelog (not ready meanwhile).
async fn on_assignment(
    consumer: &StreamConsumer<Context>,
    restorer: &BaseConsumer<Context>,
    config: &Config,
    shared: &Shared,
    state: &mut LoopState,
    out: &mut Vec<Transition>,
) -> anyhow::Result<()> {
    let assigned = consumer
        .assignment()
        .context("reading the consumer's assignment")?;
    state.sync_assignment(&assigned);
    let now: BTreeSet<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
    let lost: Vec<i32> = state.owned.difference(&now).copied().collect();
    let gained: Vec<i32> = now.difference(&state.owned).copied().collect();
    if !lost.is_empty() {
        let dropped = lock(&shared.engine).drop_shards(&|s| now.contains(&i32::from(s)));
        shared.metrics.state_dropped.inc_by(dropped as u64);
        info!(partitions = ?lost, profiles = dropped, "revoked: state dropped");
    }
    state.owned.retain(|p| now.contains(p));
    if !gained.is_empty() {
        shared.ready.store(false, Ordering::SeqCst);
        shared.metrics.ready.set(0);
        let started = Instant::now();
        let restored = restore_partitions(
            restorer,
            &config.kafka.changelog_topic,
            &gained,
            &shared.engine,
            &shared.metrics,
            out,
        )
        .await?;
        let n = restored.entries;
        // Where the restored state stands: messages up to there are not applied again, and
        // each partition continues from its previous owner's event time.
        let mut engine = lock(&shared.engine);
        for (p, pos) in restored.positions {
            engine.set_shard_time(p as u16, pos.watermark, pos.max_event_time);
            for (topic, (next, max_ts)) in pos.inputs {
                let key = (topic, p);
                if state.partitions.contains_key(&key) {
                    state.applied.insert(key.clone(), next - 1);
                    if let Some(e) = state.partitions.get_mut(&key) {
                        e.0 = e.0.max(max_ts);
                    }
                }
            }
        }
        drop(engine);
        shared
            .metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        info!(
            partitions = ?gained,
            entries = n,
            seconds = started.elapsed().as_secs_f64(),
            "assigned: state restored from the changelog"
        );
        state.owned.extend(gained);
    }
    Ok(())
}

/// Reads partitions `parts` of the changelog `topic` from the beginning to their current
/// end into the engine (records restored into the shard of their partition number), with
/// progress in `metrics`. `restorer` is a consumer outside any group (nothing committed).
/// Transitions of records written under other definitions go to `out`. Returns the number
/// of entries read. A tight polling loop on a worker of a multi-thread tokio runtime
/// (`block_in_place`): restoring is all this instance does meanwhile.
pub async fn restore_partitions<C: rdkafka::consumer::ConsumerContext + 'static>(
    restorer: &BaseConsumer<C>,
    topic: &str,
    parts: &[i32],
    engine: &Mutex<Engine>,
    metrics: &Metrics,
    out: &mut Vec<Transition>,
) -> anyhow::Result<Restored> {
    tokio::task::block_in_place(|| restore_blocking(restorer, topic, parts, engine, metrics, out))
}

fn restore_blocking<C: rdkafka::consumer::ConsumerContext + 'static>(
    restorer: &BaseConsumer<C>,
    topic: &str,
    parts: &[i32],
    engine: &Mutex<Engine>,
    metrics: &Metrics,
    out: &mut Vec<Transition>,
) -> anyhow::Result<Restored> {
    let m = metrics;
    let mut restored = Restored::default();
    // The counters once, not a label lookup per entry.
    let counters =
        ["restored", "tombstone", "invalid"].map(|o| m.restore_records.with_label_values(&[o]));
    let count = |outcome: &str| match outcome {
        "restored" => counters[0].inc(),
        "tombstone" => counters[1].inc(),
        _ => counters[2].inc(),
    };
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        let mut backoff = Duration::from_millis(200);
        let (low, high) = loop {
            match restorer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(e) => {
                    warn!(error = %e, partition = p, "changelog offsets unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            m.restore_remaining.add(high - low);
        }
    }
    m.restoring_partitions.set(ends.len() as i64);
    if ends.is_empty() {
        return Ok(restored);
    }
    // The changelog is compacted: about one record per customer. Growing the map once
    // saves the rehashes (time, and the transient doubling of memory); a changelog the
    // broker has not compacted yet over-reserves at most by its dirty share.
    let total: i64 = ends.values().sum::<i64>();
    lock(engine).reserve(usize::try_from(total).unwrap_or(0).min(RESERVE_MAX));
    restorer
        .assign(&tpl)
        .context("assigning changelog partitions")?;
    let codec = lock(engine).codec();
    // This thread reads and groups entries by marker; a second one applies the groups to
    // the engine, so reading and decoding overlap.
    let applied: anyhow::Result<Vec<Transition>> = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(i32, Vec<Entry>)>(64);
        let count = &count;
        let applier = scope.spawn(move || {
            let mut out = Vec::new();
            for (p, entries) in rx {
                let mut engine = lock(engine);
                for (id, record) in entries {
                    count(restore_one(&mut engine, p, &id, record, &mut out));
                }
            }
            out
        });
        // Per partition, the entries after its last marker so far.
        let mut tail: HashMap<i32, Vec<Entry>> = HashMap::new();
        let mut read = 0u64;
        while !ends.is_empty() {
            let msg = match restorer.poll(Duration::from_secs(1)) {
                None => {
                    // Nothing more to read: a partition may end in offsets that carry no
                    // record (transaction markers), so also ask where the reader stands.
                    if let Ok(pos) = restorer.position() {
                        for e in pos.elements() {
                            if let (Offset::Offset(o), Some(&end)) =
                                (e.offset(), ends.get(&e.partition()))
                            {
                                if o >= end {
                                    ends.remove(&e.partition());
                                }
                            }
                        }
                        m.restoring_partitions.set(ends.len() as i64);
                    }
                    continue;
                }
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!(error = %e, "restore: consumer error; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let p = msg.partition();
            let Some(&end) = ends.get(&p) else { continue };
            read += 1;
            m.restore_remaining.dec();
            match msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
                None => count("invalid"),
                Some(POSITION_KEY) => match msg.payload().map(serde_json::from_slice::<Position>) {
                    Some(Ok(pos)) => {
                        let entries = tail.remove(&p).unwrap_or_default();
                        if !entries.is_empty() && tx.send((p, entries)).is_err() {
                            break;
                        }
                        restored.positions.insert(p, pos);
                    }
                    _ => {
                        warn!(
                            partition = p,
                            offset = msg.offset(),
                            "invalid position marker skipped"
                        );
                        count("invalid");
                    }
                },
                // Parsed here, finished against the engine on the applier thread.
                Some(id) => tail
                    .entry(p)
                    .or_default()
                    .push((id.to_string(), msg.payload().map(|b| codec.parse(b)))),
            }
            if msg.offset() + 1 >= end {
                ends.remove(&p);
                m.restoring_partitions.set(ends.len() as i64);
            }
        }
        // Entries after a partition's last marker belong to a batch whose offsets were
        // never stored: it is read again from the input. A partition without any marker
        // (written by an older version) is taken as it is.
        for (p, entries) in tail {
            if restored.positions.contains_key(&p) {
                info!(
                    partition = p,
                    entries = entries.len(),
                    "changelog tail of an unfinished batch skipped"
                );
            } else if tx.send((p, entries)).is_err() {
                break;
            }
        }
        drop(tx);
        restored.entries = read;
        applier
            .join()
            .map_err(|_| anyhow::anyhow!("the restore applier panicked"))
    });
    out.extend(applied?);
    m.restore_remaining.set(0);
    restorer
        .unassign()
        .context("releasing changelog partitions")?;
    Ok(restored)
}

/// The most profile slots a restore reserves in advance.
const RESERVE_MAX: usize = 64 << 20;

/// A changelog entry read but not applied yet: customer id and the record parsed (or a
/// tombstone).
type Entry = (
    String,
    Option<Result<segstream_core::changelog::Parsed, segstream_core::changelog::DecodeError>>,
);

fn restore_one(
    engine: &mut Engine,
    partition: i32,
    id: &str,
    record: Option<
        Result<segstream_core::changelog::Parsed, segstream_core::changelog::DecodeError>,
    >,
    out: &mut Vec<Transition>,
) -> &'static str {
    let tombstone = record.is_none();
    let restored = match record.transpose() {
        Ok(parsed) => engine.restore_parsed(partition as u16, id, parsed, out),
        Err(e) => Err(e),
    };
    match restored {
        Ok(()) if tombstone => "tombstone",
        Ok(()) => "restored",
        Err(e) => {
            warn!(error = %e, partition, customer = id, "changelog record skipped");
            "invalid"
        }
    }
}

/// Updates the gauges that need a scan of the profiles.
pub fn refresh_gauges(shared: &Shared) {
    let engine = lock(&shared.engine);
    let m = &shared.metrics;
    m.profiles.set(engine.profile_count() as i64);
    m.profile_bytes.set(engine.profile_bytes() as i64);
    m.pending_timers.set(engine.pending_timers() as i64);
    m.timers_fired.reset();
    m.timers_fired.inc_by(engine.stats().timers_fired);
    let wm = engine.watermark();
    if wm != i64::MIN {
        m.watermark_seconds.set(wm / 1000);
    }
    m.segment_population.reset();
    for (name, n) in engine.populations() {
        m.segment_population
            .with_label_values(&[&name])
            .set(n as i64);
    }
}

/// Locks a mutex. A panic while it was held (a bug) poisons it; the service goes on with
/// the state as the panicking call left it rather than stopping every later request.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
