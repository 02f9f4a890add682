//! The Segment Spec as a second input format: the messages analytics pipelines (Twilio
//! Segment, RudderStack, Jitsu and others) put on Kafka, mapped onto the same [`Event`] as
//! segstream's own contract, with the same rules and the same [`RejectReason`]s.
//!
//! | Segment | segstream |
//! |---|---|
//! | `messageId` | `event_id` |
//! | `userId` / `anonymousId` (`""` counts as absent) | `customer_id` / `anonymous_id` |
//! | `timestamp`, else `originalTimestamp` (corrected by `receivedAt − sentAt` when both are there), else `receivedAt`, else `sentAt` | `timestamp` |
//! | `track` | the `event` name in snake_case ([`normalize_event_name`]); the semantic events of [`SEMANTIC_EVENTS`] become segstream's own types |
//! | `page` | `page_view`; `url` from `properties.url`, `context.page.url`, else the path; `name`, `category`, `context.page.*` and `context.campaign.*` (as `utm_*`) fill in missing properties |
//! | `screen` | [`SCREEN_TYPE`] (`screen_view`), `name` and `category` as properties |
//! | `identify` | `identify` with `traits` and `context.traits` (flattened: `company.name`); without traits but with both ids, an `alias` |
//! | `alias` | `alias`, `previousId` → `previous_id` |
//! | `group` | [`GROUP_TYPE`] (`group`), the group's traits and `group_id` as properties |
//!
//! `docs/events.md` has the whole table and the reasons; `schemas/segment-spec.schema.json`
//! is the machine-readable form.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    check_properties, check_traits, deserialize_object, optional_id, required_str, timestamp_field,
    Event, EventError, EventKind, Family, Fields, Key, Obj, RejectReason, Value, ValueVisitor,
    MAX_ID_LEN, MAX_TIMESTAMP_MS, MAX_TYPE_LEN,
};
use crate::time::Millis;

/// The segstream type of a `screen` call (the app's equivalent of a page view; not a
/// `page_view`, which is about web pages and needs a URL).
pub const SCREEN_TYPE: &str = "screen_view";

/// The segstream type of a `group` call: a custom event carrying the group's traits as
/// properties (they describe the account, not the person, so they do not become traits).
pub const GROUP_TYPE: &str = "group";

/// Segment's semantic `track` events that mean what a segstream type means: (name in the
/// Segment Spec, the name normalised, the segstream type). Any spelling that normalises
/// to the same name maps the same way (`Order Completed`, `order_completed`,
/// `orderCompleted`).
pub const SEMANTIC_EVENTS: &[(&str, &str, EventKind)] = &[
    ("Order Completed", "order_completed", EventKind::Purchase),
    ("Email Delivered", "email_delivered", EventKind::EmailSent),
    ("Email Opened", "email_opened", EventKind::EmailOpen),
    (
        "Email Link Clicked",
        "email_link_clicked",
        EventKind::EmailClick,
    ),
    ("Email Bounced", "email_bounced", EventKind::EmailBounce),
    ("Unsubscribed", "unsubscribed", EventKind::Unsubscribe),
];

/// The Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    const ALL: [Call; 6] = [
        Call::Track,
        Call::Identify,
        Call::Page,
        Call::Screen,
        Call::Group,
        Call::Alias,
    ];

    fn name(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }
}

/// Parses and validates one message of the Segment Spec into an [`Event`].
pub fn parse_segment_event(input: &[u8]) -> Result<Event<'_>, EventError> {
    let wire: Wire<'_> = deserialize_object(input)?;
    wire.validate()
}

/// An event name as a segstream type: snake_case of its ASCII letters and digits. Every
/// other character (spaces, punctuation, `_ . : -`, non-ASCII letters) separates words, as
/// does a camelCase boundary (`orderCompleted`, `HTMLExport` → `html_export`); runs of
/// separators become one `_`, leading and trailing ones vanish. `Order Completed`,
/// `order_completed`, `orderCompleted` and `ORDER COMPLETED` all become `order_completed`.
/// Borrows when the name is already in that form; empty if it has no ASCII letter or digit.
pub fn normalize_event_name(name: &str) -> Cow<'_, str> {
    let b = name.as_bytes();
    let already = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && b[0] != b'_'
        && b[b.len() - 1] != b'_'
        && !name.contains("__");
    if already {
        return Cow::Borrowed(name);
    }
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len());
    let mut separate = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            separate = true;
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                separate = true;
            }
        }
        if separate && !out.is_empty() {
            out.push('_');
        }
        separate = false;
        out.push(c.to_ascii_lowercase());
    }
    Cow::Owned(out)
}

// ---- validation ------------------------------------------------------------------------

impl<'a> Wire<'a> {
    fn validate(self) -> Result<Event<'a>, EventError> {
        let call = match self.call {
            None | Some(Value::Null) => {
                let hint = if self.batch.is_some() {
                    "; this looks like a batch (`batch`): put each call in a message of its own"
                } else {
                    ""
                };
                return Err(EventError::new(
                    RejectReason::MissingField,
                    format!("`type` is required (track, identify, page, screen, group or alias){hint}"),
                ));
            }
            Some(Value::Str(s)) => match Call::ALL.into_iter().find(|c| c.name() == s) {
                Some(c) => c,
                None => {
                    return Err(EventError::new(
                        RejectReason::InvalidValue,
                        format!(
                            "`type` {s:?} is not a Segment call: expected track, identify, page, screen, group or alias"
                        ),
                    ))
                }
            },
            Some(other) => {
                return Err(EventError::new(
                    RejectReason::WrongType,
                    format!("`type` must be a string, found {}", other.type_name()),
                ))
            }
        };
        let event_id = required_str("messageId", self.message_id, MAX_ID_LEN)?;
        let customer_id = segment_id("userId", self.user_id)?;
        let anonymous_id = segment_id("anonymousId", self.anonymous_id)?;
        if customer_id.is_none() && anonymous_id.is_none() {
            return Err(EventError::new(
                RejectReason::MissingField,
                "`userId` or `anonymousId` is required",
            ));
        }
        let timestamp = event_time(
            self.timestamp,
            self.original_timestamp,
            self.sent_at,
            self.received_at,
        )?;
        let context = match self.context {
            None => Context::default(),
            Some(Ctx::Map(c)) => c,
            Some(Ctx::Not(t)) => return Err(not_an_object("context", t)),
        };
        let page = object_or_empty("context.page", context.page)?;
        let campaign = object_or_empty("context.campaign", context.campaign)?;
        let context_traits = traits_or_empty("context.traits", context.traits)?;
        let traits = traits_or_empty("traits", self.traits)?;
        let (mut properties, first_product) = match self.properties {
            None => (Fields::new(), Fields::new()),
            Some(Props::Map {
                fields,
                first_product,
            }) => (fields, first_product),
            Some(Props::Not(t)) => return Err(not_an_object("properties", t)),
        };

