//! One retry policy and one classification of errors, shared by every loop that talks to Redis:
//! producer sends, the consumer's reader, fetcher and claimer, and projections.
//!
//! [`classify`] says what an error means for the caller: wait and try again
//! ([`ErrorClass::Transient`]), stop ([`ErrorClass::Fatal`]), give up on one event
//! ([`ErrorClass::BadEvent`]), or take a refusal that retrying the same command will not change
//! ([`ErrorClass::Refused`]). [`Backoff`] says how long to wait between tries.
//!
//! ```
//! use backbone_core::Error;
//! use backbone_redis::retry::{classify, ErrorClass};
//!
//! let bad = Error::malformed("1-0", "field `version` is missing");
//! assert_eq!(classify(&bad), ErrorClass::BadEvent);
//! ```

use std::time::Duration;

use backbone_core::Error;
use redis::{ErrorKind, RedisError};

/// What an error means for whoever got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Redis could not be reached, or asked to wait: an I/O error, a timeout, a dropped or
    /// refused connection, `LOADING`, `TRYAGAIN`, `BUSY`, `CLUSTERDOWN`, `MASTERDOWN`. The same
    /// command may succeed later.
    Transient,
    /// Retrying cannot help and the caller must stop: authentication failed or was lost
    /// (`NOAUTH`, `WRONGPASS`, a failed `AUTH` while reconnecting), a permission is missing
    /// (`NOPERM`), or the consumer group is gone (`NOGROUP`).
    Fatal,
    /// One event is bad (malformed entry, missing payload, undecodable parameter, unknown
    /// operation); the channel is fine.
    BadEvent,
    /// Redis, or a check of backbone's own, refused this command for another reason
    /// (`WRONGTYPE`, a failed script check, an invalid argument): sending it again unchanged
    /// gets the same answer, but the channel itself may be fine.
    Refused,
}

impl ErrorClass {
    /// True for [`ErrorClass::Fatal`].
    ///
    /// ```
    /// assert!(backbone_redis::retry::ErrorClass::Fatal.is_fatal());
    /// ```
    pub fn is_fatal(self) -> bool {
        self == ErrorClass::Fatal
    }

    /// True for [`ErrorClass::Transient`].
    ///
    /// ```
    /// assert!(backbone_redis::retry::ErrorClass::Transient.is_transient());
    /// ```
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Transient
    }
}

/// The class of a backbone [`Error`]: a [`Error::Channel`] wrapping a Redis error is classified
/// by that error (see [`ErrorClass`]), a bad event by [`Error::is_bad_event`]; anything else
/// (a configuration error, an encoding error, a stopped consumer) is [`ErrorClass::Refused`].
///
/// ```
/// use backbone_core::Error;
/// use backbone_redis::retry::{classify, ErrorClass};
///
/// let down = Error::channel("XADD", redis::RedisError::from(std::io::Error::from(
///     std::io::ErrorKind::ConnectionRefused,
/// )));
/// assert_eq!(classify(&down), ErrorClass::Transient);
/// assert_eq!(classify(&Error::Config("no uri".into())), ErrorClass::Refused);
/// ```
pub fn classify(e: &Error) -> ErrorClass {
    if e.is_bad_event() {
        return ErrorClass::BadEvent;
    }
    match e {
        Error::Channel { source, .. } => source
            .downcast_ref::<RedisError>()
            .map_or(ErrorClass::Refused, classify_redis),
        _ => ErrorClass::Refused,
    }
}

/// The class of a redis-rs error (see [`ErrorClass`]).
///
/// ```
/// use backbone_redis::retry::{classify_redis, ErrorClass};
///
/// let timeout = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
/// assert_eq!(classify_redis(&timeout), ErrorClass::Transient);
/// ```
pub fn classify_redis(e: &RedisError) -> ErrorClass {
    if e.kind() == ErrorKind::AuthenticationFailed {
        return ErrorClass::Fatal;
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorClass::Transient;
    }
    match e.code() {
        Some("NOAUTH" | "WRONGPASS" | "NOPERM" | "NOGROUP") => ErrorClass::Fatal,
        Some("LOADING" | "TRYAGAIN" | "BUSY" | "CLUSTERDOWN" | "MASTERDOWN") => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Refused,
    }
}

/// Exponential backoff: `first`, doubling up to `max`. Every retry loop of the crate uses one,
/// each with the bounds it documents (see the named constructors).
///
/// ```
/// use std::time::Duration;
/// use backbone_redis::retry::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(backoff.next(), Duration::from_millis(100));
/// assert_eq!(backoff.next(), Duration::from_millis(200));
/// assert_eq!(backoff.next(), Duration::from_millis(300));
/// assert_eq!(backoff.next(), Duration::from_millis(300));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `first` doubling to `max`.
    ///
    /// ```
    /// let backoff = backbone_redis::retry::Backoff::new(
    ///     std::time::Duration::from_millis(50),
    ///     std::time::Duration::from_secs(1),
    /// );
    /// ```
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            next: first,
            max,
        }
    }

    /// A producer's send retries: 50 ms doubling to 1 s (within `send_timeout`).
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::send();
    /// assert_eq!(b.next(), std::time::Duration::from_millis(50));
    /// ```
    pub fn send() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// A consumer's reads and projections' reads and checkpoints: 100 ms doubling to 5 s.
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::read();
    /// assert_eq!(b.next(), std::time::Duration::from_millis(100));
    /// ```
    pub fn read() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// A consumer's payload fetches: 50 ms doubling to 5 s.
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::fetch();
    /// assert_eq!(b.next(), std::time::Duration::from_millis(50));
    /// ```
    pub fn fetch() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// A first connection: 200 ms doubling to 1 s (4 tries take about 1.5 s).
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::connect();
    /// assert_eq!(b.next(), std::time::Duration::from_millis(200));
    /// ```
    pub fn connect() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(1))
    }

    /// The delay to wait now; the next one is twice as long, up to `max`.
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::send();
    /// let first = b.next();
    /// assert!(b.next() > first);
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay [`next`](Self::next) would return, without moving on.
    ///
    /// ```
    /// let b = backbone_redis::retry::Backoff::read();
    /// assert_eq!(b.peek(), std::time::Duration::from_millis(100));
    /// ```
    pub fn peek(&self) -> Duration {
        self.next.min(self.max)
    }

    /// Starts over from the first delay (after a success).
    ///
    /// ```
    /// let mut b = backbone_redis::retry::Backoff::read();
    /// b.next();
    /// b.reset();
    /// assert_eq!(b.next(), std::time::Duration::from_millis(100));
    /// ```
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}
