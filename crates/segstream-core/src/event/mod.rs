//! The input contract: one JSON object per event, parsed and validated into a typed [`Event`].
//!
//! Two wire formats map onto the same [`Event`] ([`InputFormat`]): segstream's own
//! ([`parse_event`], `schemas/event.schema.json`) and the Segment Spec written by analytics
//! pipelines such as Twilio Segment and RudderStack ([`parse_segment_event`],
//! `schemas/segment-spec.schema.json`; the mapping is in [`segment_spec`]).
//!
//! Parsing borrows from the input buffer wherever the JSON has no escapes, so the hot path
//! allocates only the two small property vectors. Validation is done on a lenient
//! intermediate form so that every rejection has a precise, low-cardinality
//! [`RejectReason`] (used as a metric label and dead-letter header) and a human detail.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::time::{parse_rfc3339, Millis};

mod scan;
pub mod segment_spec;

pub use segment_spec::parse_segment_event;

/// Largest accepted event timestamp: 2106-02-07, where profile timestamps (u32 seconds) end.
pub const MAX_TIMESTAMP_MS: Millis = u32::MAX as Millis * 1000;
pub const MAX_ID_LEN: usize = 256;
pub const MAX_TYPE_LEN: usize = 64;

/// CRM traits with few distinct values (profiles intern them); traits compared by value in
/// segment conditions are treated the same way.
pub const CATEGORICAL_TRAITS: [&str; 9] = [
    "role",
    "industry",
    "country",
    "time_zone",
    "customer_status",
    "age_band",
    "plan",
    "language",
    "company_size_band",
];

/// The event types segstream knows by name. Any other type string is [`EventKind::Custom`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    PageView,
    Click,
    AdClick,
    EmailSent,
    EmailOpen,
    EmailClick,
    EmailBounce,
    Unsubscribe,
    WebinarRegistered,
    WebinarAttended,
    WebinarLeft,
    Purchase,
    Identify,
    Forget,
    /// Links two ids of one person without a business event (`previous_id` → the event's
    /// `customer_id`, or its `anonymous_id`).
    Alias,
    Custom,
}

/// Event families: one JSON Schema each in `schemas/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Clickstream,
    Email,
    Webinar,
    Purchase,
    Crm,
    Forget,
    Identity,
    Custom,
}

impl EventKind {
    pub const KNOWN: [EventKind; 15] = [
        EventKind::PageView,
        EventKind::Click,
        EventKind::AdClick,
        EventKind::EmailSent,
        EventKind::EmailOpen,
        EventKind::EmailClick,
        EventKind::EmailBounce,
        EventKind::Unsubscribe,
        EventKind::WebinarRegistered,
        EventKind::WebinarAttended,
        EventKind::WebinarLeft,
        EventKind::Purchase,
        EventKind::Identify,
        EventKind::Forget,
        EventKind::Alias,
    ];

    pub fn from_type(t: &str) -> EventKind {
        match t {
            "page_view" => EventKind::PageView,
            "click" => EventKind::Click,
            "ad_click" => EventKind::AdClick,
            "email_sent" => EventKind::EmailSent,
            "email_open" => EventKind::EmailOpen,
            "email_click" => EventKind::EmailClick,
            "email_bounce" => EventKind::EmailBounce,
            "unsubscribe" => EventKind::Unsubscribe,
            "webinar_registered" => EventKind::WebinarRegistered,
            "webinar_attended" => EventKind::WebinarAttended,
            "webinar_left" => EventKind::WebinarLeft,
            "purchase" => EventKind::Purchase,
            "identify" => EventKind::Identify,
            "forget" => EventKind::Forget,
            "alias" => EventKind::Alias,
            _ => EventKind::Custom,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::PageView => "page_view",
            EventKind::Click => "click",
            EventKind::AdClick => "ad_click",
            EventKind::EmailSent => "email_sent",
            EventKind::EmailOpen => "email_open",
            EventKind::EmailClick => "email_click",
            EventKind::EmailBounce => "email_bounce",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::WebinarRegistered => "webinar_registered",
            EventKind::WebinarAttended => "webinar_attended",
            EventKind::WebinarLeft => "webinar_left",
            EventKind::Purchase => "purchase",
            EventKind::Identify => "identify",
            EventKind::Forget => "forget",
            EventKind::Alias => "alias",
            EventKind::Custom => "custom",
        }
    }

