//! Purging dead letters: one script deletes them and releases the payloads (hashes, objects)
//! that only they still needed (see [`crate::holds`]); the objects are deleted after it.

use backbone_core::Error;

use super::{DeadLetters, DEAD_STREAM_ID, PAGE};
use crate::connection::redis_error;
use crate::entry::RawEntry;
use crate::holds::{delete_objects, require_store, PayloadRef};
use crate::lua::PURGE;

impl DeadLetters {
    /// Purges the dead letters of the raw range `start..=end` (`XRANGE` syntax), at most
    /// [`PAGE`] per script; returns how many were deleted.
    pub(super) async fn purge_range(&self, start: &str, end: &str) -> Result<u64, Error> {
        let (mut start, mut purged) = (start.to_owned(), 0);
        loop {
            let page = self.raw_range(&start, end, PAGE).await?;
            purged += self.purge_letters(&page).await?;
            match page.last() {
                Some(last) if page.len() == PAGE && last.id != end => {
                    start = format!("({}", last.id)
                }
                _ => return Ok(purged),
            }
        }
    }

    /// Purges `letters` (as just read) in one script; returns how many it deleted (those
    /// replayed or purged meanwhile by someone else are not counted).
    async fn purge_letters(&self, letters: &[RawEntry]) -> Result<u64, Error> {
        if letters.is_empty() {
            return Ok(0);
        }
        let stream = self.keys.stream();
        // A dead letter without its entry's stream id (a malformed one) releases nothing: it
        // cannot tell whether its entry is still in the stream.
        let refs: Vec<Option<(String, PayloadRef)>> = letters
            .iter()
            .map(|letter| {
                let fields = letter.fields.as_deref().unwrap_or(&[]);
                let (_, entry) = fields.iter().rev().find(|(n, _)| n == DEAD_STREAM_ID)?;
                let entry = String::from_utf8(entry.clone()).ok()?;
                Some((entry, PayloadRef::of_fields(&self.keys, fields)?))
            })
            .collect();
        let context = format!("purge dead letters of {}", self.dead);
        require_store(
            self.objects.as_ref(),
            refs.iter().flatten().map(|(_, r)| r),
            &context,
        )?;
        let mut invocation = PURGE.key(&self.dead);
        invocation
            .key(stream)
            .key(self.keys.holds())
            .arg(letters.len());
        let mut hashes = 0;
        for (letter, payload) in letters.iter().zip(&refs) {
            invocation.arg(&letter.id);
            match payload {
                Some((entry, payload)) => {
                    invocation.arg(entry);
                    payload.add_to(&mut invocation, &mut hashes);
                }
                None => {
                    invocation.arg("").arg("").arg(0).arg(0).arg(0);
                }
            }
        }
        let mut connection = self.connection.clone();
        let (purged, payloads, released): (u64, u64, Vec<String>) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| redis_error(context.clone(), e))?;
        let objects = delete_objects(self.objects.as_ref(), stream, &released).await?;
        tracing::debug!(key = %self.dead, purged, payloads, objects, "purged dead letters");
        Ok(purged)
    }
}
