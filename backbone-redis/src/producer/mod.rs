//! The Redis producer: [`RedisProducerBuilder`] and [`RedisPublisher`], whose publish script
//! writes an event's payload hash and its stream entry in one atomic step, at most once per
//! message id, so that a send can be retried after a transient failure. Concurrent sends share
//! runs of that script (`batch`); `max_len` trims in the background (`trim`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backbone_core::middleware::ChannelInfo;
use backbone_core::objects::ObjectStorage;
use backbone_core::personal::KeyStore;
use backbone_core::storage::Storage;
use backbone_core::{
    Error, MessageId, Middleware, Middlewares, OutgoingEvent, Producer, ProducerBuilder, Publish,
};
use redis::RedisError;
use tokio::time::Instant;

use crate::admin::StreamAdmin;
use crate::connection::Connection;
use crate::key_store::KeyStoreSetting;
use crate::keys::StreamKeys;
use crate::layout::Layout;
use crate::retry::{classify_redis, Backoff, ErrorClass};
use crate::settings::{settings_setters, RedisSettings};
use batch::{Batcher, Durability};
use trim::Trimmer;

mod batch;
mod sequence;
mod trim;

/// How long the sent-record of an operation without parameters lives (ms).
const SENT_TTL_MS: u64 = 10 * 60 * 1000;
/// The default of [`RedisProducerBuilder::send_timeout`].
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds producers that write to a Redis stream.
///
/// Connection settings (URL, TLS, timeouts, client name) come from [`RedisSettings`]
/// (`.settings(..)`, or `.url(..)`; default [`RedisSettings::new`]: `$REDIS_URL` and the TLS
/// variables). Defaults: `send_timeout` 5 s, no `max_len`, no `payload_ttl`.
///
/// ```no_run
/// use backbone_core::{events_contract, Error};
/// use backbone_redis::RedisProducerBuilder;
///
/// #[events_contract]
/// pub trait Greetings {
///     async fn hello(&self, name: String);
/// }
///
/// # async fn run() -> Result<(), Error> {
/// let producer = RedisProducerBuilder::new()
///     .url("redis://127.0.0.1:6379")
///     .environment("prod")
///     .uri("greetings")
///     .build_greetings_producer()
///     .await?;
/// let id = producer.hello("Ada".into()).await?;
/// println!("sent {id}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RedisProducerBuilder {
    settings: RedisSettings,
    max_len: Option<u64>,
    payload_ttl: Option<Duration>,
    send_timeout: Option<Duration>,
    durable: Option<Durability>,
    middlewares: Middlewares,
    key_store: KeyStoreSetting,
    objects: Option<ObjectStorage>,
}

impl RedisProducerBuilder {
    /// A builder with no options set.
    pub fn new() -> Self {
        Self::default()
    }

    settings_setters!("");

    /// Keep the stream at about `n` entries: every `max(n / 10, 1)` sends, this producer starts
    /// a [safe trim](StreamAdmin::trim) in the background (one at a time), which never removes
    /// an entry a group has pending or has not read yet, and deletes the payload hashes of the
    /// entries it removes (except those a dead letter refers to). A send never waits for a trim
    /// and never fails because of one; a failed trim is logged (`tracing::warn!`).
    pub fn max_len(mut self, n: u64) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Let payload hashes expire this long after they are written. Must be longer than
    /// [`send_timeout`](Self::send_timeout): a retried send knows the event was written by its
    /// payload hash. Past it, consumers find the payload missing. Inline events
    /// ([`Storage::Inline`](backbone_core::storage::Storage::Inline)) have no payload hash:
    /// their parameters live as long as their entry.
    pub fn payload_ttl(mut self, ttl: Duration) -> Self {
        self.payload_ttl = Some(ttl);
        self
    }

