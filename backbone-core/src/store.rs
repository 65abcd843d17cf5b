//! The event store's model, with no Redis in it: expected versions, append options and
//! results, aggregates and their reductions, snapshot caching policies, projections, and
//! time-window statistics. `backbone_redis::store` implements it on Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cause::Cause;
use crate::envelope::{Envelope, Headers};
use crate::{ContractEvent, Error, Metadata};

/// What an append expects the aggregate's current version to be (the number of events it
/// holds).
///
/// ```
/// use backbone_core::store::{ExpectedVersion, Reduction};
///
/// assert_eq!(ExpectedVersion::Exact(3).to_string(), "version 3");
/// let reduction = Reduction { state: 0u32, version: 7 };
/// assert_eq!(ExpectedVersion::from(&reduction), ExpectedVersion::Exact(7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The aggregate has no events yet.
    NoStream,
    /// The aggregate holds exactly this many events.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

impl<A> From<&Reduction<A>> for ExpectedVersion {
    fn from(reduction: &Reduction<A>) -> Self {
        ExpectedVersion::Exact(reduction.version)
    }
}

/// Options of one append.
///
/// Appended events carry correlation and causation like sent ones: inside a handler, the
/// handled event's correlation id and its message id as causation id (see
/// [`cause`](crate::cause)), unless a correlation id is given here; outside a handler, the one
/// given here or their own message id.
///
/// ```
/// use backbone_core::store::AppendOptions;
///
/// let options = AppendOptions::idempotent("payment-42-capture")
///     .correlation_id("checkout-7")
///     .header("tenant", "acme")?;
/// assert_eq!(options.idempotency_key.as_deref(), Some("payment-42-capture"));
/// assert_eq!(options.headers.get("tenant"), Some("acme"));
/// # Ok::<(), backbone_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendOptions {
    /// A retry with the same key writes nothing and returns the first append's result, marked
    /// as a replay. Keys are remembered for a bounded time (the store's idempotency TTL).
    pub idempotency_key: Option<String>,
    /// The workflow the events belong to (by default: the handled event's, inside a handler).
    pub correlation_id: Option<String>,
    /// Headers every appended event carries.
    pub headers: Headers,
    /// The data subject of the events' personal parameters, for operations without a
    /// `#[subject]` parameter (see [`personal`](crate::personal)).
    pub subject: Option<String>,
}

impl AppendOptions {
    /// Options with an idempotency key.
    pub fn idempotent(key: impl Into<String>) -> Self {
        AppendOptions {
            idempotency_key: Some(key.into()),
            ..Self::default()
        }
    }

    /// These options with a data subject (the `subject` field).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// These options with a correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// These options with one more header (refused if its name could not be an entry field).
    pub fn header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, Error> {
        self.headers.insert(name, value)?;
        Ok(self)
    }

    /// The envelope the appended events carry, now (in a handler, it follows the cause).
    pub fn envelope(&self) -> Envelope {
        let cause = Cause::current();
        Envelope {
            correlation_id: self
                .correlation_id
                .clone()
                .or_else(|| cause.as_ref().map(|c| c.correlation_id.clone())),
            causation_id: cause.map(|c| c.causation_id),
            headers: self.headers.clone(),
            trace: None,
            subject: None,
            personal: Vec::new(),
            objects: Vec::new(),
        }
    }
}

/// What an append wrote (or, for a replay, what the first append with that key wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The version of the first appended event (the aggregate's version before, plus one).
    pub first_version: u64,
    /// The aggregate's version after the append.
    pub version: u64,
    /// Each event's position in the contract's stream (its stream id), in order.
    pub positions: Vec<String>,
    /// True when nothing was written because the idempotency key was seen before.
    pub replayed: bool,
}

/// One event read back from the store, with its metadata and, for events appended through the
/// store, its aggregate and version.
#[derive(Debug, Clone)]
pub struct StoredEvent<E> {
    /// The decoded event.
    pub event: E,
    /// Its metadata; `stream_id` is its position in the contract's stream.
    pub metadata: Metadata,
    /// The aggregate it belongs to (events sent by a plain producer have none).
    pub aggregate_id: Option<String>,
    /// Its version within the aggregate (1 for the first event).
    pub aggregate_version: Option<u64>,
}

/// State folded from an aggregate's events. `NAME` names its snapshots: change it when the
/// state's shape changes, so old snapshots are ignored.
///
/// ```
/// use backbone_core::events_contract;
/// use backbone_core::store::Aggregate;
///
/// #[events_contract]
/// pub trait Account {
///     async fn deposited(&self, cents: i64);
///     async fn withdrawn(&self, cents: i64);
/// }
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Balance { cents: i64 }
///
/// impl Aggregate for Balance {
///     type Event = AccountEvent;
///     const NAME: &'static str = "balance-v1";
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Deposited { cents } => self.cents += cents,
///             AccountEvent::Withdrawn { cents } => self.cents -= cents,
///         }
///     }
/// }
///
/// let mut b = Balance::default();
/// b.apply(&AccountEvent::Deposited { cents: 500 });
/// assert_eq!(b.cents, 500);
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The contract's event enum.
    type Event: ContractEvent;
    /// The name of this state's snapshots.
    const NAME: &'static str;
    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// An aggregate's state and the version it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reduction<A> {
    /// The folded state.
    pub state: A,
    /// How many events were folded into it.
    pub version: u64,
}