        let mut event_traits = Fields::new();
        let mut previous_id = None;
        let (event_type, kind): (Cow<'a, str>, EventKind) = match call {
            Call::Track => {
                let name = match self.event {
                    None | Some(Value::Null) => {
                        return Err(EventError::new(
                            RejectReason::MissingField,
                            "`track` requires `event`, the name of the action",
                        ))
                    }
                    Some(Value::Str(s)) => s,
                    Some(other) => {
                        return Err(EventError::new(
                            RejectReason::WrongType,
                            format!("`event` must be a string, found {}", other.type_name()),
                        ))
                    }
                };
                let (event_type, kind) = track_type(&name)?;
                match kind.family() {
                    Family::Purchase => map_purchase(&name, &mut properties, &first_product)?,
                    Family::Email => map_email(&mut properties),
                    _ => {}
                }
                (event_type, kind)
            }
            Call::Page => {
                fill_strings(
                    &mut properties,
                    [("name", self.name), ("category", self.category)],
                );
                for key in ["url", "title", "referrer", "path", "search"] {
                    if let Some(v) = string(&page, key) {
                        fill(&mut properties, key, v);
                    }
                }
                if get(&properties, "url").is_none() {
                    match string(&properties, "path") {
                        Some(path) => fill(&mut properties, "url", path),
                        None => {
                            return Err(EventError::new(
                                RejectReason::MissingField,
                                "`page` needs a URL: `properties.url`, `context.page.url`, or a path (`properties.path`, `context.page.path`)",
                            ))
                        }
                    }
                }
                for (from, to) in [
                    ("source", "utm_source"),
                    ("medium", "utm_medium"),
                    ("name", "utm_campaign"),
                    ("content", "utm_content"),
                    ("term", "utm_term"),
                ] {
                    if let Some(v) = string(&campaign, from) {
                        fill(&mut properties, to, v);
                    }
                }
                (
                    Cow::Borrowed(EventKind::PageView.name()),
                    EventKind::PageView,
                )
            }
            Call::Screen => {
                fill_strings(
                    &mut properties,
                    [("name", self.name), ("category", self.category)],
                );
                (Cow::Borrowed(SCREEN_TYPE), EventKind::Custom)
            }
            Call::Group => {
                let group_id = required_str("groupId", self.group_id, MAX_ID_LEN)?;
                // The group's traits describe the account: they are the event's properties.
                properties = traits;
                fill(&mut properties, "group_id", Value::Str(group_id));
                (Cow::Borrowed(GROUP_TYPE), EventKind::Custom)
            }
            Call::Identify => {
                event_traits = traits;
                for (k, v) in context_traits {
                    if !event_traits.iter().any(|(e, _)| *e == k) {
                        event_traits.push((k, v));
                    }
                }
                if !event_traits.is_empty() {
                    (
                        Cow::Borrowed(EventKind::Identify.name()),
                        EventKind::Identify,
                    )
                } else {
                    match (&customer_id, &anonymous_id) {
                        // Nothing but the link between the two ids: that is an alias.
                        (Some(c), Some(a)) if c != a => {
                            previous_id = Some(a.clone());
                            (Cow::Borrowed(EventKind::Alias.name()), EventKind::Alias)
                        }
                        _ => {
                            return Err(EventError::new(
                                RejectReason::MissingField,
                                "`identify` has no traits (`traits`, `context.traits`) and no `userId` and `anonymousId` to link: nothing to apply",
                            ))
                        }
                    }
                }
            }
            Call::Alias => {
                let previous = optional_id("previousId", self.previous_id)?.ok_or_else(|| {
                    EventError::new(
                        RejectReason::MissingField,
                        "`alias` requires `previousId`, the id that joins the person of `userId`",
                    )
                })?;
                let (field, target) = match (&customer_id, &anonymous_id) {
                    (Some(c), _) => ("userId", c),
                    (None, Some(a)) => ("anonymousId", a),
                    (None, None) => unreachable!("checked above"),
                };
                if *target == previous {
                    return Err(EventError::new(
                        RejectReason::InvalidValue,
                        format!(
                            "`previousId` must differ from `{field}`, the id it is an alias of"
                        ),
                    ));
                }
                previous_id = Some(previous);
                (Cow::Borrowed(EventKind::Alias.name()), EventKind::Alias)
            }
        };
        check_traits(&event_traits)?;
        let event = Event {
            event_id,
            customer_id,
            anonymous_id,
            previous_id,
            event_type,
            kind,
            timestamp,
            properties,
            traits: event_traits,
        };
        check_properties(&event)?;
        Ok(event)
    }
}

/// `userId` or `anonymousId`: absent, `null` or `""` is none (SDKs send `""` for a user
/// not known yet); otherwise the id rules of the native contract.
fn segment_id<'a>(field: &str, v: Option<Value<'a>>) -> Result<Option<Cow<'a, str>>, EventError> {
    match v {
        Some(Value::Str(s)) if s.is_empty() => Ok(None),
        v => optional_id(field, v),
    }
}

