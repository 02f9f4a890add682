//! The output: one transition per change of segment membership.
//!
//! On the wire a transition is a flat JSON object (see `schemas/transition.schema.json`):
//! `transition_id`, `customer_id`, `anonymous_ids`, `known`, `segment`, `direction`,
//! `timestamp`, `cause`, `rule_version`, `sequence`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::time::{format_rfc3339, parse_rfc3339, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Entered,
    Exited,
}

impl Direction {
    /// Both directions.
    pub const ALL: &'static [Direction] = &[Direction::Entered, Direction::Exited];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Entered => "entered",
            Direction::Exited => "exited",
        }
    }
}

/// What kind of time-driven change fired a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// An absence deadline passed ("then no ... within").
    Absence,
    /// Events left a sliding window.
    Window,
    /// A `since(...)` threshold was crossed.
    Recency,
    /// The decaying lead score crossed a threshold.
    Score,
    /// The profile expired (no event for the configured TTL).
    Ttl,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Absence => "absence",
            TimerKind::Window => "window",
            TimerKind::Recency => "recency",
            TimerKind::Score => "score",
            TimerKind::Ttl => "ttl",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "absence" => TimerKind::Absence,
            "window" => TimerKind::Window,
            "recency" => TimerKind::Recency,
            "score" => TimerKind::Score,
            "ttl" => TimerKind::Ttl,
            _ => return None,
        })
    }
}

/// Why a membership changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cause {
    /// An event (its `event_id`).
    Event(Box<str>),
    /// Time passed: a timer of this kind, due at `deadline`.
    Timer { kind: TimerKind, deadline: Millis },
    /// New segment definitions were loaded (their set version).
    Reload(Arc<str>),
    /// The profile was evicted to keep the engine within `max_profiles` (it was among the
    /// least recently active).
    Evicted,
    /// Two profiles of one person were merged (an anonymous visitor became known, or two
    /// ids were linked): the absorbed profile exits, the merged one enters what it now
    /// qualifies for. The canonical id of the merged person.
    Merge(Arc<str>),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces(|p| f.write_str(p))
    }
}

impl Cause {
    /// The cause's text in pieces (no allocation): `event:{id}`, `timer:{kind}@{deadline}`,
    /// `reload:{version}`, `evicted`, `merge:{id}`.
    fn pieces<E>(&self, mut put: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
        match self {
            Cause::Event(id) => {
                put("event:")?;
                put(id)
            }
            Cause::Timer { kind, deadline } => {
                put("timer:")?;
                put(kind.as_str())?;
                put("@")?;
                match crate::time::rfc3339_bytes(*deadline) {
                    Some(b) => put(std::str::from_utf8(&b).expect("ASCII digits")),
                    None => put(&format_rfc3339(*deadline)),
                }
            }
            Cause::Reload(v) => {
                put("reload:")?;
                put(v)
            }
            Cause::Evicted => put("evicted"),
            Cause::Merge(id) => {
                put("merge:")?;
                put(id)
            }
        }
    }
}

impl Cause {
    pub fn parse(s: &str) -> Option<Cause> {
        if s == "evicted" {
            return Some(Cause::Evicted);
        }
        let (kind, rest) = s.split_once(':')?;
        Some(match kind {
            "event" => Cause::Event(rest.into()),
            "reload" => Cause::Reload(rest.into()),
            "merge" => Cause::Merge(rest.into()),
            "timer" => {
                let (k, at) = rest.split_once('@')?;
                Cause::Timer {
                    kind: TimerKind::parse(k)?,
                    deadline: parse_rfc3339(at)?,
                }
            }
            _ => return None,
        })
    }
}

/// A person's other ids (every id merged into its profile besides the canonical one).
pub type Ids = Arc<[Arc<str>]>;

/// One membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Idempotency key: equal for the same transition however often it is produced.
    pub transition_id: String,
    /// The person's canonical id: the customer id once known, the anonymous id before.
    pub customer_id: Arc<str>,
    /// Every other id merged into the person (anonymous ids, devices, earlier ids), so a
    /// subscriber keyed by a cookie finds its id.
    pub anonymous_ids: Ids,
    /// Whether the person is known (has a customer id) or still anonymous.
    pub known: bool,
    pub segment: Arc<str>,
    pub direction: Direction,
    /// Event time of the change (ms).
    pub timestamp: Millis,
    pub cause: Cause,
    pub rule_version: Arc<str>,
    /// Per customer, starting at 1.
    pub sequence: u32,
}

