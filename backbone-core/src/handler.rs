//! What a consumer's handler returns: [`HandlerResult`] and [`HandlerError`].

use std::fmt;

use crate::error::BoxError;

/// The result of one handler call. `Ok(())` means the event was handled.
pub type HandlerResult = Result<(), HandlerError>;

/// Whether a failed event should be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A transient failure: deliver the event again later.
    Retry,
    /// A permanent failure: trying again cannot help.
    Fatal,
}

/// Why a handler failed. Any error converts into it, so `?` and `Err("reason".into())` work;
/// the default kind is [`FailureKind::Retry`].
///
/// ```
/// use backbone_core::{HandlerError, HandlerResult, FailureKind};
///
/// fn check(amount: i64) -> HandlerResult {
///     if amount < 0 {
///         return Err(HandlerError::fatal("negative amount"));
///     }
///     let _parsed: u32 = "42".parse()?; // any std error works with `?`
///     Err("not implemented yet".into())
/// }
///
/// assert_eq!(check(-1).unwrap_err().kind(), FailureKind::Fatal);
/// let err = check(1).unwrap_err();
/// assert_eq!(err.kind(), FailureKind::Retry);
/// assert_eq!(err.to_string(), "not implemented yet");
/// ```
pub struct HandlerError {
    kind: FailureKind,
    error: BoxError,
    unhandled: bool,
}

impl HandlerError {
    /// A failure worth retrying (the same as converting the error with `?` or `.into()`).
    pub fn retry(error: impl Into<BoxError>) -> Self {
        HandlerError {
            kind: FailureKind::Retry,
            error: error.into(),
            unhandled: false,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        HandlerError {
            kind: FailureKind::Fatal,
            error: error.into(),
            unhandled: false,
        }
    }

    /// What a consumer's default `fallback` returns for an event its contract does not know:
    /// not handled, so the consumer's `on_unknown` policy decides (see
    /// [`contract::unhandled`](crate::contract::unhandled)).
    pub fn unhandled() -> Self {
        HandlerError {
            unhandled: true,
            ..HandlerError::fatal(
                "the contract does not know this event and no fallback handled it",
            )
        }
    }

    /// Whether this is [`unhandled`](Self::unhandled).
    pub fn is_unhandled(&self) -> bool {
        self.unhandled
    }

    /// Whether this failure should be retried.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// True for [`FailureKind::Fatal`].
    pub fn is_fatal(&self) -> bool {
        self.kind == FailureKind::Fatal
    }

    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::retry(error)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}
