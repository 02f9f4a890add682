//! The segment stage's side of the persons topic (`kafka.router`): every record of a
//! partition of it is an event (routed by the router, or forwarded by another shard) or a
//! handoff between shards (see `segstream_core::engine::handoff`).
//!
//! An event is applied where its person lives, forwarded to that person's shard if it
//! lives elsewhere, or held while its person is being merged with a person of another
//! instance (the linking event first among them). When the engine releases the person
//! (the transfer arrived, or the request ended without one), its held events are routed
//! again, in the order they came.
//!
//! Upstream crashes can put an event on the topic twice (the router, or a forwarding
//! shard, re-reads what it had not committed yet); the copies come in order within their
//! *sequence*, so the segment stage keeps per shard and sequence the highest source offset
//! it has taken and skips what is not above it. A sequence is `src:{topic}:{partition}`
//! for the events the router read from one input partition, and `fwd:{shard}|{sequence}`
//! for those a shard forwarded from one of its own sequences. The highest offsets go into
//! the position markers with the shard's state, and so do the held events: the shard's
//! offset is not committed beyond its first held event, and a restored shard re-reads from
//! there, taking the held events again and skipping what it applied. Handoffs are
//! idempotent: a copy changes nothing.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use segstream_core::engine::{Handed, Handoff, Route};
use segstream_core::event::{EventError, InputFormat, RejectReason};
use segstream_core::transition::Transition;
use tracing::warn;

use crate::kafka::records::{number_in, routing_headers as rh, text_in, HeaderRef, Original};
use crate::kafka::Outgoing;
use crate::metrics::{series, Label, PersonsKind, RefusalLabel};
use crate::shared::Shared;

use super::batch::{advance, dead_letter, parse_checked, report, Batch};
use super::handoffs::{decode, Kind};
use super::progress::{source_sequence, Held, Progress, FORWARD_PREFIX};

/// Applies one persons-topic record (see the module documentation), then routes again the
/// held events of every person whose merge ended.
pub fn apply_record(
    shared: &Shared,
    progress: &mut Progress,
    msg: &BorrowedMessage<'_>,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) {
    // The headers are read once, here (see `records::read_headers`).
    let original = Original::of(msg);
    match Kind::in_headers(&original.headers) {
        Some(kind @ (Kind::Event | Kind::Forward)) => {
            let sequence = sequence_of(&original.headers, kind);
            if let Some((seq, offset)) = &sequence {
                if !progress.first_routed(seq, msg.partition(), *offset) {
                    shared.metrics.duplicates_skipped.inc();
                    return;
                }
            }
            apply_event(
                shared,
                progress,
                Taken::Borrowed(msg),
                Some(original),
                kind,
                sequence,
                batch,
                out,
            );
        }
        Some(Kind::SourceQuiet) => {
            let h = &original.headers;
            let source = text_in(h, rh::SOURCE_TOPIC).zip(number_in(h, rh::SOURCE_PARTITION));
            if let Some((topic, partition)) = source {
                let shard = msg.partition();
                progress.clocks.quiet(
                    &source_sequence(topic, partition as i32),
                    shard,
                    number_in(h, rh::SOURCE_TIME),
                    Instant::now(),
                );
                advance(
                    shared,
                    progress,
                    &mut shared.engine(),
                    shard,
                    Instant::now(),
                    out,
                );
            }
        }
        Some(kind) => accept_handoff(shared, msg, kind, batch, out),
        None => {
            let e = EventError::new(
                RejectReason::InvalidValue,
                "persons-topic record of an unknown kind (segstream_kind header)",
            );
            series(&shared.metrics.dead_letters, e.reason).inc();
            batch.outgoing.push(dead_letter(shared, &original, &e));
        }
    }
    run_released(shared, progress, batch, out);
}

