//! One batch: read up to `batch_size` messages, apply each to the engine (a rejected one
//! becomes a dead letter), and collect everything the batch caused: transitions, dead
//! letters, one changelog record per customer it changed, and a position marker per
//! partition number it read. When the input is idle the batch ends early and time moves
//! on without events.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_core::changelog::Position;
use segstream_core::engine::{Applied, IdentityChange, Link, StateChange};
use segstream_core::event::{check_not_future, Event, EventError, InputFormat, RejectReason};
use segstream_core::transition::Transition;
use tracing::warn;

use crate::kafka::records::{Original, Rejection};
use crate::kafka::Outgoing;
use crate::metrics::{series, ChangelogKind, EventOutcome, Label, RefusalLabel};
use crate::shared::Shared;

use super::assignment::on_assignment;
use super::progress::Progress;
use super::Clients;

/// What one batch produced and which offsets it covers.
#[derive(Default)]
pub struct Batch {
    pub outgoing: Vec<Outgoing>,
    /// Position markers, produced after everything else (see [`Position`]).
    pub markers: Vec<Outgoing>,
    /// Next offset to commit per (topic, partition).
    pub offsets: HashMap<(String, i32), i64>,
    pub messages: usize,
    pub started: Option<Instant>,
}

impl Batch {
    /// The offsets to commit, for the partitions still owned (a revoked one is read again
    /// by its new owner from its last commit), never beyond a held event (a restart reads
    /// it again).
    pub fn owned_offsets(&self, progress: &Progress) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.offsets.len());
        for ((topic, partition), offset) in &self.offsets {
            if progress.owned.contains(partition) {
                let offset = progress
                    .first_held(*partition)
                    .map_or(*offset, |h| h.min(*offset));
                tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))?;
            }
        }
        Ok(tpl)
    }
}

/// How long a batch reader waits for its next message, `None` when the batch ends (its
/// `batch_timeout` is over). The first message is waited for (up to `idle_after`); after
/// it, the batch takes what the consumer already holds and ends when nothing more is
/// waiting (or at `batch_size` / `batch_timeout`): under load the batches grow by
/// themselves, and a lone event is not held back for the timeout. The segment stage and
/// the router read their batches so.
pub(super) fn next_wait(
    k: &crate::config::KafkaConfig,
    started: Option<Instant>,
) -> Option<Duration> {
    match started {
        None => Some(Duration::from_millis(k.idle_after as u64)),
        Some(s) if s.elapsed() >= Duration::from_millis(k.batch_timeout as u64) => None,
        Some(_) => Some(Duration::ZERO),
    }
}

