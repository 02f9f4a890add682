//! Handoffs on the persons topic: the messages shards send each other to merge persons
//! that live in different instances (see `segstream_core::engine::handoff`). A handoff is
//! a record in the target shard's partition, keyed by the id it is about, with its kind in
//! the `segstream_kind` header, its fields as JSON in the `segstream_handoff` header and,
//! for a transfer, the absorbed profile (a changelog record) as the value.

use std::sync::Arc;

use rdkafka::message::{Headers, Message};
use segstream_core::engine::{Handoff, MergeRequest, Transfer};
use serde::{Deserialize, Serialize};

use crate::kafka::records::{header_in, read_headers, routing_headers as rh, HeaderRef};
use crate::metrics::Label;

/// The kinds of records on the persons topic (the `segstream_kind` header).
pub use crate::metrics::PersonsKind as Kind;

impl Kind {
    /// The kind of a persons-topic record (a record without the header is an event);
    /// `None` for an unknown kind.
    pub fn of<M: Message>(m: &M) -> Option<Kind> {
        Kind::in_headers(&read_headers(m))
    }

    /// [`Kind::of`] from a record's headers read once ([`read_headers`]).
    pub fn in_headers(headers: &[HeaderRef<'_>]) -> Option<Kind> {
        match header_in(headers, rh::KIND) {
            None => Some(Kind::Event),
            Some(v) => {
                let v = std::str::from_utf8(v).ok()?;
                Kind::ALL.iter().copied().find(|k| k.as_str() == v)
            }
        }
    }
}

/// A header's value.
pub fn header<'m, M: Message>(m: &'m M, name: &str) -> Option<&'m [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

#[derive(Serialize, Deserialize)]
struct RequestWire {
    absorbed: String,
    survivor: String,
    survivor_ids: usize,
    survivor_known: bool,
    survivor_shard: u16,
    at: i64,
    shard: u16,
    #[serde(default)]
    turned: bool,
    #[serde(default)]
    cleanup: bool,
}

#[derive(Serialize, Deserialize)]
struct TransferWire {
    survivor: String,
    from: String,
    ids: Vec<String>,
    at: i64,
    shard: u16,
    has_record: bool,
    #[serde(default)]
    survivor_known: bool,
}

#[derive(Serialize, Deserialize)]
struct ForgetWire {
    id: String,
    shard: u16,
}

#[derive(Serialize, Deserialize)]
struct ReleaseWire {
    survivor: String,
    shard: u16,
}

/// A handoff's kind.
pub fn kind_of(h: &Handoff) -> Kind {
    match h {
        Handoff::MergeRequest(_) => Kind::MergeRequest,
        Handoff::Transfer(_) => Kind::Transfer,
        Handoff::ForgetId { .. } => Kind::ForgetId,
        Handoff::Release { .. } => Kind::Release,
    }
}

/// A handoff's kind, key, meta (JSON) and value.
pub fn encode(h: &Handoff) -> (Kind, String, Vec<u8>, Option<Vec<u8>>) {
    match h {
        Handoff::MergeRequest(r) => {
            let w = RequestWire {
                absorbed: r.absorbed.to_string(),
                survivor: r.survivor.to_string(),
                survivor_ids: r.survivor_ids,
                survivor_known: r.survivor_known,
                survivor_shard: r.survivor_shard,
                at: r.at,
                shard: r.shard,
                turned: r.turned,
                cleanup: r.cleanup,
            };
            let meta = serde_json::to_vec(&w).expect("serializes");
            (
                Kind::MergeRequest,
                r.absorbed.to_string(),
                meta,
                Some(Vec::new()),
            )
        }
        Handoff::Transfer(t) => {
            let w = TransferWire {
                survivor: t.survivor.to_string(),
                from: t.from.to_string(),
                ids: t.ids.iter().map(|i| i.to_string()).collect(),
                at: t.at,
                shard: t.shard,
                has_record: t.record.is_some(),
                survivor_known: t.survivor_known,
            };
            let meta = serde_json::to_vec(&w).expect("serializes");
            let value = t.record.clone().unwrap_or_default();
            (Kind::Transfer, t.survivor.to_string(), meta, Some(value))
        }
        Handoff::ForgetId { id, shard } => {
            let w = ForgetWire {
                id: id.to_string(),
                shard: *shard,
            };
            let meta = serde_json::to_vec(&w).expect("serializes");
            (Kind::ForgetId, id.to_string(), meta, Some(Vec::new()))
        }
        Handoff::Release { survivor, shard } => {
            let w = ReleaseWire {
                survivor: survivor.to_string(),
                shard: *shard,
            };
            let meta = serde_json::to_vec(&w).expect("serializes");
            (Kind::Release, survivor.to_string(), meta, Some(Vec::new()))
        }
    }
}