    /// How long one send may take in all, retries included (default 5 s; must be longer than
    /// zero). A send that fails on a [transient](crate::retry::ErrorClass::Transient) error
    /// (connection refused or dropped, I/O, a timeout, `LOADING`, `TRYAGAIN`, `BUSY`,
    /// `CLUSTERDOWN`, `MASTERDOWN`) is retried with the same message id, after 50 ms
    /// doubling to 1 s, while the time left allows; a retry never writes the event twice.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// Durable sends: a send returns `Ok` only once `WAIT replicas timeout` confirmed that at
    /// least `replicas` replicas of the stream's master got the write, so that a failover right
    /// after it loses nothing that was acknowledged. Off by default (no WAIT).
    ///
    /// The WAIT goes in one pipeline with the publish script, on the same connection (on a
    /// cluster, to the master of the stream's slot), so it covers exactly that run's writes.
    /// When fewer replicas confirm within `timeout`, the attempt fails with a
    /// [transient](crate::retry::ErrorClass::Transient) error saying how many of how many
    /// confirmed within what time, and the send is retried within
    /// [`send_timeout`](Self::send_timeout) like any other (a resend writes nothing twice;
    /// its WAIT covers the event written before). A send that gives up this way reports that
    /// the event may or may not have been written: it may be in the stream, unreplicated.
    ///
    /// `replicas` must be at least 1 and `timeout` longer than zero and shorter than
    /// `send_timeout`; keep it well below the connection's
    /// [`response_timeout`](RedisSettings::response_timeout) (default 10 s), which bounds the
    /// wait for the pipeline's answer. Every run of the publish script waits up to `timeout`
    /// on its connection, and commands queued behind it on that connection wait too. An ACL
    /// user of a durable producer needs `+wait` besides [`acl::PRODUCER`](crate::acl::PRODUCER).
    ///
    /// ```
    /// use std::time::Duration;
    /// use backbone_redis::RedisProducerBuilder;
    ///
    /// let builder = RedisProducerBuilder::new()
    ///     .uri("orders")
    ///     .durable(1, Duration::from_millis(500))
    ///     .send_timeout(Duration::from_secs(10));
    /// ```
    pub fn durable(mut self, replicas: usize, timeout: Duration) -> Self {
        self.durable = Some(Durability { replicas, timeout });
        self
    }

