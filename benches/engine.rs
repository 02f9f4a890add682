//! Throughput of the engine's hot path against the pure JSON parse rate.
//!
//! Input: a typical week of the reference funnel (`generator::generate`, 20 000 customers,
//! 7 days, seed 42), generated once before any measurement. Every group reports
//! `Throughput::Elements(events)`, so criterion prints events per second; the engine is
//! single-threaded, so that is a per-core figure.
//!
//! - `parse_only/serde_json_ignored`: `serde_json` validating each line into `IgnoredAny`
//!   (a lower bound on the cost of looking at the JSON at all);
//! - `parse_only/serde_json_value`: `serde_json` parsing each line into a `Value` tree;
//! - `parse_only/serde_json_typed`: a plain `#[derive(Deserialize)]` envelope with owned
//!   fields, as a user would write it (`benches/support/typed_event.rs`); the **ratio** of
//!   the engine is (time of this parse) / (time of `full_path/library`) on the same lines;
//! - `parse_only/segstream_parse_event`: the typed, validated `event::parse_event`;
//! - `full_path/library`: a fresh engine with `segments/library.toml` per iteration (built
//!   outside the timed section), then `Engine::process` for every line: parse, profile
//!   update, segment evaluation, timers and transitions.
//!
//! Run: `cargo bench --bench engine` (or `-- --quick` for a smoke run);
//! `SEGSTREAM_BENCH_CUSTOMERS=100000 cargo bench --bench engine -- --quick` changes the
//! population. See `docs/performance.md` for the figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use segstream::generator::{generate, FunnelConfig};
use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::event::parse_event;

mod support {
    pub mod typed_event;
}
use support::typed_event::TypedEvent;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIBRARY_FILE: &str = "segments/library.toml";
const LIBRARY: &str = include_str!("../segments/library.toml");

/// Customers in the simulated week (about 19 events each); `SEGSTREAM_BENCH_CUSTOMERS`
/// overrides it (to see how the per-event cost grows with the number of profiles).
const CUSTOMERS: usize = 20_000;
/// The engine's output buffer is cleared once it holds this many transitions.
const OUT_FLUSH: usize = 4_096;

fn customers() -> usize {
    std::env::var("SEGSTREAM_BENCH_CUSTOMERS").map_or(CUSTOMERS, |v| {
        v.parse()
            .expect("SEGSTREAM_BENCH_CUSTOMERS must be a number")
    })
}

/// Two simulated weeks: the first (to warm profiles up) and the second (measured).
fn workload(customers: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let config = FunnelConfig {
        customers,
        days: 14,
        ..FunnelConfig::default()
    };
    let split = config.start_ms + 7 * 86_400_000;
    let (first, second): (Vec<_>, Vec<_>) = generate(&config)
        .into_iter()
        .partition(|e| e.timestamp_ms < split);
    let bytes = |v: Vec<segstream::generator::GeneratedEvent>| {
        v.into_iter().map(|e| e.json.into_bytes()).collect()
    };
    (bytes(first), bytes(second))
}

fn engine() -> Engine {
    Engine::from_source(LIBRARY_FILE, LIBRARY, EngineConfig::default())
        .unwrap_or_else(|d| panic!("{LIBRARY_FILE} does not compile: {d:?}"))
}

/// Feeds every line to `engine`; returns the number of transitions emitted.
fn run(engine: &mut Engine, lines: &[Vec<u8>]) -> usize {
    let mut out = Vec::with_capacity(OUT_FLUSH + 64);
    let mut transitions = 0;
    for line in lines {
        if let Err(e) = engine.process(black_box(line), &mut out) {
            panic!("event rejected: {e}: {}", String::from_utf8_lossy(line));
        }
        if out.len() >= OUT_FLUSH {
            transitions += out.len();
            black_box(&out);
            out.clear();
        }
    }
    transitions += out.len();
    black_box(&out);
    transitions
}

