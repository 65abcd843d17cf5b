//! The in-memory consumer: [`InMemoryConsumerBuilder`], and the delivery of one entry: its
//! objects fetched, its personal parameters opened, the handler called and the outcome settled
//! (acknowledged, left for a retry (`retry.rs`) or dead-lettered (`dead_letters.rs`)). Which
//! entries are delivered when is the worker's (`worker.rs`, `claims.rs`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::dead_letters::{bury, Burial};
use super::retry::{catching, decide, too_many, Outcome};
use super::{lock, InMemoryBroker, Stream, SYSTEM};
use crate::middleware::{ChannelInfo, Middlewares, Settled, Settlement};
use crate::objects::ObjectStorage;
use crate::personal::{open_all, KeyStore, Sealed};
use crate::{
    lifetime::{Health, HealthProbe},
    names::{check_name, default_consumer_name},
    AckMode, Acknowledge, ConsumerBuilder, ConsumerContext, ConsumerLifetime, Error, EventHandler,
    Fields, HandleError, HandlerError, Metadata, Middleware, OutgoingEvent, RetryPolicy,
    StreamAddress, UnknownPolicy,
};

/// Builds consumers for an [`InMemoryBroker`]; options as on the Redis builder, with its
/// defaults: group `"default"`, [`AckMode::OnSuccess`], [`RetryPolicy::default`] (100 ms
/// doubling to 10 s, 5 deliveries), `claim_min_idle` 30 s, `concurrency` 1,
/// [`UnknownPolicy::DeadLetter`], `shutdown_grace` 10 s.
///
/// A failed event is delivered again after the policy's backoff (other events keep flowing
/// meanwhile), then dead-lettered (see [`DeadLetters`](super::DeadLetters)) with the reason
/// Redis gives; a fatal failure or a bad event is dead-lettered at once. An event left pending
/// by a consumer that stopped is delivered again to a consumer of the same name when it
/// starts, or claimed by another consumer of the group after
/// [`claim_min_idle`](Self::claim_min_idle).
#[derive(Debug, Clone)]
pub struct InMemoryConsumerBuilder {
    broker: InMemoryBroker,
    environment: Option<String>,
    uri: Option<String>,
    group: String,
    name: Option<String>,
    ack: AckMode,
    max_messages: Option<u64>,
    retry: RetryPolicy,
    claim_min_idle: Duration,
    concurrency: usize,
    shutdown_grace: Duration,
    on_unknown: UnknownPolicy,
    middlewares: Middlewares,
}

impl InMemoryConsumerBuilder {
    pub(super) fn new(broker: InMemoryBroker) -> Self {
        InMemoryConsumerBuilder {
            broker,
            environment: None,
            uri: None,
            group: "default".to_owned(),
            name: None,
            ack: AckMode::OnSuccess,
            max_messages: None,
            retry: RetryPolicy::default(),
            claim_min_idle: Duration::from_secs(30),
            concurrency: 1,
            shutdown_grace: Duration::from_secs(10),
            on_unknown: UnknownPolicy::DeadLetter,
            middlewares: Middlewares::default(),
        }
    }

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

