//! Aggregates: [`EventStore::load`] folds an aggregate's events into its state, starting from a
//! cached snapshot when there is a usable one, and writes a new snapshot in the background when
//! the store's [`CachingPolicy`](backbone_core::store::CachingPolicy) asks for one.
//!
//! A snapshot is a hash at [`StreamKeys::snapshot`](crate::keys::StreamKeys::snapshot)`(A::NAME,
//! id)` with fields `version`, `state` (JSON), `at` (ms since the epoch) and `position` (the
//! contract-stream position of event `version`). A load checks the snapshot against the
//! aggregate's stream at no extra round trip: it reads from event `version` (not `version + 1`)
//! and uses the snapshot only if that event exists at that position. So a snapshot that does not
//! decode, or that belongs to a stream deleted since (shorter now, or rewritten), is logged
//! (`tracing::warn!`) and ignored: the load replays every event, and the snapshot is replaced
//! (or deleted) in the background. The cache never changes what a load returns.
//!
//! Snapshot writes go through a script that only replaces a snapshot of a lower version (or the
//! very snapshot the load rejected), so racing loads never move a snapshot backwards. Their
//! errors are logged with `tracing::warn!`; they never fail a load.

use std::collections::HashMap;
use std::time::Duration;

use backbone_core::codec;
use backbone_core::metadata::now_millis;
use backbone_core::store::{Aggregate, Reduction, SnapshotInfo, StoredEvent};
use backbone_core::{ContractEvent, Error, Fields};
use redis::Value;

use super::{check_aggregate_id, EventStore, Page};
use crate::connection::redis_error;
use crate::lua::SNAPSHOT;

/// Events read per round trip while loading.
const LOAD_PAGE: usize = 256;

/// A snapshot as stored, before its state is decoded.
struct RawSnapshot {
    fields: HashMap<String, Vec<u8>>,
}