    pub fn family(self) -> Family {
        use EventKind::*;
        match self {
            PageView | Click | AdClick => Family::Clickstream,
            EmailSent | EmailOpen | EmailClick | EmailBounce | Unsubscribe => Family::Email,
            WebinarRegistered | WebinarAttended | WebinarLeft => Family::Webinar,
            Purchase => Family::Purchase,
            Identify => Family::Crm,
            Forget => Family::Forget,
            Alias => Family::Identity,
            Custom => Family::Custom,
        }
    }

    /// Properties this type documents, with their JSON type. Used to type-check known
    /// properties of events and to catch misspelt property names in segment filters.
    pub fn known_properties(self) -> &'static [(&'static str, PropType)] {
        use PropType::*;
        const CLICK: &[(&str, PropType)] = &[
            ("url", Str),
            ("referrer", Str),
            ("title", Str),
            ("campaign", Str),
            ("utm_source", Str),
            ("utm_medium", Str),
            ("utm_campaign", Str),
            ("utm_content", Str),
            ("utm_term", Str),
            ("category", Str),
        ];
        const EMAIL: &[(&str, PropType)] = &[
            ("campaign", Str),
            ("message_id", Str),
            ("list", Str),
            ("url", Str),
        ];
        const WEBINAR: &[(&str, PropType)] = &[
            ("webinar_id", Str),
            ("starts_at", Timestamp),
            ("ends_at", Timestamp),
            ("minutes", Num),
        ];
        const PURCHASE: &[(&str, PropType)] = &[
            ("amount", Num),
            ("currency", Str),
            ("product", Str),
            ("category", Str),
            ("order_id", Str),
            ("discount_code", Str),
            ("quantity", Num),
        ];
        match self.family() {
            Family::Clickstream => CLICK,
            Family::Email => EMAIL,
            Family::Webinar => WEBINAR,
            Family::Purchase => PURCHASE,
            _ => &[],
        }
    }

    /// Properties that must be present for this type.
    pub fn required_properties(self) -> &'static [&'static str] {
        match self {
            EventKind::PageView => &["url"],
            EventKind::AdClick => &["campaign"],
            EventKind::WebinarRegistered | EventKind::WebinarAttended | EventKind::WebinarLeft => {
                &["webinar_id"]
            }
            EventKind::Purchase => &["amount", "currency"],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    Str,
    Num,
    /// RFC 3339 string or integer epoch milliseconds.
    Timestamp,
}

/// A scalar JSON value (arrays and objects are kept as markers: they can be tested with
/// `exists` but not compared).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Array,
    Object,
}

impl Value<'_> {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
            Value::Array => "array",
            Value::Object => "object",
        }
    }
    /// A timestamp value: RFC 3339 string or integer epoch milliseconds.
    pub fn as_timestamp(&self) -> Option<Millis> {
        match self {
            Value::Str(s) => parse_rfc3339(s),
            Value::Int(i) if (0..=MAX_TIMESTAMP_MS).contains(i) => Some(*i),
            _ => None,
        }
    }
}

/// The members of `properties` or `traits`, in input order.
pub type Fields<'a> = Vec<(Cow<'a, str>, Value<'a>)>;

/// A validated event, borrowing from the input buffer.
///
/// It carries a known `customer_id`, an `anonymous_id` (a cookie or device id), or both
/// (then it links the two ids to one person). An `alias` carries `previous_id`, which
/// becomes an id of the person of its `customer_id` (or `anonymous_id`). All ids share one
/// namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub customer_id: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    /// `alias` only: the id that joins the person.
    pub previous_id: Option<Cow<'a, str>>,
    pub event_type: Cow<'a, str>,
    pub kind: EventKind,
    pub timestamp: Millis,
    pub properties: Fields<'a>,
    pub traits: Fields<'a>,
}