/// A handoff read from the persons topic; `None` if its meta data is unreadable.
pub fn decode<M: Message>(kind: Kind, m: &M) -> Option<Handoff> {
    let meta = header(m, rh::HANDOFF)?;
    Some(match kind {
        Kind::MergeRequest => {
            let w: RequestWire = serde_json::from_slice(meta).ok()?;
            Handoff::MergeRequest(MergeRequest {
                absorbed: Arc::from(w.absorbed),
                survivor: Arc::from(w.survivor),
                survivor_ids: w.survivor_ids,
                survivor_known: w.survivor_known,
                survivor_shard: w.survivor_shard,
                at: w.at,
                shard: w.shard,
                turned: w.turned,
                cleanup: w.cleanup,
            })
        }
        Kind::Transfer => {
            let w: TransferWire = serde_json::from_slice(meta).ok()?;
            Handoff::Transfer(Transfer {
                survivor: Arc::from(w.survivor),
                from: Arc::from(w.from),
                ids: w.ids.into_iter().map(Arc::from).collect(),
                record: w
                    .has_record
                    .then(|| m.payload().unwrap_or_default().to_vec()),
                survivor_known: w.survivor_known,
                at: w.at,
                shard: w.shard,
            })
        }
        Kind::ForgetId => {
            let w: ForgetWire = serde_json::from_slice(meta).ok()?;
            Handoff::ForgetId {
                id: Arc::from(w.id),
                shard: w.shard,
            }
        }
        Kind::Release => {
            let w: ReleaseWire = serde_json::from_slice(meta).ok()?;
            Handoff::Release {
                survivor: Arc::from(w.survivor),
                shard: w.shard,
            }
        }
        Kind::Event | Kind::Forward | Kind::SourceQuiet => return None,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;

    fn as_message(h: &Handoff) -> OwnedMessage {
        let (kind, key, meta, value) = encode(h);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: rh::KIND,
                value: Some(kind.as_str()),
            })
            .insert(Header {
                key: rh::HANDOFF,
                value: Some(&meta),
            });
        OwnedMessage::new(
            value,
            Some(key.into_bytes()),
            "persons".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        )
    }

    #[test]
    fn handoffs_round_trip() {
        let cases = [
            Handoff::MergeRequest(MergeRequest {
                absorbed: "cookie".into(),
                survivor: "c-1".into(),
                survivor_ids: 2,
                survivor_known: true,
                survivor_shard: 3,
                at: 1_700_000_000_000,
                shard: 5,
                turned: true,
                cleanup: true,
            }),
            Handoff::Transfer(Transfer {
                survivor: "c-1".into(),
                from: "cookie".into(),
                ids: vec!["cookie".into(), "phone".into()],
                record: Some(vec![2, 0, 1]),
                survivor_known: true,
                at: 1_700_000_000_000,
                shard: 3,
            }),
            Handoff::Transfer(Transfer {
                survivor: "c-1".into(),
                from: "cookie".into(),
                ids: vec!["cookie".into()],
                record: None,
                survivor_known: false,
                at: 1,
                shard: 3,
            }),
            Handoff::ForgetId {
                id: "cookie".into(),
                shard: 5,
            },
            Handoff::Release {
                survivor: "c-1".into(),
                shard: 3,
            },
        ];
        for h in cases {
            let m = as_message(&h);
            let kind = Kind::of(&m).unwrap();
            assert_eq!(decode(kind, &m), Some(h));
        }
    }
}