/// The bench is only honest if every event goes all the way through the engine.
fn check(lines: &[Vec<u8>], customers: usize) {
    let bytes: usize = lines.iter().map(Vec::len).sum();
    for line in lines {
        if let Err(e) = parse_event(line) {
            panic!(
                "parse_event rejects a generated event: {e}: {}",
                String::from_utf8_lossy(line)
            );
        }
    }
    let mut engine = engine();
    let transitions = run(&mut engine, lines);
    let stats = engine.stats();
    assert_eq!(
        stats.events_applied,
        lines.len() as u64,
        "every event is applied"
    );
    assert_eq!(stats.events_late, 0, "no event is late");
    eprintln!(
        "workload: {} events ({:.0} bytes/event), {} customers, {} profiles, {} transitions, {} timers fired",
        lines.len(),
        bytes as f64 / lines.len() as f64,
        customers,
        engine.profile_count(),
        transitions,
        stats.timers_fired,
    );
}

fn benches(c: &mut Criterion) {
    let customers = customers();
    // `lines` (week 1: the whole funnel) is the headline workload; `week2` (the next week,
    // mostly email and browsing) is measured after week 1, with profiles warm.
    let (lines, week2) = workload(customers);
    if customers == CUSTOMERS {
        assert!(lines.len() >= 100_000, "only {} events", lines.len());
    }
    check(&lines, customers);
    let n = lines.len() as u64;

    // One iteration is a pass over all the events (0.15 to 1 s), so flat sampling: every
    // sample is the same number of whole passes.
    let mut parse = c.benchmark_group("parse_only");
    parse.throughput(Throughput::Elements(n));
    parse.sampling_mode(SamplingMode::Flat);
    parse.bench_function("serde_json_ignored", |b| {
        b.iter(|| {
            for line in &lines {
                let v: serde::de::IgnoredAny =
                    serde_json::from_slice(black_box(line)).expect("valid JSON");
                black_box(v);
            }
        })
    });
    parse.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for line in &lines {
                let v: serde_json::Value =
                    serde_json::from_slice(black_box(line)).expect("valid JSON");
                black_box(v);
            }
        })
    });
    parse.bench_function("serde_json_typed", |b| {
        b.iter(|| {
            for line in &lines {
                let e: TypedEvent = serde_json::from_slice(black_box(line)).expect("valid event");
                black_box(e);
            }
        })
    });
    parse.bench_function("segstream_parse_event", |b| {
        b.iter(|| {
            for line in &lines {
                let e = parse_event(black_box(line)).expect("valid event");
                black_box(e);
            }
        })
    });
    parse.finish();

    let mut full = c.benchmark_group("full_path");
    full.throughput(Throughput::Elements(n));
    full.sampling_mode(SamplingMode::Flat);
    // About a second per pass: 10 samples need 10 s.
    full.measurement_time(Duration::from_secs(10));
    // Cold: the week starts from an empty engine (profiles are created during the run).
    full.bench_function("library", |b| {
        b.iter_batched(
            engine,
            |mut engine| {
                black_box(run(&mut engine, &lines));
                // Returned so that dropping the profiles is not timed.
                engine
            },
            BatchSize::PerIteration,
        )
    });
    full.finish();

    // Warm: week 2 follows week 1 (profiles exist: the steady state of a running service).
    // Building the warm engine is setup, not timed. Its parse-only baseline is measured on
    // the same week-2 events.
    let mut warm = c.benchmark_group("week2");
    warm.throughput(Throughput::Elements(week2.len() as u64));
    warm.sampling_mode(SamplingMode::Flat);
    warm.measurement_time(Duration::from_secs(10));
    warm.bench_function("parse_only_serde_json_value", |b| {
        b.iter(|| {
            for line in &week2 {
                let v: serde_json::Value =
                    serde_json::from_slice(black_box(line)).expect("valid JSON");
                black_box(v);
            }
        })
    });
    warm.bench_function("parse_only_serde_json_typed", |b| {
        b.iter(|| {
            for line in &week2 {
                let e: TypedEvent = serde_json::from_slice(black_box(line)).expect("valid event");
                black_box(e);
            }
        })
    });
    warm.bench_function("full_path_library_warm", |b| {
        b.iter_batched(
            || {
                let mut e = engine();
                run(&mut e, &lines);
                e
            },
            |mut engine| {
                black_box(run(&mut engine, &week2));
                engine
            },
            BatchSize::PerIteration,
        )
    });
    warm.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = engine_benches;
    config = config();
    targets = benches
}
criterion_main!(engine_benches);