    /// How failing events are delivered again, and when they are dead-lettered (default
    /// [`RetryPolicy::default`]). The backoffs are `tokio::time` sleeps: under a paused clock
    /// (`#[tokio::test(start_paused = true)]`) they take no real time.
    ///
    /// ```
    /// use backbone_core::{memory::InMemoryBroker, RetryPolicy};
    ///
    /// let no_retry = RetryPolicy { max_deliveries: 1, ..RetryPolicy::default() };
    /// let builder = InMemoryBroker::new().consumer_builder().uri("orders").retry(no_retry);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Entries another consumer of the group has held this long since their last delivery
    /// without acknowledging them are claimed and handled here, as `XAUTOCLAIM` does on Redis
    /// (default 30 s): every `claim_min_idle / 2`, each claimed entry counting one more
    /// delivery. A stopped consumer's work is so finished by the others. Must exceed the
    /// slowest handler, or two consumers may handle the same entry. Idle time is
    /// `tokio::time`'s: under a paused clock it passes as the clock is advanced.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = backbone_core::memory::InMemoryBroker::new()
    ///     .consumer_builder()
    ///     .uri("orders")
    ///     .claim_min_idle(Duration::from_secs(5));
    /// ```
    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.claim_min_idle = idle;
        self
    }

    /// How many events this consumer handles at once (default 1; 0 is refused at subscribe),
    /// each handler on its own Tokio task. As on Redis, events with the same ordering key
    /// ([`Producer::with_key`](crate::Producer::with_key)) are never handled at once and keep
    /// their order; a key whose event waits for a retry holds back the key's later events.
    ///
    /// ```
    /// let builder = backbone_core::memory::InMemoryBroker::new()
    ///     .consumer_builder()
    ///     .uri("orders")
    ///     .concurrency(4);
    /// ```
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How long `shutdown()` lets handlers in flight finish (default 10 s): on shutdown the
    /// consumer stops reading and claiming, waits for its running handlers at most this long,
    /// then drops them. What is not finished (and what was queued or waited for a retry) stays
    /// pending, for a restart or another consumer to claim.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = backbone_core::memory::InMemoryBroker::new()
    ///     .consumer_builder()
    ///     .uri("orders")
    ///     .shutdown_grace(Duration::from_secs(2));
    /// ```
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// What to do with operations the contract does not have (default
    /// [`UnknownPolicy::DeadLetter`]; [`UnknownPolicy::Skip`] acknowledges them).
    ///
    /// ```
    /// use backbone_core::{memory::InMemoryBroker, UnknownPolicy};
    ///
    /// let builder = InMemoryBroker::new().consumer_builder().on_unknown(UnknownPolicy::Skip);
    /// ```
    pub fn on_unknown(mut self, policy: UnknownPolicy) -> Self {
        self.on_unknown = policy;
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
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
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
            retry: self.retry,
            claim_min_idle: self.claim_min_idle,
            concurrency: self.concurrency,
            shutdown_grace: self.shutdown_grace,
            on_unknown: self.on_unknown,
            handler,
            keys: self.broker.keys.clone(),
            objects: self.broker.objects.clone(),
        };
        let stop = CancellationToken::new();
        let probe = consumer.probe.clone();
        let task = tokio::spawn(Arc::new(consumer).run(stop.clone()));
        Ok(ConsumerLifetime::new(stop, task).with_probe(probe))
    }
}