impl<'a> Event<'a> {
    /// The id the event is recorded under before identity resolution: its customer id,
    /// else its anonymous id (one of them is always present).
    pub fn subject(&self) -> &str {
        self.customer_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }

    /// The other id this event links to its subject, if any: the anonymous id of an event
    /// that also has a customer id, or an alias's previous id.
    pub fn linked_id(&self) -> Option<&str> {
        if self.kind == EventKind::Alias {
            self.previous_id.as_deref()
        } else if self.customer_id.is_some() {
            self.anonymous_id.as_deref()
        } else {
            None
        }
    }

    pub fn property(&self, name: &str) -> Option<&Value<'a>> {
        self.properties
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// Why an event was rejected. `as_str` is the metric label and dead-letter header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Not valid JSON (or not UTF-8).
    InvalidJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field or property is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field has the right type but an unacceptable value (empty id, bad currency, ...).
    InvalidValue,
    /// `timestamp` is neither RFC 3339 with offset nor integer epoch milliseconds.
    InvalidTimestamp,
    /// The event is older than the watermark allows (see the engine).
    Late,
    /// The message exceeds the configured size limit (see the service).
    TooLarge,
    /// The event is stamped further ahead of the wall clock than `max_future_skew` allows
    /// (see [`check_not_future`]).
    FutureTimestamp,
    /// The event's second id was not linked to its person (a blocked id, or the person
    /// would have too many ids): reported with the event, which itself was applied.
    LinkRefused,
}

impl RejectReason {
    /// Every reason, in declaration order (metric series are created for each up front).
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidValue,
        RejectReason::InvalidTimestamp,
        RejectReason::Late,
        RejectReason::TooLarge,
        RejectReason::FutureTimestamp,
        RejectReason::LinkRefused,
    ];

    /// The metric label and dead-letter header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::Late => "late_event",
            RejectReason::TooLarge => "too_large",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::LinkRefused => "link_refused",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the reason code and a precise description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct EventError {
    pub reason: RejectReason,
    pub detail: String,
}

impl EventError {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        EventError {
            reason,
            detail: detail.into(),
        }
    }
}

/// The future guard: an event stamped more than `max_skew` ahead of `now` (the wall
/// clock, passed in) is rejected with [`RejectReason::FutureTimestamp`]. Event time only
/// moves forward, so a single event from a broken clock (dated 2099) would otherwise make
/// every later event of its partition late. `max_skew: None` turns the guard off.
pub fn check_not_future(
    timestamp: Millis,
    now: Millis,
    max_skew: Option<Millis>,
) -> Result<(), EventError> {
    match max_skew {
        Some(skew) if timestamp > now.saturating_add(skew) => Err(EventError::new(
            RejectReason::FutureTimestamp,
            format!(
                "event time {} is more than {} ahead of the clock ({}): a producer's clock is wrong, or the data is synthetic (replay --now)",
                crate::time::format_rfc3339(timestamp),
                crate::time::format_duration(skew),
                crate::time::format_rfc3339(now)
            ),
        )),
        _ => Ok(()),
    }
}

/// Parses and validates one event.
pub fn parse_event(input: &[u8]) -> Result<Event<'_>, EventError> {
    // The usual shape is read in one pass (`scan`); whatever it declines, serde decides.
    if let Some(wire) = std::str::from_utf8(input).ok().and_then(scan::wire) {
        return wire.validate();
    }
    parse_event_with_serde(input)
}

/// [`parse_event`] without its one-pass reader: serde_json for every input. The reference
/// the fast path is checked against (tests, fuzzing); the same answer for every input.
#[doc(hidden)]
pub fn parse_event_with_serde(input: &[u8]) -> Result<Event<'_>, EventError> {
    let wire: Wire<'_> = deserialize_object(input)?;
    wire.validate()
}

/// The wire formats segstream reads: its own contract, or the Segment Spec (see
/// [`segment_spec`]). Both produce the same [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InputFormat {
    /// segstream's own contract ([`parse_event`], `schemas/event.schema.json`).
    #[default]
    Segstream,
    /// The Segment Spec as written by Twilio Segment, RudderStack and others
    /// ([`parse_segment_event`], `schemas/segment-spec.schema.json`).
    SegmentSpec,
}

