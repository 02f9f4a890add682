//! The service as a task of the current tokio runtime: what the tests, the demo and the
//! load benchmark start, so that all of them run exactly the code `main` runs.

use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

use super::{run, Running};

/// A service started in the background. Dropping the handle does not stop it: call
/// [`Background::stop`] (graceful) or [`Background::kill`] (a crash: nothing drains).
pub struct Background {
    pub running: Running,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Background {
    /// Starts [`run`] with `config` and waits until it serves (or fails to start within
    /// `start_timeout`).
    pub async fn start(config: Config, start_timeout: Duration) -> anyhow::Result<Background> {
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stop.clone();
        let task = tokio::spawn(run(config, async move { s.cancelled().await }, Some(tx)));
        match tokio::time::timeout(start_timeout, rx).await {
            Ok(Ok(running)) => Ok(Background {
                running,
                stop,
                task,
            }),
            Ok(Err(_)) => match task.await {
                Ok(Ok(())) => anyhow::bail!("the service stopped before it served"),
                Ok(Err(e)) => Err(e.context("the service failed to start")),
                Err(e) => Err(anyhow::anyhow!("the service panicked while starting: {e}")),
            },
            Err(_) => {
                task.abort();
                anyhow::bail!("the service did not start within {start_timeout:?}")
            }
        }
    }

    /// The base URL of its HTTP API (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.running.http_addr)
    }

    /// Asks it to drain and stop, and waits (at most `timeout`) for its result.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(timeout, self.task)
            .await
            .context("the service did not stop in time")?
            .context("the service panicked")?
    }

    /// Stops it at once, as a crash would: the task is aborted mid-batch, nothing is
    /// flushed or committed by the service.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Whether it has stopped by itself (an error, or shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}
