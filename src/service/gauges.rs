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
    let fired = engine.stats().timers_fired;
    let exported = m.timers_fired.get();
    if fired > exported {
        m.timers_fired.inc_by(fired - exported);
    }
    let wm = engine.watermark();
    if wm != i64::MIN {
        m.watermark_seconds.set(wm / 1000);
    }
    let populations = engine.populations();
    drop(engine);
    m.set_populations(&populations);
}
