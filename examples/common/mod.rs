//! What the benchmark programs in `examples/` share: argument parsers, the workload (the
//! seeded reference funnel of `segstream::generator`), the segment library, memory
//! readings, percentiles and tables; [`kafka`] has the broker set-up (MockCluster or an
//! existing broker, topics incl. the changelog), the load producer and the clients'
//! configuration. Each program declares `mod common;` and uses a part of it.

// Each program uses a different part of this module.
#![allow(dead_code)]

pub mod kafka;

use std::fmt::Display;

use anyhow::anyhow;
use segstream::generator::{generate, FunnelConfig, GeneratedEvent};
use segstream_core::engine::{Engine, EngineConfig};

/// The segment library every benchmark runs (compiled in: the programs run from anywhere).
pub const LIBRARY_FILE: &str = "segments/library.toml";
pub const LIBRARY: &str = include_str!("../../segments/library.toml");

/// An engine of the definitions `text` (named `file` in error messages), default settings.
pub fn engine(file: &str, text: &str) -> anyhow::Result<Engine> {
    Engine::from_source(file, text, EngineConfig::default())
        .map_err(|d| anyhow!("invalid {file}:\n{d}"))
}

/// An engine of `segments/library.toml`, default settings.
pub fn library_engine() -> anyhow::Result<Engine> {
    engine(LIBRARY_FILE, LIBRARY)
}

// ---- the workload ---------------------------------------------------------------------------

/// The seeded reference funnel (seed 42): `customers` customers over `days` days, in time
/// order.
pub fn funnel(customers: usize, days: u32) -> Vec<GeneratedEvent> {
    generate(&FunnelConfig {
        customers,
        days,
        ..FunnelConfig::default()
    })
}

/// The first `n` events of the funnel of `customers` customers: 7 days, doubled until they
/// hold `n` events (at most 364 days; fewer events if even that is not enough).
pub fn first_events(customers: usize, n: usize) -> Vec<GeneratedEvent> {
    let mut days = 7;
    loop {
        let mut events = funnel(customers, days);
        if events.len() >= n || days >= 364 {
            events.truncate(n);
            return events;
        }
        days *= 2;
    }
}

// ---- the programs' surroundings -------------------------------------------------------------

/// Log lines to stderr; `RUST_LOG` filters them (default: warnings and errors).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// `prefix` and 8 random hex digits: topic and group names of one run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

// ---- argument parsers (clap `value_parser`s) ------------------------------------------------

/// A count of at least 1; `_` may separate digits (`1_000_000`).
pub fn count(s: &str) -> Result<usize, String> {
    match s.replace('_', "").parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A number above 0.
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("must be above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `KEY=VALUE`, e.g. a librdkafka setting.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("wants KEY=VALUE, got `{s}`"))
}

// ---- figures --------------------------------------------------------------------------------

/// (VmRSS, VmHWM) of this process in bytes, from `/proc/self/status` (0 where absent).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Nearest-rank percentile (`q` from 0 to 1) of sorted values; `None` if there are none.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A Markdown table printed with aligned columns: the first column left-aligned (labels),
/// the others right-aligned (figures).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Display>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            rows: vec![header.into_iter().map(|c| c.to_string()).collect()],
        }
    }

    pub fn row<S: Display>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map_or("", String::as_str);
                if c == 0 {
                    out.push_str(&format!(" {cell:<w$} |"));
                } else {
                    out.push_str(&format!(" {cell:>w$} |"));
                }
            }
            out
        };
        println!("{}", line(&self.rows[0]));
        let mut rule = String::from("|");
        for (c, w) in widths.iter().enumerate() {
            if c == 0 {
                rule.push_str(&"-".repeat(w + 2));
            } else {
                rule.push_str(&"-".repeat(w + 1));
                rule.push(':');
            }
            rule.push('|');
        }
        println!("{rule}");
        for r in &self.rows[1..] {
            println!("{}", line(r));
        }
    }
}
