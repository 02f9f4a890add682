//! Outgoing records: transitions (with CloudEvents headers), dead letters (the original
//! message with the reason in headers), changelog records and position markers, owned so
//! that they can be sent again after a failure.

use std::borrow::Cow;
use std::sync::Arc;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use segstream_core::changelog::{identity_key, Position, POSITION_KEY};
use segstream_core::time::format_rfc3339;
use segstream_core::transition::{Direction, Transition};

/// A header: its name and value (`None`: a header without a value).
pub type OutgoingHeader = (Cow<'static, str>, Option<Vec<u8>>);

/// A record to produce, owned so that it can be sent again after a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    /// An explicit partition (changelog records go to their input partition's number).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<OutgoingHeader>,
    /// The record's timestamp (a dead letter keeps its original's); `None`: the producer's
    /// clock.
    pub timestamp: Option<i64>,
    /// For the latency histogram: the event time (or deadline) the record reports on.
    pub event_time: Option<i64>,
    /// For the transition counters.
    pub transition: Option<(Arc<str>, Direction)>,
    /// What to send instead when the producer or the broker refuses this record for what
    /// it is (its size): a dead letter's smaller forms.
    pub fallback: Option<Box<Outgoing>>,
}

/// Headers a dead letter adds to the original message's own.
pub mod dead_letter_headers {
    /// The reject reason (`invalid_json`, `too_large`, ...; a metric label).
    pub const REASON: &str = "segstream_reason";
    /// What exactly was wrong.
    pub const DETAIL: &str = "segstream_detail";
    pub const SOURCE_TOPIC: &str = "segstream_source_topic";
    pub const SOURCE_PARTITION: &str = "segstream_source_partition";
    pub const SOURCE_OFFSET: &str = "segstream_source_offset";
    /// `true` when the value was cut to fit the dead-letter size limit.
    pub const TRUNCATED: &str = "segstream_truncated";
    /// `true` when the value (and the original headers) had to be left out altogether.
    pub const VALUE_DROPPED: &str = "segstream_value_dropped";
    /// The original value's size in bytes, when truncated or dropped.
    pub const ORIGINAL_SIZE: &str = "segstream_original_size";
}

/// Bytes a record costs beyond key, value and headers (record and batch framing); a safety
/// margin when a dead letter is cut to its limit.
const RECORD_OVERHEAD: usize = 512;

/// Longest `segstream_detail` kept (a detail quotes part of the input).
const MAX_DETAIL: usize = 1024;

/// Longest key a dead letter's last-resort form keeps.
const MAX_MINIMAL_KEY: usize = 1024;

/// Headers the router adds to an event on the persons topic (and removes again from a
/// dead letter): where the event came from, and what kind of record it is.
pub mod routing_headers {
    /// `event` (from the router), `forward`, `merge_request`, `transfer`, `forget_id`.
    pub const KIND: &str = "segstream_kind";
    pub const SOURCE_TOPIC: &str = "segstream_src_topic";
    pub const SOURCE_PARTITION: &str = "segstream_src_partition";
    pub const SOURCE_OFFSET: &str = "segstream_src_offset";
    /// The original message's key (the persons record is keyed by the person's id).
    pub const SOURCE_KEY: &str = "segstream_src_key";
    /// A `source_quiet` record: the largest event time routed from the source.
    pub const SOURCE_TIME: &str = "segstream_src_time";
    /// The input format, when it is not segstream's own (`segment`).
    pub const FORMAT: &str = "segstream_format";
    /// A forwarded event: the shard that forwarded it.
    pub const FROM_SHARD: &str = "segstream_from_shard";
    /// A forwarded event: the sequence it was read in at the forwarding shard (how the
    /// receiver recognises a forward it has applied; see `service::persons`).
    pub const VIA: &str = "segstream_via";
    /// A handoff's meta data (JSON).
    pub const HANDOFF: &str = "segstream_handoff";

