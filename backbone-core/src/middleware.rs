//! Middleware: hooks around every send, every handler call and every batch read, on every
//! channel, composed in order.
//!
//! A [`Middleware`] overrides the hooks it needs; each wrapping hook gets a `next` to call (or
//! not: a circuit breaker or an auth check may refuse without calling it). Builders take them
//! with `.middleware(m)`; the first added is the outermost. backbone's own
//! [tracing](crate::observe::TracingMiddleware) and [metrics](crate::observe::MetricsMiddleware)
//! are middlewares too, always first, so a user's middleware runs inside the `send` and
//! `process` spans and its time counts in the handler's duration.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use backbone_core::middleware::{ChannelInfo, Middleware, NextSend};
//! use backbone_core::{async_trait, Error, MessageId, OutgoingEvent};
//!
//! /// Refuses events without a tenant header and counts the others.
//! struct RequireTenant(Arc<AtomicUsize>);
//!
//! #[async_trait]
//! impl Middleware for RequireTenant {
//!     async fn send(
//!         &self,
//!         channel: &ChannelInfo,
//!         event: OutgoingEvent,
//!         next: NextSend<'_>,
//!     ) -> Result<MessageId, Error> {
//!         if event.envelope.headers.get("tenant").is_none() {
//!             return Err(Error::Config(format!("{}: no tenant header", channel.destination())));
//!         }
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         next.run(event).await
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cause::Cause;
use crate::observe::{MetricsMiddleware, TracingMiddleware};
use crate::{
    ConsumerContext, Error, EventHandler, Fields, HandleError, MessageId, Metadata, OutgoingEvent,
    Publish, StreamAddress,
};

/// Which channel, stream, group and consumer a hook runs for; built once per producer or
/// consumer (and per partition).
#[derive(Debug, Clone)]
pub struct ChannelInfo {
    system: &'static str,
    address: StreamAddress,
    destination: String,
    partition: Option<u32>,
    group: Option<String>,
    consumer: Option<String>,
    /// `send <destination>`, `process <destination>`, `settle <destination>`: span names.
    span_names: Arc<[String; 3]>,
    /// Destination and group, the key of the metrics' handles.
    metrics_key: Arc<str>,
}

impl ChannelInfo {
    /// A producer's channel: `system` names the channel (`"redis"`, `"memory"`).
    pub fn producer(system: &'static str, address: StreamAddress) -> Self {
        let destination = address.to_string();
        ChannelInfo {
            system,
            span_names: Arc::new(
                ["send", "process", "settle"].map(|op| format!("{op} {destination}")),
            ),
            metrics_key: Arc::from(destination.as_str()),
            destination,
            address,
            partition: None,
            group: None,
            consumer: None,
        }
    }

    /// A consumer's channel: its group and its name within the group.
    pub fn consumer(
        system: &'static str,
        address: StreamAddress,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        let group = group.into();
        let producer = Self::producer(system, address);
        ChannelInfo {
            metrics_key: Arc::from(format!("{}\u{0}{group}", producer.destination)),
            group: Some(group),
            consumer: Some(consumer.into()),
            ..producer
        }
    }

    /// The same channel, for one partition of a partitioned stream.
    pub fn for_partition(&self, partition: u32) -> Self {
        ChannelInfo {
            partition: Some(partition),
            ..self.clone()
        }
    }

    /// The channel kind: `messaging.system` (`"redis"`, `"memory"`).
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// The stream's environment and uri.
    pub fn address(&self) -> &StreamAddress {
        &self.address
    }

    /// `<environment>:<uri>` or `<uri>`: `messaging.destination.name`.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The partition, on a partitioned stream's consumer.
    pub fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// The consumer group (consumers only).
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The consumer's name in its group (consumers only).
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_deref()
    }

    /// Destination and group: what the metrics' handles are kept under.
    pub(crate) fn metrics_key(&self) -> &str {
        &self.metrics_key
    }

    /// The OpenTelemetry span name of an operation on this channel: `send <destination>`,
    /// `process <destination>` or `settle <destination>`.
    pub fn span_name(&self, operation: SpanOperation) -> &str {
        &self.span_names[operation as usize]
    }
}

/// The operations backbone's spans are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOperation {
    /// A producer's send.
    Send = 0,
    /// A consumer's handling of one event.
    Process = 1,
    /// How a delivery ended (ack, retry, dead letter).
    Settle = 2,
}

/// What a batch read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// New entries (`XREADGROUP ... >`).
    New,
    /// Entries this consumer already holds (after a restart).
    Own,
    /// Entries claimed from stalled consumers (`XAUTOCLAIM`).
    Claim,
}

