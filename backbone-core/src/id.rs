//! [`MessageId`]: the identity of one event, chosen by the producer.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The identity of one event: a UUIDv7, so ids sort by creation time.
///
/// ```
/// use backbone_core::MessageId;
///
/// let a = MessageId::new();
/// let b = MessageId::new();
/// assert!(a < b);
/// let parsed: MessageId = a.to_string().parse().unwrap();
/// assert_eq!(parsed, a);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        MessageId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(uuid: Uuid) -> Self {
        MessageId(uuid)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0.hyphenated())
    }
}

/// The text was not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("invalid message id {input:?}: {reason}")]
pub struct ParseMessageIdError {
    input: String,
    reason: String,
}

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(MessageId)
            .map_err(|e| ParseMessageIdError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}