    /// Whether a header is one of these.
    pub fn is_routing(name: &str) -> bool {
        matches!(
            name,
            KIND | SOURCE_TOPIC
                | SOURCE_PARTITION
                | SOURCE_OFFSET
                | SOURCE_KEY
                | FORMAT
                | FROM_SHARD
                | VIA
                | HANDOFF
        )
    }
}

/// An input message as it came: what a dead letter keeps. For an event that went through
/// the persons topic, the router's headers give its origin back.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<HeaderRef<'a>>,
    pub timestamp: Option<i64>,
}

/// A header as read from a message: its name and value.
pub type HeaderRef<'m> = (&'m str, Option<&'m [u8]>);

/// A message's headers, read once. Each lookup in librdkafka's list crosses into C and
/// converts every name before the one sought: a record whose headers are looked up
/// several times reads them once and looks them up here.
pub fn read_headers<M: Message>(m: &M) -> Vec<HeaderRef<'_>> {
    m.headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default()
}

/// A header's value (the first of that name) in headers read once.
pub fn header_in<'m>(headers: &[HeaderRef<'m>], name: &str) -> Option<&'m [u8]> {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| *v)
}

/// A header's value as text.
pub fn text_in<'m>(headers: &[HeaderRef<'m>], name: &str) -> Option<&'m str> {
    std::str::from_utf8(header_in(headers, name)?).ok()
}