/// One batch read about to happen.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest {
    /// What it reads.
    pub kind: ReadKind,
    /// At most this many entries.
    pub count: usize,
}

/// How a delivery ended for this group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement<'a> {
    /// Handled; acknowledged (or queued to be).
    Acked,
    /// Unknown operation skipped and acknowledged ([`UnknownPolicy::Skip`](crate::UnknownPolicy)).
    Skipped,
    /// The handler failed; it is delivered again after this delay.
    Retrying {
        /// The backoff before the next delivery.
        after: Duration,
    },
    /// Moved to the dead letters, for this reason.
    DeadLettered {
        /// The reason stored with the dead letter.
        reason: &'a str,
    },
    /// Left pending (to be delivered again, or claimed), for this reason.
    LeftPending {
        /// Why.
        reason: &'a str,
    },
}

impl Settlement<'_> {
    /// A short name: `ack`, `skip`, `retry`, `dead_letter`, `pending`.
    pub fn name(&self) -> &'static str {
        match self {
            Settlement::Acked => "ack",
            Settlement::Skipped => "skip",
            Settlement::Retrying { .. } => "retry",
            Settlement::DeadLettered { .. } => "dead_letter",
            Settlement::LeftPending { .. } => "pending",
        }
    }
}

/// One settled delivery.
#[derive(Debug, Clone, Copy)]
pub struct Settled<'a> {
    /// The entry's id in its stream.
    pub stream_id: &'a str,
    /// Its metadata, when the entry was well formed.
    pub metadata: Option<&'a Metadata>,
    /// How it ended.
    pub outcome: Settlement<'a>,
}

/// A group's state as the channel last saw it (Redis: `XINFO GROUPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group, when the channel knows (Redis 7 reports it).
    pub lag: Option<u64>,
    /// Consumers in the group.
    pub consumers: u64,
}

/// A hook around sends, handler calls and batch reads, and a listener to settlements and
/// group states. Every method has a default that just goes on, so a middleware implements
/// only what it needs. See the [module](self) for how they compose.
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Around every send: may change the event (its envelope, say), refuse it, or time it.
    async fn send(
        &self,
        channel: &ChannelInfo,
        event: OutgoingEvent,
        next: NextSend<'_>,
    ) -> Result<MessageId, Error> {
        let _ = channel;
        next.run(event).await
    }

    /// Around every handler call (decoding included): may refuse (an
    /// [`HandleError`] settles the event as the handler's own would), or time it.
    async fn handle(
        &self,
        channel: &ChannelInfo,
        ctx: &ConsumerContext,
        fields: &Fields,
        next: NextHandle<'_>,
    ) -> Result<(), HandleError> {
        let _ = channel;
        next.run(ctx, fields).await
    }

    /// Around every batch read; `Ok` holds how many entries it brought.
    async fn read(
        &self,
        channel: &ChannelInfo,
        read: ReadRequest,
        next: NextRead<'_>,
    ) -> Result<usize, Error> {
        let _ = (channel, read);
        next.run().await
    }

    /// Told how every delivery ended.
    fn settled(&self, channel: &ChannelInfo, settled: &Settled<'_>) {
        let _ = (channel, settled);
    }

    /// Told the group's state, every few seconds while a consumer runs.
    fn group_observed(&self, channel: &ChannelInfo, state: &GroupState) {
        let _ = (channel, state);
    }
}

/// The rest of the send chain: the later middlewares, then the channel.
pub struct NextSend<'a> {
    rest: &'a [Arc<dyn Middleware>],
    channel: &'a ChannelInfo,
    publish: &'a dyn Publish,
}

impl NextSend<'_> {
    /// Runs the rest of the chain.
    pub async fn run(self, event: OutgoingEvent) -> Result<MessageId, Error> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = NextSend { rest, ..self };
                first.send(self.channel, event, next).await
            }
            None => self.publish.publish(event).await,
        }
    }
}

/// The rest of the handle chain: the later middlewares, then decoding and the handler.
pub struct NextHandle<'a> {
    rest: &'a [Arc<dyn Middleware>],
    channel: &'a ChannelInfo,
    handler: &'a dyn EventHandler,
}

impl NextHandle<'_> {
    /// Runs the rest of the chain. The handler runs with the event as the
    /// [current cause](crate::cause), so that what it sends is correlated to it.
    pub async fn run(self, ctx: &ConsumerContext, fields: &Fields) -> Result<(), HandleError> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = NextHandle { rest, ..self };
                first.handle(self.channel, ctx, fields, next).await
            }
            None => {
                Cause::of(ctx.metadata())
                    .scope(self.handler.handle(ctx, fields))
                    .await
            }
        }
    }
}

