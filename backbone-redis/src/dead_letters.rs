//! Dead letters: events a consumer group gave up on, kept in the group's dead-letter stream
//! (`bb:{<tag>}:dead:<group>`, see [`keys`](crate::keys)) until an operator replays or purges them
//! with [`DeadLetters`].
//!
//! A dead letter is a stream entry holding the original entry's fields verbatim (`message_id`,
//! `operation`, `version`, `produced_at`, `payload`, `key`; none when the entry had been deleted
//! or trimmed), followed by the `dead.*` fields below. Every field whose name starts with
//! [`DEAD_PREFIX`] is the dead letter's own; every other field belongs to the original entry
//! (backbone never writes entry fields named `dead.*`; a foreign entry's `dead.*` fields would be
//! taken for the dead letter's and not replayed). The payload (hash or objects) is left in place
//! and held (see [`StreamKeys::holds`](crate::keys::StreamKeys::holds)): trimming the entry does not delete it while the dead letter
//! or its replay needs it, so a dead letter can be replayed unless its payload expired
//! (`payload_ttl`, [`StreamAdmin::expire_objects`](crate::StreamAdmin::expire_objects)); an
//! inline event's dead letter holds its `param.<name>` fields among the original ones, and
//! replays with them.

use std::fmt;

use crate::connection::Connection;
use crate::lua::{DEAD_LETTER, REPLAY};
use backbone_core::names::check_name;
use backbone_core::objects::ObjectStorage;
use backbone_core::Error;
use redis::Value;

use crate::connection::redis_error;
use crate::entry::{parse_range_reply, RawEntry, MESSAGE_ID, OPERATION, VERSION};
use crate::holds::PayloadRef;
use crate::keys::StreamKeys;
use crate::settings::RedisSettings;

/// The prefix of every field a dead letter adds to the original entry's fields.
pub const DEAD_PREFIX: &str = "dead.";
/// Dead-letter field: the entry's stream id in the original stream.
pub const DEAD_STREAM_ID: &str = "dead.stream_id";
/// Dead-letter field: the consumer group that gave up on the entry.
pub const DEAD_GROUP: &str = "dead.group";
/// Dead-letter field: the consumer that dead-lettered it.
pub const DEAD_CONSUMER: &str = "dead.consumer";
/// Dead-letter field: how many times the group had delivered the entry.
pub const DEAD_DELIVERIES: &str = "dead.deliveries";
/// Dead-letter field: why the entry was dead-lettered (the handler's error, a malformed field…).
pub const DEAD_REASON: &str = "dead.reason";
/// Dead-letter field: when, in ms since the epoch, by the Redis server's clock (`TIME`).
pub const DEAD_AT: &str = "dead.at";

/// What the consumer knows about an entry it gives up on.
pub(crate) struct DeadLetter<'a> {
    /// The stream id in the original stream.
    pub entry_id: &'a str,
    /// The entry's fields as read (`None` when the entry was deleted or trimmed).
    pub original: Option<&'a [(String, Vec<u8>)]>,
    pub consumer: &'a str,
    pub deliveries: u32,
    pub reason: &'a str,
}

/// Acknowledges the entry for `group` and appends it to the group's dead-letter stream, in one
/// script. Returns `Ok(false)` when the entry was no longer pending for the group (someone else
/// acked it), writing nothing.
pub(crate) async fn dead_letter(
    conn: &mut Connection,
    keys: &StreamKeys,
    group: &str,
    letter: &DeadLetter<'_>,
) -> Result<bool, Error> {
    let dead = keys.dead_letters(group);
    let mut invocation = DEAD_LETTER.key(keys.stream());
    let original = letter.original.unwrap_or(&[]);
    // The dead letter holds the payload, so that trimming the entry does not release it.
    let hold = PayloadRef::of_fields(keys, original).map(|p| p.message_id);
    invocation
        .key(&dead)
        .key(keys.holds())
        .arg(letter.entry_id)
        .arg(group)
        .arg(letter.consumer)
        .arg(letter.deliveries)
        .arg(letter.reason)
        .arg(hold.as_deref().unwrap_or(""))
        .arg(original.len());
    for (name, value) in original {
        invocation.arg(name).arg(value);
    }
    let written: i64 = invocation.invoke_async(conn).await.map_err(|e| {
        redis_error(
            format!(
                "dead-letter {} of {} to {dead}",
                letter.entry_id,
                keys.stream()
            ),
            e,
        )
    })?;
    Ok(written == 1)
}