impl InputFormat {
    /// Every format, in declaration order.
    pub const ALL: [InputFormat; 2] = [InputFormat::Segstream, InputFormat::SegmentSpec];

    /// The name used in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Segstream => "segstream",
            InputFormat::SegmentSpec => "segment",
        }
    }

    /// The format called `name` (see [`InputFormat::name`]).
    pub fn from_name(name: &str) -> Option<InputFormat> {
        InputFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Parses and validates one event in this format.
    pub fn parse(self, input: &[u8]) -> Result<Event<'_>, EventError> {
        match self {
            InputFormat::Segstream => parse_event(input),
            InputFormat::SegmentSpec => parse_segment_event(input),
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InputFormat::from_name(s).ok_or_else(|| {
            format!(
                "unknown input format `{s}`; expected one of: {}",
                InputFormat::ALL.map(InputFormat::name).join(", ")
            )
        })
    }
}

/// Deserializes the lenient wire form of one JSON object: not an object is `not_an_object`,
/// broken JSON `invalid_json`, a value serde refuses (a duplicate key) `invalid_value`.
fn deserialize_object<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, EventError> {
    let first = input.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(input) {
            Ok(_) => EventError::new(RejectReason::NotAnObject, "an event must be a JSON object"),
            Err(e) => EventError::new(RejectReason::InvalidJson, e.to_string()),
        });
    }
    // One UTF-8 check of the whole line (a fast, mostly-ASCII scan) lets serde_json read it
    // as a `str` and skip its UTF-8 check of every string it borrows. A line that is not
    // UTF-8 goes through the byte reader as before, so its rejection (reason, message,
    // position) is unchanged.
    let parsed = match std::str::from_utf8(input) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(input),
    };
    match parsed {
        Ok(w) => Ok(w),
        Err(e) if e.is_data() => Err(EventError::new(RejectReason::InvalidValue, e.to_string())),
        Err(e) => Err(EventError::new(RejectReason::InvalidJson, e.to_string())),
    }
}

fn required_str<'a>(
    field: &str,
    v: Option<Value<'a>>,
    max_len: usize,
) -> Result<Cow<'a, str>, EventError> {
    match v {
        // The usual case decided from its bytes: short enough, and starting with a visible
        // ASCII character (so not blank, whatever Unicode counts as white space).
        Some(Value::Str(s))
            if s.len() <= max_len && s.as_bytes().first().is_some_and(u8::is_ascii_graphic) =>
        {
            Ok(s)
        }
        None | Some(Value::Null) => Err(EventError::new(
            RejectReason::MissingField,
            format!("`{field}` is required"),
        )),
        Some(Value::Str(s)) if s.trim().is_empty() => Err(EventError::new(
            RejectReason::InvalidValue,
            format!("`{field}` must not be empty"),
        )),
        Some(Value::Str(s)) if s.len() > max_len && s.chars().count() > max_len => {
            Err(EventError::new(
                RejectReason::InvalidValue,
                format!("`{field}` is longer than {max_len} characters"),
            ))
        }
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(EventError::new(
            RejectReason::WrongType,
            format!("`{field}` must be a string, found {}", other.type_name()),
        )),
    }
}

/// An optional id field: absent or `null` is `None`; present, it must be a non-empty string
/// of at most [`MAX_ID_LEN`] characters without control characters (which also keeps ids
/// apart from segstream's own changelog keys: they start with one).
fn optional_id<'a>(field: &str, v: Option<Value<'a>>) -> Result<Option<Cow<'a, str>>, EventError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        v => {
            let id = required_str(field, v, MAX_ID_LEN)?;
            if may_hold_control(&id) && id.chars().any(char::is_control) {
                return Err(EventError::new(
                    RejectReason::InvalidValue,
                    format!("`{field}` must not contain control characters"),
                ));
            }
            Ok(Some(id))
        }
    }
}

/// Whether `s` may hold a control character (`char::is_control`: U+0000..U+001F and
/// U+007F..U+009F): false when no byte is below 0x20, 0x7F, or 0xC2 (the lead byte of
/// U+0080..U+00BF in UTF-8), which answers for nearly every id without decoding it.
fn may_hold_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
}

