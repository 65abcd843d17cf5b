//! Dead letters, whatever the channel: the events a consumer group gave up on
//! ([`DeadLetterEntry`]) and an operator's handle on them ([`DeadLetterStore`]): list,
//! inspect, replay, purge. The in-memory channel's handle is
//! [`memory::DeadLetters`](crate::memory::DeadLetters).
//!
//! A consumer dead-letters an event (and acknowledges it) when retrying cannot help: the
//! handler failed `max_deliveries` times (reason `the handler failed <n> times; last error:
//! <error>`), failed fatally (`the handler failed (fatal): <error>`), the event is bad (the
//! error's text: an undecodable parameter, a missing or altered object, …), or its operation is
//! unknown under [`UnknownPolicy::DeadLetter`](crate::UnknownPolicy::DeadLetter).

use async_trait::async_trait;

use crate::{Error, MessageId};

/// One dead letter, as [`DeadLetterStore::list`] and [`DeadLetterStore::get`] return it.
///
/// ```
/// use backbone_core::dead_letters::DeadLetterEntry;
///
/// let letter = DeadLetterEntry {
///     id: "1".into(),
///     stream_id: "0".into(),
///     message_id: None,
///     operation: Some("tick".into()),
///     version: Some(1),
///     group: "billing".into(),
///     consumer: "billing-1".into(),
///     deliveries: 5,
///     reason: "the handler failed 5 times; last error: no route".into(),
///     dead_at: 1_700_000_000_001,
///     fields: vec![],
/// };
/// assert!(!letter.can_replay());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterEntry {
    /// The dead letter's id among the group's dead letters: what
    /// [`DeadLetterStore::replay`], [`DeadLetterStore::purge`] and paging take.
    pub id: String,
    /// The entry's stream id in the original stream.
    pub stream_id: String,
    /// The event's id, when the original fields hold a valid one.
    pub message_id: Option<MessageId>,
    /// The operation, when the original fields hold one.
    pub operation: Option<String>,
    /// The operation's version, when the original fields hold a valid one.
    pub version: Option<u32>,
    /// The consumer group that gave up on the entry.
    pub group: String,
    /// The consumer that dead-lettered it.
    pub consumer: String,
    /// How many times the group had delivered it.
    pub deliveries: u32,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When, in ms since the epoch.
    pub dead_at: u64,
    /// The original entry's fields, in order; empty when the entry had been deleted or trimmed.
    /// In memory: `message_id`, `operation`, `version`, `produced_at`, `key` (when the event
    /// has one), then each parameter as the log keeps it, as `param.<name>`.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl DeadLetterEntry {
    /// True when the original fields are known, so [`DeadLetterStore::replay`] can send it
    /// again.
    pub fn can_replay(&self) -> bool {
        !self.fields.is_empty()
    }
}

/// An operator's handle on the dead letters of one consumer group on one stream.
///
/// Replaying sends the dead letter's event to the stream again as a new entry (new stream id,
/// same message id and parameters) and removes the dead letter; like every entry it goes to
/// **every** group of the stream.
///
/// ```
/// use backbone_core::dead_letters::DeadLetterStore;
///
/// /// Replays what can be replayed and purges the rest, on any channel.
/// async fn drain(dead: &dyn DeadLetterStore) -> Result<(u64, u64), backbone_core::Error> {
///     let replayed = dead.replay_all().await?;
///     Ok((replayed, dead.purge_all().await?))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let broker = backbone_core::memory::InMemoryBroker::new();
/// let dead = broker.dead_letters(None, "orders", "billing")?;
/// assert_eq!(drain(&dead).await?, (0, 0));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// How many dead letters there are.
    async fn len(&self) -> Result<u64, Error>;

    /// True when there are no dead letters.
    async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// Up to `count` dead letters, oldest first, starting after the dead letter `after` (from
    /// the first one with `None`). Page on with the last returned [`DeadLetterEntry::id`].
    async fn list(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetterEntry>, Error>;

    /// The dead letter `id`, if there is one.
    async fn get(&self, id: &str) -> Result<Option<DeadLetterEntry>, Error>;

    /// Sends the dead letter `id` again and removes it; returns the new entry's stream id.
    /// Fails, naming `id`, when there is no such dead letter or nothing to replay.
    async fn replay(&self, id: &str) -> Result<String, Error>;

    /// Replays every dead letter there was when called, oldest first; returns how many.
    async fn replay_all(&self) -> Result<u64, Error>;

    /// Deletes the dead letter `id`; false when there was none.
    async fn purge(&self, id: &str) -> Result<bool, Error>;

    /// Deletes every dead letter there was when called; returns how many.
    async fn purge_all(&self) -> Result<u64, Error>;
}

/// Implements [`DeadLetterStore`] for a type whose inherent methods of the same names and
/// signatures do the work: both channels' `DeadLetters` keep them inherent (callable without
/// importing the trait) and serve the trait through this one delegation.
#[doc(hidden)]
#[macro_export]
macro_rules! dead_letter_store_by_inherent_methods {
    ($ty:ty) => {
        #[$crate::async_trait]
        impl $crate::dead_letters::DeadLetterStore for $ty {
            async fn len(&self) -> ::std::result::Result<u64, $crate::Error> {
                <$ty>::len(self).await
            }

            async fn list(
                &self,
                after: ::std::option::Option<&str>,
                count: usize,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::dead_letters::DeadLetterEntry>,
                $crate::Error,
            > {
                <$ty>::list(self, after, count).await
            }

            async fn get(
                &self,
                id: &str,
            ) -> ::std::result::Result<
                ::std::option::Option<$crate::dead_letters::DeadLetterEntry>,
                $crate::Error,
            > {
                <$ty>::get(self, id).await
            }

            async fn replay(&self, id: &str) -> ::std::result::Result<String, $crate::Error> {
                <$ty>::replay(self, id).await
            }

            async fn replay_all(&self) -> ::std::result::Result<u64, $crate::Error> {
                <$ty>::replay_all(self).await
            }

            async fn purge(&self, id: &str) -> ::std::result::Result<bool, $crate::Error> {
                <$ty>::purge(self, id).await
            }

            async fn purge_all(&self) -> ::std::result::Result<u64, $crate::Error> {
                <$ty>::purge_all(self).await
            }
        }
    };
}
