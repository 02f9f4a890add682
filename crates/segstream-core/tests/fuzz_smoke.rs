//! A short fuzzing run in the test suite: the checks of the fuzz harness
//! (`fuzz/harness/`) over the checked-in seed corpus (`fuzz/seeds/`, which also holds the
//! inputs of every crash found so far) and over tens of thousands of deterministic
//! random and grammar-aware mutated inputs. The long, coverage-guided runs are in
//! `fuzz/README.md`.
//!
//! A panic, a position-less or out-of-range diagnostic, a detail-less rejection, a
//! non-deterministic compile or an input slower than [`SLOW`] fails the test, and the
//! failing input is printed (and can be replayed with the fuzz driver).

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{generate, mutate, Rng, Target};

/// Debug builds are slow; an input taking this long is a hang.
const SLOW: Duration = Duration::from_secs(2);

/// Generated inputs are kept small, like the fuzzers' default.
const MAX_LEN: usize = 4096;

fn seeds(target: Target) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target.name());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(
        seeds.len() >= 20,
        "{} seeds in {}",
        seeds.len(),
        dir.display()
    );
    seeds
}

/// Runs `f`; on a panic or a slow input, fails with the input and how to replay it.
fn run(target: Target, what: &str, data: &[u8], f: impl FnOnce()) {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f));
    let took = start.elapsed();
    let shown = String::from_utf8_lossy(data);
    if let Err(panic) = result {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "{} harness failed on {what}: {msg}\ninput ({} bytes): {shown:?}",
            target.name(),
            data.len()
        );
    }
    assert!(
        took < SLOW,
        "{} harness took {took:?} on {what}\ninput ({} bytes): {shown:?}",
        target.name(),
        data.len()
    );
}

fn smoke(target: Target, seed: u64, runs: usize) {
    let seeds = seeds(target);
    for (i, s) in seeds.iter().enumerate() {
        run(target, &format!("seed #{i}"), s, || {
            harness::check(target, s)
        });
    }
    let mut rng = Rng::new(seed);
    if target == Target::Events {
        for i in 0..runs / 10 {
            let (json, expected) = generate::event(&mut rng);
            run(
                target,
                &format!("generated event #{i}"),
                json.as_bytes(),
                || harness::check_generated_event(&json, &expected),
            );
        }
    }
    let mut compiled = 0;
    for i in 0..runs {
        let (data, expected) = mutate::next_input(&mut rng, target, &seeds, MAX_LEN);
        let what = format!("input #{i} of seed {seed}");
        run(target, &what, &data, || match (&expected, target) {
            (Some(e), _) => harness::check_generated_event(std::str::from_utf8(&data).unwrap(), e),
            (None, Target::Definitions) => {
                compiled += usize::from(harness::check_definitions(&String::from_utf8_lossy(&data)))
            }
            (None, _) => harness::check(target, &data),
        });
    }
    // Large inputs: long chains, deep nesting, long lists and names (up to ~64 KB).
    for i in 0..40 {
        let data = generate::stress(&mut rng, target).into_bytes();
        run(
            target,
            &format!("stress input #{i} of seed {seed}"),
            &data,
            || harness::check(target, &data),
        );
    }
    if target == Target::Definitions {
        // The generator and the seeds must reach the compiler's success path too.
        assert!(
            compiled > runs / 100,
            "only {compiled} of {runs} inputs compiled"
        );
    }
}

#[test]
fn events_fuzz_smoke() {
    smoke(Target::Events, 1, 40_000);
}

#[test]
fn definitions_fuzz_smoke() {
    smoke(Target::Definitions, 2, 12_000);
}

#[test]
fn conditions_fuzz_smoke() {
    smoke(Target::Conditions, 3, 12_000);
}

/// The harness can fail: a panic in a check is reported with the input.
#[test]
#[should_panic(expected = "harness failed on probe")]
fn a_failing_check_fails_the_smoke_test() {
    run(Target::Events, "probe", b"x", || {
        harness::check_generated_event(
            r#"{"event_id":"e","customer_id":"c","type":"click","timestamp":1}"#,
            &harness::ExpectedEvent {
                event_id: "e".into(),
                customer_id: "c".into(),
                event_type: "click".into(),
                timestamp: 2,
            },
        )
    });
}