/// The value of a timestamp field (`field` names it in rejections): an RFC 3339 string
/// with an offset, or integer epoch milliseconds, between 1970 and 2106.
fn timestamp_field(field: &str, v: Value<'_>) -> Result<Millis, EventError> {
    Ok(match v {
        Value::Str(s) => match parse_rfc3339(&s) {
            Some(ms) if (0..=MAX_TIMESTAMP_MS).contains(&ms) => ms,
            Some(_) => {
                return Err(EventError::new(
                    RejectReason::InvalidTimestamp,
                    format!("`{field}` {s:?} is outside 1970-01-01..2106-02-07"),
                ))
            }
            None => {
                return Err(EventError::new(
                    RejectReason::InvalidTimestamp,
                    format!(
                    "`{field}` {s:?} is not RFC 3339 with an offset (e.g. 2026-11-22T10:00:00Z)"
                ),
                ))
            }
        },
        Value::Int(ms) if (0..=MAX_TIMESTAMP_MS).contains(&ms) => ms,
        Value::Int(ms) => {
            return Err(EventError::new(
                RejectReason::InvalidTimestamp,
                format!(
                    "`{field}` {ms} is outside the epoch-millisecond range 0..={MAX_TIMESTAMP_MS}"
                ),
            ))
        }
        Value::Float(f) if f.fract() == 0.0 && (0.0..=MAX_TIMESTAMP_MS as f64).contains(&f) => {
            f as Millis
        }
        Value::Float(f) => {
            return Err(EventError::new(
                RejectReason::InvalidTimestamp,
                format!("`{field}` {f} must be integer epoch milliseconds or an RFC 3339 string"),
            ))
        }
        other => {
            return Err(EventError::new(
                RejectReason::WrongType,
                format!(
                    "`{field}` must be an RFC 3339 string or integer epoch milliseconds, found {}",
                    other.type_name()
                ),
            ))
        }
    })
}

/// Traits are flat (scalars or null) with non-empty names; the well-known CRM traits have
/// their types.
fn check_traits(traits: &Fields<'_>) -> Result<(), EventError> {
    for (k, v) in traits {
        if matches!(v, Value::Array | Value::Object) {
            return Err(EventError::new(
                RejectReason::WrongType,
                format!(
                    "trait `{k}` must be a string, number, boolean or null, found {}",
                    v.type_name()
                ),
            ));
        }
        if k.is_empty() {
            return Err(EventError::new(
                RejectReason::InvalidValue,
                "trait names must not be empty",
            ));
        }
    }
    for (k, v) in traits {
        check_well_known_trait(k, v)?;
    }
    Ok(())
}

