//! The router: the first stage when persons are spread over instances (`kafka.router`).
//!
//! Producers key events by whatever id they have (a cookie, a customer id), with whatever
//! partitioner their client uses, so one person's events start out on different partitions
//! of the input topics. The router reads the input topics (any partition counts) in a
//! consumer group of its own, and puts every event on the persons topic, in the home
//! partition of the id it is recorded under ([`segstream_core::engine::home`]: Kafka's
//! default partitioner, so any client can compute it), keyed by that id, with its value,
//! headers and timestamp as they came and its origin in routing headers. The segment stage
//! reads the persons topic: a person's events meet in one partition there, and a person
//! whose ids were linked is found from any of them (see `segstream_core::engine::handoff`).
//!
//! Messages that are not events (not JSON, failing the contract, too large, stamped in the
//! future, every id blocked) go to the dead-letter topic from here, as they came. Offsets
//! are stored after the routed records are acknowledged (at-least-once: the segment stage
//! recognises a routed event it has applied by its origin; the acknowledgements are awaited
//! by a [`committer`] beside the loop, so the next batch is read meanwhile), or committed in
//! one transaction with them (exactly-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_core::engine::{home, Blocklist};
use segstream_core::event::{check_not_future, EventError, InputFormat, RejectReason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::kafka::produce::{send_all, InFlight, KEEP_ALL};
use crate::kafka::records::{Original, Rejection};
use crate::kafka::{self, KafkaContext, Outgoing};
use crate::metrics::{series, EventOutcome, Label, PersonsKind};
use crate::shared::Shared;

/// The router's clients.
pub struct Router {
    pub consumer: StreamConsumer<KafkaContext>,
    pub producer: FutureProducer<KafkaContext>,
    /// The persons topic's partition count.
    pub partitions: u16,
}

/// Routes until `stop` is cancelled, then commits and returns.
pub async fn run(
    router: Router,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let k = &shared.config.kafka;
    let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
    router
        .consumer
        .subscribe(&topics)
        .context("the router subscribing to the input topics")?;
    if k.exactly_once {
        router
            .producer
            .init_transactions(Duration::from_secs(30))
            .context("initialising the router's transactions")?;
    }
    info!(topics = ?topics, persons = %k.persons_topic, partitions = router.partitions, "routing");
    let blocklist = Blocklist::new(&shared.config.engine.identity);
    let mut quiet = QuietSources::default();
    let (handed, acknowledged) = mpsc::channel::<Sent>(DEPTH);
    let routing = async {
        // Dropped at the end: the committer then finishes what it was handed and returns.
        let handed = handed;
        loop {
            let mut batch = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                b = read(&router, &shared, &blocklist) => b,
            };
            quiet.tell(&router, &shared, &mut batch);
            if batch.outgoing.is_empty() && batch.offsets.count() == 0 {
                continue;
            }
            if k.exactly_once {
                commit_transaction(&router, &shared, batch).await?;
            } else {
                // Handed to the producer now; acknowledged (then its offsets stored) by the
                // committer while the next batch is read. The hand-over waits while the
                // committer is a whole batch behind, and pauses the input if that is long.
                let sent =
                    send_all(&router.producer, &batch.outgoing, KEEP_ALL, &shared.metrics).await;
                let step = async {
                    handed
                        .send(Sent { batch, sent })
                        .await
                        .map_err(|_| anyhow::anyhow!("the router's committer stopped"))
                };
                super::backpressure::while_committing(&router.consumer, &shared, step).await?;
            }
        }
        Ok(())
    };
    let (result, ()) = tokio::join!(routing, committer(&router, &shared, acknowledged));
    let _ = router.producer.flush(Duration::from_secs(5));
    if !k.exactly_once {
        if let Err(e) = router
            .consumer
            .commit_consumer_state(CommitMode::Sync)
            .or_else(|e| {
                if nothing_to_commit(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        {
            warn!(error = %e, "the router's final commit failed (offsets stored earlier stay)");
        }
    }
    router.consumer.unsubscribe();
    result
}

/// What one batch of the router produced and the offsets it covers.
struct Batch {
    outgoing: Vec<Outgoing>,
    /// The next offset per input partition read (built from `read` when the batch ends).
    offsets: TopicPartitionList,
    /// Per input partition read: the next offset, and the largest event time routed.
    read: Vec<Read>,
}

/// One input partition's share of a batch.
struct Read {
    topic: String,
    partition: i32,
    next: i64,
    time: Option<i64>,
}

/// Telling the shards which input partitions are quiet. A shard cannot tell a quiet
/// input partition from a router that lags or is down (both are silence), so a routed
/// source holds the shard's event time back until the router says it is quiet: no event
/// from it for `kafka.partition_idle_after`. The word is repeated every such period
/// while it stays quiet (a shard restored meanwhile hears it again).
#[derive(Default)]
struct QuietSources {
    /// Per assigned input partition: its last event (or since when it is assigned), when
    /// the shards were last told it is quiet, and the largest event time routed from it
    /// (told with it: a shard learns where the source stands even if its latest events
    /// went to other shards).
    seen: std::collections::HashMap<(String, i32), SourceSeen>,
}

/// (last event or assignment, last told quiet, largest event time routed).
type SourceSeen = (Instant, Option<Instant>, Option<i64>);

impl QuietSources {
    fn tell(&mut self, router: &Router, shared: &Shared, batch: &mut Batch) {
        let k = &shared.config.kafka;
        let now = Instant::now();
        let idle = Duration::from_millis(k.partition_idle_after as u64);
        for r in batch.read.drain(..) {
            let Some(time) = r.time else { continue };
            let e = self
                .seen
                .entry((r.topic, r.partition))
                .or_insert((now, None, None));
            *e = (now, None, Some(e.2.map_or(time, |t| t.max(time))));
        }
        let Ok(assigned) = router.consumer.assignment() else {
            return;
        };
        let assigned: Vec<(String, i32)> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.seen.retain(|p, _| assigned.contains(p));
        for p in assigned {
            let (last, told, time) = self.seen.entry(p.clone()).or_insert((now, None, None));
            let due = now.saturating_duration_since(*last) >= idle
                && told.is_none_or(|t| now.saturating_duration_since(t) >= idle);
            if due {
                *told = Some(now);
                for shard in 0..i32::from(router.partitions) {
                    batch.outgoing.push(Outgoing::source_quiet(
                        &k.persons_topic,
                        shard,
                        &p.0,
                        p.1,
                        *time,
                    ));
                    series(&shared.metrics.persons_records, PersonsKind::SourceQuiet).inc();
                }
            }
        }
    }
}

/// Reads up to `batch_size` messages and routes each (or makes it a dead letter).
async fn read(router: &Router, shared: &Shared, blocklist: &Blocklist) -> Batch {
    let k = &shared.config.kafka;
    let mut batch = Batch {
        outgoing: Vec::new(),
        offsets: TopicPartitionList::new(),
        read: Vec::new(),
    };
    let mut started: Option<Instant> = None;
    let mut messages = 0;
    while messages < k.batch_size {
        let Some(wait) = super::batch::next_wait(k, started) else {
            break;
        };
        let msg = match tokio::time::timeout(wait, router.consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                warn!(error = %e, "router: consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            Ok(Ok(m)) => m,
        };
        started.get_or_insert_with(Instant::now);
        messages += 1;

        let i = match batch
            .read
            .iter()
            .position(|r| r.partition == msg.partition() && r.topic == msg.topic())
        {
            Some(i) => i,
            None => {
                batch.read.push(Read {
                    topic: msg.topic().to_string(),
                    partition: msg.partition(),
                    next: 0,
                    time: None,
                });
                batch.read.len() - 1
            }
        };
        batch.read[i].next = msg.offset() + 1;
        match route(router, shared, blocklist, &msg) {
            Ok((out, time)) => {
                let r = &mut batch.read[i];
                r.time = Some(r.time.map_or(time, |t| t.max(time)));
                series(&shared.metrics.persons_records, PersonsKind::Event).inc();
                batch.outgoing.push(out);
            }
            Err(e) => {
                let m = &shared.metrics;
                m.events_consumed
                    .with_label_values(&[msg.topic(), EventOutcome::Rejected.as_str()])
                    .inc();
                series(&m.dead_letters, e.reason).inc();
                let why = Rejection {
                    reason: e.reason.as_str(),
                    detail: &e.detail,
                };
                batch.outgoing.push(Outgoing::dead_letter(
                    &k.dead_letter_topic,
                    &Original::of(&msg),
                    why,
                    k.dead_letter_max_bytes,
                ));
            }
        }
    }
    // One entry per partition (a list with several would store the first one's).
    for r in &batch.read {
        let _ = batch
            .offsets
            .add_partition_offset(&r.topic, r.partition, Offset::Offset(r.next));
    }
    batch
}

/// The persons-topic record of an input message, or why it is not an event.
fn route(
    router: &Router,
    shared: &Shared,
    blocklist: &Blocklist,
    msg: &BorrowedMessage<'_>,
) -> Result<(Outgoing, i64), EventError> {
    let k = &shared.config.kafka;
    let Some(payload) = msg.payload() else {
        return Err(EventError::new(
            RejectReason::InvalidJson,
            "message has no payload",
        ));
    };
    if payload.len() > k.max_message_bytes {
        return Err(EventError::new(
            RejectReason::TooLarge,
            format!(
                "{} bytes exceed max_message_bytes {}",
                payload.len(),
                k.max_message_bytes
            ),
        ));
    }
    let format = k.input_format(msg.topic());
    let event = format.parse(payload)?;
    check_not_future(
        event.timestamp,
        crate::clock::now_millis(),
        shared.config.engine.max_future_skew,
    )?;
    let Some(subject) = blocklist.subject(&event) else {
        return Err(EventError::new(
            RejectReason::InvalidValue,
            "every id of the event is blocked (engine.identity.blocked_ids)",
        ));
    };
    let partition = i32::from(home(subject, router.partitions));
    let format = (format != InputFormat::Segstream).then(|| format.name());
    Ok((
        Outgoing::routed(&k.persons_topic, partition, subject, msg, format),
        event.timestamp,
    ))
}

/// Batches handed to the producer and waiting for the committer: one, so at most two
/// batches are in flight while a third is read (as in the segment stage's pipeline).
const DEPTH: usize = 1;

/// A batch handed to the producer, not yet acknowledged.
struct Sent {
    batch: Batch,
    sent: InFlight,
}

/// At-least-once: waits for each batch's acknowledgements in order (re-sending what failed),
/// then stores its offsets; returns when the router's loop has ended and everything it
/// handed over is stored.
async fn committer(router: &Router, shared: &Shared, mut handed: mpsc::Receiver<Sent>) {
    let m = &shared.metrics;
    while let Some(Sent { batch, sent }) = handed.recv().await {
        // Output slow or unavailable: the loop's next hand-over pauses the input.
        sent.complete(&router.producer, &batch.outgoing, KEEP_ALL, m)
            .await;
        if let Err(e) = router.consumer.store_offsets(&batch.offsets) {
            // A partition revoked meanwhile: its new owner re-reads from the last commit.
            warn!(error = %e, "router: storing offsets failed");
        }
    }
}

/// Exactly-once: a batch's records and its offsets in one transaction.
async fn commit_transaction(router: &Router, shared: &Shared, batch: Batch) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(30);
    router
        .producer
        .begin_transaction()
        .context("the router beginning a transaction")?;
    let done: anyhow::Result<()> = async {
        kafka::produce_once(&router.producer, &batch.outgoing, &shared.metrics)
            .await
            .map_err(|f| f.error)
            .context("the router producing in its transaction")?;
        let group = router
            .consumer
            .group_metadata()
            .context("no consumer group metadata")?;
        router
            .producer
            .send_offsets_to_transaction(&batch.offsets, &group, timeout)
            .context("the router adding offsets to its transaction")?;
        router.producer.commit_transaction(timeout)?;
        Ok(())
    }
    .await;
    if let Err(e) = done {
        let _ = router.producer.abort_transaction(timeout);
        return Err(e.context("the router's transaction was aborted: stopping"));
    }
    Ok(())
}

/// Whether a commit failed only because no offset was stored since the last commit.
pub(super) fn nothing_to_commit(e: &rdkafka::error::KafkaError) -> bool {
    e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
}
