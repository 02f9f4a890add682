//! The record pool: the final changelog record of every customer of the simulated funnel,
//! built in a child process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use segstream_core::engine::StateChange;
use segstream_core::transition::Transition;

use crate::common;

pub struct Pool {
    pub records: Vec<Vec<u8>>,
    /// Events simulated.
    pub events: usize,
    /// Seconds it took to build.
    pub secs: f64,
}

impl Pool {
    pub fn mean(&self) -> f64 {
        self.records.iter().map(Vec::len).sum::<usize>() as f64 / self.records.len() as f64
    }

    pub fn max(&self) -> usize {
        self.records.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The final changelog record of every simulated customer: the funnel of `customers`
/// customers over `days` days through an engine of the library with change tracking.
pub fn pool(customers: usize, days: u32) -> anyhow::Result<Pool> {
    let started = Instant::now();
    let events = common::funnel(customers, days);
    let mut e = common::library_engine()?.with_change_tracking();
    let mut out: Vec<Transition> = Vec::new();
    for ev in &events {
        // Rejections (late events and the like) are part of the realistic stream.
        let _ = e.process(ev.json.as_bytes(), &mut out);
        out.clear();
    }
    let mut changes: Vec<StateChange> = Vec::new();
    e.drain_changes(&mut changes);
    // One entry per customer per drain; keep the last record of each.
    let mut last: HashMap<Arc<str>, Option<Vec<u8>>> = HashMap::new();
    let mut order = Vec::new();
    for c in changes {
        if !last.contains_key(&c.customer_id) {
            order.push(c.customer_id.clone());
        }
        last.insert(c.customer_id, c.record);
    }
    let records: Vec<Vec<u8>> = order
        .iter()
        .filter_map(|id| last.remove(id).flatten())
        .collect();
    if records.is_empty() {
        bail!("the simulated funnel left no profile records");
    }
    Ok(Pool {
        records,
        events: events.len(),
        secs: started.elapsed().as_secs_f64(),
    })
}

/// The pool built in a child process (this program with `--pool-out`), so that the memory
/// the simulation used is not left in this process's allocator for the engine to reuse
/// (which would hide part of the engine's footprint from the RSS difference).
pub fn pool_in_child(customers: usize, days: u32) -> anyhow::Result<Pool> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--pool-out",
            "--customers",
            &customers.to_string(),
            "--days",
            &days.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the pool child")?;
    if !out.status.success() {
        bail!("the pool child failed: {}", out.status);
    }
    let b = out.stdout;
    let num = |at: usize| -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            b.get(at..at + 8)
                .ok_or_else(|| anyhow!("short pool"))?
                .try_into()?,
        ))
    };
    let (events, secs) = (num(0)? as usize, f64::from_bits(num(8)?));
    let mut records = Vec::new();
    let mut at = 16;
    while at < b.len() {
        let len = num(at)? as usize;
        records.push(
            b.get(at + 8..at + 8 + len)
                .ok_or_else(|| anyhow!("short pool"))?
                .to_vec(),
        );
        at += 8 + len;
    }
    Ok(Pool {
        records,
        events,
        secs,
    })
}

/// Writes the pool to stdout, for [`pool_in_child`].
pub fn write_pool(p: &Pool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut b = Vec::new();
    b.extend_from_slice(&(p.events as u64).to_le_bytes());
    b.extend_from_slice(&p.secs.to_bits().to_le_bytes());
    for r in &p.records {
        b.extend_from_slice(&(r.len() as u64).to_le_bytes());
        b.extend_from_slice(r);
    }
    std::io::stdout().lock().write_all(&b)?;
    Ok(())
}
