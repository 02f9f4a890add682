//! State shared by the workers and the HTTP handlers.
//!
//! An instance runs `engine.workers` workers, like Kafka Streams' stream threads: each is
//! a member of the consumer group with its own consumer, producer and engine, on a thread
//! of its own, and owns the partitions the group gives it. Nothing is shared between
//! workers on the hot path: a worker's [`Shared`] holds its engine, and only the
//! [`Board`] (readiness and gauge totals, touched every few seconds) is common to all.
//! The HTTP handlers see every worker through [`Instance`].
//!
//! Locking rule: a worker's engine sits behind a std [`Mutex`], taken per message and per
//! step of a batch, never for a whole batch. Nothing awaits while holding it (every holder
//! is synchronous code between two awaits), so a std mutex is right and cheaper than an
//! async one; never hold its guard across an `.await`. An HTTP read therefore waits at most
//! for one message's application on one worker, never for a batch or a produce.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use segstream_core::engine::{Engine, ReloadReport};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::kafka::KafkaState;
use crate::metrics::Metrics;

/// A request to reload the segment definitions; the reply carries the report or every
/// error of the rejected file.
pub struct ReloadRequest {
    /// The definitions file's name and text (read once for every worker).
    pub file: String,
    pub text: String,
    pub reply: oneshot::Sender<Result<ReloadReport, String>>,
}

/// The state of one worker, shared between its processing loop and the HTTP handlers.
pub struct Shared {
    /// The worker's number, from 0.
    pub worker: usize,
    /// The worker's engine (see the module's locking rule).
    pub engine: Mutex<Engine>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Whether this worker is caught up with its input and the broker is healthy.
    pub ready: AtomicBool,
    pub reloads: mpsc::Sender<ReloadRequest>,
    /// The worker's consumer: its assignment, rebalances, broker health.
    pub kafka: Arc<KafkaState>,
    /// What the workers of the instance have in common.
    pub board: Arc<Board>,
    /// Entries and exits per segment over the last hour and day.
    pub activity: Mutex<crate::activity::Activity>,
}

/// What the workers of one instance have in common: readiness and the gauges that sum
/// over their engines.
pub struct Board {
    ready: Vec<AtomicBool>,
    gauges: Mutex<Vec<Gauges>>,
    /// Workers whose output is stalled (a commit slower than the backpressure threshold):
    /// while any is, every worker keeps its input paused (`service::backpressure`).
    stalled: std::sync::atomic::AtomicUsize,
}

/// One worker's part of the engine gauges.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub profiles: usize,
    pub profile_bytes: usize,
    pub pending_timers: usize,
    pub timers_fired: u64,
    pub profiles_evicted: u64,
    pub links: u64,
    pub merges: u64,
    pub linked_ids: usize,
    pub identity_bytes: usize,
    pub waiting_persons: usize,
    /// `i64::MIN` before the first event.
    pub watermark: i64,
    pub populations: Vec<(Arc<str>, usize)>,
}

