//! Checkpointed projections: `EventStore::project`, `checkpoint` and `rebuild`, and the
//! task that folds the contract's stream into a [`Projection`] (semantics on `project`).

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use backbone_core::codec;
use backbone_core::metadata::now_millis;
use backbone_core::names::check_name;
use backbone_core::store::{CheckpointPolicy, Projection, StoredEvent};
use backbone_core::{ContractEvent, Error, Fields};
use redis::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::read::Origin;
use super::EventStore;
use crate::connection::redis_error;
use crate::entry::parse_range_reply;
use crate::entry::{RawEntry, StreamId};
use crate::retry::{classify, Backoff};

/// How often a caught-up projection looks for new entries.
const POLL: Duration = Duration::from_millis(50);
/// How many entries one `XRANGE` reads.
const PAGE: usize = 100;

/// A saved checkpoint: the state folded from every event up to `position`.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint<P> {
    /// The stream id of the last event folded into `state`.
    pub position: String,
    /// The state.
    pub state: P,
    /// How many events were folded into it since the projection started from zero.
    pub events: u64,
    /// When it was written, ms since the epoch.
    pub at: u64,
}

/// Where a running projection is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The stream id of the last event folded into the state (`None`: none yet).
    pub position: Option<String>,
    /// Events folded into the state since the projection started from zero.
    pub events: u64,
    /// Events applied by this run (after restoring the checkpoint).
    pub applied: u64,
    /// The position of the last checkpoint, restored or written (`None`: there is none).
    pub saved: Option<String>,
    /// Checkpoints written by this run.
    pub checkpoints: u64,
}

struct Shared<P> {
    state: P,
    progress: Progress,
}

/// What `caught_up` waits on: the position reached, or why the task stopped.
#[derive(Debug, Clone, Default)]
struct Signal {
    position: Option<StreamId>,
    failed: Option<String>,
}

/// A running projection. [`shutdown`](Self::shutdown) saves a final checkpoint;
/// [`abort`](Self::abort), or dropping the handle, stops it without saving (as a crash would).
pub struct ProjectionHandle<P> {
    shared: Arc<RwLock<Shared<P>>>,
    signal: watch::Receiver<Signal>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
    stream: String,
    connection: crate::connection::Connection,
}

