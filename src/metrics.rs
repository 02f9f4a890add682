//! Prometheus metrics, registered in one place. Labels are low-cardinality only (topic,
//! partition, outcome, reason, segment, direction): never a customer id.
//!
//! Label values come from enums ([`Label`]): the series of every value are created at
//! start-up ([`Metrics::init_series`]) and the strings exist once, in the enum.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use segstream_core::event::RejectReason;
use segstream_core::transition::Direction;

/// A closed set of label values.
pub trait Label: Copy + 'static {
    /// Every value.
    const ALL: &'static [Self];
    /// The label value.
    fn as_str(self) -> &'static str;
}

/// Declares a label enum: its variants with their label values, `ALL` and `as_str`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value),+
                }
            }
        }
    };
}

label_enum! {
    /// What became of a consumed input message.
    EventOutcome {
        /// Applied to the engine.
        Accepted => "accepted",
        /// Invalid: a dead letter.
        Rejected => "rejected",
        /// Older than the watermark: a dead letter.
        Late => "late",
    }
}

label_enum! {
    /// A segment reload's outcome.
    ReloadOutcome {
        Ok => "ok",
        Rejected => "rejected",
    }
}

label_enum! {
    /// A consumer-group rebalance callback.
    RebalanceKind {
        Assign => "assign",
        Revoke => "revoke",
        Error => "error",
    }
}

label_enum! {
    /// A record written to the persons topic (`kafka.router`).
    PersonsKind {
        /// An input event the router put on its person's partition.
        Event => "event",
        /// An event forwarded to the shard its person lives in now.
        Forward => "forward",
        /// A merge handoff: asking an id's home for its person.
        MergeRequest => "merge_request",
        /// A merge handoff: a person handed over to the survivor's shard.
        Transfer => "transfer",
        /// A forget handoff: an id homed elsewhere points nowhere any more.
        ForgetId => "forget_id",
        /// A merge request ended without a transfer: the survivor's held events go on.
        Release => "release",
        /// The router's word that an input partition is caught up and quiet: it no longer
        /// holds the shards' event time back (until its next event).
        SourceQuiet => "source_quiet",
    }
}

label_enum! {
    /// A changelog entry written.
    ChangelogKind {
        /// A customer's profile record.
        Record => "record",
        /// A profile removed (forget, TTL).
        Tombstone => "tombstone",
        /// An identity entry (an id that joined a person, or left with it).
        Identity => "identity",
    }
}

label_enum! {
    /// Why a link of two ids was refused.
    RefusalLabel {
        /// One of the ids is on `engine.identity.blocked_ids`.
        BlockedId => "blocked_id",
        /// The person would have more than `engine.identity.max_ids` ids.
        TooManyIds => "too_many_ids",
    }
}

impl RefusalLabel {
    /// The label of an engine refusal.
    pub fn of(r: &segstream_core::engine::Refusal) -> Self {
        match r {
            segstream_core::engine::Refusal::Blocked(_) => RefusalLabel::BlockedId,
            segstream_core::engine::Refusal::TooManyIds { .. } => RefusalLabel::TooManyIds,
        }
    }
}

label_enum! {
    /// A changelog entry read while restoring.
    RestoreOutcome {
        Restored => "restored",
        Tombstone => "tombstone",
        /// Unreadable (foreign, truncated): skipped with a warning.
        Invalid => "invalid",
    }
}

impl Label for RejectReason {
    const ALL: &'static [Self] = RejectReason::ALL;
    fn as_str(self) -> &'static str {
        RejectReason::as_str(self)
    }
}

impl Label for Direction {
    const ALL: &'static [Self] = Direction::ALL;
    fn as_str(self) -> &'static str {
        Direction::as_str(self)
    }
}

/// The counter of one label value of a one-label counter family.
pub fn series<L: Label>(family: &IntCounterVec, value: L) -> IntCounter {
    family.with_label_values(&[value.as_str()])
}