/// A header's value as a number.
pub fn number_in(headers: &[HeaderRef<'_>], name: &str) -> Option<i64> {
    text_in(headers, name)?.parse().ok()
}

impl<'a> Original<'a> {
    /// A message read from an input topic.
    pub fn of<M: Message>(m: &'a M) -> Self {
        Original {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            headers: read_headers(m),
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// An event read from the persons topic ([`Original::of`] it): the input message the
    /// router copied.
    pub fn into_routed(self) -> Self {
        let mut o = self;
        use routing_headers as rh;
        let h = &o.headers;
        let topic = text_in(h, rh::SOURCE_TOPIC);
        let partition = number_in(h, rh::SOURCE_PARTITION).and_then(|p| i32::try_from(p).ok());
        let offset = number_in(h, rh::SOURCE_OFFSET);
        let key = header_in(h, rh::SOURCE_KEY);
        if let (Some(t), Some(p), Some(off)) = (topic, partition, offset) {
            o.topic = t;
            o.partition = p;
            o.offset = off;
            o.key = key;
        }
        o.headers.retain(|(k, _)| !rh::is_routing(k));
        o
    }
}

/// Why a message became a dead letter.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    pub reason: &'a str,
    pub detail: &'a str,
}

impl Outgoing {
    fn new(topic: &str) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: None,
            payload: None,
            headers: Vec::new(),
            timestamp: None,
            event_time: None,
            transition: None,
            fallback: None,
        }
    }

    /// A transition, keyed by customer id, with CloudEvents 1.0 binary-mode headers.
    pub fn transition(t: &Transition, topic: &str, source: &str) -> Self {
        let mut payload = Vec::with_capacity(320);
        t.write_json(&mut payload);
        let ce_type = match t.direction {
            Direction::Entered => "segstream.segment.entered",
            Direction::Exited => "segstream.segment.exited",
        };
        let h = |k: &'static str, v: Vec<u8>| (Cow::Borrowed(k), Some(v));
        Outgoing {
            key: Some(t.customer_id.as_bytes().to_vec()),
            payload: Some(payload),
            headers: vec![
                h("ce_specversion", b"1.0".to_vec()),
                h("ce_id", t.transition_id.as_bytes().to_vec()),
                h("ce_source", source.as_bytes().to_vec()),
                h("ce_type", ce_type.as_bytes().to_vec()),
                h("ce_time", format_rfc3339(t.timestamp).into_bytes()),
                h(
                    "ce_subject",
                    format!("{}/{}", t.customer_id, t.segment).into_bytes(),
                ),
                h("content-type", b"application/json".to_vec()),
                h("segstream_segment", t.segment.as_bytes().to_vec()),
                h("segstream_rule_version", t.rule_version.as_bytes().to_vec()),
            ],
            event_time: Some(t.timestamp),
            transition: Some((t.segment.clone(), t.direction)),
            ..Outgoing::new(topic)
        }
    }

    /// The current-membership record a transition leaves behind on the compacted
    /// membership topic: keyed `{segment}/{customer_id}` (segment names have no `/`), the
    /// membership (since when, rule version, the person's ids, the entering cause) on
    /// entry, a tombstone on exit. Read from the start, the topic is the current audience.
    pub fn membership(t: &Transition, topic: &str) -> Self {
        let payload = match t.direction {
            Direction::Entered => Some(
                serde_json::to_vec(&Membership {
                    segment: &t.segment,
                    customer_id: &t.customer_id,
                    anonymous_ids: t.anonymous_ids.iter().map(|i| &**i).collect(),
                    known: t.known,
                    since: format_rfc3339(t.timestamp),
                    rule_version: &t.rule_version,
                    cause: t.cause.to_string(),
                    transition_id: &t.transition_id,
                })
                .unwrap_or_default(),
            ),
            Direction::Exited => None,
        };
        Outgoing {
            key: Some(membership_key(&t.segment, &t.customer_id).into_bytes()),
            payload,
            headers: vec![(
                Cow::Borrowed("segstream_rule_version"),
                Some(t.rule_version.as_bytes().to_vec()),
            )],
            ..Outgoing::new(topic)
        }
    }

    /// A dead letter: the original message (key, value, headers, timestamp) unchanged, with
    /// the reason and the origin added in `segstream_*` headers (Kafka Connect's dead-letter
    /// queue does the same with its own headers).
    ///
    /// A dead letter never exceeds `max_bytes`: a larger original is sent with its value
    /// cut to fit, `segstream_truncated: true` and `segstream_original_size`. Should the
    /// producer or the broker still refuse it (a topic with a lower limit), its fallback is
    /// sent instead: no value and none of the original headers, only the origin, the reason
    /// and the original size. Bad input can therefore never stop the service.
    pub fn dead_letter(
        topic: &str,
        original: &Original<'_>,
        why: Rejection<'_>,
        max_bytes: usize,
    ) -> Self {
        use dead_letter_headers as dl;
        let payload = original.payload;
        let size = payload.map_or(0, <[u8]>::len);
        let origin: Vec<OutgoingHeader> = vec![
            (dl::REASON.into(), Some(why.reason.as_bytes().to_vec())),
            (
                dl::DETAIL.into(),
                Some(cut(why.detail, MAX_DETAIL).into_bytes()),
            ),
            (
                dl::SOURCE_TOPIC.into(),
                Some(original.topic.as_bytes().to_vec()),
            ),
            (
                dl::SOURCE_PARTITION.into(),
                Some(original.partition.to_string().into_bytes()),
            ),
            (
                dl::SOURCE_OFFSET.into(),
                Some(original.offset.to_string().into_bytes()),
            ),
        ];
        let timestamp = original.timestamp;
        let key = original.key.map(<[u8]>::to_vec);
        let minimal_key = key.clone().filter(|k| k.len() <= MAX_MINIMAL_KEY);
        let mut minimal_headers = origin.clone();
        minimal_headers.push((dl::VALUE_DROPPED.into(), Some(b"true".to_vec())));
        minimal_headers.push((
            dl::ORIGINAL_SIZE.into(),
            Some(size.to_string().into_bytes()),
        ));
        let minimal = Outgoing {
            key: minimal_key,
            payload: Some(Vec::new()),
            headers: minimal_headers,
            timestamp,
            ..Outgoing::new(topic)
        };

        let mut headers: Vec<OutgoingHeader> = original
            .headers
            .iter()
            .map(|(k, v)| (Cow::Owned(k.to_string()), v.map(<[u8]>::to_vec)))
            .collect();
        headers.extend(origin);
        let mut full = Outgoing {
            key,
            payload: Some(payload.unwrap_or_default().to_vec()),
            headers,
            timestamp,
            fallback: Some(Box::new(minimal)),
            ..Outgoing::new(topic)
        };
        if full.size() > max_bytes {
            let room = max_bytes.saturating_sub(full.size() - size + RECORD_OVERHEAD + 64);
            if room == 0 {
                // Key and headers alone are over the limit: only the last resort fits.
                return *full.fallback.take().expect("set above");
            }
            if let Some(p) = full.payload.as_mut() {
                p.truncate(room);
            }
            full.headers
                .push((dl::TRUNCATED.into(), Some(b"true".to_vec())));
            full.headers.push((
                dl::ORIGINAL_SIZE.into(),
                Some(size.to_string().into_bytes()),
            ));
        }
        full
    }

    /// An input message on its way to the persons topic: keyed by the id it is recorded
    /// under, in that id's home partition, the original value, headers and timestamp kept,
    /// its origin (and format, unless segstream's own) in routing headers.
    pub fn routed<M: Message>(
        topic: &str,
        partition: i32,
        key: &str,
        original: &M,
        format: Option<&str>,
    ) -> Self {
        use routing_headers as rh;
        let mut headers: Vec<OutgoingHeader> = original
            .headers()
            .map(|hs| {
                hs.iter()
                    .filter(|h| !rh::is_routing(h.key))
                    .map(|h| (Cow::Owned(h.key.to_string()), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        headers.push((rh::KIND.into(), Some(b"event".to_vec())));
        headers.push((
            rh::SOURCE_TOPIC.into(),
            Some(original.topic().as_bytes().to_vec()),
        ));
        headers.push((
            rh::SOURCE_PARTITION.into(),
            Some(original.partition().to_string().into_bytes()),
        ));
        headers.push((
            rh::SOURCE_OFFSET.into(),
            Some(original.offset().to_string().into_bytes()),
        ));
        if let Some(k) = original.key() {
            headers.push((rh::SOURCE_KEY.into(), Some(k.to_vec())));
        }
        if let Some(f) = format {
            headers.push((rh::FORMAT.into(), Some(f.as_bytes().to_vec())));
        }
        Outgoing {
            partition: Some(partition),
            key: Some(key.as_bytes().to_vec()),
            payload: original.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: original.timestamp().to_millis(),
            ..Outgoing::new(topic)
        }
    }

    /// A persons-topic event forwarded to the shard of its person: the same record, keyed
    /// by the person's canonical id, marked as forwarded by `from_shard`, which read it in
    /// the sequence `via`.
    pub fn forwarded<M: Message>(
        topic: &str,
        shard: i32,
        canonical: &str,
        record: &M,
        from_shard: i32,
        via: &str,
    ) -> Self {
        use routing_headers as rh;
        let mut headers: Vec<OutgoingHeader> = record
            .headers()
            .map(|hs| {
                hs.iter()
                    .filter(|h| !matches!(h.key, rh::KIND | rh::FROM_SHARD | rh::VIA))
                    .map(|h| (Cow::Owned(h.key.to_string()), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        headers.push((rh::KIND.into(), Some(b"forward".to_vec())));
        headers.push((
            rh::FROM_SHARD.into(),
            Some(from_shard.to_string().into_bytes()),
        ));
        headers.push((rh::VIA.into(), Some(via.as_bytes().to_vec())));
        Outgoing {
            partition: Some(shard),
            key: Some(canonical.as_bytes().to_vec()),
            payload: record.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: record.timestamp().to_millis(),
            ..Outgoing::new(topic)
        }
    }

    /// A message from one shard to another (see `segstream_core::engine::handoff`).
    pub fn handoff(topic: &str, handoff: &segstream_core::engine::Handoff) -> Self {
        use crate::metrics::Label;
        use routing_headers as rh;
        let (kind, key, meta, payload) = crate::service::handoffs::encode(handoff);
        Outgoing {
            partition: Some(i32::from(handoff.shard())),
            key: Some(key.into_bytes()),
            payload,
            headers: vec![
                (rh::KIND.into(), Some(kind.as_str().as_bytes().to_vec())),
                (rh::HANDOFF.into(), Some(meta)),
            ],
            ..Outgoing::new(topic)
        }
    }

    /// The router's word to persons-topic partition `shard` that input partition
    /// `partition` of `source` is caught up and quiet: everything it routed there has been
    /// written before this record.
    pub fn source_quiet(
        topic: &str,
        shard: i32,
        source: &str,
        partition: i32,
        time: Option<i64>,
    ) -> Self {
        use crate::metrics::{Label, PersonsKind};
        use routing_headers as rh;
        let mut headers = vec![
            (
                rh::KIND.into(),
                Some(PersonsKind::SourceQuiet.as_str().as_bytes().to_vec()),
            ),
            (rh::SOURCE_TOPIC.into(), Some(source.as_bytes().to_vec())),
            (
                rh::SOURCE_PARTITION.into(),
                Some(partition.to_string().into_bytes()),
            ),
        ];
        if let Some(t) = time {
            headers.push((rh::SOURCE_TIME.into(), Some(t.to_string().into_bytes())));
        }
        Outgoing {
            partition: Some(shard),
            headers,
            ..Outgoing::new(topic)
        }
    }

    /// A changelog entry: the customer's record (or tombstone) in the partition numbered
    /// like the input partition its events arrive on.
    pub fn changelog(topic: &str, change: &segstream_core::engine::StateChange) -> Self {
        Outgoing {
            partition: Some(i32::from(change.shard)),
            key: Some(change.customer_id.as_bytes().to_vec()),
            payload: change.record.clone(),
            ..Outgoing::new(topic)
        }
    }

    /// An identity entry: `id` belongs to the person `canonical` (a tombstone when it
    /// belongs to nobody any more), in the partition of that person's profile.
    pub fn identity(topic: &str, change: &segstream_core::engine::IdentityChange) -> Self {
        Outgoing {
            partition: Some(i32::from(change.shard)),
            key: Some(identity_key(&change.id).into_bytes()),
            payload: change.canonical.as_ref().map(|c| c.as_bytes().to_vec()),
            ..Outgoing::new(topic)
        }
    }

    /// A position marker in changelog partition `partition` (see
    /// [`segstream_core::changelog::position`]).
    pub fn position(topic: &str, partition: i32, position: &Position) -> Self {
        Outgoing {
            partition: Some(partition),
            key: Some(POSITION_KEY.as_bytes().to_vec()),
            payload: Some(position.encode()),
            ..Outgoing::new(topic)
        }
    }

    /// The bytes of key, value and headers (what the size limits are about, less framing).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    /// A header's value, if present (the last one of that name).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub(crate) fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut r = FutureRecord::to(&self.topic);
        if !self.headers.is_empty() {
            r = r.headers(headers);
        }
        if let Some(p) = &self.payload {
            r = r.payload(&p[..]);
        }
        if let Some(k) = &self.key {
            r = r.key(&k[..]);
        }
        if let Some(p) = self.partition {
            r = r.partition(p);
        }
        if let Some(t) = self.timestamp {
            r = r.timestamp(t);
        }
        r
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{OwnedMessage, Timestamp};

    use super::*;

    fn message(payload: Vec<u8>, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload),
            Some(b"c-1".to_vec()),
            "clickstream".to_string(),
            Timestamp::CreateTime(1_700_000_000_123),
            2,
            41,
            Some(headers),
        )
    }

    fn why() -> Rejection<'static> {
        Rejection {
            reason: "invalid_json",
            detail: "expected value at line 1 column 1",
        }
    }

    #[test]
    fn a_dead_letter_keeps_key_value_headers_and_timestamp_and_adds_the_origin() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-def-01"),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            });
        let m = message(b"not json".to_vec(), headers);
        let d = Outgoing::dead_letter("dlq", &Original::of(&m), why(), 1 << 20);
        assert_eq!(d.topic, "dlq");
        assert_eq!(d.key.as_deref(), Some(&b"c-1"[..]));
        assert_eq!(d.payload.as_deref(), Some(&b"not json"[..]));
        assert_eq!(d.timestamp, Some(1_700_000_000_123));
        assert_eq!(d.header("traceparent"), Some(&b"00-abc-def-01"[..]));
        assert!(d.headers.iter().any(|(k, v)| k == "empty" && v.is_none()));
        assert_eq!(d.header("segstream_reason"), Some(&b"invalid_json"[..]));
        assert_eq!(
            d.header("segstream_source_topic"),
            Some(&b"clickstream"[..])
        );
        assert_eq!(d.header("segstream_source_partition"), Some(&b"2"[..]));
        assert_eq!(d.header("segstream_source_offset"), Some(&b"41"[..]));
        assert_eq!(d.header("segstream_truncated"), None);
        // The original headers come first, in their order.
        assert_eq!(d.headers[0].0, "traceparent");
        let minimal = d.fallback.as_ref().expect("a last resort");
        assert_eq!(minimal.payload.as_deref(), Some(&b""[..]));
        assert_eq!(
            minimal.header("segstream_value_dropped"),
            Some(&b"true"[..])
        );
        assert_eq!(minimal.header("segstream_original_size"), Some(&b"8"[..]));
        assert_eq!(minimal.header("traceparent"), None);
        assert_eq!(minimal.header("segstream_source_offset"), Some(&b"41"[..]));
    }

    #[test]
    fn a_dead_letter_over_the_limit_is_cut_to_fit_and_says_so() {
        let big = vec![b'x'; 1_200_000];
        let m = message(big, OwnedHeaders::new());
        let limit = 900_000;
        let d = Outgoing::dead_letter("dlq", &Original::of(&m), why(), limit);
        assert!(d.size() + RECORD_OVERHEAD <= limit, "{}", d.size());
        assert!(d.payload.as_ref().unwrap().len() > 800_000);
        assert_eq!(d.header("segstream_truncated"), Some(&b"true"[..]));
        assert_eq!(d.header("segstream_original_size"), Some(&b"1200000"[..]));
        assert!(d.fallback.is_some());
    }

    #[test]
    fn headers_alone_over_the_limit_leave_only_the_last_resort() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "huge",
            value: Some(&vec![b'h'; 5000][..]),
        });
        let m = message(b"{}".to_vec(), headers);
        let d = Outgoing::dead_letter("dlq", &Original::of(&m), why(), 2000);
        assert_eq!(d.payload.as_deref(), Some(&b""[..]));
        assert_eq!(d.header("segstream_value_dropped"), Some(&b"true"[..]));
        assert_eq!(d.header("huge"), None);
        assert!(d.fallback.is_none());
    }

    #[test]
    fn long_details_are_cut_at_a_character_boundary() {
        let s = "é".repeat(1000);
        let c = cut(&s, 1001);
        assert!(c.len() <= 1004 && c.ends_with('…'));
        assert_eq!(cut("short", 10), "short");
    }
}

/// The membership topic's key for a customer in a segment.
pub fn membership_key(segment: &str, customer_id: &str) -> String {
    format!("{segment}/{customer_id}")
}

/// A membership record's value (see `schemas/membership.schema.json`).
#[derive(serde::Serialize)]
struct Membership<'a> {
    segment: &'a str,
    customer_id: &'a str,
    anonymous_ids: Vec<&'a str>,
    known: bool,
    /// When the customer entered (event time of the entering transition).
    since: String,
    rule_version: &'a str,
    /// As in transitions: `event:{id}`, `timer:{kind}@{time}`, `reload:{version}`, ...
    cause: String,
    transition_id: &'a str,
}