/// The event time: `timestamp` (Segment's own clock-skew-corrected time); else
/// `originalTimestamp` (the device's clock), shifted by `receivedAt − sentAt` when both are
/// there (Segment's correction for a device clock that is off); else `receivedAt` (the
/// collector's clock); else `sentAt`. Every one present must be a valid timestamp.
fn event_time(
    timestamp: Option<Value<'_>>,
    original: Option<Value<'_>>,
    sent: Option<Value<'_>>,
    received: Option<Value<'_>>,
) -> Result<Millis, EventError> {
    let read = |field: &str, v: Option<Value<'_>>| match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => timestamp_field(field, v).map(Some),
    };
    let timestamp = read("timestamp", timestamp)?;
    let original = read("originalTimestamp", original)?;
    let sent = read("sentAt", sent)?;
    let received = read("receivedAt", received)?;
    if let Some(t) = timestamp {
        return Ok(t);
    }
    if let Some(o) = original {
        return match (sent, received) {
            (Some(s), Some(r)) => {
                let t = r - (s - o);
                if (0..=MAX_TIMESTAMP_MS).contains(&t) {
                    Ok(t)
                } else {
                    Err(EventError::new(
                        RejectReason::InvalidTimestamp,
                        "`originalTimestamp` corrected by `receivedAt - sentAt` is outside 1970-01-01..2106-02-07",
                    ))
                }
            }
            _ => Ok(o),
        };
    }
    received.or(sent).ok_or_else(|| {
        EventError::new(
            RejectReason::MissingField,
            "a time is required: `timestamp`, `originalTimestamp`, `receivedAt` or `sentAt`",
        )
    })
}

/// The segstream type of a `track` call's `event` name.
fn track_type<'a>(name: &Cow<'a, str>) -> Result<(Cow<'a, str>, EventKind), EventError> {
    let normalised = match name {
        Cow::Borrowed(s) => normalize_event_name(s),
        Cow::Owned(s) => Cow::Owned(normalize_event_name(s).into_owned()),
    };
    if normalised.is_empty() {
        return Err(EventError::new(
            RejectReason::InvalidValue,
            format!("`event` {name:?} has no ASCII letter or digit to make a type of"),
        ));
    }
    if normalised.len() > MAX_TYPE_LEN {
        return Err(EventError::new(
            RejectReason::InvalidValue,
            format!(
                "`event` {name:?} makes a type of {} characters (`{normalised}`); at most {MAX_TYPE_LEN}",
                normalised.len()
            ),
        ));
    }
    if let Some((_, _, kind)) = SEMANTIC_EVENTS.iter().find(|(_, n, _)| *n == normalised) {
        return Ok((Cow::Borrowed(kind.name()), *kind));
    }
    let kind = EventKind::from_type(&normalised);
    if matches!(
        kind,
        EventKind::Identify | EventKind::Alias | EventKind::Forget
    ) {
        // Segment has calls of its own for traits and links; and a `forget` (deleting a
        // profile) must not come from a client-side tracking call, where anyone can set
        // any `userId`.
        return Err(EventError::new(
            RejectReason::InvalidValue,
            format!(
                "`event` {name:?} would be segstream's `{}`, which a `track` call may not send (use an `identify` or `alias` call; a `forget` comes in segstream's own format)",
                kind.name()
            ),
        ));
    }
    Ok((normalised, kind))
}

/// `Order Completed` (or any `track` that is a `purchase`): the order total becomes
/// `amount` (`amount`, else `total`, else `revenue`), a currency in lower case is upper-cased,
/// `coupon` becomes `discount_code`, the first of `products` gives `product` and `category`.
fn map_purchase<'a>(
    name: &str,
    props: &mut Fields<'a>,
    first_product: &Fields<'a>,
) -> Result<(), EventError> {
    if get(props, "amount").is_none() {
        let source = ["total", "revenue"]
            .into_iter()
            .find_map(|k| get(props, k).map(|v| (k, v.clone())));
        match source {
            Some((_, v @ (Value::Int(_) | Value::Float(_)))) => fill(props, "amount", v),
            Some((k, v)) => {
                return Err(EventError::new(
                    RejectReason::WrongType,
                    format!(
                        "`properties.{k}` must be a number (it is the purchase `amount`), found {}",
                        v.type_name()
                    ),
                ))
            }
            None => {
                return Err(EventError::new(
                    RejectReason::MissingField,
                    format!("`{name}` is a `purchase`: it needs the order total in `properties.total` or `properties.revenue`"),
                ))
            }
        }
    }
    if let Some((_, Value::Str(c))) = props.iter_mut().find(|(k, _)| k == "currency") {
        if c.len() == 3
            && c.bytes().all(|b| b.is_ascii_alphabetic())
            && !c.bytes().all(|b| b.is_ascii_uppercase())
        {
            *c = Cow::Owned(c.to_ascii_uppercase());
        }
    }
    if let Some(v) = string(props, "coupon") {
        fill(props, "discount_code", v);
    }
    if let Some(v) = ["name", "product_id", "sku"]
        .into_iter()
        .find_map(|k| string(first_product, k))
    {
        fill(props, "product", v);
    }
    if let Some(v) = string(first_product, "category") {
        fill(props, "category", v);
    }
    Ok(())
}

/// The Segment email spec's properties under segstream's names: `campaign_id` (else
/// `campaign_name`) → `campaign`, `email_id` → `message_id`, `list_id` (else `list_name`)
/// → `list`, `link_url` → `url`.
fn map_email(props: &mut Fields<'_>) {
    for (to, from) in [
        ("campaign", &["campaign_id", "campaign_name"][..]),
        ("message_id", &["email_id"][..]),
        ("list", &["list_id", "list_name"][..]),
        ("url", &["link_url"][..]),
    ] {
        if let Some(v) = from.iter().find_map(|k| string(props, k)) {
            fill(props, to, v);
        }
    }
}

/// The non-null value of `key`.
fn get<'f, 'a>(fields: &'f Fields<'a>, key: &str) -> Option<&'f Value<'a>> {
    fields
        .iter()
        .find(|(k, v)| k == key && *v != Value::Null)
        .map(|(_, v)| v)
}

