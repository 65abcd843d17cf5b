//! An in-memory channel with consumer-group semantics, for users' unit tests.
//!
//! Each (environment, uri) is a log of events. Each group reads the whole log from the start
//! (like a Redis group created at `0`); within a group each event goes to one consumer. Failures
//! are handled as on Redis: an event whose handler fails is delivered again after the
//! consumer's [`RetryPolicy`](crate::RetryPolicy) backoff while other events flow, then
//! dead-lettered with the reason Redis gives ([`DeadLetters`]); a fatal failure, a bad event and
//! (under [`UnknownPolicy::DeadLetter`](crate::UnknownPolicy)) an unknown operation are
//! dead-lettered at once. A consumer handles up to `concurrency` events at once, never two of
//! one ordering key, and those in order. An event left pending by a consumer that stopped
//! (waiting for a retry, queued, or not finished within its `shutdown_grace`) is delivered
//! again to a consumer of the same name when it starts, or claimed by another consumer of the
//! group once idle for `claim_min_idle` (see [`InMemoryConsumerBuilder`]). Backoffs and idle
//! times are `tokio::time`'s, so a test under a paused clock skips them. Nothing survives the
//! [`InMemoryBroker`].
//!
//! Every storage strategy works as on Redis: `hash` and `inline` events keep their parameters
//! in the log, and `object` ones put each parameter above the threshold in the broker's object
//! store (an [`ObjectStorage::in_memory`] unless [`InMemoryBroker::with_object_store`] gives
//! another), their fields holding references.
//!
//! ```
//! use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult};
//! use backbone_core::memory::InMemoryBroker;
//!
//! #[events_contract]
//! pub trait Counter {
//!     async fn add(&self, n: i64);
//! }
//!
//! struct Sum(std::sync::Arc<std::sync::atomic::AtomicI64>);
//!
//! #[async_trait]
//! impl CounterConsumer for Sum {
//!     async fn add(&self, _ctx: &ConsumerContext, n: i64) -> HandlerResult {
//!         self.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), backbone_core::Error> {
//! let broker = InMemoryBroker::new();
//! let producer = broker.producer_builder().uri("counter").build_counter_producer().await?;
//! for n in 1..=3 {
//!     producer.add(n).await?;
//! }
//! let total = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
//! broker
//!     .consumer_builder()
//!     .uri("counter")
//!     .group("sum")
//!     .max_messages(3)
//!     .subscribe_counter_consumer(Sum(total.clone()))
//!     .await?
//!     .completion()
//!     .await?;
//! assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), 6);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::objects::ObjectStorage;
use crate::personal::{KeyStore, MemoryKeyStore};
use crate::{OutgoingEvent, StreamAddress};

mod claims;
mod consumer;
mod dead_letters;
mod publisher;
mod retry;
mod worker;

pub use consumer::InMemoryConsumerBuilder;
pub use dead_letters::DeadLetters;
pub use publisher::InMemoryProducerBuilder;

/// An in-memory broker: a set of streams shared by the producers and consumers built from it.
/// Cloning it shares the streams.
#[derive(Clone)]
pub struct InMemoryBroker {
    streams: Arc<Mutex<HashMap<StreamAddress, Arc<Stream>>>>,
    keys: Arc<dyn KeyStore>,
    objects: ObjectStorage,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        InMemoryBroker {
            streams: Arc::default(),
            keys: Arc::new(MemoryKeyStore::new()),
            objects: ObjectStorage::in_memory(),
        }
    }
}

impl std::fmt::Debug for InMemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBroker").finish_non_exhaustive()
    }
}

