//! A fuzzing driver without coverage feedback, for machines where cargo-fuzz cannot run:
//! the harness checks (`fuzz/harness/`) over the seed corpus, fresh grammar inputs,
//! mutated inputs and large stress inputs, in a release build, on stable Rust with no
//! extra tools.
//!
//! ```text
//! cargo run --release -p segstream-core --example fuzz -- --target events --runs 10000000 --seed 1
//! ```
//!
//! Input number `i` depends only on `--seed`, `i` and the seed corpus, so a finding can be
//! replayed with `--start i --runs 1` (which also writes the input to the findings
//! directory). A failing check is caught, its input saved as
//! `FINDINGS/TARGET/crash-I.bin`, and the run goes on; an input slower than `--slow-ms`
//! is saved as `slow-I.bin`. A stack overflow aborts the process: the last progress line
//! gives the range of inputs to replay with `--save-each`, which writes every input to
//! `FINDINGS/TARGET/current.bin` before running it.

#[path = "harness/mod.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{generate, mutate, Rng, Target};

struct Args {
    targets: Vec<Target>,
    runs: u64,
    start: u64,
    seed: u64,
    seeds_dir: PathBuf,
    findings: PathBuf,
    max_len: usize,
    slow: Duration,
    save_each: bool,
}

const USAGE: &str = "usage: fuzz [--target events|definitions|conditions|all] [--runs N] \
[--seed S] [--start I] [--seeds DIR] [--findings DIR] [--max-len BYTES] [--slow-ms MS] \
[--save-each]";

fn parse_args() -> Result<Args, String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut a = Args {
        targets: Target::ALL.to_vec(),
        runs: 1_000_000,
        start: 0,
        seed: 1,
        seeds_dir: here.join("seeds"),
        findings: here.join("findings"),
        max_len: 4096,
        slow: Duration::from_secs(1),
        save_each: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--save-each" {
            a.save_each = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--target" if value == "all" => a.targets = Target::ALL.to_vec(),
            "--target" => {
                a.targets =
                    vec![Target::from_name(&value)
                        .ok_or(format!("unknown target {value}\n{USAGE}"))?]
            }
            "--runs" => a.runs = num(&value)?,
            "--start" => a.start = num(&value)?,
            "--seed" => a.seed = num(&value)?,
            "--seeds" => a.seeds_dir = value.into(),
            "--findings" => a.findings = value.into(),
            "--max-len" => a.max_len = num(&value)? as usize,
            "--slow-ms" => a.slow = Duration::from_millis(num(&value)?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn load_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// Input `i` of a run: a seed (the first `seeds.len()`), then every 1000th a stress
/// input, else a fresh or mutated input from [`mutate::next_input`].
fn input(
    target: Target,
    seed: u64,
    i: u64,
    seeds: &[Vec<u8>],
    max_len: usize,
) -> (Vec<u8>, Option<harness::ExpectedEvent>) {
    if let Some(s) = usize::try_from(i).ok().and_then(|i| seeds.get(i)) {
        return (s.clone(), None);
    }
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i);
    if i % 1000 == 999 {
        return (generate::stress(&mut rng, target).into_bytes(), None);
    }
    mutate::next_input(&mut rng, target, seeds, max_len)
}

fn save(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, data) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    path
}

#[derive(Default)]
struct Summary {
    inputs: u64,
    crashes: u64,
    slow: u64,
    slowest: Duration,
}

fn run_target(a: &Args, target: Target) -> Summary {
    let seeds = load_seeds(&a.seeds_dir.join(target.name()));
    let dir = a.findings.join(target.name());
    let mut s = Summary::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    eprintln!(
        "{}: {} seeds, inputs {}..{}, seed {}",
        target.name(),
        seeds.len(),
        a.start,
        a.start + a.runs,
        a.seed
    );
    for i in a.start..a.start + a.runs {
        let (data, expected) = input(target, a.seed, i, &seeds, a.max_len);
        if a.save_each || a.runs == 1 {
            save(&dir, "current.bin", &data);
        }
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| match &expected {
            Some(e) => harness::check_generated_event(&String::from_utf8_lossy(&data), e),
            None => harness::check(target, &data),
        }));
        let took = t.elapsed();
        s.inputs += 1;
        s.slowest = s.slowest.max(took);
        if let Err(panic) = result {
            s.crashes += 1;
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = save(&dir, &format!("crash-{i}.bin"), &data);
            eprintln!("CRASH at input {i} ({}): {msg}", path.display());
        } else if took > a.slow {
            s.slow += 1;
            let path = save(&dir, &format!("slow-{i}.bin"), &data);
            eprintln!("SLOW input {i} took {took:?} ({})", path.display());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{}: {} inputs (last #{i}), {:.0}/s, {} crashes, {} slow",
                target.name(),
                s.inputs,
                s.inputs as f64 / secs,
                s.crashes,
                s.slow
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} inputs in {:.1} s ({:.0}/s), {} crashes, {} slower than {:?}, slowest {:?}",
        target.name(),
        s.inputs,
        secs,
        s.inputs as f64 / secs,
        s.crashes,
        s.slow,
        a.slow,
        s.slowest
    );
    s
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Failing checks are reported once each, with their input, by `run_target`.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for &target in &args.targets {
        let s = run_target(&args, target);
        failed |= s.crashes > 0 || s.slow > 0;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