impl<E: ContractEvent> EventStore<E> {
    /// Starts projection `P`: restores its checkpoint, if any, folds every event of the
    /// contract's stream after it, then keeps following the stream (polling `XRANGE` every
    /// 50 ms when caught up). Fails if the checkpoint does not decode: [`rebuild`](Self::rebuild)
    /// it, or change `P::NAME` when the state's shape changes.
    ///
    /// **Checkpoints.** The hash `bb:<tag>:proj:<NAME>` holds `position` (the stream id of the
    /// last event folded), `state` (JSON), `events` (how many were folded) and `at` (ms). It is
    /// written by one `HSET` every `policy.every_events` events, or once events have been
    /// unsaved for `policy.every`, whichever comes first, and by [`ProjectionHandle::shutdown`].
    ///
    /// **Exactly once with respect to the saved state.** State and position are saved together,
    /// so the saved state reflects exactly the events up to the saved position. A run that dies
    /// ([`ProjectionHandle::abort`]) loses only what it applied since its last checkpoint, and
    /// the next run applies the events after the saved position to the saved state: none twice,
    /// none missing. While Redis is unreachable the task retries (100 ms doubling to 5 s).
    ///
    /// **An undecodable entry stops the projection**, as skipping it would leave the state
    /// silently wrong: the events before it are applied and checkpointed, and the task ends
    /// with an [`Error::Stopped`] ("projection \`NAME\` stopped: …") naming the entry,
    /// returned by [`caught_up`](ProjectionHandle::caught_up) and
    /// [`shutdown`](ProjectionHandle::shutdown).
    /// A restart stops at the same entry until it is repaired (e.g. a contract that knows its
    /// operation) or removed with `XDEL`.
    ///
    /// Run one instance of a projection at a time (two would overwrite each other's
    /// checkpoints), and keep entries in the stream until every projection has passed them:
    /// trimming knows consumer groups, not projections.
    ///
    /// ```no_run
    /// use backbone_core::store::{CheckpointPolicy, Projection};
    /// use backbone_core::{events_contract, Error, Metadata};
    /// use backbone_redis::store::EventStoreBuilder;
    ///
    /// #[events_contract]
    /// pub trait Account {
    ///     async fn deposited(&self, cents: i64);
    /// }
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct Total { cents: i64 }
    ///
    /// impl Projection for Total {
    ///     type Event = AccountEvent;
    ///     const NAME: &'static str = "total-v1";
    ///     fn apply(&mut self, event: &AccountEvent, _: &Metadata) {
    ///         let AccountEvent::Deposited { cents } = event;
    ///         self.cents += cents;
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let store = EventStoreBuilder::new().uri("accounts").build::<AccountEvent>().await?;
    /// let total = store.project::<Total>(CheckpointPolicy::default()).await?;
    /// total.caught_up().await?;
    /// println!("{} cents at {:?}", total.state().cents, total.position());
    /// total.shutdown().await?; // saves a final checkpoint
    /// # Ok(())
    /// # }
    /// ```
    pub async fn project<P: Projection<Event = E>>(
        &self,
        policy: CheckpointPolicy,
    ) -> Result<ProjectionHandle<P>, Error> {
        self.unpartitioned("a projection")?;
        let restored = self.checkpoint::<P>().await?;
        let progress = Progress {
            position: restored.as_ref().map(|c| c.position.clone()),
            events: restored.as_ref().map_or(0, |c| c.events),
            saved: restored.as_ref().map(|c| c.position.clone()),
            ..Progress::default()
        };
        let signal = Signal {
            position: progress
                .position
                .as_deref()
                .and_then(|id| StreamId::parse(id, false)),
            failed: None,
        };
        let shared = Arc::new(RwLock::new(Shared {
            state: restored.map(|c| c.state).unwrap_or_default(),
            progress,
        }));
        let (signal_tx, signal) = watch::channel(signal);
        let stop = CancellationToken::new();
        let runner = Runner {
            store: self.clone(),
            shared: shared.clone(),
            signal: signal_tx,
            stop: stop.clone(),
            policy,
            key: self.keys().projection(P::NAME),
            unsaved: 0,
            dirty_since: None,
        };
        Ok(ProjectionHandle {
            shared,
            signal,
            stop,
            task: Some(tokio::spawn(runner.run())),
            stream: self.keys().stream().to_owned(),
            connection: self.connection(),
        })
    }

    /// Deletes `P`'s checkpoint, so that its next run starts from the first event. Call it
    /// while the projection is stopped (a running one would save over it). Returns whether
    /// there was a checkpoint.
    pub async fn rebuild<P: Projection<Event = E>>(&self) -> Result<bool, Error> {
        let key = checkpoint_key::<P, E>(self)?;
        let deleted: u64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("DEL {key}"), e))?;
        Ok(deleted > 0)
    }

    /// `P`'s saved checkpoint, if any.
    pub async fn checkpoint<P: Projection<Event = E>>(
        &self,
    ) -> Result<Option<Checkpoint<P>>, Error> {
        let key = checkpoint_key::<P, E>(self)?;
        let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("HGETALL {key}"), e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let fields = Fields::from(fields);
        let bad = |what: String| {
            Error::channel(
                format!("checkpoint {key}"),
                format!("{what}; rebuild() it, or rename the projection when its state changed"),
            )
        };
        let text = |name: &str| -> Result<String, Error> {
            let value = fields
                .get(name)
                .ok_or_else(|| bad(format!("no `{name}`")))?;
            String::from_utf8(value.to_vec()).map_err(|_| bad(format!("`{name}` is not UTF-8")))
        };
        let number = |name: &str| -> Result<u64, Error> {
            let value = text(name)?;
            value
                .parse()
                .map_err(|e| bad(format!("`{name}` = {value:?}: {e}")))
        };
        let position = text("position")?;
        if StreamId::parse(&position, false).is_none() {
            return Err(bad(format!("`position` = {position:?} is not a stream id")));
        }
        let state = codec::decode::<P>(P::NAME, "state", &fields)
            .map_err(|e| bad(format!("`state` does not decode: {e}")))?;
        Ok(Some(Checkpoint {
            position,
            state,
            events: number("events")?,
            at: number("at")?,
        }))
    }
}

fn checkpoint_key<P: Projection, E>(store: &EventStore<E>) -> Result<String, Error> {
    check_name("projection name", P::NAME, "")?;
    Ok(store.keys().projection(P::NAME))
}

impl<P: Projection> ProjectionHandle<P> {
    /// A clone of the current state.
    pub fn state(&self) -> P
    where
        P: Clone,
    {
        self.with_state(P::clone)
    }

