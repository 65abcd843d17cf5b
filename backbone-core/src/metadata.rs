//! [`Metadata`]: what travels with every event besides its parameters.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::envelope::{Headers, TraceContext};
use crate::MessageId;

/// What a consumer knows about the event it handles.
///
/// Channels build it; tests build one with [`Metadata::new`] and set the fields they need.
///
/// ```
/// use backbone_core::{Metadata, MessageId};
///
/// let id = MessageId::new();
/// let mut m = Metadata::new(id, "order_placed", 0, "hello.event-sourcing");
/// m.environment = Some("prod".into());
/// assert_eq!(m.operation, "order_placed");
/// assert_eq!(m.correlation_id, id.to_string(), "an event starts its own workflow");
/// assert_eq!(m.causation_id, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The workflow the event belongs to: the correlation id its producer was given or
    /// inherited from the event it handled, else the event's own message id.
    pub correlation_id: String,
    /// The message id of the event whose handler sent this one, if it was sent from a handler.
    pub causation_id: Option<String>,
    /// The user headers the producer set.
    pub headers: Headers,
    /// The W3C trace context of the span that sent it, if the producer wrote one.
    pub trace: Option<TraceContext>,
    /// The data subject of its personal parameters, if it names one (see
    /// [`personal`](crate::personal)).
    pub subject: Option<String>,
}

impl Metadata {
    /// Metadata for a first delivery of a new event with no environment, key, headers or
    /// trace, correlated to itself, produced now, at stream id `0-0`.
    pub fn new(
        message_id: MessageId,
        operation: impl Into<String>,
        version: u32,
        uri: impl Into<String>,
    ) -> Self {
        Metadata {
            message_id,
            operation: operation.into(),
            version,
            environment: None,
            uri: uri.into(),
            produced_at: now_millis(),
            stream_id: "0-0".into(),
            delivery_count: 1,
            key: None,
            correlation_id: message_id.to_string(),
            causation_id: None,
            headers: Headers::new(),
            trace: None,
            subject: None,
        }
    }
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
