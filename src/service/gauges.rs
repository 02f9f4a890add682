//! The gauges that need a scan of the engine's state (profiles, memory, timers,
//! populations) and the counters the engine keeps itself, refreshed every few seconds and
//! after a reload.

use crate::shared::Shared;

/// Updates the gauges from the engine. Counters only ever move forward: the engine's
/// running total is added as the difference to what was exported before.
pub fn refresh(shared: &Shared) {
    let engine = shared.engine();
    let m = &shared.metrics;
    m.profiles.set(engine.profile_count() as i64);
    m.profile_bytes.set(engine.profile_bytes() as i64);
    m.pending_timers.set(engine.pending_timers() as i64);
    catch_up(&m.timers_fired, engine.stats().timers_fired);
    catch_up(&m.profiles_evicted, engine.stats().profiles_evicted);
    catch_up(&m.links, engine.stats().links);
    catch_up(&m.merges, engine.stats().merges);
    m.identity_linked_ids.set(engine.linked_ids() as i64);
    m.identity_bytes.set(engine.identity_bytes() as i64);
    m.waiting_persons.set(engine.waiting_persons() as i64);
    let wm = engine.watermark();
    if wm != i64::MIN {
        m.watermark_seconds.set(wm / 1000);
    }
    let populations = engine.populations();
    drop(engine);
    m.set_populations(&populations);
}

/// Moves an exported counter up to the engine's running total (never down).
fn catch_up(counter: &prometheus::IntCounter, total: u64) {
    let exported = counter.get();
    if total > exported {
        counter.inc_by(total - exported);
    }
}