/// Every metric segstream exports.
pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounterVec,
    pub processing_seconds: Histogram,
    /// Batches committed together in one at-least-once round.
    pub commit_round_batches: Histogram,
    pub event_to_transition_seconds: Histogram,
    pub transitions: IntCounterVec,
    pub segment_population: IntGaugeVec,
    pub dead_letters: IntCounterVec,
    pub late_events: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub profiles: IntGauge,
    pub profile_bytes: IntGauge,
    pub pending_timers: IntGauge,
    pub rebalances: IntCounterVec,
    pub reloads: IntCounterVec,
    pub ready: IntGauge,
    pub produce_retries: IntCounter,
    pub input_paused: IntGauge,
    pub input_pauses: IntCounter,
    pub dead_letters_degraded: IntCounter,
    pub timers_fired: IntCounter,
    pub profiles_evicted: IntCounter,
    pub persons_records: IntCounterVec,
    pub duplicates_skipped: IntCounter,
    pub held_events: IntGauge,
    pub waiting_persons: IntGauge,
    pub links: IntCounter,
    pub merges: IntCounter,
    pub links_refused: IntCounterVec,
    pub identity_linked_ids: IntGauge,
    pub identity_bytes: IntGauge,
    pub watermark_seconds: IntGauge,
    pub changelog_records: IntCounterVec,
    pub restore_records: IntCounterVec,
    pub restoring_partitions: IntGauge,
    pub restore_remaining: IntGauge,
    pub restore_seconds: Histogram,
    pub state_dropped: IntCounter,
    /// The segments that have a population series (a removed segment's series is removed).
    population_series: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
        60.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("segstream".into()), None).expect("valid prefix");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let gauge = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let counter = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let histogram = |name: &str, help: &str| {
            let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets_seconds()))
                .expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Metrics {
            events_consumed: counter_vec(
                "events_consumed_total",
                "Input messages consumed, by topic and outcome (accepted, rejected, late).",
                &["topic", "outcome"],
            ),
            processing_seconds: histogram(
                "batch_processing_seconds",
                "Time to process one batch of input messages, from poll to offsets stored.",
            ),
            commit_round_batches: {
                let m = Histogram::with_opts(
                    HistogramOpts::new(
                        "commit_round_batches",
                        "Batches whose effects were committed together in one at-least-once round (above 1: acknowledgements lag the input, and the batches wait for them in memory).",
                    )
                    .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0]),
                )
                .expect("valid metric");
                registry
                    .register(Box::new(m.clone()))
                    .expect("registered once");
                m
            },
            event_to_transition_seconds: histogram(
                "event_to_transition_latency_seconds",
                "Wall-clock time from an event's timestamp (or a timer's deadline) to the broker's acknowledgement of the transition it caused.",
            ),
            transitions: counter_vec(
                "transitions_total",
                "Segment transitions produced, by segment and direction.",
                &["segment", "direction"],
            ),
            segment_population: gauge_vec(
                "segment_population",
                "Customers currently in each segment.",
                &["segment"],
            ),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Messages sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            late_events: counter(
                "late_events_total",
                "Events older than the watermark (also counted as dead letters with reason late_event).",
            ),
            consumer_lag: gauge_vec(
                "consumer_lag_messages",
                "Consumer lag per assigned partition, from librdkafka statistics.",
                &["topic", "partition"],
            ),
            profiles: gauge("profiles", "Customer profiles in memory."),
            profile_bytes: gauge(
                "profile_memory_bytes",
                "Estimated bytes of profile state (profiles, keys, map slots).",
            ),
            pending_timers: gauge("pending_timers", "Customers with a pending timer."),
            rebalances: counter_vec(
                "rebalances_total",
                "Consumer group rebalances, by kind (assign, revoke, error).",
                &["kind"],
            ),
            reloads: counter_vec(
                "segment_reloads_total",
                "Segment definition reloads, by outcome (ok, rejected).",
                &["outcome"],
            ),
            ready: gauge(
                "ready",
                "1 when partitions are assigned and the input is caught up, else 0.",
            ),
            produce_retries: counter(
                "produce_retries_total",
                "Transitions or dead letters produced again after a delivery failure.",
            ),
            input_paused: gauge(
                "input_paused",
                "1 while the input is paused because a batch's output cannot be delivered (backpressure).",
            ),
            input_pauses: counter(
                "input_pauses_total",
                "Times the input was paused because a batch's output was slow or unavailable.",
            ),
            dead_letters_degraded: counter(
                "dead_letters_degraded_total",
                "Dead letters sent in a smaller form (value cut or left out) because the producer or the broker refused the full one.",
            ),
            timers_fired: counter("timers_fired_total", "Customer timers fired."),
            persons_records: counter_vec(
                "persons_records_total",
                "Records written to the persons topic, by kind (event: routed by the router; forward; merge_request, transfer, forget_id, release: handoffs between shards).",
                &["kind"],
            ),
            held_events: gauge(
                "identity_held_events",
                "Events held while their person is being merged with a person of another instance.",
            ),
            waiting_persons: gauge(
                "identity_waiting_persons",
                "Persons waiting for a merge with a person of another instance (their events are held).",
            ),
            duplicates_skipped: counter(
                "duplicates_skipped_total",
                "Routed or forwarded events read again after a crash upstream and skipped (applied before).",
            ),
            links: counter(
                "identity_links_total",
                "Events that linked two ids (an event with a customer and an anonymous id, or an alias).",
            ),
            merges: counter(
                "identity_merges_total",
                "Persons merged into another (an anonymous visitor became known, or two ids were linked).",
            ),
            links_refused: counter_vec(
                "identity_links_refused_total",
                "Links refused, by reason (blocked_id, too_many_ids); the event itself was applied.",
                &["reason"],
            ),
            identity_linked_ids: gauge(
                "identity_linked_ids",
                "Ids that belong to another id's person (the identity map's entries).",
            ),
            identity_bytes: gauge(
                "identity_memory_bytes",
                "Estimated bytes of the identity map.",
            ),
            profiles_evicted: counter(
                "profiles_evicted_total",
                "Profiles evicted (least recently active, exits with cause `evicted`) to stay within engine.max_profiles.",
            ),
            watermark_seconds: gauge(
                "watermark_seconds",
                "The event-time watermark, as Unix seconds.",
            ),
            changelog_records: counter_vec(
                "changelog_records_total",
                "Profile records written to the changelog, by kind (record, tombstone).",
                &["kind"],
            ),
            restore_records: counter_vec(
                "restore_records_total",
                "Changelog entries read while restoring, by outcome (restored, tombstone, invalid).",
                &["outcome"],
            ),
            restoring_partitions: gauge(
                "restoring_partitions",
                "Partitions whose state is being restored from the changelog (not ready meanwhile).",
            ),
            restore_remaining: gauge(
                "restore_remaining_records",
                "Changelog entries still to read before the restoring partitions are ready.",
            ),
            restore_seconds: histogram(
                "restore_seconds",
                "Duration of one restore (all partitions newly assigned in one rebalance).",
            ),
            state_dropped: counter(
                "state_dropped_profiles_total",
                "Profiles dropped because their partition moved to another instance.",
            ),
            registry,
            population_series: Default::default(),
        }
    }

    /// Creates the labelled series that should read 0 before anything happened, so that
    /// `increase()` and `rate()` see their first increment.
    pub fn init_series(&self) {
        fn all<L: Label>(family: &IntCounterVec) {
            for v in L::ALL {
                series(family, *v);
            }
        }
        all::<ReloadOutcome>(&self.reloads);
        all::<RejectReason>(&self.dead_letters);
        all::<RebalanceKind>(&self.rebalances);
        all::<ChangelogKind>(&self.changelog_records);
        all::<RestoreOutcome>(&self.restore_records);
        all::<RefusalLabel>(&self.links_refused);
        all::<PersonsKind>(&self.persons_records);
    }

    /// Sets the population of every segment; segments no longer defined lose their series
    /// (the others are overwritten in place, so a scrape never sees them missing).
    pub fn set_populations(&self, populations: &[(std::sync::Arc<str>, usize)]) {
        let mut known = self
            .population_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: std::collections::BTreeSet<String> =
            populations.iter().map(|(s, _)| s.to_string()).collect();
        for gone in known.difference(&now) {
            let _ = self.segment_population.remove_label_values(&[gone]);
        }
        for (segment, n) in populations {
            self.segment_population
                .with_label_values(&[&**segment])
                .set(*n as i64);
        }
        *known = now;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
