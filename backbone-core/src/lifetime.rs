//! [`ConsumerLifetime`]: the handle of a running consumer.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A running consumer. [`shutdown`](Self::shutdown) stops it gracefully;
/// [`completion`](Self::completion) waits until it stops on its own.
///
/// Dropping the lifetime asks the consumer to stop without waiting for it: keep the lifetime for
/// as long as the consumer should run.
#[derive(Debug)]
pub struct ConsumerLifetime {
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl ConsumerLifetime {
    /// Wraps a consumer task that watches `stop`; channels build these.
    pub fn new(stop: CancellationToken, task: JoinHandle<Result<(), Error>>) -> Self {
        ConsumerLifetime {
            stop,
            task: Some(task),
        }
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