    /// Calls `f` with the current state (no event is applied meanwhile).
    pub fn with_state<R>(&self, f: impl FnOnce(&P) -> R) -> R {
        f(&self
            .shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state)
    }

    /// Where the projection is; consistent with the state at the moment of the call.
    pub fn progress(&self) -> Progress {
        let shared = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        shared.progress.clone()
    }

    /// The stream id of the last event folded into the state.
    pub fn position(&self) -> Option<String> {
        self.progress().position
    }

    /// Resolves once every event that was in the stream when called has been applied; fails
    /// if the projection stopped (an undecodable entry, a panic in `apply`).
    pub async fn caught_up(&self) -> Result<(), Error> {
        let stream = &self.stream;
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| redis_error(format!("XREVRANGE {stream}"), e))?;
        let last = parse_range_reply(reply)
            .map_err(|r| Error::channel(format!("XREVRANGE {stream}"), r))?;
        let target = last.first().and_then(|e| StreamId::parse(&e.id, false));
        let mut signal = self.signal.clone();
        let reached = signal
            .wait_for(|s| s.failed.is_some() || s.position >= target)
            .await
            .map_err(|_| {
                Error::Stopped(format!("projection `{}` stopped: its task ended", P::NAME))
            })?;
        match &reached.failed {
            Some(reason) => Err(Error::Stopped(reason.clone())),
            None => Ok(()),
        }
    }

    /// Whether the projection's task has ended (after an error, or a panic in `apply`).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops after the event in hand, saves a checkpoint if any event is unsaved, and
    /// returns; or returns the error that stopped the projection earlier.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(Error::Stopped(format!(
                    "projection `{}` stopped: its task failed: {e}",
                    P::NAME
                )))
            }),
            None => Ok(()),
        }
    }

    /// Stops at once without saving: what a crash leaves is the last checkpoint.
    pub fn abort(self) {
        drop(self); // Drop aborts the task
    }
}

impl<P> Drop for ProjectionHandle<P> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl<P> std::fmt::Debug for ProjectionHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("stream", &self.stream)
            .field("signal", &*self.signal.borrow())
            .finish_non_exhaustive()
    }
}

/// The projection's task.
struct Runner<P: Projection> {
    store: EventStore<P::Event>,
    shared: Arc<RwLock<Shared<P>>>,
    signal: watch::Sender<Signal>,
    stop: CancellationToken,
    policy: CheckpointPolicy,
    key: String,
    /// Events applied since the last checkpoint, and since when.
    unsaved: u64,
    dirty_since: Option<Instant>,
}

impl<P: Projection> Runner<P> {
    async fn run(mut self) -> Result<(), Error> {
        let result = self.follow().await;
        let result = match result {
            Ok(()) if self.unsaved > 0 => self.save().await,
            other => other,
        };
        if let Err(e) = &result {
            tracing::error!(projection = P::NAME, error = %e, "projection stopped");
            let reason = match e {
                Error::Stopped(reason) => reason.clone(),
                other => format!("projection `{}` stopped: {other}", P::NAME),
            };
            self.signal.send_modify(|s| s.failed = Some(reason));
        }
        result
    }

