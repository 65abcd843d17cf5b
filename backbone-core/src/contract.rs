//! What `#[events_contract]` generates code against: [`Contract`], [`ContractEvent`],
//! [`Dispatch`] and [`Operation`].

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::storage::Storage;
use crate::{ConsumerContext, Error, Fields, HandlerError, HandlerResult};

/// One operation of a contract: its stable name, version and parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// The stable name, carried in every event's metadata (the method name unless renamed with
    /// `#[event(name = "...")]`).
    pub name: &'static str,
    /// The version (`#[event(version = N)]`, default 0).
    pub version: u32,
    /// The parameter names, in declaration order; each is one field of the payload.
    pub parameters: &'static [&'static str],
    /// `#[event(deprecated = "...")]`: why it is deprecated and what to send instead.
    pub deprecated: Option<&'static str>,
    /// `#[event(upcast = path)]`: the function that reads this operation as a newer one;
    /// consumers, the store and replays never see it in this shape.
    pub upcast: Option<&'static str>,
    /// Where its parameters live (`#[event(storage = "...")]`, else the contract's
    /// `#[events_contract(storage = "...")]`, else [`Storage::Hash`]).
    pub storage: Storage,
    /// Its `#[personal]` parameters: sealed with the data subject's keys.
    pub personal: &'static [crate::personal::PersonalParameter],
    /// Its `#[subject]` parameter, whose value names the data subject.
    pub subject: Option<&'static str>,
}

/// A contract: the zero-sized type `#[events_contract]` puts in place of the annotated trait.
///
/// ```
/// use backbone_core::{events_contract, Contract};
///
/// #[events_contract]
/// pub trait Greetings {
///     async fn hello(&self, name: String);
/// }
///
/// assert_eq!(<Greetings as Contract>::NAME, "Greetings");
/// assert_eq!(<Greetings as Contract>::OPERATIONS[0].name, "hello");
/// ```
pub trait Contract: Send + Sync + 'static {
    /// The contract's name (the trait's name).
    const NAME: &'static str;
    /// Every operation, in declaration order.
    const OPERATIONS: &'static [Operation];
    /// The generated event enum.
    type Event: ContractEvent;
}

/// An event of a contract (the generated `XEvent` enum): it knows its operation and how to
/// encode itself into [`Fields`] and decode itself back.
pub trait ContractEvent: Clone + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// The name of the contract this event belongs to.
    const CONTRACT: &'static str;
    /// The operations this event type can be.
    const OPERATIONS: &'static [Operation];

    /// The operation this event is.
    fn operation(&self) -> &'static Operation;

    /// Encodes the parameters, one JSON value per field.
    fn encode(&self) -> Result<Fields, Error>;

    /// Decodes an event of `operation` at `version` from its fields.
    /// Fails with [`Error::UnknownOperation`] or [`Error::Decode`].
    fn decode(operation: &str, version: u32, fields: &Fields) -> Result<Self, Error>;

    /// This event in its newest shape: an operation with an upcaster
    /// (`#[event(upcast = f)]`) goes through it, and again while the result has one. Decoding
    /// already does it; the default (no upcasters) returns the event as it is.
    fn upcast(self) -> Result<Self, Error> {
        Ok(self)
    }

    /// Whether this contract has `operation` at `version`.
    fn knows(operation: &str, version: u32) -> bool {
        Self::OPERATIONS
            .iter()
            .any(|op| op.name == operation && op.version == version)
    }
}

/// Calls the handler method that matches the event (generated for every `XConsumer`).
#[async_trait]
pub trait Dispatch<H: ?Sized + Sync>: ContractEvent {
    /// Hands the event's parameters to the matching method of `handler`.
    async fn dispatch(self, handler: &H, ctx: &ConsumerContext) -> HandlerResult;

    /// Hands an event the contract does not know to the handler's `fallback` method.
    async fn fallback(handler: &H, ctx: &ConsumerContext, event: RawEvent) -> HandlerResult;
}

/// An event the contract does not know (an unknown operation or version), still inspectable:
/// its metadata is the handler's `ctx.metadata()`, its parameters are here as JSON. Handed to
/// the generated consumer's `fallback` method.
///
/// ```
/// use backbone_core::{contract::RawEvent, Fields};
///
/// let mut fields = Fields::new();
/// fields.push("order", b"7".to_vec());
/// fields.push("note", b"not json".to_vec());
/// let raw = RawEvent::from_fields(&fields);
/// assert_eq!(raw.parameters["order"], 7);
/// assert_eq!(raw.parameters["note"], "not json", "kept as text when it is not JSON");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// Each parameter's JSON value, by name (a value that is not JSON is kept as a string).
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The personal parameters whose subject was forgotten (they have no value above).
    pub forgotten: Vec<String>,
}

impl RawEvent {
    /// The parameters of `fields`, as JSON.
    pub fn from_fields(fields: &Fields) -> Self {
        let parameters = fields
            .iter()
            .map(|(name, value)| {
                let json = serde_json::from_slice(value).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(value).into_owned())
                });
                (name.to_owned(), json)
            })
            .collect();
        RawEvent {
            parameters,
            forgotten: fields.forgotten().map(str::to_owned).collect(),
        }
    }
}

/// What a generated `fallback` returns unless the user overrides it: the event is not
/// handled, and the consumer's `on_unknown` policy applies (dead letter, or skip).
pub fn unhandled() -> HandlerResult {
    Err(HandlerError::unhandled())
}
