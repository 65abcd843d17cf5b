//! The event store on Redis: per-aggregate streams in the same layout as the channel, so events
//! appended here also reach the contract's consumer groups.
//!
//! An append writes, in one Lua script, each event's payload hash, its entry in the contract's
//! stream (`bb:<tag>:events`, with fields `aggregate`, `aggregate_version` and the aggregate as
//! ordering key) and its entry in the aggregate's stream (`bb:<tag>:agg:<id>`, entry id
//! `0-<version>`, with the `position` in the contract's stream). All keys share the channel's
//! hash tag, so one script writes them on Redis Cluster too; a busy contract scales out by
//! using several uris (see the README).

mod aggregate;
mod append;
mod projection;
mod read;
mod stats;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::Connection;
use backbone_core::names::check_name;
use backbone_core::personal::KeyStore;
use backbone_core::store::CachingPolicy;
use backbone_core::{ContractEvent, Error, StreamAddress};

use crate::key_store::KeyStoreSetting;
use crate::keys::StreamKeys;
use crate::layout::Layout;
use crate::settings::{settings_setters, RedisSettings};
use backbone_core::objects::ObjectStorage;

pub use projection::{Checkpoint, Progress, ProjectionHandle};
pub use read::Page;
pub use stats::StoreStats;

/// Builds an [`EventStore`].
///
/// ```no_run
/// use backbone_core::{events_contract, Error};
/// use backbone_core::store::{AppendOptions, ExpectedVersion};
/// use backbone_redis::store::EventStoreBuilder;
///
/// #[events_contract]
/// pub trait Account {
///     async fn deposited(&self, cents: i64);
/// }
///
/// # async fn run() -> Result<(), Error> {
/// let store = EventStoreBuilder::new().uri("accounts").build::<AccountEvent>().await?;
/// let result = store
///     .append("acc-1", ExpectedVersion::NoStream, &[AccountEvent::Deposited { cents: 500 }], AppendOptions::default())
///     .await?;
/// assert_eq!(result.version, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EventStoreBuilder {
    settings: RedisSettings,
    idempotency_ttl: Duration,
    caching: CachingPolicy,
    key_store: KeyStoreSetting,
    objects: Option<ObjectStorage>,
}

impl Default for EventStoreBuilder {
    fn default() -> Self {
        EventStoreBuilder {
            settings: RedisSettings::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            caching: CachingPolicy::default(),
            key_store: KeyStoreSetting::default(),
            objects: None,
        }
    }
}

impl EventStoreBuilder {
    /// A builder with the defaults (idempotency keys remembered 24 h; connection settings
    /// from [`RedisSettings::new`]: `$REDIS_URL` and the TLS variables).
    pub fn new() -> Self {
        Self::default()
    }

    settings_setters!(
        "; as for the contract's producers and consumers: the store writes into that stream"
    );

    /// How long an idempotency key is remembered (default 24 h; at least 1 s).
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// When `load` writes a snapshot (default [`CachingPolicy::EveryEvents`]`(100)`).
    pub fn caching(mut self, policy: CachingPolicy) -> Self {
        self.caching = policy;
        self
    }

    /// Where the store finds the keys that seal and open `#[personal]` parameters (see
    /// [`backbone_core::personal`]); by default a [`RedisKeyStore`](crate::RedisKeyStore) on
    /// the store's connection. Use the same as the contract's producers and consumers.
    pub fn key_store(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.key_store.set(keys);
        self
    }

    /// The object store of `storage = "object"` operations (see
    /// [`ObjectStorage`]): an append puts their large parameters there, reads fetch them.
    /// Use the same as the contract's producers and consumers. Without one, appending such an
    /// operation is refused ([`Error::Config`]) before anything is written, and reading one is
    /// an [`Error::BadStoredEvent`].
    ///
    /// ```no_run
    /// use backbone_core::objects::ObjectStorage;
    /// use backbone_redis::store::EventStoreBuilder;
    ///
    /// # async fn run(objects: ObjectStorage) -> Result<(), backbone_core::Error> {
    /// # #[backbone_core::events_contract(storage = "object")]
    /// # pub trait Documents { async fn scanned(&self, pdf: Vec<u8>); }
    /// let store = EventStoreBuilder::new()
    ///     .uri("documents")
    ///     .object_store(objects)
    ///     .build::<DocumentsEvent>()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = Some(objects);
        self
    }

    /// Connects a store for events of type `E` (a contract's generated `XEvent`).
    pub async fn build<E: ContractEvent>(self) -> Result<EventStore<E>, Error> {
        let address = self.settings.address()?;
        if self.idempotency_ttl < Duration::from_secs(1) {
            return Err(Error::Config("idempotency_ttl must be at least 1 s".into()));
        }
        let layout = self.settings.layout()?;
        let mut connection = self
            .settings
            .connect("store", &[&address.to_string()])
            .await?;
        layout.check(&mut connection).await?;
        Ok(EventStore {
            key_store: self.key_store.resolve(&connection),
            objects: self.objects,
            connection,
            layout,
            address,
            idempotency_ttl: self.idempotency_ttl,
            caching: self.caching,
            _event: PhantomData,
        })
    }
}

/// An event store for one contract's events: append with expected versions and idempotency
/// keys, read by aggregate or by time. Cheap to clone.
pub struct EventStore<E> {
    connection: Connection,
    layout: Layout,
    address: StreamAddress,
    idempotency_ttl: Duration,
    caching: CachingPolicy,
    pub(crate) key_store: Arc<dyn KeyStore>,
    pub(crate) objects: Option<ObjectStorage>,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for EventStore<E> {
    fn clone(&self) -> Self {
        EventStore {
            connection: self.connection.clone(),
            layout: self.layout.clone(),
            address: self.address.clone(),
            idempotency_ttl: self.idempotency_ttl,
            caching: self.caching.clone(),
            key_store: self.key_store.clone(),
            objects: self.objects.clone(),
            _event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for EventStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("stream", &self.keys().stream())
            .field("partitions", &self.layout.count())
            .finish_non_exhaustive()
    }
}

impl<E> EventStore<E> {
    /// The keys of this store's stream (of its first partition, when it has several: see
    /// [`keys_for`](Self::keys_for)).
    pub fn keys(&self) -> &StreamKeys {
        self.layout.partition(0)
    }

    /// The keys of the partition that holds `aggregate_id` (its events, snapshots and the
    /// contract-stream entries they were appended with), by
    /// [`partition_for`](backbone_core::partition::partition_for).
    pub fn keys_for(&self, aggregate_id: &str) -> &StreamKeys {
        self.layout.partition(self.layout.for_key(aggregate_id))
    }

    /// The stream's partitions.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// An error for the reads that span the whole contract stream, not one aggregate, which a
    /// partitioned store does not offer yet.
    pub(crate) fn unpartitioned(&self, what: &str) -> Result<(), Error> {
        match self.layout.count() {
            1 => Ok(()),
            n => Err(Error::Config(format!(
                "{what} reads the whole stream of {}, which has {n} partitions: not supported \
                 on a partitioned store (aggregate reads, loads and appends are)",
                self.address
            ))),
        }
    }

    /// The (environment, uri) this store writes to.
    pub fn address(&self) -> &StreamAddress {
        &self.address
    }

    /// When `load` writes a snapshot.
    pub fn caching(&self) -> &CachingPolicy {
        &self.caching
    }

    pub(crate) fn connection(&self) -> Connection {
        self.connection.clone()
    }
}

/// Checks an aggregate id: it is part of a key.
pub(crate) fn check_aggregate_id(id: &str) -> Result<(), Error> {
    check_name("aggregate id", id, "")
}
