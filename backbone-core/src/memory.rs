//! An in-memory channel with consumer-group semantics, for users' unit tests.
//!
//! Each (environment, uri) is a log of events. Each group reads the whole log from the start
//! (like a Redis group created at `0`); within a group each event goes to one consumer; an event
//! whose handler fails stays pending for that consumer and is delivered to it again when a
//! consumer of the same name starts. Nothing survives the [`InMemoryBroker`].
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::middleware::{ChannelInfo, Middlewares, ReadKind, ReadRequest, Settled, Settlement};
use crate::personal::{open_all, KeyStore, MemoryKeyStore, Sealed};
use crate::{
    lifetime::{Health, HealthProbe},
    metadata::now_millis,
    names::{check_name, default_consumer_name},
    AckMode, Acknowledge, ConsumerBuilder, ConsumerContext, ConsumerLifetime, Error, EventHandler,
    HandleError, MessageId, Metadata, Middleware, OutgoingEvent, Producer, ProducerBuilder,
    Publish, StreamAddress,
};

/// An in-memory broker: a set of streams shared by the producers and consumers built from it.
/// Cloning it shares the streams.
#[derive(Clone)]
pub struct InMemoryBroker {
    streams: Arc<Mutex<HashMap<StreamAddress, Arc<Stream>>>>,
    keys: Arc<dyn KeyStore>,
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        InMemoryBroker {
            streams: Arc::default(),
            keys: Arc::new(MemoryKeyStore::new()),
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

    /// A builder for producers writing to this broker.
    pub fn producer_builder(&self) -> InMemoryProducerBuilder {
        InMemoryProducerBuilder {
            broker: self.clone(),
            environment: None,
            uri: None,
            middlewares: Middlewares::default(),
        }
    }

    /// A builder for consumers reading from this broker.
    pub fn consumer_builder(&self) -> InMemoryConsumerBuilder {
        InMemoryConsumerBuilder {
            broker: self.clone(),
            environment: None,
            uri: None,
            group: "default".to_owned(),
            name: None,
            ack: AckMode::OnSuccess,
            max_messages: None,
            middlewares: Middlewares::default(),
        }
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
}

struct Pending {
    consumer: String,
    deliveries: u32,
}

/// Builds producers for an [`InMemoryBroker`]; options as on the Redis builder.
#[derive(Debug, Clone)]
pub struct InMemoryProducerBuilder {
    broker: InMemoryBroker,
    environment: Option<String>,
    uri: Option<String>,
    middlewares: Middlewares,
}

impl InMemoryProducerBuilder {
    /// The environment (optional).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The stream's uri (required).
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Adds a [`Middleware`] around every send, inside the ones added before.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares = self.middlewares.with(middleware);
        self
    }
}

impl ProducerBuilder for InMemoryProducerBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        let address =
            StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())?;
        let stream = self.broker.stream(&address);
        let publisher = MemoryPublisher { stream, address };
        Ok(
            Producer::with_middlewares(Arc::new(publisher), self.middlewares)
                .with_key_store(self.broker.keys.clone()),
        )
    }
}

/// The system name of the in-memory channel in spans (`messaging.system`).
pub const SYSTEM: &str = "memory";

struct MemoryPublisher {
    stream: Arc<Stream>,
    address: StreamAddress,
}

#[async_trait]
impl Publish for MemoryPublisher {
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error> {
        let id = event.message_id;
        let len = {
            let mut state = lock(&self.stream.state);
            state.entries.push(Arc::new(event));
            state.entries.len()
        };
        self.stream.appended.send_replace(len);
        Ok(id)
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo::producer(SYSTEM, self.address.clone())
    }
}

/// Builds consumers for an [`InMemoryBroker`]; options as on the Redis builder.
#[derive(Debug, Clone)]
pub struct InMemoryConsumerBuilder {
    broker: InMemoryBroker,
    environment: Option<String>,
    uri: Option<String>,
    group: String,
    name: Option<String>,
    ack: AckMode,
    max_messages: Option<u64>,
    middlewares: Middlewares,
}

impl InMemoryConsumerBuilder {
    /// The environment (optional).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The stream's uri (required).
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// The consumer group (default `"default"`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The consumer's name within its group (default: [`default_consumer_name`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// When events are acknowledged (default [`AckMode::OnSuccess`]).
    pub fn ack(mut self, ack: AckMode) -> Self {
        self.ack = ack;
        self
    }

    /// Stop after handling this many events; the lifetime's `completion()` then returns `Ok`.
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Adds a [`Middleware`] around every handler call, inside the ones added before.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares = self.middlewares.with(middleware);
        self
    }
}

