//! Contract tests for the JSON Schemas in `schemas/`.
//!
//! - every schema compiles (draft 2020-12, checked against the meta-schema), has the
//!   expected `$id`, a `description` and `examples`, and every example is valid;
//! - every `*.json` / `*.jsonl` file under `schemas/examples/` is checked: lines of `invalid*`
//!   files must each be rejected, every other line must be accepted; files under
//!   `schemas/examples/transitions/` are transitions, files under `schemas/examples/segment/`
//!   messages of the Segment Spec (`segment-spec.schema.json`), all others input events;
//! - one-rule-at-a-time mutations of a valid event or transition are rejected;
//! - the funnel simulator (`segstream::generator`) only produces valid events;
//! - every explanation of the reference funnel's replay (every customer, every segment of
//!   the library) matches `explain.schema.json`, and broken ones are rejected.
//!
//! All schemas are registered with the validator by their `$id`, so the relative
//! `$ref`s between them resolve offline; any other reference is an error.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonschema::{Draft, Resource, Retrieve, Uri, Validator};
use serde_json::{json, Value};

const BASE_URI: &str = "https://segstream.dev/schemas/";
const EVENT_SCHEMA: &str = "event.schema.json";
const TRANSITION_SCHEMA: &str = "transition.schema.json";
const SEGMENT_SCHEMA: &str = "segment-spec.schema.json";
const PREVIEW_SCHEMA: &str = "preview.schema.json";

/// The schemas the contract consists of. Every one must exist; no other may.
const SCHEMA_FILES: [&str; 14] = [
    "event.schema.json",
    "clickstream.schema.json",
    "email.schema.json",
    "webinar.schema.json",
    "purchase.schema.json",
    "crm.schema.json",
    "forget.schema.json",
    "identity.schema.json",
    "custom.schema.json",
    "transition.schema.json",
    "explain.schema.json",
    "segment-spec.schema.json",
    "membership.schema.json",
    "preview.schema.json",
];

/// Event-family schemas: their examples must also pass the `event.schema.json` envelope.
const EVENT_FAMILY_SCHEMAS: [&str; 9] = [
    "event.schema.json",
    "clickstream.schema.json",
    "email.schema.json",
    "webinar.schema.json",
    "purchase.schema.json",
    "crm.schema.json",
    "forget.schema.json",
    "identity.schema.json",
    "custom.schema.json",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// All schema files, by file name, in a stable order.
fn schemas() -> &'static Vec<(String, Value)> {
    static SCHEMAS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let dir = repo_root().join("schemas");
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        {
            let path = entry.expect("directory entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("utf-8 file name")
                .to_owned();
            out.push((name, read_json(&path)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    })
}

fn schema(name: &str) -> &'static Value {
    &schemas()
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("schemas/{name} is missing"))
        .1
}

/// Refuses every reference that is not one of our own registered schemas, so the
/// tests never touch the network and a typo in a `$ref` is an error.
struct OfflineOnly;

impl Retrieve for OfflineOnly {
    fn retrieve(&self, uri: &Uri<&str>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{} is not one of the schemas in schemas/", uri.as_str()).into())
    }
}

fn build_validator(name: &str) -> Validator {
    let mut options = jsonschema::options();
    options
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_retriever(OfflineOnly);
    for (file, contents) in schemas() {
        let resource = Resource::from_contents(contents.clone())
            .unwrap_or_else(|e| panic!("schemas/{file} is not a usable resource: {e}"));
        options.with_resource(format!("{BASE_URI}{file}"), resource);
    }
    options
        .build(schema(name))
        .unwrap_or_else(|e| panic!("schemas/{name} does not compile: {e}"))
}

fn event_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build_validator(EVENT_SCHEMA))
}

fn transition_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build_validator(TRANSITION_SCHEMA))
}

fn preview_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build_validator(PREVIEW_SCHEMA))
}

fn explain_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build_validator("explain.schema.json"))
}

fn segment_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| build_validator(SEGMENT_SCHEMA))
}