impl<'a> Wire<'a> {
    fn validate(self) -> Result<Event<'a>, EventError> {
        let event_id = required_str("event_id", self.event_id, MAX_ID_LEN)?;
        let customer_id = optional_id("customer_id", self.customer_id)?;
        let anonymous_id = optional_id("anonymous_id", self.anonymous_id)?;
        if customer_id.is_none() && anonymous_id.is_none() {
            return Err(EventError::new(
                RejectReason::MissingField,
                "`customer_id` or `anonymous_id` is required",
            ));
        }
        let event_type = required_str("type", self.event_type, MAX_TYPE_LEN)?;
        let allowed = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-');
        // Every allowed character is ASCII: the first byte not allowed starts the first
        // character not allowed.
        if let Some(i) = event_type.bytes().position(|c| !allowed(c)) {
            let c = event_type[i..].chars().next().unwrap_or_default();
            return Err(EventError::new(
                RejectReason::InvalidValue,
                format!("`type` may only contain letters, digits, `_ . : -`; found {c:?}"),
            ));
        }
        let timestamp = match self.timestamp {
            None | Some(Value::Null) => {
                return Err(EventError::new(
                    RejectReason::MissingField,
                    "`timestamp` is required",
                ))
            }
            Some(v) => timestamp_field("timestamp", v)?,
        };
        let kind = EventKind::from_type(&event_type);
        let previous_id = if kind == EventKind::Alias {
            let previous = optional_id("previous_id", self.previous_id)?.ok_or_else(|| {
                EventError::new(
                    RejectReason::MissingField,
                    "`alias` requires `previous_id`, the id that joins the person",
                )
            })?;
            let target = customer_id.as_deref().or(anonymous_id.as_deref());
            if target == Some(&*previous) {
                return Err(EventError::new(
                    RejectReason::InvalidValue,
                    "`previous_id` must differ from the id it is an alias of",
                ));
            }
            Some(previous)
        } else {
            None
        };
        let properties = match self.properties {
            None => Fields::new(),
            Some(Obj::Map(m)) => m,
            Some(Obj::Not(t)) => {
                return Err(EventError::new(
                    RejectReason::WrongType,
                    format!("`properties` must be an object, found {t}"),
                ))
            }
        };
        let traits = match self.traits {
            None => Fields::new(),
            Some(Obj::Map(m)) => m,
            Some(Obj::Not(t)) => {
                return Err(EventError::new(
                    RejectReason::WrongType,
                    format!("`traits` must be an object, found {t}"),
                ))
            }
        };
        check_traits(&traits)?;
        if kind == EventKind::Identify && traits.is_empty() {
            return Err(EventError::new(
                RejectReason::MissingField,
                "`identify` requires a non-empty `traits` object",
            ));
        }
        let event = Event {
            event_id,
            customer_id,
            anonymous_id,
            previous_id,
            event_type,
            kind,
            timestamp,
            properties,
            traits,
        };
        check_properties(&event)?;
        Ok(event)
    }
}

/// Well-known CRM traits have fixed types (see `schemas/crm.schema.json`); `null` removes.
fn check_well_known_trait(key: &str, v: &Value<'_>) -> Result<(), EventError> {
    let ok = match (key, v) {
        (_, Value::Null) => true,
        ("company_size", Value::Int(i)) => *i >= 0,
        ("company_size", Value::Float(f)) => f.is_finite() && *f >= 0.0,
        ("company_size", _) => false,
        ("country", Value::Str(s)) => s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()),
        ("country", _) => false,
        ("email_opt_in", v) => matches!(v, Value::Bool(_)),
        ("role" | "industry" | "time_zone" | "customer_status" | "age_band", v) => {
            matches!(v, Value::Str(_))
        }
        _ => true,
    };
    if ok {
        return Ok(());
    }
    let expected = match key {
        "company_size" => "a non-negative number",
        "country" => "an ISO 3166 alpha-2 code like \"DE\"",
        "email_opt_in" => "a boolean",
        _ => "a string",
    };
    let reason = if matches!(
        (key, v),
        ("country", Value::Str(_)) | ("company_size", Value::Int(_) | Value::Float(_))
    ) {
        RejectReason::InvalidValue
    } else {
        RejectReason::WrongType
    };
    Err(EventError::new(
        reason,
        format!("trait `{key}` must be {expected}, found {}", v.type_name()),
    ))
}