/// One dead letter, as [`DeadLetters::list`] and [`DeadLetters::get`] return it: the type both
/// channels share ([`backbone_core::dead_letters::DeadLetterEntry`]).
pub use backbone_core::dead_letters::DeadLetterEntry;

/// Parses a dead letter read from `key`.
fn parse_letter(
    key: &str,
    id: String,
    flat: Vec<(String, Vec<u8>)>,
) -> Result<DeadLetterEntry, Error> {
    let (dead, fields): (Vec<_>, Vec<_>) = flat
        .into_iter()
        .partition(|(n, _)| n.starts_with(DEAD_PREFIX));
    let malformed = |reason: String| Error::MalformedDeadLetter {
        key: key.to_owned(),
        id: id.clone(),
        reason,
    };
    let text = |name: &str| -> Result<String, Error> {
        let (_, value) = dead
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .ok_or_else(|| malformed(format!("field `{name}` is missing")))?;
        String::from_utf8(value.clone())
            .map_err(|_| malformed(format!("field `{name}` is not valid UTF-8")))
    };
    let number = |name: &str| -> Result<u64, Error> {
        let value = text(name)?;
        value
            .parse()
            .map_err(|e| malformed(format!("field `{name}` = {value:?}: {e}")))
    };
    let original = |name: &str| {
        let (_, value) = fields.iter().find(|(n, _)| n == name)?;
        std::str::from_utf8(value).ok().map(str::to_owned)
    };
    let deliveries = number(DEAD_DELIVERIES)?;
    Ok(DeadLetterEntry {
        stream_id: text(DEAD_STREAM_ID)?,
        message_id: original(MESSAGE_ID).and_then(|m| m.parse().ok()),
        operation: original(OPERATION),
        version: original(VERSION).and_then(|v| v.parse().ok()),
        group: text(DEAD_GROUP)?,
        consumer: text(DEAD_CONSUMER)?,
        deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
        reason: text(DEAD_REASON)?,
        dead_at: number(DEAD_AT)?,
        id,
        fields,
    })
}

/// An operator's handle on the dead letters of one consumer group: list, inspect, replay, purge.
///
/// Replaying appends the dead letter's original fields to the stream as a new entry (new stream
/// id, same message id and payload, marked `replayed`) and removes the dead letter, in one
/// script. Like every
/// entry, the replayed one goes to **every** group of the stream, not only to the group that
/// dead-lettered it: handlers of other groups must tolerate seeing the event again (delivery is
/// at least once anyway). A replay needs the payload hash to still exist (see `payload_ttl`):
/// without it the event is dead-lettered again as a missing payload.
///
/// ```no_run
/// use backbone_redis::DeadLetters;
///
/// # async fn run() -> Result<(), backbone_core::Error> {
/// let dead = DeadLetters::connect("redis://127.0.0.1:6379", Some("prod"), "orders", "billing").await?;
/// println!("{} dead letters", dead.len().await?);
/// let mut after = None;
/// loop {
///     let page = dead.list(after.as_deref(), 100).await?;
///     let Some(last) = page.last() else { break };
///     after = Some(last.id.clone());
///     for letter in &page {
///         println!("{} {:?}: {}", letter.stream_id, letter.operation, letter.reason);
///     }
/// }
/// let replayed = dead.replay_all().await?;
/// let purged = dead.purge_all().await?; // what could not be replayed
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeadLetters {
    connection: Connection,
    keys: StreamKeys,
    dead: String,
    objects: Option<ObjectStorage>,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("key", &self.dead)
            .finish()
    }
}

/// How many dead letters one `XRANGE` of [`DeadLetters::replay_all`] reads.
const PAGE: usize = 100;