/// An in-memory consumer's health: always connected; when it last looked for an event, the
/// events it holds (queued, handled and waiting for a retry), and why it stopped.
#[derive(Default)]
pub(super) struct MemoryProbe {
    pub last_read_ms: AtomicU64,
    pub held: AtomicUsize,
    pub stopped: Mutex<Option<String>>,
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

/// A running consumer: what its task (`worker.rs`) and each handler's task share.
pub(super) struct MemoryConsumer {
    pub probe: Arc<MemoryProbe>,
    pub info: ChannelInfo,
    pub middlewares: Middlewares,
    pub stream: Arc<Stream>,
    acker: Arc<MemoryAcker>,
    pub address: StreamAddress,
    pub group: String,
    pub name: String,
    ack: AckMode,
    pub max_messages: Option<u64>,
    retry: RetryPolicy,
    pub claim_min_idle: Duration,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    on_unknown: UnknownPolicy,
    handler: Arc<dyn EventHandler>,
    keys: Arc<dyn KeyStore>,
    objects: ObjectStorage,
}

impl MemoryConsumer {
    /// The event's parameters with its objects fetched, then its personal parameters opened
    /// (or marked forgotten): the order of the Redis consumer, since an object holds the
    /// sealed value.
    async fn opened<'e>(&self, event: &'e OutgoingEvent) -> Result<Cow<'e, Fields>, Error> {
        let envelope = &event.envelope;
        let subject = (envelope.subject.as_deref()).filter(|_| !envelope.personal.is_empty());
        if envelope.objects.is_empty() && subject.is_none() {
            return Ok(Cow::Borrowed(&event.fields));
        }
        let mut fields = event.fields.clone();
        if !envelope.objects.is_empty() {
            let stream = super::object_stream(&self.address);
            (self.objects)
                .fetch(&stream, &event.message_id, &envelope.objects, &mut fields)
                .await?;
        }
        if let Some(subject) = subject {
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
        }
        Ok(Cow::Owned(fields))
    }

    /// The metadata of the `deliveries`-th delivery of entry `index`.
    fn metadata(&self, index: usize, event: &OutgoingEvent, deliveries: u32) -> Metadata {
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
        metadata
    }

    /// Hands one entry to the handler and settles it: acknowledged, skipped or dead-lettered
    /// here, or [`Outcome::Retry`] for the caller to deliver it again later.
    pub(super) async fn deliver(
        &self,
        index: usize,
        event: &OutgoingEvent,
        deliveries: u32,
    ) -> Outcome {
        let metadata = self.metadata(index, event, deliveries);
        let ctx = ConsumerContext::new(metadata, self.acker.clone());
        let outcome = match too_many(&self.retry, deliveries) {
            Some(reason) => Outcome::Bury(reason),
            None => {
                let handled = match self.opened(event).await {
                    Ok(fields) => catching(self.handler.handle(&ctx, &fields)).await,
                    Err(e) if e.is_bad_event() => Err(HandleError::BadEvent(e)),
                    Err(e) => Err(HandleError::Handler(HandlerError::retry(e))),
                };
                let outcome = decide(&self.retry, self.on_unknown, deliveries, &handled);
                if let (Outcome::Retry(delay), Err(e)) = (&outcome, &handled) {
                    tracing::warn!(
                        contract = self.handler.contract(), entry = index, delivery = deliveries,
                        retry_in_ms = delay.as_millis() as u64, error = %e,
                        "handler failed; will retry"
                    );
                }
                outcome
            }
        };
        let settlement = match &outcome {
            Outcome::Handled if self.ack == AckMode::OnSuccess && !ctx.is_acked() => {
                self.ack(&ctx).await;
                Settlement::Acked
            }
            Outcome::Handled => Settlement::Acked,
            Outcome::Skipped => {
                self.ack(&ctx).await;
                Settlement::Skipped
            }
            Outcome::Retry(after) => Settlement::Retrying { after: *after },
            Outcome::Bury(reason) => self.bury(index, deliveries, reason),
        };
        let settled = Settled {
            stream_id: &ctx.metadata().stream_id,
            metadata: Some(ctx.metadata()),
            outcome: settlement,
        };
        self.middlewares.settled(&self.info, &settled);
        outcome
    }

    async fn ack(&self, ctx: &ConsumerContext) {
        if let Err(e) = ctx.ack().await {
            let entry = &ctx.metadata().stream_id;
            tracing::error!(entry, error = %e, "in-memory ack failed");
        }
    }

    /// Dead-letters entry `index`, unless it is no longer pending for the group.
    fn bury<'r>(&self, index: usize, deliveries: u32, reason: &'r str) -> Settlement<'r> {
        let burial = Burial {
            index,
            consumer: &self.name,
            deliveries,
            reason,
        };
        let contract = self.handler.contract();
        if bury(&self.stream, &self.group, &burial) {
            tracing::error!(contract, entry = index, reason, "dead-lettered");
            Settlement::DeadLettered { reason }
        } else {
            let reason = "not dead-lettered: no longer pending for this group";
            tracing::warn!(contract, entry = index, reason);
            Settlement::LeftPending { reason }
        }
    }
}
