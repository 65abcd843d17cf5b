//! [`StreamAdmin`], the administration of one stream: its length, and safe trimming that
//! removes old entries and their payload hashes without ever removing an entry a consumer
//! group still needs.
//!
//! An entry may go only when every group has read it (it is at or before the group's
//! `last-delivered-id`) and none has it pending (it is before the oldest id of the group's
//! `XPENDING` summary). The payload of a removed entry — its payload hash, or its objects in an
//! object store — is deleted too, unless a dead letter or a replayed entry still refers to it
//! (the stream's holds, see [`StreamKeys::holds`]): dead letters stay replayable, and a
//! replayed entry keeps its payload.
//!
//! Each step plans in Rust with read-only commands (`XINFO GROUPS`, `XPENDING`, `XRANGE` of
//! the oldest entries), then runs one script over at most 1000 entries. The script checks the
//! plan again before its first write — same groups, every group past the last entry to remove,
//! none of them pending, and for [`trim`](StreamAdmin::trim) still `max_len` entries left after
//! it — and else writes nothing and the step is planned again. Then it releases the payloads
//! (deleting each hash no hold keeps) and runs an exact `XTRIM <stream> MINID <id>`, so exactly
//! the planned entries go; the released events' objects are deleted after the script.

use crate::connection::Connection;
use crate::holds::{delete_objects, require_store, PayloadRef};
use crate::lua::TRIM;
use backbone_core::objects::ObjectStorage;
use backbone_core::Error;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply, StreamRangeReply};

use crate::connection::redis_error;
use crate::entry::StreamId;
use crate::keys::StreamKeys;
use crate::settings::RedisSettings;

/// The most entries one script removes.
const STEP: u64 = 1000;
/// How many times in a row a step may be planned again before the trim gives up.
const MAX_REPLANS: u32 = 10;

/// What a trim did.
///
/// ```
/// let report = backbone_redis::TrimReport::default();
/// assert_eq!((report.entries, report.payloads, report.objects), (0, 0, 0));
/// assert_eq!(report.held_back_by, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Stream entries removed.
    pub entries: u64,
    /// Payload hashes deleted (those of removed entries that still existed and that no dead
    /// letter or replayed entry refers to).
    pub payloads: u64,
    /// Objects deleted from the object store (those of removed `object` events that no dead
    /// letter or replayed entry refers to).
    pub objects: u64,
    /// The consumer group that stopped the trim short (it had the next entry pending, or had
    /// not read it yet), if one did.
    pub held_back_by: Option<String>,
}

/// Administers one stream: its length and safe trimming. Cheap to clone.
///
/// ```no_run
/// use backbone_redis::StreamAdmin;
///
/// # async fn run() -> Result<(), backbone_core::Error> {
/// let admin = StreamAdmin::connect("redis://127.0.0.1:6379", Some("prod"), "orders").await?;
/// let report = admin.trim(10_000).await?;
/// println!("removed {} entries, {} payloads", report.entries, report.payloads);
/// if let Some(group) = report.held_back_by {
///     println!("group {group} still needs older entries; {} left", admin.len().await?);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StreamAdmin {
    keys: StreamKeys,
    connection: Connection,
    objects: Option<ObjectStorage>,
}

/// One group, as planned: it keeps every entry after `read` and from `pending` on.
struct Group {
    name: String,
    read: StreamId,
    pending: Option<StreamId>,
}

impl Group {
    fn keeps(&self, id: StreamId) -> bool {
        id > self.read || self.pending.is_some_and(|oldest| id >= oldest)
    }
}

#[derive(Clone, Copy)]
enum Goal {
    /// Remove the oldest entries, keeping at least this many.
    Keep(u64),
    /// Remove the entries before this id.
    Before(StreamId),
}

