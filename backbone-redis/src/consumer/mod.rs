//! The Redis consumer: [`RedisConsumerBuilder`] checks the options, creates the group and starts
//! four tasks: the reader (`reader.rs`) reads entries, the fetcher (`fetch.rs`) fetches their
//! payloads while the reader reads on, the claimer (`claimer.rs`) takes over entries other
//! consumers left idle, and the worker (`worker.rs`) schedules the jobs they send it; what the
//! tasks send each other is in `messages.rs`, the error that ends the consumer (raised by any
//! of them) in `fatal.rs`, the bound on the bytes held read but not handled in `budget.rs`,
//! and each event's fate is decided in `job.rs`.

mod budget;
mod claimer;
mod fatal;
mod fetch;
mod gauges;
mod health;
mod job;
mod messages;
mod objects;
mod ordered;
mod partitions;
mod personal;
mod reader;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Connection;
use async_trait::async_trait;
use backbone_core::middleware::ChannelInfo;
use backbone_core::names::{check_name, default_consumer_name};
use backbone_core::{
    AckMode, Acknowledge, ConsumerBuilder, ConsumerLifetime, Error, EventHandler, Metadata,
    RetryPolicy, StreamAddress, UnknownPolicy,
};
use backbone_core::{Middleware, Middlewares};
use tokio_util::sync::CancellationToken;

use crate::connection::redis_error;
use crate::key_store::KeyStoreSetting;
use crate::keys::StreamKeys;
use crate::settings::{settings_setters, RedisSettings};
use backbone_core::objects::ObjectStorage;
use backbone_core::personal::KeyStore;
use budget::Budget;
use fatal::Fatal;
use job::Shared;
use reader::Reader;
use tokio::sync::mpsc;
use worker::Worker;

/// Builds consumers that read a Redis stream through a consumer group.
///
/// Connection settings (URL, TLS, timeouts, client name) come from [`RedisSettings`]
/// (`.settings(..)`, or `.url(..)`; default [`RedisSettings::new`]: `$REDIS_URL` and the TLS
/// variables). Defaults: group `"default"`, name
/// [`default_consumer_name`] (stable across restarts of the same program on the same host),
/// `batch_size` 100, `block` 2 s, [`AckMode::OnSuccess`], no `max_messages`,
/// [`RetryPolicy::default`] (100 ms doubling to 10 s, 5 deliveries), `claim_min_idle` 30 s,
/// `concurrency` 1, [`UnknownPolicy::DeadLetter`], `shutdown_grace` 10 s, idle consumers kept,
/// `max_buffered_bytes` 64 MiB.
///
/// Delivery is at least once: an event is acknowledged after its handler succeeds; a failing
/// one is delivered again after a backoff, then moved to the group's dead-letter stream (see
/// [`DeadLetters`](crate::DeadLetters)) with the reason; entries a dead consumer held are claimed
/// by the living after `claim_min_idle`.
///
/// ```no_run
/// use backbone_core::{async_trait, events_contract, ConsumerContext, Error, HandlerResult};
/// use backbone_redis::RedisConsumerBuilder;
///
/// #[events_contract]
/// pub trait Greetings {
///     async fn hello(&self, name: String);
/// }
///
/// struct Printer;
///
/// #[async_trait]
/// impl GreetingsConsumer for Printer {
///     async fn hello(&self, ctx: &ConsumerContext, name: String) -> HandlerResult {
///         println!("hello {name} ({})", ctx.metadata().stream_id);
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), Error> {
/// let lifetime = RedisConsumerBuilder::new()
///     .url("redis://127.0.0.1:6379")
///     .uri("greetings")
///     .group("printer")
///     .name("printer-1")
///     .subscribe_greetings_consumer(Printer)
///     .await?;
/// lifetime.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisConsumerBuilder {
    settings: RedisSettings,
    group: String,
    name: Option<String>,
    batch_size: usize,
    block: Duration,
    ack: AckMode,
    max_messages: Option<u64>,
    retry: RetryPolicy,
    claim_min_idle: Duration,
    concurrency: usize,
    on_unknown: UnknownPolicy,
    shutdown_grace: Duration,
    remove_idle_consumers: Option<Duration>,
    max_buffered_bytes: usize,
    ordered: bool,
    lease_ttl: Duration,
    middlewares: Middlewares,
    group_metrics_interval: Duration,
    key_store: KeyStoreSetting,
    objects: Option<ObjectStorage>,
}

/// The default of [`RedisConsumerBuilder::max_buffered_bytes`]: 64 MiB.
const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