/// The value of `key` if it is a string.
fn string<'a>(fields: &Fields<'a>, key: &str) -> Option<Value<'a>> {
    get(fields, key)
        .filter(|v| matches!(v, Value::Str(_)))
        .cloned()
}

/// Sets `key` unless the properties already have a non-null value for it.
fn fill<'a>(props: &mut Fields<'a>, key: &'static str, value: Value<'a>) {
    match props.iter_mut().find(|(k, _)| k == key) {
        Some((_, v @ Value::Null)) => *v = value,
        Some(_) => {}
        None => props.push((Cow::Borrowed(key), value)),
    }
}

/// Top-level fields (`name`, `category`) that fill in properties when they are strings.
fn fill_strings<'a, const N: usize>(
    props: &mut Fields<'a>,
    fields: [(&'static str, Option<Value<'a>>); N],
) {
    for (key, v) in fields {
        if let Some(v @ Value::Str(_)) = v {
            fill(props, key, v);
        }
    }
}

fn not_an_object(field: &str, found: &str) -> EventError {
    EventError::new(
        RejectReason::WrongType,
        format!("`{field}` must be an object, found {found}"),
    )
}

fn object_or_empty<'a>(field: &str, o: Option<Obj<'a>>) -> Result<Fields<'a>, EventError> {
    match o {
        None => Ok(Fields::new()),
        Some(Obj::Map(m)) => Ok(m),
        Some(Obj::Not(t)) => Err(not_an_object(field, t)),
    }
}

fn traits_or_empty<'a>(field: &str, t: Option<Traits<'a>>) -> Result<Fields<'a>, EventError> {
    match t {
        None => Ok(Fields::new()),
        Some(Traits::Map(m)) => Ok(m),
        Some(Traits::Not(t)) => Err(not_an_object(field, t)),
    }
}

// ---- the lenient wire form -------------------------------------------------------------

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default, rename = "type")]
    call: Option<Value<'a>>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<Value<'a>>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<Value<'a>>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<Value<'a>>,
    #[serde(borrow, default, rename = "previousId")]
    previous_id: Option<Value<'a>>,
    #[serde(borrow, default, rename = "groupId")]
    group_id: Option<Value<'a>>,
    #[serde(borrow, default)]
    event: Option<Value<'a>>,
    #[serde(borrow, default)]
    name: Option<Value<'a>>,
    #[serde(borrow, default)]
    category: Option<Value<'a>>,
    #[serde(borrow, default)]
    properties: Option<Props<'a>>,
    #[serde(borrow, default)]
    traits: Option<Traits<'a>>,
    #[serde(borrow, default)]
    context: Option<Ctx<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Value<'a>>,
    #[serde(borrow, default, rename = "originalTimestamp")]
    original_timestamp: Option<Value<'a>>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Option<Value<'a>>,
    #[serde(borrow, default, rename = "receivedAt")]
    received_at: Option<Value<'a>>,
    #[serde(default)]
    batch: Option<IgnoredAny>,
}

/// The parts of `context` segstream reads; the rest is skipped.
#[derive(Deserialize, Default)]
struct Context<'a> {
    #[serde(borrow, default)]
    page: Option<Obj<'a>>,
    #[serde(borrow, default)]
    campaign: Option<Obj<'a>>,
    #[serde(borrow, default)]
    traits: Option<Traits<'a>>,
}

/// `context`, or the JSON type found instead of an object.
enum Ctx<'a> {
    Map(Context<'a>),
    Not(&'static str),
}

/// `properties`' members (scalars, arrays and objects as markers, like the native
/// contract), with the scalar members of the first of `products`; or the JSON type found
/// instead of an object.
enum Props<'a> {
    Map {
        fields: Fields<'a>,
        first_product: Fields<'a>,
    },
    Not(&'static str),
}

/// Traits, flattened: a nested object's members are traits named `outer.inner`; arrays
/// are left out (a trait is one value). Or the JSON type found instead of an object.
enum Traits<'a> {
    Map(Fields<'a>),
    Not(&'static str),
}

/// The `visit_*` methods of a visitor that expects an object, for every other JSON type:
/// `$not("type")`. (`null` never gets here: the fields are `Option`s.)
macro_rules! not_an_object_visits {
    ($not:path) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($not("array"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($not("string"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($not("number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($not("number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($not("number"))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($not("boolean"))
        }
    };
}

struct CtxVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for CtxVisitor<'a> {
    type Value = Ctx<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Context::deserialize(de::value::MapAccessDeserializer::new(map)).map(Ctx::Map)
    }
    not_an_object_visits!(Ctx::Not);
}

impl<'de: 'a, 'a> Deserialize<'de> for Ctx<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CtxVisitor(PhantomData))
    }
}

struct PropsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PropsVisitor<'a> {
    type Value = Props<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::new();
        let mut first_product = Fields::new();
        while let Some(Key(k)) = map.next_key()? {
            let v = if k == "products" {
                let (v, first) = map.next_value_seed(ProductsSeed(PhantomData))?;
                first_product = first;
                v
            } else {
                map.next_value()?
            };
            if fields.iter().any(|(existing, _)| *existing == k) {
                return Err(de::Error::custom(format_args!("duplicate key `{k}`")));
            }
            fields.push((k, v));
        }
        Ok(Props::Map {
            fields,
            first_product,
        })
    }
    not_an_object_visits!(Props::Not);
}

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PropsVisitor(PhantomData))
    }
}

