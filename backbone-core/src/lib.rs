//! # backbone-core
//!
//! The model of backbone, with no Redis in it: contracts and their events, [`Metadata`],
//! [`MessageId`], the JSON [`codec`], handler results, the traits channels implement
//! ([`Publish`], [`ProducerBuilder`], [`ConsumerBuilder`], [`EventHandler`]) and an in-memory
//! channel ([`memory::InMemoryBroker`]) for unit tests.
//!
//! Users annotate a trait with [`events_contract`]; see its documentation for what it generates.
//!
//! ```
//! use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult};
//! use backbone_core::memory::InMemoryBroker;
//!
//! #[events_contract]
//! pub trait Greetings {
//!     async fn hello(&self, name: String, times: u32);
//! }
//!
//! struct Printer;
//!
//! #[async_trait]
//! impl GreetingsConsumer for Printer {
//!     async fn hello(&self, ctx: &ConsumerContext, name: String, times: u32) -> HandlerResult {
//!         println!("hello {name} x{times} ({})", ctx.metadata().message_id);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), backbone_core::Error> {
//! let broker = InMemoryBroker::new();
//! let producer = broker.producer_builder().uri("greetings").build_greetings_producer().await?;
//! producer.hello("Ada".into(), 2).await?;
//! let lifetime = broker
//!     .consumer_builder()
//!     .uri("greetings")
//!     .max_messages(1)
//!     .subscribe_greetings_consumer(Printer)
//!     .await?;
//! lifetime.completion().await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod cause;
pub mod channel;
pub mod codec;
pub mod context;
pub mod contract;
pub mod dead_letters;
pub mod envelope;
pub mod error;
pub mod handler;
pub mod id;
pub mod lifetime;
pub mod memory;
pub mod metadata;
pub mod middleware;
pub mod names;
pub mod objects;
pub mod observe;
pub mod partition;
pub mod personal;
pub mod policy;
#[cfg(feature = "schema")]
pub mod schema;
pub mod storage;
pub mod store;

/// Keeps its tokens with the `schema` feature: generated code wraps its `impl ContractSchema`
/// in it (for `#[events_contract(schema)]`).
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_schema {
    ($($tokens:tt)*) => { $($tokens)* };
}

/// Keeps its tokens with the `schema` feature; without it, an error saying to turn it on.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __with_schema {
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "#[events_contract(schema)] needs the `schema` feature of backbone-core \
             (backbone-core = { version = \"...\", features = [\"schema\"] })"
        );
    };
}

pub use async_trait::async_trait;
pub use backbone_macros::events_contract;
pub use channel::{
    ConsumerBuilder, ContractHandler, EventHandler, HandleError, OutgoingEvent, Producer,
    ProducerBuilder, Publish,
};
pub use codec::Fields;
pub use context::{AckMode, Acknowledge, ConsumerContext};
pub use contract::{Contract, ContractEvent, Dispatch, Operation};
pub use envelope::Headers;
pub use error::{BoxError, Error};
pub use handler::{FailureKind, HandlerError, HandlerResult};
pub use id::MessageId;
pub use lifetime::{ConsumerLifetime, Health, HealthProbe};
pub use metadata::Metadata;
pub use middleware::{Middleware, Middlewares};
pub use names::StreamAddress;
pub use policy::{RetryPolicy, UnknownPolicy};