/// Reads and applies up to `batch_size` messages; returns early when the input is idle
/// (then the watermark follows the clock).
pub async fn read_batch(
    clients: &Clients,
    shared: &Shared,
    progress: &mut Progress,
) -> anyhow::Result<Batch> {
    let k = &shared.config.kafka;
    let mut batch = Batch::default();
    let mut transitions: Vec<Transition> = Vec::new();
    if shared
        .kafka
        .assignment_changed
        .swap(false, Ordering::SeqCst)
    {
        on_assignment(clients, shared, progress, &mut transitions).await?;
    }
    while let Some(wait) = next_wait(k, batch.started) {
        let msg = match tokio::time::timeout(wait, clients.consumer.recv()).await {
            Err(_) => {
                if batch.started.is_none() {
                    on_idle(shared, progress, &mut transitions);
                }
                break;
            }
            Ok(Err(e)) => {
                // Broker or transport trouble: librdkafka reconnects by itself.
                warn!(error = %e, "consumer error");
                shared.set_ready(false);
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
            Ok(Ok(m)) => m,
        };
        // A rebalance runs inside `recv`: before this message is applied, drop what was
        // revoked and restore what was assigned (this message's partition among them).
        if shared
            .kafka
            .assignment_changed
            .swap(false, Ordering::SeqCst)
            || !progress.clocks.contains(msg.topic(), msg.partition())
        {
            on_assignment(clients, shared, progress, &mut transitions).await?;
        }
        if !progress.owned.contains(&msg.partition()) {
            // Revoked between its fetch and now: the new owner reads it again.
            continue;
        }
        batch.started.get_or_insert_with(Instant::now);
        batch.messages += 1;
        batch
            .offsets
            .insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
        if !progress.first_application(msg.topic(), msg.partition(), msg.offset()) {
            continue;
        }
        apply_message(shared, progress, &msg, &mut batch, &mut transitions);
        if batch.messages >= k.batch_size {
            shared.ready.store(false, Ordering::SeqCst);
            break;
        }
    }
    if k.router {
        // Timers (a profile expired) can end waits too.
        super::persons::run_released(shared, progress, &mut batch, &mut transitions);
    }
    collect_outputs(shared, progress, &mut batch, transitions);
    if progress
        .last_gauges
        .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
    {
        super::gauges::refresh(shared);
        progress.last_gauges = Some(Instant::now());
    }
    Ok(batch)
}

/// Idle and caught up: readiness is re-evaluated, quiet partitions stop holding the
/// watermark back, and timers follow the wall clock.
fn on_idle(shared: &Shared, progress: &Progress, out: &mut Vec<Transition>) {
    let config = &shared.config;
    // A worker without partitions is ready too (more workers than partitions): the
    // instance is ready when all are and it holds at least one partition.
    shared.set_ready(shared.kafka.healthy());
    let lateness = config.engine.allowed_lateness;
    let partition_idle = Duration::from_millis(config.kafka.partition_idle_after as u64);
    let now = Instant::now();
    let wall = crate::clock::now_millis();
    let mut engine = shared.engine();
    for &p in &progress.owned {
        if let Some(wm) = progress
            .clocks
            .idle_watermark(p, lateness, partition_idle, now)
        {
            engine.advance_shard_watermark(p as u16, capped(progress, p, wm), out);
        }
        // Timers follow the shard's own time as real time passes (see `idle_event_time`).
        if let Some(t) = progress.clocks.idle_event_time(p, now, wall) {
            engine.on_idle(p as u16, capped(progress, p, t), out);
        }
    }
}

/// `t`, but not beyond the earliest event held in shard `p` ([`Progress::hold_limit`]).
fn capped(progress: &Progress, p: i32, t: i64) -> i64 {
    progress.hold_limit(p).map_or(t, |limit| t.min(limit))
}

/// Applies one message, parsed in its topic's format (`kafka.input_formats`), to the engine
/// (or makes it a dead letter) and moves its shard's watermark. With the router, the
/// message is a persons-topic record ([`super::persons`]).
fn apply_message(
    shared: &Shared,
    progress: &mut Progress,
    msg: &BorrowedMessage<'_>,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) {
    let config = &shared.config;
    if config.kafka.router {
        super::persons::apply_record(shared, progress, msg, batch, out);
        return;
    }
    let format = config.kafka.input_format(msg.topic());
    let result = parse_checked(shared, format, msg.payload()).and_then(|event| {
        let p = msg.partition();
        let mut engine = shared.engine();
        let r = engine.apply(p as u16, &event, out);
        let now = Instant::now();
        progress
            .clocks
            .delivered(msg.topic(), p, event.timestamp, now);
        advance(shared, progress, &mut engine, p, now, out);
        r
    });
    report(shared, &Original::of(msg), result, batch);
}

/// Moves shard `p`'s watermark to where its input partitions stand.
pub(super) fn advance(
    shared: &Shared,
    progress: &Progress,
    engine: &mut segstream_core::engine::Engine,
    p: i32,
    now: Instant,
    out: &mut Vec<Transition>,
) {
    let config = &shared.config;
    let idle = Duration::from_millis(config.kafka.partition_idle_after as u64);
    let lateness = config.engine.allowed_lateness;
    if let Some(wm) = progress.clocks.watermark(p, lateness, idle, now) {
        engine.advance_shard_watermark(p as u16, capped(progress, p, wm), out);
    }
}

/// A message's payload as an event of `format`, if it passes the guards: present, not
/// larger than `max_message_bytes`, valid, not stamped too far in the future.
pub(super) fn parse_checked<'a>(
    shared: &Shared,
    format: InputFormat,
    payload: Option<&'a [u8]>,
) -> Result<Event<'a>, EventError> {
    let config = &shared.config;
    let Some(payload) = payload else {
        return Err(EventError::new(
            RejectReason::InvalidJson,
            "message has no payload",
        ));
    };
    if payload.len() > config.kafka.max_message_bytes {
        return Err(EventError::new(
            RejectReason::TooLarge,
            format!(
                "{} bytes exceed max_message_bytes {}",
                payload.len(),
                config.kafka.max_message_bytes
            ),
        ));
    }
    let event = format.parse(payload)?;
    check_not_future(
        event.timestamp,
        crate::clock::now_millis(),
        config.engine.max_future_skew,
    )?;
    Ok(event)
}

