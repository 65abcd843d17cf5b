//! The object-store side of a stream's administration: deleting the objects nothing refers to
//! any more, and the objects past a retention. Trimming and purging delete objects as their
//! entries and dead letters go (see [`crate::holds`]); these sweeps catch what they cannot:
//! the objects of a send whose outcome was unknown and that was never written, objects left
//! when a delete failed after a trim, and a retention like `payload_ttl`'s for objects.

use std::time::Duration;

use backbone_core::metadata::now_millis;
use backbone_core::objects::ObjectStorage;
use backbone_core::{Error, MessageId};
use redis::streams::StreamRangeReply;

use super::StreamAdmin;
use crate::connection::redis_error;
use crate::entry::StreamId;

/// How many holds one `HMGET` reads.
const HOLDS_PAGE: usize = 1000;

/// When `message_id` was created, in ms since the epoch (its UUIDv7 timestamp); `None` for a
/// message id of another UUID version, which no sweep deletes.
fn created_ms(message_id: &MessageId) -> Option<u64> {
    let (secs, nanos) = message_id.as_uuid().get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

impl StreamAdmin {
    /// The shortest `older_than` [`delete_orphan_objects`](Self::delete_orphan_objects)
    /// accepts.
    pub const MIN_ORPHAN_AGE: Duration = Duration::from_secs(60);

    /// Deletes the objects of events that no entry, dead letter or replayed entry of the
    /// stream refers to, among those created more than `older_than` before the stream's oldest
    /// entry (or before now, when the stream is empty); returns how many objects it deleted.
    ///
    /// An event's entry is written within its producer's `send_timeout` of its message id's
    /// creation, so an event that much older than the oldest entry has no entry left: its
    /// objects are orphans unless the stream's holds name it (a dead letter, a replayed
    /// entry). `older_than` must cover the producers' `send_timeout` plus the clock skew
    /// between producers and Redis; it is refused below [`MIN_ORPHAN_AGE`](Self::MIN_ORPHAN_AGE). Message ids that
    /// are not UUIDv7 are never deleted. Run it from a periodic job: it lists the stream's
    /// objects by event (one listing) and reads the holds of the candidates.
    ///
    /// ```no_run
    /// # async fn run(admin: backbone_redis::StreamAdmin) -> Result<(), backbone_core::Error> {
    /// let hour = std::time::Duration::from_secs(3600);
    /// let deleted = admin.delete_orphan_objects(hour).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_orphan_objects(&self, older_than: Duration) -> Result<u64, Error> {
        if older_than < Self::MIN_ORPHAN_AGE {
            return Err(Error::Config(format!(
                "delete_orphan_objects: older_than {older_than:?} is below {:?}: \
                 it must cover the producers' send_timeout plus clock skew",
                Self::MIN_ORPHAN_AGE
            )));
        }
        let objects = self.require_objects("delete_orphan_objects")?;
        let oldest = match self.oldest_entry_ms().await? {
            Some(ms) => ms,
            None => now_millis(),
        };
        let cutoff = oldest.saturating_sub(older_than.as_millis() as u64);
        let candidates = self.created_before(objects, cutoff).await?;
        let orphans = self.unheld(candidates).await?;
        self.delete_events(objects, &orphans).await
    }

    /// Deletes the objects of events created more than `ttl` ago, whatever refers to them:
    /// the object-store counterpart of a producer's `payload_ttl` (a dead letter or entry
    /// still naming them then dead-letters as a missing object, as an expired payload hash
    /// does). Returns how many objects it deleted. Message ids that are not UUIDv7 are never
    /// deleted. An object-store lifecycle rule on the root prefix does the same without a job.
    ///
    /// ```no_run
    /// # async fn run(admin: backbone_redis::StreamAdmin) -> Result<(), backbone_core::Error> {
    /// let week = std::time::Duration::from_secs(7 * 24 * 3600);
    /// admin.expire_objects(week).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expire_objects(&self, ttl: Duration) -> Result<u64, Error> {
        let objects = self.require_objects("expire_objects")?;
        let cutoff = now_millis().saturating_sub(ttl.as_millis() as u64);
        let expired = self.created_before(objects, cutoff).await?;
        self.delete_events(objects, &expired).await
    }

    fn require_objects(&self, what: &str) -> Result<&ObjectStorage, Error> {
        self.objects.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{what} of {}: this admin has no object store (give it one with \
                 `object_store`)",
                self.keys.stream()
            ))
        })
    }

    /// The ms part of the oldest entry's id, `None` when the stream is empty.
    async fn oldest_entry_ms(&self) -> Result<Option<u64>, Error> {
        let stream = self.keys.stream();
        let mut connection = self.connection.clone();
        let first: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis_error(format!("XRANGE {stream} - + COUNT 1"), e))?;
        let Some(entry) = first.ids.first() else {
            return Ok(None);
        };
        let id = StreamId::parse(&entry.id, false)
            .ok_or_else(|| Error::malformed(&entry.id, "not a stream id"))?;
        Ok(Some(id.0))
    }

    /// The stream's events with objects, created before `cutoff` (ms).
    async fn created_before(
        &self,
        objects: &ObjectStorage,
        cutoff: u64,
    ) -> Result<Vec<MessageId>, Error> {
        let events = objects.events(self.keys.stream()).await?;
        Ok(events
            .into_iter()
            .filter(|id| created_ms(id).is_some_and(|ms| ms < cutoff))
            .collect())
    }

    /// Those of `events` that the stream's holds do not name.
    async fn unheld(&self, events: Vec<MessageId>) -> Result<Vec<MessageId>, Error> {
        let holds = self.keys.holds();
        let mut connection = self.connection.clone();
        let mut unheld = Vec::with_capacity(events.len());
        for page in events.chunks(HOLDS_PAGE) {
            let names: Vec<String> = page.iter().map(MessageId::to_string).collect();
            let held: Vec<Option<u64>> = redis::cmd("HMGET")
                .arg(&holds)
                .arg(&names)
                .query_async(&mut connection)
                .await
                .map_err(|e| redis_error(format!("HMGET {holds}"), e))?;
            unheld.extend(
                page.iter()
                    .zip(held)
                    .filter(|(_, held)| held.is_none())
                    .map(|(id, _)| *id),
            );
        }
        Ok(unheld)
    }

    async fn delete_events(
        &self,
        objects: &ObjectStorage,
        events: &[MessageId],
    ) -> Result<u64, Error> {
        let mut deleted = 0;
        for id in events {
            deleted += objects.delete(self.keys.stream(), id).await? as u64;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_is_the_uuidv7_timestamp() {
        let before = now_millis();
        let ms = created_ms(&MessageId::new()).unwrap();
        assert!(ms >= before && ms <= now_millis() + 1, "{before} {ms}");
        let v4: MessageId = "9b2c4a4e-2f0a-4d4b-8f5e-1d2c3b4a5f6e".parse().unwrap();
        assert_eq!(created_ms(&v4), None);
    }
}
