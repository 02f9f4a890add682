//! The whole-file baseline for `segstream replay`: reads a JSON-lines file of events line
//! by line, as replay does, and parses every line with a plain `#[derive(Deserialize)]`
//! envelope (`benches/support/typed_event.rs`) and `serde_json`, nothing else.
//!
//! Run: `cargo run --release --example typed_parse -- EVENTS.jsonl` and compare its time
//! with `segstream replay -s segments/library.toml -e EVENTS.jsonl -t /dev/null` on the
//! same file (see docs/performance.md).

use std::io::BufRead;
use std::time::Instant;

#[path = "../benches/support/typed_event.rs"]
mod typed_event;

// The same allocator as the `segstream` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: typed_parse EVENTS.jsonl")?;
    let started = Instant::now();
    let mut reader = std::io::BufReader::new(std::fs::File::open(&path)?);
    let mut buf = Vec::with_capacity(1024);
    let (mut events, mut properties, mut rejected) = (0u64, 0usize, 0u64);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<typed_event::TypedEvent>(line) {
            Ok(e) => {
                events += 1;
                properties += e.properties.len() + e.traits.len();
                std::hint::black_box(e);
            }
            Err(_) => rejected += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{events} events ({rejected} rejected, {properties} properties and traits) in {secs:.3} s: {:.0} events/s",
        events as f64 / secs
    );
    Ok(())
}