/// Counts what became of an input message (by its original topic) and writes the dead
/// letter of a rejected one, or of an applied one whose link was refused.
pub(super) fn report(
    shared: &Shared,
    original: &Original<'_>,
    result: Result<Applied, EventError>,
    batch: &mut Batch,
) {
    let outcome = match &result {
        Ok(_) => EventOutcome::Accepted,
        Err(e) if e.reason == RejectReason::Late => EventOutcome::Late,
        Err(_) => EventOutcome::Rejected,
    };
    let m = &shared.metrics;
    m.events_consumed
        .with_label_values(&[original.topic, outcome.as_str()])
        .inc();
    match result {
        Err(e) => {
            if e.reason == RejectReason::Late {
                m.late_events.inc();
            }
            series(&m.dead_letters, e.reason).inc();
            batch.outgoing.push(dead_letter(shared, original, &e));
        }
        Ok(Applied {
            link: Link::Refused(refusal),
        }) => {
            // The event was applied; the link it asked for was not: reported as a dead
            // letter saying so, the original message whole.
            series(&m.links_refused, RefusalLabel::of(&refusal)).inc();
            series(&m.dead_letters, RejectReason::LinkRefused).inc();
            let e = EventError::new(RejectReason::LinkRefused, refusal.to_string());
            let mut dl = dead_letter(shared, original, &e);
            dl.headers
                .push(("segstream_applied".into(), Some(b"true".to_vec())));
            batch.outgoing.push(dl);
        }
        Ok(_) => {}
    }
}

/// The dead letter of `original`, rejected for `err`.
pub(super) fn dead_letter(shared: &Shared, original: &Original<'_>, err: &EventError) -> Outgoing {
    let k = &shared.config.kafka;
    let why = Rejection {
        reason: err.reason.as_str(),
        detail: &err.detail,
    };
    Outgoing::dead_letter(&k.dead_letter_topic, original, why, k.dead_letter_max_bytes)
}

/// After the messages: the batch's transitions, then one changelog entry per customer it
/// changed (coalesced, only for partitions still owned), then per partition number it
/// read, a position marker saying where its input stands.
fn collect_outputs(
    shared: &Shared,
    progress: &Progress,
    batch: &mut Batch,
    transitions: Vec<Transition>,
) {
    let k = &shared.config.kafka;
    for t in &transitions {
        batch.outgoing.push(Outgoing::transition(
            t,
            &k.output_topic,
            &k.cloudevents_source,
        ));
        batch
            .outgoing
            .push(Outgoing::membership(t, &k.membership_topic));
    }
    shared
        .activity()
        .record(transitions, crate::clock::now_millis());
    let mut changes: Vec<StateChange> = Vec::new();
    let mut identities: Vec<IdentityChange> = Vec::new();
    {
        let mut engine = shared.engine();
        engine.drain_changes(&mut changes);
        engine.drain_identity_changes(&mut identities);
    }
    if k.router {
        let mut handoffs = Vec::new();
        shared.engine().drain_handoffs(&mut handoffs);
        for h in &handoffs {
            series(&shared.metrics.persons_records, super::handoffs::kind_of(h)).inc();
            batch.outgoing.push(Outgoing::handoff(&k.persons_topic, h));
        }
    }
    // Every shard the batch wrote state to gets a marker, not only those it read input
    // for: a merge writes to the absorbed person's shard too, and a restore ignores what
    // follows a partition's last marker.
    let mut written: BTreeSet<i32> = BTreeSet::new();
    for c in identities {
        if progress.owned.contains(&i32::from(c.shard)) {
            written.insert(i32::from(c.shard));
            series(&shared.metrics.changelog_records, ChangelogKind::Identity).inc();
            batch
                .outgoing
                .push(Outgoing::identity(&k.changelog_topic, &c));
        }
    }
    for c in changes {
        if progress.owned.contains(&i32::from(c.shard)) {
            written.insert(i32::from(c.shard));
            let kind = if c.record.is_some() {
                ChangelogKind::Record
            } else {
                ChangelogKind::Tombstone
            };
            series(&shared.metrics.changelog_records, kind).inc();
            batch
                .outgoing
                .push(Outgoing::changelog(&k.changelog_topic, &c));
        }
    }
    let shards: BTreeSet<i32> = batch
        .offsets
        .keys()
        .map(|(_, p)| *p)
        .filter(|p| progress.owned.contains(p))
        .chain(written)
        .collect();
    if !shards.is_empty() {
        let engine = shared.engine();
        for p in shards {
            let (watermark, max_event_time) = engine.shard_time(p as u16);
            let pos = Position::new(watermark, max_event_time, progress.inputs_of(p));
            batch
                .markers
                .push(Outgoing::position(&k.changelog_topic, p, &pos));
        }
    }
}
