//! [`Metadata`]: what travels with every event besides its parameters.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::MessageId;

/// What a consumer knows about the event it handles.
///
/// ```
/// use backbone_core::{Metadata, MessageId};
///
/// let m = Metadata {
///     message_id: MessageId::new(),
///     operation: "order_placed".into(),
///     version: 0,
///     environment: Some("prod".into()),
///     uri: "hello.event-sourcing".into(),
///     produced_at: backbone_core::metadata::now_millis(),
///     stream_id: "1700000000000-0".into(),
///     delivery_count: 1,
///     key: None,
/// };
/// assert_eq!(m.operation, "order_placed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The id the producer returned for this event.
    pub message_id: MessageId,
    /// The operation's stable name (the contract method's name unless renamed).
    pub operation: String,
    /// The operation's version (`#[event(version = N)]`, default 0).
    pub version: u32,
    /// The environment the event was produced in, if any.
    pub environment: Option<String>,
    /// The channel's uri (the stream's logical name).
    pub uri: String,
    /// When the producer sent it, in milliseconds since the Unix epoch.
    pub produced_at: u64,
    /// The channel's id for the entry (the Redis stream id, e.g. `1700000000000-0`).
    pub stream_id: String,
    /// How many times the entry has been delivered to this group, this delivery included.
    pub delivery_count: u32,
    /// The ordering key the producer gave the event, if any.
    pub key: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
///
/// ```
/// assert!(backbone_core::metadata::now_millis() > 1_600_000_000_000);
/// ```
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