/// What a [`CachingPolicy::Custom`] function sees after a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The version just loaded.
    pub version: u64,
    /// Events applied on top of the snapshot (all of them when there was none).
    pub events_since_snapshot: u64,
    /// The age of the snapshot used, if any.
    pub snapshot_age: Option<Duration>,
}

/// When a load writes a new snapshot (in the background, never slowing the caller).
///
/// ```
/// use std::time::Duration;
/// use backbone_core::store::{CachingPolicy, SnapshotInfo};
///
/// let info = SnapshotInfo { version: 120, events_since_snapshot: 20, snapshot_age: None };
/// assert!(CachingPolicy::EveryEvents(10).wants_snapshot(&info));
/// assert!(!CachingPolicy::EveryEvents(50).wants_snapshot(&info));
/// assert!(CachingPolicy::MaxAge(Duration::from_secs(60)).wants_snapshot(&info));
/// assert!(!CachingPolicy::Never.wants_snapshot(&info));
/// assert!(CachingPolicy::custom(|i| i.version > 100).wants_snapshot(&info));
/// ```
#[derive(Clone)]
pub enum CachingPolicy {
    /// Never write snapshots (loads replay every event).
    Never,
    /// When at least this many events were applied on top of the snapshot (the default is
    /// `EveryEvents(100)`).
    EveryEvents(u64),
    /// When the snapshot used is older than this, or there was none (and at least one event
    /// was applied).
    MaxAge(Duration),
    /// When the function says so.
    Custom(Arc<dyn Fn(&SnapshotInfo) -> bool + Send + Sync>),
}

impl Default for CachingPolicy {
    fn default() -> Self {
        CachingPolicy::EveryEvents(100)
    }
}

impl CachingPolicy {
    /// A [`CachingPolicy::Custom`] policy.
    pub fn custom(f: impl Fn(&SnapshotInfo) -> bool + Send + Sync + 'static) -> Self {
        CachingPolicy::Custom(Arc::new(f))
    }

    /// Whether a load described by `info` should write a snapshot.
    pub fn wants_snapshot(&self, info: &SnapshotInfo) -> bool {
        if info.events_since_snapshot == 0 {
            return false;
        }
        match self {
            CachingPolicy::Never => false,
            CachingPolicy::EveryEvents(n) => info.events_since_snapshot >= (*n).max(1),
            CachingPolicy::MaxAge(age) => info.snapshot_age.is_none_or(|a| a >= *age),
            CachingPolicy::Custom(f) => f(info),
        }
    }
}

impl fmt::Debug for CachingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CachingPolicy::Never => f.write_str("Never"),
            CachingPolicy::EveryEvents(n) => write!(f, "EveryEvents({n})"),
            CachingPolicy::MaxAge(d) => write!(f, "MaxAge({d:?})"),
            CachingPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// State folded from every event of a contract's stream, checkpointed with its position.
/// `NAME` names its checkpoint.
pub trait Projection: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The contract's event enum.
    type Event: ContractEvent;
    /// The name of this projection's checkpoint.
    const NAME: &'static str;
    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event, metadata: &Metadata);
}

/// When a projection saves its state and position (whichever comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many events (default 100).
    pub every_events: u64,
    /// After this long with unsaved events (default 30 s).
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_events: 100,
            every: Duration::from_secs(30),
        }
    }
}

/// Count, sum, average, minimum and maximum of a numeric projection of some events.
///
/// ```
/// use backbone_core::store::WindowStats;
///
/// let stats = WindowStats::from_values([3.0, 1.0, 2.0]);
/// assert_eq!((stats.count, stats.sum, stats.avg, stats.min, stats.max), (3, 6.0, Some(2.0), Some(1.0), Some(3.0)));
/// assert_eq!(WindowStats::from_values([]).avg, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    /// How many events had a value.
    pub count: u64,
    /// The sum of the values.
    pub sum: f64,
    /// The mean, if any value.
    pub avg: Option<f64>,
    /// The smallest value, if any.
    pub min: Option<f64>,
    /// The largest value, if any.
    pub max: Option<f64>,
}

impl WindowStats {
    /// Adds one value.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.avg = Some(self.sum / self.count as f64);
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    /// The statistics of `values`.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut stats = WindowStats::default();
        for v in values {
            stats.add(v);
        }
        stats
    }
}
