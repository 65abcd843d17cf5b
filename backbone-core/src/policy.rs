//! What a consumer does with events that fail: [`RetryPolicy`] and [`UnknownPolicy`].

use std::time::Duration;

/// How often, and how far apart, a consumer delivers a failing event again before it gives up
/// and moves the event to the dead-letter stream.
///
/// The delay before delivery `n + 1` is `base_delay * 2^(n - 1)`, at most `max_delay`.
///
/// ```
/// use std::time::Duration;
/// use backbone_core::RetryPolicy;
///
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.max_deliveries, 5);
/// assert_eq!(policy.delay_after(1), Duration::from_millis(100));
/// assert_eq!(policy.delay_after(3), Duration::from_millis(400));
/// assert_eq!(policy.delay_after(30), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failed delivery (default 100 ms).
    pub base_delay: Duration,
    /// The longest delay (default 10 s).
    pub max_delay: Duration,
    /// Deliveries before an event is dead-lettered, the first included (default 5). 1 means no
    /// retry.
    pub max_deliveries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_deliveries: 5,
        }
    }
}

impl RetryPolicy {
    /// The delay before delivering again an event whose `deliveries`-th delivery failed.
    pub fn delay_after(&self, deliveries: u32) -> Duration {
        let doublings = deliveries.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// What a consumer does with an event whose operation (or version) its contract does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Move it to the dead-letter stream with the reason (the default).
    #[default]
    DeadLetter,
    /// Acknowledge it and go on (logged at debug level): for groups that only care about some
    /// operations of a shared stream.
    Skip,
}