    /// Adds a [`Middleware`] around every send of the producers this builds, inside the ones
    /// added before (and inside backbone's tracing and metrics). A
    /// [`RedisPublisher`] used directly runs none.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares = self.middlewares.with(middleware);
        self
    }

    /// Where the producers this builds find the keys that seal `#[personal]` parameters (see
    /// [`backbone_core::personal`]); by default a [`RedisKeyStore`](crate::RedisKeyStore) on
    /// this producer's connection (keys `bbkeys:<subject>`).
    pub fn key_store(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.key_store.set(keys);
        self
    }

    /// Where the producers this builds put the large parameters of operations declared
    /// `storage = "object"` ([`Storage::Object`](backbone_core::storage::Storage::Object)):
    /// those above the threshold go to the store, at
    /// `<root>/<stream key>/<message id>/<parameter>`. Without it, sending such an event fails
    /// with [`Error::Config`] and writes nothing.
    pub fn object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = Some(objects);
        self
    }

    /// Checks the options, connects and returns the [`RedisPublisher`] that
    /// [`build_producer`](ProducerBuilder::build_producer) wraps: use it to send
    /// [`OutgoingEvent`]s directly.
    ///
    /// ```no_run
    /// use backbone_core::{Error, Fields, OutgoingEvent, Publish};
    /// use backbone_redis::RedisProducerBuilder;
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let publisher = RedisProducerBuilder::new().uri("greetings").build_publisher().await?;
    /// let mut fields = Fields::new();
    /// fields.push("name", br#""Ada""#.to_vec());
    /// let event = OutgoingEvent::new("hello", 0, fields);
    /// let id = publisher.publish(event.clone()).await?;
    /// assert_eq!(publisher.publish(event).await?, id); // written once
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build_publisher(self) -> Result<RedisPublisher, Error> {
        let address = self.settings.address()?;
        let send_timeout = self.send_timeout.unwrap_or(DEFAULT_SEND_TIMEOUT);
        if send_timeout.is_zero() {
            return Err(Error::Config(
                "send_timeout must be longer than zero".into(),
            ));
        }
        if let Some(ttl) = self.payload_ttl.filter(|ttl| *ttl <= send_timeout) {
            return Err(Error::Config(format!(
                "payload_ttl ({ttl:?}) must be longer than send_timeout ({send_timeout:?}): \
                 a retried send finds the payload hash to know the event was written"
            )));
        }
        let layout = self.settings.layout()?;
        if let Some(Durability { replicas, timeout }) = self.durable {
            if replicas == 0 || timeout.is_zero() || timeout >= send_timeout {
                return Err(Error::Config(format!(
                    "durable({replicas}, {timeout:?}) needs at least 1 replica and a timeout \
                     longer than zero and shorter than send_timeout ({send_timeout:?})"
                )));
            }
        }
        let address_name = address.to_string();
        let mut connection = self.settings.connect("producer", &[&address_name]).await?;
        layout.check(&mut connection).await?;
        let payload_ttl_ms = self
            .payload_ttl
            .map_or(0, |ttl| ttl.as_millis().max(1) as u64);
        let producer_id: Arc<str> = MessageId::new().to_string().into();
        let writers = layout
            .partitions()
            .iter()
            .map(|keys| Writer {
                keys: keys.clone(),
                batcher: Batcher::start(
                    keys.clone(),
                    connection.clone(),
                    payload_ttl_ms,
                    self.durable,
                    &producer_id,
                ),
                trimmer: self.max_len.map(|max_len| {
                    let admin = StreamAdmin::new(keys.clone(), connection.clone());
                    let admin = match &self.objects {
                        Some(objects) => admin.object_store(objects.clone()),
                        None => admin,
                    };
                    Arc::new(Trimmer::new(admin, max_len))
                }),
            })
            .collect();
        Ok(RedisPublisher {
            layout,
            writers,
            next: Arc::new(AtomicUsize::new(0)),
            connection,
            send_timeout,
            producer_id,
            objects: self.objects.clone(),
        })
    }
}

impl ProducerBuilder for RedisProducerBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        let middlewares = self.middlewares.clone();
        let key_store = self.key_store.clone();
        let publisher = self.build_publisher().await?;
        let keys = key_store.resolve(&publisher.connection);
        Ok(Producer::with_middlewares(Arc::new(publisher), middlewares).with_key_store(keys))
    }
}

/// Writes events to one Redis stream: the channel under every Redis [`Producer`]. Built by
/// [`RedisProducerBuilder::build_publisher`]; cheap to clone.
///
/// [`publish`](Publish::publish) returns `Ok` once the event is in the stream, written exactly
/// once however often it is retried (by itself or by the caller with the same
/// [`OutgoingEvent`]), as long as the event's marker lives: its payload hash, or for an
/// operation without parameters a record kept 10 minutes. An `Err` says what failed and
/// whether the event may nevertheless have been written.
///
/// An [inline](backbone_core::storage::Storage::Inline) event has no marker of its own: the
/// publisher numbers its inline events per stream (see [`producer_id`](Self::producer_id)),
/// and a retry, by the publisher or by the caller, is recognised by its number while the
/// publisher remembers the event's message id (the last 8192 inline events written per
/// partition) and its sequence record lives (10 minutes after its last write). An inline
/// event sent again after its send returned an `Err` gets a new number: written again if the
/// failed send did write it (the `Err` said it may have), never lost.
///
/// Sends made at the same time through one publisher (or its clones) are coalesced: a
/// background task writes whatever is queued, up to 128 events, with one run of the publish
/// script, keeping at most 4 runs in flight. A lone send goes out at once; under load, Redis
/// pays the script's fixed cost once per batch. Each event still succeeds or fails on its own.
/// The task runs on the Tokio runtime that built the publisher; once that runtime is shut
/// down, sends fail with an error saying so.
///
/// ```no_run
/// # async fn run() -> Result<(), backbone_core::Error> {
/// let publisher = backbone_redis::RedisProducerBuilder::new()
///     .uri("greetings")
///     .build_publisher()
///     .await?;
/// println!("writing to {}", publisher.keys().stream());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisPublisher {
    layout: Layout,
    /// One per partition.
    writers: Arc<[Writer]>,
    /// The partition of the next unkeyed event (round robin).
    next: Arc<AtomicUsize>,
    connection: Connection,
    send_timeout: Duration,
    /// A UUID v7, new for each built publisher: names its sequence records.
    producer_id: Arc<str>,
    /// Where `storage = "object"` events' large parameters go.
    objects: Option<ObjectStorage>,
}

