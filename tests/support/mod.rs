//! What the service's integration tests share: the in-process broker and the service in
//! the background ([`mock`]), the real broker and the binary as processes ([`tansu`]), an
//! HTTP client ([`http`]), and the simulated funnel with its expected transitions.
//!
//! Each test file includes this module and uses part of it.
#![allow(dead_code)]

pub mod http;
pub mod identity;
pub mod mock;
pub mod tansu;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use segstream::config::Config;
use segstream_core::engine::EngineConfig;

/// A name no other test uses (topics, groups).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u64(..))
}

/// The Kafka key of an event line, as producers key events: its `customer_id`, else its
/// `anonymous_id`.
pub fn key_of(line: &str) -> Option<String> {
    let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
    v["customer_id"]
        .as_str()
        .or(v["anonymous_id"].as_str())
        .map(String::from)
}

/// A message to produce: key and payload.
pub type Keyed = (Option<String>, Vec<u8>);

/// The transitions of the single-instance offline replay of `events` (JSON lines) under
/// the definitions in `segments` and `engine` settings, as their JSON lines.
pub fn replayed(events: &str, segments: &Path, engine: EngineConfig) -> BTreeSet<String> {
    let mut engine = segstream::definitions::load_engine(segments, engine).unwrap();
    let mut out = Vec::new();
    segstream::replay::replay(&mut engine, events.as_bytes(), &mut out, Default::default())
        .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Four days of the simulated funnel for `customers` (seeded), as JSON lines, ending in
/// closing ticks: every partition's event time passes the end, as the replay's does (an
/// instance knows only its own partitions' time).
pub fn funnel_events(customers: usize, seed: u64) -> String {
    funnel_events_with(
        customers,
        seed,
        segstream::generator::FunnelConfig::default().anonymous_share,
    )
}

/// [`funnel_events`] with `anonymous_share` of the customers arriving as anonymous visitors.
pub fn funnel_events_with(customers: usize, seed: u64, anonymous_share: f64) -> String {
    let funnel = segstream::generator::FunnelConfig {
        customers,
        days: 4,
        seed,
        anonymous_share,
        ..Default::default()
    };
    segstream::generator::generate(&funnel)
        .into_iter()
        .chain(segstream::generator::closing_ticks(&funnel, 40))
        .map(|e| format!("{}\n", e.json))
        .collect()
}

/// Four days of the simulated funnel for `customers` (seeded), as keyed messages, and the
/// transitions of its single-instance (offline replay) run under `cfg`'s engine settings.
pub fn funnel(customers: usize, seed: u64, cfg: &Config) -> (Vec<Keyed>, BTreeSet<String>) {
    keyed_funnel(&funnel_events(customers, seed), cfg)
}

/// [`funnel`] with every customer known from the start (web events still carry a cookie
/// beside the customer id half of the time: links, and merges across instances). For tests
/// that compare exact transitions while the events of several partitions are read in any
/// order: an anonymous visitor's events before its registration, read after it, would meet
/// the merged person instead of the visitor's own profile (the profiles end equal, the
/// transitions not; `tests/identity.rs` produces identities in phases).
pub fn known_funnel(customers: usize, seed: u64, cfg: &Config) -> (Vec<Keyed>, BTreeSet<String>) {
    keyed_funnel(&funnel_events_with(customers, seed, 0.0), cfg)
}

fn keyed_funnel(events: &str, cfg: &Config) -> (Vec<Keyed>, BTreeSet<String>) {
    let events = events.to_string();
    let expected = replayed(&events, &cfg.segments.file, cfg.engine.clone());
    assert!(
        expected.len() > 100,
        "a stream worth splitting: {}",
        expected.len()
    );
    let lines = events
        .lines()
        .map(|l| (key_of(l), l.as_bytes().to_vec()))
        .collect();
    (lines, expected)
}

/// The current audience the transitions give, keyed `{segment}/{customer_id}` as on the
/// membership topic. Per (segment, customer), the last transition (by the customer's sequence): the members
/// are those whose last transition entered. Values: (since, rule_version).
pub fn members_of(transitions: &BTreeSet<String>) -> BTreeMap<String, (String, String)> {
    let mut last: BTreeMap<String, (u64, serde_json::Value)> = BTreeMap::new();
    for line in transitions {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = format!(
            "{}/{}",
            t["segment"].as_str().unwrap(),
            t["customer_id"].as_str().unwrap()
        );
        let seq = t["sequence"].as_u64().unwrap();
        if last.get(&key).is_none_or(|(s, _)| seq > *s) {
            last.insert(key, (seq, t));
        }
    }
    last.into_iter()
        .filter(|(_, (_, t))| t["direction"] == "entered")
        .map(|(k, (_, t))| {
            (
                k,
                (
                    t["timestamp"].as_str().unwrap().to_string(),
                    t["rule_version"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}