/// All validation errors of `instance`, one per line, or `None` if it is valid.
fn errors(validator: &Validator, instance: &Value) -> Option<String> {
    // The envelope is checked both by event.schema.json and by the family schema it
    // dispatches to, so the same error can be reported more than once.
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for error in validator.iter_errors(instance) {
        let line = format!("    at '{}': {}\n", error.instance_path, error);
        if seen.insert(line.clone()) {
            out.push_str(&line);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[test]
fn every_schema_compiles_and_is_documented() {
    let found: BTreeSet<&str> = schemas().iter().map(|(n, _)| n.as_str()).collect();
    let expected: BTreeSet<&str> = SCHEMA_FILES.into_iter().collect();
    assert_eq!(
        found, expected,
        "schemas/ must hold exactly the contract's schemas"
    );

    for (name, contents) in schemas() {
        assert_eq!(
            contents["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "schemas/{name}: $schema must be draft 2020-12"
        );
        assert_eq!(
            contents["$id"].as_str(),
            Some(format!("{BASE_URI}{name}").as_str()),
            "schemas/{name}: $id must be {BASE_URI}{name}"
        );
        for key in ["title", "description"] {
            assert!(
                contents[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "schemas/{name}: needs a non-empty `{key}`"
            );
        }
        assert!(
            contents["examples"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "schemas/{name}: needs a non-empty `examples` array"
        );
        // Compiles, including the check against the draft 2020-12 meta-schema and the
        // resolution of every `$ref`.
        build_validator(name);
    }
}

#[test]
fn schema_examples_are_valid() {
    let mut failures = String::new();
    for (name, contents) in schemas() {
        let own = build_validator(name);
        let examples = contents["examples"].as_array().cloned().unwrap_or_default();
        for (i, example) in examples.iter().enumerate() {
            if let Some(e) = errors(&own, example) {
                let _ = write!(
                    failures,
                    "schemas/{name} examples[{i}] fails its own schema:\n{e}"
                );
            }
            if EVENT_FAMILY_SCHEMAS.contains(&name.as_str()) {
                if let Some(e) = errors(event_validator(), example) {
                    let _ = write!(
                        failures,
                        "schemas/{name} examples[{i}] fails {EVENT_SCHEMA}:\n{e}"
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

/// Every `.json` / `.jsonl` file below `dir`, sorted.
fn example_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("json" | "jsonl")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The documents of an example file with their 1-based line numbers. A `.json` file is
/// one document (line 1); a `.jsonl` file one document per non-blank line. A document
/// that is not JSON is returned as `Err` with the parse error.
fn documents(path: &Path) -> Vec<(usize, Result<Value, String>)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let parse = |s: &str| serde_json::from_str::<Value>(s).map_err(|e| format!("not JSON: {e}"));
    if path.extension().and_then(|e| e.to_str()) == Some("jsonl") {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| (i + 1, parse(line)))
            .collect()
    } else {
        vec![(1, parse(&text))]
    }
}

#[test]
fn example_files_are_valid_or_rejected_as_labelled() {
    let root = repo_root();
    let files = example_files(&root.join("schemas/examples"));
    assert!(
        !files.is_empty(),
        "no *.json / *.jsonl example files under schemas/examples/"
    );

    let mut failures = String::new();
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for path in &files {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let in_dir = |name: &str| rel.components().any(|c| c.as_os_str() == name);
        let validator = if in_dir("transitions") {
            transition_validator()
        } else if in_dir("segment") {
            segment_validator()
        } else {
            event_validator()
        };
        let expect_invalid = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("invalid"));
        let docs = documents(path);
        if docs.is_empty() {
            let _ = writeln!(failures, "{}: holds no document", rel.display());
        }
        for (line, doc) in docs {
            let problem = match &doc {
                Ok(value) => errors(validator, value),
                Err(parse_error) => Some(format!("    {parse_error}\n")),
            };
            match (expect_invalid, problem) {
                (false, None) => accepted += 1,
                (true, Some(p)) => {
                    // Shown with `--nocapture`: check that each line fails for its reason.
                    eprintln!("{}:{line} rejected:\n{p}", rel.display());
                    rejected += 1;
                }
                (false, Some(p)) => {
                    let _ = write!(
                        failures,
                        "{}:{line} should be valid but is not:\n{p}",
                        rel.display()
                    );
                }
                (true, None) => {
                    let _ = writeln!(
                        failures,
                        "{}:{line} should be rejected but is valid",
                        rel.display()
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
    assert!(accepted > 0, "no valid example document was checked");
    assert!(rejected > 0, "no invalid example document was checked");
}

#[test]
fn reference_funnel_tells_the_whole_story() {
    let path = repo_root().join("schemas/examples/events/reference-funnel.jsonl");
    let docs: Vec<Value> = documents(&path)
        .into_iter()
        .map(|(line, doc)| doc.unwrap_or_else(|e| panic!("line {line}: {e}")))
        .collect();
    assert!(
        (30..=60).contains(&docs.len()),
        "expected about 40 events, got {}",
        docs.len()
    );

    let types: BTreeSet<&str> = docs.iter().filter_map(|d| d["type"].as_str()).collect();
    for wanted in [
        "identify",
        "ad_click",
        "page_view",
        "webinar_registered",
        "webinar_attended",
        "email_sent",
        "email_open",
        "email_click",
        "purchase",
        "unsubscribe",
        "forget",
    ] {
        assert!(
            types.contains(wanted),
            "reference funnel has no `{wanted}` event"
        );
    }
    let known: Vec<&str> = schema(EVENT_SCHEMA)["$defs"]["knownType"]["enum"]
        .as_array()
        .expect("knownType enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        types.iter().any(|t| !known.contains(t)),
        "reference funnel has no custom event type"
    );
    assert!(
        docs.iter().any(|d| d["timestamp"].is_string()),
        "no RFC 3339 timestamp"
    );
    assert!(
        docs.iter().any(|d| d["timestamp"].is_u64()),
        "no epoch-millisecond timestamp"
    );
    let ids: BTreeSet<&str> = docs.iter().filter_map(|d| d["event_id"].as_str()).collect();
    assert_eq!(ids.len(), docs.len(), "event ids must be unique");
}

/// Valid events, one per family plus edge cases of the contract. The mutation tests below
/// start from them by index.
const VALID_EVENTS: &[&str] = &[
    // 0: page_view
    r#"{"event_id": "e-0", "customer_id": "c-1", "type": "page_view",
        "timestamp": "2026-11-22T10:00:00Z", "properties": {"url": "/webinar"}}"#,
    // 1: ad_click, epoch milliseconds
    r#"{"event_id": "e-1", "customer_id": "c-1", "type": "ad_click",
        "timestamp": 1795341600000, "properties": {"campaign": "webinar-q4-ads"}}"#,
    // 2: email, offset timestamp, no properties
    r#"{"event_id": "e-2", "customer_id": "c-1", "type": "email_open",
        "timestamp": "2026-11-22T11:00:00+01:00"}"#,
    // 3: webinar, epoch starts_at, zero minutes
    r#"{"event_id": "e-3", "customer_id": "c-1", "type": "webinar_attended",
        "timestamp": "2026-11-22T10:00:00.123Z",
        "properties": {"webinar_id": "W-2026-12", "starts_at": 1795341600000, "minutes": 0}}"#,
    // 4: purchase, negative amount
    r#"{"event_id": "e-4", "customer_id": "c-1", "type": "purchase",
        "timestamp": "2026-11-22T10:00:00Z", "properties": {"amount": -12.5, "currency": "EUR"}}"#,
    // 5: identify, lowercase z, a null trait, a custom trait
    r#"{"event_id": "e-5", "customer_id": "c-1", "type": "identify",
        "timestamp": "2026-11-22T10:00:00z", "traits": {"role": null, "vip": true}}"#,
    // 6: forget, epoch 0
    r#"{"event_id": "e-6", "customer_id": "c-1", "type": "forget", "timestamp": 0}"#,
    // 7: custom type with every allowed punctuation; untyped properties; traits
    r#"{"event_id": "e-7", "customer_id": "c-1", "type": "shop:cart.abandoned-2",
        "timestamp": "2026-11-22T10:00:00Z",
        "properties": {"url": 5, "nested": {"a": [1, 2]}}, "traits": {"plan": "pro"}}"#,
    // 8: click; unknown top-level field; null optional properties
    r#"{"event_id": "e-8", "customer_id": "c-1", "type": "click",
        "timestamp": "2026-11-22T10:00:00-05:00", "extra_top_level": {"ignored": true},
        "properties": {"referrer": null, "utm_term": null}}"#,
    // 9: webinar_registered at the last representable millisecond, null optionals
    r#"{"event_id": "e-9", "customer_id": "c-1", "type": "webinar_registered",
        "timestamp": 4294967295000,
        "properties": {"webinar_id": "W", "starts_at": null, "minutes": null}}"#,
    // 10: purchase with zero amount, fractional quantity, null discount code
    r#"{"event_id": "e-10", "customer_id": "c-1", "type": "purchase",
        "timestamp": "2026-11-22T10:00:00Z",
        "properties": {"amount": 0, "currency": "CHF", "discount_code": null, "quantity": 2.5}}"#,
    // 11: an anonymous page view (no customer_id)
    r#"{"event_id": "e-11", "anonymous_id": "anon-1", "type": "page_view",
        "timestamp": "2026-11-22T10:00:00Z", "properties": {"url": "/"}}"#,
    // 12: both ids (a link), customer_id null counts as absent on 13
    r#"{"event_id": "e-12", "customer_id": "c-1", "anonymous_id": "anon-1", "type": "click",
        "timestamp": "2026-11-22T10:00:00Z"}"#,
    r#"{"event_id": "e-13", "customer_id": null, "anonymous_id": "anon-1", "type": "click",
        "timestamp": "2026-11-22T10:00:00Z"}"#,
    // 14: alias
    r#"{"event_id": "e-14", "customer_id": "c-1", "previous_id": "anon-1", "type": "alias",
        "timestamp": "2026-11-22T10:00:00Z"}"#,
];