/// Writes one partition.
#[derive(Debug)]
struct Writer {
    keys: StreamKeys,
    batcher: Batcher,
    trimmer: Option<Arc<Trimmer>>,
}

/// Whether a failed attempt may have written the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The script was never run (refused connection, rejected by the server).
    NotSent,
    /// The script ran and did not write the event: it failed in its checks (nothing was
    /// written), or refused an inline event that came out of order.
    NotWritten,
    /// The script may have run: the connection broke or no answer came in time.
    Unknown,
}

#[derive(Clone)]
struct Failure {
    error: String,
    /// No answer came before the deadline: `error` says to what.
    cut: bool,
    transient: bool,
    outcome: Outcome,
}

impl Failure {
    fn from_redis(e: &RedisError) -> Self {
        let class = classify_redis(e);
        let outcome = if e.is_connection_refusal() {
            Outcome::NotSent
        } else if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            Outcome::Unknown
        } else if e.code().is_some_and(|code| code.starts_with("backbone")) {
            Outcome::NotWritten
        } else {
            Outcome::NotSent
        };
        let transient = class == ErrorClass::Transient;
        Failure {
            error: e.to_string(),
            cut: false,
            transient,
            outcome,
        }
    }
}

impl RedisPublisher {
    /// The keys of the stream this publisher writes (of its first partition, when it has
    /// several: see [`layout`](Self::layout)).
    ///
    /// ```no_run
    /// # let publisher: backbone_redis::RedisPublisher = todo!();
    /// assert!(publisher.keys().stream().ends_with(":events"));
    /// ```
    pub fn keys(&self) -> &StreamKeys {
        self.layout.partition(0)
    }

    /// The stream's partitions.
    ///
    /// ```no_run
    /// # let publisher: backbone_redis::RedisPublisher = todo!();
    /// for keys in publisher.layout().partitions() {
    ///     println!("{}", keys.stream());
    /// }
    /// ```
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This publisher's producer id: a UUID v7 made when it was built, shared by its clones.
    /// Its [inline](backbone_core::storage::Storage::Inline) events are numbered per stream
    /// key, and the publish script records the last number written in
    /// [`StreamKeys::sequence`]`(producer_id)`, which makes their sends idempotent.
    ///
    /// ```no_run
    /// # let publisher: backbone_redis::RedisPublisher = todo!();
    /// let record = publisher.keys().sequence(publisher.producer_id());
    /// assert!(record.contains(":seq:"));
    /// ```
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// The writer of `event`'s partition: its key's, else the next in turn.
    fn writer_for(&self, event: &OutgoingEvent) -> &Writer {
        let index = match &event.key {
            Some(key) => usize::from(self.layout.for_key(key)),
            None if self.writers.len() == 1 => 0,
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.writers.len(),
        };
        &self.writers[index]
    }

