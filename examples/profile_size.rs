//! Bytes per customer profile for a realistic mix of events.
//!
//! Runs the engine with `segments/library.toml` over the reference-funnel generator
//! (20 000 customers; a typical week of activity, then 30 days) and reports:
//!
//! - **profile bytes**: `size_of::<Profile>() + profile.heap_bytes()` per profile (mean,
//!   p50, p99, max), i.e. what the profile itself owns;
//! - **all-in heap**: live heap bytes counted by a `#[global_allocator]` wrapped around
//!   `System`, after the engine is built and before the first event, then after the last
//!   event, divided by the number of profiles. That includes the profile map (table
//!   slack included), the `Arc<str>` customer keys, the timer heap (with its superseded
//!   entries), interned symbols, and everything else the engine keeps per customer. It is
//!   shown as requested bytes and as an estimate of glibc malloc chunks (16-byte rounding,
//!   8-byte header, 32-byte minimum), which is what the process actually pays.
//!
//! Run: `cargo run --release --example profile_size [-- CUSTOMERS [DAYS...]]`
//! (defaults: 20000 customers, 7 and 30 days); `--help` describes the arguments.

// A global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use clap::Parser;
use segstream_core::profile::Profile;

use common::{percentile, Table, LIBRARY_FILE};

/// Bytes per customer profile for a realistic mix of events (see docs/performance.md).
#[derive(Debug, Parser)]
#[command(name = "profile_size", long_about = None)]
#[command(override_usage = "cargo run --release --example profile_size -- [CUSTOMERS] [DAYS]...")]
struct Options {
    /// Simulated customers
    #[arg(value_name = "CUSTOMERS", default_value_t = 20_000, value_parser = common::count)]
    customers: usize,
    /// Simulated days, one run (one column) each
    #[arg(value_name = "DAYS", default_values_t = [7, 30],
          value_parser = clap::value_parser!(u32).range(1..))]
    days: Vec<u32>,
}

/// Counts live heap bytes (requested, and as estimated malloc chunks) and the peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIVE_CHUNKS: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The size of the glibc malloc chunk serving a request of `size` bytes (x86-64).
fn chunk(size: usize) -> usize {
    const MMAP_THRESHOLD: usize = 128 * 1024;
    if size >= MMAP_THRESHOLD {
        (size + 16).div_ceil(4096) * 4096
    } else {
        ((size + 8 + 15) & !15).max(32)
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
    LIVE_CHUNKS.fetch_add(chunk(size), Relaxed);
}

fn shrank(size: usize) {
    LIVE.fetch_sub(size, Relaxed);
    LIVE_CHUNKS.fetch_sub(chunk(size), Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Clone, Copy)]
struct Heap {
    live: usize,
    chunks: usize,
}

fn heap() -> Heap {
    Heap {
        live: LIVE.load(Relaxed),
        chunks: LIVE_CHUNKS.load(Relaxed),
    }
}

struct Run {
    days: u32,
    events: usize,
    profiles: usize,
    transitions: usize,
    timers_fired: u64,
    /// `size_of::<Profile>() + heap_bytes()`, sorted.
    sizes: Vec<usize>,
    /// The engine's own estimate (`Engine::profile_bytes`: profile, heap, key + 16).
    estimate: usize,
    /// Live heap growth while processing the events (all-in state).
    state: Heap,
    /// Live heap of the freshly built engine (definitions, symbols).
    empty_engine: Heap,
    /// Peak live heap above the baseline during processing.
    peak_above_baseline: usize,
    /// Arena bytes in use per record kind, summed over profiles (see `arena_use`).
    arena: Option<ArenaUse>,
}

/// Record kinds of the profile arena, as `Profile::usage_by_kind` names them.
const RECORD_KINDS: [&str; 9] = [
    "type stats",
    "traits",
    "windows",
    "recency",
    "absence",
    "favourites",
    "value",
    "memberships",
    "other",
];

#[derive(Default)]
struct ArenaUse {
    /// Bytes (header + payload) per record kind.
    bytes: [usize; 9],
    /// Bytes in use (length, not capacity).
    used: usize,
}

/// What the arena of each profile holds, by record kind.
fn arena_use<'a>(profiles: impl Iterator<Item = &'a Profile>) -> Option<ArenaUse> {
    let mut u = ArenaUse::default();
    for p in profiles {
        for (name, bytes) in p.usage_by_kind() {
            let k = RECORD_KINDS.iter().position(|n| *n == name).unwrap_or(8);
            u.bytes[k] += bytes;
            u.used += bytes;
        }
    }
    Some(u)
}

