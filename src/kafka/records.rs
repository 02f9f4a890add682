//! Outgoing records: transitions (with CloudEvents headers), dead letters (the original
//! message with the reason in headers), changelog records and position markers, owned so
//! that they can be sent again after a failure.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use segstream_core::changelog::{Position, POSITION_KEY};
use segstream_core::time::format_rfc3339;
use segstream_core::transition::{Direction, Transition};

/// A record to produce, owned so that it can be sent again after a failure.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    /// An explicit partition (changelog records go to their input partition's number).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// For the latency histogram: the event time (or deadline) the record reports on.
    pub event_time: Option<i64>,
    /// For the transition counters.
    pub transition: Option<(Arc<str>, Direction)>,
}

impl Outgoing {
    /// A transition, keyed by customer id, with CloudEvents 1.0 binary-mode headers.
    pub fn transition(t: &Transition, topic: &str, source: &str) -> Self {
        let payload = serde_json::to_vec(t).unwrap_or_default();
        let ce_type = match t.direction {
            segstream_core::transition::Direction::Entered => "segstream.segment.entered",
            segstream_core::transition::Direction::Exited => "segstream.segment.exited",
        };
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: Some(t.customer_id.as_bytes().to_vec()),
            payload: Some(payload),
            headers: vec![
                ("ce_specversion", b"1.0".to_vec()),
                ("ce_id", t.transition_id.as_bytes().to_vec()),
                ("ce_source", source.as_bytes().to_vec()),
                ("ce_type", ce_type.as_bytes().to_vec()),
                ("ce_time", format_rfc3339(t.timestamp).into_bytes()),
                (
                    "ce_subject",
                    format!("{}/{}", t.customer_id, t.segment).into_bytes(),
                ),
                ("content-type", b"application/json".to_vec()),
                ("segstream_segment", t.segment.as_bytes().to_vec()),
                ("segstream_rule_version", t.rule_version.as_bytes().to_vec()),
            ],
            event_time: Some(t.timestamp),
            transition: Some((t.segment.clone(), t.direction)),
        }
    }

    /// A dead letter: the original message unchanged, the reason and origin in headers.
    #[allow(clippy::too_many_arguments)]
    pub fn dead_letter(
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        detail: &str,
        source_topic: &str,
        partition: i32,
        offset: i64,
    ) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: key.map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            headers: vec![
                ("segstream_reason", reason.as_bytes().to_vec()),
                ("segstream_detail", detail.as_bytes().to_vec()),
                ("segstream_source_topic", source_topic.as_bytes().to_vec()),
                (
                    "segstream_source_partition",
                    partition.to_string().into_bytes(),
                ),
                ("segstream_source_offset", offset.to_string().into_bytes()),
            ],
            event_time: None,
            transition: None,
        }
    }

    /// A changelog entry: the customer's record (or tombstone) in the partition numbered
    /// like the input partition its events arrive on.
    pub fn changelog(topic: &str, change: &segstream_core::engine::StateChange) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: Some(i32::from(change.shard)),
            key: Some(change.customer_id.as_bytes().to_vec()),
            payload: change.record.clone(),
            headers: Vec::new(),
            event_time: None,
            transition: None,
        }
    }

    /// A position marker in changelog partition `partition` (see
    /// [`segstream_core::changelog::position`]).
    pub fn position(topic: &str, partition: i32, position: &Position) -> Self {
        Outgoing {
            topic: topic.to_string(),
            partition: Some(partition),
            key: Some(POSITION_KEY.as_bytes().to_vec()),
            payload: Some(position.encode()),
            headers: Vec::new(),
            event_time: None,
            transition: None,
        }
    }

    pub(crate) fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
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
        r
    }
}