const PAGE_VIEW: usize = 0;
const AD_CLICK: usize = 1;
const EMAIL: usize = 2;
const WEBINAR: usize = 3;
const PURCHASE: usize = 4;
const IDENTIFY: usize = 5;
const FORGET: usize = 6;
const CUSTOM: usize = 7;
const CLICK: usize = 8;
const ANONYMOUS: usize = 11;
const ALIAS: usize = 14;

fn valid_event(index: usize) -> Value {
    serde_json::from_str(VALID_EVENTS[index]).expect("VALID_EVENTS entries are JSON")
}

#[test]
fn edge_cases_of_the_contract_are_accepted() {
    let mut failures = String::new();
    for index in 0..VALID_EVENTS.len() {
        let event = valid_event(index);
        if let Some(e) = errors(event_validator(), &event) {
            let _ = write!(failures, "VALID_EVENTS[{index}] should be valid:\n{e}");
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

/// Sets the member at the JSON pointer `pointer` (creating objects on the way) to the JSON
/// text `value`, or removes it if `value` is `None`.
fn mutate(mut doc: Value, pointer: &str, value: Option<&str>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer with a key");
    let mut target = &mut doc;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        target = target
            .as_object_mut()
            .expect("object on the way")
            .entry(part)
            .or_insert_with(|| json!({}));
    }
    let object = target.as_object_mut().expect("parent is an object");
    match value {
        Some(text) => {
            let v = serde_json::from_str(text).expect("mutation value is JSON");
            object.insert(key.to_owned(), v);
        }
        None => {
            object.remove(key);
        }
    }
    doc
}

/// (what is wrong, index into VALID_EVENTS, JSON pointer, new JSON value or None to remove)
type Mutation = (&'static str, usize, &'static str, Option<&'static str>);

const EVENT_MUTATIONS: &[Mutation] = &[
    ("missing event_id", FORGET, "/event_id", None),
    ("empty event_id", FORGET, "/event_id", Some(r#""""#)),
    ("blank event_id", FORGET, "/event_id", Some(r#""  ""#)),
    ("null event_id", FORGET, "/event_id", Some("null")),
    ("numeric event_id", FORGET, "/event_id", Some("17")),
    ("missing customer_id", FORGET, "/customer_id", None),
    ("null customer_id", FORGET, "/customer_id", Some("null")),
    ("numeric customer_id", FORGET, "/customer_id", Some("17")),
    ("missing anonymous_id", ANONYMOUS, "/anonymous_id", None),
    (
        "null anonymous_id",
        ANONYMOUS,
        "/anonymous_id",
        Some("null"),
    ),
    (
        "empty anonymous_id",
        ANONYMOUS,
        "/anonymous_id",
        Some(r#""""#),
    ),
    (
        "blank anonymous_id",
        ANONYMOUS,
        "/anonymous_id",
        Some(r#"" ""#),
    ),
    (
        "anonymous_id with a control character",
        ANONYMOUS,
        "/anonymous_id",
        Some(r#""a\u0007""#),
    ),
    (
        "numeric anonymous_id",
        ANONYMOUS,
        "/anonymous_id",
        Some("7"),
    ),
    ("alias without previous_id", ALIAS, "/previous_id", None),
    (
        "alias with null previous_id",
        ALIAS,
        "/previous_id",
        Some("null"),
    ),
    (
        "alias with empty previous_id",
        ALIAS,
        "/previous_id",
        Some(r#""""#),
    ),
    (
        "alias with numeric previous_id",
        ALIAS,
        "/previous_id",
        Some("1"),
    ),
    ("empty customer_id", FORGET, "/customer_id", Some(r#""""#)),
    ("blank customer_id", FORGET, "/customer_id", Some(r#""\t""#)),
    (
        "customer_id with a control character",
        FORGET,
        "/customer_id",
        Some(r#""c\u00001""#),
    ),
    ("missing type", FORGET, "/type", None),
    ("empty type", FORGET, "/type", Some(r#""""#)),
    (
        "type with a space",
        CUSTOM,
        "/type",
        Some(r#""trial started""#),
    ),
    ("type with a slash", CUSTOM, "/type", Some(r#""shop/cart""#)),
    ("missing timestamp", FORGET, "/timestamp", None),
    ("null timestamp", FORGET, "/timestamp", Some("null")),
    (
        "no offset",
        FORGET,
        "/timestamp",
        Some(r#""2026-11-22T10:00:00""#),
    ),
    ("date only", FORGET, "/timestamp", Some(r#""2026-11-22""#)),
    (
        "space separator",
        FORGET,
        "/timestamp",
        Some(r#""2026-11-22 10:00:00Z""#),
    ),
    (
        "month 13",
        FORGET,
        "/timestamp",
        Some(r#""2026-13-22T10:00:00Z""#),
    ),
    (
        "hour 24",
        FORGET,
        "/timestamp",
        Some(r#""2026-11-22T24:00:00Z""#),
    ),
    (
        "offset without colon",
        FORGET,
        "/timestamp",
        Some(r#""2026-11-22T10:00:00+0100""#),
    ),
    (
        "timestamp in words",
        FORGET,
        "/timestamp",
        Some(r#""yesterday""#),
    ),
    ("negative epoch", FORGET, "/timestamp", Some("-1")),
    (
        "epoch after 2106",
        FORGET,
        "/timestamp",
        Some("4294967295001"),
    ),
    (
        "fractional epoch",
        FORGET,
        "/timestamp",
        Some("1795341600000.5"),
    ),
    (
        "epoch as string",
        FORGET,
        "/timestamp",
        Some(r#""1795341600000""#),
    ),
    ("properties an array", CUSTOM, "/properties", Some("[1, 2]")),
    ("properties null", CUSTOM, "/properties", Some("null")),
    ("traits a string", CUSTOM, "/traits", Some(r#""pro""#)),
    (
        "nested trait object",
        CUSTOM,
        "/traits/plan",
        Some(r#"{"name": "pro"}"#),
    ),
    ("trait array", CUSTOM, "/traits/tags", Some(r#"["a"]"#)),
    ("empty trait name", CUSTOM, "/traits/", Some(r#""x""#)),
    ("page_view without url", PAGE_VIEW, "/properties/url", None),
    (
        "page_view without properties",
        PAGE_VIEW,
        "/properties",
        None,
    ),
    (
        "page_view numeric url",
        PAGE_VIEW,
        "/properties/url",
        Some("3"),
    ),
    (
        "page_view null url",
        PAGE_VIEW,
        "/properties/url",
        Some("null"),
    ),
    (
        "click numeric utm_source",
        CLICK,
        "/properties/utm_source",
        Some("1"),
    ),
    (
        "ad_click without campaign",
        AD_CLICK,
        "/properties/campaign",
        None,
    ),
    (
        "ad_click empty campaign",
        AD_CLICK,
        "/properties/campaign",
        Some(r#""""#),
    ),
    (
        "ad_click null campaign",
        AD_CLICK,
        "/properties/campaign",
        Some("null"),
    ),
    (
        "email numeric message_id",
        EMAIL,
        "/properties/message_id",
        Some("7"),
    ),
    (
        "webinar without webinar_id",
        WEBINAR,
        "/properties/webinar_id",
        None,
    ),
    ("webinar without properties", WEBINAR, "/properties", None),
    (
        "webinar empty webinar_id",
        WEBINAR,
        "/properties/webinar_id",
        Some(r#""""#),
    ),
    (
        "webinar null webinar_id",
        WEBINAR,
        "/properties/webinar_id",
        Some("null"),
    ),
    (
        "webinar starts_at in words",
        WEBINAR,
        "/properties/starts_at",
        Some(r#""Friday""#),
    ),
    (
        "negative webinar minutes",
        WEBINAR,
        "/properties/minutes",
        Some("-1"),
    ),
    (
        "purchase without amount",
        PURCHASE,
        "/properties/amount",
        None,
    ),
    (
        "purchase null amount",
        PURCHASE,
        "/properties/amount",
        Some("null"),
    ),
    (
        "purchase amount a string",
        PURCHASE,
        "/properties/amount",
        Some(r#""12.50""#),
    ),
    (
        "purchase without currency",
        PURCHASE,
        "/properties/currency",
        None,
    ),
    (
        "purchase lowercase currency",
        PURCHASE,
        "/properties/currency",
        Some(r#""eur""#),
    ),
    (
        "purchase currency symbol",
        PURCHASE,
        "/properties/currency",
        Some(r#""€""#),
    ),
    (
        "purchase quantity a string",
        PURCHASE,
        "/properties/quantity",
        Some(r#""2""#),
    ),
    ("identify without traits", IDENTIFY, "/traits", None),
    (
        "identify with empty traits",
        IDENTIFY,
        "/traits",
        Some("{}"),
    ),
    (
        "identify company_size a string",
        IDENTIFY,
        "/traits/company_size",
        Some(r#""120""#),
    ),
    (
        "identify country a name",
        IDENTIFY,
        "/traits/country",
        Some(r#""Germany""#),
    ),
    (
        "identify country lowercase",
        IDENTIFY,
        "/traits/country",
        Some(r#""de""#),
    ),
    (
        "identify email_opt_in a string",
        IDENTIFY,
        "/traits/email_opt_in",
        Some(r#""yes""#),
    ),
];

#[test]
fn events_breaking_one_rule_are_rejected() {
    let mut failures = String::new();
    for (what, index, pointer, value) in EVENT_MUTATIONS {
        let event = mutate(valid_event(*index), pointer, *value);
        if event_validator().is_valid(&event) {
            let _ = writeln!(failures, "{what}: should be rejected: {event}");
        }
    }
    let long = "x".repeat(257);
    for field in ["event_id", "customer_id", "anonymous_id", "previous_id"] {
        let event = mutate(
            valid_event(ALIAS),
            &format!("/{field}"),
            Some(&json!(long).to_string()),
        );
        if event_validator().is_valid(&event) {
            let _ = writeln!(failures, "{field} of 257 characters: should be rejected");
        }
    }
    let event = mutate(
        valid_event(CUSTOM),
        "/type",
        Some(&json!("t".repeat(65)).to_string()),
    );
    if event_validator().is_valid(&event) {
        let _ = writeln!(failures, "type of 65 characters: should be rejected");
    }
    for not_an_object in [r#"["e-1", "c-1", "page_view"]"#, "null", "17", r#""event""#] {
        let doc: Value = serde_json::from_str(not_an_object).expect("JSON");
        if event_validator().is_valid(&doc) {
            let _ = writeln!(failures, "{not_an_object}: should be rejected");
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

const TRANSITION_CAUSES_ACCEPTED: &[&str] = &[
    "event:e-1",
    "event:an id with spaces: and colons",
    "timer:absence@2026-11-22T10:00:00.000Z",
    "timer:window@2026-11-22T10:00:00.000Z",
    "timer:recency@2026-11-22T10:00:00.000Z",
    "timer:score@2026-11-22T10:00:00.000Z",
    "timer:ttl@2026-11-22T10:00:00.000Z",
    "reload:0123456789ab",
    "merge:c-000042",
    "merge:anon with spaces",
    "evicted",
];

const TRANSITION_MUTATIONS: &[(&str, &str, Option<&str>)] = &[
    ("extra field", "/reason", Some(r#""x""#)),
    ("nested object", "/cause", Some(r#"{"event": "e-1"}"#)),
    ("missing transition_id", "/transition_id", None),
    (
        "uppercase transition_id",
        "/transition_id",
        Some(r#""3F9A0C1D5E7B24681357924680ACE135""#),
    ),
    (
        "short transition_id",
        "/transition_id",
        Some(r#""3f9a0c1d""#),
    ),
    ("missing customer_id", "/customer_id", None),
    ("empty customer_id", "/customer_id", Some(r#""""#)),
    ("missing anonymous_ids", "/anonymous_ids", None),
    (
        "anonymous_ids a string",
        "/anonymous_ids",
        Some(r#""anon-1""#),
    ),
    (
        "anonymous_ids with an empty id",
        "/anonymous_ids",
        Some(r#"["a", ""]"#),
    ),
    (
        "anonymous_ids twice the same",
        "/anonymous_ids",
        Some(r#"["a", "a"]"#),
    ),
    ("missing known", "/known", None),
    ("known a string", "/known", Some(r#""true""#)),
    ("empty merge cause", "/cause", Some(r#""merge:""#)),
    ("evicted with a suffix", "/cause", Some(r#""evicted:x""#)),
    ("missing segment", "/segment", None),
    ("empty segment", "/segment", Some(r#""""#)),
    ("missing direction", "/direction", None),
    ("unknown direction", "/direction", Some(r#""left""#)),
    ("missing timestamp", "/timestamp", None),
    (
        "timestamp without millis",
        "/timestamp",
        Some(r#""2026-11-22T10:00:00Z""#),
    ),
    (
        "timestamp not UTC",
        "/timestamp",
        Some(r#""2026-11-22T10:00:00.000+01:00""#),
    ),
    ("timestamp as epoch", "/timestamp", Some("1795341600000")),
    (
        "impossible timestamp",
        "/timestamp",
        Some(r#""2026-02-30T10:00:00.000Z""#),
    ),
    ("missing cause", "/cause", None),
    ("unknown cause", "/cause", Some(r#""manual""#)),
    ("empty event cause", "/cause", Some(r#""event:""#)),
    (
        "unknown timer kind",
        "/cause",
        Some(r#""timer:sleep@2026-11-22T10:00:00.000Z""#),
    ),
    (
        "timer without deadline",
        "/cause",
        Some(r#""timer:absence""#),
    ),
    (
        "timer deadline not UTC millis",
        "/cause",
        Some(r#""timer:ttl@2026-11-22T10:00:00Z""#),
    ),
    ("short reload version", "/cause", Some(r#""reload:abc""#)),
    ("missing rule_version", "/rule_version", None),
    (
        "long rule_version",
        "/rule_version",
        Some(r#""0123456789abc""#),
    ),
    (
        "uppercase rule_version",
        "/rule_version",
        Some(r#""0123456789AB""#),
    ),
    ("missing sequence", "/sequence", None),
    ("sequence 0", "/sequence", Some("0")),
    ("sequence a string", "/sequence", Some(r#""1""#)),
    ("fractional sequence", "/sequence", Some("1.5")),
];

#[test]
fn transitions_breaking_one_rule_are_rejected() {
    let valid = schema(TRANSITION_SCHEMA)["examples"][0].clone();
    assert!(transition_validator().is_valid(&valid));
    let mut failures = String::new();
    for cause in TRANSITION_CAUSES_ACCEPTED {
        let t = mutate(valid.clone(), "/cause", Some(&json!(cause).to_string()));
        if let Some(e) = errors(transition_validator(), &t) {
            let _ = write!(failures, "cause {cause:?} should be accepted:\n{e}");
        }
    }
    for (what, pointer, value) in TRANSITION_MUTATIONS {
        let t = mutate(valid.clone(), pointer, *value);
        if transition_validator().is_valid(&t) {
            let _ = writeln!(failures, "{what}: should be rejected: {t}");
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

#[test]
fn generated_funnel_events_are_valid() {
    use segstream::generator::{generate, FunnelConfig};
    let config = FunnelConfig {
        customers: 300,
        seed: 7,
        ..FunnelConfig::default()
    };
    let events = generate(&config);
    assert!(!events.is_empty());
    let mut failures = String::new();
    let mut failed = 0;
    for (i, event) in events.iter().enumerate() {
        let problem = match serde_json::from_str::<Value>(&event.json) {
            Ok(value) => errors(event_validator(), &value),
            Err(e) => Some(format!("    not JSON: {e}\n")),
        };
        if let Some(p) = problem {
            failed += 1;
            if failed <= 20 {
                let _ = write!(failures, "event {i}: {}\n{p}", event.json);
            }
        }
    }
    assert_eq!(
        failed, 0,
        "{failed} generated events are invalid:\n{failures}"
    );
}

/// A preview answer as the engine gives it (over the reference funnel, one candidate
/// table and one bare condition) satisfies `preview.schema.json`.
#[test]
fn preview_answers_are_valid() {
    use segstream_core::engine::{Engine, EngineConfig, Preview, DEFAULT_SAMPLE};
    let root = repo_root();
    let library = std::fs::read_to_string(root.join("segments/library.toml")).unwrap();
    let mut engine =
        Engine::from_source("library.toml", &library, EngineConfig::default()).unwrap();
    let events =
        std::fs::read_to_string(root.join("schemas/examples/events/reference-funnel.jsonl"))
            .unwrap();
    let mut out = Vec::new();
    for line in events.lines() {
        engine.process(line.as_bytes(), &mut out).unwrap();
    }
    for candidate in [
        "[segments.dach-contact]\ncondition = 'trait.country in [\"DE\", \"AT\", \"CH\"]'\n",
        "[segments.engaged-reader]\ncondition = 'count(email_open, 30d) >= 1'\n",
        "profile.purchases >= 1",
    ] {
        let preview = Preview::compile(&mut engine, "candidate", candidate).unwrap();
        let answer = segstream::replay::preview_answer(&engine, &preview, DEFAULT_SAMPLE);
        assert!(answer.population > 0, "{candidate}: {answer:?}");
        let doc = serde_json::to_value(&answer).unwrap();
        if let Some(e) = errors(preview_validator(), &doc) {
            panic!("{candidate}: the answer fails {PREVIEW_SCHEMA}:\n{e}\n{doc:#}");
        }
    }
}

/// JSON examples in the documentation (```json blocks in README.md and docs/*.md) are
/// examples in the repository too: events validate as events, transitions as transitions,
/// preview answers (with a `population`) as preview answers, Segment Spec messages (with a `messageId`) against `segment-spec.schema.json`.
#[test]
fn documentation_examples_are_valid() {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.expect("readable").path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    let mut failures = String::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let mut block: Option<String> = None;
        for line in text.lines() {
            match (&mut block, line.trim()) {
                (None, "```json") => block = Some(String::new()),
                (Some(b), "```") => {
                    let doc: Value = serde_json::from_str(b).unwrap_or_else(|e| {
                        panic!("{}: a json block is not JSON: {e}\n{b}", path.display())
                    });
                    let membership = build_validator("membership.schema.json");
                    let (name, validator) = if doc.get("since").is_some() {
                        ("membership", &membership)
                    } else if doc.get("transition_id").is_some() {
                        ("transition", transition_validator())
                    } else if doc.get("population").is_some() {
                        ("preview answer", preview_validator())
                    } else if doc.get("messageId").is_some() {
                        ("Segment Spec message", segment_validator())
                    } else if doc.get("condition").is_some() {
                        ("explanation", explain_validator())
                    } else {
                        ("event", event_validator())
                    };
                    if let Some(err) = errors(validator, &doc) {
                        failures.push_str(&format!("{} ({name}): {err}\n{b}\n", path.display()));
                    }
                    checked += 1;
                    block = None;
                }
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
    assert!(checked >= 3, "only {checked} json blocks found");
}

/// Every membership record of the reference funnel's replay (one per entering transition;
/// an exit is a tombstone) matches `membership.schema.json`, and a broken one does not.
#[test]
fn membership_records_match_their_schema() {
    let validator = build_validator("membership.schema.json");
    let events =
        std::fs::read_to_string(repo_root().join("schemas/examples/events/reference-funnel.jsonl"))
            .unwrap();
    let mut engine = segstream::definitions::load_engine(
        &repo_root().join("segments/library.toml"),
        Default::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    segstream::replay::replay(&mut engine, events.as_bytes(), &mut out, Default::default())
        .unwrap();
    let mut records = 0;
    for line in String::from_utf8(out).unwrap().lines() {
        let t: segstream_core::transition::Transition = serde_json::from_str(line).unwrap();
        let r = segstream::kafka::Outgoing::membership(&t, "segstream-membership");
        assert_eq!(
            r.key.as_deref(),
            Some(format!("{}/{}", t.segment, t.customer_id).as_bytes())
        );
        match (t.direction, &r.payload) {
            (segstream_core::transition::Direction::Exited, None) => {}
            (segstream_core::transition::Direction::Entered, Some(p)) => {
                let v: Value = serde_json::from_slice(p).unwrap();
                if let Some(e) = errors(&validator, &v) {
                    panic!("{v}: {e}");
                }
                let mut broken = v.clone();
                broken["since"] = Value::from("yesterday");
                assert!(errors(&validator, &broken).is_some(), "{broken}");
                records += 1;
            }
            other => panic!("entry with a value, exit a tombstone: {other:?}"),
        }
    }
    assert!(records > 5, "{records}");
}

/// Every customer of the reference funnel, every segment of the library: the explanation
/// (with its causes, as `replay --explain` writes it) matches `explain.schema.json`; a
/// few broken ones do not.
#[test]
fn explanations_match_the_explain_schema() {
    use segstream::replay::{explanations, replay_observed, CustomerTransitions, ReplayOptions};
    use segstream_core::engine::{Engine, EngineConfig};

    let root = repo_root();
    let defs = std::fs::read_to_string(root.join("segments/library.toml")).unwrap();
    let events =
        std::fs::read(root.join("schemas/examples/events/reference-funnel.jsonl")).unwrap();
    let mut engine = Engine::from_source("library.toml", &defs, EngineConfig::default()).unwrap();
    let mut all = Vec::new();
    let options = ReplayOptions {
        advance_to: segstream_core::time::parse_rfc3339("2026-11-20T00:00:00Z"),
        ..ReplayOptions::default()
    };
    replay_observed(
        &mut engine,
        &events[..],
        &mut std::io::sink(),
        options,
        &mut |t| all.push(t.clone()),
    )
    .unwrap();
    let validator = explain_validator();
    let mut ids: Vec<String> = engine.profiles().map(|(k, _)| k.to_string()).collect();
    ids.sort();
    assert!(ids.len() >= 5, "{ids:?}");
    let mut kinds = BTreeSet::new();
    let mut failures = String::new();
    for id in &ids {
        let mut collected = CustomerTransitions::new(id);
        for t in &all {
            collected.observe(t);
        }
        for e in explanations(&engine, &collected, None).unwrap() {
            let v = serde_json::to_value(&e).unwrap();
            fn walk(n: &Value, kinds: &mut BTreeSet<String>) {
                kinds.insert(n["kind"].as_str().unwrap().to_string());
                for c in n["children"].as_array().into_iter().flatten() {
                    walk(c, kinds);
                }
            }
            walk(&v["condition"], &mut kinds);
            if let Some(p) = errors(validator, &v) {
                let _ = write!(failures, "{id} {}:\n{p}", e.segment);
            }
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
    // The library uses every kind but `constant` and `literal`.
    for k in [
        "and",
        "or",
        "not",
        "count",
        "sum",
        "since",
        "since_first",
        "score",
        "trait",
        "attribute",
        "arithmetic",
        "segment",
        "absence",
    ] {
        assert!(kinds.contains(k), "no `{k}` node among {kinds:?}");
    }

    let example = schema("explain.schema.json")["examples"][0].clone();
    assert!(errors(validator, &example).is_none());
    for (pointer, value) in [
        ("/member", json!("yes")),
        ("/condition/kind", json!("sometimes")),
        (
            "/condition/next_change",
            json!({"at": "2026-12-18T16:25:00.000Z", "kind": "ttl"}),
        ),
        ("/at", json!("2026-11-20T00:00:00Z")),
        ("/causes/0/cause", json!("because")),
        ("/condition/extra", json!(1)),
    ] {
        let mut broken = example.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        broken
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap()
            .insert(key.to_string(), value);
        assert!(
            errors(validator, &broken).is_some(),
            "{pointer} broken is accepted"
        );
    }
}
