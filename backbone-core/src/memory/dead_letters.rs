//! The in-memory dead letters: what a group gave up on ([`bury`]), kept beside the group in
//! the broker, and the handle on them ([`DeadLetters`]), of the same shape as the Redis one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{lock, Stream, StreamState};
use crate::dead_letters::DeadLetterEntry;
use crate::metadata::now_millis;
use crate::{Error, OutgoingEvent};

/// A group's dead letters, by id, oldest first.
#[derive(Default)]
pub(super) struct Buried {
    letters: BTreeMap<u64, Letter>,
    last_id: u64,
}

struct Letter {
    entry: DeadLetterEntry,
    /// The entry's index in the log: what a replay sends again.
    index: usize,
}

/// Who gives up on which delivery, and why.
pub(super) struct Burial<'a> {
    pub index: usize,
    pub consumer: &'a str,
    pub deliveries: u32,
    pub reason: &'a str,
}

/// Acknowledges the entry for `group` and keeps it as a dead letter, at once (as the Redis
/// script does). False when the entry was no longer pending for the group, writing nothing.
pub(super) fn bury(stream: &Stream, group: &str, burial: &Burial<'_>) -> bool {
    let mut state = lock(&stream.state);
    let StreamState { entries, groups } = &mut *state;
    let Some(group_state) = groups.get_mut(group) else {
        return false;
    };
    if group_state.pending.remove(&burial.index).is_none() {
        return false;
    }
    let event = &entries[burial.index];
    let buried = &mut group_state.dead;
    buried.last_id += 1;
    let entry = DeadLetterEntry {
        id: buried.last_id.to_string(),
        stream_id: burial.index.to_string(),
        message_id: Some(event.message_id),
        operation: Some(event.operation.to_owned()),
        version: Some(event.version),
        group: group.to_owned(),
        consumer: burial.consumer.to_owned(),
        deliveries: burial.deliveries,
        reason: burial.reason.to_owned(),
        dead_at: now_millis(),
        fields: original_fields(event),
    };
    let letter = Letter {
        entry,
        index: burial.index,
    };
    buried.letters.insert(buried.last_id, letter);
    true
}

/// The fields a dead letter shows of its event (see [`DeadLetterEntry::fields`]).
fn original_fields(event: &OutgoingEvent) -> Vec<(String, Vec<u8>)> {
    let text = |name: &str, value: String| (name.to_owned(), value.into_bytes());
    let mut fields = vec![
        text("message_id", event.message_id.to_string()),
        text("operation", event.operation.to_owned()),
        text("version", event.version.to_string()),
        text("produced_at", event.produced_at.to_string()),
    ];
    if let Some(key) = &event.key {
        fields.push(text("key", key.to_string()));
    }
    let params = event.fields.iter();
    fields.extend(params.map(|(name, value)| (format!("param.{name}"), value.to_vec())));
    fields
}