impl Default for RedisConsumerBuilder {
    fn default() -> Self {
        RedisConsumerBuilder {
            settings: RedisSettings::default(),
            group: "default".to_owned(),
            name: None,
            batch_size: 100,
            block: Duration::from_secs(2),
            ack: AckMode::OnSuccess,
            max_messages: None,
            retry: RetryPolicy::default(),
            claim_min_idle: Duration::from_secs(30),
            concurrency: 1,
            on_unknown: UnknownPolicy::DeadLetter,
            shutdown_grace: Duration::from_secs(10),
            remove_idle_consumers: None,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            ordered: false,
            middlewares: Middlewares::default(),
            group_metrics_interval: Duration::from_secs(10),
            key_store: KeyStoreSetting::default(),
            objects: None,
            lease_ttl: Duration::from_secs(5),
        }
    }
}

impl RedisConsumerBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    settings_setters!("; must match the producer's");

    /// The consumer group (default `"default"`). Every group receives every event.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The consumer's name within its group. A consumer restarted under the same name handles
    /// the entries it left pending first.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many entries one `XREADGROUP` asks for (default 100).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How long one `XREADGROUP` waits for new entries (default 2 s).
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// When entries are acknowledged (default [`AckMode::OnSuccess`]).
    pub fn ack(mut self, ack: AckMode) -> Self {
        self.ack = ack;
        self
    }

    /// Stop after handling this many events; `completion()` then returns `Ok`.
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// How failing events are delivered again, and when they are dead-lettered (default
    /// [`RetryPolicy::default`]: 100 ms doubling to 10 s, 5 deliveries).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Entries another consumer of the group has held this long without acknowledging them are
    /// claimed (`XAUTOCLAIM`) and handled here (default 30 s). Must exceed the slowest handler,
    /// or two consumers may handle the same entry.
    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.claim_min_idle = idle;
        self
    }

    /// How many events this consumer handles at once (default 1). Events with the same
    /// ordering key are never handled at once and keep their order. With 1, handlers run
    /// inside the consumer's own task (no task per event); with more, each runs on its own
    /// Tokio task, so handlers can run in parallel on a multi-threaded runtime.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// What to do with operations the contract does not have (default
    /// [`UnknownPolicy::DeadLetter`]).
    pub fn on_unknown(mut self, policy: UnknownPolicy) -> Self {
        self.on_unknown = policy;
        self
    }

    /// How long `shutdown()` lets handlers in flight finish (default 10 s); what is not
    /// finished then stays pending, for a restart or another consumer to claim.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Remove other consumers of the group that have been idle this long with nothing pending
    /// (`XGROUP DELCONSUMER`); off by default.
    pub fn remove_idle_consumers(mut self, idle: Duration) -> Self {
        self.remove_idle_consumers = Some(idle);
        self
    }

    /// An ordered group (default off): each partition of the stream is owned by one member of
    /// the group at a time (a lease in Redis, renewed every `lease_ttl / 3`), so the events of
    /// one key are handled by one consumer at a time, in order, across every process of the
    /// group; partitions are dealt out again when members join, leave or die, and a new owner
    /// first handles what the previous one left pending. Every consumer of the group must set
    /// it; a group has work for as many consumers as the stream has partitions. Not with
    /// `max_messages`. Without it, every consumer reads every partition, as in a plain Redis
    /// group. See the README's Redis Cluster section for what each mode guarantees.
    ///
    /// ```
    /// let builder = backbone_redis::RedisConsumerBuilder::new()
    ///     .uri("orders")
    ///     .partitions(6)
    ///     .ordered(true);
    /// ```
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// How long an ordered group's member keeps its membership and partitions without
    /// renewing them (default 5 s, at least 100 ms): a member that dies hands its partitions
    /// over after about this long.
    ///
    /// ```
    /// let builder = backbone_redis::RedisConsumerBuilder::new()
    ///     .ordered(true)
    ///     .lease_ttl(std::time::Duration::from_secs(2));
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How many bytes this consumer may hold read but not yet handled (default 64 MiB): the
    /// events queued, running or waiting for a retry, each counted as its entry's and its
    /// payload's bytes, and the batches being read and fetched, counted at the bytes per entry
    /// observed so far. While the bound is reached nothing more is read; a read asks for as
    /// many entries as the room left holds, at most `batch_size`, and for at least one when
    /// nothing is held, so a bound smaller than one event still lets events through, one at a
    /// time. Until a first batch shows the size of an entry, reads ask for one entry. Claims
    /// (of entries a dead consumer left) take what the room left holds too, but do not wait
    /// for reads blocked on an idle stream, so a claim made while reads are outstanding may
    /// exceed the bound by what those reads then bring. Must be at least 1.
    ///
    /// ```
    /// use backbone_redis::RedisConsumerBuilder;
    ///
    /// // Large payloads, a slow handler: hold at most about 8 MiB.
    /// let builder = RedisConsumerBuilder::new().uri("images").max_buffered_bytes(8 << 20);
    /// ```
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Adds a [`Middleware`] around every handler call and batch read, inside the ones added
    /// before (and inside backbone's tracing and metrics); it is also told how each delivery
    /// settled and the group's state.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares = self.middlewares.with(middleware);
        self
    }

    /// Where this consumer finds the keys that open `#[personal]` parameters (see
    /// [`backbone_core::personal`]); by default a [`RedisKeyStore`](crate::RedisKeyStore) on
    /// the consumer's connection. The keys of a batch's subjects are read once per batch and
    /// never kept, so a forgotten subject reads as forgotten from the next batch on.
    pub fn key_store(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.key_store.set(keys);
        self
    }

    /// Where this consumer finds the objects of parameters kept in an object store
    /// ([`Storage::Object`](backbone_core::storage::Storage::Object)): the same store and root
    /// as the producers'. Objects are read at `<root>/<this stream's key>/<message id>/<name>`
    /// and checked against the entry's reference (size, SHA-256). Without it, an event with
    /// objects is dead-lettered with that reason.
    pub fn object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = Some(objects);
        self
    }

    /// How often each partition's group state (pending, lag, consumers) is read with
    /// `XINFO GROUPS` for the middlewares' [`group_observed`](Middleware::group_observed)
    /// and the `backbone_group_*` gauges (default 10 s; at least 100 ms).
    pub fn group_metrics_interval(mut self, interval: Duration) -> Self {
        self.group_metrics_interval = interval;
        self
    }
}

