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

use crate::cause::Cause;
use crate::contract::RawEvent;
use crate::envelope::{Envelope, Headers};
use crate::middleware::{ChannelInfo, Middlewares};
use crate::personal::{seal_event, KeyStore};
use crate::storage::Storage;
use crate::{
    metadata::now_millis, ConsumerContext, ConsumerLifetime, ContractEvent, Dispatch, Error,
    Fields, HandlerError, MessageId, Metadata,
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
    /// Headers, correlation and causation ids, trace context.
    pub envelope: Envelope,
    /// Where its parameters go (the operation's [`Storage`]).
    pub storage: Storage,
}

impl OutgoingEvent {
    /// A new event (new message id, produced now, no key, empty envelope).
    ///
    /// ```
    /// use backbone_core::{Fields, OutgoingEvent};
    ///
    /// let event = OutgoingEvent::new("hello", 0, Fields::new());
    /// assert_eq!(event.operation, "hello");
    /// assert!(event.envelope.correlation_id.is_none());
    /// ```
    pub fn new(operation: &'static str, version: u32, fields: Fields) -> Self {
        OutgoingEvent {
            message_id: MessageId::new(),
            operation,
            version,
            produced_at: now_millis(),
            key: None,
            fields,
            envelope: Envelope::default(),
            storage: Storage::Hash,
        }
    }
}

/// A channel's writing side.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Stores `event` durably (parameters and metadata in one atomic step) and returns its id.
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error>;

    /// The channel and stream it writes to, for middleware.
    fn info(&self) -> ChannelInfo;
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
    info: Arc<ChannelInfo>,
    middlewares: Middlewares,
    key: Option<Arc<str>>,
    stamp: Arc<Stamp>,
    keys: Option<Arc<dyn KeyStore>>,
}

/// What a producer adds to the envelope of each event.
#[derive(Debug, Default, Clone)]
struct Stamp {
    headers: Headers,
    /// An error from `with_header`, reported by every send.
    bad_header: Option<String>,
    correlation_id: Option<String>,
    cause: Option<Cause>,
    subject: Option<String>,
}

impl Producer {
    /// A producer writing to `channel` through backbone's own middlewares.
    pub fn new(channel: Arc<dyn Publish>) -> Self {
        Self::with_middlewares(channel, Middlewares::default())
    }

    /// A producer writing to `channel` through `middlewares`.
    pub fn with_middlewares(channel: Arc<dyn Publish>, middlewares: Middlewares) -> Self {
        Producer {
            info: Arc::new(channel.info()),
            channel,
            middlewares,
            key: None,
            stamp: Arc::default(),
            keys: None,
        }
    }

    /// A producer on the same channel that seals personal parameters with keys from `keys`
    /// (channels' builders set their own; see [`personal`](crate::personal)).
    pub fn with_key_store(&self, keys: Arc<dyn KeyStore>) -> Producer {
        Producer {
            keys: Some(keys),
            ..self.clone()
        }
    }