impl DeadLetters {
    /// Connects to the dead letters of `group` on the stream (`environment`, `uri`). The names
    /// are checked like the builders check them, before connecting: a bad one is an
    /// [`Error::Config`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let dead = backbone_redis::DeadLetters::connect("redis://127.0.0.1:6379", None, "orders", "billing").await?;
    /// assert_eq!(dead.key(), "bb:{orders}:dead:billing");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(
        url: &str,
        environment: Option<&str>,
        uri: &str,
        group: &str,
    ) -> Result<Self, Error> {
        let settings = RedisSettings::new().url(url).at(environment, uri);
        Self::open(&settings, group).await
    }

    /// Connects with `settings` (URL, TLS, …, and the stream's environment and uri) to the
    /// dead letters of `group`. The names are checked before connecting.
    ///
    /// ```no_run
    /// use backbone_redis::{settings::RedisSettings, DeadLetters};
    ///
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let settings = RedisSettings::from_env().environment("prod").uri("orders");
    /// let dead = DeadLetters::open(&settings, "billing").await?;
    /// assert_eq!(dead.key(), "bb:{prod:orders}:dead:billing");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A partitioned stream has one dead-letter stream per partition: open them with
    /// [`open_partitions`](Self::open_partitions); `open` refuses such a stream.
    pub async fn open(settings: &RedisSettings, group: &str) -> Result<Self, Error> {
        let layout = settings.layout()?;
        if layout.count() > 1 {
            return Err(Error::Config(format!(
                "stream {} has {} partitions, each with its own dead letters: use \
                 DeadLetters::open_partitions",
                layout.address(),
                layout.count()
            )));
        }
        Ok(Self::open_partitions(settings, group).await?.remove(0))
    }

    /// The dead letters of `group` on every partition of the stream (one handle per partition,
    /// in partition order; one for an unpartitioned stream), sharing one connection.
    ///
    /// ```no_run
    /// use backbone_redis::{settings::RedisSettings, DeadLetters};
    ///
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let settings = RedisSettings::from_env().uri("orders").partitions(6);
    /// for dead in DeadLetters::open_partitions(&settings, "billing").await? {
    ///     println!("{}: {}", dead.key(), dead.len().await?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_partitions(
        settings: &RedisSettings,
        group: &str,
    ) -> Result<Vec<Self>, Error> {
        let layout = settings.layout()?;
        check_name("group", group, "")?;
        let address = layout.address().to_string();
        let connection = settings.connect("dead-letters", &[&address, group]).await?;
        Ok(layout
            .partitions()
            .iter()
            .map(|keys| DeadLetters {
                connection: connection.clone(),
                dead: keys.dead_letters(group),
                keys: keys.clone(),
                objects: None,
            })
            .collect())
    }

    /// The object store of the stream's `object` parameters (see
    /// [`ObjectStorage`]): purging a dead letter that was the last reference to an event's
    /// objects deletes them from it. Without one, purging such a dead letter is refused
    /// ([`Error::Config`]) before anything is deleted.
    ///
    /// ```no_run
    /// use backbone_core::objects::ObjectStorage;
    /// use backbone_redis::{settings::RedisSettings, DeadLetters};
    ///
    /// # async fn run(objects: ObjectStorage) -> Result<(), backbone_core::Error> {
    /// let dead = DeadLetters::open(&RedisSettings::from_env().uri("orders"), "billing")
    ///     .await?
    ///     .object_store(objects);
    /// dead.purge_all().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = Some(objects);
        self
    }

    /// The dead-letter stream's key, `bb:{<tag>}:dead:<group>`.
    pub fn key(&self) -> &str {
        &self.dead
    }

    /// How many dead letters there are.
    pub async fn len(&self) -> Result<u64, Error> {
        let mut connection = self.connection.clone();
        redis::cmd("XLEN")
            .arg(&self.dead)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("XLEN {}", self.dead), e))
    }

    /// True when there are no dead letters.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// Up to `count` dead letters, oldest first, starting after the dead letter `after` (from
    /// the first one with `None`). Page on with the last returned [`DeadLetterEntry::id`].
    pub async fn list(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetterEntry>, Error> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        self.range(&start, "+", count).await
    }

    /// The dead letter `id`, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetterEntry>, Error> {
        Ok(self.range(id, id, 1).await?.pop())
    }

    /// Sends the dead letter `id` again (see [`DeadLetters`]) and removes it; returns the new
    /// entry's stream id. Fails, naming `id`, when there is no such dead letter or when its entry
    /// had been deleted before it was dead-lettered (nothing to replay: purge it).
    pub async fn replay(&self, id: &str) -> Result<String, Error> {
        let context = || format!("replay dead letter {id} of {}", self.dead);
        self.replay_script(id)
            .await?
            .ok_or_else(|| Error::channel(context(), "no such dead letter"))
    }

    /// Replays every dead letter there was when called, oldest first; returns how many were
    /// replayed. Dead letters without original fields are skipped (they stay: purge them), as
    /// are those replayed or purged meanwhile by someone else.
    pub async fn replay_all(&self) -> Result<u64, Error> {
        let Some(end) = self.newest().await? else {
            return Ok(0);
        };
        let (mut start, mut replayed) = ("-".to_owned(), 0);
        loop {
            let page = self.range(&start, &end, PAGE).await?;
            for letter in &page {
                if !letter.can_replay() {
                    tracing::warn!(dead_letter = %letter.id, key = %self.dead,
                        "dead letter has no original fields, not replayed");
                } else if self.replay_script(&letter.id).await?.is_some() {
                    replayed += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE && last.id != end => {
                    start = format!("({}", last.id)
                }
                _ => return Ok(replayed),
            }
        }
    }

    /// Deletes the dead letter `id`; false when there was none. When it was the last
    /// reference to its event's payload (the entry trimmed, no other dead letter or replayed
    /// entry left), the payload hash goes with it, and so do its objects (see
    /// [`object_store`](Self::object_store)).
    pub async fn purge(&self, id: &str) -> Result<bool, Error> {
        Ok(self.purge_range(id, id).await? > 0)
    }

    /// Deletes every dead letter there was when called, releasing payloads as
    /// [`purge`](Self::purge) does (one script per page of 100); returns how many.
    pub async fn purge_all(&self) -> Result<u64, Error> {
        match self.newest().await? {
            Some(end) => self.purge_range("-", &end).await,
            None => Ok(0),
        }
    }

    /// The id of the newest dead letter, if any.
    async fn newest(&self) -> Result<Option<String>, Error> {
        let mut connection = self.connection.clone();
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(&self.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("XREVRANGE {}", self.dead), e))?;
        let newest = parse_range_reply(reply)
            .map_err(|e| Error::channel(format!("XREVRANGE {}", self.dead), e))?;
        Ok(newest.into_iter().next().map(|entry| entry.id))
    }

    async fn replay_script(&self, id: &str) -> Result<Option<String>, Error> {
        let mut connection = self.connection.clone();
        REPLAY
            .key(&self.dead)
            .key(self.keys.stream())
            .arg(id)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("replay dead letter {id} of {}", self.dead), e))
    }

    /// Up to `count` dead letters of `start..=end` (`XRANGE` syntax), parsed.
    async fn range(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<DeadLetterEntry>, Error> {
        self.raw_range(start, end, count)
            .await?
            .into_iter()
            .map(|entry| parse_letter(&self.dead, entry.id, entry.fields.unwrap_or_default()))
            .collect()
    }

    /// Up to `count` dead letters of `start..=end`, unparsed (what purging reads: a malformed
    /// dead letter can still be purged).
    async fn raw_range(
        &self,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<RawEntry>, Error> {
        let mut connection = self.connection.clone();
        let what = || format!("XRANGE {} {start} {end}", self.dead);
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.dead)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(what(), e))?;
        parse_range_reply(reply).map_err(|e| Error::channel(what(), e))
    }
}

// The channel-neutral face of `DeadLetters` (`DeadLetterStore`), shared with the in-memory
// channel's: code and tests written against it run on both.
backbone_core::dead_letter_store_by_inherent_methods!(DeadLetters);

mod purge;

#[cfg(all(test, feature = "testing"))]
mod tests;
