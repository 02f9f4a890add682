//! State shared by the processing loop and the HTTP handlers.
//!
//! Locking rule: the engine sits behind a std [`Mutex`]. Nothing awaits while holding it
//! (every holder is synchronous code between two awaits), so a std mutex is right and
//! cheaper than an async one; never hold its guard across an `.await`.

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
    pub reply: oneshot::Sender<Result<ReloadReport, String>>,
}

/// State shared between the processing loop and the HTTP handlers.
pub struct Shared {
    /// The engine (see the module's locking rule).
    pub engine: Mutex<Engine>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Whether the service is caught up with its input and the broker is healthy.
    pub ready: AtomicBool,
    pub reloads: mpsc::Sender<ReloadRequest>,
    pub kafka: Arc<KafkaState>,
}

impl Shared {
    /// Asks the processing loop to reload the definitions and waits for the outcome.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        let (tx, rx) = oneshot::channel();
        self.reloads
            .send(ReloadRequest { reply: tx })
            .await
            .map_err(|_| "the service is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the service is shutting down".to_string())?
    }

    /// Sets readiness (the flag `/readyz` reads and the `ready` gauge).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(ready));
    }

    /// The engine, locked (see the module's locking rule).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }
}

/// Locks a mutex. A panic while it was held (a bug) poisons it; the service goes on with
/// the state as the panicking call left it rather than stopping every later request.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
