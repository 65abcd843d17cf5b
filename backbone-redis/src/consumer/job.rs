//! One event in a consumer's hands ([`Job`]) and what becomes of it ([`Outcome`]): the handler
//! is called, or the event is dead-lettered or skipped with a reason, and a failed event is
//! retried later. Runs as its own task, so a panicking handler is caught here.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use backbone_core::middleware::{ChannelInfo, Settled, Settlement};
use backbone_core::{
    AckMode, ConsumerContext, Error, EventHandler, Fields, HandleError, HandlerError, Metadata,
    Middlewares, RetryPolicy, StreamAddress, UnknownPolicy,
};
use futures::FutureExt;
use redis::Value;

use super::budget::Budget;
use super::fatal::Fatal;
use super::RedisAcker;
use crate::connection::redis_error;
use crate::dead_letters::{dead_letter, DeadLetter};
use crate::entry::{EntryHeader, RawEntry};
use crate::keys::StreamKeys;
use backbone_core::personal::KeyStore;

/// What every job of one consumer shares.
pub(super) struct Shared {
    pub keys: StreamKeys,
    pub address: StreamAddress,
    pub group: String,
    pub name: String,
    /// The user's handler behind the middlewares.
    pub handler: Arc<dyn EventHandler>,
    pub middlewares: Middlewares,
    /// The channel, group, consumer and partition, for the middlewares.
    pub info: ChannelInfo,
    pub acker: Arc<RedisAcker>,
    pub commands: Connection,
    pub ack: AckMode,
    pub retry: RetryPolicy,
    pub on_unknown: UnknownPolicy,
    pub claim_min_idle: Duration,
    /// Where any task raises the error that ends the consumer.
    pub fatal: Arc<Fatal>,
    /// What the consumer reports as its health (shared by its partitions).
    pub health: Arc<super::health::Tracker>,
    /// The bytes held read but not yet handled, and the bound on them.
    pub budget: Budget,
    /// Where the keys of personal parameters are.
    pub key_store: Arc<dyn KeyStore>,
    /// Where parameters kept in an object store are read.
    pub objects: Option<backbone_core::objects::ObjectStorage>,
}

/// An entry read, with its payload fetched.
pub(super) struct Job {
    pub entry: RawEntry,
    pub header: Result<EntryHeader, Error>,
    pub payload: Payload,
    /// Deliveries to this group so far, this one included.
    pub deliveries: u32,
    /// When this delivery was read or last (re)claimed by this consumer.
    pub since: Instant,
    /// Set while the job waits to be delivered again after a failure.
    pub retry_after: Option<Duration>,
    /// The bytes it holds (entry and payload), counted against `max_buffered_bytes`.
    pub size: usize,
}

impl Job {
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// The ordering key, if the entry is well formed and has one.
    pub fn key(&self) -> Option<&str> {
        self.header.as_ref().ok()?.key.as_deref()
    }
}

/// An entry's payload, as fetched.
pub(super) enum Payload {
    /// The entry names no payload hash (an operation without parameters).
    None,
    /// The hash's fields; none when the hash is missing.
    Fields(Fields),
    /// The key holds something other than a hash: the error Redis gave.
    Unreadable(String),
}

/// What became of a job.
pub(super) enum Outcome {
    /// The handler succeeded; `ack` says whether the worker must still `XACK` it.
    Handled { ack: bool },
    /// Not for this consumer (unknown operation under [`UnknownPolicy::Skip`]): `XACK` it.
    Skipped,
    /// The handler failed and may succeed later: deliver again after the delay.
    Retry(Duration),
    /// Nothing more to do here: dead-lettered, taken over by another consumer, or left pending
    /// after an error that was logged.
    Settled,
}

/// Runs one job to its outcome; never panics.
pub(super) async fn run(shared: Arc<Shared>, mut job: Job) -> (Job, Outcome) {
    let outcome = match reclaim(&shared, &mut job).await {
        Ok(true) => deliver(&shared, &job).await,
        Ok(false) => Outcome::Settled,
        Err(e) => {
            if let Some(e) = shared.fatal.raise_if_fatal(e) {
                tracing::warn!(stream = shared.keys.stream(), entry = job.id(), error = %e,
                    "could not re-claim the entry; it stays pending");
            }
            Outcome::Settled
        }
    };
    (job, outcome)
}

/// A job that waited (for a retry, or in the local queue for long) is claimed again for this
/// consumer with `XCLAIM ... <min-idle>`: that succeeds only if nobody else claimed it since,
/// and resets its idle time. A retry counts as a delivery; a refresh (JUSTID) does not.
async fn reclaim(shared: &Shared, job: &mut Job) -> Result<bool, Error> {
    let retry = job.retry_after.take();
    let waited = job.since.elapsed();
    if retry.is_none() && waited < shared.claim_min_idle / 2 {
        return Ok(true);
    }
    let min_idle = waited.saturating_sub(Duration::from_millis(50));
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(shared.keys.stream())
        .arg(&shared.group)
        .arg(&shared.name)
        .arg(min_idle.as_millis() as u64)
        .arg(job.id());
    if retry.is_none() {
        cmd.arg("JUSTID");
    }
    let reply: Value = cmd
        .query_async(&mut shared.commands.clone())
        .await
        .map_err(|e| {
            redis_error(
                format!("XCLAIM {} on {}", job.id(), shared.keys.stream()),
                e,
            )
        })?;
    let claimed = matches!(&reply, Value::Array(items) if !items.is_empty() && !matches!(items[0], Value::Nil));
    if claimed {
        job.since = Instant::now();
        if retry.is_some() {
            job.deliveries += 1;
        }
    }
    Ok(claimed)
}