fn check_properties(event: &Event<'_>) -> Result<(), EventError> {
    let kind = event.kind;
    for name in kind.required_properties() {
        if matches!(event.property(name), None | Some(Value::Null)) {
            return Err(EventError::new(
                RejectReason::MissingField,
                format!("`{}` requires `properties.{name}`", kind.name()),
            ));
        }
    }
    let known = kind.known_properties();
    // One pass over the event's properties (fewer than the documented ones, usually).
    for (name, v) in &event.properties {
        let Some((_, ty)) = known
            .iter()
            .find(|(k, _)| k.len() == name.len() && *k == name.as_ref())
        else {
            continue;
        };
        let ok = match (ty, v) {
            (_, Value::Null) => true,
            (PropType::Str, Value::Str(_)) => true,
            (PropType::Num, Value::Int(_)) => true,
            (PropType::Num, Value::Float(f)) => f.is_finite(),
            (PropType::Timestamp, v @ (Value::Str(_) | Value::Int(_))) => {
                if v.as_timestamp().is_none() {
                    return Err(EventError::new(
                        RejectReason::InvalidTimestamp,
                        format!("`properties.{name}` is not an RFC 3339 timestamp or epoch milliseconds"),
                    ));
                }
                true
            }
            _ => false,
        };
        if !ok {
            let expected = match ty {
                PropType::Str => "a string",
                PropType::Num => "a number",
                PropType::Timestamp => "a timestamp",
            };
            return Err(EventError::new(
                RejectReason::WrongType,
                format!(
                    "`properties.{name}` must be {expected}, found {}",
                    v.type_name()
                ),
            ));
        }
    }
    if let Some(m) = event.property("minutes").and_then(Value::as_f64) {
        if kind.family() == Family::Webinar && m < 0.0 {
            return Err(EventError::new(
                RejectReason::InvalidValue,
                "`properties.minutes` must not be negative",
            ));
        }
    }
    if kind == EventKind::Purchase {
        let currency = event.property("currency").and_then(Value::as_str);
        if let Some(c) = currency {
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(EventError::new(
                    RejectReason::InvalidValue,
                    format!("`properties.currency` {c:?} is not an ISO 4217 code like \"EUR\""),
                ));
            }
        }
    }
    for name in ["webinar_id", "campaign"] {
        if let Some(Value::Str(s)) = event.property(name) {
            if s.is_empty() && kind.required_properties().contains(&name) {
                return Err(EventError::new(
                    RejectReason::InvalidValue,
                    format!("`properties.{name}` must not be empty"),
                ));
            }
        }
    }
    Ok(())
}

// ---- the lenient wire form -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Wire<'a> {
    #[serde(borrow, default)]
    event_id: Option<Value<'a>>,
    #[serde(borrow, default)]
    customer_id: Option<Value<'a>>,
    #[serde(borrow, default)]
    anonymous_id: Option<Value<'a>>,
    #[serde(borrow, default)]
    previous_id: Option<Value<'a>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<Value<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Value<'a>>,
    #[serde(borrow, default)]
    properties: Option<Obj<'a>>,
    #[serde(borrow, default)]
    traits: Option<Obj<'a>>,
}

/// An object's scalar members, or the JSON type found instead of an object.
#[cfg_attr(test, derive(Debug, PartialEq))]
enum Obj<'a> {
    Map(Fields<'a>),
    Not(&'static str),
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(ValueVisitor)? {
            Value::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("object keys must be strings")),
        }
    }
}