impl Board {
    pub fn new(workers: usize) -> Self {
        Board {
            ready: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            gauges: Mutex::new(vec![Gauges::default(); workers]),
            stalled: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Workers whose output is stalled now.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }

    /// One more worker's output stalled (`true`) or delivered again (`false`); returns how
    /// many are stalled now.
    pub fn set_stalled(&self, stalled: bool) -> usize {
        if stalled {
            self.stalled.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.stalled.fetch_sub(1, Ordering::SeqCst) - 1
        }
    }

    /// Whether every worker is ready.
    pub fn all_ready(&self) -> bool {
        self.ready.iter().all(|r| r.load(Ordering::SeqCst))
    }

    /// Stores worker `w`'s gauges and returns the instance's totals: counts summed, the
    /// watermark the lowest of the workers that have one, populations summed per segment
    /// (in the order of the definitions).
    pub fn update_gauges(&self, w: usize, mine: Gauges) -> Gauges {
        let mut all = lock(&self.gauges);
        all[w] = mine;
        let mut total = Gauges {
            watermark: i64::MAX,
            ..Gauges::default()
        };
        for g in all.iter() {
            total.profiles += g.profiles;
            total.profile_bytes += g.profile_bytes;
            total.pending_timers += g.pending_timers;
            total.timers_fired += g.timers_fired;
            total.profiles_evicted += g.profiles_evicted;
            total.links += g.links;
            total.merges += g.merges;
            total.linked_ids += g.linked_ids;
            total.identity_bytes += g.identity_bytes;
            total.waiting_persons += g.waiting_persons;
            if g.watermark != i64::MIN {
                total.watermark = total.watermark.min(g.watermark);
            }
        }
        if total.watermark == i64::MAX {
            total.watermark = i64::MIN;
        }
        // Every worker runs the same definitions; one that has not reported yet is skipped,
        // one that reloaded a moment earlier than the others contributes by name.
        let w_defs = &all[w].populations;
        total.populations = w_defs
            .iter()
            .map(|(name, _)| {
                let n = all
                    .iter()
                    .flat_map(|g| g.populations.iter())
                    .filter(|(s, _)| s == name)
                    .map(|(_, n)| n)
                    .sum();
                (name.clone(), n)
            })
            .collect();
        total
    }
}

impl Shared {
    /// Asks the worker's loop to reload the definitions from `text` and waits for the
    /// outcome.
    pub async fn reload(&self, file: &str, text: &str) -> Result<ReloadReport, String> {
        let (tx, rx) = oneshot::channel();
        self.reloads
            .send(ReloadRequest {
                file: file.to_string(),
                text: text.to_string(),
                reply: tx,
            })
            .await
            .map_err(|_| "the service is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the service is shutting down".to_string())?
    }

    /// Sets this worker's readiness; the `ready` gauge (and `/readyz`) say whether every
    /// worker is ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.board.ready[self.worker].store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(self.board.all_ready()));
    }

    /// The engine, locked (see the module's locking rule).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    /// The worker's segment activity, locked.
    pub fn activity(&self) -> MutexGuard<'_, crate::activity::Activity> {
        lock(&self.activity)
    }
}

/// Every worker of the instance: what the HTTP handlers and the tests see.
pub struct Instance {
    pub workers: Vec<Arc<Shared>>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
}

impl Instance {
    /// Whether the instance is ready: every worker caught up and healthy, and the group
    /// has given the instance at least one partition.
    pub fn ready(&self) -> bool {
        self.workers.iter().all(|w| w.ready.load(Ordering::SeqCst)) && self.assigned() > 0
    }

    /// Partitions assigned over all workers.
    pub fn assigned(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.kafka.assigned.load(Ordering::SeqCst))
            .sum()
    }

    /// Whether every worker's broker connection is healthy.
    pub fn healthy(&self) -> bool {
        self.workers.iter().all(|w| w.kafka.healthy())
    }

    /// Calls `f` with each worker's engine in turn (each locked only for its call) until
    /// it returns something.
    pub fn find<T>(&self, mut f: impl FnMut(&Engine) -> Option<T>) -> Option<T> {
        self.workers.iter().find_map(|w| f(&w.engine()))
    }

    /// Calls `f` with each worker's engine in turn (each locked only for its call).
    pub fn each(&self, mut f: impl FnMut(&Engine)) {
        for w in &self.workers {
            f(&w.engine());
        }
    }

    /// Reloads the definitions file on every worker. The file is read once, so every
    /// worker accepts or rejects the same text; the report sums the transitions.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let (file, text) = match crate::definitions::read(&self.config.segments.file) {
            Ok(t) => t,
            Err(diags) => {
                crate::metrics::series(
                    &self.metrics.reloads,
                    crate::metrics::ReloadOutcome::Rejected,
                )
                .inc();
                return Err(diags.to_string());
            }
        };
        let mut report: Option<ReloadReport> = None;
        for w in &self.workers {
            let r = w.reload(&file, &text).await?;
            match &mut report {
                None => report = Some(r),
                Some(total) => total.transitions += r.transitions,
            }
        }
        report.ok_or_else(|| "no worker is running".to_string())
    }
}

/// Locks a mutex. A panic while it was held (a bug) poisons it; the service goes on with
/// the state as the panicking call left it rather than stopping every later request.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