    /// Applies pages until stopped; checkpoints per policy.
    async fn follow(&mut self) -> Result<(), Error> {
        while !self.stop.is_cancelled() {
            let after = self.read_shared(|s| s.progress.position.clone());
            let raw = self
                .retrying("XRANGE", || self.fetch(after.clone()))
                .await?;
            if raw.is_empty() {
                if self.due() {
                    self.save().await?;
                }
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
            let decoded = self
                .retrying("decode", || {
                    self.store.decode(raw.clone(), Origin::Contract)
                })
                .await;
            match decoded {
                Ok(events) => self.apply_all(&raw, events).await?,
                Err(e) if e.is_bad_event() => return self.stop_at_bad_entry(raw).await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One page of entries after `after` (from the start when `None`).
    async fn fetch(&self, after: Option<String>) -> Result<Vec<RawEntry>, Error> {
        let stream = self.store.keys().stream();
        let start = after.map_or_else(|| "-".to_owned(), |p| format!("({p}"));
        let reply: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut self.store.connection())
            .await
            .map_err(|e| redis_error(format!("XRANGE {stream}"), e))?;
        parse_range_reply(reply).map_err(|r| Error::channel(format!("XRANGE {stream}"), r))
    }

    /// Decodes the entries one by one, applies those before the first that does not decode,
    /// checkpoints them, and fails naming that entry.
    async fn stop_at_bad_entry(&mut self, raw: Vec<RawEntry>) -> Result<(), Error> {
        for entry in raw {
            let id = entry.id.clone();
            let single = vec![entry];
            match self
                .retrying("decode", || {
                    self.store.decode(single.clone(), Origin::Contract)
                })
                .await
            {
                Ok(events) => self.apply_all(&single, events).await?,
                Err(e) if !e.is_bad_event() => return Err(e),
                Err(e) => {
                    if self.unsaved > 0 {
                        self.save().await?;
                    }
                    return Err(Error::Stopped(format!(
                        "projection `{}` stopped: cannot decode entry {id} of {}: {e}; it \
                         resumes there once the entry is repaired or deleted",
                        P::NAME,
                        self.store.keys().stream()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies `events`, decoded from `raw` (one each, in order); the position is the
    /// entry's id.
    async fn apply_all(
        &mut self,
        raw: &[RawEntry],
        events: Vec<StoredEvent<P::Event>>,
    ) -> Result<(), Error> {
        for (entry, stored) in raw.iter().zip(events) {
            {
                let mut shared = self.shared.write().unwrap_or_else(PoisonError::into_inner);
                shared.state.apply(&stored.event, &stored.metadata);
                let progress = &mut shared.progress;
                progress.position = Some(entry.id.clone());
                progress.events += 1;
                progress.applied += 1;
            }
            self.unsaved += 1;
            self.dirty_since.get_or_insert_with(Instant::now);
            if self.due() {
                self.save().await?;
            }
        }
        let position = self.read_shared(|s| {
            s.progress
                .position
                .as_deref()
                .and_then(|id| StreamId::parse(id, false))
        });
        self.signal.send_modify(|s| s.position = position);
        Ok(())
    }

    /// Whether the policy wants a checkpoint now.
    fn due(&self) -> bool {
        self.unsaved > 0
            && (self.unsaved >= self.policy.every_events.max(1)
                || self
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= self.policy.every))
    }

    /// Writes state and position in one `HSET`, retrying while Redis is unreachable.
    async fn save(&mut self) -> Result<(), Error> {
        let (state, progress) = self.read_shared(|s| {
            let state = codec::encode(P::NAME, "state", &s.state);
            (state, s.progress.clone())
        });
        let (state, Some(position)) = (state?, progress.position.clone()) else {
            return Ok(());
        };
        let mut command = redis::cmd("HSET");
        command.arg(&self.key).arg("position").arg(&position);
        command
            .arg("state")
            .arg(state)
            .arg("events")
            .arg(progress.events);
        self.retrying("checkpoint", || {
            let (mut command, mut connection) = (command.clone(), self.store.connection());
            let key = self.key.clone();
            async move {
                command.arg("at").arg(now_millis());
                let reply = command.query_async::<u64>(&mut connection).await;
                reply.map_err(|e| redis_error(format!("HSET {key}"), e))
            }
        })
        .await?;
        tracing::debug!(projection = P::NAME, position = %position, events = progress.events, "checkpoint");
        self.unsaved = 0;
        self.dirty_since = None;
        let mut shared = self.shared.write().unwrap_or_else(PoisonError::into_inner);
        shared.progress.saved = Some(position);
        shared.progress.checkpoints += 1;
        Ok(())
    }

    /// Runs `op` until it succeeds or fails for a reason other than a transient one
    /// ([`classify`]), backing off per [`Backoff::read`] (100 ms doubling to 5 s); or until
    /// stopped, with the last error (so a final checkpoint while Redis is unreachable fails at
    /// once, and `shutdown` says why).
    async fn retrying<T, F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        op: impl Fn() -> F,
    ) -> Result<T, Error> {
        let mut backoff = Backoff::read();
        loop {
            let e = match op().await {
                Err(e) if classify(&e).is_transient() => e,
                result => return result,
            };
            tracing::warn!(projection = P::NAME, error = %e, "{what} failed; retrying");
            tokio::select! {
                _ = self.stop.cancelled() => return Err(e),
                _ = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    fn read_shared<R>(&self, f: impl FnOnce(&Shared<P>) -> R) -> R {
        f(&self.shared.read().unwrap_or_else(PoisonError::into_inner))
    }
}