impl ConsumerBuilder for RedisConsumerBuilder {
    async fn subscribe(self, handler: Arc<dyn EventHandler>) -> Result<ConsumerLifetime, Error> {
        let address = self.settings.address()?;
        check_name("group", &self.group, "")?;
        let name = self.name.clone().unwrap_or_else(default_consumer_name);
        check_name("consumer name", &name, "")?;
        if self.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.max_buffered_bytes == 0 {
            return Err(Error::Config(
                "max_buffered_bytes must be at least 1".into(),
            ));
        }
        if self.claim_min_idle < Duration::from_millis(10) {
            return Err(Error::Config(
                "claim_min_idle must be at least 10 ms".into(),
            ));
        }
        if self.group_metrics_interval < Duration::from_millis(100) {
            return Err(Error::Config(format!(
                "group_metrics_interval must be at least 100 ms, got {:?}",
                self.group_metrics_interval
            )));
        }
        if self.block.is_zero() {
            return Err(Error::Config(
                "block must be longer than zero (0 would block forever)".into(),
            ));
        }
        let layout = self.settings.layout()?;
        if self.ordered && self.max_messages.is_some() {
            return Err(Error::Config(
                "max_messages cannot be combined with an ordered group".into(),
            ));
        }
        if self.ordered && self.lease_ttl < Duration::from_millis(100) {
            return Err(Error::Config(format!(
                "lease_ttl must be at least 100 ms, got {:?}",
                self.lease_ttl
            )));
        }
        if layout.count() > 1 && self.max_messages.is_some() {
            return Err(Error::Config(format!(
                "max_messages cannot be combined with partitions ({}): it counts the events of \
                 one stream",
                layout.count()
            )));
        }
        let who = [self.group.as_str(), name.as_str()];
        let mut commands = self.settings.connect("consumer", &who).await?;
        layout.check(&mut commands).await?;
        for keys in layout.partitions() {
            create_group(&mut commands, keys.stream(), &self.group).await?;
        }
        let tracker = Arc::new(health::Tracker::default());
        if self.ordered {
            let stop = CancellationToken::new();
            let member = format!("{name}#{}", backbone_core::MessageId::new());
            let ordered = ordered::Ordered {
                lease_ttl: self.lease_ttl,
                builder: self,
                layout,
                address,
                name,
                member,
                handler,
                commands,
                health: tracker.clone(),
            };
            let task = tokio::spawn(tracked(tracker.clone(), ordered.run(stop.clone())));
            return Ok(ConsumerLifetime::new(stop, task).with_probe(tracker));
        }
        let mut partitions = Vec::new();
        let partitioned = layout.count() > 1;
        for (index, keys) in layout.partitions().iter().enumerate() {
            let reader = self
                .settings
                .connect_blocking("reader", &who, self.block)
                .await?;
            let stop = CancellationToken::new();
            let task = self.start_partition(
                Part {
                    health: tracker.clone(),
                    partition: partitioned.then_some(index as u32),
                    keys: keys.clone(),
                    address: address.clone(),
                    name: name.clone(),
                    handler: handler.clone(),
                    commands: commands.clone(),
                    reader,
                },
                stop.clone(),
            );
            partitions.push((stop, task));
        }
        if partitions.len() == 1 {
            let (stop, task) = partitions.pop().expect("one partition");
            return Ok(ConsumerLifetime::new(stop, task).with_probe(tracker));
        }
        let stop = CancellationToken::new();
        let supervised = partitions::supervise(stop.clone(), partitions);
        let task = tokio::spawn(tracked(tracker.clone(), supervised));
        Ok(ConsumerLifetime::new(stop, task).with_probe(tracker))
    }
}