impl Transition {
    /// Builds a transition and its idempotency key.
    pub fn new(
        customer_id: Arc<str>,
        segment: Arc<str>,
        direction: Direction,
        timestamp: Millis,
        cause: Cause,
        rule_version: Arc<str>,
        sequence: u32,
    ) -> Self {
        let mut t = Transition {
            transition_id: String::new(),
            customer_id,
            anonymous_ids: Arc::from([]),
            known: true,
            segment,
            direction,
            timestamp,
            cause,
            rule_version,
            sequence,
        };
        t.transition_id = t.idempotency_key();
        t
    }

    /// The same transition for a person with other ids and a known/anonymous status (they
    /// do not change the idempotency key).
    pub fn with_identity(mut self, anonymous_ids: Ids, known: bool) -> Self {
        self.anonymous_ids = anonymous_ids;
        self.known = known;
        self
    }

    /// A hash of everything that identifies the change: customer, segment, direction,
    /// sequence, time and cause. A replay of the same events yields the same key.
    fn idempotency_key(&self) -> String {
        let mut buf = Vec::with_capacity(160);
        for part in [
            self.customer_id.as_bytes(),
            self.segment.as_bytes(),
            self.direction.as_str().as_bytes(),
        ] {
            buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
            buf.extend_from_slice(part);
        }
        // The cause's length, then its text, written in place.
        let at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        let _ = self.cause.pieces(|p| {
            buf.extend_from_slice(p.as_bytes());
            Ok::<(), ()>(())
        });
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&self.sequence.to_le_bytes());
        buf.extend_from_slice(&self.timestamp.to_le_bytes());
        hex32(xxh3_128(&buf))
    }

    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(320);
        self.write_json(&mut out);
        String::from_utf8(out).expect("JSON of UTF-8 strings")
    }

    /// Appends the transition's JSON (`schemas/transition.schema.json`) to `out`: byte for
    /// byte what serde_json writes for it (the [`Serialize`] impl), without building the
    /// owned timestamp, cause and id list that serialization through serde needs.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"transition_id\":");
        json_str(out, &self.transition_id);
        out.extend_from_slice(b",\"customer_id\":");
        json_str(out, &self.customer_id);
        out.extend_from_slice(b",\"anonymous_ids\":[");
        for (i, id) in self.anonymous_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, id);
        }
        out.extend_from_slice(if self.known {
            b"],\"known\":true,\"segment\":"
        } else {
            b"],\"known\":false,\"segment\":"
        });
        json_str(out, &self.segment);
        out.extend_from_slice(b",\"direction\":\"");
        out.extend_from_slice(self.direction.as_str().as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":");
        match crate::time::rfc3339_bytes(self.timestamp) {
            Some(b) => {
                out.push(b'"');
                out.extend_from_slice(&b);
                out.push(b'"');
            }
            None => json_str(out, &format_rfc3339(self.timestamp)),
        }
        out.extend_from_slice(b",\"cause\":");
        json_str(out, &self.cause);
        out.extend_from_slice(b",\"rule_version\":");
        json_str(out, &self.rule_version);
        out.extend_from_slice(b",\"sequence\":");
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &self.sequence);
        out.push(b'}');
    }
}

/// 128 bits as 32 lowercase hex digits (`format!("{:032x}")`).
fn hex32(v: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 32];
    for (i, c) in b.iter_mut().enumerate() {
        *c = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    String::from_utf8(b.to_vec()).expect("hex digits")
}

/// `value` as a JSON string, quoted and escaped by serde_json, without an intermediate
/// `String` (serde_json's `collect_str` escapes what `Display` writes as it comes).
fn json_str(out: &mut Vec<u8>, value: &(impl fmt::Display + ?Sized)) {
    use serde::Serializer;
    // Writing into a Vec cannot fail.
    let _ = serde_json::Serializer::new(&mut *out).collect_str(value);
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    transition_id: std::borrow::Cow<'a, str>,
    customer_id: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    anonymous_ids: Vec<std::borrow::Cow<'a, str>>,
    /// Transitions written before identity resolution were all of known customers.
    #[serde(default = "known_by_default")]
    known: bool,
    segment: std::borrow::Cow<'a, str>,
    direction: Direction,
    timestamp: String,
    cause: String,
    rule_version: std::borrow::Cow<'a, str>,
    sequence: u32,
}

fn known_by_default() -> bool {
    true
}