/// The read a [`NextRead`] ends with.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<usize, Error>> + Send + 'a>>;

/// The rest of the read chain: the later middlewares, then the read itself.
pub struct NextRead<'a> {
    rest: &'a [Arc<dyn Middleware>],
    channel: &'a ChannelInfo,
    request: ReadRequest,
    read: ReadFuture<'a>,
}

impl NextRead<'_> {
    /// Runs the rest of the chain.
    pub async fn run(self) -> Result<usize, Error> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let (channel, request) = (self.channel, self.request);
                let next = NextRead { rest, ..self };
                first.read(channel, request, next).await
            }
            None => self.read.await,
        }
    }
}

/// An ordered list of middlewares, backbone's tracing and metrics first. Cheap to clone.
///
/// ```
/// use backbone_core::middleware::{Middleware, Middlewares};
///
/// struct Nothing;
/// impl Middleware for Nothing {}
///
/// let stack = Middlewares::default().with(Nothing);
/// assert_eq!(stack.len(), 3, "tracing, metrics, then the user's");
/// ```
#[derive(Clone)]
pub struct Middlewares(Arc<[Arc<dyn Middleware>]>);

impl Default for Middlewares {
    /// backbone's [`TracingMiddleware`] and [`MetricsMiddleware`].
    fn default() -> Self {
        Middlewares(Arc::new([
            Arc::new(TracingMiddleware) as Arc<dyn Middleware>,
            Arc::new(MetricsMiddleware::default()),
        ]))
    }
}

impl std::fmt::Debug for Middlewares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Middlewares({})", self.0.len())
    }
}

impl Middlewares {
    /// The same list with `middleware` appended (run inside the ones before it).
    pub fn with(self, middleware: impl Middleware) -> Self {
        self.with_arc(Arc::new(middleware))
    }

    /// [`with`](Self::with), for a middleware already shared.
    pub fn with_arc(self, middleware: Arc<dyn Middleware>) -> Self {
        let mut all = self.0.to_vec();
        all.push(middleware);
        Middlewares(all.into())
    }

    /// How many there are (backbone's own included).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never, unless built so by a channel).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sends `event` through the chain to `publish`.
    pub async fn send(
        &self,
        channel: &ChannelInfo,
        publish: &dyn Publish,
        event: OutgoingEvent,
    ) -> Result<MessageId, Error> {
        NextSend {
            rest: &self.0,
            channel,
            publish,
        }
        .run(event)
        .await
    }

    /// Runs `read` inside the chain's read hooks.
    pub async fn read<'a>(
        &'a self,
        channel: &'a ChannelInfo,
        request: ReadRequest,
        read: ReadFuture<'a>,
    ) -> Result<usize, Error> {
        NextRead {
            rest: &self.0,
            channel,
            request,
            read,
        }
        .run()
        .await
    }

    /// Tells every middleware how a delivery ended.
    pub fn settled(&self, channel: &ChannelInfo, settled: &Settled<'_>) {
        for m in self.0.iter() {
            m.settled(channel, settled);
        }
    }

    /// Tells every middleware a group's state.
    pub fn group_observed(&self, channel: &ChannelInfo, state: &GroupState) {
        for m in self.0.iter() {
            m.group_observed(channel, state);
        }
    }

    /// `handler` behind the chain's handle hooks: what a channel calls for each delivery.
    pub fn wrap(
        &self,
        channel: ChannelInfo,
        handler: Arc<dyn EventHandler>,
    ) -> Arc<dyn EventHandler> {
        Arc::new(Layered {
            stack: self.clone(),
            channel,
            handler,
        })
    }
}

/// An [`EventHandler`] behind a [`Middlewares`] chain.
struct Layered {
    stack: Middlewares,
    channel: ChannelInfo,
    handler: Arc<dyn EventHandler>,
}

#[async_trait]
impl EventHandler for Layered {
    fn contract(&self) -> &'static str {
        self.handler.contract()
    }

    fn knows(&self, operation: &str, version: u32) -> bool {
        self.handler.knows(operation, version)
    }

    async fn handle(&self, ctx: &ConsumerContext, fields: &Fields) -> Result<(), HandleError> {
        NextHandle {
            rest: &self.stack.0,
            channel: &self.channel,
            handler: &*self.handler,
        }
        .run(ctx, fields)
        .await
    }
}