/// Routes again the held events of the persons the engine released, until none is left
/// (a released event can start another merge, or end one).
pub fn run_released(
    shared: &Shared,
    progress: &mut Progress,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) {
    let mut released: Vec<Arc<str>> = Vec::new();
    loop {
        shared.engine().drain_released(&mut released);
        if released.is_empty() {
            break;
        }
        for person in released.drain(..) {
            // The events still to apply keep holding their shard's time back.
            progress.release(&person);
            while let Some(held) = progress.next_released() {
                let kind = Kind::of(&held.record).unwrap_or(Kind::Event);
                apply_event(
                    shared,
                    progress,
                    Taken::Owned(held.record),
                    None,
                    kind,
                    held.sequence,
                    batch,
                    out,
                );
            }
        }
    }
    shared.metrics.held_events.set(progress.held_count() as i64);
}

/// A record being applied: as read, or taken back from the held events.
enum Taken<'a, 'm> {
    Borrowed(&'a BorrowedMessage<'m>),
    Owned(OwnedMessage),
}

impl Taken<'_, '_> {
    fn hold(self) -> OwnedMessage {
        match self {
            Taken::Borrowed(m) => m.detach(),
            Taken::Owned(m) => m,
        }
    }
}

/// The sequence an event was read in and its offset there (`None` for a record without
/// the router's headers, e.g. one a user produced to the persons topic by hand).
fn sequence_of(headers: &[HeaderRef<'_>], kind: Kind) -> Option<(String, i64)> {
    let offset = number_in(headers, rh::SOURCE_OFFSET)?;
    let sequence = match kind {
        Kind::Forward => format!(
            "{FORWARD_PREFIX}{}|{}",
            number_in(headers, rh::FROM_SHARD)?,
            text_in(headers, rh::VIA)?
        ),
        _ => source_sequence(
            text_in(headers, rh::SOURCE_TOPIC)?,
            number_in(headers, rh::SOURCE_PARTITION)? as i32,
        ),
    };
    Some((sequence, offset))
}

/// What routing an event decided.
enum Outcome {
    Applied(segstream_core::engine::Applied),
    Forwarded,
    /// Held for its person, with its event time.
    Held(Arc<str>, i64),
}

/// Routes an event record (see [`route_event`]) and counts or holds it. `original`: the
/// record as read, if the caller has read its headers already.
#[allow(clippy::too_many_arguments)]
fn apply_event(
    shared: &Shared,
    progress: &mut Progress,
    taken: Taken<'_, '_>,
    original: Option<Original<'_>>,
    kind: Kind,
    sequence: Option<(String, i64)>,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) {
    let held = {
        let original = match (original, &taken) {
            (Some(o), _) => o,
            (None, Taken::Borrowed(m)) => Original::of(*m),
            (None, Taken::Owned(m)) => Original::of(m),
        };
        let format = text_in(&original.headers, rh::FORMAT)
            .and_then(InputFormat::from_name)
            .unwrap_or_default();
        let msg: &dyn MessageView = match &taken {
            Taken::Borrowed(m) => *m,
            Taken::Owned(m) => m,
        };
        match route_event(shared, progress, msg, format, kind, &sequence, batch, out) {
            Ok(Outcome::Forwarded) => None,
            Ok(Outcome::Held(person, event_time)) => Some((person, event_time)),
            Ok(Outcome::Applied(applied)) => {
                report(shared, &original.into_routed(), Ok(applied), batch);
                None
            }
            Err(e) => {
                report(shared, &original.into_routed(), Err(e), batch);
                None
            }
        }
    };
    if let Some((person, event_time)) = held {
        progress.hold(
            person,
            Held {
                record: taken.hold(),
                event_time,
                sequence,
            },
        );
    }
}

/// A message seen through the parts routing needs (borrowed or owned alike).
trait MessageView {
    fn view_payload(&self) -> Option<&[u8]>;
    fn view_topic(&self) -> &str;
    fn view_partition(&self) -> i32;
    fn forwarded(&self, topic: &str, to: i32, canonical: &str, from: i32, via: &str) -> Outgoing;
}

impl<M: Message> MessageView for M {
    fn view_payload(&self) -> Option<&[u8]> {
        self.payload()
    }
    fn view_topic(&self) -> &str {
        self.topic()
    }
    fn view_partition(&self) -> i32 {
        self.partition()
    }
    fn forwarded(&self, topic: &str, to: i32, canonical: &str, from: i32, via: &str) -> Outgoing {
        Outgoing::forwarded(topic, to, canonical, self, from, via)
    }
}

/// Parses an event record and applies, forwards or holds it.
fn route_event(
    shared: &Shared,
    progress: &mut Progress,
    msg: &dyn MessageView,
    format: InputFormat,
    kind: Kind,
    sequence: &Option<(String, i64)>,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) -> Result<Outcome, EventError> {
    let shard = msg.view_partition();
    let k = &shared.config.kafka;
    let event = parse_checked(shared, format, msg.view_payload())?;
    let mut engine = shared.engine();
    let now = Instant::now();
    if kind == Kind::Event {
        // The source partition's time in this shard (a forwarded event's source is
        // counted where the router put it).
        if let Some((seq, _)) = sequence {
            progress.clocks.delivered(seq, shard, event.timestamp, now);
        }
        progress
            .clocks
            .delivered(msg.view_topic(), shard, event.timestamp, now);
    }
    let outcome = match engine.route(&event)? {
        Route::Apply => engine
            .apply(shard as u16, &event, out)
            .map(Outcome::Applied),
        Route::Forward {
            canonical,
            shard: to,
        } => {
            let via = sequence.as_ref().map_or("", |(s, _)| s.as_str());
            batch.outgoing.push(msg.forwarded(
                &k.persons_topic,
                i32::from(to),
                &canonical,
                shard,
                via,
            ));
            series(&shared.metrics.persons_records, PersonsKind::Forward).inc();
            Ok(Outcome::Forwarded)
        }
        Route::Hold { person } => Ok(Outcome::Held(person, event.timestamp)),
    };
    advance(shared, progress, &mut engine, shard, now, out);
    outcome
}

fn accept_handoff(
    shared: &Shared,
    msg: &BorrowedMessage<'_>,
    kind: Kind,
    batch: &mut Batch,
    out: &mut Vec<Transition>,
) {
    let m = &shared.metrics;
    let reject = |batch: &mut Batch, e: EventError| {
        series(&m.dead_letters, e.reason).inc();
        batch
            .outgoing
            .push(dead_letter(shared, &Original::of(msg), &e));
    };
    let Some(handoff) = decode(kind, msg) else {
        reject(
            batch,
            EventError::new(
                RejectReason::InvalidValue,
                format!("unreadable {} handoff", kind.as_str()),
            ),
        );
        return;
    };
    if i32::from(handoff.shard()) != msg.partition() {
        warn!(
            partition = msg.partition(),
            shard = handoff.shard(),
            "a handoff in another partition than its shard's (persons topic repartitioned?)"
        );
    }
    let mut engine = shared.engine();
    match handoff {
        Handoff::MergeRequest(request) => {
            if let Handed::Refused(refusal) = engine.accept_merge_request(request, out) {
                series(&m.links_refused, RefusalLabel::of(&refusal)).inc();
                reject(
                    batch,
                    EventError::new(RejectReason::LinkRefused, refusal.to_string()),
                );
            }
        }
        Handoff::Transfer(transfer) => {
            if let Err(e) = engine.accept_transfer(transfer, out) {
                // The profile stays readable in the dead letter's value.
                warn!(error = %e, "a transferred profile could not be read");
                reject(
                    batch,
                    EventError::new(
                        RejectReason::InvalidValue,
                        format!("transferred profile unreadable: {e}"),
                    ),
                );
            }
        }
        Handoff::ForgetId { id, .. } => engine.accept_forget_id(&id),
        Handoff::Release { survivor, .. } => engine.accept_release(&survivor),
    }
}