impl RawSnapshot {
    fn text(&self, field: &str) -> Option<&str> {
        self.fields
            .get(field)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn number(&self, field: &str) -> Result<u64, String> {
        let raw = self
            .fields
            .get(field)
            .ok_or_else(|| format!("field `{field}` is missing"))?;
        let text = String::from_utf8_lossy(raw);
        text.parse()
            .map_err(|e| format!("field `{field}` is {text:?}, not a number ({e})"))
    }

    /// What identifies this snapshot to the write script: its raw `version` and `at`.
    fn identity(&self) -> (String, String) {
        let raw = |f: &str| String::from_utf8_lossy(self.fields.get(f).map_or(&[][..], |v| v));
        (raw("version").into_owned(), raw("at").into_owned())
    }

    fn decode<A: Aggregate>(&self) -> Result<Snapshot<A>, String> {
        let (version, at) = (self.number("version")?, self.number("at")?);
        let state = self
            .fields
            .get("state")
            .ok_or_else(|| "field `state` is missing".to_owned())?;
        let fields = Fields::from(vec![("state".to_owned(), state.clone())]);
        let state = codec::decode::<A>(A::NAME, "state", &fields).map_err(|e| e.to_string())?;
        let position = self.text("position").filter(|p| !p.is_empty());
        Ok(Snapshot {
            version,
            state,
            age: Duration::from_millis(now_millis().saturating_sub(at)),
            position: position.map(str::to_owned),
        })
    }
}

/// A decoded snapshot.
struct Snapshot<A> {
    version: u64,
    state: A,
    age: Duration,
    position: Option<String>,
}

/// How a load started: from a snapshot it used, or from scratch (maybe rejecting one).
struct Start<A, E> {
    reduction: Reduction<A>,
    snapshot_age: Option<Duration>,
    /// The identity of a snapshot found unusable, to replace or delete.
    rejected: Option<(String, String)>,
    /// The events after the snapshot already read while checking it.
    first_page: Option<Page<E, u64>>,
}

impl<E: ContractEvent> EventStore<E> {
    /// Loads aggregate `aggregate_id`: its state folded from every event, and its version.
    /// Starts from the cached snapshot when it is usable and reads only the newer events; a
    /// snapshot that does not decode or does not match the aggregate's stream is logged and
    /// ignored. Afterwards, if the store's caching policy asks for it, a snapshot of the result
    /// is written in a background task (the caller never waits for it; its errors are logged).
    /// An aggregate without events loads as `A::default()` at version 0.
    ///
    /// ```no_run
    /// use backbone_core::{events_contract, Error};
    /// use backbone_core::store::{Aggregate, AppendOptions, ExpectedVersion};
    /// use backbone_redis::store::EventStoreBuilder;
    ///
    /// #[events_contract]
    /// pub trait Account {
    ///     async fn deposited(&self, cents: i64);
    /// }
    ///
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Balance { cents: i64 }
    ///
    /// impl Aggregate for Balance {
    ///     type Event = AccountEvent;
    ///     const NAME: &'static str = "balance-v1";
    ///     fn apply(&mut self, AccountEvent::Deposited { cents }: &AccountEvent) {
    ///         self.cents += cents;
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let store = EventStoreBuilder::new().uri("accounts").build::<AccountEvent>().await?;
    /// let balance = store.load::<Balance>("acc-1").await?;
    /// // Append only if nobody else did since the load.
    /// let events = [AccountEvent::Deposited { cents: 500 }];
    /// store.append("acc-1", ExpectedVersion::from(&balance), &events, AppendOptions::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
    ) -> Result<Reduction<A>, Error> {
        check_aggregate_id(aggregate_id)?;
        let key = self.keys_for(aggregate_id).snapshot(A::NAME, aggregate_id);
        let start = self.start_from_snapshot::<A>(aggregate_id, &key).await?;
        let base = start.reduction.version;
        let (reduction, position) = self
            .fold(aggregate_id, start.reduction, start.first_page)
            .await?;
        let info = SnapshotInfo {
            version: reduction.version,
            events_since_snapshot: reduction.version.saturating_sub(base),
            snapshot_age: start.snapshot_age,
        };
        let write = match position {
            Some(position) if self.caching().wants_snapshot(&info) => {
                match codec::encode(A::NAME, "state", &reduction.state) {
                    Ok(state) => Some((state, position)),
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "cannot encode the snapshot; not writing it");
                        None
                    }
                }
            }
            _ => None,
        };
        if write.is_some() || start.rejected.is_some() {
            self.spawn_snapshot_write(key, reduction.version, write, start.rejected);
        }
        Ok(reduction)
    }

    /// Loads aggregate `aggregate_id` by replaying every event: no snapshot is read or written.
    /// [`load`](Self::load) always returns the same.
    ///
    /// ```no_run
    /// # use backbone_core::{events_contract, store::Aggregate};
    /// # #[events_contract]
    /// # pub trait Account { async fn deposited(&self, cents: i64); }
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # struct Balance { cents: i64 }
    /// # impl Aggregate for Balance {
    /// #     type Event = AccountEvent;
    /// #     const NAME: &'static str = "balance-v1";
    /// #     fn apply(&mut self, AccountEvent::Deposited { cents }: &AccountEvent) { self.cents += cents; }
    /// # }
    /// # async fn run(store: backbone_redis::store::EventStore<AccountEvent>) -> Result<(), backbone_core::Error> {
    /// let replayed = store.load_uncached::<Balance>("acc-1").await?;
    /// let cached = store.load::<Balance>("acc-1").await?;
    /// assert_eq!((replayed.state.cents, replayed.version), (cached.state.cents, cached.version));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_uncached<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
    ) -> Result<Reduction<A>, Error> {
        check_aggregate_id(aggregate_id)?;
        let (reduction, _) = self.fold(aggregate_id, Reduction::default(), None).await?;
        Ok(reduction)
    }

    /// The version and age of aggregate `aggregate_id`'s snapshot of `A`, if there is one; for
    /// inspection (its state is not decoded). A snapshot whose `version` or `at` is not a
    /// number is an error naming the key.
    ///
    /// ```no_run
    /// # use backbone_core::{events_contract, store::Aggregate};
    /// # #[events_contract]
    /// # pub trait Account { async fn deposited(&self, cents: i64); }
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// # struct Balance { cents: i64 }
    /// # impl Aggregate for Balance {
    /// #     type Event = AccountEvent;
    /// #     const NAME: &'static str = "balance-v1";
    /// #     fn apply(&mut self, AccountEvent::Deposited { cents }: &AccountEvent) { self.cents += cents; }
    /// # }
    /// # async fn run(store: backbone_redis::store::EventStore<AccountEvent>) -> Result<(), backbone_core::Error> {
    /// if let Some((version, age)) = store.snapshot::<Balance>("acc-1").await? {
    ///     println!("snapshot at version {version}, {age:?} old");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn snapshot<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<(u64, Duration)>, Error> {
        check_aggregate_id(aggregate_id)?;
        let key = self.keys_for(aggregate_id).snapshot(A::NAME, aggregate_id);
        let Some(raw) = self.fetch_snapshot(&key).await? else {
            return Ok(None);
        };
        let parsed = raw
            .number("version")
            .and_then(|v| Ok((v, raw.number("at")?)));
        let (version, at) =
            parsed.map_err(|reason| Error::channel(format!("snapshot {key}"), reason))?;
        Ok(Some((
            version,
            Duration::from_millis(now_millis().saturating_sub(at)),
        )))
    }

    /// Deletes aggregate `aggregate_id`'s snapshot of `A`, if it has one (true then): the
    /// next [`load`](Self::load) reduces the aggregate from its events again. A snapshot is
    /// state the application derived: when it holds personal data, delete it after
    /// forgetting the subject (see [`backbone_core::personal`]), and the state rebuilt from
    /// the events holds [`Personal::Forgotten`](backbone_core::personal::Personal::Forgotten)
    /// instead.
    pub async fn delete_snapshot<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
    ) -> Result<bool, Error> {
        check_aggregate_id(aggregate_id)?;
        let key = self.keys_for(aggregate_id).snapshot(A::NAME, aggregate_id);
        let deleted: u64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("DEL {key}"), e))?;
        Ok(deleted > 0)
    }

    /// HGETALL of the snapshot; `None` when there is none.
    async fn fetch_snapshot(&self, key: &str) -> Result<Option<RawSnapshot>, Error> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("HGETALL {key}"), e))?;
        Ok((!fields.is_empty()).then_some(RawSnapshot { fields }))
    }

    /// The reduction a load starts from: the snapshot when it decodes and matches the stream
    /// (then it has been checked against event `version`, and the fold reads from
    /// `version + 1`), else the default, with what was wrong logged.
    async fn start_from_snapshot<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
        key: &str,
    ) -> Result<Start<A, E>, Error> {
        let scratch = |rejected| Start {
            reduction: Reduction::default(),
            snapshot_age: None,
            rejected,
            first_page: None,
        };
        let raw = match self.fetch_snapshot(key).await {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(scratch(None)),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cannot read the snapshot; replaying every event");
                return Ok(scratch(None));
            }
        };
        let snapshot = match raw.decode::<A>() {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "ignoring a snapshot that does not decode; replaying every event");
                return Ok(scratch(Some(raw.identity())));
            }
        };
        let mut first_page = None;
        if snapshot.version > 0 {
            let mut page = self.read(aggregate_id, snapshot.version, LOAD_PAGE).await?;
            let event = page.events.first();
            let found = event.filter(|e| e.aggregate_version == Some(snapshot.version));
            let matches = found.is_some_and(|e| {
                snapshot
                    .position
                    .as_ref()
                    .is_none_or(|p| *p == e.metadata.stream_id)
            });
            if !matches {
                let error = match found {
                    None => format!(
                        "the snapshot is at version {} but the aggregate has no event {}",
                        snapshot.version, snapshot.version
                    ),
                    Some(e) => format!(
                        "the snapshot's event {} was at position {}, the aggregate's is at {}",
                        snapshot.version,
                        snapshot.position.as_deref().unwrap_or("?"),
                        e.metadata.stream_id
                    ),
                };
                tracing::warn!(key = %key, error = %error, "ignoring a snapshot of another history (was the aggregate's stream deleted?); replaying every event");
                return Ok(scratch(Some(raw.identity())));
            }
            page.events.remove(0);
            first_page = Some(page);
        }
        Ok(Start {
            reduction: Reduction {
                state: snapshot.state,
                version: snapshot.version,
            },
            snapshot_age: Some(snapshot.age),
            rejected: None,
            first_page,
        })
    }

    /// Applies the events after `reduction.version`, page by page, starting with `first_page`
    /// when given (the events right after `reduction.version`); returns the result and the
    /// position of the last event applied, if any.
    async fn fold<A: Aggregate<Event = E>>(
        &self,
        aggregate_id: &str,
        mut reduction: Reduction<A>,
        mut first_page: Option<Page<E, u64>>,
    ) -> Result<(Reduction<A>, Option<String>), Error> {
        let mut from = Some(reduction.version + 1);
        let mut position = None;
        while let Some(start) = from {
            let page = match first_page.take() {
                Some(page) => page,
                None => self.read(aggregate_id, start, LOAD_PAGE).await?,
            };
            for StoredEvent {
                event,
                metadata,
                aggregate_version,
                ..
            } in page.events
            {
                reduction.state.apply(&event);
                reduction.version = aggregate_version.unwrap_or(reduction.version + 1);
                position = Some(metadata.stream_id);
            }
            from = page.next;
        }
        Ok((reduction, position))
    }

    /// Writes `write` (state, position) as the snapshot at `version`, or deletes the rejected
    /// snapshot, in a task of its own; logs what fails.
    fn spawn_snapshot_write(
        &self,
        key: String,
        version: u64,
        write: Option<(Vec<u8>, String)>,
        rejected: Option<(String, String)>,
    ) {
        let mut connection = self.connection();
        let (rejected_version, rejected_at) = rejected.unwrap_or_default();
        let mut invocation = SNAPSHOT.key(&key);
        match write {
            Some((state, position)) => invocation
                .arg("write")
                .arg(version)
                .arg(state)
                .arg(now_millis())
                .arg(position),
            None => invocation.arg("drop").arg(0).arg("").arg(0).arg(""),
        };
        invocation.arg(rejected_version).arg(rejected_at);
        tokio::spawn(async move {
            let result: Result<Value, _> = invocation.invoke_async(&mut connection).await;
            match result {
                Ok(Value::Int(1)) => tracing::debug!(key = %key, version, "snapshot updated"),
                Ok(_) => {
                    tracing::debug!(key = %key, version, "snapshot left as it was (as new or newer)")
                }
                Err(e) => {
                    tracing::warn!(key = %key, version, error = %e, "cannot write the snapshot")
                }
            }
        });
    }
}
