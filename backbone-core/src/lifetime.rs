//! [`ConsumerLifetime`]: the handle of a running consumer.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A running consumer. [`shutdown`](Self::shutdown) stops it gracefully;
/// [`completion`](Self::completion) waits until it stops on its own.
///
/// Dropping the lifetime asks the consumer to stop without waiting for it: keep the lifetime for
/// as long as the consumer should run.
pub struct ConsumerLifetime {
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
    probe: Option<Arc<dyn HealthProbe>>,
}

impl std::fmt::Debug for ConsumerLifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLifetime")
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

/// A consumer's state for readiness and liveness probes ([`ConsumerLifetime::health`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Whether its last reads succeeded (on every partition).
    pub connected: bool,
    /// When it last read from its channel (a read that found nothing counts), ms since the
    /// Unix epoch; `None` before its first read.
    pub last_read_ms: Option<u64>,
    /// Events it holds: read, not yet handled and acknowledged.
    pub held: usize,
    /// Why it stopped, once it has (`None` while it runs).
    pub stopped: Option<String>,
}

impl Health {
    /// Ready to take work: running and connected.
    ///
    /// ```
    /// let health = backbone_core::lifetime::Health { connected: true, ..Default::default() };
    /// assert!(health.is_ready());
    /// ```
    pub fn is_ready(&self) -> bool {
        self.connected && self.stopped.is_none()
    }
}

/// What a channel's consumer reports its [`Health`] through.
pub trait HealthProbe: Send + Sync {
    /// The consumer's health now (`stopped` may be left `None`: the lifetime fills it in).
    fn health(&self) -> Health;
}

impl ConsumerLifetime {
    /// Wraps a consumer task that watches `stop`; channels build these.
    pub fn new(stop: CancellationToken, task: JoinHandle<Result<(), Error>>) -> Self {
        ConsumerLifetime {
            stop,
            task: Some(task),
            probe: None,
        }
    }

    /// The same lifetime, reporting its health through `probe`; channels build these.
    pub fn with_probe(mut self, probe: Arc<dyn HealthProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Whether the consumer is connected, when it last read, how many events it holds and
    /// whether (and why) it stopped: for readiness and liveness probes.
    ///
    /// ```
    /// # async fn run(lifetime: backbone_core::ConsumerLifetime) {
    /// let health = lifetime.health();
    /// if !health.is_ready() {
    ///     eprintln!("not ready: {health:?}");
    /// }
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        let mut health = match &self.probe {
            Some(probe) => probe.health(),
            None => Health {
                connected: !self.is_finished(),
                ..Health::default()
            },
        };
        if self.is_finished() && health.stopped.is_none() {
            health.stopped = Some("stopped".into());
        }
        if health.stopped.is_some() {
            health.connected = false;
        }
        health
    }

    /// Stops reading, lets the event in hand finish and be acknowledged, then returns.
    /// Returns the consumer's error if it had already failed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.stop.cancel();
        self.join().await
    }

    /// Resolves when the consumer stops on its own: `Ok` when `max_messages` were handled, `Err`
    /// on a fatal error.
    pub async fn completion(mut self) -> Result<(), Error> {
        self.join().await
    }

    /// Whether the consumer has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    async fn join(&mut self) -> Result<(), Error> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::Stopped(format!(
                    "consumer stopped: its task failed: {e}"
                ))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for ConsumerLifetime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_task_says_the_consumer_stopped() {
        let task = tokio::spawn(async { panic!("boom") });
        let lifetime = ConsumerLifetime::new(CancellationToken::new(), task);
        let err = lifetime.completion().await.unwrap_err();
        assert!(matches!(err, Error::Stopped(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with("consumer stopped: its task failed: "),
            "{text}"
        );
    }
}
