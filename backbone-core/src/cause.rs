//! Correlation and causation without user code: while a handler runs, the event it handles is
//! the task's current [`Cause`], and every [`Producer`](crate::Producer) sending from that
//! task stamps its event with the cause's correlation id and with the handled event's message
//! id as causation id. A whole workflow (order placed → packing → delivery) so shares one
//! correlation id, and each event names the one that led to it.
//!
//! The cause is a Tokio task-local: a task the handler spawns does not inherit it. There, use
//! [`Producer::caused_by`](crate::Producer::caused_by) (or the generated producer's
//! `caused_by(ctx)`) with the handler's metadata.
//!
//! ```
//! use backbone_core::cause::Cause;
//! use backbone_core::{Metadata, MessageId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let handled = Metadata::new(MessageId::new(), "placed", 0, "orders");
//! assert!(Cause::current().is_none());
//! let inside = Cause::of(&handled).scope(async { Cause::current() }).await.unwrap();
//! assert_eq!(inside.causation_id, handled.message_id.to_string());
//! assert_eq!(inside.correlation_id, handled.correlation_id);
//! # }
//! ```

use std::future::Future;

use crate::Metadata;

tokio::task_local! {
    static CAUSE: Cause;
}

/// The event a handler is handling, as the events it sends will name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The handled event's correlation id: the new events' correlation id.
    pub correlation_id: String,
    /// The handled event's message id: the new events' causation id.
    pub causation_id: String,
}

impl Cause {
    /// The cause for events sent while handling the event described by `metadata`.
    pub fn of(metadata: &Metadata) -> Self {
        Cause {
            correlation_id: metadata.correlation_id.clone(),
            causation_id: metadata.message_id.to_string(),
        }
    }

    /// The current task's cause, inside a handler.
    pub fn current() -> Option<Cause> {
        CAUSE.try_with(Cause::clone).ok()
    }

    /// Runs `f` with this as the current cause.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CAUSE.scope(self, f).await
    }
}