struct ObjVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ObjVisitor<'a> {
    type Value = Obj<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Room for a typical event's properties or a CRM profile's traits, so that the
        // vector is allocated once instead of growing 0 -> 4 -> 8.
        let mut out = Fields::with_capacity(8);
        while let Some(Key(k)) = map.next_key()? {
            let v: Value<'a> = map.next_value()?;
            if out
                .iter()
                .any(|(existing, _): &(Cow<'_, str>, _)| *existing == k)
            {
                return Err(de::Error::custom(format_args!("duplicate key `{k}`")));
            }
            out.push((k, v));
        }
        Ok(Obj::Map(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Obj::Not("array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj::Not("string"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Obj::Not("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Obj::Not("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Obj::Not("number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Obj::Not("boolean"))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Obj<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_too_far_in_the_future_are_rejected_with_their_own_reason() {
        let now = 1_800_000_000_000;
        let hour = 3_600_000;
        assert!(check_not_future(now + hour, now, Some(hour)).is_ok());
        let e = check_not_future(now + hour + 1, now, Some(hour)).unwrap_err();
        assert_eq!(e.reason, RejectReason::FutureTimestamp);
        assert!(e.detail.contains("ahead of the clock"), "{}", e.detail);
        assert!(check_not_future(i64::MAX, now, None).is_ok());
        assert!(check_not_future(i64::MAX, i64::MAX, Some(hour)).is_ok());
    }

    #[test]
    fn every_reject_reason_is_listed_once_with_its_own_label() {
        // A new variant fails to compile here until it is listed in `ALL`.
        let listed = |r: RejectReason| match r {
            RejectReason::InvalidJson
            | RejectReason::NotAnObject
            | RejectReason::MissingField
            | RejectReason::WrongType
            | RejectReason::InvalidValue
            | RejectReason::InvalidTimestamp
            | RejectReason::Late
            | RejectReason::TooLarge
            | RejectReason::FutureTimestamp
            | RejectReason::LinkRefused => RejectReason::ALL.iter().filter(|x| **x == r).count(),
        };
        for r in RejectReason::ALL {
            assert_eq!(listed(*r), 1, "{r}");
        }
        let labels: std::collections::BTreeSet<&str> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }

    use super::*;

    fn ok(s: &str) -> Event<'_> {
        parse_event(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> EventError {
        parse_event(s.as_bytes()).expect_err(s)
    }

    proptest::proptest! {
        /// The byte test never says "no control character" for a string that has one.
        #[test]
        fn the_byte_test_for_control_characters_misses_none(s in "\\PC*|[\\x00-\\x{a0}]{0,8}") {
            if s.chars().any(char::is_control) {
                proptest::prop_assert!(may_hold_control(&s));
            }
        }
    }

    #[test]
    fn control_characters_of_both_ranges_are_found() {
        for c in ['\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}'] {
            assert!(may_hold_control(&format!("id{c}x")), "{c:?}");
        }
        assert!(!may_hold_control("c-117813 é ✓ d1ea10f08ba139ca"));
    }

    #[test]
    fn parses_the_contract_and_borrows() {
        let e = ok(
            r#"{"event_id":"e1","customer_id":"c1","type":"ad_click","timestamp":"2026-11-22T10:00:00Z","properties":{"campaign":"q4","extra":{"nested":[1]},"n":3}}"#,
        );
        assert_eq!(e.kind, EventKind::AdClick);
        assert!(matches!(e.customer_id, Some(Cow::Borrowed("c1"))));
        assert_eq!(e.property("campaign").and_then(Value::as_str), Some("q4"));
        assert_eq!(e.property("extra"), Some(&Value::Object));
        assert_eq!(e.property("n").and_then(Value::as_f64), Some(3.0));
        let e = ok(
            r#"{"event_id":"e2","customer_id":"c\"1","type":"trial_started","timestamp":1795341600000}"#,
        );
        assert_eq!(e.kind, EventKind::Custom);
        assert_eq!(e.customer_id.as_deref(), Some("c\"1"));
        assert_eq!(e.timestamp, 1_795_341_600_000);
    }

    #[test]
    fn rejects_with_precise_reasons() {
        use RejectReason::*;
        let cases = [
            ("not json", InvalidJson),
            ("[1,2]", NotAnObject),
            (
                r#"{"customer_id":"c","type":"click","timestamp":0}"#,
                MissingField,
            ),
            (
                r#"{"event_id":"","customer_id":"c","type":"click","timestamp":0}"#,
                InvalidValue,
            ),
            (
                r#"{"event_id":"e","customer_id":7,"type":"click","timestamp":0}"#,
                WrongType,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"click","timestamp":"yesterday"}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"click","timestamp":1.5}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"click","timestamp":"2026-11-22T10:00:00"}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"purchase","timestamp":0,"properties":{"amount":"12","currency":"EUR"}}"#,
                WrongType,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"purchase","timestamp":0,"properties":{"amount":12,"currency":"euro"}}"#,
                InvalidValue,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"purchase","timestamp":0,"properties":{"currency":"EUR"}}"#,
                MissingField,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"ad_click","timestamp":0}"#,
                MissingField,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"webinar_registered","timestamp":0,"properties":{"webinar_id":"w","ends_at":"soon"}}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"identify","timestamp":0}"#,
                MissingField,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"identify","timestamp":0,"traits":{"a":[1]}}"#,
                WrongType,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"click","timestamp":0,"properties":[]}"#,
                WrongType,
            ),
            (
                r#"{"event_id":"e","customer_id":"c","type":"bad type!","timestamp":0}"#,
                InvalidValue,
            ),
            (
                r#"{"event_id":"e","event_id":"f","customer_id":"c","type":"click","timestamp":0}"#,
                InvalidValue,
            ),
        ];
        for (input, reason) in cases {
            let e = err(input);
            assert_eq!(e.reason, reason, "{input}: {e}");
            assert!(!e.detail.is_empty());
        }
    }
}