/// `properties.products`: its value (an array marker, or whatever else it is) and the
/// scalar members of its first element.
struct ProductsSeed<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for ProductsSeed<'a> {
    type Value = (Value<'a>, Fields<'a>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for ProductsSeed<'a> {
    type Value = (Value<'a>, Fields<'a>);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = match seq.next_element::<Option<Obj<'a>>>()? {
            Some(Some(Obj::Map(m))) => m,
            _ => Fields::new(),
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((Value::Array, first))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ValueVisitor.visit_map(map).map(|v| (v, Fields::new()))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok((Value::Str(Cow::Borrowed(v)), Fields::new()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((Value::Str(Cow::Owned(v.to_owned())), Fields::new()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        ValueVisitor.visit_i64(v).map(|v| (v, Fields::new()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        ValueVisitor.visit_u64(v).map(|v| (v, Fields::new()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok((Value::Float(v), Fields::new()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok((Value::Bool(v), Fields::new()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((Value::Null, Fields::new()))
    }
}

struct TraitsVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for TraitsVisitor<'a> {
    type Value = Traits<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Fields::new();
        while let Some(Key(name)) = map.next_key()? {
            map.next_value_seed(FlatTrait {
                name,
                out: &mut out,
            })?;
        }
        Ok(Traits::Map(out))
    }
    not_an_object_visits!(Traits::Not);
}

impl<'de: 'a, 'a> Deserialize<'de> for Traits<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TraitsVisitor(PhantomData))
    }
}

/// One trait value, added to `out` under `name`: a scalar as it is, an object's members as
/// `name.member`, an array not at all.
struct FlatTrait<'o, 'a> {
    name: Cow<'a, str>,
    out: &'o mut Fields<'a>,
}

impl<'a> FlatTrait<'_, 'a> {
    fn push<E: de::Error>(self, v: Value<'a>) -> Result<(), E> {
        if self.out.iter().any(|(k, _)| *k == self.name) {
            return Err(E::custom(format_args!("duplicate trait `{}`", self.name)));
        }
        self.out.push((self.name, v));
        Ok(())
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for FlatTrait<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for FlatTrait<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(Key(member)) = map.next_key()? {
            map.next_value_seed(FlatTrait {
                name: Cow::Owned(format!("{}.{member}", self.name)),
                out: &mut *out,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.push(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let v = ValueVisitor.visit_u64::<E>(v)?;
        self.push(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Value::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Value::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a test input (leaked: the event borrows from it).
    fn ok(s: impl Into<String>) -> Event<'static> {
        let s: &'static str = Box::leak(s.into().into_boxed_str());
        parse_segment_event(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> EventError {
        parse_segment_event(s.as_bytes()).expect_err(s)
    }
    fn prop<'e>(e: &'e Event<'_>, name: &str) -> Option<&'e str> {
        e.property(name).and_then(Value::as_str)
    }

    const TS: &str = r#""timestamp":"2026-11-16T09:12:00Z""#;

    #[test]
    fn track_maps_ids_time_and_a_normalised_name_and_borrows() {
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m-1","userId":"u-1","anonymousId":"a-1","event":"Trial Started",{TS},"properties":{{"plan":"pro","seats":5}}}}"#
        ));
        assert!(matches!(e.event_id, Cow::Borrowed("m-1")));
        assert!(matches!(e.customer_id, Some(Cow::Borrowed("u-1"))));
        assert_eq!(e.anonymous_id.as_deref(), Some("a-1"));
        assert_eq!(e.linked_id(), Some("a-1"));
        assert_eq!(e.event_type, "trial_started");
        assert_eq!(e.kind, EventKind::Custom);
        assert_eq!(e.timestamp, 1_794_820_320_000);
        assert_eq!(prop(&e, "plan"), Some("pro"));
        assert!(e.traits.is_empty());
        // A name already in snake_case is borrowed.
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","anonymousId":"a","event":"trial_started",{TS}}}"#
        ));
        assert!(matches!(e.event_type, Cow::Borrowed("trial_started")));
        assert_eq!(e.customer_id, None);
        assert_eq!(e.subject(), "a");
    }

    #[test]
    fn event_names_become_snake_case_types() {
        for (name, want) in [
            ("Order Completed", "order_completed"),
            ("order_completed", "order_completed"),
            ("orderCompleted", "order_completed"),
            ("OrderCompleted", "order_completed"),
            ("ORDER COMPLETED", "order_completed"),
            ("  Signed Up!  ", "signed_up"),
            ("Checkout Step 2 - Viewed", "checkout_step_2_viewed"),
            ("shop:cart.abandoned-2", "shop_cart_abandoned_2"),
            ("HTMLExport Done", "html_export_done"),
            ("step2Done", "step2_done"),
            ("Bestellung abgeschloßen", "bestellung_abgeschlo_en"),
            ("__x__", "x"),
            ("???", ""),
        ] {
            assert_eq!(normalize_event_name(name), want, "{name:?}");
        }
        for (spec, normalised, _) in SEMANTIC_EVENTS {
            assert_eq!(normalize_event_name(spec), *normalised);
        }
    }

    #[test]
    fn order_completed_is_a_purchase() {
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"Order Completed",{TS},
            "properties":{{"order_id":"o-1","total":27.5,"revenue":25,"currency":"eur","coupon":"WEBINAR20",
            "products":[{{"product_id":"p-1","name":"Monopoly","category":"Games","price":19}},{{"name":"Uno"}}]}}}}"#
        ));
        assert_eq!(e.kind, EventKind::Purchase);
        assert_eq!(e.event_type, "purchase");
        assert_eq!(e.property("amount").and_then(Value::as_f64), Some(27.5));
        assert_eq!(prop(&e, "currency"), Some("EUR"));
        assert_eq!(prop(&e, "discount_code"), Some("WEBINAR20"));
        assert_eq!(prop(&e, "product"), Some("Monopoly"));
        assert_eq!(prop(&e, "category"), Some("Games"));
        assert_eq!(prop(&e, "order_id"), Some("o-1"));
        assert_eq!(e.property("products"), Some(&Value::Array));
        // revenue when there is no total; an explicit amount wins; any spelling.
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"orderCompleted",{TS},"properties":{{"revenue":25,"currency":"USD"}}}}"#
        ));
        assert_eq!(e.property("amount").and_then(Value::as_f64), Some(25.0));
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"purchase",{TS},"properties":{{"amount":3,"total":9,"currency":"CHF"}}}}"#
        ));
        assert_eq!(e.property("amount").and_then(Value::as_f64), Some(3.0));
    }

    #[test]
    fn email_events_map_to_the_email_family() {
        for (name, kind) in [
            ("Email Delivered", EventKind::EmailSent),
            ("Email Opened", EventKind::EmailOpen),
            ("Email Link Clicked", EventKind::EmailClick),
            ("Email Bounced", EventKind::EmailBounce),
            ("Unsubscribed", EventKind::Unsubscribe),
        ] {
            let e = ok(format!(
                r#"{{"type":"track","messageId":"m","userId":"u","event":"{name}",{TS},
                "properties":{{"email_id":"18vzF7u3z","campaign_id":"123","campaign_name":"New","link_url":"https://x.test/a","list_id":"1425"}}}}"#
            ));
            assert_eq!(e.kind, kind, "{name}");
            assert_eq!(e.event_type, kind.name());
            assert_eq!(prop(&e, "campaign"), Some("123"));
            assert_eq!(prop(&e, "message_id"), Some("18vzF7u3z"));
            assert_eq!(prop(&e, "list"), Some("1425"));
            assert_eq!(prop(&e, "url"), Some("https://x.test/a"));
        }
        // A name that only looks like one stays custom.
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"Email Marked as Spam",{TS}}}"#
        ));
        assert_eq!(e.kind, EventKind::Custom);
        assert_eq!(e.event_type, "email_marked_as_spam");
    }

    #[test]
    fn a_track_with_a_segstream_type_name_follows_that_types_rules() {
        let e = ok(format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"Webinar Registered",{TS},"properties":{{"webinar_id":"W-1"}}}}"#
        ));
        assert_eq!(e.kind, EventKind::WebinarRegistered);
        let e = err(&format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"Webinar Registered",{TS}}}"#
        ));
        assert_eq!(e.reason, RejectReason::MissingField, "{e}");
        assert!(e.detail.contains("webinar_id"), "{e}");
    }

    #[test]
    fn page_is_a_page_view_with_its_url_and_context() {
        let e = ok(format!(
            r#"{{"type":"page","messageId":"m","anonymousId":"a","name":"Pricing","category":"Docs",{TS},
            "properties":{{"title":"Pricing | segstream"}},
            "context":{{"page":{{"url":"https://segstream.dev/pricing","path":"/pricing","referrer":"https://www.google.com/","title":"ignored: properties win","search":"?q=1"}},
            "campaign":{{"name":"webinar-q4-ads","source":"linkedin","medium":"paid_social","term":7}},"ip":"8.8.8.8"}}}}"#
        ));
        assert_eq!(e.kind, EventKind::PageView);
        assert_eq!(e.event_type, "page_view");
        assert_eq!(prop(&e, "url"), Some("https://segstream.dev/pricing"));
        assert_eq!(prop(&e, "title"), Some("Pricing | segstream"));
        assert_eq!(prop(&e, "path"), Some("/pricing"));
        assert_eq!(prop(&e, "referrer"), Some("https://www.google.com/"));
        assert_eq!(prop(&e, "search"), Some("?q=1"));
        assert_eq!(prop(&e, "name"), Some("Pricing"));
        assert_eq!(prop(&e, "category"), Some("Docs"));
        assert_eq!(prop(&e, "utm_campaign"), Some("webinar-q4-ads"));
        assert_eq!(prop(&e, "utm_source"), Some("linkedin"));
        assert_eq!(prop(&e, "utm_medium"), Some("paid_social"));
        assert_eq!(e.property("utm_term"), None, "only strings are copied");
        // properties.url wins over the context; a path stands in for a missing URL.
        let e = ok(format!(
            r#"{{"type":"page","messageId":"m","anonymousId":"a",{TS},"properties":{{"url":"/a"}},"context":{{"page":{{"url":"/b"}}}}}}"#
        ));
        assert_eq!(prop(&e, "url"), Some("/a"));
        let e = ok(format!(
            r#"{{"type":"page","messageId":"m","anonymousId":"a",{TS},"properties":{{"path":"/docs","url":null}}}}"#
        ));
        assert_eq!(prop(&e, "url"), Some("/docs"));
        // No URL and no path: rejected, as a page_view without url is.
        let e = err(&format!(
            r#"{{"type":"page","messageId":"m","anonymousId":"a","name":"Home",{TS}}}"#
        ));
        assert_eq!(e.reason, RejectReason::MissingField);
        assert!(e.detail.contains("context.page.url"), "{e}");
    }

    #[test]
    fn screen_and_group_are_custom_events() {
        let e = ok(format!(
            r#"{{"type":"screen","messageId":"m","userId":"u","name":"Home",{TS},"properties":{{"feed":"private"}}}}"#
        ));
        assert_eq!(e.event_type, SCREEN_TYPE);
        assert_eq!(e.kind, EventKind::Custom);
        assert_eq!(prop(&e, "name"), Some("Home"));
        let e = ok(format!(
            r#"{{"type":"group","messageId":"m","userId":"u","groupId":"acme",{TS},"traits":{{"name":"Acme","industry":"software","employees":120,"address":{{"city":"Berlin"}}}}}}"#
        ));
        assert_eq!(e.event_type, GROUP_TYPE);
        assert_eq!(e.kind, EventKind::Custom);
        assert_eq!(prop(&e, "group_id"), Some("acme"));
        assert_eq!(prop(&e, "industry"), Some("software"));
        assert_eq!(prop(&e, "address.city"), Some("Berlin"));
        assert!(e.traits.is_empty(), "group traits are not the person's");
        let e = err(&format!(
            r#"{{"type":"group","messageId":"m","userId":"u",{TS}}}"#
        ));
        assert_eq!(e.reason, RejectReason::MissingField);
        assert!(e.detail.contains("groupId"), "{e}");
    }

    #[test]
    fn identify_carries_flattened_traits_and_context_traits() {
        let e = ok(format!(
            r#"{{"type":"identify","messageId":"m","userId":"u","anonymousId":"a",{TS},
            "traits":{{"role":"ceo","company":{{"name":"Acme","employee_count":120}},"tags":["a","b"],"plan":null}},
            "context":{{"traits":{{"role":"ignored: traits win","country":"DE"}}}}}}"#
        ));
        assert_eq!(e.kind, EventKind::Identify);
        let traits: Vec<(&str, &Value<'_>)> = e.traits.iter().map(|(k, v)| (&**k, v)).collect();
        assert_eq!(
            traits,
            [
                ("role", &Value::Str("ceo".into())),
                ("company.name", &Value::Str("Acme".into())),
                ("company.employee_count", &Value::Int(120)),
                ("plan", &Value::Null),
                ("country", &Value::Str("DE".into())),
            ]
        );
        assert_eq!(e.linked_id(), Some("a"));
        // RudderStack puts identify traits in context.traits only.
        let e = ok(format!(
            r#"{{"type":"identify","messageId":"m","userId":"u",{TS},"context":{{"traits":{{"email_opt_in":true}}}}}}"#
        ));
        assert_eq!(e.traits.len(), 1);
        // Well-known traits keep their types.
        let e = err(&format!(
            r#"{{"type":"identify","messageId":"m","userId":"u",{TS},"traits":{{"country":"Germany"}}}}"#
        ));
        assert_eq!(e.reason, RejectReason::InvalidValue);
    }

    #[test]
    fn identify_without_traits_links_or_is_rejected() {
        let e = ok(format!(
            r#"{{"type":"identify","messageId":"m","userId":"u","anonymousId":"a",{TS}}}"#
        ));
        assert_eq!(e.kind, EventKind::Alias);
        assert_eq!(e.event_type, "alias");
        assert_eq!(e.previous_id.as_deref(), Some("a"));
        assert_eq!(e.subject(), "u");
        assert_eq!(e.linked_id(), Some("a"));
        for input in [
            format!(r#"{{"type":"identify","messageId":"m","userId":"u",{TS},"traits":{{}}}}"#),
            format!(
                r#"{{"type":"identify","messageId":"m","userId":"u",{TS},"traits":{{"tags":[1]}}}}"#
            ),
            format!(r#"{{"type":"identify","messageId":"m","userId":"u","anonymousId":"u",{TS}}}"#),
        ] {
            let e = err(&input);
            assert_eq!(e.reason, RejectReason::MissingField, "{input}: {e}");
            assert!(e.detail.contains("nothing to apply"), "{e}");
        }
    }

    #[test]
    fn alias_carries_the_previous_id() {
        let e = ok(format!(
            r#"{{"type":"alias","messageId":"m","userId":"u-new","previousId":"u-old",{TS}}}"#
        ));
        assert_eq!(e.kind, EventKind::Alias);
        assert_eq!(e.previous_id.as_deref(), Some("u-old"));
        assert_eq!(e.linked_id(), Some("u-old"));
        let e = ok(format!(
            r#"{{"type":"alias","messageId":"m","anonymousId":"a","previousId":"d-1",{TS}}}"#
        ));
        assert_eq!(e.subject(), "a");
        let e = err(&format!(
            r#"{{"type":"alias","messageId":"m","userId":"u",{TS}}}"#
        ));
        assert_eq!(e.reason, RejectReason::MissingField);
        assert!(e.detail.contains("previousId"), "{e}");
        let e = err(&format!(
            r#"{{"type":"alias","messageId":"m","userId":"u","previousId":"u",{TS}}}"#
        ));
        assert_eq!(e.reason, RejectReason::InvalidValue);
        assert!(e.detail.contains("`userId`"), "{e}");
    }

    #[test]
    fn the_event_time_follows_the_documented_rule() {
        let at = |fields: &str| {
            let s =
                format!(r#"{{"type":"track","messageId":"m","userId":"u","event":"x"{fields}}}"#);
            parse_segment_event(s.as_bytes()).map(|e| e.timestamp)
        };
        let t0 = 1_794_820_320_000; // 2026-11-16T09:12:00Z
        let all = r#","timestamp":"2026-11-16T09:12:00Z","originalTimestamp":"2026-11-16T09:00:00Z","sentAt":"2026-11-16T09:00:10Z","receivedAt":"2026-11-16T09:12:20Z""#;
        assert_eq!(at(all), Ok(t0));
        // No timestamp: originalTimestamp corrected by receivedAt - sentAt (the device
        // clock is 12 minutes slow here).
        let corrected = r#","originalTimestamp":"2026-11-16T09:00:00Z","sentAt":"2026-11-16T09:00:10Z","receivedAt":"2026-11-16T09:12:10Z""#;
        assert_eq!(at(corrected), Ok(t0));
        assert_eq!(
            at(r#","originalTimestamp":"2026-11-16T09:12:00Z","sentAt":"2026-11-16T09:15:00Z""#),
            Ok(t0)
        );
        assert_eq!(
            at(r#","sentAt":"2026-11-16T09:00:00Z","receivedAt":"2026-11-16T09:12:00Z""#),
            Ok(t0)
        );
        assert_eq!(at(r#","sentAt":"2026-11-16T09:12:00Z""#), Ok(t0));
        assert_eq!(at(r#","timestamp":1794820320000"#), Ok(t0));
        assert_eq!(
            at(r#","timestamp":null,"sentAt":"2026-11-16T09:12:00Z""#),
            Ok(t0)
        );
        let e = at("").unwrap_err();
        assert_eq!(e.reason, RejectReason::MissingField);
        assert!(e.detail.contains("originalTimestamp"), "{e}");
        // Every timestamp present must be valid, used or not.
        let e = at(r#","timestamp":"2026-11-16T09:12:00Z","sentAt":"yesterday""#).unwrap_err();
        assert_eq!(e.reason, RejectReason::InvalidTimestamp);
        assert!(e.detail.contains("`sentAt`"), "{e}");
        let e = at(r#","originalTimestamp":"2026-11-16T09:12:00""#).unwrap_err();
        assert_eq!(e.reason, RejectReason::InvalidTimestamp);
        let e = at(r#","originalTimestamp":"1970-01-01T00:00:01Z","sentAt":"2026-11-16T09:00:00Z","receivedAt":"2026-11-16T08:00:00Z""#).unwrap_err();
        assert_eq!(e.reason, RejectReason::InvalidTimestamp);
        assert!(e.detail.contains("corrected"), "{e}");
    }

    #[test]
    fn rejects_with_precise_reasons() {
        use RejectReason::*;
        let cases: &[(&str, RejectReason, &str)] = &[
            ("not json", InvalidJson, ""),
            ("[1]", NotAnObject, ""),
            (
                r#"{"messageId":"m","userId":"u","timestamp":0}"#,
                MissingField,
                "`type`",
            ),
            (r#"{"batch":[{"type":"track"}]}"#, MissingField, "batch"),
            (
                r#"{"type":"Track","messageId":"m","userId":"u","timestamp":0}"#,
                InvalidValue,
                "not a Segment call",
            ),
            (
                r#"{"type":3,"messageId":"m","userId":"u","timestamp":0}"#,
                WrongType,
                "`type`",
            ),
            (
                r#"{"type":"track","userId":"u","event":"x","timestamp":0}"#,
                MissingField,
                "`messageId`",
            ),
            (
                r#"{"type":"track","messageId":"  ","userId":"u","event":"x","timestamp":0}"#,
                InvalidValue,
                "`messageId`",
            ),
            (
                r#"{"type":"track","messageId":"m","event":"x","timestamp":0}"#,
                MissingField,
                "`userId` or `anonymousId`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"","anonymousId":null,"event":"x","timestamp":0}"#,
                MissingField,
                "`userId` or `anonymousId`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":42,"event":"x","timestamp":0}"#,
                WrongType,
                "`userId`",
            ),
            (
                r#"{"type":"track","messageId":"m","anonymousId":"a\u0001","event":"x","timestamp":0}"#,
                InvalidValue,
                "control",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","timestamp":0}"#,
                MissingField,
                "`event`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":["x"],"timestamp":0}"#,
                WrongType,
                "`event`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"!!!","timestamp":0}"#,
                InvalidValue,
                "no ASCII letter",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"Forget","timestamp":0}"#,
                InvalidValue,
                "`forget`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"identify","timestamp":0}"#,
                InvalidValue,
                "`identify`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":"yesterday"}"#,
                InvalidTimestamp,
                "`timestamp`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":true}"#,
                WrongType,
                "`timestamp`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,"properties":[1]}"#,
                WrongType,
                "`properties`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,"context":"web"}"#,
                WrongType,
                "`context`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,"context":{"page":1}}"#,
                WrongType,
                "`context.page`",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,"context":{"traits":"x"}}"#,
                WrongType,
                "`context.traits`",
            ),
            (
                r#"{"type":"identify","messageId":"m","userId":"u","timestamp":0,"traits":"vip"}"#,
                WrongType,
                "`traits`",
            ),
            (
                r#"{"type":"identify","messageId":"m","userId":"u","timestamp":0,"traits":{"a":1,"a":2}}"#,
                InvalidValue,
                "duplicate",
            ),
            (
                r#"{"type":"identify","messageId":"m","userId":"u","timestamp":0,"traits":{"":1}}"#,
                InvalidValue,
                "empty",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,"properties":{"a":1,"a":2}}"#,
                InvalidValue,
                "duplicate",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"Order Completed","timestamp":0,"properties":{"currency":"EUR"}}"#,
                MissingField,
                "properties.total",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"Order Completed","timestamp":0,"properties":{"total":"27.50","currency":"EUR"}}"#,
                WrongType,
                "properties.total",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"Order Completed","timestamp":0,"properties":{"total":27.5}}"#,
                MissingField,
                "properties.currency",
            ),
            (
                r#"{"type":"track","messageId":"m","userId":"u","event":"Order Completed","timestamp":0,"properties":{"total":27.5,"currency":"euro"}}"#,
                InvalidValue,
                "ISO 4217",
            ),
            (
                r#"{"type":"page","messageId":"m","userId":"u","timestamp":0,"properties":{"url":5}}"#,
                WrongType,
                "properties.url",
            ),
            (
                r#"{"type":"alias","messageId":"m","userId":"u","previousId":7,"timestamp":0}"#,
                WrongType,
                "`previousId`",
            ),
        ];
        for (input, reason, needle) in cases {
            let e = err(input);
            assert_eq!(e.reason, *reason, "{input}: {e}");
            assert!(!e.detail.is_empty());
            assert!(e.detail.contains(needle), "{input}: {e}");
        }
        let long = "x".repeat(65);
        let e = err(&format!(
            r#"{{"type":"track","messageId":"m","userId":"u","event":"{long}","timestamp":0}}"#
        ));
        assert_eq!(e.reason, InvalidValue);
        assert!(e.detail.contains("at most 64"), "{e}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_context_is_read_only_where_used() {
        let e = ok(
            r#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0,
            "channel":"server","version":2,"integrations":{"All":true},"groupId":7,"previousId":[],
            "context":{"library":{"name":"analytics-node"},"traits":{"country":"Germany"}},
            "traits":{"a":1}}"#,
        );
        assert!(e.traits.is_empty(), "only identify carries traits");
        assert_eq!(e.previous_id, None);
    }

    #[test]
    fn input_format_dispatches() {
        use crate::event::InputFormat;
        let segment = br#"{"type":"track","messageId":"m","userId":"u","event":"x","timestamp":0}"#;
        assert!(InputFormat::SegmentSpec.parse(segment).is_ok());
        assert_eq!(
            InputFormat::Segstream.parse(segment).unwrap_err().reason,
            RejectReason::MissingField
        );
        for f in InputFormat::ALL {
            assert_eq!(InputFormat::from_name(f.name()), Some(f));
            assert_eq!(f.name().parse::<InputFormat>(), Ok(f));
        }
        assert_eq!(InputFormat::default(), InputFormat::Segstream);
        assert!("rudderstack".parse::<InputFormat>().is_err());
    }
}
