//! [`ConsumerContext`]: what a handler gets besides the event's parameters, and [`AckMode`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Error, Metadata};

/// When a consumer acknowledges an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// After the handler returns `Ok(())` (the default).
    #[default]
    OnSuccess,
    /// Only when the handler calls [`ConsumerContext::ack`].
    Manual,
}

/// The channel's side of [`ConsumerContext::ack`]: acknowledges one delivered entry.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// Acknowledges the entry described by `metadata` for the consumer's group.
    async fn ack(&self, metadata: &Metadata) -> Result<(), Error>;
}

/// Passed to every handler call: the event's [`Metadata`] and a way to acknowledge it.
pub struct ConsumerContext {
    metadata: Metadata,
    acker: Arc<dyn Acknowledge>,
    acked: AtomicBool,
}

impl ConsumerContext {
    /// A context for one delivery; channels build these.
    pub fn new(metadata: Metadata, acker: Arc<dyn Acknowledge>) -> Self {
        ConsumerContext {
            metadata,
            acker,
            acked: AtomicBool::new(false),
        }
    }

    /// The event's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Acknowledges the event now. Needed in [`AckMode::Manual`]; in
    /// [`AckMode::OnSuccess`] it acknowledges early. Calling it twice acknowledges once.
    pub async fn ack(&self) -> Result<(), Error> {
        if self.acked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.acker.ack(&self.metadata).await;
        if result.is_err() {
            self.acked.store(false, Ordering::Release);
        }
        result
    }

    /// Whether [`ack`](Self::ack) succeeded for this delivery.
    pub fn is_acked(&self) -> bool {
        self.acked.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for ConsumerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerContext")
            .field("metadata", &self.metadata)
            .field("acked", &self.is_acked())
            .finish()
    }
}
