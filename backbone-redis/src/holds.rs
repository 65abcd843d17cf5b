//! Holds on events' payloads, and their release.
//!
//! An event's payload is its payload hash (hash layout) or its objects in an object store
//! (`object` strategy); an inline event's parameters live in its entry and need no release. A
//! payload may be referred to by more than one place: its original stream entry, the dead
//! letters of an entry (one per group that gave up on it) and the entries replaying them
//! (marked [`REPLAYED`]). The stream's holds hash ([`StreamKeys::holds`]) counts, per message
//! id, the dead letters and replayed entries: dead-lettering adds one, replaying moves one
//! from the dead letter to the new entry, and trimming a replayed entry or purging a dead
//! letter takes one away. The payload is **released** when its last reference goes and the
//! original entry is gone (trims go oldest first, so it goes before any replay of it): the
//! script deletes its hash and reports the event, and the caller deletes its objects (after
//! the script: a crash in between leaves objects behind, never an entry without its objects;
//! [`StreamAdmin::delete_orphan_objects`](crate::StreamAdmin::delete_orphan_objects) finds
//! them).

use backbone_core::objects::ObjectStorage;
use backbone_core::{Error, MessageId};

use crate::entry::{AGGREGATE, MESSAGE_ID, OBJECTS, PAYLOAD, REPLAYED};
use crate::keys::StreamKeys;

/// The payload an entry or a dead letter refers to, as far as releasing it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PayloadRef {
    /// The event's message id, as written in the entry.
    pub message_id: String,
    /// Its payload hash (only one of this stream's own: a foreign `payload` field never makes
    /// backbone delete another key).
    pub hash: Option<String>,
    /// True when the entry names parameters kept in an object store.
    pub objects: bool,
    /// True when the entry replays a dead letter: its reference is counted in the holds.
    pub replayed: bool,
}

impl PayloadRef {
    /// The payload of an entry whose fields `field` reads as text; `None` when there is
    /// nothing to release: an inline event, an entry without a message id, and an event
    /// appended through the event store (its aggregate's stream keeps referring to its payload
    /// for good, so trimming the contract stream never releases it).
    pub fn of(keys: &StreamKeys, field: impl Fn(&str) -> Option<String>) -> Option<Self> {
        if field(AGGREGATE).is_some() {
            return None;
        }
        let message_id = field(MESSAGE_ID)?;
        let prefix = keys.payload_prefix();
        let hash = field(PAYLOAD).filter(|p| p.starts_with(&prefix));
        let objects = field(OBJECTS).is_some_and(|o| !o.is_empty());
        let replayed = field(REPLAYED).is_some();
        (hash.is_some() || objects).then_some(PayloadRef {
            message_id,
            hash,
            objects,
            replayed,
        })
    }

    /// [`of`](Self::of) an entry's raw fields.
    pub fn of_fields(keys: &StreamKeys, fields: &[(String, Vec<u8>)]) -> Option<Self> {
        Self::of(keys, |name| {
            let (_, value) = fields.iter().find(|(n, _)| n == name)?;
            String::from_utf8(value.clone()).ok()
        })
    }

    /// Adds this reference to a script invocation that takes it as four arguments (message
    /// id; `k`, its hash being the `k`-th of the hashes added — 0 for none; `1` when it has
    /// objects; `1` when it is a replayed entry), adding its hash to the keys.
    pub fn add_to(&self, invocation: &mut redis::ScriptInvocation<'_>, hashes: &mut usize) {
        invocation.arg(&self.message_id);
        match &self.hash {
            Some(hash) => {
                *hashes += 1;
                invocation.key(hash).arg(*hashes);
            }
            None => {
                invocation.arg(0);
            }
        }
        let flag = |on: bool| if on { "1" } else { "0" };
        invocation.arg(flag(self.objects)).arg(flag(self.replayed));
    }
}

/// Refuses, before anything is written, to release payloads with objects without a store to
/// delete them from: `what` names the operation and the setter to call.
pub(crate) fn require_store<'a>(
    objects: Option<&ObjectStorage>,
    refs: impl IntoIterator<Item = &'a PayloadRef>,
    what: &str,
) -> Result<(), Error> {
    match refs.into_iter().find(|r| r.objects && objects.is_none()) {
        Some(r) => Err(Error::Config(format!(
            "{what}: event {} keeps parameters in an object store and this admin has none to \
             delete them from (give it one with `object_store`)",
            r.message_id
        ))),
        None => Ok(()),
    }
}

/// Deletes the objects of the released events `message_ids` of `stream`; returns how many
/// objects it deleted. The error names every event whose objects are left behind.
pub(crate) async fn delete_objects(
    objects: Option<&ObjectStorage>,
    stream: &str,
    message_ids: &[String],
) -> Result<u64, Error> {
    let Some(objects) = objects.filter(|_| !message_ids.is_empty()) else {
        return Ok(0);
    };
    let (mut deleted, mut failed) = (0, Vec::new());
    for id in message_ids {
        let Ok(message_id) = id.parse::<MessageId>() else {
            failed.push(format!("{id} (not a message id)"));
            continue;
        };
        match objects.delete(stream, &message_id).await {
            Ok(n) => deleted += n as u64,
            Err(e) => failed.push(format!("{id} ({e})")),
        }
    }
    if failed.is_empty() {
        return Ok(deleted);
    }
    Err(Error::channel(
        format!("delete the objects of released events of {stream}"),
        format!(
            "their entries are gone but the objects of {} event(s) are left: {}",
            failed.len(),
            failed.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backbone_core::StreamAddress;

    #[test]
    fn only_own_hashes_and_objects_are_released() {
        let keys = StreamKeys::new(&StreamAddress::new(None, "orders").unwrap());
        let id = MessageId::new().to_string();
        let own = keys.payload(&id.parse().unwrap());
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let hash = PayloadRef::of_fields(&keys, &fields(&[(MESSAGE_ID, &id), (PAYLOAD, &own)]));
        assert_eq!(hash.unwrap().hash.as_deref(), Some(own.as_str()));
        let foreign = fields(&[(MESSAGE_ID, &id), (PAYLOAD, "bb:{other}:payload:x")]);
        assert_eq!(PayloadRef::of_fields(&keys, &foreign), None);
        let objects = fields(&[(MESSAGE_ID, &id), (OBJECTS, "scan")]);
        let objects = PayloadRef::of_fields(&keys, &objects).unwrap();
        assert!(objects.objects && objects.hash.is_none());
        let err = require_store(None, [&objects], "trim").unwrap_err();
        assert!(err.to_string().contains(&id), "{err}");
        assert_eq!(
            PayloadRef::of_fields(&keys, &fields(&[(PAYLOAD, &own)])),
            None
        );
        let stored = fields(&[(MESSAGE_ID, &id), (PAYLOAD, &own), (AGGREGATE, "acc-1")]);
        assert_eq!(
            PayloadRef::of_fields(&keys, &stored),
            None,
            "the store keeps it"
        );
    }
}
