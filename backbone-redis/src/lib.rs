//! # backbone-redis
//!
//! backbone's Redis Streams channel. A producer writes each event's parameters to a hash (one
//! field per parameter, JSON values) and its metadata to a stream entry, in one Lua script;
//! consumers read through consumer groups with at-least-once delivery. The key layout is in
//! [`keys`].
//!
//! Build producers with [`RedisProducerBuilder`] and consumers with [`RedisConsumerBuilder`];
//! the methods `build_x_producer()` and `subscribe_x_consumer(handler)` come from the traits
//! `#[events_contract]` generates next to the contract.
//!
//! Where and how every builder connects (URL, TLS, unix sockets, timeouts, client names) is
//! [`RedisSettings`]; the ACL rule of each role is in [`acl`]; [`retry`] classifies errors.
//! The stream's administration (trimming) is [`StreamAdmin`], its dead letters [`DeadLetters`].
//!
//! The `testing` feature adds the `testing` module, which starts a real Redis for tests.
#![warn(missing_docs)]

pub mod acl;
mod admin;
pub mod connection;
mod consumer;
pub mod dead_letters;
pub mod entry;
mod holds;
pub mod key_store;
pub mod keys;
pub mod layout;
mod lua;
mod producer;
pub mod retry;
pub mod settings;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::{StreamAdmin, TrimReport};
pub use consumer::RedisConsumerBuilder;
pub use dead_letters::{DeadLetterEntry, DeadLetters};
pub use key_store::RedisKeyStore;
pub use producer::{RedisProducerBuilder, RedisPublisher};
pub use settings::RedisSettings;

/// The Redis channel's name in spans (`messaging.system`).
pub const SYSTEM: &str = "redis";
