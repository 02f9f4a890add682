//! The position marker: written to changelog partition N after the records of every batch
//! that read input partition N, it says up to which input offsets (and event time) the
//! records before it reflect.
//!
//! A restore applies records only up to the last marker (a batch cut short by a crash is
//! read again from the input instead) and skips input messages the restored state already
//! contains: a crash neither loses nor double-counts an event. Markers share the
//! changelog with customer records under a key no customer id can have ([`POSITION_KEY`]:
//! customer ids may not contain control characters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// The changelog key of position markers (no customer id starts with a NUL).
pub const POSITION_KEY: &str = "\u{0}segstream.position";

/// The marker format written by this build.
pub const POSITION_VERSION: u8 = 1;

/// Where a partition number's state stands. Serialized as JSON (small, rare, readable
/// with any Kafka tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Format version ([`POSITION_VERSION`]).
    pub v: u8,
    /// The shard's watermark when the marker was written.
    pub watermark: Millis,
    /// The shard's largest event time.
    pub max_event_time: Millis,
    /// Per input topic: the next offset to apply and the largest event time seen.
    pub inputs: BTreeMap<String, (i64, Millis)>,
}

impl Position {
    /// A marker of the current format.
    pub fn new(
        watermark: Millis,
        max_event_time: Millis,
        inputs: BTreeMap<String, (i64, Millis)>,
    ) -> Self {
        Position {
            v: POSITION_VERSION,
            watermark,
            max_event_time,
            inputs,
        }
    }

    /// The marker's bytes (the value of a [`POSITION_KEY`] record).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position serializes")
    }

    /// A marker from its bytes; `None` if they are not a marker this build reads.
    pub fn decode(bytes: &[u8]) -> Option<Position> {
        serde_json::from_slice::<Position>(bytes).ok()
    }

    /// Whether a changelog key is the marker key.
    pub fn is_key(key: &[u8]) -> bool {
        key == POSITION_KEY.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_other_bytes_are_not_one() {
        let mut inputs = BTreeMap::new();
        inputs.insert("clickstream".to_string(), (42, 1_700_000_000_000));
        let p = Position::new(1_699_999_700_000, 1_700_000_000_000, inputs);
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode(b"\x01not json"), None);
        assert!(Position::is_key(POSITION_KEY.as_bytes()));
        assert!(!Position::is_key(b"c-000001"));
    }

    #[test]
    fn the_format_is_stable_json() {
        let p = Position::new(1, 2, BTreeMap::from([("t".to_string(), (3, 4))]));
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            r#"{"v":1,"watermark":1,"max_event_time":2,"inputs":{"t":[3,4]}}"#
        );
    }
}
