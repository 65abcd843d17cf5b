//! What becomes of a delivery on the in-memory channel ([`decide`], the rules of the Redis
//! consumer with the same reasons) and the failed deliveries waiting for their backoff
//! ([`Retries`]) while the consumer goes on with other events. Time is `tokio::time`'s, so a
//! paused clock (`tokio::time::pause`) skips the backoffs.

use std::collections::BTreeMap;
use std::future::pending;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::time::{sleep_until, Duration, Instant};

use crate::{Error, HandleError, HandlerError, RetryPolicy, UnknownPolicy};

/// What becomes of a delivery.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// The handler succeeded.
    Handled,
    /// An unknown operation under [`UnknownPolicy::Skip`]: acknowledge it.
    Skipped,
    /// The handler failed and may succeed later: deliver it again after this delay.
    Retry(Duration),
    /// Give up: dead-letter it with this reason.
    Bury(String),
}

/// The reason to give up on an entry delivered more than `max_deliveries` times before its
/// handler ran (it was left pending by a consumer that stopped while it waited), if it was.
pub(super) fn too_many(policy: &RetryPolicy, deliveries: u32) -> Option<String> {
    let max = policy.max_deliveries.max(1);
    (deliveries > max).then(|| {
        format!(
            "delivered {deliveries} times, more than max_deliveries ({max}); a consumer may \
             have died while handling it"
        )
    })
}

/// The outcome of the `deliveries`-th delivery, which ended with `handled`.
pub(super) fn decide(
    policy: &RetryPolicy,
    on_unknown: UnknownPolicy,
    deliveries: u32,
    handled: &Result<(), HandleError>,
) -> Outcome {
    let max = policy.max_deliveries.max(1);
    match handled {
        Ok(()) => Outcome::Handled,
        Err(HandleError::BadEvent(Error::UnknownOperation { .. }))
            if on_unknown == UnknownPolicy::Skip =>
        {
            Outcome::Skipped
        }
        Err(HandleError::BadEvent(e)) => Outcome::Bury(e.to_string()),
        Err(HandleError::Handler(e)) if e.is_fatal() => {
            Outcome::Bury(format!("the handler failed (fatal): {e}"))
        }
        Err(HandleError::Handler(e)) if deliveries >= max => Outcome::Bury(format!(
            "the handler failed {deliveries} times; last error: {e}"
        )),
        Err(HandleError::Handler(_)) => Outcome::Retry(policy.delay_after(deliveries)),
    }
}

/// Runs a handler's future, turning a panic into a failure worth retrying, as Redis does.
pub(super) async fn catching(
    handling: impl std::future::Future<Output = Result<(), HandleError>>,
) -> Result<(), HandleError> {
    AssertUnwindSafe(handling)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let text = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
                (Some(text), _) => text.to_string(),
                (None, Some(text)) => text.clone(),
                (None, None) => "a non-string panic".to_owned(),
            };
            let panicked = format!("the handler panicked: {text}");
            Err(HandleError::Handler(HandlerError::retry(panicked)))
        })
}

/// Entries whose delivery failed (`T`: the consumer's job), each until its retry is due.
pub(super) struct Retries<T> {
    waiting: BTreeMap<(Instant, u64), T>,
    added: u64,
}

impl<T> Default for Retries<T> {
    fn default() -> Self {
        Retries {
            waiting: BTreeMap::new(),
            added: 0,
        }
    }
}

impl<T> Retries<T> {
    /// Delivers `entry` again after `delay`.
    pub fn add(&mut self, entry: T, delay: Duration) {
        self.added += 1;
        self.waiting
            .insert((Instant::now() + delay, self.added), entry);
    }

    /// The entry whose retry is due first, if one is due now.
    pub fn due(&mut self) -> Option<T> {
        let first = self.waiting.first_entry()?;
        (first.key().0 <= Instant::now()).then(|| first.remove())
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Returns when the first retry is due (never when none waits).
    pub async fn next_due(&self) {
        match self.waiting.keys().next() {
            Some((at, _)) => sleep_until(*at).await,
            None => pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(fatal: bool) -> Result<(), HandleError> {
        let e = match fatal {
            true => HandlerError::fatal("boom"),
            false => HandlerError::retry("boom"),
        };
        Err(HandleError::Handler(e))
    }

    #[test]
    fn the_reasons_are_the_redis_consumers() {
        let policy = RetryPolicy::default();
        let skip = UnknownPolicy::Skip;
        assert_eq!(
            decide(&policy, skip, 1, &failed(false)),
            Outcome::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            decide(&policy, skip, 5, &failed(false)),
            Outcome::Bury("the handler failed 5 times; last error: boom".into())
        );
        assert_eq!(
            decide(&policy, skip, 1, &failed(true)),
            Outcome::Bury("the handler failed (fatal): boom".into())
        );
        let unknown = Err(HandleError::BadEvent(Error::UnknownOperation {
            contract: "Ticks".into(),
            operation: "tock".into(),
            version: 1,
        }));
        assert_eq!(decide(&policy, skip, 1, &unknown), Outcome::Skipped);
        assert_eq!(
            decide(&policy, UnknownPolicy::DeadLetter, 1, &unknown),
            Outcome::Bury("contract `Ticks` has no operation `tock` version 1".into())
        );
        assert_eq!(too_many(&policy, 5), None);
        assert!(too_many(&policy, 6)
            .unwrap()
            .starts_with("delivered 6 times"));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_come_due_in_order_of_their_time() {
        let mut retries = Retries::default();
        retries.add(7, Duration::from_secs(2));
        retries.add(3, Duration::from_secs(1));
        assert_eq!((retries.due(), retries.len()), (None, 2));
        retries.next_due().await;
        assert_eq!(retries.due(), Some(3));
        retries.next_due().await;
        assert_eq!((retries.due(), retries.len()), (Some(7), 0));
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_worth_retrying() {
        let handled = catching(async { panic!("oops") }).await;
        let Err(HandleError::Handler(e)) = handled else {
            panic!("{handled:?}")
        };
        assert!(!e.is_fatal());
        assert_eq!(e.to_string(), "the handler panicked: oops");
    }
}
