//! The gauges that need a scan of the engine's state (profiles, memory, timers,
//! populations) and the counters the engine keeps itself, refreshed every few seconds and
//! after a reload. Each worker scans its own engine; the metrics show the instance's
//! totals ([`crate::shared::Board::update_gauges`]).

use crate::shared::{Gauges, Shared};

/// Updates the gauges from this worker's engine and the others' last figures. Counters
/// only ever move forward: the engines' running total is added as the difference to what
/// was exported before.
pub fn refresh(shared: &Shared) {
    let engine = shared.engine();
    let mine = Gauges {
        profiles: engine.profile_count(),
        profile_bytes: engine.profile_bytes(),
        pending_timers: engine.pending_timers(),
        timers_fired: engine.stats().timers_fired,
        profiles_evicted: engine.stats().profiles_evicted,
        links: engine.stats().links,
        merges: engine.stats().merges,
        linked_ids: engine.linked_ids(),
        identity_bytes: engine.identity_bytes(),
        waiting_persons: engine.waiting_persons(),
        watermark: engine.watermark(),
        populations: engine.populations(),
    };
    drop(engine);
    let total = shared.board.update_gauges(shared.worker, mine);
    let m = &shared.metrics;
    m.profiles.set(total.profiles as i64);
    m.profile_bytes.set(total.profile_bytes as i64);
    m.pending_timers.set(total.pending_timers as i64);
    catch_up(&m.timers_fired, total.timers_fired);
    catch_up(&m.profiles_evicted, total.profiles_evicted);
    catch_up(&m.links, total.links);
    catch_up(&m.merges, total.merges);
    m.identity_linked_ids.set(total.linked_ids as i64);
    m.identity_bytes.set(total.identity_bytes as i64);
    m.waiting_persons.set(total.waiting_persons as i64);
    if total.watermark != i64::MIN {
        m.watermark_seconds.set(total.watermark / 1000);
    }
    m.set_populations(&total.populations);
}

/// Moves an exported counter up to the engines' running total (never down).
fn catch_up(counter: &prometheus::IntCounter, total: u64) {
    let exported = counter.get();
    if total > exported {
        counter.inc_by(total - exported);
    }
}
