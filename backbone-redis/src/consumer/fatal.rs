//! The error that ends the consumer, raised by whichever of its tasks meets it first.

use std::sync::{Mutex, PoisonError};

use backbone_core::Error;
use tokio_util::sync::CancellationToken;

use crate::retry::classify;

/// The error that ends the consumer. Whichever task meets an error that retrying cannot fix
/// ([`ErrorClass::Fatal`](crate::retry::ErrorClass::Fatal): authentication failed or lost, a
/// permission missing, the group gone) raises it here; the worker then stops, letting the
/// handlers in flight finish within the grace period, and returns the first error raised.
#[derive(Default)]
pub(super) struct Fatal {
    first: Mutex<Option<Error>>,
    raised: CancellationToken,
}

impl Fatal {
    /// Raises `e` if it is fatal and gives it back otherwise, for the caller to retry or log.
    pub fn raise_if_fatal(&self, e: Error) -> Option<Error> {
        if !classify(&e).is_fatal() {
            return Some(e);
        }
        self.raise(e);
        None
    }

    /// Raises `e`, whatever its class: the consumer cannot go on.
    pub fn raise(&self, e: Error) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() && !self.raised.is_cancelled() {
            *first = Some(e);
        } else {
            tracing::error!(error = %e, "another error that ends the consumer");
        }
        self.raised.cancel();
    }

    /// Whether an error was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.is_cancelled()
    }

    /// Resolves once an error was raised.
    pub async fn raised(&self) {
        self.raised.cancelled().await
    }

    /// The first error raised, if any (once).
    pub fn take(&self) -> Option<Error> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
