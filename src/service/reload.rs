//! Reloading the segment definitions while running (SIGHUP, `POST /segments/reload`): the
//! file is compiled against the running engine; an invalid file changes nothing and every
//! error is returned; a valid one replaces the definitions and its transitions (cause
//! `reload`) are produced before the reply.

use segstream_core::engine::ReloadReport;
use tracing::{error, info};

use crate::kafka::{self, Outgoing};
use crate::metrics::{series, ReloadOutcome};
use crate::shared::Shared;

use super::Clients;

/// Reloads this worker's engine with the definitions file `file` read as `text` (read once
/// for every worker by [`crate::shared::Instance::reload`]). The first worker counts the
/// outcome in the metrics.
pub async fn reload(
    clients: &Clients,
    shared: &Shared,
    file: &str,
    text: &str,
) -> Result<ReloadReport, String> {
    let counts = shared.worker == 0;
    let rejected = || {
        if counts {
            series(&shared.metrics.reloads, ReloadOutcome::Rejected).inc();
        }
    };
    let mut transitions = Vec::new();
    let outcome = shared.engine().reload_source(file, text, &mut transitions);
    let report = match outcome {
        Err(diags) => {
            rejected();
            error!(
                errors = diags.len(),
                "segment reload rejected; the running definitions stay:\n{diags}"
            );
            return Err(diags.to_string());
        }
        Ok(report) => report,
    };
    if counts {
        series(&shared.metrics.reloads, ReloadOutcome::Ok).inc();
    }
    info!(
        worker = shared.worker,
        version = %report.version,
        added = ?report.added,
        changed = ?report.changed,
        removed = ?report.removed,
        transitions = report.transitions,
        "segment definitions reloaded"
    );
    let k = &shared.config.kafka;
    let outgoing: Vec<Outgoing> = transitions
        .iter()
        .flat_map(|t| {
            [
                Outgoing::transition(t, &k.output_topic, &k.cloudevents_source),
                Outgoing::membership(t, &k.membership_topic),
            ]
        })
        .collect();
    shared
        .activity()
        .record(transitions, crate::clock::now_millis());
    let produced = if k.exactly_once {
        super::exactly_once::produce_transaction(&clients.producer, &outgoing, &shared.metrics)
            .await
    } else {
        kafka::produce_all(&clients.producer, &outgoing, &shared.metrics).await;
        Ok(())
    };
    if let Err(e) = produced {
        return Err(format!(
            "reloaded, but producing its transitions failed: {e:#}"
        ));
    }
    super::gauges::refresh(shared);
    Ok(report)
}