impl Serialize for Transition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            transition_id: (&*self.transition_id).into(),
            customer_id: (&*self.customer_id).into(),
            anonymous_ids: self.anonymous_ids.iter().map(|i| (&**i).into()).collect(),
            known: self.known,
            segment: (&*self.segment).into(),
            direction: self.direction,
            timestamp: format_rfc3339(self.timestamp),
            cause: self.cause.to_string(),
            rule_version: (&*self.rule_version).into(),
            sequence: self.sequence,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Transition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = Wire::deserialize(d)?;
        Ok(Transition {
            transition_id: w.transition_id.into_owned(),
            customer_id: w.customer_id.as_ref().into(),
            anonymous_ids: w
                .anonymous_ids
                .iter()
                .map(|i| Arc::from(i.as_ref()))
                .collect(),
            known: w.known,
            segment: w.segment.as_ref().into(),
            direction: w.direction,
            timestamp: parse_rfc3339(&w.timestamp)
                .ok_or_else(|| D::Error::custom("bad transition timestamp"))?,
            cause: Cause::parse(&w.cause).ok_or_else(|| D::Error::custom("bad cause"))?,
            rule_version: w.rule_version.as_ref().into(),
            sequence: w.sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_stable_key() {
        let t = Transition::new(
            "c-1".into(),
            "clicked-but-not-registered".into(),
            Direction::Entered,
            1_795_341_600_000,
            Cause::Timer {
                kind: TimerKind::Absence,
                deadline: 1_795_341_600_000,
            },
            "0123456789ab".into(),
            3,
        );
        let json = t.to_json();
        assert!(
            json.contains(r#""cause":"timer:absence@2026-11-22T10:00:00.000Z""#),
            "{json}"
        );
        let back: Transition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // The key of this transition as every earlier version computed it: a replay of old
        // events gives the keys already published.
        assert_eq!(t.transition_id, "5b088b84bf3ab2b69e4a19fe4e0c5879");
        let again = Transition::new(
            "c-1".into(),
            "clicked-but-not-registered".into(),
            Direction::Entered,
            1_795_341_600_000,
            t.cause.clone(),
            "0123456789ab".into(),
            3,
        );
        assert_eq!(again.transition_id, t.transition_id);
        let other = Transition::new(
            "c-1".into(),
            "clicked-but-not-registered".into(),
            Direction::Entered,
            1_795_341_600_000,
            t.cause.clone(),
            "0123456789ab".into(),
            4,
        );
        assert_ne!(other.transition_id, t.transition_id);
    }

    proptest::proptest! {
        /// The hand-written JSON is serde_json's, byte for byte, whatever the ids hold.
        #[test]
        fn written_by_hand_as_serde_writes_it(
            id in "\\PC{0,12}|[\\x00-\\x{7f}]{0,12}",
            others in proptest::collection::vec("[a-z0-9\\x00-\\x1f\"\\\\é]{0,6}", 0..3),
            event in "[ -~\\x00-\\x1f]{0,10}",
            timestamp in -100_000_000_000_000i64..300_000_000_000_000,
            sequence in proptest::prelude::any::<u32>(),
            known in proptest::prelude::any::<bool>(),
            which in 0u8..5,
        ) {
            let cause = match which {
                0 => Cause::Event(event.into()),
                1 => Cause::Timer { kind: TimerKind::Absence, deadline: timestamp },
                2 => Cause::Reload("v\"1".into()),
                3 => Cause::Evicted,
                _ => Cause::Merge(id.as_str().into()),
            };
            let t = Transition::new(
                id.as_str().into(),
                "seg\\ment".into(),
                if known { Direction::Entered } else { Direction::Exited },
                timestamp,
                cause,
                "0123456789ab".into(),
                sequence,
            )
            .with_identity(others.iter().map(|o| Arc::from(o.as_str())).collect(), known);
            let mut ours = Vec::new();
            t.write_json(&mut ours);
            proptest::prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&t).unwrap()
            );
            proptest::prop_assert_eq!(t.transition_id.len(), 32);
        }
    }

    #[test]
    fn causes_parse_back() {
        for c in [
            Cause::Event("e-1:x".into()),
            Cause::Reload("abcdef012345".into()),
            Cause::Timer {
                kind: TimerKind::Ttl,
                deadline: 5000,
            },
            Cause::Evicted,
            Cause::Merge("c-42".into()),
        ] {
            assert_eq!(Cause::parse(&c.to_string()), Some(c));
        }
    }
}