    /// A producer on the same channel whose events name `subject` as their data subject: their
    /// `#[personal]` parameters are sealed with its key, and forgotten with it. An operation
    /// with a `#[subject]` parameter takes that parameter's value instead. The subject is
    /// stored in the clear: use an opaque id (a customer number), not an e-mail address.
    ///
    /// ```
    /// use backbone_core::{events_contract, memory::InMemoryBroker, ProducerBuilder};
    ///
    /// #[events_contract]
    /// pub trait Newsletter {
    ///     async fn subscribed(&self, #[personal] email: String);
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), backbone_core::Error> {
    /// let broker = InMemoryBroker::new();
    /// let producer = broker.producer_builder().uri("news").build_newsletter_producer().await?;
    /// let err = producer.subscribed("ada@example.com".into()).await.unwrap_err();
    /// assert!(err.to_string().contains("no data subject"), "{err}");
    /// producer.with_subject("customer-7").subscribed("ada@example.com".into()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_subject(&self, subject: impl Into<String>) -> Producer {
        let subject = subject.into();
        self.restamp(|stamp| stamp.subject = Some(subject))
    }

    fn restamp(&self, change: impl FnOnce(&mut Stamp)) -> Producer {
        let mut stamp = (*self.stamp).clone();
        change(&mut stamp);
        Producer {
            stamp: Arc::new(stamp),
            ..self.clone()
        }
    }

    /// A producer on the same channel whose events carry the ordering key `key`. A consumer
    /// never handles two events with the same key at once, and handles them in the order they
    /// were sent, whatever its concurrency; events without a key, or with different keys, may
    /// run side by side.
    pub fn with_key(&self, key: impl Into<String>) -> Producer {
        Producer {
            key: Some(Arc::from(key.into())),
            ..self.clone()
        }
    }

    /// The ordering key of this producer's events, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// A producer on the same channel whose events carry the header `name` = `value` (see
    /// [`Headers`] for what a name may hold; a bad name fails every send, saying why).
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
    /// let acme = producer.with_header("tenant", "acme");
    /// acme.send(&GreetingsEvent::Hello { name: "Ada".into() }).await?;
    /// let bad = producer.with_header("no spaces", "x");
    /// let err = bad.send(&GreetingsEvent::Hello { name: "Ada".into() }).await.unwrap_err();
    /// assert!(err.to_string().contains("header name \"no spaces\""), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_header(&self, name: impl Into<String>, value: impl Into<String>) -> Producer {
        let (name, value) = (name.into(), value.into());
        self.restamp(|stamp| {
            if let Err(e) = stamp.headers.insert(name, value) {
                stamp.bad_header.get_or_insert(e.to_string());
            }
        })
    }

    /// A producer on the same channel whose events belong to the workflow `id` (a request id,
    /// say), instead of starting their own or inheriting the handled event's.
    pub fn with_correlation_id(&self, id: impl Into<String>) -> Producer {
        let id = id.into();
        self.restamp(|stamp| stamp.correlation_id = Some(id))
    }

    /// A producer on the same channel whose events are caused by the event `metadata`
    /// describes: the same correlation id, its message id as causation id. Inside a handler
    /// this is automatic (see [`cause`](crate::cause)); use this in tasks the handler spawns.
    pub fn caused_by(&self, metadata: &Metadata) -> Producer {
        let cause = Cause::of(metadata);
        self.restamp(|stamp| stamp.cause = Some(cause))
    }

    /// The channel this producer writes to.
    pub fn info(&self) -> &ChannelInfo {
        &self.info
    }

    /// Encodes and sends one event through the middlewares; returns its new [`MessageId`].
    pub async fn send<E: ContractEvent>(&self, event: &E) -> Result<MessageId, Error> {
        let stamp = &*self.stamp;
        if let Some(bad) = &stamp.bad_header {
            return Err(Error::Config(bad.clone()));
        }
        let operation = event.operation();
        let cause = match &stamp.cause {
            Some(cause) => Some(cause.clone()),
            None => Cause::current(),
        };
        let (inherited, causation_id) = match cause {
            Some(Cause {
                correlation_id,
                causation_id,
            }) => (Some(correlation_id), Some(causation_id)),
            None => (None, None),
        };
        let message_id = MessageId::new();
        let mut fields = event.encode()?;
        let (subject, personal) = seal_event(
            self.keys.as_deref(),
            operation,
            stamp.subject.as_deref(),
            &message_id,
            &mut fields,
        )
        .await?;
        let outgoing = OutgoingEvent {
            message_id,
            operation: operation.name,
            version: operation.version,
            produced_at: now_millis(),
            key: self.key.clone(),
            fields,
            envelope: Envelope {
                correlation_id: stamp.correlation_id.clone().or(inherited),
                causation_id,
                headers: stamp.headers.clone(),
                trace: None,
                subject,
                personal,
                objects: Vec::new(),
            },
            storage: operation.storage,
        };
        self.middlewares
            .send(&self.info, &*self.channel, outgoing)
            .await
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("destination", &self.info.destination())
            .field("key", &self.key)
            // Names only: a header's value may be a secret.
            .field(
                "headers",
                &self
                    .stamp
                    .headers
                    .iter()
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>(),
            )
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
        let event = match E::decode(&meta.operation, meta.version, fields) {
            Ok(event) => event,
            Err(e @ Error::UnknownOperation { .. }) => {
                // The user's fallback may take it; by default it is left to `on_unknown`.
                let raw = RawEvent::from_fields(fields);
                return match E::fallback(&self.handler, ctx, raw).await {
                    Err(failure) if failure.is_unhandled() => Err(HandleError::BadEvent(e)),
                    result => result.map_err(HandleError::Handler),
                };
            }
            Err(e) => return Err(HandleError::BadEvent(e)),
        };
        event
            .dispatch(&self.handler, ctx)
            .await
            .map_err(HandleError::Handler)
    }
}