/// What one partition's tasks are started with.
struct Part {
    health: Arc<health::Tracker>,
    /// The partition's index, on a partitioned stream.
    partition: Option<u32>,
    keys: StreamKeys,
    address: StreamAddress,
    name: String,
    handler: Arc<dyn EventHandler>,
    commands: Connection,
    reader: Connection,
}

impl RedisConsumerBuilder {
    /// Starts the reader, fetcher, claimer and worker of one partition (of the stream, when
    /// it has one); the worker's task ends when `stop` is cancelled or an error ends it.
    fn start_partition(
        &self,
        part: Part,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<Result<(), Error>> {
        let fatal = Arc::new(Fatal::default());
        let mut info =
            ChannelInfo::consumer(crate::SYSTEM, part.address.clone(), &self.group, &part.name);
        if let Some(p) = part.partition {
            info = info.for_partition(p);
        }
        let key_store = self.key_store.resolve(&part.commands);
        let shared = Arc::new(Shared {
            key_store,
            objects: self.objects.clone(),
            handler: self.middlewares.wrap(info.clone(), part.handler),
            middlewares: self.middlewares.clone(),
            info,
            acker: Arc::new(RedisAcker {
                connection: part.commands.clone(),
                stream: part.keys.stream().to_owned(),
                group: self.group.clone(),
                fatal: fatal.clone(),
            }),
            commands: part.commands,
            keys: part.keys,
            address: part.address,
            group: self.group.clone(),
            name: part.name,
            ack: self.ack,
            retry: self.retry,
            on_unknown: self.on_unknown,
            claim_min_idle: self.claim_min_idle,
            fatal,
            health: part.health.clone(),
            budget: Budget::new(self.max_buffered_bytes),
        });
        let (requests_tx, requests_rx) = mpsc::channel(worker::READS_AHEAD);
        let (batches_tx, batches_rx) = mpsc::channel(1);
        let (incoming_tx, incoming_rx) = mpsc::channel(4);
        let tasks_stop = CancellationToken::new();
        let reader = Reader {
            shared: shared.clone(),
            connection: part.reader,
            block: self.block,
        };
        tokio::spawn(reader.run(requests_rx, batches_tx, tasks_stop.clone()));
        tokio::spawn(fetch::fetcher(
            shared.clone(),
            batches_rx,
            incoming_tx.clone(),
            tasks_stop.clone(),
        ));
        tokio::spawn(gauges::gauges(
            shared.clone(),
            self.group_metrics_interval,
            tasks_stop.clone(),
        ));
        tokio::spawn(claimer::claimer(
            shared.clone(),
            self.batch_size,
            self.remove_idle_consumers,
            incoming_tx,
            tasks_stop.clone(),
        ));
        let worker = Worker {
            shared,
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            max_messages: self.max_messages,
            shutdown_grace: self.shutdown_grace,
            requests: requests_tx,
            incoming: incoming_rx,
            tasks_stop,
        };
        tokio::spawn(tracked(part.health, worker.run(stop)))
    }
}

/// Runs `task`, recording the error it ends with as the consumer's reason to have stopped.
async fn tracked(
    health: Arc<health::Tracker>,
    task: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    let result = task.await;
    if let Err(e) = &result {
        health.stop(e.to_string());
    }
    result
}

/// `XGROUP CREATE <stream> <group> 0 MKSTREAM`, ignoring BUSYGROUP: a group created at `0`
/// receives what was sent before it existed, and the consumer may start before any producer.
pub(crate) async fn create_group(
    connection: &mut Connection,
    stream: &str,
    group: &str,
) -> Result<(), Error> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => {
            Err(redis_error(format!("create group {group} on {stream}"), e))
        }
        _ => Ok(()),
    }
}

/// `XACK` of one entry, for [`ConsumerContext::ack`](backbone_core::ConsumerContext::ack). The
/// handler gets any error; one retrying cannot fix (`XACK` refused, authentication lost) also
/// ends the consumer.
struct RedisAcker {
    connection: Connection,
    stream: String,
    group: String,
    fatal: Arc<Fatal>,
}

#[async_trait]
impl Acknowledge for RedisAcker {
    async fn ack(&self, metadata: &Metadata) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&metadata.stream_id)
            .query_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(|e| {
                let context = format!("XACK {} on {}", metadata.stream_id, self.stream);
                self.fatal
                    .raise_if_fatal(redis_error(context.clone(), e.clone()));
                redis_error(context, e)
            })
    }
}
