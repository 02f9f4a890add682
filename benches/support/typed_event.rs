//! The baseline the engine is measured against: the event envelope as a user would write it
//! with `#[derive(Deserialize)]` and owned fields, parsed with plain `serde_json`.
//!
//! Shared by `benches/engine.rs` (`parse_only/serde_json_typed`) and
//! `examples/typed_parse.rs` (the whole-file comparison with `segstream replay`).

use std::collections::HashMap;

use serde::Deserialize;

/// segstream's event format (`schemas/event.schema.json`): the envelope's fields, owned.
/// `timestamp` is an RFC 3339 string or epoch milliseconds, so it stays a JSON value.
// The baseline is the parse: the fields are filled, not read (the callers `black_box` them).
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
pub struct TypedEvent {
    pub event_id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub anonymous_id: Option<String>,
    #[serde(default)]
    pub previous_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: serde_json::Value,
    #[serde(default)]
    pub properties: HashMap<String, serde_json::Value>,
    #[serde(default)]
    pub traits: HashMap<String, serde_json::Value>,
}
