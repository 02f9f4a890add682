//! The running service: Kafka in, the engine in the middle, Kafka out, HTTP on the side.
//!
//! One loop owns the consumer. It reads a batch of messages, applies each to the engine
//! (rejects go to the dead-letter topic), produces everything the batch caused, waits until
//! the broker acknowledged all of it, and only then stores the batch's offsets (committed
//! by librdkafka's auto-commit): at-least-once. When the input is idle the watermark follows
//! the wall clock so that deadlines fire on time. Reloads and shutdown are handled between
//! batches. `main` only parses arguments and signals; tests call [`run`] directly.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{Engine, ReloadReport, SystemClock};
use crate::event::{EventError, RejectReason};
use crate::kafka::{self, Context, KafkaState, Outgoing};
use crate::metrics::Metrics;
use crate::transition::Transition;

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
    let path = &config.segments.file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read segment definitions {}", path.display()))?;
    Engine::from_source(&path.display().to_string(), &text, config.engine.clone())
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
    let mut engine = load_engine(&config)?;
    engine.set_external_watermark(true);
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
    let producer = kafka::producer(&config.kafka, ctx).context("creating the producer")?;
    // Rebuild the profiles from the input history this group has already processed, so a
    // restart loses no state (until a changelog makes this a short read).
    let restored =
        restore_from_inputs(&config, Context(kstate.clone()), &shared, &mut shutdown).await?;
    info!(events = restored, "state restored from the input topics");
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
                batch = read_batch(&consumer, &config, &shared, &mut loop_state) => {
                    let batch = batch?;
                    finish_batch(&consumer, &producer, &shared, batch).await?;
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
    /// Next offset to commit per (topic, partition).
    offsets: HashMap<(String, i32), i64>,
    messages: usize,
    started: Option<Instant>,
}

#[derive(Default)]
struct LoopState {
    /// Highest offset applied to the engine per partition: a message seen again after a
    /// failure before its offset was stored is not applied twice.
    applied: HashMap<(String, i32), i64>,
    /// Per partition: the largest event time seen and when the partition last delivered.
    partitions: HashMap<(String, i32), (i64, Instant)>,
    last_gauges: Option<Instant>,
}

impl LoopState {
    /// The event-time watermark over partitions: the minimum of the largest event time of
    /// every partition that delivered recently, minus the allowed lateness. A partition that
    /// has not delivered yet holds the watermark back until it has been idle for
    /// `idle` (so one partition read ahead of the others does not make theirs late); an idle
    /// partition does not hold time back.
    fn watermark(&self, lateness: i64, idle: Duration) -> Option<i64> {
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
    consumer: &rdkafka::consumer::StreamConsumer<Context>,
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
        if let Ok(a) = consumer.assignment() {
            state.sync_assignment(&a);
        }
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
                    if let Some(wm) =
                        state.watermark(config.engine.allowed_lateness, partition_idle)
                    {
                        engine.advance_watermark(wm, &mut transitions);
                    }
                    engine.on_idle(&SystemClock, &mut transitions);
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
        batch.started.get_or_insert_with(Instant::now);
        batch.messages += 1;
        let key = (msg.topic().to_string(), msg.partition());
        if !state.partitions.contains_key(&key) {
            // A partition this loop has not seen: take the whole new assignment first, so
            // the partitions that have not delivered yet hold the watermark back.
            shared
                .kafka
                .assignment_changed
                .store(false, Ordering::SeqCst);
            if let Ok(a) = consumer.assignment() {
                state.sync_assignment(&a);
            }
        }
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
            let event = crate::event::parse_event(payload);
            match event {
                Err(e) => Err(e),
                Ok(event) => {
                    let r = engine.apply(&event, &mut transitions);
                    state.delivered(key, event.timestamp);
                    if let Some(wm) =
                        state.watermark(config.engine.allowed_lateness, partition_idle)
                    {
                        engine.advance_watermark(wm, &mut transitions);
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
    consumer: &rdkafka::consumer::StreamConsumer<Context>,
    producer: &rdkafka::producer::FutureProducer<Context>,
    shared: &Shared,
    batch: Batch,
) -> anyhow::Result<()> {
    if !batch.outgoing.is_empty() {
        kafka::produce_all(producer, &batch.outgoing, &shared.metrics)
            .await
            .context("producing transitions")?;
    }
    if !batch.offsets.is_empty() {
        let mut tpl = TopicPartitionList::with_capacity(batch.offsets.len());
        for ((topic, partition), offset) in &batch.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
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
            if let Err(e) = kafka::produce_all(producer, &outgoing, &shared.metrics).await {
                return Err(format!(
                    "reloaded, but producing its transitions failed: {e}"
                ));
            }
            refresh_gauges(shared);
            Ok(report)
        }
    }
}

/// Replays, without producing anything, every input message this consumer group has
/// already committed: the engine ends in the state it had when those offsets were committed
/// (transitions of that history were produced before). Waits, retrying, while the broker is
/// unavailable. Returns the number of events applied.
async fn restore_from_inputs(
    config: &Config,
    ctx: Context,
    shared: &Shared,
    shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> anyhow::Result<u64> {
    use rdkafka::consumer::StreamConsumer;
    let k = &config.kafka;
    let restorer: StreamConsumer<Context> =
        kafka::consumer(k, ctx).context("creating the restore consumer")?;
    let timeout = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(200);
    // Which partitions exist, and where the group stands in each.
    let committed = loop {
        let attempt = (|| -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for topic in &k.input_topics {
                let md = restorer.fetch_metadata(Some(topic), timeout)?;
                for t in md.topics() {
                    for p in t.partitions() {
                        tpl.add_partition(t.name(), p.id());
                    }
                }
            }
            restorer.committed_offsets(tpl, timeout)
        })();
        match attempt {
            Ok(tpl) => break tpl,
            Err(e) => {
                warn!(error = %e, "broker unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.as_mut() => return Ok(0),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut assign = TopicPartitionList::new();
    for e in committed.elements() {
        if let Offset::Offset(c) = e.offset() {
            if c > 0 {
                ends.insert((e.topic().to_string(), e.partition()), c);
                assign.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
            }
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    restorer
        .assign(&assign)
        .context("assigning partitions to restore")?;
    let mut state = LoopState::default();
    let mut discard = Vec::new();
    let mut applied = 0u64;
    let idle = Duration::from_millis(k.partition_idle_after as u64);
    while !ends.is_empty() {
        let msg = tokio::select! {
            m = restorer.recv() => m,
            _ = shutdown.as_mut() => return Ok(applied),
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "restore: consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let key = (msg.topic().to_string(), msg.partition());
        let Some(&end) = ends.get(&key) else { continue };
        if msg.offset() >= end {
            ends.remove(&key);
            continue;
        }
        if let Some(Ok(event)) = msg.payload().map(crate::event::parse_event) {
            let mut engine = lock(&shared.engine);
            if engine.apply(&event, &mut discard).is_ok() {
                applied += 1;
            }
            let entry = state
                .partitions
                .entry(key.clone())
                .or_insert((event.timestamp, Instant::now()));
            entry.0 = entry.0.max(event.timestamp);
            entry.1 = Instant::now();
            if let Some(wm) = state.watermark(config.engine.allowed_lateness, idle) {
                engine.advance_watermark(wm, &mut discard);
            }
            discard.clear();
        }
        if msg.offset() + 1 >= end {
            ends.remove(&key);
        }
    }
    Ok(applied)
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