impl InMemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker whose producers and consumers keep subjects' keys in `keys` instead of their
    /// own [`MemoryKeyStore`].
    pub fn with_key_store(keys: Arc<dyn KeyStore>) -> Self {
        InMemoryBroker {
            keys,
            ..Self::default()
        }
    }

    /// The key store of personal parameters (see [`personal`](crate::personal)): forget a
    /// subject with `broker.key_store().forget("customer-7").await`.
    pub fn key_store(&self) -> Arc<dyn KeyStore> {
        self.keys.clone()
    }

    /// This broker with its producers and consumers keeping the large parameters of
    /// `storage = "object"` operations ([`Storage::Object`](crate::storage::Storage::Object))
    /// in `objects` instead of their own [`ObjectStorage::in_memory`] (whose threshold is
    /// [`DEFAULT_THRESHOLD`](crate::objects::DEFAULT_THRESHOLD)). Clones of the broker made
    /// before keep the store they had.
    ///
    /// As on Redis, a parameter above the threshold is put at
    /// [`ObjectStorage::path`]`(stream, message id, parameter)` and its field holds the
    /// reference `obj.v1.<size>.<sha256>`; a consumer fetches it back before opening the
    /// personal parameters, and an object that is missing or altered makes the event bad
    /// ([`Error::BadObject`](crate::Error::BadObject), dead-lettered). On this channel the
    /// `stream` part of the path is the stream's address as it displays: `<environment>:<uri>`,
    /// or `<uri>` without an environment (Redis uses its stream key, `bb:{<address>}:events`).
    ///
    /// ```
    /// use backbone_core::objects::{object_store::ObjectStoreExt, ObjectStorage};
    /// use backbone_core::{events_contract, memory::InMemoryBroker};
    /// use backbone_core::StreamAddress;
    ///
    /// #[events_contract(storage = "object")]
    /// pub trait Scans {
    ///     async fn scanned(&self, image: String);
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), backbone_core::Error> {
    /// let objects = ObjectStorage::in_memory().threshold(16);
    /// let broker = InMemoryBroker::new().with_object_store(objects.clone());
    /// let producer = broker.producer_builder().environment("test").uri("scans");
    /// let id = producer.build_scans_producer().await?.scanned("x".repeat(100)).await?;
    ///
    /// let stream = StreamAddress::new(Some("test"), "scans")?.to_string();
    /// assert_eq!(stream, "test:scans");
    /// let path = objects.path(&stream, &id, "image");
    /// let object = objects.store().get(&path).await.unwrap().bytes().await.unwrap();
    /// assert_eq!(object.len(), 102); // the JSON string, quotes included
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = objects;
        self
    }

    /// The object store of `storage = "object"` parameters (see
    /// [`with_object_store`](Self::with_object_store)).
    ///
    /// ```
    /// use backbone_core::memory::InMemoryBroker;
    /// use backbone_core::objects::DEFAULT_THRESHOLD;
    ///
    /// assert_eq!(InMemoryBroker::new().object_store().limit(), DEFAULT_THRESHOLD);
    /// ```
    pub fn object_store(&self) -> &ObjectStorage {
        &self.objects
    }

    /// A builder for producers writing to this broker.
    pub fn producer_builder(&self) -> InMemoryProducerBuilder {
        InMemoryProducerBuilder::new(self.clone())
    }

    /// A builder for consumers reading from this broker.
    pub fn consumer_builder(&self) -> InMemoryConsumerBuilder {
        InMemoryConsumerBuilder::new(self.clone())
    }

    /// The number of events ever sent to (environment, uri).
    pub fn len(&self, environment: Option<&str>, uri: &str) -> usize {
        self.find(environment, uri)
            .map_or(0, |s| lock(&s.state).entries.len())
    }

    /// The number of events delivered to `group` and not yet acknowledged.
    pub fn pending(&self, environment: Option<&str>, uri: &str, group: &str) -> usize {
        self.find(environment, uri).map_or(0, |s| {
            lock(&s.state)
                .groups
                .get(group)
                .map_or(0, |g| g.pending.len())
        })
    }

    /// The dead letters of `group` on (environment, uri): events the group gave up on (see
    /// [`InMemoryConsumerBuilder::retry`]), to list, inspect, replay and purge as with
    /// `backbone_redis::DeadLetters`. The names are checked as the builders check them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), backbone_core::Error> {
    /// let broker = backbone_core::memory::InMemoryBroker::new();
    /// let dead = broker.dead_letters(Some("test"), "orders", "billing")?;
    /// assert!(dead.is_empty().await?);
    /// assert!(broker.dead_letters(None, "orders", "bad group").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn dead_letters(
        &self,
        environment: Option<&str>,
        uri: &str,
        group: &str,
    ) -> Result<DeadLetters, crate::Error> {
        let address = StreamAddress::new(environment, uri)?;
        crate::names::check_name("group", group, "")?;
        Ok(DeadLetters {
            stream: self.stream(&address),
            group: group.to_owned(),
        })
    }

    fn find(&self, environment: Option<&str>, uri: &str) -> Option<Arc<Stream>> {
        let address = StreamAddress::new(environment, uri).ok()?;
        lock(&self.streams).get(&address).cloned()
    }

    fn stream(&self, address: &StreamAddress) -> Arc<Stream> {
        lock(&self.streams)
            .entry(address.clone())
            .or_insert_with(|| {
                Arc::new(Stream {
                    state: Mutex::new(StreamState::default()),
                    appended: watch::channel(0).0,
                })
            })
            .clone()
    }
}

/// The stream part of an object's path on this channel: the address, `<environment>:<uri>` or
/// `<uri>` (see [`InMemoryBroker::with_object_store`]).
fn object_stream(address: &StreamAddress) -> String {
    address.to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Stream {
    state: Mutex<StreamState>,
    appended: watch::Sender<usize>,
}

#[derive(Default)]
struct StreamState {
    entries: Vec<Arc<OutgoingEvent>>,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    next: usize,
    pending: BTreeMap<usize, Pending>,
    dead: dead_letters::Buried,
}

struct Pending {
    consumer: String,
    deliveries: u32,
    /// When it was last delivered (read, claimed or retried): its idle time counts from here.
    delivered: tokio::time::Instant,
}

/// The system name of the in-memory channel in spans (`messaging.system`).
pub const SYSTEM: &str = "memory";
