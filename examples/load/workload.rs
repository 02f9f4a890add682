//! The load test's events: the first N events of the reference funnel, each re-rendered
//! with a fresh `event_id`, an RFC 3339 timestamp and (unless `--no-flip`) the probe tag
//! `"lt": "a"` / `"b"` that flips the `load-flip` segment.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::bail;
use segstream::generator::GeneratedEvent;
use segstream_core::time::format_rfc3339;

use crate::common;

const FLIP_SEGMENT: &str = r#"
# Added by examples/load: flips on every event tagged "lt" = "a" / "b" alternately.
[segments.load-flip]
description = "Load-test probe: in after an `a`, out after a `b`."
condition = 'count(any(lt = "a"), ever) > count(any(lt = "b"), ever)'
"#;

/// What every phase sends and the segments the service runs.
pub struct Workload {
    /// The events, in time order.
    pub templates: Arc<Vec<Template>>,
    /// The events as pre-loaded (ids `load-{i}`, their own timestamps).
    pub payloads: Arc<Vec<String>>,
    /// The segment definitions (the library, and the probe segment with `flip`).
    pub segments: String,
    /// Whether events carry the probe tag.
    pub flip: bool,
}

impl Workload {
    pub fn new(customers: usize, events: usize, flip: bool) -> anyhow::Result<Workload> {
        let templates = templates(&common::first_events(customers, events))?;
        let mut flipper = Flipper::new(flip);
        let mut buf = String::new();
        let payloads = templates
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let tag = flipper.next(t);
                render(&mut buf, t, format_args!("load-{i}"), t.ts, tag);
                buf.clone()
            })
            .collect();
        let segments = if flip {
            format!("{}\n{FLIP_SEGMENT}", common::LIBRARY)
        } else {
            common::LIBRARY.to_string()
        };
        Ok(Workload {
            templates: Arc::new(templates),
            payloads: Arc::new(payloads),
            segments,
            flip,
        })
    }
}

/// A generated event split so that id, timestamp and the probe tag can be filled in cheaply.
pub struct Template {
    /// Index of the customer in order of appearance.
    pub customer: usize,
    pub key: String,
    /// The JSON members other than event_id, timestamp and properties, without braces.
    head: String,
    /// The members of `properties`, without braces.
    props: Option<String>,
    pub ts: i64,
}

fn templates(events: &[GeneratedEvent]) -> anyhow::Result<Vec<Template>> {
    use serde_json::Value;
    let mut customers: HashMap<String, usize> = HashMap::new();
    let inner = |v: Value| {
        let s = v.to_string();
        s[1..s.len() - 1].to_string()
    };
    events
        .iter()
        .map(|e| {
            let Value::Object(mut map) = serde_json::from_str(&e.json)? else {
                bail!("generated event is not an object");
            };
            map.remove("event_id");
            map.remove("timestamp");
            let props = match map.remove("properties") {
                Some(p @ Value::Object(_)) => Some(inner(p)),
                Some(_) => bail!("properties is not an object"),
                None => None,
            };
            let next = customers.len();
            let customer = *customers.entry(e.person.clone()).or_insert(next);
            Ok(Template {
                customer,
                key: e.key.clone(),
                head: inner(Value::Object(map)),
                props,
                ts: e.timestamp_ms,
            })
        })
        .collect()
}

/// Alternates the probe tag per customer.
pub struct Flipper {
    on: bool,
    seen: Vec<u32>,
}

impl Flipper {
    pub fn new(on: bool) -> Self {
        Flipper {
            on,
            seen: Vec::new(),
        }
    }

    /// The tag of the customer's next event (`None` without properties or `--no-flip`).
    pub fn next(&mut self, t: &Template) -> Option<&'static str> {
        if !self.on || t.props.is_none() {
            return None;
        }
        if self.seen.len() <= t.customer {
            self.seen.resize(t.customer + 1, 0);
        }
        let n = self.seen[t.customer];
        self.seen[t.customer] += 1;
        Some(if n % 2 == 0 { "a" } else { "b" })
    }
}

/// Writes the event `t` with event id `id`, timestamp `ts` and the probe tag into `out`.
pub fn render(
    out: &mut String,
    t: &Template,
    id: std::fmt::Arguments<'_>,
    ts: i64,
    tag: Option<&str>,
) {
    out.clear();
    out.push_str("{\"event_id\":\"");
    let _ = out.write_fmt(id);
    out.push_str("\",\"timestamp\":\"");
    out.push_str(&format_rfc3339(ts));
    out.push_str("\",");
    out.push_str(&t.head);
    if let Some(props) = &t.props {
        out.push_str(",\"properties\":{");
        if let Some(tag) = tag {
            out.push_str("\"lt\":\"");
            out.push_str(tag);
            out.push('"');
            if !props.is_empty() {
                out.push(',');
            }
        }
        out.push_str(props);
        out.push('}');
    }
    out.push('}');
}
