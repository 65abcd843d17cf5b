//! What `#[events_contract]` generates code against: [`Contract`], [`ContractEvent`],
//! [`Dispatch`] and [`Operation`].

use async_trait::async_trait;

use crate::{ConsumerContext, Error, Fields, HandlerResult};

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
}
