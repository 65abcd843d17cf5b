//! The in-memory consumer: [`InMemoryConsumerBuilder`] and the task that claims a stream's
//! entries for its group, fetches their objects, opens their personal parameters and hands
//! them to the handler; a failed delivery waits for its retry (`retry.rs`) while the task goes
//! on, or is dead-lettered (`dead_letters.rs`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::dead_letters::{bury, Burial};
use super::retry::{catching, decide, too_many, Outcome, Retries};
use super::{lock, InMemoryBroker, Pending, Stream, StreamState, SYSTEM};
use crate::middleware::{ChannelInfo, Middlewares, ReadKind, ReadRequest, Settled, Settlement};
use crate::objects::ObjectStorage;
use crate::personal::{open_all, KeyStore, Sealed};
use crate::{
    lifetime::{Health, HealthProbe},
    metadata::now_millis,
    names::{check_name, default_consumer_name},
    AckMode, Acknowledge, ConsumerBuilder, ConsumerContext, ConsumerLifetime, Error, EventHandler,
    Fields, HandleError, HandlerError, Metadata, Middleware, OutgoingEvent, RetryPolicy,
    StreamAddress, UnknownPolicy,
};

/// Builds consumers for an [`InMemoryBroker`]; options as on the Redis builder, with its
/// defaults: group `"default"`, [`AckMode::OnSuccess`], [`RetryPolicy::default`] (100 ms
/// doubling to 10 s, 5 deliveries), [`UnknownPolicy::DeadLetter`].
///
/// A failed event is delivered again after the policy's backoff (other events keep flowing
/// meanwhile), then dead-lettered (see [`DeadLetters`](super::DeadLetters)) with the reason
/// Redis gives; a fatal failure or a bad event is dead-lettered at once. Unlike Redis, an event
/// left pending by a consumer that stopped is delivered again only to a consumer of the same
/// name: nothing is claimed after an idle time.
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
            on_unknown: self.on_unknown,
            handler,
            keys: self.broker.keys.clone(),
            objects: self.broker.objects.clone(),
        };
        let stop = CancellationToken::new();
        let probe = consumer.probe.clone();
        let task = tokio::spawn(consumer.run(stop.clone()));
        Ok(ConsumerLifetime::new(stop, task).with_probe(probe))
    }
}

/// An in-memory consumer's health: always connected; when it last looked for an event, the
/// events it holds (the one it handles and those waiting for a retry), and why it stopped.
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
    retry: RetryPolicy,
    on_unknown: UnknownPolicy,
    handler: Arc<dyn EventHandler>,
    keys: Arc<dyn KeyStore>,
    objects: ObjectStorage,
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
        let mut retries = Retries::default();
        let mut handled = 0u64;
        loop {
            if stop.is_cancelled() {
                // What waits for a retry stays pending, for a consumer of the same name.
                *lock(&self.probe.stopped) = Some("shut down".into());
                return Ok(());
            }
            if let Some(max) = self.max_messages.filter(|max| handled >= *max) {
                *lock(&self.probe.stopped) = Some(format!("handled max_messages ({max})"));
                return Ok(());
            }
            appended.borrow_and_update();
            // Retries that are due come first; they are not reads (Redis claims them again).
            let taken = loop {
                match retries.due() {
                    Some(index) => match self.again(index) {
                        Some(taken) => break Some(taken),
                        None => continue,
                    },
                    None => break self.read(&mut own_pending).await,
                }
            };
            match taken {
                Some((index, event, deliveries)) => {
                    self.probe.held.store(retries.len() + 1, Ordering::Relaxed);
                    match self.deliver(index, &event, deliveries).await {
                        Outcome::Handled => handled += 1,
                        Outcome::Retry(delay) => retries.add(index, delay),
                        Outcome::Skipped | Outcome::Bury(_) => {}
                    }
                    self.probe.held.store(retries.len(), Ordering::Relaxed);
                }
                None => tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = appended.changed() => {}
                    _ = retries.next_due() => {}
                },
            }
        }
    }

    /// [`next`](Self::next) inside the middlewares' read hooks: a read of at most one entry.
    async fn read(&self, own_pending: &mut VecDeque<usize>) -> Option<Taken> {
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
    fn next(&self, own_pending: &mut VecDeque<usize>) -> Option<Taken> {
        let mut state = lock(&self.stream.state);
        while let Some(index) = own_pending.pop_front() {
            if let Some(taken) = self.redeliver(&mut state, index) {
                return Some(taken);
            }
        }
        let StreamState { entries, groups } = &mut *state;
        let group = groups.entry(self.group.clone()).or_default();
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

    /// Delivers again an entry whose retry is due, if it is still pending here.
    fn again(&self, index: usize) -> Option<Taken> {
        self.redeliver(&mut lock(&self.stream.state), index)
    }

    /// Counts one more delivery of `index`, if it is pending for this consumer.
    fn redeliver(&self, state: &mut StreamState, index: usize) -> Option<Taken> {
        let pending = state.groups.get_mut(&self.group)?.pending.get_mut(&index);
        let pending = pending.filter(|p| p.consumer == self.name)?;
        pending.deliveries += 1;
        Some((index, state.entries[index].clone(), pending.deliveries))
    }

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
    async fn deliver(&self, index: usize, event: &OutgoingEvent, deliveries: u32) -> Outcome {
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

/// An entry taken for delivery: its index in the log, the event, and its delivery count.
type Taken = (usize, Arc<OutgoingEvent>, u32);