    /// One try: `Ok(true)` written now, `Ok(false)` written before. A retry (`probe`) first
    /// checks with `PING` that Redis answers, so that running out of time while Redis is away
    /// is known not to have sent the script.
    async fn attempt(
        &self,
        writer: &Writer,
        event: &Arc<OutgoingEvent>,
        probe: bool,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let mut connection = self.connection.clone();
        let late = |what: &str, outcome| Failure {
            error: format!("no answer to {what} before the send_timeout"),
            cut: true,
            transient: true,
            outcome,
        };
        if probe {
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<()>(&mut connection);
            match tokio::time::timeout_at(deadline, ping).await {
                Err(_) => return Err(late("PING", Outcome::NotSent)),
                Ok(Err(e)) => {
                    let failure = Failure::from_redis(&e);
                    return Err(Failure {
                        outcome: Outcome::NotSent,
                        ..failure
                    });
                }
                Ok(Ok(())) => {}
            }
        }
        let run = writer.batcher.submit(event.clone(), deadline);
        match tokio::time::timeout_at(deadline, run).await {
            Err(_) => Err(late("the publish script", Outcome::Unknown)),
            Ok(answer) => answer,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        writer: &Writer,
        event: &OutgoingEvent,
        attempts: u32,
        started: Instant,
        failure: Failure,
        last_error: Option<String>,
        unknown: Option<u32>,
    ) -> Error {
        let context = format!(
            "publish {} (message {}) to {}",
            event.operation,
            event.message_id,
            writer.keys.stream()
        );
        let mut text = match last_error {
            Some(last) if failure.cut => format!("{last}; then {}", failure.error),
            _ => failure.error,
        };
        if failure.transient {
            text += &format!(
                "; gave up after {attempts} attempt{} in {:.2?} (send_timeout {:?})",
                if attempts == 1 { "" } else { "s" },
                started.elapsed(),
                self.send_timeout
            );
        }
        text += &match unknown {
            None => "; the event was not written".to_owned(),
            Some(n) if n == attempts => "; the event may or may not have been written: the \
                 outcome of the last attempt is unknown"
                .to_owned(),
            Some(n) => format!(
                "; the event may or may not have been written: the outcome of attempt {n} is \
                 unknown"
            ),
        };
        Error::channel(context, text)
    }
}

#[async_trait]
impl Publish for RedisPublisher {
    async fn publish(&self, mut event: OutgoingEvent) -> Result<MessageId, Error> {
        let writer = self.writer_for(&event);
        if event.storage == Storage::Object {
            let objects = self.objects.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "operation `{}` keeps large parameters in an object store (storage = \
                     \"object\"), and this producer has none: call \
                     RedisProducerBuilder::object_store; nothing was written",
                    event.operation
                ))
            })?;
            let stream = writer.keys.stream();
            let moved = objects
                .offload(stream, &event.message_id, &mut event.fields)
                .await?;
            event.envelope.objects = moved;
        }
        let event = Arc::new(event);
        let started = Instant::now();
        let deadline = started + self.send_timeout;
        let mut backoff = Backoff::send();
        let mut unknown = None;
        let mut last_error = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(writer, &event, attempts > 1, deadline).await {
                Ok(written) => {
                    if written {
                        if let Some(trimmer) = &writer.trimmer {
                            trimmer.on_send();
                        }
                    }
                    return Ok(event.message_id);
                }
                Err(failure) => failure,
            };
            match failure.outcome {
                Outcome::Unknown => unknown = Some(attempts),
                Outcome::NotWritten => unknown = None,
                Outcome::NotSent => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !failure.transient || backoff.peek() >= left {
                writer.batcher.give_up(&event, deadline);
                if let (None, Some(objects)) = (unknown, &self.objects) {
                    // Not written: its objects are nobody's.
                    let stream = writer.keys.stream();
                    if let Err(e) = objects.delete(stream, &event.message_id).await {
                        tracing::warn!(stream, message_id = %event.message_id, error = %e,
                            "cannot delete the objects of an event that was not written");
                    }
                }
                let error = self.failed(
                    writer, &event, attempts, started, failure, last_error, unknown,
                );
                return Err(error);
            }
            tracing::debug!(stream = writer.keys.stream(), message_id = %event.message_id,
                attempt = attempts, error = failure.error, "send failed; retrying");
            if !failure.cut {
                last_error = Some(failure.error);
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo::producer(crate::SYSTEM, self.layout.address().clone())
    }
}