impl StreamAdmin {
    /// Connects to the stream `uri` (in `environment`, if any) at `url`. The names are checked
    /// as the builders check them.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let admin = backbone_redis::StreamAdmin::connect("redis://127.0.0.1:6379", None, "orders").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, environment: Option<&str>, uri: &str) -> Result<Self, Error> {
        Self::open(&RedisSettings::new().url(url).at(environment, uri)).await
    }

    /// Connects with `settings` (URL, TLS, …, and the stream's environment and uri).
    ///
    /// ```no_run
    /// use backbone_redis::{settings::RedisSettings, StreamAdmin};
    ///
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let admin = StreamAdmin::open(&RedisSettings::from_env().uri("orders")).await?;
    /// println!("{} entries", admin.len().await?);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A partitioned stream is administered one partition at a time: see
    /// [`open_partitions`](Self::open_partitions); `open` refuses such a stream.
    pub async fn open(settings: &RedisSettings) -> Result<Self, Error> {
        let layout = settings.layout()?;
        if layout.count() > 1 {
            return Err(Error::Config(format!(
                "stream {} has {} partitions: use StreamAdmin::open_partitions",
                layout.address(),
                layout.count()
            )));
        }
        Ok(Self::open_partitions(settings).await?.remove(0))
    }

    /// One admin per partition of the stream (in partition order; one for an unpartitioned
    /// stream), sharing one connection.
    ///
    /// ```no_run
    /// use backbone_redis::{settings::RedisSettings, StreamAdmin};
    ///
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// for admin in StreamAdmin::open_partitions(&RedisSettings::from_env().uri("orders").partitions(6)).await? {
    ///     admin.trim(100_000).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_partitions(settings: &RedisSettings) -> Result<Vec<Self>, Error> {
        let layout = settings.layout()?;
        let address = layout.address().to_string();
        let connection = settings.connect("admin", &[&address]).await?;
        Ok(layout
            .partitions()
            .iter()
            .map(|keys| StreamAdmin::new(keys.clone(), connection.clone()))
            .collect())
    }

    pub(crate) fn new(keys: StreamKeys, connection: Connection) -> Self {
        StreamAdmin {
            keys,
            connection,
            objects: None,
        }
    }

    /// The object store of the stream's `object` parameters (see [`ObjectStorage`]): trimming
    /// an `object` event deletes its objects from it, once no dead letter or replayed entry
    /// needs them. Without one, a trim that reaches such an event stops with
    /// [`Error::Config`] before removing it.
    ///
    /// ```no_run
    /// use backbone_core::objects::ObjectStorage;
    /// use backbone_redis::{settings::RedisSettings, StreamAdmin};
    ///
    /// # async fn run(objects: ObjectStorage) -> Result<(), backbone_core::Error> {
    /// let admin = StreamAdmin::open(&RedisSettings::from_env().uri("orders"))
    ///     .await?
    ///     .object_store(objects);
    /// let report = admin.trim(10_000).await?;
    /// println!("{} objects deleted", report.objects);
    /// # Ok(())
    /// # }
    /// ```
    pub fn object_store(mut self, objects: ObjectStorage) -> Self {
        self.objects = Some(objects);
        self
    }

    /// The keys of the administered stream.
    ///
    /// ```no_run
    /// # let admin: backbone_redis::StreamAdmin = todo!();
    /// println!("{}", admin.keys().stream());
    /// ```
    pub fn keys(&self) -> &StreamKeys {
        &self.keys
    }

    /// The number of entries in the stream (`XLEN`; 0 when it does not exist).
    ///
    /// ```no_run
    /// # async fn run(admin: backbone_redis::StreamAdmin) -> Result<(), backbone_core::Error> {
    /// println!("{} entries", admin.len().await?);
    /// # Ok(())
    /// # }
    /// ```
    #[allow(clippy::len_without_is_empty)]
    pub async fn len(&self) -> Result<u64, Error> {
        let mut connection = self.connection.clone();
        redis::cmd("XLEN")
            .arg(self.keys.stream())
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("XLEN {}", self.keys.stream()), e))
    }

    /// Removes the oldest entries, keeping at least the newest `max_len`, and stops short at the
    /// first entry a group still needs: one that some group has not read yet or has pending
    /// (see [`TrimReport::held_back_by`]).
    ///
    /// ```no_run
    /// # async fn run(admin: backbone_redis::StreamAdmin) -> Result<(), backbone_core::Error> {
    /// let report = admin.trim(0).await?; // all that every group is done with
    /// # Ok(())
    /// # }
    /// ```
    pub async fn trim(&self, max_len: u64) -> Result<TrimReport, Error> {
        self.run(Goal::Keep(max_len)).await
    }

    /// Removes the entries older than `min_id` (`<ms>-<seq>`, or `<ms>` for `<ms>-0`), and
    /// stops short at the first entry a group still needs.
    ///
    /// ```no_run
    /// # async fn run(admin: backbone_redis::StreamAdmin) -> Result<(), backbone_core::Error> {
    /// let a_day_ago = backbone_core::metadata::now_millis() - 24 * 3600 * 1000;
    /// admin.trim_before(&a_day_ago.to_string()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn trim_before(&self, min_id: &str) -> Result<TrimReport, Error> {
        let id = StreamId::parse(min_id, true).ok_or_else(|| {
            Error::Config(format!(
                "invalid stream id {min_id:?}: expected <ms>-<seq> or <ms>, e.g. 1700000000000-0"
            ))
        })?;
        if id == StreamId(0, 0) {
            return Ok(TrimReport::default()); // nothing is older; XRANGE refuses `(0-0`
        }
        self.run(Goal::Before(id)).await
    }

    async fn run(&self, goal: Goal) -> Result<TrimReport, Error> {
        let stream = self.keys.stream();
        let context = |what: &str| format!("trim {stream}: {what}");
        let fail = |what: &'static str| move |e| redis_error(context(what), e);
        let mut connection = self.connection.clone();
        let mut report = TrimReport::default();
        // At most the excess seen at the start: a busy stream does not keep the trim going.
        let (keep, mut left) = match goal {
            Goal::Keep(n) => (n, self.len().await?.saturating_sub(n)),
            Goal::Before(_) => (0, u64::MAX),
        };
        let mut replans = 0;
        while left > 0 {
            let (end, count) = match goal {
                Goal::Keep(n) => ("+".to_owned(), self.len().await?.saturating_sub(n)),
                Goal::Before(id) => (format!("({id}"), STEP),
            };
            let count = count.min(left).min(STEP);
            if count == 0 {
                break;
            }
            let range: StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg("-")
                .arg(&end)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut connection)
                .await
                .map_err(fail("XRANGE"))?;
            if range.ids.is_empty() {
                break;
            }
            let groups = self.groups(&mut connection).await?;
            let (mut last, mut planned, mut held_back_by) = (None, 0, None);
            let mut payloads = Vec::new();
            let field = |entry: &redis::streams::StreamId, name: &str| entry.get::<String>(name);
            for entry in &range.ids {
                let id = StreamId::parse(&entry.id, false)
                    .ok_or_else(|| Error::malformed(&entry.id, "not a stream id"))?;
                if let Some(group) = groups.iter().find(|g| g.keeps(id)) {
                    held_back_by = Some(group.name.clone());
                    break;
                }
                last = Some(id);
                planned += 1;
                payloads.extend(PayloadRef::of(&self.keys, |name| field(entry, name)));
            }
            let Some(last) = last else {
                report.held_back_by = held_back_by;
                break;
            };
            require_store(self.objects.as_ref(), &payloads, &context("the plan"))?;
            let mut invocation = TRIM.key(stream);
            invocation.key(self.keys.holds());
            invocation
                .arg(last.next().to_string())
                .arg(last.to_string())
                .arg(planned)
                .arg(keep)
                .arg(groups.len());
            for group in &groups {
                invocation.arg(&group.name);
            }
            invocation.arg(payloads.len());
            let mut hashes = 0;
            for payload in &payloads {
                payload.add_to(&mut invocation, &mut hashes);
            }
            type Step = (i64, u64, u64, String, Vec<String>);
            let (done, entries, deleted, reason, released): Step = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(fail("the trim script"))?;
            if done == 0 {
                replans += 1;
                tracing::debug!(
                    stream,
                    reason,
                    replans,
                    "trim plan outdated; planning again"
                );
                if replans > MAX_REPLANS {
                    let what = format!("the plan changed {MAX_REPLANS} times in a row");
                    return Err(Error::channel(context(&what), reason));
                }
                continue;
            }
            replans = 0;
            report.entries += entries;
            report.payloads += deleted;
            report.objects += delete_objects(self.objects.as_ref(), stream, &released).await?;
            left = left.saturating_sub(entries);
            if held_back_by.is_some() {
                report.held_back_by = held_back_by;
                break;
            }
        }
        Ok(report)
    }

    /// Every group with what it still needs.
    async fn groups(&self, connection: &mut Connection) -> Result<Vec<Group>, Error> {
        let stream = self.keys.stream();
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(connection)
            .await
            .map_err(|e| redis_error(format!("XINFO GROUPS {stream}"), e))?;
        let mut groups = Vec::with_capacity(info.groups.len());
        for group in info.groups {
            let read = StreamId::parse(&group.last_delivered_id, false)
                .ok_or_else(|| Error::malformed(&group.last_delivered_id, "not a stream id"))?;
            let mut pending = None;
            if group.pending > 0 {
                let summary: StreamPendingReply = redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(&group.name)
                    .query_async(connection)
                    .await
                    .map_err(|e| redis_error(format!("XPENDING {stream} {}", group.name), e))?;
                if let StreamPendingReply::Data(data) = summary {
                    pending = Some(
                        StreamId::parse(&data.start_id, false)
                            .ok_or_else(|| Error::malformed(&data.start_id, "not a stream id"))?,
                    );
                }
            }
            let name = group.name;
            groups.push(Group {
                name,
                read,
                pending,
            });
        }
        Ok(groups)
    }
}

mod objects;

#[cfg(test)]
mod tests;
