//! Shared helpers for engine tests: build events, drive an engine, read transitions.
#![allow(dead_code)]

use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::time::{parse_rfc3339, Millis};
use segstream_core::transition::{Direction, Transition};
use serde_json::{json, Value};

/// An engine over inline TOML definitions, collecting transitions.
pub struct Harness {
    pub engine: Engine,
    next_id: u64,
}

/// A file of the repository (tests run in the crate's folder), by its path from the root.
pub fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

pub fn at(s: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"))
}

impl Harness {
    pub fn new(toml: &str) -> Self {
        Self::with_config(toml, EngineConfig::default())
    }

    pub fn with_config(toml: &str, config: EngineConfig) -> Self {
        let engine = Engine::from_source("test.toml", toml, config)
            .unwrap_or_else(|e| panic!("definitions should compile:\n{e}"));
        Harness { engine, next_id: 0 }
    }

    /// Sends one event; panics if it is rejected.
    pub fn send(
        &mut self,
        customer: &str,
        ty: &str,
        time: &str,
        properties: Value,
    ) -> Vec<Transition> {
        self.try_send(customer, ty, time, properties)
            .unwrap_or_else(|e| panic!("event rejected: {e}"))
    }

    pub fn try_send(
        &mut self,
        customer: &str,
        ty: &str,
        time: &str,
        properties: Value,
    ) -> Result<Vec<Transition>, segstream_core::event::EventError> {
        self.next_id += 1;
        let mut ev = json!({
            "event_id": format!("e{}", self.next_id),
            "customer_id": customer,
            "type": ty,
            "timestamp": time,
        });
        if ty == "identify" {
            ev["traits"] = properties;
        } else if !properties.is_null() {
            ev["properties"] = properties;
        }
        let mut out = Vec::new();
        self.engine.process(ev.to_string().as_bytes(), &mut out)?;
        Ok(out)
    }

    /// Moves the watermark (time passing without events).
    pub fn advance(&mut self, time: &str) -> Vec<Transition> {
        let mut out = Vec::new();
        self.engine.advance_watermark(at(time), &mut out);
        out
    }

    pub fn members(&self, customer: &str) -> Vec<String> {
        self.engine
            .memberships(customer)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// Compact view of transitions: (customer, segment, direction, cause).
pub fn brief(ts: &[Transition]) -> Vec<(String, String, &'static str, String)> {
    ts.iter()
        .map(|t| {
            (
                t.customer_id.to_string(),
                t.segment.to_string(),
                t.direction.as_str(),
                t.cause.to_string(),
            )
        })
        .collect()
}

pub fn entered(ts: &[Transition], segment: &str) -> bool {
    ts.iter()
        .any(|t| &*t.segment == segment && t.direction == Direction::Entered)
}

pub fn exited(ts: &[Transition], segment: &str) -> bool {
    ts.iter()
        .any(|t| &*t.segment == segment && t.direction == Direction::Exited)
}
