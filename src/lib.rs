//! # backbone
//!
//! Event sourcing and event-driven services on Redis Streams. This facade re-exports the two
//! crates an application uses: [`core`] (contracts, the `#[events_contract]` macro, the
//! in-memory channel) and [`redis`] (the Redis channel). Most code depends on `backbone-core`
//! and `backbone-redis` directly, as the examples do.
//!
//! ```
//! use backbone::core::{memory::InMemoryBroker, MessageId};
//!
//! let _broker = InMemoryBroker::new();
//! let _id = MessageId::new();
//! ```
#![warn(missing_docs)]

pub use backbone_core as core;
pub use backbone_redis as redis;
