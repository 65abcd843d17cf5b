//! The seam between generated code and channels (Redis, in-memory).
//!
//! Producer side: a channel implements [`Publish`]; its builder implements [`ProducerBuilder`];
//! generated producers wrap a [`Producer`]. Consumer side: a channel's builder implements
//! [`ConsumerBuilder`] and feeds each delivery to an [`EventHandler`], which generated code
//! provides through [`ContractHandler`].

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    metadata::now_millis, ConsumerContext, ConsumerLifetime, ContractEvent, Dispatch, Error,
    Fields, HandlerError, MessageId,
};

/// One event on its way out: identity, operation and encoded parameters.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    /// Chosen by the producer; the channel stores it and returns it.
    pub message_id: MessageId,
    /// The operation's stable name.
    pub operation: &'static str,
    /// The operation's version.
    pub version: u32,
    /// Milliseconds since the epoch when it was sent.
    pub produced_at: u64,
    /// The ordering key, if the producer has one ([`Producer::with_key`]).
    pub key: Option<Arc<str>>,
    /// The encoded parameters.
    pub fields: Fields,
}

/// A channel's writing side.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Stores `event` durably (parameters and metadata in one atomic step) and returns its id.
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error>;
}

/// A cheap-to-clone handle that sends any contract's events through one channel. Generated
/// `XProducer`s wrap one.
///
/// ```
/// use backbone_core::{events_contract, memory::InMemoryBroker, ProducerBuilder};
///
/// #[events_contract]
/// pub trait Greetings {
///     async fn hello(&self, name: String);
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let broker = InMemoryBroker::new();
/// let producer = broker.producer_builder().uri("greetings").build_producer().await?;
/// let id = producer.send(&GreetingsEvent::Hello { name: "Ada".into() }).await?;
/// assert_eq!(broker.len(None, "greetings"), 1);
/// # let _ = id;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    channel: Arc<dyn Publish>,
    key: Option<Arc<str>>,
}

impl Producer {
    /// A producer writing to `channel`.
    pub fn new(channel: Arc<dyn Publish>) -> Self {
        Producer { channel, key: None }
    }

    /// A producer on the same channel whose events carry the ordering key `key`. A consumer
    /// never handles two events with the same key at once, and handles them in the order they
    /// were sent, whatever its concurrency; events without a key, or with different keys, may
    /// run side by side.
    pub fn with_key(&self, key: impl Into<String>) -> Producer {
        Producer {
            channel: self.channel.clone(),
            key: Some(Arc::from(key.into())),
        }
    }

    /// The ordering key of this producer's events, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Encodes and sends one event; returns its new [`MessageId`].
    pub async fn send<E: ContractEvent>(&self, event: &E) -> Result<MessageId, Error> {
        let operation = event.operation();
        let outgoing = OutgoingEvent {
            message_id: MessageId::new(),
            operation: operation.name,
            version: operation.version,
            produced_at: now_millis(),
            key: self.key.clone(),
            fields: event.encode()?,
        };
        self.channel.publish(outgoing).await
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A channel's producer builder. Generated `build_x_producer()` methods call this.
pub trait ProducerBuilder: Send + Sized {
    /// Connects and returns a [`Producer`].
    fn build_producer(self) -> impl Future<Output = Result<Producer, Error>> + Send;
}

/// A channel's consumer builder. Generated `subscribe_x_consumer(handler)` methods call this.
pub trait ConsumerBuilder: Send + Sized {
    /// Starts consuming, feeding every delivery to `handler`.
    fn subscribe(
        self,
        handler: Arc<dyn EventHandler>,
    ) -> impl Future<Output = Result<ConsumerLifetime, Error>> + Send;
}

/// Why a delivery was not handled.
#[derive(Debug)]
pub enum HandleError {
    /// The event itself is bad (unknown operation, undecodable parameter); the handler was not
    /// called.
    BadEvent(Error),
    /// The handler was called and failed.
    Handler(HandlerError),
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::BadEvent(e) => write!(f, "bad event: {e}"),
            HandleError::Handler(e) => write!(f, "handler failed: {e}"),
        }
    }
}

/// A type-erased consumer: decodes a delivery and calls the user's handler. Channels hold an
/// `Arc<dyn EventHandler>`.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// The contract's name, for logs.
    fn contract(&self) -> &'static str;

    /// Whether the contract has `operation` at `version`.
    fn knows(&self, operation: &str, version: u32) -> bool;

    /// Decodes the event named by `ctx.metadata()` from `fields` and calls the handler.
    async fn handle(&self, ctx: &ConsumerContext, fields: &Fields) -> Result<(), HandleError>;
}

/// The [`EventHandler`] for a contract's event type `E` and a user's consumer `H`.
pub struct ContractHandler<E, H> {
    handler: H,
    _event: PhantomData<fn() -> E>,
}

impl<E, H> ContractHandler<E, H> {
    /// Wraps the user's consumer.
    pub fn new(handler: H) -> Self {
        ContractHandler {
            handler,
            _event: PhantomData,
        }
    }
}

#[async_trait]
impl<E, H> EventHandler for ContractHandler<E, H>
where
    E: Dispatch<H>,
    H: Send + Sync + 'static,
{
    fn contract(&self) -> &'static str {
        E::CONTRACT
    }

    fn knows(&self, operation: &str, version: u32) -> bool {
        E::knows(operation, version)
    }

    async fn handle(&self, ctx: &ConsumerContext, fields: &Fields) -> Result<(), HandleError> {
        let meta = ctx.metadata();
        let event =
            E::decode(&meta.operation, meta.version, fields).map_err(HandleError::BadEvent)?;
        event
            .dispatch(&self.handler, ctx)
            .await
            .map_err(HandleError::Handler)
    }
}