fn run(customers: usize, days: u32) -> anyhow::Result<Run> {
    let events = common::funnel(customers, days);
    let baseline = heap();
    let mut engine = common::library_engine()?;
    let built = heap();
    PEAK.store(built.live, Relaxed);
    let mut transitions = 0;
    {
        let mut out = Vec::with_capacity(4096);
        for e in &events {
            if let Err(err) = engine.process(e.json.as_bytes(), &mut out) {
                anyhow::bail!("event rejected: {err}: {}", e.json);
            }
            if out.len() >= 4000 {
                transitions += out.len();
                out.clear();
            }
        }
        transitions += out.len();
    }
    let after = heap();
    let peak = PEAK.load(Relaxed);
    assert_eq!(engine.stats().events_applied, events.len() as u64);
    let mut sizes: Vec<usize> = engine
        .profiles()
        .map(|(_, p)| size_of::<Profile>() + p.heap_bytes())
        .collect();
    sizes.sort_unstable();
    let arena = arena_use(engine.profiles().map(|(_, p)| p));
    let r = Run {
        days,
        events: events.len(),
        profiles: engine.profile_count(),
        transitions,
        timers_fired: engine.stats().timers_fired,
        sizes,
        estimate: engine.profile_bytes(),
        state: Heap {
            live: after.live - built.live,
            chunks: after.chunks - built.chunks,
        },
        empty_engine: Heap {
            live: built.live - baseline.live,
            chunks: built.chunks - baseline.chunks,
        },
        peak_above_baseline: peak - baseline.live,
        arena,
    };
    drop(engine);
    drop(events);
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    println!(
        "segstream profile size: {} customers, library {LIBRARY_FILE}, size_of::<Profile>() = {} bytes",
        o.customers,
        size_of::<Profile>()
    );
    let runs = o
        .days
        .iter()
        .map(|&d| run(o.customers, d))
        .collect::<anyhow::Result<Vec<Run>>>()?;

    println!();
    let mut table = Table::new(
        std::iter::once(String::new()).chain(runs.iter().map(|r| format!("{} days", r.days))),
    );
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String| {
        table.row(std::iter::once(label.to_string()).chain(runs.iter().map(f)));
    };
    let per = |bytes: usize, r: &Run| format!("{:.0}", bytes as f64 / r.profiles as f64);
    let pct = |r: &Run, q: f64| percentile(&r.sizes, q).unwrap_or(0).to_string();
    row("events", &|r| r.events.to_string());
    row("profiles", &|r| r.profiles.to_string());
    row("events per profile", &|r| {
        format!("{:.1}", r.events as f64 / r.profiles as f64)
    });
    row("transitions", &|r| r.transitions.to_string());
    row("timers fired", &|r| r.timers_fired.to_string());
    row("profile bytes: mean", &|r| {
        per(r.sizes.iter().sum::<usize>(), r)
    });
    row("profile bytes: p50", &|r| pct(r, 0.50));
    row("profile bytes: p99", &|r| pct(r, 0.99));
    row("profile bytes: max", &|r| {
        r.sizes.last().copied().unwrap_or(0).to_string()
    });
    row("Engine::profile_bytes / profile", &|r| per(r.estimate, r));
    row("all-in heap / profile (requested)", &|r| {
        per(r.state.live, r)
    });
    row("all-in heap / profile (malloc chunks)", &|r| {
        per(r.state.chunks, r)
    });
    row("all-in heap total (MiB, chunks)", &|r| {
        format!("{:.1}", r.state.chunks as f64 / (1 << 20) as f64)
    });
    row("empty engine heap (KiB, requested)", &|r| {
        format!("{:.1}", r.empty_engine.live as f64 / 1024.0)
    });
    row("peak heap while processing (MiB)", &|r| {
        format!("{:.1}", r.peak_above_baseline as f64 / (1 << 20) as f64)
    });
    if runs.iter().all(|r| r.arena.is_some()) {
        fn arena(r: &Run) -> &ArenaUse {
            r.arena.as_ref().expect("checked")
        }
        row("arena bytes in use / profile", &|r| per(arena(r).used, r));
        row("arena capacity slack / profile", &|r| {
            let capacity: usize = r.sizes.iter().sum::<usize>() - r.profiles * size_of::<Profile>();
            per(capacity.saturating_sub(arena(r).used), r)
        });
        for (k, name) in RECORD_KINDS.iter().enumerate() {
            row(&format!("  {name} (bytes)"), &|r| per(arena(r).bytes[k], r));
        }
    }
    table.print();
    println!();
    println!(
        "profile bytes = size_of::<Profile>() + Profile::heap_bytes() (the arena's capacity)."
    );
    println!(
        "all-in = live heap after the last event minus live heap of the freshly built engine:"
    );
    println!(
        "profiles, map table, customer keys, timer heap, symbols; the event input is excluded."
    );
    Ok(())
}