/// The dead letters of one group of an [`InMemoryBroker`](super::InMemoryBroker) stream, from
/// [`InMemoryBroker::dead_letters`](super::InMemoryBroker::dead_letters): the methods of
/// `backbone_redis::DeadLetters`, and [`DeadLetterStore`](crate::dead_letters::DeadLetterStore) for code written for both channels.
///
/// Ids are `1`, `2`, … in the order the group gave up on its events. Replaying appends the
/// event to the stream again (a new stream id, the same message id, parameters and objects),
/// for every group of the stream, and removes the dead letter. Nothing is deleted from the
/// log or the object store: purging forgets the dead letter only.
///
/// ```
/// use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult, RetryPolicy};
/// use backbone_core::memory::InMemoryBroker;
/// use std::time::Duration;
///
/// #[events_contract]
/// pub trait Payments {
///     async fn charge(&self, cents: u64);
/// }
///
/// struct Gateway;
///
/// #[async_trait]
/// impl PaymentsConsumer for Gateway {
///     async fn charge(&self, _: &ConsumerContext, cents: u64) -> HandlerResult {
///         Err(format!("the gateway refused {cents}").into())
///     }
/// }
///
/// // A paused clock: the backoffs (1 s, 2 s, 4 s, 8 s) take no real time.
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), backbone_core::Error> {
/// let broker = InMemoryBroker::new();
/// let producer = broker.producer_builder().uri("payments").build_payments_producer().await?;
/// let id = producer.charge(500).await?;
/// let retry = RetryPolicy {
///     base_delay: Duration::from_secs(1),
///     max_delay: Duration::from_secs(60),
///     max_deliveries: 5,
/// };
/// let lifetime = broker
///     .consumer_builder()
///     .uri("payments")
///     .group("billing")
///     .retry(retry)
///     .subscribe_payments_consumer(Gateway)
///     .await?;
///
/// let dead = broker.dead_letters(None, "payments", "billing")?;
/// while dead.is_empty().await? {
///     tokio::time::sleep(Duration::from_millis(100)).await;
/// }
/// let letter = dead.list(None, 10).await?.remove(0);
/// assert_eq!(letter.message_id, Some(id));
/// assert_eq!(letter.deliveries, 5);
/// assert_eq!(letter.reason, "the handler failed 5 times; last error: the gateway refused 500");
/// assert_eq!(broker.pending(None, "payments", "billing"), 0);
///
/// dead.replay(&letter.id).await?; // the group sees it again, from delivery 1
/// assert_eq!(broker.len(None, "payments"), 2);
/// lifetime.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    pub(super) stream: Arc<Stream>,
    pub(super) group: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Runs `f` on the group's dead letters (none when the group does not exist yet).
    fn with<T>(&self, f: impl FnOnce(&mut Buried) -> T) -> T {
        let mut state = lock(&self.stream.state);
        match state.groups.get_mut(&self.group) {
            Some(group) => f(&mut group.dead),
            None => f(&mut Buried::default()),
        }
    }

    /// How many dead letters there are.
    pub async fn len(&self) -> Result<u64, Error> {
        Ok(self.with(|b| b.letters.len() as u64))
    }

    /// True when there are no dead letters.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// A page of dead letters, oldest first, as [`DeadLetterStore::list`](crate::dead_letters::DeadLetterStore::list) says: at most `count`
    /// of them after the dead letter `after`.
    pub async fn list(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetterEntry>, Error> {
        let start = after.map(parse_id).transpose()?.map_or(0, |id| id + 1);
        Ok(self.with(|b| {
            let page = b.letters.range(start..).take(count);
            page.map(|(_, letter)| letter.entry.clone()).collect()
        }))
    }

    /// The dead letter `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetterEntry>, Error> {
        let id = parse_id(id)?;
        Ok(self.with(|b| b.letters.get(&id).map(|l| l.entry.clone())))
    }

    /// Sends the dead letter `id` again (see [`DeadLetters`]) and removes it; returns the new
    /// entry's stream id. Fails, naming `id`, when there is no such dead letter.
    pub async fn replay(&self, id: &str) -> Result<String, Error> {
        let number = parse_id(id)?;
        let resent = self.resend(|b| b.letters.remove(&number).into_iter().collect());
        let context = || format!("replay dead letter {id} of group {}", self.group);
        (resent.first().map(usize::to_string))
            .ok_or_else(|| Error::channel(context(), "no such dead letter"))
    }

    /// Replays every dead letter there was when called, oldest first; returns how many.
    pub async fn replay_all(&self) -> Result<u64, Error> {
        let resent = self.resend(|b| std::mem::take(&mut b.letters).into_values().collect());
        Ok(resent.len() as u64)
    }

    /// Appends again the events of the dead letters `take` removes, in one lock; returns
    /// their new stream ids.
    fn resend(&self, take: impl FnOnce(&mut Buried) -> Vec<Letter>) -> Vec<usize> {
        let (resent, len) = {
            let mut state = lock(&self.stream.state);
            let StreamState { entries, groups } = &mut *state;
            let letters = groups.get_mut(&self.group).map(|g| take(&mut g.dead));
            let mut resent = Vec::new();
            for letter in letters.unwrap_or_default() {
                resent.push(entries.len());
                entries.push(entries[letter.index].clone());
            }
            (resent, entries.len())
        };
        if !resent.is_empty() {
            self.stream.appended.send_replace(len);
        }
        resent
    }

    /// Deletes the dead letter `id`; false when there was none.
    pub async fn purge(&self, id: &str) -> Result<bool, Error> {
        let id = parse_id(id)?;
        Ok(self.with(|b| b.letters.remove(&id).is_some()))
    }

    /// Deletes every dead letter there was when called; returns how many.
    pub async fn purge_all(&self) -> Result<u64, Error> {
        Ok(self.with(|b| std::mem::take(&mut b.letters).len() as u64))
    }
}

/// An in-memory dead letter id: a positive number.
fn parse_id(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::Config(format!("`{id}` is not an in-memory dead letter id")))
}

crate::dead_letter_store_by_inherent_methods!(DeadLetters);