impl ConsumerBuilder for InMemoryConsumerBuilder {
    async fn subscribe(self, handler: Arc<dyn EventHandler>) -> Result<ConsumerLifetime, Error> {
        let address =
            StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())?;
        check_name("group", &self.group, "")?;
        let name = self.name.unwrap_or_else(default_consumer_name);
        check_name("consumer name", &name, "")?;
        let stream = self.broker.stream(&address);
        lock(&stream.state)
            .groups
            .entry(self.group.clone())
            .or_default();
        let info = ChannelInfo::consumer(SYSTEM, address.clone(), &self.group, &name);
        let handler = self.middlewares.wrap(info.clone(), handler);
        let consumer = MemoryConsumer {
            probe: Arc::default(),
            info,
            middlewares: self.middlewares,
            acker: Arc::new(MemoryAcker {
                stream: stream.clone(),
                group: self.group.clone(),
            }),
            stream,
            address,
            group: self.group,
            name,
            ack: self.ack,
            max_messages: self.max_messages,
            handler,
            keys: self.broker.keys.clone(),
        };
        let stop = CancellationToken::new();
        let probe = consumer.probe.clone();
        let task = tokio::spawn(consumer.run(stop.clone()));
        Ok(ConsumerLifetime::new(stop, task).with_probe(probe))
    }
}

/// An in-memory consumer's health: always connected; when it last looked for an event, the
/// event it holds (0 or 1), and why it stopped.
#[derive(Default)]
struct MemoryProbe {
    last_read_ms: AtomicU64,
    held: AtomicUsize,
    stopped: Mutex<Option<String>>,
}

impl HealthProbe for MemoryProbe {
    fn health(&self) -> Health {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        Health {
            connected: true,
            last_read_ms: (last > 0).then_some(last),
            held: self.held.load(Ordering::Relaxed),
            stopped: lock(&self.stopped).clone(),
        }
    }
}

struct MemoryAcker {
    stream: Arc<Stream>,
    group: String,
}

#[async_trait]
impl Acknowledge for MemoryAcker {
    async fn ack(&self, metadata: &Metadata) -> Result<(), Error> {
        let index: usize = metadata
            .stream_id
            .parse()
            .map_err(|_| Error::malformed(&metadata.stream_id, "not an in-memory entry id"))?;
        if let Some(group) = lock(&self.stream.state).groups.get_mut(&self.group) {
            group.pending.remove(&index);
        }
        Ok(())
    }
}

struct MemoryConsumer {
    probe: Arc<MemoryProbe>,
    info: ChannelInfo,
    middlewares: Middlewares,
    stream: Arc<Stream>,
    acker: Arc<MemoryAcker>,
    address: StreamAddress,
    group: String,
    name: String,
    ack: AckMode,
    max_messages: Option<u64>,
    handler: Arc<dyn EventHandler>,
    keys: Arc<dyn KeyStore>,
}