/// Calls the handler, or says why not.
async fn deliver(shared: &Shared, job: &Job) -> Outcome {
    let header = match &job.header {
        Ok(header) => header,
        Err(e) => return bury(shared, job, &e.to_string()).await,
    };
    let none = Fields::new();
    let key = || header.payload.clone().unwrap_or_default();
    let fields = match &job.payload {
        Payload::None => &none,
        Payload::Fields(fields) if fields.is_empty() => {
            let e = Error::MissingPayload {
                entry: job.id().to_owned(),
                key: key(),
            };
            return bury(shared, job, &e.to_string()).await;
        }
        Payload::Fields(fields) => fields,
        Payload::Unreadable(why) => {
            let reason = format!("payload `{}` cannot be read: {why}", key());
            return bury(shared, job, &reason).await;
        }
    };
    let max = shared.retry.max_deliveries.max(1);
    if job.deliveries > max {
        let reason = format!(
            "delivered {} times, more than max_deliveries ({max}); a consumer may have died while handling it",
            job.deliveries
        );
        return bury(shared, job, &reason).await;
    }
    let ctx = ConsumerContext::new(
        header.metadata(&shared.address, job.entry.id.clone(), job.deliveries),
        shared.acker.clone(),
    );
    let handled = AssertUnwindSafe(shared.handler.handle(&ctx, fields))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(HandleError::Handler(HandlerError::retry(format!(
                "the handler panicked: {text}"
            ))))
        });
    match handled {
        Ok(()) => {
            settled(shared, job, Some(ctx.metadata()), Settlement::Acked);
            Outcome::Handled {
                ack: shared.ack == AckMode::OnSuccess && !ctx.is_acked(),
            }
        }
        // Unknown to the contract, and the handler's fallback left it: `on_unknown` decides.
        Err(HandleError::BadEvent(e @ Error::UnknownOperation { .. })) => match shared.on_unknown {
            UnknownPolicy::DeadLetter => bury(shared, job, &e.to_string()).await,
            UnknownPolicy::Skip => {
                tracing::debug!(stream = shared.keys.stream(), entry = job.id(), error = %e, "skipped");
                settled(shared, job, Some(ctx.metadata()), Settlement::Skipped);
                Outcome::Skipped
            }
        },
        Err(HandleError::BadEvent(e)) => bury(shared, job, &e.to_string()).await,
        Err(HandleError::Handler(e)) if e.is_fatal() => {
            bury(shared, job, &format!("the handler failed (fatal): {e}")).await
        }
        Err(HandleError::Handler(e)) if job.deliveries >= max => {
            let reason = format!(
                "the handler failed {} times; last error: {e}",
                job.deliveries
            );
            bury(shared, job, &reason).await
        }
        Err(HandleError::Handler(e)) => {
            let delay = shared.retry.delay_after(job.deliveries);
            tracing::warn!(stream = shared.keys.stream(), entry = job.id(), delivery = job.deliveries,
                retry_in_ms = delay.as_millis() as u64, error = %e, "handler failed; will retry");
            settled(
                shared,
                job,
                Some(ctx.metadata()),
                Settlement::Retrying { after: delay },
            );
            Outcome::Retry(delay)
        }
    }
}

/// Moves the entry to the dead-letter stream (acking it in the same script). If that fails the
/// entry stays pending (to be claimed again later); an error retrying cannot fix (the script
/// refused, authentication lost) is raised and ends the consumer.
async fn bury(shared: &Shared, job: &Job, reason: &str) -> Outcome {
    let letter = DeadLetter {
        entry_id: job.id(),
        original: job.entry.fields.as_deref(),
        consumer: &shared.name,
        deliveries: job.deliveries,
        reason,
    };
    let result = dead_letter(
        &mut shared.commands.clone(),
        &shared.keys,
        &shared.group,
        &letter,
    )
    .await;
    let outcome = match &result {
        Ok(true) => Settlement::DeadLettered { reason },
        Ok(false) => Settlement::LeftPending {
            reason: "not dead-lettered: no longer pending for this group",
        },
        Err(_) => Settlement::LeftPending {
            reason: "dead-lettering failed",
        },
    };
    let meta = job
        .header
        .as_ref()
        .ok()
        .map(|h| h.metadata(&shared.address, job.entry.id.clone(), job.deliveries));
    settled(shared, job, meta.as_ref(), outcome);
    match result {
        Ok(true) => tracing::error!(
            stream = shared.keys.stream(),
            entry = job.id(),
            reason,
            "dead-lettered"
        ),
        Ok(false) => tracing::warn!(
            stream = shared.keys.stream(),
            entry = job.id(),
            reason,
            "not dead-lettered: no longer pending for this group"
        ),
        Err(e) => {
            if let Some(e) = shared.fatal.raise_if_fatal(e) {
                tracing::error!(stream = shared.keys.stream(), entry = job.id(), reason, error = %e,
                    "dead-lettering failed; the entry stays pending");
            }
        }
    }
    Outcome::Settled
}

/// Tells the middlewares how a delivery ended.
fn settled(shared: &Shared, job: &Job, metadata: Option<&Metadata>, outcome: Settlement<'_>) {
    shared.middlewares.settled(
        &shared.info,
        &Settled {
            stream_id: job.id(),
            metadata,
            outcome,
        },
    );
}