impl MemoryConsumer {
    async fn run(self, stop: CancellationToken) -> Result<(), Error> {
        let mut appended = self.stream.appended.subscribe();
        // Entries this consumer left pending in an earlier life come first.
        let mut own_pending: VecDeque<usize> = lock(&self.stream.state)
            .groups
            .get(&self.group)
            .map(|g| {
                g.pending
                    .iter()
                    .filter(|(_, p)| p.consumer == self.name)
                    .map(|(i, _)| *i)
                    .collect()
            })
            .unwrap_or_default();
        let mut handled = 0u64;
        loop {
            if stop.is_cancelled() {
                *lock(&self.probe.stopped) = Some("shut down".into());
                return Ok(());
            }
            if let Some(max) = self.max_messages.filter(|max| handled >= *max) {
                *lock(&self.probe.stopped) = Some(format!("handled max_messages ({max})"));
                return Ok(());
            }
            appended.borrow_and_update();
            match self.read(&mut own_pending).await {
                Some((index, event, deliveries)) => {
                    self.probe.held.store(1, Ordering::Relaxed);
                    if self.deliver(index, &event, deliveries).await {
                        handled += 1;
                    }
                    self.probe.held.store(0, Ordering::Relaxed);
                }
                None => tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = appended.changed() => {}
                },
            }
        }
    }

    /// [`next`](Self::next) inside the middlewares' read hooks: a read of at most one entry.
    async fn read(
        &self,
        own_pending: &mut VecDeque<usize>,
    ) -> Option<(usize, Arc<OutgoingEvent>, u32)> {
        let kind = match own_pending.is_empty() {
            true => ReadKind::New,
            false => ReadKind::Own,
        };
        self.probe
            .last_read_ms
            .store(now_millis(), Ordering::Relaxed);
        let mut taken = None;
        let read = async {
            taken = self.next(own_pending);
            Ok(usize::from(taken.is_some()))
        };
        let request = ReadRequest { kind, count: 1 };
        // A middleware may refuse the read; the consumer then waits for the next append.
        if let Err(e) = self
            .middlewares
            .read(&self.info, request, Box::pin(read))
            .await
        {
            tracing::warn!(error = %e, "a middleware refused the read");
        }
        taken
    }

    /// Claims the next entry for this consumer: its own pending ones first, then new ones.
    fn next(&self, own_pending: &mut VecDeque<usize>) -> Option<(usize, Arc<OutgoingEvent>, u32)> {
        let mut state = lock(&self.stream.state);
        let StreamState { entries, groups } = &mut *state;
        let group = groups.entry(self.group.clone()).or_default();
        while let Some(index) = own_pending.pop_front() {
            if let Some(p) = group.pending.get_mut(&index) {
                p.deliveries += 1;
                return Some((index, entries[index].clone(), p.deliveries));
            }
        }
        let index = group.next;
        let event = entries.get(index)?.clone();
        group.next += 1;
        group.pending.insert(
            index,
            Pending {
                consumer: self.name.clone(),
                deliveries: 1,
            },
        );
        Some((index, event, 1))
    }

    /// The event's parameters with the personal ones opened (or marked forgotten).
    async fn opened<'e>(
        &self,
        event: &'e OutgoingEvent,
    ) -> Result<std::borrow::Cow<'e, crate::Fields>, Error> {
        let envelope = &event.envelope;
        let Some(subject) = envelope
            .subject
            .as_deref()
            .filter(|_| !envelope.personal.is_empty())
        else {
            return Ok(std::borrow::Cow::Borrowed(&event.fields));
        };
        let mut fields = event.fields.clone();
        let personal: Vec<String> = envelope.personal.iter().map(|n| (*n).to_owned()).collect();
        let sealed = Sealed {
            subject,
            message_id: &event.message_id,
            personal: &personal,
            fields: &mut fields,
        };
        open_all(&*self.keys, vec![sealed])
            .await?
            .pop()
            .unwrap_or(Ok(()))?;
        Ok(std::borrow::Cow::Owned(fields))
    }

    /// Hands one entry to the handler; true when it was handled.
    async fn deliver(&self, index: usize, event: &OutgoingEvent, deliveries: u32) -> bool {
        let mut metadata = Metadata::new(
            event.message_id,
            event.operation,
            event.version,
            self.address.uri(),
        );
        metadata.environment = self.address.environment().map(str::to_owned);
        metadata.produced_at = event.produced_at;
        metadata.stream_id = index.to_string();
        metadata.delivery_count = deliveries;
        metadata.key = event.key.as_deref().map(str::to_owned);
        let envelope = &event.envelope;
        if let Some(correlation_id) = &envelope.correlation_id {
            metadata.correlation_id = correlation_id.clone();
        }
        metadata.causation_id = envelope.causation_id.clone();
        metadata.headers = envelope.headers.clone();
        metadata.trace = envelope.trace.clone();
        metadata.subject = envelope.subject.clone();
        let ctx = ConsumerContext::new(metadata, self.acker.clone());
        let result = match self.opened(event).await {
            Ok(fields) => self.handler.handle(&ctx, &fields).await,
            Err(e) => Err(HandleError::BadEvent(e)),
        };
        let reason = match &result {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        let outcome = match &reason {
            None => Settlement::Acked,
            Some(reason) => Settlement::LeftPending { reason },
        };
        let settled = Settled {
            stream_id: &ctx.metadata().stream_id,
            metadata: Some(ctx.metadata()),
            outcome,
        };
        self.middlewares.settled(&self.info, &settled);
        match result {
            Ok(()) => {
                if self.ack == AckMode::OnSuccess {
                    if let Err(e) = ctx.ack().await {
                        tracing::error!(entry = index, error = %e, "in-memory ack failed");
                    }
                }
                true
            }
            Err(HandleError::BadEvent(e)) => {
                tracing::error!(
                    contract = self.handler.contract(), entry = index, error = %e,
                    "bad event left pending"
                );
                false
            }
            Err(HandleError::Handler(e)) => {
                tracing::warn!(
                    contract = self.handler.contract(), entry = index, error = %e,
                    "handler failed; event left pending"
                );
                false
            }
        }
    }
}
